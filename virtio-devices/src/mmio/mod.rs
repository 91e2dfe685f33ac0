//! The virtio-mmio transport, virtio 1.x register layout ("version 2").
//!
//! [`MmioTransport`] owns the register state of one device: status state
//! machine, feature negotiation, per-queue configuration and the interrupt
//! status. When the driver sets DRIVER_OK it validates the queues against guest
//! memory and activates the wrapped [`VirtioDevice`].

use std::io;
use std::sync::Arc;

use tracing::{debug, error, info, warn};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{ActivateError, GuestMemoryMmap, IrqTrigger, VirtioDevice};

mod state;
#[cfg(test)]
mod tests;

pub use state::{QueueState, RestoreError, TransportState};

/// Size of the MMIO window of one device.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register, where ioeventfds are registered.
pub const QUEUE_NOTIFY_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;

/// "virt" in little endian.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// The virtio 1.x ("modern") register layout.
const MMIO_VERSION: u32 = 2;
/// "VMRN" in little endian.
const VENDOR_ID: u32 = 0x4e52_4d56;
/// Bad guest accesses logged at `warn` before the rest go to `debug`.
const BAD_ACCESS_WARN_LIMIT: u32 = 32;

const CONFIG_SPACE_START: u64 = VIRTIO_MMIO_CONFIG as u64;
/// Largest split virtqueue the specification allows.
const MAX_QUEUE_SIZE: u16 = 32768;

/// Why a transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// Creating a queue notification event failed.
    #[error("failed to create the notification event of queue {queue}: {source}")]
    QueueEvent {
        /// The queue index.
        queue: usize,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The device reports a queue maximum size that is not a power of two in
    /// `1..=32768`.
    #[error("device queue {queue} has invalid maximum size {size}")]
    InvalidQueueMaxSize {
        /// The queue index.
        queue: usize,
        /// The reported maximum size.
        size: u16,
    },
}

/// Why the queues could not be handed to the device at DRIVER_OK.
#[derive(Debug, thiserror::Error)]
enum QueueSetupError {
    #[error("queue {0} is not ready")]
    NotReady(usize),
    #[error("queue {queue}: {source}")]
    Invalid {
        queue: usize,
        source: virtio_queue::Error,
    },
    #[error("queue {queue}: {what} [{addr:#x}, +{len:#x}) is not inside guest memory")]
    OutOfMemory {
        queue: usize,
        what: &'static str,
        addr: u64,
        len: u64,
    },
    #[error("failed to duplicate the notification event of queue {queue}: {source}")]
    EventClone { queue: usize, source: io::Error },
    #[error(transparent)]
    Activate(#[from] ActivateError),
}

/// Driver-written configuration of one virtqueue.
#[derive(Debug, Clone, Copy)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// Sets the low or high 32 bits of `v`.
fn set_half(v: &mut u64, high: bool, value: u32) {
    if high {
        *v = (*v & 0xffff_ffff) | (u64::from(value) << 32);
    } else {
        *v = (*v & !0xffff_ffff) | u64::from(value);
    }
}

fn half(v: u64, high: bool) -> u32 {
    if high {
        (v >> 32) as u32
    } else {
        v as u32
    }
}

/// The virtio-mmio register window of one device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<IrqTrigger>,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    shm_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
    bad_accesses: u32,
    /// Saved ring positions of a restored device not yet resumed.
    resume_at: Option<Vec<QueueState>>,
}

impl MmioTransport {
    /// Wraps `device`. `mem` is the guest memory the queues live in and
    /// `interrupt` the device's interrupt (built on the irqfd the VMM
    /// registered for the device's GSI).
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<IrqTrigger>,
        device: Box<dyn VirtioDevice>,
    ) -> Result<Self, MmioError> {
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for (queue, &size) in device.queue_max_sizes().iter().enumerate() {
            if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
                return Err(MmioError::InvalidQueueMaxSize { queue, size });
            }
            queues.push(QueueConfig::new(size));
            queue_evts.push(
                EventFd::new(EFD_NONBLOCK)
                    .map_err(|source| MmioError::QueueEvent { queue, source })?,
            );
        }
        Ok(MmioTransport {
            device,
            mem,
            interrupt,
            queue_evts,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            shm_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
            bad_accesses: 0,
            resume_at: None,
        })
    }

    /// One notification event per queue, in queue order. Register entry `i`
    /// as a KVM ioeventfd at `mmio_base + 0x50` (4 bytes, datamatch `i`).
    /// QueueNotify writes that reach [`write`](Self::write) signal them too.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<IrqTrigger> {
        &self.interrupt
    }

    /// The wrapped device's virtio device type.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The device status register.
    pub fn device_status(&self) -> u32 {
        self.status
    }

    /// Tells the driver that the device's configuration space changed
    /// (a new generation, and a configuration-change interrupt).
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Err(e) = self.interrupt.trigger_config_change() {
            error!("virtio-mmio: failed to signal config change: {e}");
        }
    }

    /// Whether the device has been activated (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Handles a guest read of `data.len()` bytes at `offset` in the window.
    /// Invalid accesses are logged and read as zeros.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_SPACE_START {
            if !matches!(data.len(), 1 | 2 | 4 | 8) || offset >= MMIO_WINDOW_SIZE {
                self.bad_access("read", offset, data.len(), "invalid config space access");
                return;
            }
            self.device.read_config(offset - CONFIG_SPACE_START, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.bad_access("read", offset, data.len(), "registers are 32-bit");
            return;
        }
        let qsel = self.queue_sel as usize;
        let value = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => half(self.device.avail_features(), false),
                1 => half(self.device.avail_features(), true),
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.queues.get(qsel).map_or(0, |q| q.max_size.into()),
            VIRTIO_MMIO_QUEUE_READY => self.queues.get(qsel).map_or(0, |q| q.ready.into()),
            VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH => {
                self.queues.get(qsel).map_or(0, |q| {
                    half(q.desc, offset as u32 == VIRTIO_MMIO_QUEUE_DESC_HIGH)
                })
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
                self.queues.get(qsel).map_or(0, |q| {
                    half(q.avail, offset as u32 == VIRTIO_MMIO_QUEUE_AVAIL_HIGH)
                })
            }
            VIRTIO_MMIO_QUEUE_USED_LOW | VIRTIO_MMIO_QUEUE_USED_HIGH => {
                self.queues.get(qsel).map_or(0, |q| {
                    half(q.used, offset as u32 == VIRTIO_MMIO_QUEUE_USED_HIGH)
                })
            }
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            // No shared memory regions: a length of all ones means "absent".
            VIRTIO_MMIO_SHM_LEN_LOW
            | VIRTIO_MMIO_SHM_LEN_HIGH
            | VIRTIO_MMIO_SHM_BASE_LOW
            | VIRTIO_MMIO_SHM_BASE_HIGH => 0xffff_ffff,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => {
                self.bad_access("read", offset, data.len(), "unknown or write-only register");
                return;
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a guest write of `data` at `offset` in the window. Invalid
    /// accesses, and writes the current device status does not allow, are
    /// logged and ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_START {
            if !matches!(data.len(), 1 | 2 | 4 | 8) || offset >= MMIO_WINDOW_SIZE {
                self.bad_access("write", offset, data.len(), "invalid config space access");
            } else if self.status & VIRTIO_CONFIG_S_DRIVER == 0
                || self.status & VIRTIO_CONFIG_S_FAILED != 0
            {
                self.bad_access("write", offset, data.len(), "config write in wrong state");
            } else {
                self.device.write_config(offset - CONFIG_SPACE_START, data);
            }
            return;
        }
        let value = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset.is_multiple_of(4) => u32::from_le_bytes(bytes),
            _ => {
                self.bad_access("write", offset, data.len(), "registers are 32-bit");
                return;
            }
        };
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                if !self.status_is(VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_FEATURES_OK) {
                    self.bad_access("write", offset, 4, "feature write in wrong state");
                } else if self.driver_features_sel > 1 {
                    debug!(
                        "virtio-mmio: ignoring driver features page {}",
                        self.driver_features_sel
                    );
                } else {
                    set_half(
                        &mut self.acked_features,
                        self.driver_features_sel == 1,
                        value,
                    );
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_reg(offset, value),
            VIRTIO_MMIO_QUEUE_NOTIFY => match self.queue_evts.get(value as usize) {
                Some(evt) => {
                    if let Err(e) = evt.write(1) {
                        error!("virtio-mmio: failed to signal queue {value}: {e}");
                    }
                }
                None => self.bad_access("write", offset, 4, "notify of a nonexistent queue"),
            },
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => self.set_status(value),
            VIRTIO_MMIO_SHM_SEL => self.shm_sel = value,
            _ => self.bad_access("write", offset, 4, "unknown or read-only register"),
        }
    }

    fn write_queue_reg(&mut self, offset: u64, value: u32) {
        if !self.status_is(VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER_OK) {
            self.bad_access("write", offset, 4, "queue setup in wrong state");
            return;
        }
        let Some(q) = self.queues.get_mut(self.queue_sel as usize) else {
            self.bad_access("write", offset, 4, "queue register of a nonexistent queue");
            return;
        };
        match offset as u32 {
            VIRTIO_MMIO_QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => q.size = size,
                // Keep it invalid so that DRIVER_OK fails.
                Err(_) => q.size = 0,
            },
            VIRTIO_MMIO_QUEUE_READY => match value {
                0 => q.ready = false,
                1 => q.ready = true,
                _ => self.bad_access("write", offset, 4, "QueueReady must be 0 or 1"),
            },
            VIRTIO_MMIO_QUEUE_DESC_LOW => set_half(&mut q.desc, false, value),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => set_half(&mut q.desc, true, value),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => set_half(&mut q.avail, false, value),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => set_half(&mut q.avail, true, value),
            VIRTIO_MMIO_QUEUE_USED_LOW => set_half(&mut q.used, false, value),
            VIRTIO_MMIO_QUEUE_USED_HIGH => set_half(&mut q.used, true, value),
            _ => {}
        }
    }

    /// True if all of `set` and none of `clear` (nor FAILED) are in the status.
    fn status_is(&self, set: u32, clear: u32) -> bool {
        self.status & set == set && self.status & (clear | VIRTIO_CONFIG_S_FAILED) == 0
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & VIRTIO_CONFIG_S_FAILED != 0 {
            warn!("virtio-mmio: driver set FAILED (status {value:#x})");
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        if self.status & !value & !VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            self.bad_access(
                "write",
                u64::from(VIRTIO_MMIO_STATUS),
                4,
                "status bits cleared without reset",
            );
            return;
        }
        let known = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK;
        let new = value & !self.status;
        if new & !known & !VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
            self.bad_access(
                "write",
                u64::from(VIRTIO_MMIO_STATUS),
                4,
                "unknown status bits",
            );
        }
        // Apply the steps in order so that each one sees its prerequisite.
        let steps = [
            (VIRTIO_CONFIG_S_ACKNOWLEDGE, 0),
            (VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_ACKNOWLEDGE),
            (VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_DRIVER),
            (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK),
        ];
        for (bit, prerequisite) in steps {
            if new & bit == 0 {
                continue;
            }
            if self.status & prerequisite != prerequisite
                || self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0
            {
                self.bad_access(
                    "write",
                    u64::from(VIRTIO_MMIO_STATUS),
                    4,
                    "status step out of order",
                );
                return;
            }
            match bit {
                VIRTIO_CONFIG_S_FEATURES_OK if !self.features_acceptable() => {
                    // The driver re-reads the status and sees FEATURES_OK missing.
                    warn!(
                        "virtio-mmio: rejecting driver features {:#x} (offered {:#x})",
                        self.acked_features,
                        self.device.avail_features()
                    );
                    return;
                }
                VIRTIO_CONFIG_S_DRIVER_OK => {
                    if let Err(e) = self.activate() {
                        error!(
                            "virtio-mmio: failed to activate device type {}: {e}",
                            self.device.device_type()
                        );
                        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                        if let Err(e) = self.interrupt.trigger_config_change() {
                            error!("virtio-mmio: failed to signal config change: {e}");
                        }
                        return;
                    }
                }
                _ => {}
            }
            self.status |= bit;
        }
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.avail_features();
        self.acked_features & !offered == 0 && self.acked_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    fn event_idx(&self) -> bool {
        self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0
    }

    fn activate(&mut self) -> Result<(), QueueSetupError> {
        let event_idx = self.event_idx();
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, cfg)| build_queue(i, cfg, &self.mem, event_idx))
            .collect::<Result<Vec<_>, _>>()?;
        self.start_device(queues)
    }

    /// Hands `queues` and their notification events to the device.
    fn start_device(&mut self, queues: Vec<Queue>) -> Result<(), QueueSetupError> {
        let events = self
            .queue_evts
            .iter()
            .enumerate()
            .map(|(i, evt)| {
                evt.try_clone()
                    .map_err(|source| QueueSetupError::EventClone { queue: i, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.device.ack_features(self.acked_features);
        self.device
            .activate(self.mem.clone(), self.interrupt.clone(), queues, events)?;
        self.activated = true;
        info!(
            "virtio-mmio: activated device type {}",
            self.device.device_type()
        );
        Ok(())
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
            self.activated = false;
        }
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        // Drop notifications that arrived before the reset.
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.shm_sel = 0;
        self.status = 0;
        self.interrupt.ack(u32::MAX);
    }

    fn bad_access(&mut self, dir: &str, offset: u64, len: usize, why: &str) {
        self.bad_accesses = self.bad_accesses.saturating_add(1);
        let device = self.device.device_type();
        if self.bad_accesses <= BAD_ACCESS_WARN_LIMIT {
            warn!("virtio-mmio (device type {device}): ignoring bad {dir} at {offset:#x}, {len} bytes: {why}");
        } else {
            debug!("virtio-mmio (device type {device}): ignoring bad {dir} at {offset:#x}, {len} bytes: {why}");
        }
    }
}

impl Drop for MmioTransport {
    fn drop(&mut self) {
        if self.activated {
            self.device.reset();
        }
    }
}

/// Turns the driver's configuration of queue `index` into a [`Queue`], checking
/// size, alignment and that the rings lie in guest memory.
fn build_queue(
    index: usize,
    cfg: &QueueConfig,
    mem: &GuestMemoryMmap,
    event_idx: bool,
) -> Result<Queue, QueueSetupError> {
    if !cfg.ready {
        return Err(QueueSetupError::NotReady(index));
    }
    let invalid = |source| QueueSetupError::Invalid {
        queue: index,
        source,
    };
    let mut q = Queue::new(cfg.max_size).map_err(invalid)?;
    q.try_set_size(cfg.size).map_err(invalid)?;
    q.try_set_desc_table_address(GuestAddress(cfg.desc))
        .map_err(invalid)?;
    q.try_set_avail_ring_address(GuestAddress(cfg.avail))
        .map_err(invalid)?;
    q.try_set_used_ring_address(GuestAddress(cfg.used))
        .map_err(invalid)?;
    let size = u64::from(cfg.size);
    // Split ring layout: 16-byte descriptors; flags, idx, ring, used_event;
    // flags, idx, 8-byte used elements, avail_event.
    for (what, addr, len) in [
        ("descriptor table", cfg.desc, 16 * size),
        ("available ring", cfg.avail, 6 + 2 * size),
        ("used ring", cfg.used, 6 + 8 * size),
    ] {
        let fits = usize::try_from(len).is_ok_and(|l| mem.check_range(GuestAddress(addr), l));
        if !fits {
            return Err(QueueSetupError::OutOfMemory {
                queue: index,
                what,
                addr,
                len,
            });
        }
    }
    q.set_event_idx(event_idx);
    q.set_ready(true);
    Ok(q)
}
