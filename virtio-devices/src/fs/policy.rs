//! The checks [`GuardedFs`](super::guard::GuardedFs) applies to FUSE
//! requests before they reach the passthrough file system. Pure functions of
//! the decoded request, so that they are easy to audit and to test.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;

use fuse_backend_rs::api::filesystem::ROOT_ID;

/// Largest xattr value or name list Linux supports (`XATTR_SIZE_MAX`,
/// `XATTR_LIST_MAX`); larger guest buffers never receive more than this.
pub(crate) const XATTR_MAX: u32 = 64 * 1024;

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A name that creates, removes or renames a directory entry must be one
/// plain path component: not empty, no `/`, not `.` or `..`. (Names are cut
/// at their first NUL before they get here.)
pub(crate) fn check_entry_name(name: &CStr) -> io::Result<()> {
    let bytes = name.to_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}

/// LOOKUP may name `.` and `..` (the passthrough maps `..` of the root to
/// the root itself) but never a path.
pub(crate) fn check_lookup_name(name: &CStr) -> io::Result<()> {
    let bytes = name.to_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}

/// Refuses open flags the guest kernel never sends through FUSE_OPEN,
/// FUSE_OPENDIR or FUSE_CREATE and that would make the host do something
/// other than open (or create) that one file, and, on a read-only share,
/// anything that opens for writing or truncates.
pub(crate) fn check_open_flags(flags: u32, read_only: bool) -> io::Result<()> {
    // The flags are a C int on the wire.
    let flags = flags as i32;
    // With O_PATH the kernel drops O_CREAT|O_EXCL and follows a trailing
    // symlink: the passthrough's CREATE would open what a symlink in the
    // share points to on the host.
    if flags & libc::O_PATH != 0 {
        return Err(errno(libc::EINVAL));
    }
    // O_TMPFILE would create an anonymous file in the directory being opened.
    if flags & (libc::O_TMPFILE & !libc::O_DIRECTORY) != 0 {
        return Err(errno(libc::EOPNOTSUPP));
    }
    if read_only && (flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0) {
        return Err(errno(libc::EROFS));
    }
    Ok(())
}

/// Whether MKNOD may create a node of `mode`/`rdev`: device nodes would give
/// host processes that look into the share a door to host devices, so only
/// regular files, FIFOs, sockets and overlayfs whiteouts (character device
/// 0:0) are allowed. The passthrough never opens any of these for the guest.
pub(crate) fn check_mknod(mode: u32, rdev: u32) -> io::Result<()> {
    match mode & libc::S_IFMT {
        libc::S_IFBLK => Err(errno(libc::EPERM)),
        libc::S_IFCHR if rdev != 0 => Err(errno(libc::EPERM)),
        _ => Ok(()),
    }
}

/// The mode a guest may give a file on the host: never setuid, and setgid
/// only on directories (where it means "inherit the group"). The VMM writes
/// as root, and a share's files are host files: a guest-made setuid-root
/// binary in a volume would be one for every host user who can reach it.
pub(crate) fn host_safe_mode(mode: u32) -> u32 {
    let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
    let mut mode = mode & !libc::S_ISUID;
    if !is_dir {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// ACCESS asking for write permission on a read-only share.
pub(crate) fn check_access(mask: u32, read_only: bool) -> io::Result<()> {
    if read_only && mask as i32 & libc::W_OK != 0 {
        return Err(errno(libc::EROFS));
    }
    Ok(())
}

/// Caps a guest-chosen xattr buffer size: the host allocates a buffer of
/// this size before asking the kernel, which never returns more than
/// [`XATTR_MAX`] bytes anyway. 0 (the size query) stays 0.
pub(crate) fn clamp_xattr_size(size: u32) -> u32 {
    size.min(XATTR_MAX)
}

/// The error a request gets when a share's inode or handle table is full.
/// ENFILE ("too many open files in the system") rather than EMFILE: the
/// table that is full is the share's, not the guest process's descriptor
/// table, and a guest program that takes EMFILE for its own limit would
/// close its own files for nothing.
pub(crate) fn table_full() -> io::Error {
    errno(libc::ENFILE)
}

/// How much of the host one share's guest may hold open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FsLimits {
    /// Inodes the guest holds a lookup on (each keeps an `O_PATH`
    /// descriptor open in the passthrough). The root is not counted.
    pub(crate) max_inodes: usize,
    /// Open files and directories (each a descriptor).
    pub(crate) max_handles: usize,
}

/// The inodes and handles the guest holds, counted the way the passthrough
/// counts them, so that the count is the passthrough's number of open
/// descriptors: an inode lives from the first lookup that returns it until
/// FORGETs have taken back every lookup (a FORGET takes back `nlookup` of
/// them, at most as many as there are); a handle from the OPEN, OPENDIR or
/// CREATE that returned it until its RELEASE or RELEASEDIR succeeds.
///
/// A new inode past the cap is refused ([`add_lookup`](Self::add_lookup)
/// returns false: the caller takes the passthrough's lookup back); lookups
/// of inodes the guest already holds are always counted, so a guest at the
/// cap can still reach what it has.
#[derive(Debug)]
pub(crate) struct LiveObjects {
    limits: FsLimits,
    /// Lookup count per live inode (never 0, never the root).
    lookups: HashMap<u64, u64>,
    handles: usize,
}

impl LiveObjects {
    pub(crate) fn new(limits: FsLimits) -> Self {
        LiveObjects {
            limits,
            lookups: HashMap::new(),
            handles: 0,
        }
    }

    /// Inodes the guest holds.
    pub(crate) fn inodes(&self) -> usize {
        self.lookups.len()
    }

    /// Handles the guest holds.
    pub(crate) fn handles(&self) -> usize {
        self.handles
    }

    /// Fails with [`table_full`] if no new inode may be added: checked
    /// before operations that create one (MKNOD, MKDIR, SYMLINK, CREATE), so
    /// that nothing is made on the host that the guest cannot be given.
    pub(crate) fn check_inode_room(&self) -> io::Result<()> {
        if self.lookups.len() >= self.limits.max_inodes {
            return Err(table_full());
        }
        Ok(())
    }

    /// Fails with [`table_full`] if no handle may be added.
    pub(crate) fn check_handle_room(&self) -> io::Result<()> {
        if self.handles >= self.limits.max_handles {
            return Err(table_full());
        }
        Ok(())
    }

    /// Whether one more lookup of `nodeid` would be counted.
    pub(crate) fn admits(&self, nodeid: u64) -> bool {
        nodeid == ROOT_ID
            || nodeid == 0
            || self.lookups.contains_key(&nodeid)
            || self.lookups.len() < self.limits.max_inodes
    }

    /// Counts one more lookup of `nodeid` (from an entry handed to the
    /// guest); false, and nothing counted, if it is a new inode past the
    /// cap. The root (never forgotten by the passthrough) and nodeid 0 (a
    /// negative entry) are not counted.
    pub(crate) fn add_lookup(&mut self, nodeid: u64) -> bool {
        if nodeid == ROOT_ID || nodeid == 0 {
            return true;
        }
        if let Some(count) = self.lookups.get_mut(&nodeid) {
            *count = count.saturating_add(1);
            return true;
        }
        if self.lookups.len() >= self.limits.max_inodes {
            return false;
        }
        self.lookups.insert(nodeid, 1);
        true
    }

    /// Takes back `count` lookups of `nodeid` (FORGET); the inode is gone
    /// when none are left. Unknown inodes are ignored, as the passthrough
    /// ignores them.
    pub(crate) fn forget(&mut self, nodeid: u64, count: u64) {
        if let Some(left) = self.lookups.get_mut(&nodeid) {
            *left = left.saturating_sub(count);
            if *left == 0 {
                self.lookups.remove(&nodeid);
            }
        }
    }

    /// Counts a handle the passthrough handed out.
    pub(crate) fn add_handle(&mut self) {
        self.handles = self.handles.saturating_add(1);
    }

    /// Takes back a handle the passthrough released.
    pub(crate) fn remove_handle(&mut self) {
        self.handles = self.handles.saturating_sub(1);
    }

    /// Everything is gone (FUSE_DESTROY: the passthrough drops its tables).
    pub(crate) fn clear(&mut self) {
        self.lookups.clear();
        self.handles = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_live_until_every_lookup_is_forgotten() {
        let mut live = LiveObjects::new(FsLimits {
            max_inodes: 2,
            max_handles: 1,
        });
        assert!(live.add_lookup(10));
        assert!(live.add_lookup(10));
        assert!(live.add_lookup(11));
        assert_eq!(live.inodes(), 2);
        // Full: a new inode is refused, known ones and the root are not.
        assert!(!live.admits(12));
        assert!(!live.add_lookup(12));
        assert_eq!(code(live.check_inode_room()), Some(libc::ENFILE));
        assert!(live.add_lookup(11));
        assert!(live.add_lookup(ROOT_ID));
        assert!(live.add_lookup(0));
        assert_eq!(live.inodes(), 2);
        // 10 has two lookups: one FORGET of 1 keeps it.
        live.forget(10, 1);
        assert!(!live.add_lookup(12));
        live.forget(10, 1);
        assert!(live.check_inode_room().is_ok());
        assert!(live.add_lookup(12));
        // 11 has two: forgetting more than that takes both, not more.
        live.forget(11, 5);
        assert_eq!(live.inodes(), 1);
        live.forget(11, 1);
        live.forget(99, 1);
        live.forget(ROOT_ID, 1);
        assert_eq!(live.inodes(), 1);

        assert!(live.check_handle_room().is_ok());
        live.add_handle();
        assert_eq!(code(live.check_handle_room()), Some(libc::ENFILE));
        live.remove_handle();
        assert!(live.check_handle_room().is_ok());
        live.remove_handle();
        assert_eq!(live.handles(), 0);

        live.add_handle();
        live.clear();
        assert_eq!((live.inodes(), live.handles()), (0, 0));
    }

    #[test]
    fn setuid_never_reaches_the_host_and_setgid_only_on_directories() {
        assert_eq!(
            host_safe_mode(libc::S_IFREG | 0o4755),
            libc::S_IFREG | 0o755
        );
        assert_eq!(
            host_safe_mode(libc::S_IFREG | 0o2755),
            libc::S_IFREG | 0o755
        );
        assert_eq!(host_safe_mode(0o6755), 0o755);
        assert_eq!(
            host_safe_mode(libc::S_IFDIR | 0o2775),
            libc::S_IFDIR | 0o2775
        );
        assert_eq!(
            host_safe_mode(libc::S_IFDIR | 0o4775),
            libc::S_IFDIR | 0o775
        );
        assert_eq!(
            host_safe_mode(libc::S_IFREG | 0o1777),
            libc::S_IFREG | 0o1777
        );
    }

    fn name(bytes: &[u8]) -> &CStr {
        CStr::from_bytes_until_nul(bytes).unwrap()
    }

    fn code(r: io::Result<()>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn entry_names_must_be_one_plain_component() {
        for bad in [
            &b"\0"[..],
            b".\0",
            b"..\0",
            b"a/b\0",
            b"/\0",
            b"../x\0",
            b"/etc\0",
        ] {
            assert_eq!(
                code(check_entry_name(name(bad))),
                Some(libc::EINVAL),
                "{bad:?}"
            );
        }
        for good in [&b"a\0"[..], b"...\0", b".hidden\0", b"a..b\0", b"x\0/../y"] {
            assert!(check_entry_name(name(good)).is_ok(), "{good:?}");
        }
        assert!(check_lookup_name(name(b"..\0")).is_ok());
        assert!(check_lookup_name(name(b".\0")).is_ok());
        assert_eq!(
            code(check_lookup_name(name(b"../..\0"))),
            Some(libc::EINVAL)
        );
        assert_eq!(code(check_lookup_name(name(b"\0"))), Some(libc::EINVAL));
    }

    #[test]
    fn open_flags() {
        let rdonly = libc::O_RDONLY as u32;
        let rdwr = libc::O_RDWR as u32;
        let wronly = libc::O_WRONLY as u32;
        let trunc = libc::O_TRUNC as u32;
        let tmpfile = (libc::O_TMPFILE | libc::O_RDWR) as u32;
        let path = libc::O_PATH as u32;
        assert_eq!(code(check_open_flags(path, false)), Some(libc::EINVAL));
        assert_eq!(
            code(check_open_flags(path | rdwr, false)),
            Some(libc::EINVAL)
        );
        assert!(check_open_flags(rdonly, true).is_ok());
        assert!(check_open_flags(rdonly | libc::O_DIRECTORY as u32, true).is_ok());
        assert!(check_open_flags(rdwr | trunc, false).is_ok());
        assert_eq!(code(check_open_flags(rdwr, true)), Some(libc::EROFS));
        assert_eq!(code(check_open_flags(wronly, true)), Some(libc::EROFS));
        assert_eq!(
            code(check_open_flags(rdonly | trunc, true)),
            Some(libc::EROFS)
        );
        assert_eq!(
            code(check_open_flags(tmpfile, false)),
            Some(libc::EOPNOTSUPP)
        );
    }

    #[test]
    fn mknod_types() {
        assert!(check_mknod(libc::S_IFREG | 0o644, 0).is_ok());
        assert!(check_mknod(libc::S_IFIFO | 0o644, 0).is_ok());
        assert!(check_mknod(libc::S_IFSOCK | 0o644, 0).is_ok());
        assert!(
            check_mknod(libc::S_IFCHR, 0).is_ok(),
            "whiteouts are allowed"
        );
        let sda = libc::makedev(8, 0) as u32;
        let null = libc::makedev(1, 3) as u32;
        assert_eq!(
            code(check_mknod(libc::S_IFBLK | 0o600, sda)),
            Some(libc::EPERM)
        );
        assert_eq!(code(check_mknod(libc::S_IFBLK, 0)), Some(libc::EPERM));
        assert_eq!(
            code(check_mknod(libc::S_IFCHR | 0o666, null)),
            Some(libc::EPERM)
        );
    }

    #[test]
    fn access_and_xattr_sizes() {
        assert!(check_access(libc::W_OK as u32, false).is_ok());
        assert!(check_access(libc::R_OK as u32, true).is_ok());
        assert_eq!(
            code(check_access((libc::R_OK | libc::W_OK) as u32, true)),
            Some(libc::EROFS)
        );
        assert_eq!(clamp_xattr_size(0), 0);
        assert_eq!(clamp_xattr_size(100), 100);
        assert_eq!(clamp_xattr_size(u32::MAX), XATTR_MAX);
    }
}
