//! What a microVM is made of, as plain data with one set of defaults.
//!
//! This crate owns the VM's configuration types, their defaults and the checks
//! that need no host to judge. It is what a launcher hands the VMM process
//! (`vmrun boot --config FILE`, JSON) and what the shim's config file embeds
//! (TOML). It must not depend on KVM, devices or anything host-specific, so
//! that the shim and the CLI can use it without compiling the VMM.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod guest;
pub mod net;

pub use net::{MacAddr, NetConfig};
mod jail;

pub use jail::{JailConfig, MIN_OPEN_FILES};

/// Where the set-up installs the guest kernel and initramfs.
pub const DEFAULT_SHARE_DIR: &str = "/usr/local/share/vmrun";

/// Configuration of one microVM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmConfig {
    /// Uncompressed ELF `vmlinux` (PVH entry preferred) or a bzImage.
    pub kernel: PathBuf,
    /// Uncompressed or compressed initramfs, optional.
    pub initrd: Option<PathBuf>,
    /// Number of vCPUs (1..=MAX_VCPUS).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Extra kernel command-line words appended after vmrun's own.
    pub extra_cmdline: Vec<String>,
    /// Host compatibility profile selection.
    pub compat: CompatMode,
    /// Host directories shared with the guest over virtio-fs.
    pub shares: Vec<SharedDir>,
    /// Raw disk images given to the guest as virtio-blk devices (/dev/vda, ...).
    pub disks: Vec<Disk>,
    /// Network interfaces (eth0, eth1, ... in the guest), each on a host tap.
    pub nets: Vec<NetConfig>,
    /// Host side of the guest's vsock (Firecracker-style hybrid vsock): a
    /// Unix socket the VMM listens on. No vsock device if unset.
    pub vsock_uds: Option<PathBuf>,
    /// Whether to restore from a snapshot instead of booting.
    pub snapshot: SnapshotUse,
    /// Confine the VMM's threads with their seccomp filters. Off only for
    /// debugging (`--no-seccomp`), and said so in the log.
    pub seccomp: bool,
    /// Confinement of the VMM process.
    pub jail: JailConfig,
    /// Boot the guest a snapshot is made of (see [`crate::snapshot`]):
    /// slot-tagged shares, and on a software-KVM host one vCPU online.
    pub template: bool,
}

/// A host directory the guest mounts with `mount -t virtiofs <tag> <dir>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedDir {
    pub tag: String,
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// A raw disk image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

pub use guest::GUEST_CID;

/// Upper bound on vCPUs: the MP table and CPUID topology are built for this.
pub const MAX_VCPUS: u8 = 16;

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: PathBuf::from(DEFAULT_SHARE_DIR).join("vmlinux"),
            initrd: Some(PathBuf::from(DEFAULT_SHARE_DIR).join("initramfs.cpio")),
            vcpus: 2,
            memory_mib: 256,
            extra_cmdline: Vec::new(),
            compat: CompatMode::Auto,
            vsock_uds: None,
            shares: Vec::new(),
            disks: Vec::new(),
            nets: Vec::new(),
            snapshot: SnapshotUse::Auto,
            seccomp: true,
            jail: JailConfig::default(),
            template: false,
        }
    }
}

/// What the user asked for with `--compat` (the profile itself is the
/// VMM's business: `vmm::compat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompatMode {
    /// Detect the host's hypervisor and pick the profile.
    #[default]
    Auto,
    /// Never apply a profile.
    Off,
    /// Always apply the software-KVM (`kvm_pvm`) profile.
    Pvm,
}

impl FromStr for CompatMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            "pvm" => Ok(Self::Pvm),
            other => Err(format!(
                "unknown compat mode {other:?}: expected auto, off or pvm"
            )),
        }
    }
}

/// Whether a VM restores, and from what. Written as a string: `"auto"`,
/// `"off"` or a snapshot directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SnapshotUse {
    /// The cached snapshot for this configuration, if there is one.
    #[default]
    Auto,
    /// Always boot.
    Off,
    /// This snapshot directory; a VM it does not fit is refused.
    Dir(PathBuf),
}

impl FromStr for SnapshotUse {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            "" => Err("expected auto, off or a snapshot directory".into()),
            dir => Ok(Self::Dir(PathBuf::from(dir))),
        }
    }
}

impl TryFrom<String> for SnapshotUse {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<SnapshotUse> for String {
    fn from(value: SnapshotUse) -> Self {
        match value {
            SnapshotUse::Auto => "auto".into(),
            SnapshotUse::Off => "off".into(),
            SnapshotUse::Dir(dir) => dir.to_string_lossy().into_owned(),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    Vcpus(u8),
    #[error("memory must be between 64 MiB and 64 GiB, got {0} MiB")]
    Memory(u64),
    #[error("too many devices: {0} virtio devices asked, at most {MAX_VIRTIO_DEVICES}")]
    TooManyDevices(usize),
    #[error("shared directory tag {0:?} is used twice")]
    DuplicateTag(String),
    #[error("nets[{index}].{field}: {why}")]
    Net {
        index: usize,
        field: &'static str,
        why: String,
    },
    #[error("jail.open_files must be at least {MIN_OPEN_FILES}, got {0}")]
    OpenFiles(u64),
    #[error("jail.file_size_mib must be at least 1")]
    FileSize,
}

/// virtio-mmio devices get GSIs 5..=23 of the IOAPIC.
pub const MAX_VIRTIO_DEVICES: usize = 19;

impl VmConfig {
    /// Checks the values that do not need the host to judge.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(64..=64 * 1024).contains(&self.memory_mib) {
            return Err(ConfigError::Memory(self.memory_mib));
        }
        // rng and vsock come with every VM.
        let devices = 2 + self.shares.len() + self.disks.len() + self.nets.len();
        if devices > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        if self.jail.open_files < MIN_OPEN_FILES {
            return Err(ConfigError::OpenFiles(self.jail.open_files));
        }
        if self.jail.file_size_mib == 0 {
            return Err(ConfigError::FileSize);
        }
        let mut tags = std::collections::HashSet::new();
        if let Some(share) = self.shares.iter().find(|s| !tags.insert(&s.tag)) {
            return Err(ConfigError::DuplicateTag(share.tag.clone()));
        }
        net::validate(&self.nets)
    }

    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(VmConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_bad_sizes() {
        let cfg = VmConfig {
            vcpus: 0,
            ..VmConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::Vcpus(0)));
        let cfg = VmConfig {
            memory_mib: 16,
            ..VmConfig::default()
        };
        assert_eq!(cfg.validate(), Err(ConfigError::Memory(16)));
        assert!(ConfigError::Memory(16).to_string().contains("16 MiB"));
    }

    #[test]
    fn rejects_duplicate_tags_and_too_many_devices() {
        let share = SharedDir {
            tag: "rootfs".into(),
            path: PathBuf::from("/srv"),
            read_only: false,
        };
        let cfg = VmConfig {
            shares: vec![share.clone(), share],
            ..VmConfig::default()
        };
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::DuplicateTag("rootfs".into()))
        );
        let disk = Disk {
            path: PathBuf::from("/img"),
            read_only: true,
        };
        let cfg = VmConfig {
            disks: vec![disk.clone(); MAX_VIRTIO_DEVICES],
            ..VmConfig::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::TooManyDevices(_))
        ));
        // Network interfaces count too: rng, vsock, 16 disks and one fill
        // the GSIs.
        let nets = |n: usize| -> Vec<NetConfig> {
            (0..n)
                .map(|i| NetConfig {
                    tap: format!("tap{i}"),
                    ..NetConfig::default()
                })
                .collect()
        };
        let cfg = VmConfig {
            disks: vec![disk; MAX_VIRTIO_DEVICES - 3],
            nets: nets(1),
            ..VmConfig::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
        let cfg = VmConfig {
            nets: nets(2),
            ..cfg
        };
        assert_eq!(cfg.validate(), Err(ConfigError::TooManyDevices(20)));
    }

    #[test]
    fn round_trips_as_json_and_names_unknown_keys() {
        let config = VmConfig {
            vcpus: 1,
            shares: vec![SharedDir {
                tag: "sandbox".into(),
                path: PathBuf::from("/run/vmrun/sb/x/shared"),
                read_only: false,
            }],
            snapshot: SnapshotUse::Dir(PathBuf::from("/var/cache/snap")),
            compat: CompatMode::Pvm,
            ..VmConfig::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains(r#""snapshot":"/var/cache/snap""#), "{json}");
        assert!(json.contains(r#""compat":"pvm""#), "{json}");
        assert_eq!(serde_json::from_str::<VmConfig>(&json).unwrap(), config);
        // Missing keys take the defaults.
        let partial: VmConfig = serde_json::from_str(r#"{"memory_mib": 512}"#).unwrap();
        assert_eq!(partial.memory_mib, 512);
        assert_eq!(partial.vcpus, VmConfig::default().vcpus);
        let err = serde_json::from_str::<VmConfig>(r#"{"cpus": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpus`"), "{err}");
        let err = serde_json::from_str::<VmConfig>(r#"{"snapshot": ""}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("snapshot directory"), "{err}");
    }
}
