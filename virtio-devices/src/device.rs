//! The interface between the virtio-mmio transport and a device model.

use std::io;
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::{GuestMemoryMmap, IrqTrigger};

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The transport handed over a different number of queues or queue events
    /// than the device has.
    #[error(
        "expected {expected} queues and queue events, got {queues} queues and {events} events"
    )]
    QueueCount {
        /// Number of queues the device has.
        expected: usize,
        /// Number of queues passed in.
        queues: usize,
        /// Number of queue events passed in.
        events: usize,
    },
    /// `activate` was called on a device that is already running.
    #[error("device is already active")]
    AlreadyActive,
    /// The device's backend is gone (for instance its host socket could not
    /// be re-created after a worker failure).
    #[error("device backend unavailable: {0}")]
    Backend(String),
    /// Creating the worker thread or its event loop failed.
    #[error("failed to start the device worker: {0}")]
    Worker(#[source] io::Error),
}

/// The `N` queues and queue events a transport hands [`VirtioDevice::activate`],
/// as arrays; a different number of either is [`ActivateError::QueueCount`].
pub fn exact_queues<const N: usize>(
    queues: Vec<Queue>,
    events: Vec<EventFd>,
) -> Result<([Queue; N], [EventFd; N]), ActivateError> {
    let count_err = ActivateError::QueueCount {
        expected: N,
        queues: queues.len(),
        events: events.len(),
    };
    match (
        <[Queue; N]>::try_from(queues),
        <[EventFd; N]>::try_from(events),
    ) {
        (Ok(queues), Ok(events)) => Ok((queues, events)),
        _ => Err(count_err),
    }
}

/// A virtio device model behind a transport.
///
/// The transport owns the register state and queue configuration; the device
/// provides its identity, features and configuration space, and runs the
/// queues once [`activate`](Self::activate)d — in a worker thread of its own,
/// so that nothing here blocks the vCPU thread that calls the transport.
pub trait VirtioDevice: Send {
    /// The virtio device type (e.g. 19 for vsock, 4 for rng).
    fn device_type(&self) -> u32;

    /// Maximum size of each of the device's queues, in queue order. Each must
    /// be a power of two no larger than 32768.
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers; must include `VIRTIO_F_VERSION_1`.
    fn avail_features(&self) -> u64;

    /// Reads the device configuration space at `offset` (relative to the start
    /// of the configuration space). Bytes beyond the configuration space are
    /// left untouched (the transport zeroes `data` first).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device configuration space. Devices with a read-only
    /// configuration ignore this.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Tells the device which of its features the driver accepted, just
    /// before every [`activate`](Self::activate) (after a snapshot restore
    /// too): a device whose data path depends on them (virtio-net: receive
    /// buffer layout, host offloads) reads them here. Most devices offer
    /// nothing that changes how they serve their queues and ignore it.
    fn ack_features(&mut self, _features: u64) {}

    /// Starts the device with the queues the driver configured.
    ///
    /// `queues` and `queue_events` are in queue order, one event per queue; a
    /// queue event is signalled whenever the driver notifies that queue. The
    /// device signals used buffers through `interrupt`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<IrqTrigger>,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
    ) -> Result<(), ActivateError>;

    /// Tells the device that the next [`activate`](Self::activate) resumes
    /// rings a driver set up in an earlier VMM (a snapshot restore), so
    /// that it can tell the driver what did not survive (vsock: a
    /// transport reset). Most devices keep no state across it.
    fn restored(&mut self) {}

    /// Stops the device (joining its worker thread) and returns it to the
    /// state it had before activation. Called on a driver-initiated reset;
    /// a no-op for a device that is not active.
    fn reset(&mut self);
}

/// Copies the part of a read-only configuration space `config` that a
/// `read_config(offset, data)` call covers into `data`; bytes beyond the
/// configuration space are left untouched.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    if let Some(src) = usize::try_from(offset).ok().and_then(|o| config.get(o..)) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
