//! Emulated devices and the buses that route guest port and MMIO accesses
//! to them.

mod bus;
pub mod i8042;
pub mod serial;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};

use vmm_sys_util::eventfd::EventFd;

/// An interrupt line: an EventFd registered with KVM as an irqfd, so
/// signalling it injects the interrupt without a VM exit.
pub struct IrqLine(pub EventFd);

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
