//! The VMM process confines itself before it runs guest code, as
//! Firecracker's jailer does, so that a guest that takes over the VMM gets
//! as little of the host as the VMM can work with:
//!
//! - it is PID 1 of a PID namespace of its own ([`pid_namespace`]): it
//!   cannot name, signal or trace any host process;
//! - new mount, IPC, UTS and network namespaces; its root is an empty
//!   read-only tmpfs holding only the directories it serves or listens in
//!   (the sandbox directory, the shares), all nosuid,nodev ([`root`]);
//! - every capability dropped (also from the bounding set), except those
//!   the virtio-fs passthrough needs when the VM has shares
//!   ([`capabilities`]); no new privileges;
//! - `RLIMIT_NOFILE`, `RLIMIT_FSIZE` set and no core dumps ([`limits`]).
//!
//! Everything the VM needs from the host (KVM, memory, the kernel or the
//! snapshot, disk images, the vsock listener, taps) is opened by
//! [`crate::Vm::create`] before; the seccomp filters of its threads come
//! after ([`crate::seccomp`]).

pub mod capabilities;
mod limits;
pub mod pid_namespace;
mod root;

use std::io;
use std::path::{Path, PathBuf};

use vm_config::VmConfig;

pub use capabilities::Capability;

/// Why the VMM could not be confined (it then does not run the guest).
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail: cannot {op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("jail: cannot change capabilities ({op}): {source}")]
    Capabilities {
        op: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("jail: {0} must be an absolute path")]
    RelativePath(PathBuf),
}

impl JailError {
    fn sys(op: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let op = op.into();
        move |source| Self::Sys { op, source }
    }
}

/// A host directory visible inside the jail, at the same path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailBind {
    pub path: PathBuf,
    pub read_only: bool,
}

/// What the jail of one VM holds and keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailPlan {
    /// Directories seen inside, none beneath another.
    pub binds: Vec<JailBind>,
    /// Mounts inside that are then made read-only themselves, not what is
    /// mounted beneath them: the tops of shares with `read_only_top`.
    pub read_only_tops: Vec<PathBuf>,
    /// The capabilities kept.
    pub capabilities: &'static [Capability],
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// `RLIMIT_FSIZE` in bytes.
    pub file_size: u64,
}

impl JailPlan {
    /// The jail of a VM built from `config`: its vsock socket's directory
    /// (guest connections reach `<socket>_<port>` there) and its shares.
    pub fn for_vm(config: &VmConfig) -> Result<Self, JailError> {
        let mut binds = Vec::new();
        if let Some(dir) = config.vsock_uds.as_deref().and_then(Path::parent) {
            binds.push(JailBind {
                path: dir.to_path_buf(),
                read_only: false,
            });
        }
        for share in &config.shares {
            binds.push(JailBind {
                path: share.path.clone(),
                read_only: share.read_only,
            });
        }
        if let Some(relative) = binds.iter().find(|b| !b.path.is_absolute()) {
            return Err(JailError::RelativePath(relative.path.clone()));
        }
        let largest_disk = config
            .disks
            .iter()
            .filter_map(|disk| std::fs::metadata(&disk.path).ok())
            .map(|meta| meta.len())
            .max()
            .unwrap_or(0);
        let read_only_tops = config
            .shares
            .iter()
            .filter(|share| share.read_only_top)
            .map(|share| share.path.clone())
            .collect();
        Ok(Self {
            binds: outermost(binds),
            read_only_tops,
            capabilities: capabilities::kept(!config.shares.is_empty()),
            open_files: config.jail.open_files,
            file_size: (config.jail.file_size_mib << 20).max(largest_disk),
        })
    }
}

/// `binds` without those beneath another (seen through it already); a
/// writable one wins over a read-only one of the same path.
fn outermost(mut binds: Vec<JailBind>) -> Vec<JailBind> {
    binds.sort_by(|a, b| a.path.cmp(&b.path).then(a.read_only.cmp(&b.read_only)));
    let mut kept: Vec<JailBind> = Vec::new();
    for bind in binds {
        if !kept.iter().any(|k| bind.path.starts_with(&k.path)) {
            kept.push(bind);
        }
    }
    kept
}

/// Confines the calling process as `plan` says: namespaces, root,
/// limits, capabilities, no new privileges. It must be single-threaded
/// (a new mount namespace needs that) and is, from here on, in the jail.
pub fn enter(plan: &JailPlan) -> Result<(), JailError> {
    unshare_namespaces()?;
    root::enter(&plan.binds, &plan.read_only_tops)?;
    limits::apply(plan.open_files, plan.file_size)?;
    capabilities::restrict(plan.capabilities)?;
    no_new_privileges()
}

/// New mount, IPC, UTS and network namespaces for the calling process.
/// (The taps of a VM are open already; its vsock is a Unix socket by
/// path, which network namespaces do not scope.)
fn unshare_namespaces() -> Result<(), JailError> {
    let flags = libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET;
    // SAFETY: unshare takes no pointers; it only moves this process into
    // new namespaces.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(JailError::sys(
            "unshare the mount, IPC, UTS and network namespaces",
        )(io::Error::last_os_error()));
    }
    Ok(())
}

/// No exec from here on can gain privileges (setuid, file capabilities).
pub fn no_new_privileges() -> Result<(), JailError> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(JailError::sys("set no_new_privs")(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_config::{Disk, SharedDir};

    #[test]
    fn the_plan_holds_the_socket_directory_and_the_shares_once() {
        let config = VmConfig {
            vsock_uds: Some(PathBuf::from("/run/vmrun/sb/ab/agent.vsock")),
            shares: vec![
                SharedDir::new("sandbox", "/run/vmrun/sb/ab/shared", false).with_read_only_top(),
                SharedDir::new("data", "/srv/data", true),
            ],
            ..VmConfig::default()
        };
        let plan = JailPlan::for_vm(&config).unwrap();
        assert_eq!(
            plan.binds,
            vec![
                JailBind {
                    path: PathBuf::from("/run/vmrun/sb/ab"),
                    read_only: false
                },
                JailBind {
                    path: PathBuf::from("/srv/data"),
                    read_only: true
                },
            ]
        );
        assert_eq!(
            plan.read_only_tops,
            vec![PathBuf::from("/run/vmrun/sb/ab/shared")]
        );
        assert_eq!(plan.capabilities, capabilities::kept(true));
        assert_eq!(plan.open_files, 65536);
        assert_eq!(plan.file_size, 64 << 30);
    }

    #[test]
    fn no_shares_keep_no_capabilities_and_relative_paths_are_refused() {
        let plan = JailPlan::for_vm(&VmConfig::default()).unwrap();
        assert!(plan.binds.is_empty());
        assert!(plan.capabilities.is_empty());
        let config = VmConfig {
            vsock_uds: Some(PathBuf::from("sb/agent.vsock")),
            ..VmConfig::default()
        };
        let err = JailPlan::for_vm(&config).unwrap_err();
        assert!(
            err.to_string()
                .contains("jail: sb must be an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn the_file_size_limit_fits_the_largest_disk() {
        let image = std::env::temp_dir().join(format!("vmrun-jail-disk-{}", std::process::id()));
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(3 << 20).unwrap();
        let mut config = VmConfig {
            disks: vec![Disk::new(image.clone(), false)],
            ..VmConfig::default()
        };
        config.jail.file_size_mib = 1;
        assert_eq!(JailPlan::for_vm(&config).unwrap().file_size, 3 << 20);
        std::fs::remove_file(image).unwrap();
    }
}
