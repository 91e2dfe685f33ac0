//! The guest must never reach outside the shared directory.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_backend_rs::abi::fuse_abi::SetattrIn;

use super::client::{FATTR_MODE, FATTR_SIZE, ROOT};
use super::*;

/// `<parent>/share` is shared; `<parent>/outside/target` (mode 0644,
/// "outside") and `<parent>/secret` must stay out of reach.
struct Nested {
    parent: TempDir,
    dev: FsDevice,
}

impl Nested {
    fn new(config: FsConfig) -> Self {
        let parent = TempDir::new_with_prefix("/tmp/vmrun-fs-nest-").unwrap();
        let p = parent.as_path();
        fs::create_dir(p.join("share")).unwrap();
        fs::create_dir(p.join("outside")).unwrap();
        fs::write(p.join("outside/target"), b"outside").unwrap();
        fs::set_permissions(p.join("outside/target"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(p.join("secret"), b"secret").unwrap();
        let dev = FsDevice::new("nested", p.join("share"), config).unwrap();
        Nested { parent, dev }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.parent.as_path().join(rel)
    }

    /// Asserts nothing outside `share` changed.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(self.parent.as_path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "secret", "share"]);
        let outside: Vec<_> = fs::read_dir(self.path("outside"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside.len(), 1);
        let target = self.path("outside/target");
        assert_eq!(fs::read(&target).unwrap(), b"outside");
        let meta = fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert_eq!(meta.nlink(), 1);
        assert_eq!(fs::read(self.path("secret")).unwrap(), b"secret");
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn dotdot_at_the_root_is_the_root() {
    let mut n = Nested::new(FsConfig::default());
    let share_ino = host_ino(&n.path("share"));
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);

    let up = drv.lookup(ROOT, b"..").unwrap();
    assert_eq!(up.nodeid, ROOT);
    assert_eq!(up.attr.ino, share_ino);
    assert_eq!(
        drv.lookup(up.nodeid, b"secret").map(drop),
        Err(libc::ENOENT)
    );
    assert_eq!(drv.lookup(ROOT, b".").unwrap().nodeid, ROOT);

    let sub = drv.mkdir(ROOT, b"sub", 0o755).unwrap();
    let sub_up = drv.lookup(sub.nodeid, b"..").unwrap();
    assert_eq!(sub_up.attr.ino, share_ino);
    let sub_up_up = drv.lookup(sub_up.nodeid, b"..").unwrap();
    assert_eq!(sub_up_up.attr.ino, share_ino);

    for path in [&b"../secret"[..], b"../../etc", b"/etc", b"sub/.."] {
        assert_eq!(
            drv.lookup(ROOT, path).map(drop),
            Err(libc::EINVAL),
            "{path:?}"
        );
    }
    n.dev.reset();
    n.assert_outside_untouched();
}

#[test]
fn names_must_be_single_components() {
    let mut n = Nested::new(FsConfig::default());
    fs::write(n.path("share/a"), b"a").unwrap();
    fs::create_dir(n.path("share/d")).unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);
    let a = drv.lookup(ROOT, b"a").unwrap();

    let bad: [&[u8]; 7] = [
        b"",
        b".",
        b"..",
        b"x/y",
        b"../escape",
        b"/tmp/escape",
        b"../secret",
    ];
    for name in bad {
        let what = String::from_utf8_lossy(name);
        assert_eq!(
            drv.mkdir(ROOT, name, 0o755).map(drop),
            Err(libc::EINVAL),
            "mkdir {what}"
        );
        assert_eq!(
            drv.create(ROOT, name, 0o644, libc::O_RDWR).map(drop),
            Err(libc::EINVAL),
            "create {what}"
        );
        assert_eq!(
            drv.symlink(ROOT, name, b"a").map(drop),
            Err(libc::EINVAL),
            "symlink {what}"
        );
        assert_eq!(
            drv.mknod(ROOT, name, libc::S_IFIFO | 0o644, 0).map(drop),
            Err(libc::EINVAL),
            "mknod {what}"
        );
        assert_eq!(
            drv.link(a.nodeid, ROOT, name).map(drop),
            Err(libc::EINVAL),
            "link {what}"
        );
        assert_eq!(
            drv.rename(ROOT, b"a", ROOT, name),
            Err(libc::EINVAL),
            "rename to {what}"
        );
        assert_eq!(
            drv.rename(ROOT, name, ROOT, b"b"),
            Err(libc::EINVAL),
            "rename {what}"
        );
        assert_eq!(drv.unlink(ROOT, name), Err(libc::EINVAL), "unlink {what}");
        assert_eq!(drv.rmdir(ROOT, name), Err(libc::EINVAL), "rmdir {what}");
    }
    // A NUL ends the name: the rest is ignored, not interpreted.
    let d = drv.mkdir(ROOT, b"made\0/../../escape", 0o755).unwrap();
    assert_eq!(d.attr.ino, host_ino(&n.path("share/made")));

    let mut names: Vec<_> = fs::read_dir(n.path("share"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "d", "made"]);
    n.dev.reset();
    n.assert_outside_untouched();
}

#[test]
fn symlinks_resolve_in_the_guest_not_on_the_host() {
    let mut n = Nested::new(FsConfig::default());
    let target = n.path("outside/target");
    symlink(&target, n.path("share/abs")).unwrap();
    symlink("../outside", n.path("share/rel")).unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);

    let abs = drv.lookup(ROOT, b"abs").unwrap();
    assert_eq!(abs.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(abs.attr.ino, host_ino(&n.path("share/abs")));
    assert_eq!(
        drv.readlink(abs.nodeid).unwrap(),
        target.as_os_str().as_bytes()
    );
    assert_eq!(
        drv.getattr(abs.nodeid).unwrap().mode & libc::S_IFMT,
        libc::S_IFLNK
    );
    for flags in [libc::O_RDONLY, libc::O_RDWR, libc::O_WRONLY | libc::O_TRUNC] {
        assert!(
            drv.open(abs.nodeid, flags).is_err(),
            "open flags {flags:#x}"
        );
    }

    let rel = drv.lookup(ROOT, b"rel").unwrap();
    assert_eq!(drv.readlink(rel.nodeid).unwrap(), b"../outside");
    assert_eq!(
        drv.lookup(rel.nodeid, b"target").map(drop),
        Err(libc::ENOTDIR)
    );
    assert!(drv.opendir(rel.nodeid).is_err());
    assert!(drv
        .create(rel.nodeid, b"planted", 0o644, libc::O_RDWR)
        .is_err());
    assert!(drv.mkdir(rel.nodeid, b"planted", 0o755).is_err());
    assert!(drv.symlink(rel.nodeid, b"planted", b"x").is_err());

    // A guest-made symlink to a host path is just text.
    let etc = drv.symlink(ROOT, b"etc", b"/etc").unwrap();
    assert_eq!(
        drv.lookup(etc.nodeid, b"passwd").map(drop),
        Err(libc::ENOTDIR)
    );
    assert_eq!(drv.readlink(etc.nodeid).unwrap(), b"/etc");

    // Attribute changes through a symlink inode never reach its target.
    let chmod = SetattrIn {
        valid: FATTR_MODE,
        mode: 0o777,
        ..Default::default()
    };
    let _ = drv.setattr(abs.nodeid, chmod);
    let truncate = SetattrIn {
        valid: FATTR_SIZE,
        size: 0,
        ..Default::default()
    };
    assert!(drv.setattr(abs.nodeid, truncate).is_err());
    assert!(drv.setattr(rel.nodeid, truncate).is_err());
    n.dev.reset();
    n.assert_outside_untouched();
}

#[test]
fn hard_links_only_within_the_share() {
    let mut n = Nested::new(FsConfig::default());
    fs::write(n.path("share/f"), b"f").unwrap();
    fs::create_dir(n.path("share/dir")).unwrap();
    symlink(n.path("outside/target"), n.path("share/abs")).unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);
    let f = drv.lookup(ROOT, b"f").unwrap();
    let dir = drv.lookup(ROOT, b"dir").unwrap();
    let abs = drv.lookup(ROOT, b"abs").unwrap();

    // Node IDs are handed out sequentially from 2; these were never handed out.
    for crafted in [0, 999_999, 1 << 40, u64::MAX] {
        assert_eq!(drv.link(crafted, ROOT, b"l").map(drop), Err(libc::EBADF));
    }
    assert_eq!(drv.link(dir.nodeid, ROOT, b"l").map(drop), Err(libc::EPERM));
    assert_eq!(
        drv.link(f.nodeid, ROOT, b"../escape").map(drop),
        Err(libc::EINVAL)
    );

    let hard = drv.link(f.nodeid, dir.nodeid, b"hard").unwrap();
    assert_eq!(hard.attr.ino, host_ino(&n.path("share/f")));
    assert_eq!(hard.attr.nlink, 2);
    // Linking a symlink links the symlink, not what it points to.
    let l = drv.link(abs.nodeid, ROOT, b"abs2").unwrap();
    assert_eq!(l.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert!(fs::symlink_metadata(n.path("share/abs2"))
        .unwrap()
        .file_type()
        .is_symlink());
    n.dev.reset();
    n.assert_outside_untouched();
}

#[test]
fn crafted_inode_numbers_and_handles() {
    let mut n = Nested::new(FsConfig::default());
    fs::write(n.path("share/f"), b"data").unwrap();
    fs::write(n.path("share/g"), b"other").unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);
    let f = drv.lookup(ROOT, b"f").unwrap();
    let g = drv.lookup(ROOT, b"g").unwrap();
    let share_ino = host_ino(&n.path("share"));
    let parent_ino = host_ino(n.parent.as_path());

    // Host inode numbers mean nothing either: they are not FUSE node IDs.
    // Node IDs are handed out sequentially from 2: none of these was.
    for crafted in [0, 1000, 0x7fff_ffff, share_ino, parent_ino, u64::MAX] {
        assert_eq!(
            drv.getattr(crafted).map(drop),
            Err(libc::EBADF),
            "{crafted}"
        );
        assert_eq!(drv.lookup(crafted, b"secret").map(drop), Err(libc::EBADF));
        assert_eq!(drv.open(crafted, libc::O_RDONLY), Err(libc::EBADF));
        assert_eq!(drv.mkdir(crafted, b"d", 0o755).map(drop), Err(libc::EBADF));
        assert_eq!(drv.unlink(crafted, b"secret"), Err(libc::EBADF));
    }

    let fh = drv.open(f.nodeid, libc::O_RDONLY).unwrap();
    for crafted in [0, fh + 1, u64::MAX] {
        assert_eq!(drv.read(f.nodeid, crafted, 0, 4), Err(libc::EBADF));
    }
    // A handle only works with the inode it was opened for.
    assert_eq!(drv.read(g.nodeid, fh, 0, 4), Err(libc::EBADF));
    assert_eq!(drv.read(f.nodeid, fh, 0, 4).unwrap(), b"data");

    // The root cannot be forgotten.
    assert_eq!(drv.forget(ROOT, u64::MAX), 0);
    assert_eq!(drv.getattr(ROOT).unwrap().ino, share_ino);
    n.dev.reset();
    n.assert_outside_untouched();
}

#[test]
fn special_files_are_never_opened() {
    let mut n = Nested::new(FsConfig::default());
    let fifo = CString::new(n.path("share/fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: `fifo` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);

    // Opening a FIFO on the host would block the worker until a writer came.
    let f = drv.lookup(ROOT, b"fifo").unwrap();
    assert_eq!(f.attr.mode & libc::S_IFMT, libc::S_IFIFO);
    assert!(drv.open(f.nodeid, libc::O_RDONLY).is_err());
    assert!(drv.open(f.nodeid, libc::O_WRONLY).is_err());

    // O_TMPFILE would create an anonymous file through an "open".
    let tmpfile = libc::O_TMPFILE | libc::O_RDWR;
    assert_eq!(drv.open(ROOT, tmpfile), Err(libc::EOPNOTSUPP));

    let sda = libc::makedev(8, 0) as u32;
    let null = libc::makedev(1, 3) as u32;
    assert_eq!(
        drv.mknod(ROOT, b"blk", libc::S_IFBLK | 0o600, sda)
            .map(drop),
        Err(libc::EPERM)
    );
    assert_eq!(
        drv.mknod(ROOT, b"chr", libc::S_IFCHR | 0o666, null)
            .map(drop),
        Err(libc::EPERM)
    );
    assert!(!n.path("share/blk").exists() && !n.path("share/chr").exists());
    let made = drv.mknod(ROOT, b"fifo2", libc::S_IFIFO | 0o644, 0).unwrap();
    assert!(drv.open(made.nodeid, libc::O_RDONLY).is_err());

    if is_root() {
        // Overlayfs whiteouts (0:0 character devices) are allowed.
        let wh = drv.mknod(ROOT, b"wh", libc::S_IFCHR, 0).unwrap();
        assert_eq!(wh.attr.rdev, 0);
        // A device node the host put in the share is not opened either.
        host_mknod(
            &n.path("share/null"),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        );
        let dev_null = drv.lookup(ROOT, b"null").unwrap();
        assert_eq!(drv.open(dev_null.nodeid, libc::O_RDWR), Err(libc::EBADF));
    }
    n.dev.reset();
    n.assert_outside_untouched();
}

fn host_mknod(path: &Path, mode: u32, dev: libc::dev_t) {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `path` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mknod(path.as_ptr(), mode, dev) }, 0);
}

#[test]
fn create_flags_cannot_open_through_a_symlink() {
    // With O_PATH the kernel ignores O_CREAT|O_EXCL and follows a trailing
    // symlink: CREATE on an existing symlink would hand the guest a handle
    // to whatever the symlink points to on the host.
    let mut n = Nested::new(FsConfig::default());
    symlink(n.path("outside/target"), n.path("share/abs")).unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);
    for flags in [
        libc::O_PATH,
        libc::O_PATH | libc::O_RDONLY,
        libc::O_PATH | libc::O_EXCL,
    ] {
        assert_eq!(
            drv.create(ROOT, b"abs", 0o644, flags).map(drop),
            Err(libc::EINVAL),
            "create flags {flags:#x}"
        );
        assert_eq!(drv.open(ROOT, flags), Err(libc::EINVAL));
    }
    n.dev.reset();
    n.assert_outside_untouched();
}

/// Reads xattr `name` of `path` on the host (following symlinks).
fn host_getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for
    // its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn xattrs_through_a_symlink_stay_on_the_symlink() {
    let mut n = Nested::new(FsConfig {
        xattr: true,
        ..FsConfig::default()
    });
    let target = n.path("outside/target");
    let t = CString::new(target.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a value buffer of the given length.
    let set = unsafe {
        libc::setxattr(
            t.as_ptr(),
            c"user.secret".as_ptr(),
            b"hidden".as_ptr().cast(),
            6,
            0,
        )
    };
    assert_eq!(set, 0, "host xattr setup failed");
    symlink(&target, n.path("share/abs")).unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);
    let abs = drv.lookup(ROOT, b"abs").unwrap();

    assert!(drv.getxattr(abs.nodeid, b"user.secret", 64).is_err());
    // Linux refuses user.* attributes on symlinks themselves.
    assert!(drv.setxattr(abs.nodeid, b"user.planted", b"x").is_err());
    assert_eq!(host_getxattr(&target, "user.planted"), None);
    assert_eq!(host_getxattr(&target, "user.secret").unwrap(), b"hidden");
    n.dev.reset();
    n.assert_outside_untouched();
}

/// The VMM writes as root: a setuid file the guest makes in a share would
/// be a setuid-root file on the host. Neither create nor chmod gets the
/// bit there; a directory's setgid (group inheritance) is kept.
#[test]
fn guest_made_setuid_and_setgid_files_are_plain_on_the_host() {
    let mut n = Nested::new(FsConfig::default());
    let mem = test_mem();
    let share = n.parent.as_path().join("share");
    let mut drv = FuseDriver::mount(&mem, &mut n.dev);
    let (created, fh) = drv
        .create(ROOT, b"made-suid", 0o4755, libc::O_RDWR)
        .unwrap();
    drv.release(created.nodeid, fh).unwrap();
    let plain = drv.create(ROOT, b"chmodded", 0o755, libc::O_RDWR).unwrap();
    drv.release(plain.0.nodeid, plain.1).unwrap();
    let chmod = |mode| SetattrIn {
        valid: FATTR_MODE,
        mode,
        ..Default::default()
    };
    // As the kernel sends it (type bits included) and without them.
    drv.setattr(plain.0.nodeid, chmod(libc::S_IFREG | 0o6755))
        .unwrap();
    let reported = drv.setattr(plain.0.nodeid, chmod(0o4711)).unwrap();
    assert_eq!(reported.mode & 0o7777, 0o711);
    let dir = drv.mkdir(ROOT, b"group-dir", 0o2775).unwrap();
    drv.setattr(dir.nodeid, chmod(libc::S_IFDIR | 0o6775))
        .unwrap();
    n.dev.reset();

    let mode = |name: &str| fs::metadata(share.join(name)).unwrap().mode() & 0o7777;
    assert_eq!(mode("made-suid"), 0o755);
    assert_eq!(mode("chmodded"), 0o711);
    assert_eq!(mode("group-dir"), 0o2775);
}
