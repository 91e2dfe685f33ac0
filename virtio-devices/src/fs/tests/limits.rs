//! The inode and handle caps: past either, requests that would add one fail
//! with ENFILE, and the guest gets room back by forgetting and releasing.
//! Each test also counts the descriptors the VMM holds beneath the share
//! (`/proc/self/fd`), which must be exactly the guest's inodes and handles:
//! a refused request leaves none behind.

use std::fs;

use fuse_backend_rs::abi::fuse_abi::{InitIn, Opcode, KERNEL_MINOR_VERSION, KERNEL_VERSION};
use vm_memory::ByteValued;

use super::client::{message, ROOT};
use super::*;

const ENFILE: i32 = libc::ENFILE;

fn limited(max_inodes: usize, max_handles: usize) -> (TempDir, FsDevice) {
    share(FsConfig {
        max_inodes,
        max_handles,
        ..FsConfig::default()
    })
}

/// Descriptors of this process that refer to something beneath `dir` (not
/// `dir` itself, which the passthrough keeps open as the root). Other tests
/// use other directories, so their descriptors never count here.
fn host_fds(dir: &Path) -> usize {
    let root = dir.canonicalize().unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target != &root && target.starts_with(&root))
        .count()
}

fn files(dir: &TempDir, names: &[&str]) {
    for name in names {
        fs::write(dir.as_path().join(name), name.as_bytes()).unwrap();
    }
}

#[test]
fn lookups_past_the_inode_cap_fail_until_forgotten() {
    let (dir, mut dev) = limited(3, 8);
    files(&dir, &["a", "b", "c", "d", "e"]);
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);

    let a = drv.lookup(ROOT, b"a").unwrap().nodeid;
    assert_eq!(drv.lookup(ROOT, b"a").unwrap().nodeid, a);
    let b = drv.lookup(ROOT, b"b").unwrap().nodeid;
    let c = drv.lookup(ROOT, b"c").unwrap().nodeid;
    assert_eq!(host_fds(dir.as_path()), 3);
    assert_eq!(dev.guest_holds(), (3, 0));
    // Full: a new inode is refused, again and again, and costs nothing.
    for _ in 0..20 {
        assert_eq!(drv.lookup(ROOT, b"d").map(drop), Err(ENFILE));
    }
    assert_eq!(host_fds(dir.as_path()), 3);
    // What the guest holds stays reachable; the root is not counted.
    assert_eq!(drv.lookup(ROOT, b"a").unwrap().nodeid, a);
    assert_eq!(drv.lookup(ROOT, b".").unwrap().nodeid, ROOT);
    assert_eq!(drv.lookup(ROOT, b"..").unwrap().nodeid, ROOT);
    assert_eq!(drv.getattr(c).unwrap().size, 1);

    // `a` has three lookups: two forgotten leave it alive.
    drv.forget(a, 2);
    assert_eq!(drv.lookup(ROOT, b"d").map(drop), Err(ENFILE));
    drv.forget(a, 1);
    assert_eq!(host_fds(dir.as_path()), 2);
    let d = drv.lookup(ROOT, b"d").unwrap().nodeid;
    assert_eq!(drv.lookup(ROOT, b"e").map(drop), Err(ENFILE));

    // A batch forget frees each inode it takes every lookup of; more than
    // there are is as good as all of them, and unknown inodes are ignored.
    drv.batch_forget(&[(b, 1), (c, 7), (0xdead, 1)]);
    assert_eq!(host_fds(dir.as_path()), 1);
    drv.lookup(ROOT, b"e").unwrap();
    drv.lookup(ROOT, b"a").unwrap();
    assert_eq!(drv.lookup(ROOT, b"b").map(drop), Err(ENFILE));
    assert_eq!(host_fds(dir.as_path()), 3);
    // A forgotten inode is gone for the guest too.
    drv.forget(d, 1);
    assert_eq!(drv.getattr(d).map(drop), Err(libc::EBADF));
    dev.reset();
}

#[test]
fn every_entry_handed_out_counts_as_a_lookup() {
    let (dir, mut dev) = limited(4, 8);
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);

    let d = drv.mkdir(ROOT, b"d", 0o755).unwrap().nodeid;
    let (f, fh) = drv
        .create(ROOT, b"f", 0o644, libc::O_RDWR | libc::O_CREAT)
        .unwrap();
    let p = drv
        .mknod(ROOT, b"p", libc::S_IFIFO | 0o644, 0)
        .unwrap()
        .nodeid;
    let s = drv.symlink(ROOT, b"s", b"f").unwrap().nodeid;
    // A link hands out the inode it links: a second lookup, no new inode.
    assert_eq!(drv.link(f.nodeid, ROOT, b"g").unwrap().nodeid, f.nodeid);
    assert_eq!(host_fds(dir.as_path()), 4 + 1);
    assert_eq!(dev.guest_holds(), (4, 1));

    // Full: nothing new is made on the host.
    assert_eq!(drv.mkdir(ROOT, b"d2", 0o755).map(drop), Err(ENFILE));
    assert_eq!(
        drv.create(ROOT, b"f2", 0o644, libc::O_RDWR | libc::O_CREAT)
            .map(drop),
        Err(ENFILE)
    );
    assert_eq!(
        drv.mknod(ROOT, b"p2", libc::S_IFIFO | 0o644, 0).map(drop),
        Err(ENFILE)
    );
    assert_eq!(drv.symlink(ROOT, b"s2", b"f").map(drop), Err(ENFILE));
    for name in ["d2", "f2", "p2", "s2"] {
        assert!(
            fs::symlink_metadata(dir.as_path().join(name)).is_err(),
            "{name} was made"
        );
    }
    assert_eq!(host_fds(dir.as_path()), 4 + 1);
    // A link still works: its inode is one the guest holds.
    assert_eq!(drv.link(f.nodeid, ROOT, b"h").unwrap().nodeid, f.nodeid);

    // `f` now has three lookups (create, two links): forgetting two keeps it.
    drv.release(f.nodeid, fh).unwrap();
    drv.forget(f.nodeid, 2);
    assert_eq!(drv.mkdir(ROOT, b"d2", 0o755).map(drop), Err(ENFILE));
    drv.forget(f.nodeid, 1);
    let d2 = drv.mkdir(ROOT, b"d2", 0o755).unwrap().nodeid;
    drv.batch_forget(&[(d, 1), (p, 1), (s, 1), (d2, 1)]);
    assert_eq!(host_fds(dir.as_path()), 0);
    dev.reset();
}

#[test]
fn handles_past_the_cap_fail_until_released() {
    let (dir, mut dev) = limited(16, 2);
    files(&dir, &["f"]);
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let f = drv.lookup(ROOT, b"f").unwrap().nodeid;

    let h1 = drv.open(f, libc::O_RDONLY).unwrap();
    let dh = drv.opendir(ROOT).unwrap();
    assert_eq!(drv.open(f, libc::O_RDONLY), Err(ENFILE));
    assert_eq!(drv.opendir(ROOT), Err(ENFILE));
    assert_eq!(
        drv.create(ROOT, b"new", 0o644, libc::O_RDWR | libc::O_CREAT)
            .map(drop),
        Err(ENFILE)
    );
    assert!(!dir.as_path().join("new").exists());
    // f's inode and its open file (the directory handle is the root's).
    assert_eq!(host_fds(dir.as_path()), 2);
    assert_eq!(dev.guest_holds(), (1, 2));
    // What is open keeps working.
    assert_eq!(drv.read(f, h1, 0, 16).unwrap(), b"f");

    // Releasing a handle that is not there frees nothing.
    assert_eq!(drv.release(f, 0xbad), Err(libc::EBADF));
    assert_eq!(drv.open(f, libc::O_RDONLY), Err(ENFILE));
    drv.release(f, h1).unwrap();
    let h2 = drv.open(f, libc::O_RDONLY).unwrap();
    assert_eq!(drv.opendir(ROOT), Err(ENFILE));
    let release = fuse_backend_rs::abi::fuse_abi::ReleaseIn {
        fh: dh,
        ..Default::default()
    };
    assert_eq!(
        drv.call(Opcode::Releasedir, ROOT, release.as_slice()).error,
        0
    );
    let (created, h3) = drv
        .create(ROOT, b"new", 0o644, libc::O_RDWR | libc::O_CREAT)
        .unwrap();
    assert_eq!(host_fds(dir.as_path()), 2 + 2);
    drv.release(f, h2).unwrap();
    drv.release(created.nodeid, h3).unwrap();
    drv.batch_forget(&[(f, 1), (created.nodeid, 1)]);
    assert_eq!(host_fds(dir.as_path()), 0);
    dev.reset();
}

#[test]
fn readdirplus_hands_out_entries_up_to_the_cap() {
    let (dir, mut dev) = limited(3, 8);
    let names = ["a", "b", "c", "d", "e"];
    files(&dir, &names);
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let dh = drv.opendir(ROOT).unwrap();

    let first = drv.readdirplus(ROOT, dh, 0, 8192).unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    // Each entry is a lookup the guest holds.
    assert_eq!(host_fds(dir.as_path()), 3);
    assert_eq!(dev.guest_holds(), (3, 1));
    let unlisted: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| first.iter().all(|(name, _, _)| name != n))
        .collect();
    assert_eq!(
        drv.lookup(ROOT, unlisted[0].as_bytes()).map(drop),
        Err(ENFILE)
    );
    // Where nothing fits the guest hears why, not an end of directory.
    let after = first[2].2;
    assert_eq!(drv.readdirplus(ROOT, dh, after, 8192), Err(ENFILE));
    // Entries it holds are listed again.
    let again = drv.readdirplus(ROOT, dh, 0, 8192).unwrap();
    assert_eq!(again, first);
    assert_eq!(host_fds(dir.as_path()), 3);

    // An entry that does not fit the buffer is not a lookup.
    let (name, nodeid, _) = &first[0];
    drv.forget(*nodeid, 2);
    assert_eq!(host_fds(dir.as_path()), 2);
    // Room for a few names from getdents, not for one entry with its
    // attributes.
    let tiny = drv.readdirplus(ROOT, dh, 0, 96).unwrap();
    assert!(tiny.is_empty());
    assert_eq!(host_fds(dir.as_path()), 2);
    // With room again, the listing goes on.
    let next = drv.readdirplus(ROOT, dh, after, 8192).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(drv.lookup(ROOT, name.as_bytes()).map(drop), Err(ENFILE));
    dev.reset();
}

/// CREATE without O_EXCL of a name that exists opens it; when that open
/// fails, the lookup it made must not stay behind (the passthrough's own
/// CREATE keeps it: a descriptor per call that no FORGET frees).
#[test]
fn create_of_an_existing_name_leaves_nothing_behind() {
    let (dir, mut dev) = limited(4, 4);
    for i in 0..8 {
        fs::create_dir(dir.as_path().join(format!("dir{i}"))).unwrap();
    }
    fs::write(dir.as_path().join("f"), b"content").unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);

    for i in 0..8 {
        let name = format!("dir{i}");
        assert_eq!(
            drv.create(ROOT, name.as_bytes(), 0o644, libc::O_RDWR | libc::O_CREAT)
                .map(drop),
            Err(libc::EISDIR)
        );
    }
    assert_eq!(host_fds(dir.as_path()), 0);

    // An existing file is opened (and truncated if asked), and counted.
    let (entry, fh) = drv
        .create(
            ROOT,
            b"f",
            0o600,
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
        )
        .unwrap();
    assert_eq!(entry.nodeid, drv.lookup(ROOT, b"f").unwrap().nodeid);
    assert_eq!(fs::read(dir.as_path().join("f")).unwrap(), b"");
    assert_eq!(drv.write(entry.nodeid, fh, 0, b"new").unwrap(), 3);
    assert_eq!(fs::read(dir.as_path().join("f")).unwrap(), b"new");
    assert_eq!(
        drv.create(
            ROOT,
            b"f",
            0o600,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL
        )
        .map(drop),
        Err(libc::EEXIST)
    );
    assert_eq!(host_fds(dir.as_path()), 1 + 1);
    assert_eq!(dev.guest_holds(), (1, 1));
    drv.release(entry.nodeid, fh).unwrap();
    drv.forget(entry.nodeid, 2);
    assert_eq!(host_fds(dir.as_path()), 0);
    dev.reset();
}

#[test]
fn destroy_frees_every_inode_and_handle() {
    let (dir, mut dev) = limited(2, 1);
    files(&dir, &["a", "b", "c"]);
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let a = drv.lookup(ROOT, b"a").unwrap().nodeid;
    drv.lookup(ROOT, b"b").unwrap();
    drv.open(a, libc::O_RDONLY).unwrap();
    assert_eq!(drv.lookup(ROOT, b"c").map(drop), Err(ENFILE));
    assert_eq!(host_fds(dir.as_path()), 3);

    // The server sends no reply to DESTROY.
    let unique = drv.unique();
    drv.send_raw(&message(Opcode::Destroy as u32, unique, ROOT, &[]), OUT_LEN);
    assert_eq!(host_fds(dir.as_path()), 0);
    assert_eq!(dev.guest_holds(), (0, 0));
    let init = InitIn {
        major: KERNEL_VERSION,
        minor: KERNEL_MINOR_VERSION,
        max_readahead: 128 * 1024,
        flags: 0,
    };
    assert_eq!(drv.call(Opcode::Init, 0, init.as_slice()).error, 0);
    let c = drv.lookup(ROOT, b"c").unwrap().nodeid;
    drv.lookup(ROOT, b"a").unwrap();
    drv.open(c, libc::O_RDONLY).unwrap();
    assert_eq!(host_fds(dir.as_path()), 3);
    dev.reset();
}
