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
    /// Host side of the guest's vsock (Firecracker-style hybrid vsock): a
    /// Unix socket the VMM listens on. No vsock device if unset.
    pub vsock_uds: Option<PathBuf>,
    /// Whether to restore from a snapshot instead of booting.
    pub snapshot: SnapshotUse,
    /// Confine the VMM's threads with their seccomp filters. Off only for
    /// debugging (`--no-seccomp`), and said so in the log.
    pub seccomp: bool,
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
    /// Most inodes the guest may hold a lookup on at once: each keeps a
    /// descriptor open in the VMM. Past it, what would add one fails with
    /// ENFILE in the guest until it forgets some.
    #[serde(default = "default_share_max_inodes")]
    pub max_inodes: u32,
    /// Most files and directories the guest may hold open at once on the
    /// share (each a descriptor in the VMM); past it, opens fail with ENFILE.
    #[serde(default = "default_share_max_handles")]
    pub max_handles: u32,
}

/// Default [`SharedDir::max_inodes`]. With [`DEFAULT_SHARE_MAX_HANDLES`],
/// four shares (the most a restored VM has) hold at most 4 x (12288 +
/// 2048) = 57344 descriptors, which leaves 8192 of an `RLIMIT_NOFILE` of
/// 65536 for the rest of the VMM. A Linux guest keeps a lookup per cached
/// dentry (it forgets them under memory pressure); 12288 covers walking a
/// large container image (a Debian rootfs has ~10000 files).
pub const DEFAULT_SHARE_MAX_INODES: u32 = 12288;
/// Default [`SharedDir::max_handles`] (see [`DEFAULT_SHARE_MAX_INODES`]).
pub const DEFAULT_SHARE_MAX_HANDLES: u32 = 2048;

fn default_share_max_inodes() -> u32 {
    DEFAULT_SHARE_MAX_INODES
}

fn default_share_max_handles() -> u32 {
    DEFAULT_SHARE_MAX_HANDLES
}

impl SharedDir {
    /// `path` shared as `tag`, with the default caps.
    pub fn new(tag: impl Into<String>, path: impl Into<PathBuf>, read_only: bool) -> Self {
        SharedDir {
            tag: tag.into(),
            path: path.into(),
            read_only,
            max_inodes: DEFAULT_SHARE_MAX_INODES,
            max_handles: DEFAULT_SHARE_MAX_HANDLES,
        }
    }
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
            snapshot: SnapshotUse::Auto,
            seccomp: true,
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
    #[error("shared directory {tag:?}: {field} must be at least 1 (0 leaves the guest nothing of the share)")]
    ShareLimit { tag: String, field: &'static str },
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
        let devices = 2 + self.shares.len() + self.disks.len();
        if devices > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(devices));
        }
        let mut tags = std::collections::HashSet::new();
        if let Some(share) = self.shares.iter().find(|s| !tags.insert(&s.tag)) {
            return Err(ConfigError::DuplicateTag(share.tag.clone()));
        }
        for share in &self.shares {
            let zero = [
                ("max_inodes", share.max_inodes),
                ("max_handles", share.max_handles),
            ]
            .into_iter()
            .find(|(_, value)| *value == 0);
            if let Some((field, _)) = zero {
                return Err(ConfigError::ShareLimit {
                    tag: share.tag.clone(),
                    field,
                });
            }
        }
        Ok(())
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
        let share = SharedDir::new("rootfs", "/srv", false);
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
            disks: vec![disk; MAX_VIRTIO_DEVICES],
            ..VmConfig::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::TooManyDevices(_))
        ));
    }

    #[test]
    fn round_trips_as_json_and_names_unknown_keys() {
        let config = VmConfig {
            vcpus: 1,
            shares: vec![SharedDir::new("sandbox", "/run/vmrun/sb/x/shared", false)],
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

    #[test]
    fn share_caps_default_and_are_checked() {
        let config: VmConfig =
            serde_json::from_str(r#"{"shares": [{"tag": "a", "path": "/srv"}]}"#).unwrap();
        assert_eq!(config.shares[0], SharedDir::new("a", "/srv", false));
        assert_eq!(config.shares[0].max_inodes, DEFAULT_SHARE_MAX_INODES);
        assert_eq!(config.shares[0].max_handles, DEFAULT_SHARE_MAX_HANDLES);
        let config: VmConfig = serde_json::from_str(
            r#"{"shares": [{"tag": "a", "path": "/srv", "max_inodes": 100, "max_handles": 0}]}"#,
        )
        .unwrap();
        assert_eq!(config.shares[0].max_inodes, 100);
        let err = config.validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::ShareLimit {
                tag: "a".into(),
                field: "max_handles"
            }
        );
        assert!(err.to_string().contains("\"a\": max_handles"), "{err}");
    }
}
