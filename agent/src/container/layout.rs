//! The file layout below the engine's state root.
//!
//! ```text
//! <state root>/lc/<id>/          libcontainer's state (it creates it)
//! <state root>/c/<id>/           the bundle: config.json as rewritten
//!     exec-<n>.json              an ExecInContainer process, while starting
//!     overlay/{upper,work}       tmpfs of a writable overlay
//!     rootfs/                    the overlay's mount point
//! <state root>/tty/<n>.sock      console sockets (short: sun_path limit)
//! ```

use std::path::{Path, PathBuf};

/// Paths shared by all containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// libcontainer's `root_path`.
    pub fn libcontainer_root(&self) -> PathBuf {
        self.root.join("lc")
    }

    /// libcontainer's state directory of one container.
    pub fn libcontainer_state(&self, id: &str) -> PathBuf {
        self.libcontainer_root().join(id)
    }

    pub fn bundles(&self) -> PathBuf {
        self.root.join("c")
    }

    pub fn bundle(&self, id: &str) -> BundleLayout {
        BundleLayout {
            dir: self.bundles().join(id),
        }
    }

    pub fn consoles(&self) -> PathBuf {
        self.root.join("tty")
    }

    pub fn console_socket(&self, serial: u64) -> PathBuf {
        self.consoles().join(format!("{serial}.sock"))
    }
}

/// One container's bundle directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleLayout {
    dir: PathBuf,
}

impl BundleLayout {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn exec_process(&self, serial: u64) -> PathBuf {
        self.dir.join(format!("exec-{serial}.json"))
    }

    /// The tmpfs holding the overlay's upper and work directories.
    pub fn overlay_tmpfs(&self) -> PathBuf {
        self.dir.join("overlay")
    }

    pub fn overlay_upper(&self) -> PathBuf {
        self.overlay_tmpfs().join("upper")
    }

    pub fn overlay_work(&self) -> PathBuf {
        self.overlay_tmpfs().join("work")
    }

    /// Where the overlay is mounted: the container's root.
    pub fn overlay_rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sockets_fit_sun_path_even_for_long_ids() {
        let layout = StateLayout::new(super::super::config::GUEST_STATE_ROOT);
        let socket = layout.console_socket(u64::MAX);
        assert!(socket.as_os_str().len() < 108, "{}", socket.display());
        let id = "a".repeat(64);
        let notify = layout.libcontainer_state(&id).join("notify.sock");
        assert!(notify.as_os_str().len() < 108, "{}", notify.display());
    }

    #[test]
    fn bundle_paths() {
        let bundle = StateLayout::new("/s").bundle("web");
        assert_eq!(bundle.config(), Path::new("/s/c/web/config.json"));
        assert_eq!(bundle.overlay_upper(), Path::new("/s/c/web/overlay/upper"));
        assert_eq!(bundle.overlay_rootfs(), Path::new("/s/c/web/rootfs"));
        assert_eq!(bundle.exec_process(3), Path::new("/s/c/web/exec-3.json"));
    }
}
