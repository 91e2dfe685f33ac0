//! The pseudo file systems PID 1 mounts before anything else runs.
//!
//! The table is plain data and [`mount_all`] goes through the [`Mounter`]
//! trait, so ordering and error handling are tested on the host without
//! root; [`SyscallMounter`] is the real thing.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

/// One mount of the guest's base layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountPoint {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NO_DEVICES_OR_SETUID: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOTHING_TO_EXECUTE: MsFlags = NO_DEVICES_OR_SETUID.union(MsFlags::MS_NOEXEC);

/// The guest's pseudo file systems, parents before children.
pub const GUEST_MOUNTS: &[MountPoint] = &[
    MountPoint {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOTHING_TO_EXECUTE,
        data: None,
    },
    MountPoint {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOTHING_TO_EXECUTE,
        data: None,
    },
    MountPoint {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    MountPoint {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        // Its own instance, with a /dev/pts/ptmx anyone may open.
        data: Some("newinstance,ptmxmode=0666"),
    },
    MountPoint {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NO_DEVICES_OR_SETUID,
        data: Some("mode=1777"),
    },
    MountPoint {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOTHING_TO_EXECUTE,
        data: None,
    },
    MountPoint {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NO_DEVICES_OR_SETUID,
        data: Some("mode=0755"),
    },
];

/// The two operations mounting needs, so tests can stand in for the kernel.
pub trait Mounter {
    /// Creates the directory `path`; its parent exists.
    fn make_dir(&mut self, path: &Path) -> Result<(), Errno>;
    fn mount(&mut self, point: &MountPoint) -> Result<(), Errno>;
}

/// Mounts for real.
#[derive(Debug, Default)]
pub struct SyscallMounter;

impl Mounter for SyscallMounter {
    fn make_dir(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::mkdir(path, Mode::from_bits_truncate(0o755))
    }

    fn mount(&mut self, point: &MountPoint) -> Result<(), Errno> {
        mount(
            Some(point.source),
            point.target,
            Some(point.fstype),
            point.flags,
            point.data,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {target}: {errno}")]
    MakeDir { target: &'static str, errno: Errno },
    #[error("cannot mount {fstype} on {target}: {errno}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        errno: Errno,
    },
}

/// Mounts every point in order, creating mount points as needed. A point
/// that is already mounted (EBUSY, e.g. a devtmpfs the kernel mounted
/// itself) is left as it is.
pub fn mount_all(mounter: &mut impl Mounter, points: &[MountPoint]) -> Result<(), MountError> {
    for point in points {
        match mounter.make_dir(Path::new(point.target)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => {
                return Err(MountError::MakeDir {
                    target: point.target,
                    errno,
                })
            }
        }
        match mounter.mount(point) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(errno) => {
                return Err(MountError::Mount {
                    fstype: point.fstype,
                    target: point.target,
                    errno,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Records what would have been done and fails where told to.
    #[derive(Default)]
    struct FakeMounter {
        calls: Vec<String>,
        mkdir_errors: HashMap<&'static str, Errno>,
        mount_errors: HashMap<&'static str, Errno>,
    }

    impl Mounter for FakeMounter {
        fn make_dir(&mut self, path: &Path) -> Result<(), Errno> {
            let path = path.to_str().unwrap();
            self.calls.push(format!("mkdir {path}"));
            self.mkdir_errors.get(path).map_or(Ok(()), |e| Err(*e))
        }

        fn mount(&mut self, point: &MountPoint) -> Result<(), Errno> {
            self.calls
                .push(format!("mount {} {}", point.fstype, point.target));
            self.mount_errors
                .get(point.target)
                .map_or(Ok(()), |e| Err(*e))
        }
    }

    fn position(targets: &[&str], target: &str) -> usize {
        targets.iter().position(|t| *t == target).unwrap()
    }

    #[test]
    fn table_has_everything_a_container_guest_needs_parents_first() {
        let targets: Vec<&str> = GUEST_MOUNTS.iter().map(|p| p.target).collect();
        for needed in [
            "/proc",
            "/sys",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/sys/fs/cgroup",
            "/run",
        ] {
            assert!(targets.contains(&needed), "{needed} is not mounted");
        }
        for (parent, child) in [
            ("/dev", "/dev/pts"),
            ("/dev", "/dev/shm"),
            ("/sys", "/sys/fs/cgroup"),
        ] {
            assert!(position(&targets, parent) < position(&targets, child));
        }
        let devpts = GUEST_MOUNTS.iter().find(|p| p.fstype == "devpts").unwrap();
        let options = devpts.data.unwrap();
        assert!(options.contains("newinstance") && options.contains("ptmxmode=0666"));
        let cgroup = GUEST_MOUNTS
            .iter()
            .find(|p| p.target == "/sys/fs/cgroup")
            .unwrap();
        assert_eq!(cgroup.fstype, "cgroup2");
    }

    #[test]
    fn each_mount_point_is_created_then_mounted_in_order() {
        let mut mounter = FakeMounter::default();
        mount_all(&mut mounter, &GUEST_MOUNTS[..2]).unwrap();
        assert_eq!(
            mounter.calls,
            [
                "mkdir /proc",
                "mount proc /proc",
                "mkdir /sys",
                "mount sysfs /sys"
            ]
        );
    }

    #[test]
    fn existing_directories_and_mounts_are_fine() {
        let mut mounter = FakeMounter::default();
        mounter.mkdir_errors.insert("/dev", Errno::EEXIST);
        mounter.mount_errors.insert("/dev", Errno::EBUSY);
        mount_all(&mut mounter, GUEST_MOUNTS).unwrap();
        assert_eq!(mounter.calls.len(), 2 * GUEST_MOUNTS.len());
    }

    #[test]
    fn a_failed_mount_stops_and_names_what_failed() {
        let mut mounter = FakeMounter::default();
        mounter.mount_errors.insert("/dev/pts", Errno::ENODEV);
        let error = mount_all(&mut mounter, GUEST_MOUNTS).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot mount devpts on /dev/pts: ENODEV: No such device"
        );
        assert_eq!(mounter.calls.last().unwrap(), "mount devpts /dev/pts");
    }

    #[test]
    fn a_failed_mkdir_names_the_mount_point() {
        let mut mounter = FakeMounter::default();
        mounter.mkdir_errors.insert("/run", Errno::EROFS);
        let error = mount_all(&mut mounter, GUEST_MOUNTS).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot create mount point /run: EROFS: Read-only file system"
        );
    }
}
