//! The jail's root: an empty tmpfs holding only the directories the VMM
//! serves or listens in, bound at their host paths (so nothing the VMM was
//! configured with needs translating), then made read-only.
//!
//! The mount namespace is made a slave of the host's first: nothing
//! mounted here reaches the host, and what the host mounts later beneath a
//! shared mount (a container's rootfs under the sandbox's share root) still
//! reaches the VMM.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{JailBind, JailError};

/// Where the new root is mounted before it becomes `/` (hidden by it in
/// this namespace only).
const NEW_ROOT: &str = "/tmp";
/// The old root inside the new one, until it is detached.
const OLD_ROOT: &str = ".old-root";

fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> JailError {
    let op = op.into();
    move |e| JailError::sys(op)(e.into())
}

/// Makes a tmpfs holding `binds` the root of the calling process's (new)
/// mount namespace, and detaches everything else. The mounts at
/// `read_only_tops` (seen through `binds`) are then read-only here.
pub(super) fn enter(binds: &[JailBind], read_only_tops: &[PathBuf]) -> Result<(), JailError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(sys("make the mount namespace a slave of the host's"))?;
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Directories only, and few of them.
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        base,
        Some("mode=0755,size=64k,nr_inodes=256"),
    )
    .map_err(sys(format!("mount the jail's tmpfs on {NEW_ROOT}")))?;
    let old_root = Path::new(NEW_ROOT).join(OLD_ROOT);
    std::fs::create_dir(&old_root)
        .map_err(JailError::sys(format!("create {}", old_root.display())))?;
    nix::unistd::pivot_root(NEW_ROOT, &old_root).map_err(sys("pivot_root into the jail"))?;
    nix::unistd::chdir("/").map_err(sys("chdir to the jail's root"))?;
    // The whole host tree is under /OLD_ROOT now, /tmp included.
    let old_root = Path::new("/").join(OLD_ROOT);
    for bind in binds {
        bind_from(&old_root, bind)?;
    }
    for top in read_only_tops {
        make_top_read_only(top)?;
    }
    umount2(&old_root, MntFlags::MNT_DETACH).map_err(sys("detach the host's root"))?;
    std::fs::remove_dir(&old_root)
        .map_err(JailError::sys(format!("remove {}", old_root.display())))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        base | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        Some("mode=0755,size=64k,nr_inodes=256"),
    )
    .map_err(sys("make the jail's root read-only"))
}

/// Binds `bind.path` of the host tree at `old_root` to the same path in
/// the jail, nosuid and nodev (and read-only if asked), with its submounts.
fn bind_from(old_root: &Path, bind: &JailBind) -> Result<(), JailError> {
    let relative = bind.path.strip_prefix("/").unwrap_or(&bind.path);
    let source: PathBuf = old_root.join(relative);
    std::fs::create_dir_all(&bind.path).map_err(JailError::sys(format!(
        "create {} in the jail",
        bind.path.display()
    )))?;
    let what = || format!("bind {} into the jail", bind.path.display());
    mount(
        Some(&source),
        &bind.path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(what()))?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if bind.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, &bind.path, None::<&str>, flags, None::<&str>).map_err(sys(what()))
}

/// Makes the mount at `path` read-only in the jail, itself only: the host's
/// mounts beneath it (there already or propagated later) keep their own
/// flags. It must be a mount of its own, or the bind holding it would turn
/// read-only instead. Such a top holds only directories and mount points,
/// so it is also nosuid, nodev and noexec here.
fn make_top_read_only(path: &Path) -> Result<(), JailError> {
    let what = || format!("make {} read-only in the jail", path.display());
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dev = |p: &Path| std::fs::metadata(p).map(|meta| meta.dev());
    if dev(path).map_err(JailError::sys(what()))? == dev(parent).map_err(JailError::sys(what()))? {
        return Err(JailError::sys(what())(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a mount point",
        )));
    }
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).map_err(sys(what()))
}
