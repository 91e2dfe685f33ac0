//! vmrun's virtio devices: the virtio-mmio transport (virtio 1.x, register
//! layout version 2), a virtio-vsock device with a Firecracker-compatible
//! *hybrid vsock* host side, a virtio-rng device, a virtio-fs device serving
//! a host directory in-process (FUSE passthrough), a virtio-blk device
//! over a raw image file and a virtio-net device on a host tap.
//!
//! Everything here reads what a hostile guest writes (descriptors, queue
//! indexes, FUSE requests, vsock headers, virtio-net headers): a bad request fails that request,
//! never the VMM. It must not know KVM or the VM's layout (the VMM wires
//! addresses, interrupts and memory), nor the host-side sandbox.
//!
//! # Wiring (done by the VMM)
//!
//! 1. Build a device ([`VsockDevice::new`], [`RngDevice::new`],
//!    [`FsDevice::new`], [`BlockDevice::new`], [`NetDevice::new`]).
//! 2. Create an [`EventFd`](vmm_sys_util::eventfd::EventFd), register it with
//!    KVM as an irqfd for the device's GSI, and wrap it in an [`IrqTrigger`].
//! 3. Wrap the device in an [`MmioTransport`] together with the guest memory
//!    and the trigger. Register every [`MmioTransport::queue_events`] entry `i`
//!    as a KVM ioeventfd at `mmio_base + 0x50` (QueueNotify), 4 bytes,
//!    datamatch `i`.
//! 4. Forward MMIO exits inside `[mmio_base, mmio_base + 0x1000)` to
//!    [`MmioTransport::read`] / [`MmioTransport::write`] with the offset from
//!    `mmio_base`.
//! 5. Add [`kernel_cmdline_entry`] for each device to the kernel command line.
//!
//! When the guest driver sets DRIVER_OK the transport validates the queues and
//! activates the device, which then runs a worker thread of its own; a device
//! reset (status 0) or dropping the transport stops and joins that thread.
//!
//! Everything the guest controls (registers, rings, descriptors, packet
//! headers) is treated as hostile: malformed input is logged and dropped, all
//! guest memory accesses go through `vm-memory`, and host memory use is bounded.
//!
//! The process must ignore `SIGPIPE` (the Rust runtime's default for binaries):
//! host sockets of the vsock device are written with plain `write(2)`.

pub mod block;
mod device;
pub mod fs;
mod interrupt;
pub mod mmio;
pub mod net;
mod queue_loop;
pub mod rate_limiter;
pub mod rng;
pub mod vsock;
mod worker;

#[cfg(test)]
mod test_utils;

pub use block::{BlockDevice, BlockError};
pub use device::{ActivateError, VirtioDevice};
pub use fs::{FsCachePolicy, FsConfig, FsDevice, FsError};
pub use interrupt::IrqTrigger;
pub use mmio::{MmioError, MmioTransport, MMIO_WINDOW_SIZE};
pub use net::{NetConfig, NetDevice, NetError, NetRateLimits, Tap};
pub use rate_limiter::{
    Bucket, Clock, LimiterStore, ManualClock, MonotonicClock, RateLimit, RateLimitError,
    RateLimiter, ThrottleCount,
};
pub use rng::{RngDevice, RngError};
pub use vsock::{VsockDevice, VsockError};
pub use worker::set_worker_confinement;

/// The guest memory type every device works with.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Kernel command-line entry that makes a Linux guest probe a virtio-mmio
/// device: `virtio_mmio.device=4K@0x<base>:<irq>`.
///
/// `base` is the guest-physical address of the device's 4 KiB MMIO window and
/// `irq` the GSI its irqfd is registered on.
pub fn kernel_cmdline_entry(base: u64, irq: u32) -> String {
    format!("virtio_mmio.device=4K@0x{base:x}:{irq}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_entry_format() {
        assert_eq!(
            kernel_cmdline_entry(0xd000_0000, 5),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(
            kernel_cmdline_entry(0x1_0000_1000, 12),
            "virtio_mmio.device=4K@0x100001000:12"
        );
    }
}
