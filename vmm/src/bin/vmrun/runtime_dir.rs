//! A private directory per VM for its sockets, removed when the VM ends.

use std::path::PathBuf;

/// Parent of every VM's runtime directory (override: `VMRUN_RUNTIME_DIR`).
const DEFAULT_RUNTIME_ROOT: &str = "/run/vmrun";

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
        let path = root.join(name);
        std::fs::create_dir_all(&root)
            .and_then(|()| std::fs::create_dir(&path))
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
        self.path.join("files")
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove runtime directory: {e}");
        }
    }
}
