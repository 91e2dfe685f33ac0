//! A read-only share refuses every modifying operation with EROFS.

use std::fs;

use fuse_backend_rs::abi::fuse_abi::{
    FallocateIn, FsOptions, InitIn, InitOut, Opcode, Rename2In, SetattrIn, WriteIn,
    KERNEL_MINOR_VERSION, KERNEL_VERSION,
};
use vm_memory::ByteValued;

use super::client::{body, cname, obj, FATTR_MODE, FATTR_SIZE, ROOT};
use super::*;

/// Every entry of `dir` with its content (files) or `None` (others).
fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let content = meta.is_file().then(|| fs::read(e.path()).unwrap());
            (e.file_name().into_string().unwrap(), content, meta.mode())
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn read_only_share_refuses_modifications() {
    let config = FsConfig {
        read_only: true,
        xattr: true,
        writeback: true,
        ..FsConfig::default()
    };
    let (dir, mut dev) = share(config);
    fs::write(dir.as_path().join("f"), b"original").unwrap();
    fs::create_dir(dir.as_path().join("d")).unwrap();
    fs::create_dir(dir.as_path().join("d/empty")).unwrap();
    let before = snapshot(dir.as_path());
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let f = drv.lookup(ROOT, b"f").unwrap();
    let d = drv.lookup(ROOT, b"d").unwrap();
    let rofs: Result<(), i32> = Err(libc::EROFS);

    // Reading works.
    let fh = drv.open(f.nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(drv.read(f.nodeid, fh, 0, 64).unwrap(), b"original");
    let dh = drv.opendir(ROOT).unwrap();
    assert_eq!(drv.readdir(ROOT, dh).unwrap(), ["d", "f"]);
    assert_eq!(drv.access(f.nodeid, libc::R_OK), Ok(()));

    // Opening for writing or truncating does not.
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_WRONLY | libc::O_APPEND,
    ] {
        assert_eq!(
            drv.open(f.nodeid, flags).map(drop),
            rofs,
            "open flags {flags:#x}"
        );
    }
    assert_eq!(drv.access(f.nodeid, libc::W_OK), rofs);

    // Nor does anything that changes the tree, the data or the metadata.
    assert_eq!(drv.write(f.nodeid, fh, 0, b"changed").map(drop), rofs);
    assert_eq!(
        drv.create(ROOT, b"new", 0o644, libc::O_RDWR).map(drop),
        rofs
    );
    assert_eq!(drv.mkdir(ROOT, b"new", 0o755).map(drop), rofs);
    assert_eq!(
        drv.mknod(ROOT, b"new", libc::S_IFIFO | 0o644, 0).map(drop),
        rofs
    );
    assert_eq!(drv.symlink(ROOT, b"new", b"f").map(drop), rofs);
    assert_eq!(drv.link(f.nodeid, ROOT, b"new").map(drop), rofs);
    assert_eq!(drv.unlink(ROOT, b"f"), rofs);
    assert_eq!(drv.rmdir(d.nodeid, b"empty"), rofs);
    assert_eq!(drv.rename(ROOT, b"f", ROOT, b"g"), rofs);
    let rename2 = Rename2In {
        newdir: ROOT,
        flags: libc::RENAME_EXCHANGE,
        padding: 0,
    };
    let msg = body(&[rename2.as_slice(), &cname(b"f"), &cname(b"d")]);
    assert_eq!(drv.call(Opcode::Rename2, ROOT, &msg).ok().map(drop), rofs);
    for valid in [FATTR_MODE, FATTR_SIZE] {
        let attr = SetattrIn {
            valid,
            mode: 0o777,
            size: 0,
            ..Default::default()
        };
        assert_eq!(drv.setattr(f.nodeid, attr).map(drop), rofs);
    }
    assert_eq!(drv.setxattr(f.nodeid, b"user.x", b"v"), rofs);
    let removexattr = cname(b"user.x");
    assert_eq!(
        drv.call(Opcode::Removexattr, f.nodeid, &removexattr)
            .ok()
            .map(drop),
        rofs
    );
    let fallocate = FallocateIn {
        fh,
        offset: 0,
        length: 1 << 20,
        mode: 0,
        padding: 0,
    };
    assert_eq!(
        drv.call(Opcode::Fallocate, f.nodeid, fallocate.as_slice())
            .ok()
            .map(drop),
        rofs
    );
    // A write with a handle the guest made up is refused just the same.
    let write = WriteIn {
        fh: 77,
        size: 3,
        ..Default::default()
    };
    let msg = body(&[write.as_slice(), b"abc"]);
    assert_eq!(drv.call(Opcode::Write, f.nodeid, &msg).ok().map(drop), rofs);

    // Writeback caching is not negotiated for a read-only share.
    dev.reset();
    let mem = test_mem();
    let mut drv = FuseDriver::activate(&mem, &mut dev);
    assert!(!init_with_writeback(&mut drv));
    dev.reset();

    assert_eq!(snapshot(dir.as_path()), before);
    assert_eq!(snapshot(&dir.as_path().join("d")).len(), 1);
}

/// FUSE_INIT offering the writeback cache; whether the device took it.
fn init_with_writeback(drv: &mut FuseDriver) -> bool {
    let writeback = FsOptions::WRITEBACK_CACHE.bits() as u32;
    let init = InitIn {
        major: KERNEL_VERSION,
        minor: KERNEL_MINOR_VERSION,
        max_readahead: 0,
        flags: writeback,
    };
    let out: InitOut = obj(&drv.call(Opcode::Init, 0, init.as_slice()).ok().unwrap());
    out.flags & writeback != 0
}

#[test]
fn writeback_is_negotiated_only_when_configured() {
    for writeback in [false, true] {
        let (_dir, mut dev) = share(FsConfig {
            writeback,
            ..FsConfig::default()
        });
        let mem = test_mem();
        let mut drv = FuseDriver::activate(&mem, &mut dev);
        assert_eq!(init_with_writeback(&mut drv), writeback);
        dev.reset();
    }
}
