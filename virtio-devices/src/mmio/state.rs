//! The transport's register state as a snapshot keeps it, and how a
//! transport is put back into that state in a new VMM process.

use serde::{Deserialize, Serialize};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};

use super::{build_queue, MmioTransport, QueueConfig};

/// One virtqueue as the driver configured it, with the device's position in
/// its rings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Next available-ring entry the device will take (equal to
    /// `next_used` for a quiesced device: every chain it took, it returned).
    pub next_avail: u16,
    /// Next used-ring entry the device will fill.
    pub next_used: u16,
}

/// Everything the guest driver negotiated with one virtio-mmio device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub acked_features: u64,
    pub queue_sel: u32,
    pub shm_sel: u32,
    pub status: u32,
    pub config_generation: u32,
    pub interrupt_status: u32,
    /// Whether the device was running (DRIVER_OK accepted).
    pub activated: bool,
    pub queues: Vec<QueueState>,
}

/// Why a saved state cannot be applied to a transport.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("saved device type {saved} does not match the device here ({here})")]
    DeviceType { saved: u32, here: u32 },
    #[error("device type {device}: saved {saved} queues, the device has {here}")]
    QueueCount {
        device: u32,
        saved: usize,
        here: usize,
    },
    #[error("device type {device}: queue {queue} of size {size} exceeds the device maximum {max}")]
    QueueSize {
        device: u32,
        queue: usize,
        size: u16,
        max: u16,
    },
    #[error("device type {device}: saved features {features:#x} are not all offered here")]
    Features { device: u32, features: u64 },
    #[error("device type {device}: cannot restart it: {reason}")]
    Activate { device: u32, reason: String },
}

impl MmioTransport {
    /// Stops the device's worker and returns the transport's state. The
    /// device must be idle (the vCPUs paused), so that the used index in
    /// guest memory is where the device will carry on. The transport is not
    /// meant to run again afterwards: it is being saved.
    pub fn save_state(&mut self) -> TransportState {
        let activated = self.activated;
        if self.activated {
            // Joins the worker: nothing moves in the rings after this.
            self.device.reset();
            self.activated = false;
        }
        let queues = self
            .queues
            .iter()
            .map(|q| {
                // The device writes used.idx after every chain it returns,
                // so guest memory holds its position (bytes 2..4 of the
                // used ring).
                let used_idx = if q.ready && activated {
                    self.mem
                        .read_obj::<u16>(GuestAddress(q.used.wrapping_add(2)))
                        .unwrap_or(0)
                } else {
                    0
                };
                QueueState {
                    size: q.size,
                    ready: q.ready,
                    desc: q.desc,
                    avail: q.avail,
                    used: q.used,
                    next_avail: used_idx,
                    next_used: used_idx,
                }
            })
            .collect();
        TransportState {
            device_type: self.device.device_type(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            acked_features: self.acked_features,
            queue_sel: self.queue_sel,
            shm_sel: self.shm_sel,
            status: self.status,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            activated,
            queues,
        }
    }

    /// Puts a new transport into `state`; a device that was running is
    /// started by [`resume`](Self::resume).
    pub fn restore_state(&mut self, state: &TransportState) -> Result<(), RestoreError> {
        let device = self.device.device_type();
        if state.device_type != device {
            return Err(RestoreError::DeviceType {
                saved: state.device_type,
                here: device,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount {
                device,
                saved: state.queues.len(),
                here: self.queues.len(),
            });
        }
        if state.acked_features & !self.device.avail_features() != 0 {
            return Err(RestoreError::Features {
                device,
                features: state.acked_features,
            });
        }
        for (queue, (saved, here)) in state.queues.iter().zip(&mut self.queues).enumerate() {
            if saved.size > here.max_size {
                return Err(RestoreError::QueueSize {
                    device,
                    queue,
                    size: saved.size,
                    max: here.max_size,
                });
            }
            *here = QueueConfig {
                max_size: here.max_size,
                size: saved.size,
                ready: saved.ready,
                desc: saved.desc,
                avail: saved.avail,
                used: saved.used,
            };
        }
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.acked_features = state.acked_features;
        self.queue_sel = state.queue_sel;
        self.shm_sel = state.shm_sel;
        self.status = state.status;
        self.config_generation = state.config_generation;
        self.interrupt.set_status(state.interrupt_status);
        self.resume_at = state.activated.then(|| state.queues.clone());
        Ok(())
    }

    /// Starts the device of a transport put into a saved state, on the
    /// saved rings; it first hears that it was restored (see
    /// [`VirtioDevice::restored`](crate::VirtioDevice::restored)). Call it
    /// once the VM's interrupt controllers have their saved state too:
    /// the device may interrupt the guest at once, and restoring the
    /// controllers afterwards would lose that interrupt.
    pub fn resume(&mut self) -> Result<(), RestoreError> {
        let Some(positions) = self.resume_at.take() else {
            return Ok(());
        };
        let device = self.device.device_type();
        self.device.restored();
        self.activate_at(&positions)
            .map_err(|e| RestoreError::Activate {
                device,
                reason: e.to_string(),
            })
    }

    /// Activates the device with each queue resuming at its saved position.
    fn activate_at(&mut self, positions: &[QueueState]) -> Result<(), super::QueueSetupError> {
        let event_idx = self.event_idx();
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, (cfg, pos)) in self.queues.iter().zip(positions).enumerate() {
            let mut queue = build_queue(i, cfg, &self.mem, event_idx)?;
            queue.set_next_avail(pos.next_avail);
            queue.set_next_used(pos.next_used);
            queues.push(queue);
        }
        self.start_device(queues)
    }
}
