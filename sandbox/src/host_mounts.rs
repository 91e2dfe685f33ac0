//! Host-side mounts of one container: the bind mounts that put its root
//! file system and its bind sources into the sandbox's shared directory
//! (and, recorded, the rootfs mount the shim makes from containerd's
//! snapshot). Everything made here is
//! recorded and undone in reverse order, so a failure halfway or a Delete
//! leaves nothing behind.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::error::{Result, SandboxError};

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
    /// Records a mount the caller made on `target` (the shim's rootfs from
    /// containerd's snapshotter), so that it is undone with the rest.
    pub fn record_mount(&mut self, target: &Path) {
        self.made.push(Made {
            path: target.to_path_buf(),
            created: None,
            mounted: true,
        });
    }

    /// Creates the directory `path` (and records it for removal).
    pub fn create_dir(&mut self, path: &Path) -> Result<()> {
        std::fs::create_dir(path).map_err(SandboxError::host(format!("create {}", path.display())))?;
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
        let meta = std::fs::metadata(source).map_err(SandboxError::host(format!(
            "bind mount source {}",
            source.display()
        )))?;
        // Directories and regular files only: a device node or a socket
        // shared over virtio-fs would be opened by the VMM on the host.
        let created = if meta.is_dir() {
            std::fs::create_dir(target).map(|()| Created::Dir)
        } else if meta.is_file() {
            std::fs::File::create(target).map(|_| Created::File)
        } else {
            return Err(SandboxError::Spec(format!(
                "bind source {} must be a directory or a regular file",
                source.display()
            )));
        }
        .map_err(SandboxError::host(format!("create {}", target.display())))?;
        self.made.push(Made {
            path: target.to_path_buf(),
            created: Some(created),
            mounted: false,
        });
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(
            SandboxError::sys(format!(
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
                SandboxError::sys(format!("make {} read-only", target.display())),
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
                        let err = SandboxError::sys(format!("unmount {}", made.path.display()))(e);
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
                    let err = SandboxError::host(format!("remove {}", made.path.display()))(e);
                    tracing::warn!("{err}");
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::has_mounts_under;

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
    fn a_device_node_is_never_shared() {
        let mut mounts = HostMounts::default();
        let err = mounts
            .bind(Path::new("/dev/null"), Path::new("/tmp/vmrun-never-made"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/dev/null") && err.contains("regular file"), "{err}");
        assert!(!Path::new("/tmp/vmrun-never-made").exists());
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
