//! Malformed and oversized requests get an errno or no reply; the device
//! keeps serving and never allocates or transfers without bound.

use std::fs;

use fuse_backend_rs::abi::fuse_abi::*;
use vm_memory::ByteValued;

use super::client::{body, cname, message, obj, parse_reply, ROOT};
use super::*;

const MIB: usize = 1 << 20;

/// `message` with `InHeader::len` replaced.
fn with_len(mut msg: Vec<u8>, len: u32) -> Vec<u8> {
    msg[..4].copy_from_slice(&len.to_le_bytes());
    msg
}

/// Sends raw bytes; returns the errno of the reply (positive) or `None` if
/// the device returned the chain without a reply.
fn raw_errno(drv: &mut FuseDriver, request: &[u8]) -> Option<i32> {
    let (used, out) = drv.send_raw(request, OUT_LEN);
    (used > 0).then(|| -parse_reply(&out).error)
}

fn assert_still_serving(drv: &mut FuseDriver) {
    assert_eq!(
        drv.getattr(ROOT).unwrap().mode & libc::S_IFMT,
        libc::S_IFDIR,
        "device stopped serving"
    );
}

#[test]
fn malformed_messages_get_an_errno() {
    let (_dir, mut dev) = share(FsConfig::default());
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let lookup = |unique| message(Opcode::Lookup as u32, unique, ROOT, &cname(b"x"));

    // Shorter than a header.
    assert_eq!(raw_errno(&mut drv, &[1, 0, 0, 0, 1, 0]), Some(libc::EINVAL));
    // Header length below the header size, too small for the body, larger
    // than the body that follows, and absurdly large.
    assert_eq!(
        raw_errno(&mut drv, &with_len(lookup(2), 8)),
        Some(libc::EINVAL)
    );
    assert_eq!(
        raw_errno(&mut drv, &with_len(lookup(3), 40)),
        Some(libc::EINVAL)
    );
    assert_eq!(
        raw_errno(&mut drv, &with_len(lookup(4), 4000)),
        Some(libc::EINVAL)
    );
    assert_eq!(
        raw_errno(&mut drv, &with_len(lookup(5), u32::MAX)),
        Some(libc::ENOMEM)
    );
    // A name without its NUL.
    let unterminated = message(Opcode::Lookup as u32, 6, ROOT, b"abc");
    assert_eq!(raw_errno(&mut drv, &unterminated), Some(libc::EINVAL));
    // Fixed-size arguments missing.
    let short_open = message(Opcode::Open as u32, 7, ROOT, &[0u8; 3]);
    assert_eq!(raw_errno(&mut drv, &short_open), Some(libc::EINVAL));
    // An xattr whose declared size does not match its value.
    let setxattr = SetxattrIn {
        size: 100,
        flags: 0,
    };
    let bad_xattr = message(
        Opcode::Setxattr as u32,
        8,
        ROOT,
        &body(&[setxattr.as_slice(), &cname(b"user.x"), b"short"]),
    );
    assert_eq!(raw_errno(&mut drv, &bad_xattr), Some(libc::EINVAL));
    // Unknown opcodes, including the holes in the numbering that the
    // server's opcode enum has no variant for.
    for opcode in [0, 7, 19, 47, 50, 51, 4096, 0x1a00_0000, u32::MAX] {
        let msg = message(opcode, 9, ROOT, &[0u8; 64]);
        assert_eq!(
            raw_errno(&mut drv, &msg),
            Some(libc::ENOSYS),
            "opcode {opcode}"
        );
    }
    // DAX mapping requests: there is no DAX window.
    let setup = message(Opcode::SetupMapping as u32, 10, ROOT, &[0u8; 40]);
    assert_eq!(raw_errno(&mut drv, &setup), Some(libc::EINVAL));
    // FUSE protocol versions: too old is refused, too new is negotiated down.
    let old = InitIn {
        major: 6,
        ..Default::default()
    };
    let msg = message(Opcode::Init as u32, 11, 0, old.as_slice());
    assert_eq!(raw_errno(&mut drv, &msg), Some(libc::EPROTO));
    let new = InitIn {
        major: 8,
        ..Default::default()
    };
    let reply = drv.call(Opcode::Init, 0, new.as_slice()).ok().unwrap();
    assert_eq!(obj::<InitOut>(&reply).major, KERNEL_VERSION);
    assert_still_serving(&mut drv);
    dev.reset();
}

#[test]
fn chains_without_room_for_a_reply() {
    let (_dir, mut dev) = share(FsConfig::default());
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let msg = message(
        Opcode::Getattr as u32,
        20,
        ROOT,
        GetattrIn::default().as_slice(),
    );
    drv.mem_write(&msg);
    let len = msg.len() as u32;
    let outside = MEM_SIZE as u64;

    // No writable buffer, or one too small for even an error header.
    assert_eq!(drv.submit(REQUEST, &[(IN_ADDR, len, false)]), 0);
    assert_eq!(
        drv.submit(REQUEST, &[(IN_ADDR, len, false), (OUT_ADDR, 4, true)]),
        0
    );
    // Reply buffers outside guest memory, or running off its end.
    assert_eq!(
        drv.submit(REQUEST, &[(IN_ADDR, len, false), (outside, 4096, true)]),
        0
    );
    assert_eq!(
        drv.submit(REQUEST, &[(IN_ADDR, len, false), (outside - 8, 4096, true)]),
        0
    );
    assert_eq!(
        drv.submit(
            REQUEST,
            &[(IN_ADDR, len, false), (OUT_ADDR, u32::MAX, true)]
        ),
        0
    );
    // A chain of more than 4 GiB is cut by the queue before its reply
    // buffer: nothing to answer into.
    assert_eq!(
        drv.submit(
            REQUEST,
            &[(IN_ADDR, u32::MAX, false), (OUT_ADDR, OUT_LEN, true)]
        ),
        0
    );
    // A request outside guest memory gets an error reply.
    for (addr, req_len) in [(outside, len), (u64::MAX - 16, len), (IN_ADDR, 0xf000_0000)] {
        let used = drv.submit(
            REQUEST,
            &[(addr, req_len, false), (OUT_ADDR, OUT_LEN, true)],
        );
        assert_eq!(used, 16);
        let reply = parse_reply(&drv.read_mem(OUT_ADDR, 16));
        assert_eq!(reply.error, -libc::EINVAL);
    }
    // Requests on the hiprio queue are served the same way.
    let used = drv.submit(HIPRIO, &[(IN_ADDR, len, false), (OUT_ADDR, OUT_LEN, true)]);
    assert_eq!(parse_reply(&drv.read_mem(OUT_ADDR, used as usize)).error, 0);
    // BATCH_FORGET of unknown nodes: no reply; an absurd count: an errno.
    let forget = BatchForgetIn { count: 2, dummy: 0 };
    let one = ForgetOne {
        nodeid: 12345,
        nlookup: 1,
    };
    let batch = message(
        Opcode::BatchForget as u32,
        21,
        0,
        &body(&[forget.as_slice(), one.as_slice(), one.as_slice()]),
    );
    drv.mem_write(&batch);
    assert_eq!(
        drv.submit(HIPRIO, &[(IN_ADDR, batch.len() as u32, false)]),
        0
    );
    let huge = BatchForgetIn {
        count: u32::MAX,
        dummy: 0,
    };
    let batch = message(Opcode::BatchForget as u32, 22, 0, huge.as_slice());
    assert_eq!(raw_errno(&mut drv, &batch), Some(libc::EINVAL));
    assert_still_serving(&mut drv);
    dev.reset();
}

#[test]
fn oversized_reads_and_writes_are_bounded() {
    let (dir, mut dev) = share(FsConfig {
        xattr: true,
        ..FsConfig::default()
    });
    let big = dir.as_path().join("big");
    fs::write(&big, vec![0x5au8; 3 * MIB]).unwrap();
    let mem = test_mem();
    let mut drv = FuseDriver::mount(&mem, &mut dev);
    let f = drv.lookup(ROOT, b"big").unwrap();
    let fh = drv.open(f.nodeid, libc::O_RDWR).unwrap();

    // A read larger than max_pages is cut to 1 MiB...
    let read = ReadIn {
        fh,
        size: 2 * MIB as u32,
        ..Default::default()
    };
    let msg = message(Opcode::Read as u32, 30, f.nodeid, read.as_slice());
    let (used, out) = drv.send_raw(&msg, 4 * MIB as u32);
    let reply = parse_reply(&out);
    assert_eq!((reply.error, reply.data.len()), (0, MIB));
    assert_eq!(used as usize, MIB + 16);
    // ...and one larger than the reply buffer fails.
    let huge = ReadIn {
        size: u32::MAX,
        ..read
    };
    let msg = message(Opcode::Read as u32, 31, f.nodeid, huge.as_slice());
    assert!(raw_errno(&mut drv, &msg).is_some_and(|e| e != 0));

    // A write claiming more than it carries writes what it carries.
    let write = WriteIn {
        fh,
        size: u32::MAX,
        ..Default::default()
    };
    let reply = drv
        .call(
            Opcode::Write,
            f.nodeid,
            &body(&[write.as_slice(), &[1u8; 100]]),
        )
        .ok()
        .unwrap();
    assert_eq!(obj::<WriteOut>(&reply).size, 100);
    // A write whose chain carries 3 MiB (header length notwithstanding)
    // writes at most 1 MiB.
    let write = WriteIn {
        fh,
        size: 3 * MIB as u32,
        ..Default::default()
    };
    let mut msg = message(Opcode::Write as u32, 32, f.nodeid, write.as_slice());
    msg.resize(msg.len() + 3 * MIB, 2);
    let (_, out) = drv.send_raw(&msg, OUT_LEN);
    let reply = parse_reply(&out);
    assert_eq!(reply.error, 0);
    assert_eq!(obj::<WriteOut>(&reply.data).size as usize, MIB);
    let content = fs::read(&big).unwrap();
    assert_eq!(content.len(), 3 * MIB);
    assert!(content[..MIB].iter().all(|&b| b == 2));
    assert!(content[MIB..].iter().all(|&b| b == 0x5a));

    // Directory and xattr buffers the guest sizes at 4 GiB.
    let dh = drv.opendir(ROOT).unwrap();
    let readdir = ReadIn {
        fh: dh,
        size: u32::MAX,
        ..Default::default()
    };
    let msg = message(Opcode::Readdir as u32, 33, ROOT, readdir.as_slice());
    assert_eq!(raw_errno(&mut drv, &msg), Some(libc::ENOMEM));
    drv.setxattr(f.nodeid, b"user.k", b"v").unwrap();
    assert_eq!(drv.getxattr(f.nodeid, b"user.k", u32::MAX).unwrap(), b"v");
    let list = GetxattrIn {
        size: u32::MAX,
        padding: 0,
    };
    let names = drv
        .call(Opcode::Listxattr, f.nodeid, list.as_slice())
        .ok()
        .unwrap();
    assert!(names.windows(7).any(|w| w == b"user.k\0"));

    // An ioctl whose input claims 4 GiB (the server would allocate it).
    let ioctl = IoctlIn {
        fh,
        in_size: u32::MAX,
        ..Default::default()
    };
    let mut msg = message(Opcode::Ioctl as u32, 34, f.nodeid, ioctl.as_slice());
    msg.resize(msg.len() + 3 * MIB, 0);
    assert_eq!(raw_errno(&mut drv, &msg), Some(libc::ENOTTY));
    assert_still_serving(&mut drv);
    dev.reset();
}

#[test]
fn opcode_trace_logging_is_compiled_out() {
    // fuse-backend-rs formats the guest's opcode in a `trace!` through an
    // unchecked transmute to its opcode enum, which is undefined behaviour
    // for values without a variant (7, 19, ...). The crate enables log's
    // `max_level_debug` so that this code is never compiled in.
    assert!(log::STATIC_MAX_LEVEL < log::LevelFilter::Trace);
}
