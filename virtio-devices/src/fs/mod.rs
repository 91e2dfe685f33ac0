//! virtio-fs served in-process: a FUSE passthrough of one host directory,
//! no external virtiofsd.
//!
//! The device has a hiprio queue (FORGET, INTERRUPT) and one request queue;
//! its worker thread decodes FUSE messages with fuse-backend-rs's `Server`
//! and serves them with its `PassthroughFs`, wrapped in a policy layer
//! (`guard`, checks in `policy`). No DAX window (no shared memory region).
//!
//! # What keeps the guest inside the shared directory
//!
//! The passthrough holds an `O_PATH` descriptor per inode the guest has
//! looked up and resolves every name with `openat(dir_fd, name,
//! O_NOFOLLOW)`, one component at a time; data I/O reopens that descriptor
//! through `/proc/self/fd`, which refers to the inode itself rather than
//! re-walking a path. On top of that:
//!
//! * names must be single components (no `/`, not empty, not `.`/`..`
//!   except in LOOKUP); a NUL ends a name; `..` of the root is the root;
//! * symlinks are never followed on the host: lookups use `O_NOFOLLOW`, a
//!   symlink inode cannot be opened or used as a directory, and READLINK
//!   returns the target verbatim for the guest to resolve in its own tree;
//! * only regular files and directories are ever opened (no FIFOs that could
//!   block the worker, no device nodes), and MKNOD refuses device nodes;
//! * inode numbers and file handles are indices into the device's own
//!   tables, so crafted numbers are EBADF; file handles in the
//!   `open_by_handle_at` sense are disabled;
//! * hard links can only be made to inodes the guest already reached, i.e.
//!   inside the share;
//! * a read-only share answers every modifying operation with EROFS.
//!
//! The host side must still do its part: a share that contains host
//! symlinks, hard links or bind mounts to elsewhere exposes what they point
//! to, and guest root can create setuid files and set xattrs (when enabled)
//! in the share, so host processes should not execute or trust its content
//! (mount it `nosuid,nodev`).
//!
//! # Hostile requests
//!
//! Both sides of a descriptor chain are cut to 1 MiB + 4 KiB (a maximal read
//! or write plus headers); the server refuses headers claiming more; the
//! policy layer caps the sizes the passthrough allocates from, and refuses
//! `O_PATH` (with it the kernel ignores `O_CREAT|O_EXCL` and follows a
//! trailing symlink, so the passthrough's CREATE would open a symlink's host
//! target). Requests that cannot be decoded get an error reply or none.
//!
//! The worker thread runs with its own filesystem attributes
//! (`unshare(CLONE_FS)`): the passthrough clears the umask so that guest
//! modes apply verbatim, and that must not leak into the rest of the VMM.
//! For creating operations the passthrough also switches the worker
//! thread's effective uid/gid to the guest caller's (per-thread
//! `setresuid`/`setresgid`), so those need a root (or CAP_SETUID/CAP_SETGID)
//! VMM unless the guest caller is the VMM's own user.
//!
//! Every inode the guest holds a lookup on keeps an `O_PATH` descriptor open
//! in the VMM, and every open file a descriptor. The policy layer caps both
//! per device ([`FsConfig::max_inodes`], [`FsConfig::max_handles`]): past a
//! cap a request that would add one fails with ENFILE, and the guest gets
//! room back as it forgets inodes and releases handles. The defaults
//! ([`DEFAULT_MAX_INODES`], [`DEFAULT_MAX_HANDLES`]) are sized so that four
//! shares, the most a restored VM has, hold at most 4 x (12288 + 2048) =
//! 57344 descriptors, leaving 8192 of an `RLIMIT_NOFILE` of 65536 for the
//! rest of the VMM (at most 1024 vsock connections, the disks, eventfds,
//! KVM's vCPU descriptors).

pub mod device;
mod guard;
mod policy;
mod serve;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use device::FsDevice;

/// Size of the hiprio queue.
pub const HIPRIO_QUEUE_SIZE: u16 = 128;
/// Size of the request queue.
pub const REQUEST_QUEUE_SIZE: u16 = 1024;
/// Maximum length of the mount tag, in bytes.
pub const MAX_TAG_LEN: usize = 36;
/// Default cap on the inodes the guest holds a lookup on, per device. A
/// Linux guest keeps a lookup for every inode in its cache and forgets them
/// only under memory pressure, so a guest that walks a larger tree than
/// this (`find` over a big image) gets ENFILE for the rest until its cache
/// shrinks: raise it for such shares.
pub const DEFAULT_MAX_INODES: usize = 12288;
/// Default cap on the files and directories the guest holds open, per
/// device (a guest program's open files on the share, and its mmaps).
pub const DEFAULT_MAX_HANDLES: usize = 2048;

/// How much the guest may cache (maps to the passthrough's cache policy and
/// the entry/attribute timeouts it hands out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsCachePolicy {
    /// No data caching, no entry/attribute caching: the host may change the
    /// share at any time.
    Never,
    /// 1 s entry/attribute timeouts; file data stays cached across opens
    /// until a refreshed attribute shows the host file with another size or
    /// mtime (FUSE_AUTO_INVAL_DATA), so a host change is seen within about
    /// a second. The right choice for a container rootfs the host does not
    /// modify while the guest runs but may inspect: an exec does not read
    /// its binary again.
    #[default]
    Auto,
    /// The guest keeps cached data across opens and caches metadata for a
    /// day: only for shares the guest has to itself.
    Always,
}

/// Options of one shared directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsConfig {
    /// Refuse every modifying operation with EROFS.
    pub read_only: bool,
    /// Guest caching.
    pub cache: FsCachePolicy,
    /// Pass extended attributes through. Off by default: with it on, guest
    /// root can set `security.*`/`trusted.*` attributes on host files, and
    /// every guest write costs a `security.capability` lookup.
    pub xattr: bool,
    /// Let the guest cache writes and write them back later (FUSE writeback
    /// cache). Only safe when the guest has the share to itself; ignored for
    /// read-only shares and with [`FsCachePolicy::Never`].
    pub writeback: bool,
    /// Most inodes the guest may hold a lookup on at once (each keeps an
    /// `O_PATH` descriptor open in the VMM); the root is not counted.
    pub max_inodes: usize,
    /// Most files and directories the guest may hold open at once (each a
    /// descriptor in the VMM).
    pub max_handles: usize,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            read_only: false,
            cache: FsCachePolicy::default(),
            xattr: false,
            writeback: false,
            max_inodes: DEFAULT_MAX_INODES,
            max_handles: DEFAULT_MAX_HANDLES,
        }
    }
}

/// Errors creating the fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag is empty, longer than [`MAX_TAG_LEN`] bytes or contains NUL.
    #[error("invalid virtio-fs tag {tag:?}: {reason}")]
    InvalidTag {
        /// The tag given.
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The shared directory cannot be resolved.
    #[error("shared directory {path}: {source}")]
    SharedDir {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The shared path is not a directory.
    #[error("shared path {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The passthrough takes its root as a UTF-8 string.
    #[error("shared directory {0} is not valid UTF-8")]
    NonUtf8Path(PathBuf),
    /// Setting up the passthrough file system failed (it needs `/proc`).
    #[error("failed to set up the passthrough file system for {path}: {source}")]
    Passthrough {
        /// The shared directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
