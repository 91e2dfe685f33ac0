//! The virtio-vsock device as seen by the transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, error};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::event_handler::VsockWorker;
use super::unix_backend::VsockMuxer;
use super::{VsockError, NUM_QUEUES, QUEUE_SIZE};
use crate::device::exact_queues;
use crate::worker::Worker;
use crate::{ActivateError, GuestMemoryMmap, IrqTrigger, VirtioDevice};

const QUEUE_SIZES: [u16; NUM_QUEUES] = [QUEUE_SIZE; NUM_QUEUES];

/// The virtio-vsock device with a hybrid-vsock Unix socket backend.
pub struct VsockDevice {
    guest_cid: u64,
    uds_path: PathBuf,
    /// The multiplexer while the device is not running (it moves into the
    /// worker thread while it is).
    backend: Option<VsockMuxer>,
    worker: Option<Worker<VsockMuxer>>,
    /// The next activation resumes a restored driver's rings.
    restored: bool,
}

impl VsockDevice {
    /// Creates the device for a guest with CID `guest_cid` and starts
    /// listening on `uds_path` (which must not exist yet). The socket file is
    /// removed again when the device is dropped.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        if !(3..=u64::from(u32::MAX - 1)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let backend = VsockMuxer::new(guest_cid, uds_path.clone())?;
        Ok(VsockDevice {
            guest_cid,
            uds_path,
            backend: Some(backend),
            worker: None,
            restored: false,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The host Unix socket path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    fn take_backend(&mut self) -> Result<VsockMuxer, ActivateError> {
        if let Some(backend) = self.backend.take() {
            return Ok(backend);
        }
        // A previous worker died and took the multiplexer (and its socket
        // file) with it: listen again.
        VsockMuxer::new(self.guest_cid, self.uds_path.clone())
            .map_err(|e| ActivateError::Backend(e.to_string()))
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    /// The configuration space is the 64-bit little-endian guest CID.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.guest_cid.to_le_bytes();
        if let Some(src) = usize::try_from(offset).ok().and_then(|o| config.get(o..)) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            "vsock: ignoring write to read-only config at {offset:#x} ({} bytes)",
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
        let ([rxq, txq, evq], [rx_evt, tx_evt, ev_evt]) =
            exact_queues::<NUM_QUEUES>(queues, queue_events)?;
        let backend = self.take_backend()?;
        let worker = VsockWorker {
            mem,
            interrupt,
            rxq,
            txq,
            evq,
            send_transport_reset: std::mem::take(&mut self.restored),
            reset_pending_until: None,
            rx_evt,
            tx_evt,
            ev_evt,
            backend,
        };
        // If spawning fails the multiplexer is dropped with the closure; the
        // next activation listens again.
        let worker =
            Worker::spawn("vsock", move |kill| worker.run(kill)).map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn restored(&mut self) {
        self.restored = true;
    }

    fn reset(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        match worker.stop() {
            Some(mut backend) => {
                backend.reset();
                self.backend = Some(backend);
            }
            None => error!("vsock: worker died; the host socket will be re-created on activation"),
        }
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rejects_reserved_cids_and_busy_paths() {
        let dir = crate::vsock::test_guest::TempDir::new();
        for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 32] {
            assert!(matches!(
                VsockDevice::new(cid, dir.path().join("v.sock")),
                Err(VsockError::InvalidCid(c)) if c == cid
            ));
        }
        let path = dir.path().join("v.sock");
        let dev = VsockDevice::new(3, path.clone()).unwrap();
        assert!(path.exists());
        assert!(matches!(
            VsockDevice::new(4, path.clone()),
            Err(VsockError::Bind { .. })
        ));
        drop(dev);
        assert!(!path.exists(), "socket file not removed on drop");
    }

    #[test]
    fn identity_and_config_space() {
        let dir = crate::vsock::test_guest::TempDir::new();
        let mut dev = VsockDevice::new(0x1234_5678, dir.path().join("v.sock")).unwrap();
        assert_eq!(dev.device_type(), 19);
        assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
        assert_eq!(dev.avail_features(), 1 << 32);
        let mut cid = [0u8; 8];
        dev.read_config(0, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), 0x1234_5678);
        let mut hi = [0xaau8; 4];
        dev.read_config(4, &mut hi);
        assert_eq!(hi, [0, 0, 0, 0]);
        let mut tail = [0xaau8; 4];
        dev.read_config(6, &mut tail);
        assert_eq!(tail, [0, 0, 0xaa, 0xaa]);
        let mut beyond = [0xaau8; 4];
        dev.read_config(u64::MAX, &mut beyond);
        assert_eq!(beyond, [0xaa; 4]);
        dev.write_config(0, &[1, 2, 3, 4]);
        dev.read_config(0, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), 0x1234_5678);
        assert!(matches!(
            dev.activate(
                GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 0x1000)]).unwrap(),
                Arc::new(IrqTrigger::new(EventFd::new(0).unwrap())),
                vec![],
                vec![],
            ),
            Err(ActivateError::QueueCount { expected: 3, .. })
        ));
    }
}
