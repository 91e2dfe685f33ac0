//! A sandbox's host directory (see [`crate::layout`]): the VM's vsock socket,
//! its console log, its configuration, and `shared/`, the one host
//! directory the guest sees (over virtio-fs). Containers' root file systems
//! and bind sources are bind-mounted under `shared/<container id>/`, so
//! nothing else of the host is ever exposed.
//!
//! Kept short and under /run (not in containerd's bundle directory) because
//! Unix socket paths are limited to 108 bytes, and CRI ids alone are 64.
//! Private to root (0700): the guest writes below `shared/`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, SandboxError};
use crate::layout::runtime_root;
use crate::mountinfo::{has_mounts_under, unmount_under};

/// Directories of `vmrun run` are `vm-<pid of that vmrun>`.
const PROCESS_DIR_PREFIX: &str = "vm-";

/// The share root's own tmpfs: it holds only the containers' directories
/// and mount points, so a guest writing there fills a few pages of its
/// own, not the host's /run.
const SHARE_ROOT_OPTIONS: &str = "mode=0755,size=1m,nr_inodes=16384";

/// A sandbox's directory on the host.
#[derive(Clone, Debug)]
pub struct SandboxDir {
    path: PathBuf,
}

impl SandboxDir {
    /// The directory of pod sandbox `id` in containerd namespace `namespace`.
    pub fn for_pod(namespace: &str, id: &str) -> Self {
        let digest = Sha256::digest(format!("{namespace}/{id}"));
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            path: runtime_root().join("sb").join(name),
        }
    }

    /// The directory of this process's VM (`vmrun run`); those of `vmrun`
    /// processes that are gone are removed when it is created.
    pub fn for_this_process() -> Self {
        Self::in_root(&runtime_root(), std::process::id())
    }

    fn in_root(root: &Path, pid: u32) -> Self {
        Self {
            path: root.join(format!("{PROCESS_DIR_PREFIX}{pid}")),
        }
    }

    /// Creates it, with a `sandbox` file saying `label` (for whoever looks
    /// at /run/vmrun). A leftover of a sandbox that was not cleaned up is an
    /// error rather than something to reuse.
    pub fn create(&self, label: &str) -> Result<()> {
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent)
            .map_err(SandboxError::host(format!("create {}", parent.display())))?;
        if self.is_process_dir() {
            remove_stale(parent);
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700);
        builder.create(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                SandboxError::AlreadyExists(format!("sandbox directory {}", self.path.display()))
            }
            _ => SandboxError::host(format!("create {}", self.path.display()))(e),
        })?;
        builder
            .mode(0o755)
            .create(self.shared())
            .map_err(SandboxError::host(format!(
                "create {}",
                self.shared().display()
            )))?;
        std::fs::write(self.path.join("sandbox"), format!("{label}\n")).map_err(SandboxError::host(
            format!("write {}/sandbox", self.path.display()),
        ))
    }

    fn is_process_dir(&self) -> bool {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PROCESS_DIR_PREFIX))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hybrid vsock socket of the VM.
    pub fn vsock(&self) -> PathBuf {
        self.path.join("agent.vsock")
    }

    /// Everything the guest printed on its serial console (and the VMM's
    /// messages).
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }

    /// The configuration the VMM process was started with.
    pub fn vm_config(&self) -> PathBuf {
        self.path.join("vm.json")
    }

    /// The directory shared with the guest.
    pub fn shared(&self) -> PathBuf {
        self.path.join("shared")
    }

    /// Mounts the share root's own small tmpfs (nosuid, nodev, noexec) and
    /// makes it a shared mount: the containers' rootfs and volumes mounted
    /// beneath it later reach the VMM's jail, whose mount namespace is a
    /// slave of the host's (see `vmm::jail`). Before the VMM runs: no guest
    /// can race it yet.
    pub fn mount_share_root(&self) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        let shared = self.shared();
        let what = format!("mount the share root's tmpfs on {}", shared.display());
        mount(
            Some("tmpfs"),
            &shared,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(SHARE_ROOT_OPTIONS),
        )
        .map_err(SandboxError::sys(what.clone()))?;
        mount(
            None::<&str>,
            &shared,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .map_err(SandboxError::sys(what))
    }

    /// Unmounts whatever is still mounted under it, then removes it (see
    /// [`remove_unmounted`]).
    pub fn remove(&self) -> Result<()> {
        remove_unmounted(&self.path)
    }

    /// Takes away one container's part of the share (unmounts, then removes
    /// it), for a shim cleaning up after a pod member whose shim is gone.
    pub fn remove_container(&self, container_id: &str) -> Result<()> {
        remove_unmounted(&self.shared().join(container_id))
    }
}

/// Unmounts whatever is mounted under `path`, then removes it (a missing
/// one is fine). Never deletes through a mount: one that cannot be removed
/// keeps the directory (and is reported) rather than risking host files.
fn remove_unmounted(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    unmount_under(path)?;
    if has_mounts_under(path)? {
        return Err(SandboxError::Busy(format!(
            "{} still has mounts under it; left in place",
            path.display()
        )));
    }
    match std::fs::remove_dir_all(path) {
        // Another cleaner (see `unmount_under`) got there first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        result => result.map_err(SandboxError::host(format!("remove {}", path.display()))),
    }
}

/// Removes every `vm-<pid>` directory under `root` whose process no longer
/// exists (a `vmrun` that was SIGKILLed). Best effort: one that cannot be
/// removed is logged and left alone.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PROCESS_DIR_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let dir = SandboxDir::in_root(root, pid);
        match dir.remove() {
            Ok(()) => {
                tracing::info!(path = %dir.path.display(), "removed a stale runtime directory")
            }
            Err(e) => tracing::warn!("cannot remove a stale runtime directory: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn paths_stay_short_enough_for_unix_sockets() {
        // containerd ids are at most 76 characters.
        let id = "a".repeat(76);
        let dir = SandboxDir::for_pod("k8s.io", &id);
        assert_ne!(dir.path(), SandboxDir::for_pod("default", &id).path());
        let socket = dir.vsock().to_string_lossy().into_owned() + "_1024";
        assert!(socket.len() < 108, "{socket}");
    }

    #[test]
    fn create_and_remove_and_a_missing_one_is_fine() {
        let root = std::env::temp_dir().join(format!("vmrun-sbdir-{}", std::process::id()));
        let dir = SandboxDir {
            path: root.join("ns").join("sb1"),
        };
        dir.create("ns/sb1").unwrap();
        assert!(matches!(
            dir.create("ns/sb1"),
            Err(SandboxError::AlreadyExists(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sandbox")).unwrap(),
            "ns/sb1\n"
        );
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(dir.shared().is_dir());
        std::fs::write(dir.console_log(), "boot\n").unwrap();
        dir.remove().unwrap();
        assert!(!dir.path().exists());
        dir.remove().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_share_root_is_a_small_shared_tmpfs_removed_with_the_sandbox() {
        let root = std::env::temp_dir().join(format!("vmrun-shareroot-{}", std::process::id()));
        let dir = SandboxDir {
            path: root.join("sb1"),
        };
        dir.create("sb1").unwrap();
        dir.mount_share_root().unwrap();
        let shared = dir.shared().to_string_lossy().into_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(shared.as_str()))
            .unwrap_or_else(|| panic!("{shared} not mounted:\n{mountinfo}"));
        assert!(line.contains(" shared:"), "{line}");
        assert!(line.contains("nosuid,nodev,noexec"), "{line}");
        assert!(line.contains(" - tmpfs "), "{line}");
        // A guest filling the share root hits the tmpfs's size.
        let big = vec![0u8; 2 << 20];
        let err = std::fs::write(dir.shared().join("filler"), &big).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        dir.remove().unwrap();
        assert!(!dir.path().exists());
        assert!(!std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&shared));
        std::fs::remove_dir_all(root).unwrap();
    }

    /// The pid of a process that has exited (and been reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn directories_of_dead_vmruns_are_swept_and_no_others() {
        let root = std::env::temp_dir().join(format!("vmrun-runtime-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dead = SandboxDir::in_root(&root, dead_pid());
        let alive = SandboxDir::in_root(&root, std::process::id());
        let pods = root.join("sb");
        for dir in [dead.path(), alive.path(), &pods] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("agent.vsock"), "").unwrap();
        }
        let new = SandboxDir::in_root(&root, 1 << 30);
        new.create("vm").unwrap();
        assert!(!dead.path().exists(), "the dead vmrun's directory is left");
        assert!(alive.vsock().exists());
        assert!(pods.join("agent.vsock").exists());
        new.remove().unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
