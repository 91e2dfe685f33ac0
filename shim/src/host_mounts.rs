//! Host-side mounts of one container: its root file system (from
//! containerd's snapshotter mounts) and the bind mounts that put it and its
//! volumes into the sandbox's shared directory. Everything made here is
//! recorded and undone in reverse order, so a failure halfway or a Delete
//! leaves nothing behind.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use nix::mount::{MntFlags, MsFlags};

use crate::error::{Result, ShimError};

/// What was made at one path.
#[derive(Debug)]
struct Made {
    path: PathBuf,
    /// We created the file or directory (remove it after unmounting).
    created: Option<Created>,
    mounted: bool,
}

#[derive(Debug, Clone, Copy)]
enum Created {
    Dir,
    File,
}

/// The mounts and mount points made for one container.
#[derive(Debug, Default)]
pub struct HostMounts {
    made: Vec<Made>,
}

impl HostMounts {
    /// Mounts containerd's rootfs mounts (usually one overlay) on `target`.
    pub async fn mount_rootfs(&mut self, mounts: &[Mount], target: &Path) -> Result<()> {
        for mount in mounts {
            containerd_shim::util::mount_rootfs(mount, target)
                .await
                .map_err(|e| ShimError::Host {
                    what: format!(
                        "mount the {} rootfs {} on {}",
                        mount.type_,
                        mount.source,
                        target.display()
                    ),
                    source: std::io::Error::other(e.to_string()),
                })?;
            self.made.push(Made {
                path: target.to_path_buf(),
                created: None,
                mounted: true,
            });
        }
        Ok(())
    }

    /// Creates the directory `path` (and records it for removal).
    pub fn create_dir(&mut self, path: &Path) -> Result<()> {
        std::fs::create_dir(path).map_err(ShimError::host(format!("create {}", path.display())))?;
        self.made.push(Made {
            path: path.to_path_buf(),
            created: Some(Created::Dir),
            mounted: false,
        });
        Ok(())
    }

    /// Bind-mounts `source` (a file or a directory) on a new `target` of the
    /// same kind, read-only if asked.
    pub fn bind(&mut self, source: &Path, target: &Path, read_only: bool) -> Result<()> {
        let meta = std::fs::metadata(source).map_err(ShimError::host(format!(
            "bind mount source {}",
            source.display()
        )))?;
        let created = if meta.is_dir() {
            std::fs::create_dir(target).map(|()| Created::Dir)
        } else {
            std::fs::File::create(target).map(|_| Created::File)
        }
        .map_err(ShimError::host(format!("create {}", target.display())))?;
        self.made.push(Made {
            path: target.to_path_buf(),
            created: Some(created),
            mounted: false,
        });
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(
            ShimError::sys(format!(
                "bind mount {} on {}",
                source.display(),
                target.display()
            )),
        )?;
        if let Some(last) = self.made.last_mut() {
            last.mounted = true;
        }
        if read_only {
            let flags = flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(
                ShimError::sys(format!("make {} read-only", target.display())),
            )?;
        }
        Ok(())
    }

    /// Undoes everything, newest first. Keeps going after a failure and
    /// reports the first one.
    pub fn cleanup(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(made) = self.made.pop() {
            if made.mounted {
                match nix::mount::umount2(&made.path, MntFlags::MNT_DETACH) {
                    Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                    Err(e) => {
                        let err = ShimError::sys(format!("unmount {}", made.path.display()))(e);
                        tracing::warn!("{err}");
                        first_error.get_or_insert(err);
                        // Never remove what may still be a mount of host files.
                        continue;
                    }
                }
            }
            let removed = match made.created {
                Some(Created::Dir) => std::fs::remove_dir(&made.path),
                Some(Created::File) => std::fs::remove_file(&made.path),
                None => Ok(()),
            };
            if let Err(e) = removed {
                if e.kind() != std::io::ErrorKind::NotFound {
                    let err = ShimError::host(format!("remove {}", made.path.display()))(e);
                    tracing::warn!("{err}");
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Whether anything is mounted at or below `dir`.
pub fn has_mounts_under(dir: &Path) -> Result<bool> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(ShimError::host("read /proc/self/mountinfo"))?;
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

    #[test]
    fn binds_and_dirs_are_undone_in_reverse() {
        let root = std::env::temp_dir().join(format!("vmrun-hostmounts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/file"), "data").unwrap();
        let mut mounts = HostMounts::default();
        mounts.create_dir(&root.join("shared")).unwrap();
        mounts
            .bind(&root.join("src"), &root.join("shared/dir"), true)
            .unwrap();
        mounts
            .bind(&root.join("src/file"), &root.join("shared/file"), false)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("shared/dir/file")).unwrap(),
            "data"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("shared/file")).unwrap(),
            "data"
        );
        let err = std::fs::write(root.join("shared/dir/new"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        assert!(has_mounts_under(&root).unwrap());

        mounts.cleanup().unwrap();
        assert!(!has_mounts_under(&root).unwrap());
        assert!(!root.join("shared").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("src/file")).unwrap(),
            "data",
            "the bind source is untouched"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_missing_bind_source_is_named() {
        let mut mounts = HostMounts::default();
        let err = mounts
            .bind(Path::new("/nonexistent/src"), Path::new("/tmp/x"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/src"), "{err}");
        mounts.cleanup().unwrap();
    }
}
