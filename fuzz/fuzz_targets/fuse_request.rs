//! FUSE requests through the virtio-fs device: fuse-backend-rs's server,
//! the policy layer (`GuardedFs`) and the passthrough, against a fresh
//! temporary share for every input.
//!
//! The share holds a file, a directory and two symlinks pointing out of it
//! (relative and absolute) at a sentinel file beside the share. An input is
//! a device configuration, an optional FUSE_INIT and up to 16 messages:
//! opcode, node id (mostly small: node ids are indices into the device's
//! own table), caller, fixed-size arguments, names (mostly from the share's
//! entries, `.`, `..`) and trailing data, with the header length and the
//! reply buffer sometimes wrong. Messages are sent one at a time and each
//! must come back. Checked besides panics and hangs: the reply fits its
//! buffer, nothing outside the share changed (the sentinel's content,
//! the directory it lives in), what the guest holds stays within the inode
//! and handle caps (small ones, chosen by the input, so that the fuzzer
//! reaches them), and the descriptors the device has open at or beneath the
//! share are exactly that: the passthrough's root (once FUSE_INIT imported
//! it), one per inode the guest holds, one per open file or directory.
//!
//! Fallocate lengths are capped at 1 MiB so that the fuzzer does not fill
//! the host's disk, and the sizes of well-formed READ, READDIR and
//! READDIRPLUS messages are mostly ones the reply buffer holds (a random
//! size is almost always refused with ENOMEM, which hid the listing paths);
//! everything else reaches the device as generated.

#![no_main]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use arbitrary::Arbitrary;
use fuse_backend_rs::abi::fuse_abi::{InHeader, InitIn, KERNEL_MINOR_VERSION, KERNEL_VERSION};
use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_devices::fs::{HIPRIO_QUEUE_SIZE, REQUEST_QUEUE_SIZE};
use virtio_devices::{FsCachePolicy, FsConfig, FsDevice, VirtioDevice};
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmrun_fuzz::{event, interrupt, Desc, DriverQueue, ScratchDir};

const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 64;
const HIPRIO_ADDR: u64 = 0;
const REQUEST_ADDR: u64 = 0x1_0000;
const IN_ADDR: u64 = 0x10_0000;
const OUT_ADDR: u64 = 0x20_0000;
const OUT_LEN: u32 = 64 * 1024;
const SECRET: &[u8] = b"outside the share\n";
const FALLOCATE: u32 = 43;
const MAX_FALLOCATE: u64 = 1 << 20;
/// READ, READDIR, READDIRPLUS: `ReadIn::size` at bytes 16..20.
const SIZED_READS: [u32; 3] = [15, 28, 44];

#[derive(Arbitrary, Debug)]
enum Name {
    File,
    Dir,
    Link,
    AbsLink,
    Dot,
    DotDot,
    New(u8),
    Raw(Vec<u8>),
}

impl Name {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Name::File => b"file".to_vec(),
            Name::Dir => b"dir".to_vec(),
            Name::Link => b"link".to_vec(),
            Name::AbsLink => b"abslink".to_vec(),
            Name::Dot => b".".to_vec(),
            Name::DotDot => b"..".to_vec(),
            Name::New(n) => format!("new{}", n % 4).into_bytes(),
            Name::Raw(b) => b[..b.len().min(64)].to_vec(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum OutBuf {
    Normal,
    Small(u8),
    None,
}

/// Opcodes the device serves, with the size of their fixed arguments
/// (FUSE 7.33 ABI): most messages get arguments of the right size, so that
/// the names and data after them are where the server looks.
const OPCODES: [(u32, usize); 40] = [
    (1, 0),   // LOOKUP
    (2, 8),   // FORGET
    (3, 16),  // GETATTR
    (4, 88),  // SETATTR
    (5, 0),   // READLINK
    (6, 0),   // SYMLINK
    (8, 16),  // MKNOD
    (9, 8),   // MKDIR
    (10, 0),  // UNLINK
    (11, 0),  // RMDIR
    (12, 8),  // RENAME
    (13, 8),  // LINK
    (14, 8),  // OPEN
    (15, 40), // READ
    (16, 40), // WRITE
    (17, 0),  // STATFS
    (18, 24), // RELEASE
    (20, 16), // FSYNC
    (21, 8),  // SETXATTR
    (22, 8),  // GETXATTR
    (23, 8),  // LISTXATTR
    (24, 0),  // REMOVEXATTR
    (25, 24), // FLUSH
    (26, 16), // INIT
    (27, 8),  // OPENDIR
    (28, 40), // READDIR
    (29, 24), // RELEASEDIR
    (30, 16), // FSYNCDIR
    (31, 48), // GETLK
    (32, 48), // SETLK
    (34, 8),  // ACCESS
    (35, 16), // CREATE
    (36, 8),  // INTERRUPT
    (39, 32), // IOCTL
    (42, 8),  // BATCH_FORGET
    (43, 32), // FALLOCATE
    (44, 40), // READDIRPLUS
    (45, 16), // RENAME2
    (46, 24), // LSEEK
    (47, 56), // COPY_FILE_RANGE
];

#[derive(Arbitrary, Debug)]
struct Msg {
    /// One of [`OPCODES`], or, from 240 up, opcode `raw_opcode % 64` (the
    /// holes and unknown ones included) or (255) `raw_opcode` itself.
    opcode: u8,
    raw_opcode: u32,
    /// The message as generated: fixed arguments not cut or padded to their
    /// size, every name and the tail appended whatever the opcode takes.
    raw_fixed: bool,
    /// Node `nodeid % 8`, or `raw_nodeid` when `nodeid` is 255.
    nodeid: u8,
    raw_nodeid: u64,
    /// Caller 0:0, or 1000:1000.
    unprivileged: bool,
    fixed: Vec<u8>,
    names: Vec<Name>,
    /// No NUL after the last name.
    unterminated: bool,
    tail: Vec<u8>,
    /// `InHeader::len` off by this much.
    len_delta: Option<i16>,
    out: OutBuf,
    hiprio: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    xattr: bool,
    writeback: bool,
    cache: u8,
    /// Inode and handle caps (1 to 4 each); the defaults if absent.
    caps: Option<(u8, u8)>,
    /// FUSE_INIT first, with these flags (and this minor version).
    init: Option<(u32, u8)>,
    msgs: Vec<Msg>,
}

fn message(msg: &Msg, unique: u64) -> Vec<u8> {
    let (opcode, fixed_len) = match msg.opcode {
        255 => (msg.raw_opcode, None),
        240.. => (msg.raw_opcode % 64, None),
        i => {
            let (op, len) = OPCODES[usize::from(i) % OPCODES.len()];
            (op, Some(len))
        }
    };
    let nodeid = if msg.nodeid == 255 {
        msg.raw_nodeid
    } else {
        u64::from(msg.nodeid % 8)
    };
    let mut body = msg.fixed[..msg.fixed.len().min(128)].to_vec();
    if let (Some(len), false) = (fixed_len, msg.raw_fixed) {
        body.resize(len, 0);
    }
    if opcode == FALLOCATE && body.len() >= 24 {
        let mut length = [0u8; 8];
        length.copy_from_slice(&body[16..24]);
        let capped = u64::from_le_bytes(length).min(MAX_FALLOCATE);
        body[16..24].copy_from_slice(&capped.to_le_bytes());
    }
    if fixed_len.is_some() && !msg.raw_fixed && SIZED_READS.contains(&opcode) {
        // Up to a quarter more than the reply buffer: mostly sizes it holds.
        let mut size = [0u8; 4];
        size.copy_from_slice(&body[16..20]);
        let size = u32::from_le_bytes(size) % (OUT_LEN + OUT_LEN / 4);
        body[16..20].copy_from_slice(&size.to_le_bytes());
    }
    // A well-formed message has as many names as its opcode takes, and a
    // tail only where data follows them.
    let shaped = fixed_len.is_some() && !msg.raw_fixed;
    let (n_names, tail) = match opcode {
        _ if !shaped => (msg.names.len().min(3), true),
        1 | 8 | 9 | 10 | 11 | 13 | 22 | 24 | 35 => (1, false),
        6 | 12 | 45 => (2, false),
        21 => (1, true),
        16 | 39 => (0, true),
        _ => (0, false),
    };
    let fallback = Name::New(0);
    for i in 0..n_names {
        let name = msg.names.get(i).unwrap_or(&fallback);
        body.extend_from_slice(&name.bytes());
        if !(msg.unterminated && i + 1 == n_names) {
            body.push(0);
        }
    }
    if tail {
        body.extend_from_slice(&msg.tail[..msg.tail.len().min(8192)]);
    }
    let id = if msg.unprivileged { 1000 } else { 0 };
    let len = (std::mem::size_of::<InHeader>() + body.len()) as u32;
    let header = InHeader {
        len: msg
            .len_delta
            .map_or(len, |d| len.wrapping_add_signed(i32::from(d))),
        opcode,
        unique,
        nodeid,
        uid: id,
        gid: id,
        pid: 1,
        padding: 0,
    };
    [header.as_slice(), &body].concat()
}

/// The share and what lies beside it.
fn fixture(base: &Path) -> std::path::PathBuf {
    let share = base.join("share");
    let outside = base.join("outside");
    fs::create_dir_all(share.join("dir")).expect("fixture");
    fs::create_dir_all(&outside).expect("fixture");
    fs::write(outside.join("secret"), SECRET).expect("fixture");
    fs::write(share.join("file"), b"hello, world\n").expect("fixture");
    fs::write(share.join("dir").join("inner"), b"inner\n").expect("fixture");
    symlink("../outside/secret", share.join("link")).expect("fixture");
    symlink(outside.join("secret"), share.join("abslink")).expect("fixture");
    for dir in [&share, &share.join("dir")] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).expect("fixture");
    }
    share
}

/// Nothing outside the share may change.
fn check_outside(base: &Path) {
    let outside = base.join("outside");
    let secret = fs::read(outside.join("secret")).expect("the sentinel is gone");
    assert_eq!(secret, SECRET, "the sentinel outside the share changed");
    let entries: Vec<_> = fs::read_dir(&outside)
        .expect("outside dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries, ["secret"], "entries appeared outside the share");
    let mut top: Vec<_> = fs::read_dir(base)
        .expect("base dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["outside", "share"],
        "entries appeared beside the share"
    );
}

struct Driver {
    mem: virtio_devices::GuestMemoryMmap,
    queues: [DriverQueue; 2],
    evts: [vmm_sys_util::eventfd::EventFd; 2],
}

impl Driver {
    fn send(&mut self, hiprio: bool, request: &[u8], out: &OutBuf) {
        let q = usize::from(!hiprio);
        self.mem
            .write_slice(request, GuestAddress(IN_ADDR))
            .expect("request");
        let mut descs = vec![Desc {
            addr: IN_ADDR,
            len: request.len() as u32,
            flags: 0,
        }];
        let out_len = match out {
            OutBuf::Normal => Some(OUT_LEN),
            OutBuf::Small(n) => Some(u32::from(*n)),
            OutBuf::None => None,
        };
        if let Some(len) = out_len {
            descs.push(Desc {
                addr: OUT_ADDR,
                len,
                flags: VRING_DESC_F_WRITE as u16,
            });
        }
        let queue = &mut self.queues[q];
        queue.add_chain(&self.mem, &descs);
        self.evts[q].write(1).expect("kick");
        queue.wait_all_used(&self.mem);
        let (_, used) = queue.used_elem(&self.mem, queue.posted().wrapping_sub(1));
        assert!(
            used <= out_len.unwrap_or(0),
            "used length {used} exceeds the reply buffer {out_len:?}"
        );
    }
}

/// Descriptors of this process that refer to `dir` itself, and to
/// something beneath it.
fn fds_in(dir: &Path) -> (usize, usize) {
    let root = dir.canonicalize().expect("canonical share");
    let targets: Vec<_> = fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .collect();
    let at = targets.iter().filter(|t| **t == root).count();
    let beneath = targets
        .iter()
        .filter(|t| **t != root && t.starts_with(&root))
        .count();
    (at, beneath)
}

fuzz_target!(|input: Input| {
    let scratch = ScratchDir::new("fs");
    let share = fixture(scratch.path());
    let config = FsConfig {
        read_only: input.read_only,
        cache: match input.cache % 3 {
            0 => FsCachePolicy::Never,
            1 => FsCachePolicy::Auto,
            _ => FsCachePolicy::Always,
        },
        xattr: input.xattr,
        writeback: input.writeback,
        ..FsConfig::default()
    };
    let config = match input.caps {
        Some((inodes, handles)) => FsConfig {
            max_inodes: 1 + usize::from(inodes % 4),
            max_handles: 1 + usize::from(handles % 4),
            ..config
        },
        None => config,
    };
    let mut dev = FsDevice::new("fuzz", share.clone(), config).expect("fs device");
    let mem = vmrun_fuzz::guest_memory(MEM_SIZE);
    let queues = [
        DriverQueue::new(&mem, HIPRIO_ADDR, QSIZE),
        DriverQueue::new(&mem, REQUEST_ADDR, QSIZE),
    ];
    let evts = [event(), event()];
    dev.activate(
        mem.clone(),
        interrupt(),
        vec![
            queues[0].queue(HIPRIO_QUEUE_SIZE),
            queues[1].queue(REQUEST_QUEUE_SIZE),
        ],
        evts.iter()
            .map(|e| e.try_clone().expect("eventfd"))
            .collect(),
    )
    .expect("activate");
    let mut drv = Driver { mem, queues, evts };

    let mut unique = 1;
    if let Some((flags, minor)) = input.init {
        let init = InitIn {
            major: KERNEL_VERSION,
            minor: if minor == 0 {
                KERNEL_MINOR_VERSION
            } else {
                u32::from(minor % 40)
            },
            max_readahead: 128 * 1024,
            flags,
        };
        let header = InHeader {
            len: (std::mem::size_of::<InHeader>() + std::mem::size_of::<InitIn>()) as u32,
            opcode: 26,
            unique,
            nodeid: 0,
            ..Default::default()
        };
        let request = [header.as_slice(), init.as_slice()].concat();
        drv.send(false, &request, &OutBuf::Normal);
    }
    for msg in input.msgs.iter().take(16) {
        unique += 1;
        drv.send(msg.hiprio, &message(msg, unique), &msg.out);
    }
    let (inodes, handles) = dev.guest_holds();
    assert!(
        inodes <= config.max_inodes && handles <= config.max_handles,
        "the guest holds {inodes} inodes and {handles} handles, caps {} and {}",
        config.max_inodes,
        config.max_handles
    );
    let (at_root, beneath) = fds_in(&share);
    let root = usize::from(at_root > 0);
    assert_eq!(
        at_root + beneath,
        root + inodes + handles,
        "descriptors at ({at_root}) and beneath ({beneath}) the share against \
         {inodes} inodes and {handles} handles the guest holds"
    );
    dev.reset();
    drop(dev);
    check_outside(scratch.path());
});
