//! The FUSE operations a guest mount needs, end to end.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use fuse_backend_rs::abi::fuse_abi::{FsOptions, Opcode, ReadIn, KERNEL_VERSION};
use vm_memory::ByteValued;

use super::client::{message, parse_reply, ROOT};
use super::*;

#[test]
fn device_identity_and_config_space() {
    let (_dir, dev) = share(FsConfig::default());
    assert_eq!(dev.device_type(), 26);
    assert_eq!(dev.tag(), "share");
    assert_eq!(
        dev.queue_max_sizes(),
        &[HIPRIO_QUEUE_SIZE, REQUEST_QUEUE_SIZE]
    );
    let mut config = [0xffu8; 40];
    dev.read_config(0, &mut config);
    assert_eq!(&config[..5], b"share");
    assert!(config[5..36].iter().all(|&b| b == 0));
    assert_eq!(u32::from_le_bytes(config[36..40].try_into().unwrap()), 1);
    let mut tail = [0xffu8; 4];
    dev.read_config(38, &mut tail);
    assert_eq!(tail, [0, 0, 0xff, 0xff]);
}

#[test]
fn tag_and_directory_are_validated() {
    let dir = TempDir::new_with_prefix("/tmp/vmrun-fs-").unwrap();
    let path = dir.as_path().to_path_buf();
    let long = "x".repeat(MAX_TAG_LEN + 1);
    for tag in ["", long.as_str(), "a\0b"] {
        assert!(
            matches!(
                FsDevice::new(tag, path.clone(), FsConfig::default()),
                Err(FsError::InvalidTag { .. })
            ),
            "{tag:?}"
        );
    }
    let max = "y".repeat(MAX_TAG_LEN);
    let dev = FsDevice::new(&max, path.clone(), FsConfig::default()).unwrap();
    let mut config = [0u8; 36];
    dev.read_config(0, &mut config);
    assert_eq!(&config[..], max.as_bytes());

    let file = path.join("file");
    fs::write(&file, b"x").unwrap();
    assert!(matches!(
        FsDevice::new("t", file, FsConfig::default()),
        Err(FsError::NotADirectory(_))
    ));
    assert!(matches!(
        FsDevice::new("t", path.join("missing"), FsConfig::default()),
        Err(FsError::SharedDir { .. })
    ));
    // A symlinked share is resolved once, at creation.
    let link = path.join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let dev = FsDevice::new("t", link, FsConfig::default()).unwrap();
    assert_eq!(dev.shared_dir(), path.canonicalize().unwrap());
}

#[test]
fn init_lookup_getattr_and_read() {
    let (dir, mut dev) = share(FsConfig::default());
    fs::write(dir.as_path().join("hello.txt"), b"hello, guest\n").unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::activate(&mem, &mut dev);
    let init = drv.init();
    assert_eq!(init.major, KERNEL_VERSION);
    assert!(init.max_write > 0);

    let root = drv.getattr(ROOT).unwrap();
    assert_eq!(root.ino, host_ino(dir.as_path()));
    assert_eq!(root.mode & libc::S_IFMT, libc::S_IFDIR);

    let entry = drv.lookup(ROOT, b"hello.txt").unwrap();
    assert_ne!(entry.nodeid, ROOT);
    assert_eq!(entry.attr.size, 13);
    assert_eq!(entry.attr.ino, host_ino(&dir.as_path().join("hello.txt")));
    assert_eq!(entry.entry_valid, 1, "default cache policy: 1 s timeouts");
    assert_eq!(drv.getattr(entry.nodeid).unwrap().size, 13);
    assert_eq!(drv.lookup(ROOT, b"missing").map(drop), Err(libc::ENOENT));

    let fh = drv.open(entry.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(
        drv.read(entry.nodeid, fh, 0, 4096).unwrap(),
        b"hello, guest\n"
    );
    assert_eq!(drv.read(entry.nodeid, fh, 7, 5).unwrap(), b"guest");
    assert_eq!(drv.read(entry.nodeid, fh, 100, 10).unwrap(), b"");
    drv.release(entry.nodeid, fh).unwrap();
    assert_ne!(drv.irq.status() & 1, 0, "used-ring interrupt not raised");
    dev.reset();
}

/// A guest kernel offering MAX_PAGES gets 1 MiB requests: a 1 MiB write
/// and a 1 MiB read each take one round trip (Linux's virtio-fs sends each
/// `write(2)` in max_write pieces, so a 4 KiB max_write costs a VM exit per
/// page).
#[test]
fn init_negotiates_one_mib_requests() {
    const MIB: usize = 1 << 20;
    let (dir, mut dev) = share(FsConfig::default());
    let mem = test_mem();
    let mut drv = FuseDriver::activate(&mem, &mut dev);
    let offered = FsOptions::MAX_PAGES | FsOptions::BIG_WRITES | FsOptions::ASYNC_READ;
    let init = drv.init_with(offered.bits() as u32);
    assert_eq!(init.max_write as usize, MIB);
    assert_eq!(init.max_pages, 256);
    assert_ne!(init.flags & FsOptions::MAX_PAGES.bits() as u32, 0);

    let (entry, fh) = drv
        .create(ROOT, b"big", 0o600, libc::O_RDWR | libc::O_CREAT)
        .unwrap();
    let data: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    assert_eq!(drv.write(entry.nodeid, fh, 0, &data).unwrap() as usize, MIB);
    assert_eq!(fs::read(dir.as_path().join("big")).unwrap(), data);
    let read = ReadIn {
        fh,
        size: MIB as u32,
        ..Default::default()
    };
    let request = message(
        Opcode::Read as u32,
        drv.unique(),
        entry.nodeid,
        read.as_slice(),
    );
    let (_, out) = drv.send_raw(&request, 2 * MIB as u32);
    let reply = parse_reply(&out).ok().unwrap();
    assert!(reply == data, "1 MiB read returned {} bytes", reply.len());
    dev.reset();
}

#[test]
fn create_write_rename_unlink() {
    let (dir, mut dev) = share(FsConfig::default());
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);

    let (entry, fh) = drv
        .create(ROOT, b"new.txt", 0o640, libc::O_RDWR | libc::O_CREAT)
        .unwrap();
    let host = dir.as_path().join("new.txt");
    // The guest's mode minus the guest's umask (0o022).
    assert_eq!(
        fs::metadata(&host).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        drv.write(entry.nodeid, fh, 0, b"written by the guest")
            .unwrap(),
        20
    );
    assert_eq!(drv.write(entry.nodeid, fh, 8, b"BY").unwrap(), 2);
    assert_eq!(fs::read(&host).unwrap(), b"written BY the guest");
    assert_eq!(
        drv.read(entry.nodeid, fh, 0, 64).unwrap(),
        b"written BY the guest"
    );
    drv.release(entry.nodeid, fh).unwrap();
    // The handle is gone after release.
    assert_eq!(drv.read(entry.nodeid, fh, 0, 64), Err(libc::EBADF));

    drv.rename(ROOT, b"new.txt", ROOT, b"renamed.txt").unwrap();
    assert!(!host.exists());
    assert_eq!(
        fs::read(dir.as_path().join("renamed.txt")).unwrap(),
        b"written BY the guest"
    );
    assert_eq!(drv.lookup(ROOT, b"new.txt").map(drop), Err(libc::ENOENT));
    assert_eq!(
        drv.lookup(ROOT, b"renamed.txt").unwrap().nodeid,
        entry.nodeid
    );

    drv.unlink(ROOT, b"renamed.txt").unwrap();
    assert!(!dir.as_path().join("renamed.txt").exists());
    assert_eq!(drv.unlink(ROOT, b"renamed.txt"), Err(libc::ENOENT));
    dev.reset();
}

#[test]
fn mkdir_readdir_rmdir() {
    let (dir, mut dev) = share(FsConfig::default());
    fs::write(dir.as_path().join("a"), b"").unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);

    let sub = drv.mkdir(ROOT, b"sub", 0o755).unwrap();
    assert_eq!(sub.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert!(dir.as_path().join("sub").is_dir());
    let (file, fh) = drv
        .create(sub.nodeid, b"inner", 0o644, libc::O_WRONLY)
        .unwrap();
    drv.release(file.nodeid, fh).unwrap();
    assert!(dir.as_path().join("sub/inner").is_file());

    let dh = drv.opendir(ROOT).unwrap();
    // "." and ".." are not reported.
    assert_eq!(drv.readdir(ROOT, dh).unwrap(), ["a", "sub"]);
    let sdh = drv.opendir(sub.nodeid).unwrap();
    assert_eq!(drv.readdir(sub.nodeid, sdh).unwrap(), ["inner"]);

    assert_eq!(drv.rmdir(ROOT, b"sub"), Err(libc::ENOTEMPTY));
    drv.unlink(sub.nodeid, b"inner").unwrap();
    drv.rmdir(ROOT, b"sub").unwrap();
    assert!(!dir.as_path().join("sub").exists());
    assert_eq!(drv.mkdir(ROOT, b"a", 0o755).map(drop), Err(libc::EEXIST));
    dev.reset();
}

#[test]
fn symlink_and_readlink() {
    let (dir, mut dev) = share(FsConfig::default());
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let link = drv.symlink(ROOT, b"ln", b"target/../x").unwrap();
    assert_eq!(link.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        fs::read_link(dir.as_path().join("ln")).unwrap().as_os_str(),
        "target/../x"
    );
    assert_eq!(drv.readlink(link.nodeid).unwrap(), b"target/../x");
    // READLINK on something that is not a symlink.
    assert!(drv.readlink(ROOT).is_err());
    dev.reset();
}

#[test]
fn xattrs_when_enabled_and_not_otherwise() {
    let config = FsConfig {
        xattr: true,
        ..FsConfig::default()
    };
    let (dir, mut dev) = share(config);
    fs::write(dir.as_path().join("f"), b"").unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let f = drv.lookup(ROOT, b"f").unwrap();
    drv.setxattr(f.nodeid, b"user.vmrun", b"value").unwrap();
    assert_eq!(drv.getxattr(f.nodeid, b"user.vmrun", 64).unwrap(), b"value");
    // Size query: the reply carries the size only.
    let size = drv.getxattr(f.nodeid, b"user.vmrun", 0).unwrap();
    assert_eq!(u32::from_le_bytes(size[..4].try_into().unwrap()), 5);
    assert_eq!(drv.getxattr(f.nodeid, b"user.vmrun", 2), Err(libc::ERANGE));
    assert_eq!(drv.getxattr(f.nodeid, b"user.none", 64), Err(libc::ENODATA));
    dev.reset();

    let (dir, mut dev) = share(FsConfig::default());
    fs::write(dir.as_path().join("f"), b"").unwrap();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let f = drv.lookup(ROOT, b"f").unwrap();
    assert_eq!(
        drv.setxattr(f.nodeid, b"user.vmrun", b"v"),
        Err(libc::ENOSYS)
    );
    assert_eq!(drv.getxattr(f.nodeid, b"user.vmrun", 64), Err(libc::ENOSYS));
    dev.reset();
}

#[test]
fn forget_on_the_hiprio_queue() {
    let (dir, mut dev) = share(FsConfig::default());
    fs::write(dir.as_path().join("f"), b"").unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let f = drv.lookup(ROOT, b"f").unwrap();
    assert_eq!(drv.forget(f.nodeid, 1), 0, "FORGET has no reply");
    // The inode number is no longer valid once its lookup count drops to 0.
    assert_eq!(drv.getattr(f.nodeid).map(drop), Err(libc::EBADF));
    assert!(drv.lookup(ROOT, b"f").is_ok());
    dev.reset();
}

#[test]
fn cache_policy_sets_timeouts() {
    for (cache, secs) in [
        (FsCachePolicy::Never, 0),
        (FsCachePolicy::Auto, 1),
        (FsCachePolicy::Always, 86400),
    ] {
        let (dir, mut dev) = share(FsConfig {
            cache,
            ..FsConfig::default()
        });
        fs::write(dir.as_path().join("f"), b"").unwrap();
        let mem = test_mem();
        let mut drv = FuseDriver::mount(&mem, &mut dev);
        let f = drv.lookup(ROOT, b"f").unwrap();
        assert_eq!((f.entry_valid, f.attr_valid), (secs, secs), "{cache:?}");
        dev.reset();
    }
}

#[test]
fn auto_keeps_file_data_across_opens_only_where_the_kernel_invalidates_changes() {
    const KEEP_CACHE: u32 = 1 << 1; // FOPEN_KEEP_CACHE
    const DIRECT_IO: u32 = 1 << 0; // FOPEN_DIRECT_IO
    let auto_inval = FsOptions::AUTO_INVAL_DATA.bits() as u32;
    // (policy, kernel offers AUTO_INVAL_DATA, server takes it, open flags)
    for (cache, offered, taken, open_flags) in [
        (FsCachePolicy::Auto, true, true, KEEP_CACHE),
        // Without invalidation on change, cached data would go stale.
        (FsCachePolicy::Auto, false, false, 0),
        (FsCachePolicy::Never, true, false, DIRECT_IO),
        (FsCachePolicy::Always, false, false, KEEP_CACHE),
    ] {
        let (dir, mut dev) = share(FsConfig {
            cache,
            ..FsConfig::default()
        });
        fs::write(dir.as_path().join("f"), b"data").unwrap();
        let mem = test_mem();
        let mut drv = FuseDriver::activate(&mem, &mut dev);
        let init = drv.init_with(if offered { auto_inval } else { 0 });
        assert_eq!(init.flags & auto_inval != 0, taken, "{cache:?}");
        let f = drv.lookup(ROOT, b"f").unwrap();
        let out = drv.open_out(f.nodeid, libc::O_RDONLY).unwrap();
        assert_eq!(
            out.open_flags & (KEEP_CACHE | DIRECT_IO),
            open_flags,
            "{cache:?}, AUTO_INVAL_DATA offered: {offered}"
        );
        dev.reset();
    }
}

#[test]
fn several_devices_serve_their_own_directories() {
    let (dir_a, mut dev_a) = share(FsConfig::default());
    let (dir_b, mut dev_b) = share(FsConfig::default());
    fs::write(dir_a.as_path().join("only-in-a"), b"A").unwrap();
    fs::write(dir_b.as_path().join("only-in-b"), b"B").unwrap();
    let mem_a = test_mem();
    let mem_b = test_mem();
    let mut a = FuseDriver::mount(&mem_a, &mut dev_a);
    let mut b = FuseDriver::mount(&mem_b, &mut dev_b);
    assert!(a.lookup(ROOT, b"only-in-a").is_ok());
    assert_eq!(a.lookup(ROOT, b"only-in-b").map(drop), Err(libc::ENOENT));
    assert!(b.lookup(ROOT, b"only-in-b").is_ok());
    assert_eq!(b.lookup(ROOT, b"only-in-a").map(drop), Err(libc::ENOENT));
    a.mkdir(ROOT, b"made-by-a", 0o700).unwrap();
    assert!(dir_a.as_path().join("made-by-a").is_dir());
    assert!(!dir_b.as_path().join("made-by-a").exists());
    dev_a.reset();
    dev_b.reset();
}

#[test]
fn reset_forgets_inodes_and_reactivation_works() {
    let (dir, mut dev) = share(FsConfig::default());
    fs::write(dir.as_path().join("f"), b"data").unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let f = drv.lookup(ROOT, b"f").unwrap();
    let fh = drv.open(f.nodeid, libc::O_RDONLY).unwrap();
    dev.reset();

    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    assert_eq!(drv.getattr(f.nodeid).map(drop), Err(libc::EBADF));
    assert_eq!(drv.read(f.nodeid, fh, 0, 4), Err(libc::EBADF));
    let f = drv.lookup(ROOT, b"f").unwrap();
    let fh = drv.open(f.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(drv.read(f.nodeid, fh, 0, 4).unwrap(), b"data");
    // Lookups before FUSE_INIT on a fresh device find no root.
    dev.reset();
    let mem = test_mem();
    let mut drv = FuseDriver::activate(&mem, &mut dev);
    assert_eq!(drv.lookup(ROOT, b"f").map(drop), Err(libc::EBADF));
    dev.reset();
}

/// The calling thread's umask, read without changing it.
fn current_umask() -> u32 {
    let status = fs::read_to_string("/proc/thread-self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn worker_umask_does_not_leak_into_the_vmm() {
    // The passthrough sets umask 0 at FUSE_INIT so that guest modes apply
    // verbatim; the VMM's own umask must survive that.
    if current_umask() == 0 {
        // SAFETY: umask has no preconditions.
        unsafe { libc::umask(0o022) };
    }
    let vmm_umask = current_umask();
    let (dir, mut dev) = share(FsConfig::default());
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let create = fuse_backend_rs::abi::fuse_abi::CreateIn {
        flags: libc::O_RDWR as u32,
        mode: libc::S_IFREG | 0o666,
        umask: 0,
        fuse_flags: 0,
    };
    let msg = super::client::body(&[
        vm_memory::ByteValued::as_slice(&create),
        &super::client::cname(b"f"),
    ]);
    drv.call(fuse_backend_rs::abi::fuse_abi::Opcode::Create, ROOT, &msg)
        .ok()
        .unwrap();
    let mode = fs::metadata(dir.as_path().join("f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o666,
        "the guest's mode was masked on the host"
    );
    assert_eq!(current_umask(), vmm_umask);
    // Nor does it leak to other threads.
    let other = std::thread::spawn(current_umask).join().unwrap();
    assert_eq!(other, vmm_umask);
    dev.reset();
}
