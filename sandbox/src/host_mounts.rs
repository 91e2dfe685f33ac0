//! Host-side mounts of one container: the bind mounts that put its root
//! file system and its bind sources into the sandbox's shared directory
//! (and, recorded, the rootfs mount the shim makes from containerd's
//! snapshot). Everything made here is recorded and undone in reverse order,
//! so a failure halfway or a Delete leaves nothing behind.
//!
//! The shared directory is the guest's to write: every step inside it goes
//! through descriptors ([`crate::mount_api`]), never through a path the
//! guest could have turned into a symlink. Share mounts are `nosuid,nodev`,
//! and read-only ones are read-only with all their submounts.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::mount::MntFlags;

use crate::error::{Result, SandboxError};
use crate::mount_api;

/// A directory the host holds open; what is made in it is made by
/// descriptor. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HostDir {
    fd: Arc<OwnedFd>,
    /// For messages only: the guest may have moved it since.
    path: PathBuf,
}

impl HostDir {
    /// Opens a directory whose path no guest can write (the sandbox's
    /// share root, made by the host in a root-only directory).
    pub fn open(path: &Path) -> Result<Self> {
        let fd = mount_api::open_dir(path)
            .map_err(SandboxError::sys(format!("open {}", path.display())))?;
        Ok(Self {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One thing made, and how to undo it.
#[derive(Debug)]
enum Made {
    /// A directory or file created as `name` in `parent`.
    Entry {
        parent: Arc<OwnedFd>,
        name: String,
        is_dir: bool,
        path: PathBuf,
    },
    /// A tree attached by us; `tree` names its root wherever it is now.
    Tree { tree: OwnedFd, path: PathBuf },
    /// A mount the caller made at a host path no guest can write.
    HostPath(PathBuf),
}

/// The mounts and mount points made for one container.
#[derive(Debug, Default)]
pub struct HostMounts {
    made: Vec<Made>,
}

/// One plain path component: anything else would be resolved by name.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(SandboxError::Spec(format!(
            "{name:?} cannot name a directory entry"
        )));
    }
    Ok(())
}

impl HostMounts {
    /// Records a mount the caller made on `target`, a path no guest can
    /// write (the shim's rootfs in containerd's bundle), so that it is
    /// undone with the rest.
    pub fn record_mount(&mut self, target: &Path) {
        self.made.push(Made::HostPath(target.to_path_buf()));
    }

    /// Creates the directory `name` in `parent` and holds it open.
    pub fn create_dir(&mut self, parent: &HostDir, name: &str) -> Result<HostDir> {
        check_name(name)?;
        let path = parent.path.join(name);
        mount_api::mkdir_at(parent.fd.as_fd(), name, 0o755)
            .map_err(SandboxError::sys(format!("create {}", path.display())))?;
        self.made.push(Made::Entry {
            parent: Arc::clone(&parent.fd),
            name: name.to_string(),
            is_dir: true,
            path: path.clone(),
        });
        let fd = open_made(parent, name, libc::O_PATH | libc::O_DIRECTORY, &path)?;
        Ok(HostDir {
            fd: Arc::new(fd),
            path,
        })
    }

    /// Bind-mounts `source` (a directory or a regular file, with its
    /// submounts) on a new entry `name` of `parent`: `nosuid,nodev`, and
    /// read-only throughout if asked.
    pub fn bind(
        &mut self,
        source: &Path,
        parent: &HostDir,
        name: &str,
        read_only: bool,
    ) -> Result<()> {
        check_name(name)?;
        let meta = std::fs::metadata(source).map_err(SandboxError::host(format!(
            "bind mount source {}",
            source.display()
        )))?;
        // Directories and regular files only: a device node or a socket
        // shared over virtio-fs would be opened by the VMM on the host.
        if !meta.is_dir() && !meta.is_file() {
            return Err(SandboxError::Spec(format!(
                "bind source {} must be a directory or a regular file",
                source.display()
            )));
        }
        let path = parent.path.join(name);
        let made = if meta.is_dir() {
            mount_api::mkdir_at(parent.fd.as_fd(), name, 0o755)
        } else {
            mount_api::create_file_at(parent.fd.as_fd(), name, 0o600)
        };
        made.map_err(SandboxError::sys(format!("create {}", path.display())))?;
        self.made.push(Made::Entry {
            parent: Arc::clone(&parent.fd),
            name: name.to_string(),
            is_dir: meta.is_dir(),
            path: path.clone(),
        });
        let kind = if meta.is_dir() { libc::O_DIRECTORY } else { 0 };
        let target = open_made(parent, name, libc::O_PATH | kind, &path)?;

        let what = || format!("bind mount {} on {}", source.display(), path.display());
        let tree = mount_api::clone_tree(source).map_err(|e| SandboxError::sys(what())(e))?;
        let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        if read_only {
            attrs |= libc::MOUNT_ATTR_RDONLY;
        }
        // Set while the tree is detached: the guest never sees it writable.
        mount_api::set_tree_attrs(tree.as_fd(), attrs).map_err(|e| SandboxError::sys(what())(e))?;
        mount_api::move_tree(tree.as_fd(), target.as_fd())
            .map_err(|e| SandboxError::sys(what())(e))?;
        self.made.push(Made::Tree { tree, path });
        Ok(())
    }

    /// Undoes everything, newest first. Keeps going after a failure and
    /// reports the first one.
    pub fn cleanup(&mut self) -> Result<()> {
        let mut first_error = None;
        let mut failed_unmount = false;
        while let Some(made) = self.made.pop() {
            let result = match &made {
                Made::Tree { tree, path } => mount_api::unmount_fd(tree.as_fd())
                    .or_else(ignore_gone)
                    .map_err(SandboxError::sys(format!("unmount {}", path.display()))),
                Made::HostPath(path) => {
                    nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                        .or_else(ignore_gone)
                        .map_err(SandboxError::sys(format!("unmount {}", path.display())))
                }
                // Never remove what may still be a mount of host files.
                Made::Entry { path, .. } if failed_unmount => Err(SandboxError::Busy(format!(
                    "{} left in place: an unmount under it failed",
                    path.display()
                ))),
                Made::Entry {
                    parent,
                    name,
                    is_dir,
                    path,
                } => mount_api::unlink_at(parent.as_fd(), name, *is_dir)
                    // Gone, or something else (the guest's) has its name: what
                    // we made, if anywhere, goes with the sandbox directory.
                    .or_else(|e| match e {
                        Errno::ENOENT | Errno::ENOTDIR | Errno::EISDIR => Ok(()),
                        other => Err(other),
                    })
                    .map_err(SandboxError::sys(format!("remove {}", path.display()))),
            };
            if let Err(err) = result {
                failed_unmount |= !matches!(made, Made::Entry { .. });
                tracing::warn!("{err}");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// An unmount of something already gone is done.
fn ignore_gone(errno: Errno) -> Result<(), Errno> {
    match errno {
        Errno::EINVAL | Errno::ENOENT => Ok(()),
        other => Err(other),
    }
}

/// Opens the entry `name` just made in `parent`, refusing a symlink put in
/// its place.
fn open_made(parent: &HostDir, name: &str, flags: i32, path: &Path) -> Result<OwnedFd> {
    mount_api::open_beneath(parent.fd.as_fd(), name, flags, 0).map_err(|errno| {
        if errno == Errno::ELOOP || errno == Errno::EXDEV {
            SandboxError::Busy(format!(
                "{} was replaced while it was being mounted (a symlink or a mount): refused",
                path.display()
            ))
        } else {
            SandboxError::sys(format!("open {}", path.display()))(errno)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::has_mounts_under;

    fn scratch(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("vmrun-hm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("shared")).unwrap();
        std::fs::write(root.join("src/file"), "data").unwrap();
        root
    }

    fn mount_options(point: &Path) -> String {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let point = point.to_str().unwrap();
        info.lines()
            .find(|l| l.split(' ').nth(4) == Some(point))
            .map(|l| l.split(' ').nth(5).unwrap().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn binds_and_dirs_are_undone_in_reverse() {
        let root = scratch("undo");
        let shared = HostDir::open(&root.join("shared")).unwrap();
        let mut mounts = HostMounts::default();
        let container = mounts.create_dir(&shared, "c1").unwrap();
        mounts
            .bind(&root.join("src"), &container, "dir", true)
            .unwrap();
        mounts
            .bind(&root.join("src/file"), &container, "file", false)
            .unwrap();
        let dir = root.join("shared/c1/dir");
        assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "data");
        assert_eq!(
            std::fs::read_to_string(root.join("shared/c1/file")).unwrap(),
            "data"
        );
        let err = std::fs::write(dir.join("new"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        let options = mount_options(&dir);
        assert!(
            options.contains("ro") && options.contains("nosuid") && options.contains("nodev"),
            "{options}"
        );
        assert!(mount_options(&root.join("shared/c1/file")).contains("nosuid"));
        assert!(has_mounts_under(&root).unwrap());

        mounts.cleanup().unwrap();
        assert!(!has_mounts_under(&root).unwrap());
        assert!(!root.join("shared/c1").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("src/file")).unwrap(),
            "data",
            "the bind source is untouched"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn read_only_reaches_submounts() {
        let root = scratch("submount");
        std::fs::create_dir_all(root.join("src/sub")).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &root.join("src/sub"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let shared = HostDir::open(&root.join("shared")).unwrap();
        let mut mounts = HostMounts::default();
        mounts
            .bind(&root.join("src"), &shared, "vol", true)
            .unwrap();
        let err = std::fs::write(root.join("shared/vol/sub/x"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        mounts.cleanup().unwrap();
        assert!(!has_mounts_under(&root.join("shared")).unwrap());
        // The source's own submount is the host's and stays writable.
        std::fs::write(root.join("src/sub/x"), "x").unwrap();
        nix::mount::umount2(&root.join("src/sub"), MntFlags::MNT_DETACH).unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    /// What a guest can do in the share: put a symlink to a host directory
    /// where the host is about to mount, or move the directory it mounts
    /// into and leave a symlink behind. Neither reaches the host directory.
    #[test]
    fn a_guest_symlink_in_the_share_never_redirects_a_mount() {
        let root = scratch("race");
        let victim = root.join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("passwd"), "host\n").unwrap();
        let shared = HostDir::open(&root.join("shared")).unwrap();
        let mut mounts = HostMounts::default();

        // The name the host makes next is a symlink already.
        std::os::unix::fs::symlink(&victim, root.join("shared/c1")).unwrap();
        let err = mounts.create_dir(&shared, "c1").unwrap_err().to_string();
        assert!(err.contains("shared/c1") && err.contains("exists"), "{err}");
        std::fs::remove_file(root.join("shared/c1")).unwrap();

        // The container's directory is moved away after the host made it,
        // and a symlink to the host directory takes its name.
        let container = mounts.create_dir(&shared, "c1").unwrap();
        std::fs::rename(root.join("shared/c1"), root.join("shared/moved")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("shared/c1")).unwrap();
        mounts
            .bind(&root.join("src"), &container, "rootfs", false)
            .unwrap();
        assert!(
            !victim.join("rootfs").exists(),
            "mounted through the symlink"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("shared/moved/rootfs/file")).unwrap(),
            "data",
            "the mount went where the host made it"
        );
        // The entry to mount on is swapped for a symlink.
        std::os::unix::fs::symlink(&victim, root.join("shared/moved/x")).unwrap();
        let err = mounts
            .bind(&root.join("src"), &container, "x", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists"), "{err}");

        mounts.cleanup().unwrap();
        assert!(!has_mounts_under(&root).unwrap());
        assert_eq!(
            std::fs::read_to_string(victim.join("passwd")).unwrap(),
            "host\n"
        );
        assert_eq!(
            std::fs::read_dir(&victim).unwrap().count(),
            1,
            "nothing made in the host directory"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_file_target_is_never_created_through_a_symlink() {
        let root = scratch("filelink");
        std::fs::write(root.join("precious"), "keep\n").unwrap();
        std::os::unix::fs::symlink(root.join("precious"), root.join("shared/0")).unwrap();
        let shared = HostDir::open(&root.join("shared")).unwrap();
        let mut mounts = HostMounts::default();
        assert!(mounts
            .bind(&root.join("src/file"), &shared, "0", true)
            .is_err());
        assert_eq!(
            std::fs::read_to_string(root.join("precious")).unwrap(),
            "keep\n",
            "truncated through the symlink"
        );
        mounts.cleanup().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn names_are_one_component_and_devices_are_never_shared() {
        let root = scratch("names");
        let shared = HostDir::open(&root.join("shared")).unwrap();
        let mut mounts = HostMounts::default();
        for name in ["", ".", "..", "a/b"] {
            assert!(mounts.create_dir(&shared, name).is_err(), "{name:?}");
        }
        let err = mounts
            .bind(Path::new("/dev/null"), &shared, "null", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/dev/null") && err.contains("regular file"),
            "{err}"
        );
        let err = mounts
            .bind(Path::new("/nonexistent/src"), &shared, "x", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/src"), "{err}");
        mounts.cleanup().unwrap();
        assert_eq!(std::fs::read_dir(root.join("shared")).unwrap().count(), 0);
        std::fs::remove_dir_all(root).unwrap();
    }
}
