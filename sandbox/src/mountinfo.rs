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
pub fn unmount_under(dir: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(SandboxError::host("read /proc/self/mountinfo"))?;
    let mut points: Vec<PathBuf> = mount_points(&mountinfo)
        .map(PathBuf::from)
        .filter_map(|point| point.strip_prefix(dir).ok().map(Path::to_path_buf))
        .filter(|relative| !relative.as_os_str().is_empty())
        .collect();
    if points.is_empty() {
        return Ok(());
    }
    let root =
        mount_api::open_dir(dir).map_err(SandboxError::sys(format!("open {}", dir.display())))?;
    // Children sort after their parents; a point mounted twice is
    // unmounted twice.
    points.sort();
    for point in points.iter().rev() {
        let what = || format!("unmount {}", dir.join(point).display());
        let mount = mount_api::open_beneath_across_mounts(root.as_fd(), point, libc::O_PATH)
            .map_err(|e| SandboxError::sys(what())(e))?;
        match mount_api::unmount_fd(mount.as_fd()) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(SandboxError::sys(what())(e)),
        }
    }
    Ok(())
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
}
