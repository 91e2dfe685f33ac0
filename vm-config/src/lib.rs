//! What a microVM is made of, as plain data with one set of defaults.
//!
//! This crate owns the VM's configuration types, their defaults and the checks
//! that need no host to judge. It is what a launcher hands the VMM process
//! (`vmrun-vmm --config FILE`, JSON) and what the shim's config file embeds
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
    /// The network namespace (a file such as `/var/run/netns/NAME`) the
    /// taps of [`nets`](Self::nets) are in: the VMM enters it to open them
    /// (a pod's CNI namespace). Unset: the VMM's own namespace.
    pub netns: Option<PathBuf>,
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
    /// What the guest may draw from virtio-rng per second (default:
    /// [`RateLimit::default_rng`]).
    pub rng_rate_limit: RateLimit,
    /// The rate limit of every disk that has none of its own (default:
    /// none).
    pub disk_rate_limit: RateLimit,
    /// What every network interface may receive per second unless it has
    /// a limit of its own (default: none): a pod's interfaces get this.
    #[serde(skip_serializing_if = "RateLimit::is_unlimited")]
    pub net_rx_rate_limit: RateLimit,
    /// What every network interface may send per second unless it has a
    /// limit of its own (default: none).
    #[serde(skip_serializing_if = "RateLimit::is_unlimited")]
    pub net_tx_rate_limit: RateLimit,
}

/// What the guest may make a device do per second, as token buckets: one
/// of bytes, one of requests. A bucket holds at most `burst` tokens and
/// earns `rate` per second; a request needs its bytes from the first and
/// one token from the second, and waits in its queue until both have them
/// (a request larger than the burst waits for a full bucket). A missing
/// bucket does not limit; `{}` limits nothing. The limits are the host's
/// and are not part of a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Bytes moved (read, written or generated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<TokenBucket>,
    /// Requests served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// One token bucket of a [`RateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Tokens earned per second.
    pub rate: u64,
    /// Most tokens held at once, i.e. the largest burst; default: one
    /// second's worth (`rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl TokenBucket {
    /// `rate` per second, bursts of one second's worth.
    pub const fn per_second(rate: u64) -> Self {
        TokenBucket { rate, burst: None }
    }

    /// The bucket's size.
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.rate)
    }
}

/// [`RateLimit::default_rng`]'s bytes per second.
pub const DEFAULT_RNG_BYTES_PER_SEC: u64 = 1 << 20;
/// [`RateLimit::default_rng`]'s requests per second.
pub const DEFAULT_RNG_OPS_PER_SEC: u64 = 4096;

impl RateLimit {
    /// No limit.
    pub const UNLIMITED: RateLimit = RateLimit {
        bytes: None,
        ops: None,
    };

    /// The virtio-rng default: 1 MiB/s and 4096 requests/s, each with
    /// bursts of one second's worth. A Linux guest needs a few dozen bytes:
    /// its hwrng thread reads 64-byte blocks until the kernel's CRNG is
    /// seeded, then once a minute; one reading `/dev/hwrng` in a loop gets
    /// 256 KiB/s (4096 requests of 64 bytes). What it costs the host is the
    /// requests more than the bytes (each a worker round and a read of
    /// `/dev/urandom`): 4096 of them a second are about 1% of a core.
    pub const fn default_rng() -> Self {
        RateLimit {
            bytes: Some(TokenBucket::per_second(DEFAULT_RNG_BYTES_PER_SEC)),
            ops: Some(TokenBucket::per_second(DEFAULT_RNG_OPS_PER_SEC)),
        }
    }

    /// Whether this limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.ops.is_none()
    }

    /// Checks that every bucket passes something; `what` names the limit in
    /// the error.
    pub(crate) fn validate(&self, what: impl Fn() -> String) -> Result<(), ConfigError> {
        for (name, bucket) in [("bytes", self.bytes), ("ops", self.ops)] {
            let Some(bucket) = bucket else { continue };
            let zero = if bucket.rate == 0 {
                Some("rate")
            } else if bucket.burst == Some(0) {
                Some("burst")
            } else {
                None
            };
            if let Some(field) = zero {
                return Err(ConfigError::RateLimit {
                    what: what(),
                    field: format!("{name}.{field}"),
                });
            }
        }
        Ok(())
    }
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
    /// The share's own file system is read-only to the guest; only what the
    /// host mounts beneath it is writable (each as mounted). For the
    /// sandbox share, whose own levels (container directories, mount
    /// points) are the host's to make: a guest cannot rename or replace
    /// them while the host mounts into them. Enforced by the VMM's jail.
    #[serde(default)]
    pub read_only_top: bool,
}

/// Default [`SharedDir::max_inodes`]. With [`DEFAULT_SHARE_MAX_HANDLES`],
/// four shares (the most a restored VM has) hold at most 4 x (12288 +
/// 2048) = 57344 descriptors, which leaves 8192 of an `RLIMIT_NOFILE` of
/// 65536 for the rest of the VMM. A Linux guest keeps a lookup per cached
/// inode and forgets them only under memory pressure: one that walks a
/// larger tree (`find` over a big image) gets ENFILE for the rest until its
/// cache shrinks, so raise it for such shares.
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
            read_only_top: false,
        }
    }

    /// The same share with its own levels read-only to the guest (see
    /// [`SharedDir::read_only_top`]).
    pub fn with_read_only_top(mut self) -> Self {
        self.read_only_top = true;
        self
    }
}

/// A raw disk image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// This disk's rate limit; if unset, the VM's `disk_rate_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

impl Disk {
    /// The image at `path`, with the VM's disk rate limit.
    pub fn new(path: impl Into<PathBuf>, read_only: bool) -> Self {
        Disk {
            path: path.into(),
            read_only,
            rate_limit: None,
        }
    }
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
            netns: None,
            snapshot: SnapshotUse::Auto,
            seccomp: true,
            jail: JailConfig::default(),
            template: false,
            rng_rate_limit: RateLimit::default_rng(),
            disk_rate_limit: RateLimit::UNLIMITED,
            net_rx_rate_limit: RateLimit::UNLIMITED,
            net_tx_rate_limit: RateLimit::UNLIMITED,
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
    #[error("netns {0:?}: the network namespace must be an absolute path")]
    NetNs(PathBuf),
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
    #[error("shared directory {tag:?}: {field} must be at least 1 (0 leaves the guest nothing of the share)")]
    ShareLimit { tag: String, field: &'static str },
    #[error("{what}: {field} must be at least 1 (leave the bucket out for no limit)")]
    RateLimit { what: String, field: String },
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
        net::validate(&self.nets)?;
        if let Some(netns) = &self.netns {
            if !netns.is_absolute() {
                return Err(ConfigError::NetNs(netns.clone()));
            }
        }
        self.rng_rate_limit
            .validate(|| "rng_rate_limit".to_string())?;
        self.disk_rate_limit
            .validate(|| "disk_rate_limit".to_string())?;
        self.net_rx_rate_limit
            .validate(|| "net_rx_rate_limit".to_string())?;
        self.net_tx_rate_limit
            .validate(|| "net_tx_rate_limit".to_string())?;
        for (i, disk) in self.disks.iter().enumerate() {
            if let Some(limit) = &disk.rate_limit {
                limit.validate(|| format!("disks[{i}] ({}) rate_limit", disk.path.display()))?;
            }
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

    /// The rate limit `disk` gets: its own, else the VM's default.
    pub fn rate_limit_of(&self, disk: &Disk) -> RateLimit {
        disk.rate_limit.unwrap_or(self.disk_rate_limit)
    }

    /// The network interfaces with the limits they get: each its own where
    /// it has one (not unlimited), else the VM's defaults.
    pub fn nets_with_rate_limits(&self) -> Vec<NetConfig> {
        let or_default = |own: RateLimit, default: RateLimit| {
            if own == RateLimit::UNLIMITED {
                default
            } else {
                own
            }
        };
        self.nets
            .iter()
            .map(|net| NetConfig {
                rx_rate_limit: or_default(net.rx_rate_limit, self.net_rx_rate_limit),
                tx_rate_limit: or_default(net.tx_rate_limit, self.net_tx_rate_limit),
                ..net.clone()
            })
            .collect()
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
        let disk = Disk::new("/img", true);
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
    fn rate_limits_default_parse_and_are_checked() {
        let config = VmConfig::default();
        assert_eq!(config.rng_rate_limit, RateLimit::default_rng());
        let rng = config.rng_rate_limit;
        assert_eq!(
            rng.bytes.map(|b| (b.rate, b.burst())),
            Some((1 << 20, 1 << 20))
        );
        assert_eq!(rng.ops.map(|b| (b.rate, b.burst())), Some((4096, 4096)));
        assert!(config.disk_rate_limit.is_unlimited());

        let json = r#"{
            "rng_rate_limit": {},
            "disk_rate_limit": {"ops": {"rate": 100}},
            "disks": [
                {"path": "/a.img"},
                {"path": "/b.img", "rate_limit": {"bytes": {"rate": 10485760, "burst": 20971520}}},
                {"path": "/c.img", "rate_limit": {}}
            ]
        }"#;
        let config: VmConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.validate(), Ok(()));
        assert!(config.rng_rate_limit.is_unlimited());
        let ops100 = RateLimit {
            ops: Some(TokenBucket::per_second(100)),
            bytes: None,
        };
        assert_eq!(config.rate_limit_of(&config.disks[0]), ops100);
        let own = config.rate_limit_of(&config.disks[1]);
        assert_eq!(own.bytes.map(|b| b.burst()), Some(20 << 20));
        assert_eq!(own.ops, None);
        assert!(config.rate_limit_of(&config.disks[2]).is_unlimited());
        // Round trip, and nothing is written for what is not set.
        let text = serde_json::to_string(&config).unwrap();
        assert!(
            text.contains(r#""disk_rate_limit":{"ops":{"rate":100}}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<VmConfig>(&text).unwrap(), config);

        let bad = |json: &str| {
            serde_json::from_str::<VmConfig>(json)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        let err = bad(r#"{"rng_rate_limit": {"bytes": {"rate": 0}}}"#);
        assert_eq!(
            err,
            "rng_rate_limit: bytes.rate must be at least 1 (leave the bucket out for no limit)"
        );
        let err = bad(
            r#"{"disks": [{"path": "/x.img", "rate_limit": {"ops": {"rate": 5, "burst": 0}}}]}"#,
        );
        assert!(
            err.starts_with("disks[0] (/x.img) rate_limit: ops.burst"),
            "{err}"
        );
        let err = bad(r#"{"disk_rate_limit": {"ops": {"rate": 0}}}"#);
        assert!(err.starts_with("disk_rate_limit: ops.rate"), "{err}");
        let err = serde_json::from_str::<VmConfig>(
            r#"{"rng_rate_limit": {"bytes": {"rate": 1, "size": 2}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `size`"), "{err}");
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
