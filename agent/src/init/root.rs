//! Giving PID 1 a root that containers can pivot away from.
//!
//! The kernel starts init on the initial ramfs ("rootfs"), a mount without a
//! parent, and pivot_root(2) refuses to move such a root (EINVAL), so no
//! container could be started with pivot_root. Binding the initramfs onto a
//! directory of itself and moving that bind over "/" gives an ordinary mount
//! with a parent, with the same files and no data copied.

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot, mkdir};

/// Where the bind of the initramfs is made before it is moved over "/".
const NEW_ROOT: &str = "/sysroot";

/// Errors re-rooting PID 1.
#[derive(Debug, thiserror::Error)]
#[error("cannot re-root PID 1 off the initramfs ({step}): {source}")]
pub struct RootError {
    step: &'static str,
    source: nix::Error,
}

fn step(step: &'static str) -> impl FnOnce(nix::Error) -> RootError {
    move |source| RootError { step, source }
}

/// Makes "/" a bind mount of the initramfs (see the module docs). Must run
/// before anything else is mounted: the bind is not recursive.
pub fn leave_initramfs() -> Result<(), RootError> {
    match mkdir(NEW_ROOT, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(e) => return Err(step("mkdir /sysroot")(e)),
    }
    mount(
        Some("/"),
        NEW_ROOT,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(step("bind / on /sysroot"))?;
    chdir(NEW_ROOT).map_err(step("chdir /sysroot"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("move /sysroot to /"))?;
    chroot(".").map_err(step("chroot"))?;
    chdir("/").map_err(step("chdir /"))
}
