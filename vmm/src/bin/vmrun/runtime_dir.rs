//! A private directory per VM for its sockets, removed when the VM ends.
//! Directories left by a `vmrun` that was killed (SIGKILL, a crash) are
//! removed by the next one.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// Parent of every VM's runtime directory (override: `VMRUN_RUNTIME_DIR`).
const DEFAULT_RUNTIME_ROOT: &str = "/run/vmrun";
/// Runtime directories are named `vm-<pid of the vmrun owning it>`.
const VM_DIR_PREFIX: &str = "vm-";
/// Subdirectory holding the bind mounts of single files (`file_binds`).
const FILES_DIR: &str = "files";

/// `<root>/<name>`, created empty, removed with everything in it on drop.
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates the directory for a VM named `name`.
    pub fn create(name: &str) -> Result<Self, String> {
        let root = std::env::var_os("VMRUN_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_ROOT));
        Self::create_in(&root, name)
    }

    /// Creates `<root>/<name>`, after removing the directories of VMs whose
    /// `vmrun` is gone.
    pub fn create_in(root: &Path, name: &str) -> Result<Self, String> {
        let path = root.join(name);
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create runtime directory {}: {e}", root.display()))?;
        remove_stale(root);
        std::fs::create_dir(&path)
            .map_err(|e| format!("cannot create runtime directory {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// The hybrid vsock socket of the VM.
    pub fn vsock_socket(&self) -> PathBuf {
        self.path.join("vsock.sock")
    }

    /// Where a container's single-file bind sources are bound (see
    /// `file_binds`).
    pub fn files_dir(&self) -> PathBuf {
        self.path.join(FILES_DIR)
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove runtime directory: {e}");
        }
    }
}

/// Removes every `vm-<pid>` directory under `root` whose process no longer
/// exists. Best effort: a directory that cannot be removed is logged and
/// left alone.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(VM_DIR_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let dir = entry.path();
        // The files a dead vmrun bound are still mounted: unmount them first,
        // so that removing the directory cannot reach through a bind into
        // the host file it shows.
        if let Ok(files) = std::fs::read_dir(dir.join(FILES_DIR)) {
            for file in files.flatten() {
                let _ = umount2(&file.path(), MntFlags::MNT_DETACH);
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(path = %dir.display(), "removed a stale runtime directory"),
            Err(e) => tracing::warn!(
                path = %dir.display(),
                "cannot remove a stale runtime directory: {e}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pid of a process that has exited (and been reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn removes_directories_of_dead_vmruns_only() {
        let root = std::env::temp_dir().join(format!("vmrun-runtime-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dead = root.join(format!("vm-{}", dead_pid()));
        let alive = root.join(format!("vm-{}", std::process::id()));
        let other = root.join("sb");
        for dir in [&dead, &alive, &other] {
            std::fs::create_dir_all(dir.join(FILES_DIR)).unwrap();
            std::fs::write(dir.join("vsock.sock"), "").unwrap();
        }

        let dir = RuntimeDir::create_in(&root, "vm-new").unwrap();
        assert!(!dead.exists(), "the dead vmrun's directory is left");
        assert!(alive.join("vsock.sock").exists());
        assert!(other.join("vsock.sock").exists());
        assert_eq!(dir.vsock_socket(), root.join("vm-new/vsock.sock"));
        drop(dir);
        assert!(!root.join("vm-new").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
