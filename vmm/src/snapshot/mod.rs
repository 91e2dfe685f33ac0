//! Snapshots: boot the standard guest once, save it at the agent's ready
//! point, and restore every later VM from it instead of booting.
//!
//! A snapshot is a directory of three entries, root-only: `state` (every
//! vCPU's, the VM's and each device's state, versioned and checksummed, see
//! [`file`]), `memory` (guest RAM, mapped `MAP_PRIVATE` by each restored VM,
//! so all of them share one page cache and copy only what they write) and
//! `empty/` (what unused share slots are bound to).
//!
//! What differs per sandbox is not in the snapshot, or only in a generic,
//! unused form: the guest has probed [`SHARE_SLOTS`] virtio-fs devices
//! tagged [`share_slot_tag`] but mounted none (the agent mounts them after
//! restore, so FUSE_INIT meets this sandbox's directories); no vsock
//! connection is open, and the restored guest gets a transport reset; the
//! guest has probed [`DISK_SLOTS`] virtio-blk devices of capacity 0, which
//! a restored VM binds to its disks, telling the guest their size with a
//! configuration-change interrupt; and [`NET_SLOTS`] virtio-net devices on
//! no tap (link down, MTU [`SPARE_NET_MTU`]), which a restored VM binds to
//! its taps, telling the guest their link is up with a configuration-change
//! interrupt (the guest keeps the spare MAC and MTU it probed until it is
//! given the interface's). The guest is made unique
//! by the agent's first request (fresh entropy, the host's clock, the
//! hostname): see the agent's `InitSandbox`. Its vCPUs are online already:
//! the agent brings them up before the ready line the snapshot waits for.
//!
//! [`select`] decides, for every VM, whether it restores: the default
//! snapshot for its configuration lives in the cache (keyed by what it was
//! made from, [`cache_dir`]); a missing one means a cold boot with one log
//! line saying why, and a snapshot named explicitly that does not fit is an
//! error naming the mismatch.

pub mod file;
pub mod prune;
pub mod state;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::compat::CompatProfile;
use crate::config::{Disk, NetConfig, SharedDir, VmConfig};
use crate::console::ConsoleEvent;
use crate::devices::virtio::VirtioKind;
use crate::vm::{Vm, VmError, VmEvent};
use state::{SnapshotInputs, SnapshotState};

/// The VMM build a snapshot is made by and restored by: the crate version
/// and a digest of the source that decides what saved state means (see
/// `vmm/build.rs`). Another build's snapshot is not used: the cache misses
/// it (its key differs) and an explicit one is refused by name.
pub const VMM_BUILD: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "+",
    env!("VMRUN_VMM_SOURCE_DIGEST")
);

/// virtio-fs devices a snapshot's guest has probed: the most shares a
/// restored VM can have.
pub const SHARE_SLOTS: usize = 4;
/// virtio-blk devices a snapshot's guest has probed (empty): the most disks
/// a restored VM can have.
pub const DISK_SLOTS: usize = 2;
/// virtio-net devices a snapshot's guest has probed (on no tap): the most
/// network interfaces a restored VM can have.
pub const NET_SLOTS: usize = 2;
/// The MTU of a snapshot's network slots: the guest takes the MTU it
/// probed as its interface's largest, so a restored VM's interfaces can
/// have this one or a smaller one.
pub const SPARE_NET_MTU: u16 = vm_config::net::DEFAULT_MTU;
/// The empty image the snapshot's disk slots are made with, and that
/// unused slots of a restored VM are bound to (read-only).
const EMPTY_DISK: &str = "empty.img";
/// The virtio-fs tag of share slot `i` in a snapshot's guest.
pub use vm_config::guest::share_slot_tag;
/// Kernel flag of a snapshot's guest: the agent then knows that its
/// virtio-fs tags are slot tags, and maps the host's share names onto them.
pub use vm_config::guest::TEMPLATE_FLAG;
/// Where snapshots (and the guest kernel) are cached unless `VMRUN_CACHE`
/// says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/vmrun";
/// Directory of the (empty, read-only) share given to unused slots.
const EMPTY_DIR: &str = "empty";
/// How long the guest may take to reach the agent when a snapshot is made.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(900);
/// After the agent's ready line (and the caller's warm-up), how long the
/// guest is left to settle (the agent goes back to waiting for a
/// connection, a closed one is torn down) before it is paused.
const SETTLE: Duration = Duration::from_secs(2);

/// Why a [`create`] warm-up failed (the caller's own error).
pub type WarmUpError = Box<dyn std::error::Error + Send + Sync>;

pub use vm_config::SnapshotUse;

/// Errors making, reading or fitting a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {what} {}: {source}", path.display())]
    Input {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot {}: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("the snapshot does not fit: its {what} is {snapshot}, this VM's is {wanted}")]
    Mismatch {
        what: &'static str,
        snapshot: String,
        wanted: String,
    },
    #[error("a restored VM {0}")]
    Unsupported(String),
    #[error("snapshot directory {} is inside the shared directory {}: it holds guest memory", dir.display(), share.display())]
    InsideShare { dir: PathBuf, share: PathBuf },
    #[error("cannot encode the snapshot state: {0}")]
    Encode(String),
    #[error("guest memory region at {0:#x} has no host mapping")]
    MemoryMapping(u64),
    #[error("while making the snapshot, the guest {0}")]
    Guest(String),
}

/// The cache directory: `VMRUN_CACHE` or [`DEFAULT_CACHE_DIR`].
pub fn cache_root() -> PathBuf {
    std::env::var_os("VMRUN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

fn digest_file(what: &'static str, path: &Path) -> Result<String, SnapshotError> {
    let input_err = |source| SnapshotError::Input {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(input_err)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(input_err)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a snapshot for `config` is made from (reads and hashes the kernel
/// and initramfs).
pub fn inputs_for(config: &VmConfig) -> Result<SnapshotInputs, SnapshotError> {
    Ok(SnapshotInputs {
        vmm_version: VMM_BUILD.to_string(),
        vcpus: config.vcpus,
        memory_mib: config.memory_mib,
        kernel_digest: digest_file("kernel", &config.kernel)?,
        initrd_digest: config
            .initrd
            .as_deref()
            .map(|path| digest_file("initramfs", path))
            .transpose()?,
        extra_cmdline: config.extra_cmdline.clone(),
        compat_profile: CompatProfile::for_host(config.compat).is_active(),
        share_slots: SHARE_SLOTS,
        disk_slots: DISK_SLOTS,
        net_slots: NET_SLOTS,
    })
}

/// Where the default snapshot made from `inputs` is cached: a key over
/// every input and the state format version.
pub fn cache_dir(inputs: &SnapshotInputs) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(file::FORMAT_VERSION.to_le_bytes());
    // Encoding plain data cannot fail; an empty key would only miss the cache.
    hasher.update(bincode::serialize(inputs).unwrap_or_default());
    let key = hex(&hasher.finalize()[..8]);
    cache_root().join("snapshot").join(key)
}

/// A snapshot read from disk and checked against the VM that will use it.
pub struct LoadedSnapshot {
    pub dir: PathBuf,
    pub state: SnapshotState,
    pub memory: File,
}

/// Picks how the VM of `config` starts: `Ok(Some)` restores, `Ok(None)`
/// boots (after logging why not a restore), `Err` refuses an explicitly
/// named snapshot that does not fit.
pub fn select(config: &VmConfig) -> Result<Option<LoadedSnapshot>, SnapshotError> {
    let explicit = match &config.snapshot {
        SnapshotUse::Off => return Ok(None),
        SnapshotUse::Dir(dir) => Some(dir.clone()),
        SnapshotUse::Auto => None,
    };
    if let Err(unsupported) = check_restorable(config) {
        if explicit.is_some() {
            return Err(unsupported);
        }
        tracing::info!("booting without a snapshot: {unsupported}");
        return Ok(None);
    }
    let inputs = match inputs_for(config) {
        Ok(inputs) => inputs,
        // The boot reports a missing kernel or initramfs itself.
        Err(e) if explicit.is_none() => {
            tracing::info!("booting without a snapshot: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let dir = match explicit {
        Some(dir) => dir,
        None => {
            let dir = cache_dir(&inputs);
            if !dir.join(file::STATE_FILE).exists() {
                tracing::info!(
                    "booting without a snapshot: none for this configuration in {} \
                     (`vmrun snapshot create` makes it)",
                    dir.display()
                );
                return Ok(None);
            }
            let loaded = load(&dir, &inputs, config);
            return match loaded {
                Ok(loaded) => Ok(Some(loaded)),
                Err(e) => {
                    tracing::warn!("booting without the cached snapshot {}: {e}", dir.display());
                    Ok(None)
                }
            };
        }
    };
    load(&dir, &inputs, config).map(Some)
}

/// Why `config` cannot be restored from any snapshot.
fn check_restorable(config: &VmConfig) -> Result<(), SnapshotError> {
    if config.vsock_uds.is_none() {
        return Err(SnapshotError::Unsupported("needs the agent's vsock".into()));
    }
    if config.disks.len() > DISK_SLOTS {
        return Err(SnapshotError::Unsupported(format!(
            "has at most {DISK_SLOTS} disks ({} asked)",
            config.disks.len()
        )));
    }
    if config.shares.len() > SHARE_SLOTS {
        return Err(SnapshotError::Unsupported(format!(
            "has at most {SHARE_SLOTS} shared directories ({} asked)",
            config.shares.len()
        )));
    }
    if config.nets.len() > NET_SLOTS {
        return Err(SnapshotError::Unsupported(format!(
            "has at most {NET_SLOTS} network interfaces ({} asked)",
            config.nets.len()
        )));
    }
    if let Some(net) = config.nets.iter().find(|n| n.mtu > SPARE_NET_MTU) {
        return Err(SnapshotError::Unsupported(format!(
            "has an MTU of at most {SPARE_NET_MTU} (tap {:?} asks for {})",
            net.tap, net.mtu
        )));
    }
    Ok(())
}

/// Reads the snapshot in `dir` and checks that it is what `config` asks for.
pub fn load(
    dir: &Path,
    wanted: &SnapshotInputs,
    config: &VmConfig,
) -> Result<LoadedSnapshot, SnapshotError> {
    let dir = dir.canonicalize().map_err(|source| SnapshotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for share in &config.shares {
        if let Ok(share_path) = share.path.canonicalize() {
            if dir.starts_with(&share_path) {
                return Err(SnapshotError::InsideShare {
                    dir,
                    share: share_path,
                });
            }
        }
    }
    let (state_path, memory_path) = file::paths(&dir);
    let state = file::read_state(&state_path)?;
    check_inputs(&state.meta.inputs, wanted)?;
    if state.vcpus.len() != usize::from(wanted.vcpus)
        || state.virtio.len() != 2 + SHARE_SLOTS + DISK_SLOTS + NET_SLOTS
    {
        return Err(SnapshotError::Corrupt {
            path: state_path,
            why: "the saved vCPUs or devices do not match its own description".into(),
        });
    }
    let memory = file::open_memory(&memory_path, &state.memory)?;
    let expected: u64 = crate::memory::ram_regions(config.memory_bytes())
        .iter()
        .map(|(_, len)| *len as u64)
        .sum();
    let saved: u64 = state.memory.iter().map(|r| r.len).sum();
    if expected != saved {
        return Err(SnapshotError::Corrupt {
            path: memory_path,
            why: format!("its regions hold {saved} bytes, {expected} expected"),
        });
    }
    Ok(LoadedSnapshot { dir, state, memory })
}

/// Each input as a mismatch names it, with its value as shown.
fn described(inputs: &SnapshotInputs) -> [(&'static str, String); 10] {
    let on_off = |on| if on { "on" } else { "off" }.to_string();
    [
        ("VMM version", inputs.vmm_version.clone()),
        ("vCPU count", inputs.vcpus.to_string()),
        ("memory size", format!("{} MiB", inputs.memory_mib)),
        ("kernel (SHA-256)", inputs.kernel_digest.clone()),
        (
            "initramfs (SHA-256)",
            inputs
                .initrd_digest
                .clone()
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "extra kernel command line",
            format!("{:?}", inputs.extra_cmdline),
        ),
        (
            "software-KVM compatibility profile",
            on_off(inputs.compat_profile),
        ),
        ("number of share slots", inputs.share_slots.to_string()),
        ("number of disk slots", inputs.disk_slots.to_string()),
        ("number of network slots", inputs.net_slots.to_string()),
    ]
}

/// Compares what the snapshot was made from with what is asked for, field
/// by field, so that the error names the first difference.
fn check_inputs(saved: &SnapshotInputs, wanted: &SnapshotInputs) -> Result<(), SnapshotError> {
    let differing = described(saved)
        .into_iter()
        .zip(described(wanted))
        .find(|((_, snapshot), (_, wanted))| snapshot != wanted);
    match differing {
        Some(((what, snapshot), (_, wanted))) => Err(SnapshotError::Mismatch {
            what,
            snapshot,
            wanted,
        }),
        None => Ok(()),
    }
}

/// The shares a VM restored from a snapshot in `dir` gets, slot by slot:
/// the configured ones under the slot tags, the rest bound to the
/// snapshot's empty directory, read-only.
pub fn slot_shares(config: &VmConfig, dir: &Path) -> Vec<SharedDir> {
    (0..SHARE_SLOTS)
        .map(|i| match config.shares.get(i) {
            Some(share) => SharedDir {
                tag: share_slot_tag(i),
                ..share.clone()
            },
            None => SharedDir::new(share_slot_tag(i), dir.join(EMPTY_DIR), true),
        })
        .collect()
}

/// The disks a VM restored from a snapshot in `dir` gets, slot by slot:
/// the configured ones, the rest bound to the snapshot's empty image,
/// read-only. The guest negotiated the slots' features when they were
/// empty and writable, so it does not know a disk is read-only: the
/// device fails its writes.
pub fn slot_disks(config: &VmConfig, dir: &Path) -> Vec<Disk> {
    (0..DISK_SLOTS)
        .map(|i| {
            config
                .disks
                .get(i)
                .cloned()
                .unwrap_or_else(|| Disk::new(dir.join(EMPTY_DISK), true))
        })
        .collect()
}

/// The network devices of a VM restored from a snapshot (and of the guest
/// a snapshot is made of, with no `nets`), slot by slot: the interfaces
/// given, the rest spare (no tap).
pub fn slot_nets(nets: &[NetConfig]) -> Vec<VirtioKind> {
    (0..NET_SLOTS)
        .map(|i| {
            nets.get(i)
                .cloned()
                .map_or(VirtioKind::SpareNet(i), VirtioKind::Net)
        })
        .collect()
}

/// What the guest learns about spare network slot `slot`: a locally
/// administered MAC of vmrun's (`02:76:6d:72:00:<slot>`) and
/// [`SPARE_NET_MTU`].
pub fn spare_net_config(slot: usize) -> virtio_devices::NetConfig {
    virtio_devices::NetConfig {
        mac: [0x02, 0x76, 0x6d, 0x72, 0x00, slot as u8],
        mtu: SPARE_NET_MTU,
    }
}

/// Boots the standard guest for `config` (its kernel, initramfs, vCPUs,
/// memory and extra command line; no shares, disks or console of its own)
/// to the agent's ready point and saves it in `dir` (default: the cache
/// directory for `config`). Returns the snapshot directory.
///
/// `warm_up` runs once the agent is ready, before the guest is paused, with
/// the path of the guest's hybrid vsock socket: whatever it makes the guest
/// do once (a first connection to the agent, say) is in the snapshot and no
/// restored sandbox does it again. It must leave no connection open: a
/// restored guest resets every one.
pub fn create(
    config: &VmConfig,
    dir: Option<&Path>,
    timeout: Duration,
    warm_up: impl FnOnce(&Path) -> Result<(), WarmUpError>,
) -> Result<PathBuf, CreateError> {
    config.validate().map_err(VmError::from)?;
    let inputs = inputs_for(config)?;
    let in_cache = dir.is_none();
    let dir = dir.map_or_else(|| cache_dir(&inputs), Path::to_path_buf);
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|source| SnapshotError::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    // Built next to its final place and renamed into it: a reader never
    // sees half a snapshot, and a failed attempt leaves nothing.
    let building = TempDir::create(&dir)?;
    let empty = building.path().join(EMPTY_DIR);
    std::fs::create_dir(&empty).map_err(|source| SnapshotError::Io {
        path: empty.clone(),
        source,
    })?;
    let empty_disk = building.path().join(EMPTY_DISK);
    file::create_private(&empty_disk)?;

    let mut template = config.clone();
    template.snapshot = SnapshotUse::Off;
    // Writable while the guest probes them, so that it does not take them
    // for read-only disks (a feature it reads once).
    template.disks = vec![Disk::new(empty_disk, false); DISK_SLOTS];
    let vsock = building.path().join("vsock.sock");
    template.vsock_uds = Some(vsock.clone());
    template.shares = slot_shares(&VmConfig::default(), building.path());
    // The network slots come with `template` (see `devices::virtio::plan`).
    template.nets = Vec::new();
    template.template = true;
    let vm = Vm::start(&template, std::io::sink())?;
    wait_until_ready(&vm, timeout)?;
    warm_up(&vsock).map_err(CreateError::WarmUp)?;
    std::thread::sleep(SETTLE);
    vm.snapshot(building.path(), inputs.clone())?;
    let _ = std::fs::remove_file(&vsock);
    building.persist(&dir)?;
    if in_cache {
        prune::prune(parent, &dir, &inputs);
    }
    Ok(dir)
}

fn wait_until_ready(vm: &Vm, timeout: Duration) -> Result<(), SnapshotError> {
    let deadline = Instant::now() + timeout;
    match vm.next_event(Some(deadline)) {
        Some(VmEvent::Console(ConsoleEvent::AgentReady)) => Ok(()),
        Some(VmEvent::Console(ConsoleEvent::KernelPanic(line)))
        | Some(VmEvent::Console(ConsoleEvent::AgentFatal(line))) => {
            Err(SnapshotError::Guest(format!("failed: {line}")))
        }
        Some(VmEvent::Exited(exit)) => Err(SnapshotError::Guest(format!(
            "stopped before its agent was ready: {exit}"
        ))),
        None => Err(SnapshotError::Guest(format!(
            "did not reach its agent within {} s",
            timeout.as_secs()
        ))),
    }
}

/// Why `vmrun snapshot create` failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("warming the guest up before the snapshot: {0}")]
    WarmUp(#[source] WarmUpError),
}

/// `snapshot create` builds in `<BUILDING_PREFIX><key><BUILDING_PID><pid>`
/// beside its final place, then renames it into place.
const BUILDING_PREFIX: char = '.';
const BUILDING_PID: &str = ".new-";

/// A directory removed on drop unless persisted.
struct TempDir(Option<PathBuf>);

impl TempDir {
    fn create(final_dir: &Path) -> Result<Self, SnapshotError> {
        use std::os::unix::fs::DirBuilderExt;
        let name = final_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = final_dir.with_file_name(format!(
            "{BUILDING_PREFIX}{name}{BUILDING_PID}{}",
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| SnapshotError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self(Some(path)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }

    fn persist(mut self, to: &Path) -> Result<(), SnapshotError> {
        let from = self.0.take().unwrap_or_default();
        // An older snapshot in the way (same key, remade) goes first.
        if to.exists() {
            let _ = std::fs::remove_dir_all(to);
        }
        std::fs::rename(&from, to).map_err(|source| {
            let _ = std::fs::remove_dir_all(&from);
            SnapshotError::Io {
                path: to.to_path_buf(),
                source,
            }
        })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs of a default-sized snapshot (also for the submodules' tests).
    pub(super) fn inputs() -> SnapshotInputs {
        SnapshotInputs {
            vmm_version: "0.1.0".into(),
            vcpus: 2,
            memory_mib: 256,
            kernel_digest: "aa".into(),
            initrd_digest: Some("bb".into()),
            extra_cmdline: vec![],
            compat_profile: true,
            share_slots: SHARE_SLOTS,
            disk_slots: DISK_SLOTS,
            net_slots: NET_SLOTS,
        }
    }

    #[test]
    fn a_failed_warm_up_says_what_was_being_done_and_keeps_its_cause() {
        let error = CreateError::WarmUp("the agent did not answer".into());
        assert_eq!(
            error.to_string(),
            "warming the guest up before the snapshot: the agent did not answer"
        );
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("the agent did not answer"));
    }

    #[test]
    fn every_input_mismatch_is_named() {
        let saved = inputs();
        assert!(check_inputs(&saved, &saved).is_ok());
        let cases: Vec<(SnapshotInputs, &str)> = vec![
            (
                SnapshotInputs {
                    vcpus: 1,
                    ..inputs()
                },
                "vCPU count is 2, this VM's is 1",
            ),
            (
                SnapshotInputs {
                    memory_mib: 512,
                    ..inputs()
                },
                "memory size is 256 MiB, this VM's is 512 MiB",
            ),
            (
                SnapshotInputs {
                    vmm_version: "9".into(),
                    ..inputs()
                },
                "VMM version",
            ),
            (
                SnapshotInputs {
                    kernel_digest: "cc".into(),
                    ..inputs()
                },
                "kernel",
            ),
            (
                SnapshotInputs {
                    initrd_digest: None,
                    ..inputs()
                },
                "initramfs (SHA-256) is bb, this VM's is none",
            ),
            (
                SnapshotInputs {
                    extra_cmdline: vec!["x".into()],
                    ..inputs()
                },
                "extra kernel command line",
            ),
            (
                SnapshotInputs {
                    compat_profile: false,
                    ..inputs()
                },
                "compatibility profile is on",
            ),
        ];
        for (wanted, message) in cases {
            let err = check_inputs(&saved, &wanted).unwrap_err().to_string();
            assert!(err.contains(message), "{err:?} lacks {message:?}");
        }
    }

    #[test]
    fn cache_key_follows_every_input() {
        let a = cache_dir(&inputs());
        assert_eq!(a, cache_dir(&inputs()));
        assert_ne!(
            a,
            cache_dir(&SnapshotInputs {
                vcpus: 1,
                ..inputs()
            })
        );
        assert_ne!(
            a,
            cache_dir(&SnapshotInputs {
                kernel_digest: "x".into(),
                ..inputs()
            })
        );
    }

    #[test]
    fn restorable_configs_need_vsock_and_few_shares_and_disks() {
        let with_vsock = VmConfig {
            vsock_uds: Some(PathBuf::from("/run/v.sock")),
            ..VmConfig::default()
        };
        assert!(check_restorable(&with_vsock).is_ok());
        assert!(check_restorable(&VmConfig::default()).is_err());
        let share = SharedDir::new("t", "/srv", false);
        let many = VmConfig {
            shares: (0..=SHARE_SLOTS)
                .map(|i| SharedDir {
                    tag: format!("t{i}"),
                    ..share.clone()
                })
                .collect(),
            ..with_vsock.clone()
        };
        assert!(check_restorable(&many)
            .unwrap_err()
            .to_string()
            .contains("at most 4"));
        let net = |tap: &str, mtu| NetConfig {
            tap: tap.into(),
            mtu,
            ..NetConfig::default()
        };
        let nets = |nets| VmConfig {
            nets,
            ..with_vsock.clone()
        };
        assert!(check_restorable(&nets(vec![net("t0", 1500), net("t1", 1400)])).is_ok());
        let err = check_restorable(&nets(vec![net("t0", 1500); 3])).unwrap_err();
        assert!(
            err.to_string().contains("at most 2 network interfaces"),
            "{err}"
        );
        let err = check_restorable(&nets(vec![net("t0", 9000)])).unwrap_err();
        assert!(err.to_string().contains("MTU of at most 1500"), "{err}");
        let slots = slot_shares(
            &VmConfig {
                shares: vec![share],
                ..with_vsock
            },
            Path::new("/s"),
        );
        assert_eq!(slots.len(), SHARE_SLOTS);
        assert_eq!(
            (slots[0].tag.as_str(), slots[0].path.as_path()),
            ("vmrun-fs0", Path::new("/srv"))
        );
        assert_eq!(slots[1].path, Path::new("/s/empty"));
        assert!(slots[1].read_only);
    }

    #[test]
    fn snapshot_use_parses() {
        assert_eq!("auto".parse::<SnapshotUse>(), Ok(SnapshotUse::Auto));
        assert_eq!("off".parse::<SnapshotUse>(), Ok(SnapshotUse::Off));
        assert_eq!(
            "/var/snap".parse::<SnapshotUse>(),
            Ok(SnapshotUse::Dir(PathBuf::from("/var/snap")))
        );
    }
}
