//! What can go wrong mounting storage. The gRPC codes are decided in
//! `server::error`.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    /// The block device to mount does not exist.
    #[error("mount storage: source {} does not exist", .source_path.display())]
    NoSource { source_path: PathBuf },

    #[error("mount storage: {} is already a mount point of the agent's", .mount_point.display())]
    AlreadyMounted { mount_point: PathBuf },

    #[error("unmount storage: nothing was mounted on {} through the agent", .mount_point.display())]
    NotMounted { mount_point: PathBuf },

    /// mount(2) failed; the errno decides the code.
    #[error("mount storage: cannot mount {fstype} {source_name} on {}: {errno}", .mount_point.display())]
    Mount {
        fstype: String,
        source_name: String,
        mount_point: PathBuf,
        errno: Errno,
    },

    #[error("unmount storage: cannot unmount {}: {errno}", .mount_point.display())]
    Unmount { mount_point: PathBuf, errno: Errno },

    #[error("mount storage: cannot create mount point {}: {source}", .mount_point.display())]
    MakeMountPoint {
        mount_point: PathBuf,
        source: io::Error,
    },
}

impl StorageError {
    pub fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }
}
