//! Mounting at run time (storage the host hands over, container rootfs
//! overlays) behind a trait, so the bookkeeping around it is tested on the
//! host without root; [`RealMounts`] makes the syscalls.

use std::fmt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// One mount(2) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountCall<'a> {
    pub source: &'a str,
    pub target: &'a Path,
    pub fstype: &'a str,
    pub flags: MsFlags,
    /// File-system specific options ("size=64m,mode=0700", overlay layers).
    pub data: Option<&'a str>,
}

impl fmt::Display for MountCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} on {}",
            self.fstype,
            self.source,
            self.target.display()
        )
    }
}

/// The mount syscalls the agent makes after boot.
pub trait MountSyscalls: Send + Sync + fmt::Debug {
    fn mount(&self, call: &MountCall<'_>) -> Result<(), Errno>;
    /// Unmounts `target`; EBUSY while something uses it.
    fn unmount(&self, target: &Path) -> Result<(), Errno>;
    /// Detaches `target` now; the file system goes when its last user does
    /// (a container's mount namespace may still hold it).
    fn unmount_detached(&self, target: &Path) -> Result<(), Errno>;
}

/// The real syscalls.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealMounts;

impl MountSyscalls for RealMounts {
    fn mount(&self, call: &MountCall<'_>) -> Result<(), Errno> {
        mount(
            Some(call.source),
            call.target,
            Some(call.fstype),
            call.flags,
            call.data,
        )
    }

    fn unmount(&self, target: &Path) -> Result<(), Errno> {
        umount2(target, MntFlags::empty())
    }

    fn unmount_detached(&self, target: &Path) -> Result<(), Errno> {
        umount2(target, MntFlags::MNT_DETACH)
    }
}

#[cfg(test)]
pub mod fake {
    //! A recording stand-in for tests.

    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Mutex, PoisonError};

    use super::*;

    /// Records calls, keeps a set of mounted targets and fails where told.
    #[derive(Debug, Default)]
    pub struct FakeMounts {
        pub calls: Mutex<Vec<String>>,
        pub mounted: Mutex<Vec<PathBuf>>,
        pub mount_errors: Mutex<HashMap<String, Errno>>,
        pub unmount_errors: Mutex<HashMap<PathBuf, Errno>>,
    }

    impl FakeMounts {
        pub fn calls(&self) -> Vec<String> {
            self.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }

        pub fn mounted(&self) -> Vec<PathBuf> {
            self.mounted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }

        pub fn fail_mount(&self, fstype: &str, errno: Errno) {
            self.mount_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(fstype.to_owned(), errno);
        }

        pub fn fail_unmount(&self, target: &Path, errno: Errno) {
            self.unmount_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(target.to_owned(), errno);
        }

        fn record(&self, call: String) {
            self.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(call);
        }

        fn unmount_any(&self, target: &Path, how: &str) -> Result<(), Errno> {
            self.record(format!("{how} {}", target.display()));
            if let Some(errno) = self
                .unmount_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(target)
            {
                return Err(*errno);
            }
            let mut mounted = self.mounted.lock().unwrap_or_else(PoisonError::into_inner);
            match mounted.iter().rposition(|m| m == target) {
                Some(index) => {
                    mounted.remove(index);
                    Ok(())
                }
                None => Err(Errno::EINVAL),
            }
        }
    }

    impl MountSyscalls for FakeMounts {
        fn mount(&self, call: &MountCall<'_>) -> Result<(), Errno> {
            self.record(format!(
                "mount {call} flags={:?} data={}",
                call.flags,
                call.data.unwrap_or("")
            ));
            if let Some(errno) = self
                .mount_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(call.fstype)
            {
                return Err(*errno);
            }
            self.mounted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(call.target.to_owned());
            Ok(())
        }

        fn unmount(&self, target: &Path) -> Result<(), Errno> {
            self.unmount_any(target, "umount")
        }

        fn unmount_detached(&self, target: &Path) -> Result<(), Errno> {
            self.unmount_any(target, "umount -l")
        }
    }
}
