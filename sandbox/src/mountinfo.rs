//! What is mounted where, from `/proc/self/mountinfo`, and taking away
//! everything mounted under a directory before it is removed.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use crate::error::{Result, SandboxError};

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

/// Unmounts everything mounted at or below `dir`, deepest first, without
/// following symlinks (a guest may have replaced a mount point with one).
pub fn unmount_under(dir: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(SandboxError::host("read /proc/self/mountinfo"))?;
    let mut points: Vec<PathBuf> = mount_points(&mountinfo)
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    // Children sort after their parents; a point mounted twice is
    // unmounted twice.
    points.sort();
    for point in points.iter().rev() {
        match nix::mount::umount2(point, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                return Err(SandboxError::sys(format!("unmount {}", point.display()))(e));
            }
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
