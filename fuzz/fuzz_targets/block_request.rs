//! virtio-blk request parsing and execution over a small temporary image.
//!
//! Each input is a batch of requests for a fresh device (read-write or
//! read-only) on a 64-sector image: header (type, sector), data descriptors
//! and status descriptor as the fuzzer lays them out (lengths, directions,
//! addresses, indirect flags), or raw descriptor chains. All are made
//! available at once, the queue is notified, and the target waits until the
//! device returned every chain. The device may be rate limited (small
//! bursts; 4000 requests/s and 64 MiB/s, faster than the fuzzer's requests
//! but slower than the device serves them, so that it refuses some and the
//! waits stay well under a millisecond per request): requests it refuses go
//! back to the ring and come out again when its timer fires. Checked besides
//! the absence of panics and hangs (a throttled request that never comes back
//! is one): the used length never exceeds what the chain lets the device
//! write, chains come back in the order they were made available, and a
//! request the device answered OK left the image size alone.

#![no_main]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
use virtio_devices::{BlockDevice, Bucket, MonotonicClock, RateLimit, VirtioDevice};
use vm_memory::{Bytes, GuestAddress};
use vmrun_fuzz::{event, interrupt, Desc, DriverQueue, ScratchDir};

const MEM_SIZE: usize = 1 << 20;
/// Room for every descriptor of a batch: chains never share descriptors.
const QSIZE: u16 = 256;
const QUEUE_ADDR: u64 = 0;
/// One 0x4000-byte area per request: header at +0, data in
/// [+0x100, +0x3000), an indirect table at +0x3800, status at +0x3ff0.
const REQ_AREA: u64 = 0x1_0000;
const REQ_SLOT: u64 = 0x4000;
const IMAGE_SECTORS: u64 = 64;
const MAX_REQUESTS: usize = 16;
/// Where descriptors with fuzzer-chosen addresses point: past the request
/// areas and the queue (so that no request's data lands in another's
/// header, indirect table or the descriptor table), half of it beyond the
/// end of guest memory.
const WILD: u64 = REQ_AREA + MAX_REQUESTS as u64 * REQ_SLOT;

fn wild(addr: u32) -> u64 {
    WILD + u64::from(addr) % (2 * MEM_SIZE as u64 - WILD)
}

#[derive(Arbitrary, Debug)]
enum ReqType {
    In,
    Out,
    Flush,
    GetId,
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    /// In 512-byte units, plus `extra` bytes.
    sectors: u8,
    extra: u8,
    write: bool,
    /// Points somewhere else in guest memory (or beyond it).
    addr: Option<u32>,
}

#[derive(Arbitrary, Debug)]
enum Request {
    Structured {
        kind: ReqType,
        sector: u64,
        /// Header descriptor length (16 is right), writable or not.
        header_len: Option<u8>,
        header_write: bool,
        data: Vec<Segment>,
        /// Status descriptor: length 1 and writable is right.
        status_len: Option<u8>,
        status_read_only: bool,
        /// Put the whole chain in an indirect table.
        indirect: bool,
    },
    Raw {
        descs: Vec<(u32, u32, u8)>,
        bytes: Vec<u8>,
    },
}

struct Image {
    _dir: ScratchDir,
    path: PathBuf,
}

fn image() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| {
        let dir = ScratchDir::new("block");
        let path = dir.path().join("disk.img");
        Image { _dir: dir, path }
    })
}

/// A fresh image, sector `n` filled with byte `n`.
fn reset_image(path: &PathBuf) {
    let mut f = File::create(path).expect("image");
    let mut content = Vec::with_capacity((IMAGE_SECTORS * 512) as usize);
    for s in 0..IMAGE_SECTORS {
        content.extend_from_slice(&[s as u8; 512]);
    }
    f.write_all(&content).expect("image");
}

/// Writes request `i` into its area; returns its descriptors and how many
/// bytes of them are device-writable (`None` if that is not known, as with
/// raw indirect chains).
fn lay_out(
    mem: &vm_memory::GuestMemoryMmap<()>,
    i: usize,
    req: &Request,
) -> (Vec<Desc>, Option<u64>) {
    let area = REQ_AREA + i as u64 * REQ_SLOT;
    let w = VRING_DESC_F_WRITE as u16;
    match req {
        Request::Structured {
            kind,
            sector,
            header_len,
            header_write,
            data,
            status_len,
            status_read_only,
            indirect,
        } => {
            let t = match kind {
                ReqType::In => VIRTIO_BLK_T_IN,
                ReqType::Out => VIRTIO_BLK_T_OUT,
                ReqType::Flush => VIRTIO_BLK_T_FLUSH,
                ReqType::GetId => VIRTIO_BLK_T_GET_ID,
                ReqType::Raw(t) => *t,
            };
            let mut header = [0u8; 16];
            header[0..4].copy_from_slice(&t.to_le_bytes());
            header[8..16].copy_from_slice(&sector.to_le_bytes());
            mem.write_slice(&header, GuestAddress(area))
                .expect("header");
            let mut descs = vec![Desc {
                addr: area,
                len: header_len.map_or(16, u32::from),
                flags: if *header_write { w } else { 0 },
            }];
            let mut at = area + 0x100;
            for seg in data.iter().take(8) {
                let len = u32::from(seg.sectors % 8) * 512 + u32::from(seg.extra % 4);
                let addr = match seg.addr {
                    Some(a) => wild(a),
                    None => {
                        // Data stays in [+0x100, +0x3000) of this area.
                        if at + u64::from(len) > area + 0x3000 {
                            at = area + 0x100;
                        }
                        let a = at;
                        at += u64::from(len);
                        a
                    }
                };
                descs.push(Desc {
                    addr,
                    len,
                    flags: if seg.write { w } else { 0 },
                });
            }
            descs.push(Desc {
                addr: area + REQ_SLOT - 0x10,
                len: status_len.map_or(1, |l| u32::from(l % 16)),
                flags: if *status_read_only { 0 } else { w },
            });
            let writable = descs
                .iter()
                .filter(|d| d.flags & w != 0)
                .map(|d| u64::from(d.len))
                .sum();
            if *indirect {
                let table = area + 0x3800;
                for (j, d) in descs.iter().enumerate() {
                    let last = j + 1 == descs.len();
                    let flags = d.flags | if last { 0 } else { 1 };
                    let mut raw = [0u8; 16];
                    raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
                    raw[8..12].copy_from_slice(&d.len.to_le_bytes());
                    raw[12..14].copy_from_slice(&flags.to_le_bytes());
                    raw[14..16].copy_from_slice(&(j as u16 + 1).to_le_bytes());
                    mem.write_slice(&raw, GuestAddress(table + 16 * j as u64))
                        .expect("indirect table");
                }
                let table_desc = Desc {
                    addr: table,
                    len: 16 * descs.len() as u32,
                    flags: VRING_DESC_F_INDIRECT as u16,
                };
                return (vec![table_desc], Some(writable));
            }
            (descs, Some(writable))
        }
        Request::Raw { descs, bytes } => {
            mem.write_slice(&bytes[..bytes.len().min(0x1000)], GuestAddress(area))
                .expect("raw bytes");
            let descs: Vec<Desc> = descs
                .iter()
                .take(8)
                .map(|&(addr, len, flags)| Desc {
                    // In this request's area (where `bytes` are), or wild.
                    addr: if addr & 0x8000_0000 == 0 {
                        area + u64::from(addr) % REQ_SLOT
                    } else {
                        wild(addr)
                    },
                    len: len % (2 * MEM_SIZE as u32),
                    flags: u16::from(flags) & (w | VRING_DESC_F_INDIRECT as u16),
                })
                .collect();
            let indirect = descs
                .iter()
                .any(|d| d.flags & VRING_DESC_F_INDIRECT as u16 != 0);
            let writable = descs
                .iter()
                .filter(|d| d.flags & w != 0)
                .map(|d| u64::from(d.len))
                .sum();
            (descs, (!indirect).then_some(writable))
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    read_only: bool,
    /// A rate limit with bursts of 1 to 256 sectors and 1 to 4 requests.
    limit: Option<(u8, u8)>,
    requests: Vec<Request>,
}

fuzz_target!(|input: Input| {
    let Input {
        read_only,
        limit,
        requests,
    } = input;
    let img = image();
    reset_image(&img.path);
    let mut dev = BlockDevice::new(img.path.clone(), read_only).expect("block device");
    if let Some((sectors, ops)) = limit {
        let limit = RateLimit {
            bytes: Some(Bucket::new(64 << 20, 512 * (1 + u64::from(sectors))).expect("bucket")),
            ops: Some(Bucket::new(4000, 1 + u64::from(ops % 4)).expect("bucket")),
        };
        dev = dev
            .with_rate_limit(limit, Arc::new(MonotonicClock::new()))
            .expect("rate limiter");
    }
    let mem = vmrun_fuzz::guest_memory(MEM_SIZE);
    let mut q = DriverQueue::new(&mem, QUEUE_ADDR, QSIZE);
    let evt = event();
    dev.activate(
        mem.clone(),
        interrupt(),
        vec![q.queue(QSIZE)],
        vec![evt.try_clone().expect("eventfd")],
    )
    .expect("activate");

    let requests = &requests[..requests.len().min(MAX_REQUESTS)];
    let mut writable = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        let (descs, w) = lay_out(&mem, i, req);
        let head = q.add_chain(&mem, &descs);
        writable.push((head, w));
    }
    if !requests.is_empty() {
        evt.write(1).expect("kick");
        q.wait_all_used(&mem);
    }
    for pos in 0..q.posted() {
        let (id, len) = q.used_elem(&mem, pos);
        assert_eq!(
            Some(id),
            writable.get(usize::from(pos)).map(|(head, _)| u32::from(*head)),
            "chain returned out of order at position {pos}"
        );
        let limit = writable
            .iter()
            .find(|(head, _)| u32::from(*head) == id)
            .and_then(|(_, w)| *w);
        if let Some(limit) = limit {
            assert!(
                u64::from(len) <= limit,
                "used length {len} exceeds the {limit} writable bytes of chain {id}"
            );
        }
    }
    dev.reset();
    let f = File::open(&img.path).expect("image");
    let size = f.metadata().expect("image").len();
    assert_eq!(size, IMAGE_SECTORS * 512, "the image changed size");
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, size - 1).expect("image");
});
