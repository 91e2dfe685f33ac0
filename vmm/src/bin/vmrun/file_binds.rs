//! Single host files a container binds in: each is bind-mounted onto an
//! empty file in one private directory (in the VM's runtime directory),
//! which is shared over virtio-fs. The guest sees those files only, not the
//! directories they live in. Unmounted when dropped.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use vmm::oci::FileBind;

/// Why a file could not be bound into the share.
#[derive(Debug, thiserror::Error)]
pub enum FileBindError {
    #[error("cannot create {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind {} into the files share (needs root): {errno}", .source_path.display())]
    Mount {
        source_path: PathBuf,
        errno: nix::Error,
    },
}

/// The bind mounts made, undone on drop.
pub struct FileBinds {
    mounted: Vec<PathBuf>,
}

impl FileBinds {
    /// Creates `dir` and binds every file of `files` into it by name, read-only
    /// where the container's mount is.
    pub fn bind(dir: &Path, files: &[FileBind]) -> Result<Self, FileBindError> {
        let mut binds = Self {
            mounted: Vec::new(),
        };
        if files.is_empty() {
            return Ok(binds);
        }
        std::fs::create_dir(dir).map_err(|source| FileBindError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        for file in files {
            let target = dir.join(&file.name);
            std::fs::File::create(&target).map_err(|source| FileBindError::Create {
                path: target.clone(),
                source,
            })?;
            let failed = |errno| FileBindError::Mount {
                source_path: file.source.clone(),
                errno,
            };
            mount(
                Some(&file.source),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(failed)?;
            binds.mounted.push(target.clone());
            if file.read_only {
                // A bind mount takes its flags from a remount.
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(failed)?;
            }
        }
        Ok(binds)
    }
}

impl Drop for FileBinds {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            if let Err(errno) = umount2(target, MntFlags::MNT_DETACH) {
                tracing::warn!(target = %target.display(), "cannot unmount a file bind: {errno}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn binds_files_read_only_or_not_and_unmounts_them() {
        if !is_root() {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let base = std::env::temp_dir().join(format!("vmrun-file-binds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("ro.txt"), "read me\n").unwrap();
        std::fs::write(base.join("rw.txt"), "").unwrap();
        let dir = base.join("files");
        let files = [
            FileBind {
                source: base.join("ro.txt"),
                name: "0".into(),
                read_only: true,
            },
            FileBind {
                source: base.join("rw.txt"),
                name: "1".into(),
                read_only: false,
            },
        ];
        let binds = FileBinds::bind(&dir, &files).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("0")).unwrap(), "read me\n");
        let denied = std::fs::write(dir.join("0"), "x").unwrap_err();
        assert_eq!(denied.raw_os_error(), Some(libc::EROFS));
        std::fs::write(dir.join("1"), "through the bind\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(base.join("rw.txt")).unwrap(),
            "through the bind\n"
        );
        drop(binds);
        assert_eq!(std::fs::read_to_string(dir.join("0")).unwrap(), "");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn no_files_no_directory() {
        let dir = std::env::temp_dir().join(format!("vmrun-no-file-binds-{}", std::process::id()));
        let binds = FileBinds::bind(&dir, &[]).unwrap();
        assert!(!dir.exists());
        drop(binds);
    }
}
