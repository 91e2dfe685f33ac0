//! How the VMM process confines itself before it runs guest code (see the
//! VMM's `jail` module for what each part does).

use serde::{Deserialize, Serialize};

/// The VMM process's confinement: its own namespaces and root,
/// capabilities dropped, resource limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JailConfig {
    /// Confine the VMM process. Off only for debugging (`--no-jail`), and
    /// said so in the log.
    pub enabled: bool,
    /// `RLIMIT_NOFILE` of the VMM: every descriptor it holds, including
    /// the virtio-fs inodes and handles the guest keeps open.
    pub open_files: u64,
    /// `RLIMIT_FSIZE` of the VMM in MiB: no file it writes for the guest
    /// (through virtio-fs or a disk image) grows past this. Raised to the
    /// size of the largest disk image attached.
    pub file_size_mib: u64,
}

/// Smallest `open_files` a VM can run with (the VMM's own descriptors).
pub const MIN_OPEN_FILES: u64 = 64;

impl Default for JailConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            // The virtio-fs caps of every share fit below this.
            open_files: 65536,
            file_size_mib: 64 * 1024,
        }
    }
}
