//! Ending the microVM: sync, then reset. With `reboot=k` on the kernel
//! command line the reset goes through the i8042 controller, which the VMM
//! takes as the guest's clean end.

use std::convert::Infallible;

use nix::sys::reboot::{reboot, RebootMode};

/// Flushes file systems and resets the VM. Returns only if the kernel
/// refused, which the caller reports.
pub fn power_off() -> nix::Result<Infallible> {
    nix::unistd::sync();
    reboot(RebootMode::RB_AUTOBOOT)
}
