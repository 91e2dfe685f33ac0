//! What is mounted where, from `/proc/self/mountinfo`, and taking away
//! everything mounted under a directory before it is removed.

use std::path::{Path, PathBuf};

use std::os::fd::AsFd;

use crate::error::{Result, SandboxError};
use crate::mount_api;

/// Whether anything is mounted at or below `dir`.
pub fn has_mounts_under(dir: &Path) -> Result<bool> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(SandboxError::host("read /proc/self/mountinfo"))?;
    let found = mount_points(&mountinfo).any(|point| Path::new(&point).starts_with(dir));
    Ok(found)
}

/// The mount points listed in a mountinfo text (field 5, octal escapes
/// undone).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], escaped) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything mounted below `dir`, deepest first. Each mount
/// point is opened beneath `dir` without following symlinks (the guest may
/// have put some in the share) and unmounted through that descriptor.
///
/// Another cleaner may be at work on the same tree: when a shim dies,
/// containerd runs `shim delete` for the sandbox and for each pod member at
/// once, and a member's cleanup removes its part of the share while this
/// one walks it. A point gone by the time it is reached is done; a point
/// that fails does not stop the others, so as little as possible is left.
pub fn unmount_under(dir: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(SandboxError::host("read /proc/self/mountinfo"))?;
    let points: Vec<PathBuf> = mount_points(&mountinfo)
        .map(PathBuf::from)
        .filter_map(|point| point.strip_prefix(dir).ok().map(Path::to_path_buf))
        .filter(|relative| !relative.as_os_str().is_empty())
        .collect();
    unmount_points(dir, points)
}

/// Unmounts `points` (relative to `dir`), children before their parents.
fn unmount_points(dir: &Path, mut points: Vec<PathBuf>) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let root = match mount_api::open_dir(dir) {
        Ok(root) => root,
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(e) => return Err(SandboxError::sys(format!("open {}", dir.display()))(e)),
    };
    // Children sort after their parents; a point mounted twice is
    // unmounted twice.
    points.sort();
    let mut first_error = None;
    for point in points.iter().rev() {
        let unmounted = mount_api::open_beneath_across_mounts(root.as_fd(), point, libc::O_PATH)
            .and_then(|mount| mount_api::unmount_fd(mount.as_fd()));
        match unmounted {
            // Done, not a mount point (any more), or gone.
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                let what = format!("unmount {}", dir.join(point).display());
                tracing::warn!("{what}: {e}");
                first_error.get_or_insert(SandboxError::sys(what)(e));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_and_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /run/vmrun/ns/sb rw - tmpfs tmpfs rw\n";
        let points: Vec<String> = mount_points(text).collect();
        assert_eq!(points, vec!["/mnt/with space", "/run/vmrun/ns/sb"]);
    }

    /// A point another cleaner already removed (listed in mountinfo, gone
    /// by the time it is opened) does not keep its parent mounted.
    #[test]
    fn a_point_removed_meanwhile_does_not_keep_its_parent_mounted() {
        use nix::mount::{mount, MsFlags};
        let dir = std::env::temp_dir().join(format!("vmrun-mi-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("shared")).unwrap();
        mount(
            Some("tmpfs"),
            &dir.join("shared"),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let points = vec![PathBuf::from("shared"), PathBuf::from("shared/c1/rootfs")];
        unmount_points(&dir, points).unwrap();
        assert!(!has_mounts_under(&dir).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
