//! The file-descriptor-based calls host mounts are made with, so that no
//! path the guest can write is ever resolved by name: a directory is opened
//! beneath one we hold (`openat2` with `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS`),
//! a bind source is cloned as a detached tree (`open_tree`), given its flags
//! recursively while no one can see it (`mount_setattr`), and attached onto
//! the opened directory (`move_mount`); unmounting goes through the tree's
//! own descriptor. A guest that swaps a mount point for a symlink gets an
//! error, never a mount or an unmount of a host path.
//!
//! Linux ≥ 5.12 (Debian 12 has 6.1).

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

/// How names beneath a held directory are resolved: never through a
/// symlink, a magic link, `..` out of it, or another mount.
const RESOLVE_STRICT: u64 = libc::RESOLVE_BENEATH
    | libc::RESOLVE_NO_SYMLINKS
    | libc::RESOLVE_NO_MAGICLINKS
    | libc::RESOLVE_NO_XDEV;

fn c_name(name: &str) -> Result<CString, Errno> {
    CString::new(name).map_err(|_| Errno::EINVAL)
}

fn c_path(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn fd_result(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    if ret < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(ret).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unit_result(ret: libc::c_long) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// Opens `name` (one component or a relative path) beneath `dir` with
/// `flags`, refusing symlinks, `..` escapes and mount crossings.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: i32,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    openat2(dir, name, flags, mode, RESOLVE_STRICT)
}

/// [`open_beneath`], but a path that goes down through mounts (submounts
/// of the sandbox directory, to unmount them) is allowed.
pub fn open_beneath_across_mounts(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
) -> Result<OwnedFd, Errno> {
    let path = path.to_str().ok_or(Errno::EINVAL)?;
    openat2(dir, path, flags, 0, RESOLVE_STRICT & !libc::RESOLVE_NO_XDEV)
}

fn openat2(
    dir: BorrowedFd<'_>,
    name: &str,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let name = c_name(name)?;
    // SAFETY: open_how is plain old data; all-zero is its "nothing asked".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    // SAFETY: openat2 reads `name` and `how` (of the size given) and
    // returns a new descriptor or -1; both outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    fd_result(ret)
}

/// Opens a host path the caller trusts (not guest-writable) as an
/// `O_PATH` directory descriptor.
pub fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// Makes the directory `name` in `dir`; an existing entry is an error.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> Result<(), Errno> {
    nix::sys::stat::mkdirat(dir, name, nix::sys::stat::Mode::from_bits_truncate(mode))
}

/// Makes the empty regular file `name` in `dir`; an existing entry (a
/// symlink too) is an error.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> Result<(), Errno> {
    open_beneath(
        dir,
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        mode,
    )
    .map(drop)
}

/// Removes the entry `name` of `dir` (a directory if `is_dir`).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str, is_dir: bool) -> Result<(), Errno> {
    let flags = if is_dir {
        nix::unistd::UnlinkatFlags::RemoveDir
    } else {
        nix::unistd::UnlinkatFlags::NoRemoveDir
    };
    nix::unistd::unlinkat(dir, name, flags)
}

/// A detached copy of the mount tree at `source` (with its submounts).
pub fn clone_tree(source: &Path) -> Result<OwnedFd, Errno> {
    let source = c_path(source)?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32;
    // SAFETY: open_tree reads the path string and returns a new descriptor
    // or -1.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags) };
    fd_result(ret)
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on every mount of the tree `tree`.
pub fn set_tree_attrs(tree: BorrowedFd<'_>, attrs: u64) -> Result<(), Errno> {
    // SAFETY: mount_attr is plain old data; all-zero changes nothing.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = attrs;
    let empty: &CStr = c"";
    // SAFETY: mount_setattr reads the empty path and `attr` (of the size
    // given), both alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    unit_result(ret)
}

/// Attaches the detached tree `tree` onto the directory or file `target`.
pub fn move_tree(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    let empty: &CStr = c"";
    // SAFETY: move_mount reads the two empty path strings; the descriptors
    // are valid for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    unit_result(ret)
}

/// Detaches the mount whose root `mount` is a descriptor of, wherever the
/// guest may have moved it (the descriptor's magic link names exactly it).
pub fn unmount_fd(mount: BorrowedFd<'_>) -> Result<(), Errno> {
    let path = format!("/proc/self/fd/{}", mount.as_raw_fd());
    nix::mount::umount2(path.as_str(), nix::mount::MntFlags::MNT_DETACH)
}
