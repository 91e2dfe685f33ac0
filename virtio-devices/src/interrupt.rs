//! The virtio-mmio interrupt: the InterruptStatus register plus the irqfd
//! that raises the device's interrupt line in the guest.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use vmm_sys_util::eventfd::EventFd;

/// Interrupt state of one virtio-mmio device.
///
/// The VMM creates the [`EventFd`], registers it with KVM as an irqfd on the
/// device's GSI and hands it over here. Devices call
/// [`trigger_used_ring`](Self::trigger_used_ring) from their worker thread;
/// the transport exposes [`status`](Self::status) as InterruptStatus and
/// clears bits on InterruptACK.
#[derive(Debug)]
pub struct IrqTrigger {
    status: AtomicU32,
    irqfd: EventFd,
}

impl IrqTrigger {
    /// Wraps the irqfd the VMM registered for this device.
    pub fn new(irqfd: EventFd) -> Self {
        IrqTrigger {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// Signals that the device put buffers in a used ring.
    pub fn trigger_used_ring(&self) -> io::Result<()> {
        self.trigger(VIRTIO_MMIO_INT_VRING)
    }

    /// Signals that the device configuration changed (or that the device
    /// needs a reset).
    pub fn trigger_config_change(&self) -> io::Result<()> {
        self.trigger(VIRTIO_MMIO_INT_CONFIG)
    }

    /// The current InterruptStatus bits.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Clears the given InterruptStatus bits (InterruptACK).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Sets the InterruptStatus bits without raising the line: the state of
    /// a restored device, whose interrupt controller state is restored too.
    pub fn set_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }

    /// The irqfd this trigger writes to.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }

    fn trigger(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irqfd.write(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn trigger_sets_status_and_signals_irqfd() {
        let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        assert_eq!(irq.status(), 0);
        assert!(irq.irqfd().read().is_err(), "irqfd must start unsignalled");

        irq.trigger_used_ring().unwrap();
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING);
        assert_eq!(irq.irqfd().read().unwrap(), 1);

        irq.trigger_config_change().unwrap();
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);

        irq.ack(VIRTIO_MMIO_INT_VRING);
        assert_eq!(irq.status(), VIRTIO_MMIO_INT_CONFIG);
        irq.ack(0xffff_ffff);
        assert_eq!(irq.status(), 0);
    }
}
