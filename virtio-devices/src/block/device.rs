//! The virtio-blk [`VirtioDevice`]: identity, features, configuration space
//! and the worker thread serving the request queue.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{debug, info};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::request::{data_bytes, process_chain, Disk, ID_LEN};
use super::{BlockError, MAX_SEGMENTS, MAX_SEGMENT_SIZE, QUEUE_SIZE, SECTOR_SIZE};
use crate::device::{exact_queues, read_config_bytes};
use crate::queue_loop::serve_rate_limited_queue;
use crate::rate_limiter::{Clock, LimiterStore, RateLimit, RateLimiter, ThrottleCount};
use crate::worker::Worker;
use crate::{ActivateError, GuestMemoryMmap, IrqTrigger, VirtioDevice};

const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];
/// `capacity` (le64), `size_max` (le32), `seg_max` (le32): the prefix of
/// `struct virtio_blk_config` the offered features make valid.
const CONFIG_LEN: usize = 16;

/// A virtio-blk device backed by a raw image file.
pub struct BlockDevice {
    path: PathBuf,
    disk: Arc<Disk>,
    config: [u8; CONFIG_LEN],
    /// The limiter, lent to each worker and handed back when it stops.
    limiter: LimiterStore,
    worker: Option<Worker<RateLimiter>>,
}

impl BlockDevice {
    /// Opens the raw image at `path` (read-write unless `read_only`). The
    /// capacity is the image size rounded down to whole 512-byte sectors.
    /// The device is not rate limited (see
    /// [`with_rate_limit`](Self::with_rate_limit)).
    pub fn new(path: PathBuf, read_only: bool) -> Result<Self, BlockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(|source| BlockError::Open {
                path: path.clone(),
                source,
            })?;
        let inspect = |source| BlockError::Inspect {
            path: path.clone(),
            source,
        };
        // Seeking to the end also sizes block devices, whose metadata length
        // is 0.
        let size = file.seek(SeekFrom::End(0)).map_err(inspect)?;
        let meta = file.metadata().map_err(inspect)?;
        let capacity_sectors = size / SECTOR_SIZE;
        if !size.is_multiple_of(SECTOR_SIZE) {
            info!(
                "virtio-blk: {}: the last {} bytes are not a whole sector and stay invisible",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        let disk = Disk {
            file,
            capacity_sectors,
            read_only,
            id: device_id(&meta),
        };
        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&capacity_sectors.to_le_bytes());
        config[8..12].copy_from_slice(&MAX_SEGMENT_SIZE.to_le_bytes());
        config[12..16].copy_from_slice(&MAX_SEGMENTS.to_le_bytes());
        debug!(
            "virtio-blk: {} opened, {capacity_sectors} sectors{}",
            path.display(),
            if read_only { ", read-only" } else { "" }
        );
        Ok(BlockDevice {
            path,
            disk: Arc::new(disk),
            config,
            limiter: LimiterStore::unlimited(),
            worker: None,
        })
    }

    /// Limits what the guest may make the device do per second: each
    /// request costs its data length in bytes and one operation, timed by
    /// `clock` (a [`MonotonicClock`](crate::MonotonicClock) outside tests).
    /// Creates the limiter's timer now.
    pub fn with_rate_limit(
        mut self,
        limit: RateLimit,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BlockError> {
        self.limiter =
            LimiterStore::new(limit, clock).map_err(|source| BlockError::RateLimiter {
                path: self.path.clone(),
                source,
            })?;
        Ok(self)
    }

    /// The rate limit.
    pub fn rate_limit(&self) -> RateLimit {
        self.limiter.limit()
    }

    /// How often the rate limiter has held requests back.
    pub fn throttle_count(&self) -> ThrottleCount {
        self.limiter.throttle_count()
    }

    /// The capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors
    }

    /// Whether the device is read-only (offers `VIRTIO_BLK_F_RO`).
    pub fn is_read_only(&self) -> bool {
        self.disk.read_only
    }

    /// The 20-byte serial reported for `VIRTIO_BLK_T_GET_ID` (NUL-padded).
    pub fn device_id(&self) -> &[u8; ID_LEN] {
        &self.disk.id
    }
}

/// A serial that identifies the image file on this host: its device and inode
/// numbers in hex, NUL-padded (or cut) to 20 bytes.
fn device_id(meta: &std::fs::Metadata) -> [u8; ID_LEN] {
    let text = format!("{:x}-{:x}", meta.dev(), meta.ino());
    let mut id = [0u8; ID_LEN];
    let n = text.len().min(ID_LEN);
    id[..n].copy_from_slice(&text.as_bytes()[..n]);
    id
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        let mut features = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX);
        if self.disk.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only the writeback toggle (VIRTIO_BLK_F_CONFIG_WCE) is writable, and
        // it is not offered.
        debug!(
            "virtio-blk: ignoring config write at {offset:#x} ({} bytes)",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<IrqTrigger>,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let ([mut queue], [queue_evt]) = exact_queues::<1>(queues, queue_events)?;
        let mut limiter = self.limiter.lend().map_err(ActivateError::Worker)?;
        let disk = self.disk.clone();
        let worker = Worker::spawn("virtio-blk", move |kill| {
            serve_rate_limited_queue(
                "virtio-blk",
                &kill,
                &mem,
                &mut queue,
                &queue_evt,
                &interrupt,
                &mut limiter,
                |chain| (data_bytes(chain), 1),
                |chain| process_chain(&disk, &mem, chain),
            );
            limiter
        })
        .map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.limiter.give_back(worker.stop());
        }
    }
}
