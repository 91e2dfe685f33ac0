//! virtio-blk over a raw disk image file on the host.
//!
//! One request queue; requests are served synchronously by the device's
//! worker thread with `pread`/`pwrite` straight between the image file and
//! guest memory (no bounce buffer). Supported requests: `IN`, `OUT`, `FLUSH`
//! (`fdatasync`) and `GET_ID`; anything else gets `VIRTIO_BLK_S_UNSUPP`.
//!
//! Everything in a request is checked before any I/O happens: the header must
//! be a readable descriptor, the status byte the last byte of a writable last
//! descriptor, data descriptors must point the right way, lie in guest memory,
//! be at most [`MAX_SEGMENTS`] and [`MAX_REQUEST_BYTES`] in total, and the
//! sector range must lie within the capacity. A chain without a usable status
//! byte is returned unanswered (used length 0); any other malformed request
//! gets `VIRTIO_BLK_S_IOERR`. The status byte is written after the data.
//!
//! A device may be rate limited ([`BlockDevice::with_rate_limit`]): each
//! request costs its data length in bytes and one operation, and one that
//! does not fit the budget waits in the ring, with the requests behind it,
//! until the limiter's timer says it fits (see [`crate::rate_limiter`]).
//!
//! Module layout: [`device`] is the [`VirtioDevice`](crate::VirtioDevice)
//! face, `request` parses and executes one descriptor chain, `file_io` does
//! positioned I/O between the image and guest memory.

pub mod device;
mod file_io;
mod request;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use device::BlockDevice;

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Sector size of the virtio-blk protocol (independent of the image's
/// block size).
pub const SECTOR_SIZE: u64 = 512;
/// Maximum number of data descriptors per request (advertised as `seg_max`).
pub const MAX_SEGMENTS: u32 = 128;
/// Maximum length of one data descriptor (advertised as `size_max`).
pub const MAX_SEGMENT_SIZE: u32 = 1 << 20;
/// Maximum data length of one request: the most a driver honouring
/// `seg_max` and `size_max` can send.
pub const MAX_REQUEST_BYTES: u64 = MAX_SEGMENTS as u64 * MAX_SEGMENT_SIZE as u64;

/// Errors creating the block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The disk image could not be opened.
    #[error("failed to open disk image {path}: {source}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The size or identity of the disk image could not be determined.
    #[error("failed to inspect disk image {path}: {source}")]
    Inspect {
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The rate limiter's timer could not be created.
    #[error("cannot create the rate limiter of disk image {path}: {source}")]
    RateLimiter {
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
