//! A sandbox's host directory: `/run/vmrun/sb/<hash of namespace and id>/` with
//! the VM's vsock socket, its console log, and `shared/`, the one host
//! directory the guest sees (over virtio-fs). Containers' root file systems
//! and volumes are bind-mounted under `shared/<container id>/`, so nothing
//! else of the host is ever exposed.
//!
//! Kept short and under /run (not in containerd's bundle directory) because
//! Unix socket paths are limited to 108 bytes, and CRI ids alone are 64.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, ShimError};

/// Parent of every sandbox directory (override: `VMRUN_RUNTIME_DIR`).
const DEFAULT_RUNTIME_ROOT: &str = "/run/vmrun";

/// A sandbox's directory on the host.
#[derive(Clone, Debug)]
pub struct SandboxDir {
    path: PathBuf,
}

impl SandboxDir {
    /// The directory of sandbox `id` in containerd namespace `namespace`.
    pub fn of(namespace: &str, id: &str) -> Self {
        let root = std::env::var_os("VMRUN_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_ROOT));
        let digest = Sha256::digest(format!("{namespace}/{id}"));
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            path: root.join("sb").join(name),
        }
    }

    /// Creates it; a leftover of a sandbox that was not cleaned up is an
    /// error rather than something to reuse.
    pub fn create(&self, namespace: &str, id: &str) -> Result<()> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(ShimError::host(format!("create {}", parent.display())))?;
        }
        std::fs::create_dir(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                ShimError::AlreadyExists(format!("sandbox directory {}", self.path.display()))
            }
            _ => ShimError::Host {
                what: format!("create {}", self.path.display()),
                source: e,
            },
        })?;
        std::fs::create_dir(self.shared()).map_err(ShimError::host(format!(
            "create {}",
            self.shared().display()
        )))?;
        // Which sandbox this is, for whoever looks at /run/vmrun.
        std::fs::write(self.path.join("sandbox"), format!("{namespace}/{id}\n")).map_err(
            ShimError::host(format!("write {}/sandbox", self.path.display())),
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hybrid vsock socket of the VM.
    pub fn vsock(&self) -> PathBuf {
        self.path.join("agent.vsock")
    }

    /// Everything the guest printed on its serial console.
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }

    /// The directory shared with the guest.
    pub fn shared(&self) -> PathBuf {
        self.path.join("shared")
    }

    /// Unmounts whatever is still mounted under it, then removes it. Never
    /// deletes through a mount: a mount that cannot be removed keeps the
    /// directory (and is reported) rather than risking host files.
    pub fn remove(&self) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        let target = self.path.to_string_lossy().into_owned();
        containerd_shim::mount::umount_recursive(Some(&target), libc::MNT_DETACH).map_err(|e| {
            ShimError::Vm(format!("cannot unmount what is left under {target}: {e}"))
        })?;
        if crate::host_mounts::has_mounts_under(&self.path)? {
            return Err(ShimError::FailedPrecondition(format!(
                "{target} still has mounts under it; left in place"
            )));
        }
        std::fs::remove_dir_all(&self.path).map_err(ShimError::host(format!("remove {target}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_short_enough_for_unix_sockets() {
        // containerd ids are at most 76 characters.
        let id = "a".repeat(76);
        let dir = SandboxDir::of("k8s.io", &id);
        assert_ne!(dir.path(), SandboxDir::of("default", &id).path());
        let socket = dir.vsock().to_string_lossy().into_owned() + "_1024";
        assert!(socket.len() < 108, "{socket}");
    }

    #[test]
    fn remove_takes_away_the_directory_and_a_missing_one_is_fine() {
        let root = std::env::temp_dir().join(format!("vmrun-sbdir-{}", std::process::id()));
        let dir = SandboxDir {
            path: root.join("ns").join("sb1"),
        };
        std::fs::create_dir_all(root.join("ns")).unwrap();
        dir.create("ns", "sb1").unwrap();
        assert!(matches!(
            dir.create("ns", "sb1"),
            Err(ShimError::AlreadyExists(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sandbox")).unwrap(),
            "ns/sb1\n"
        );
        std::fs::write(dir.console_log(), "boot\n").unwrap();
        dir.remove().unwrap();
        assert!(!dir.path().exists());
        dir.remove().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }
}
