//! The vsock device's TX path: packet parsing and the multiplexer behind it.
//!
//! Each input first has a few raw descriptor chains parsed directly, as TX
//! packets and as RX buffers (`packet::parse_tx`, `packet::RxBuffer`, on
//! chains built with virtio-queue's `MockSplitQueue`). Then a fresh device
//! with a real Unix-socket backend is activated on three queues (RX buffers
//! posted, the way the Linux driver posts them), the input's packets are put
//! on the TX queue in one batch and the target waits until the device
//! returned all of them. Packets carry headers the fuzzer chooses (ports and
//! CIDs mostly from a few meaningful values: the guest's and host's CIDs, a
//! host port with a listener, the first host-side port of a host-initiated
//! connection) and payloads laid out in one or two descriptors, or are raw
//! chains. An input may also start with a host client connecting to a guest
//! port, so that the guest side of that handshake is reachable too.

#![no_main]

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_devices::vsock::packet::{parse_tx, RxBuffer, VsockHeader, HEADER_SIZE};
use virtio_devices::vsock::{VsockDevice, TYPE_STREAM, VSOCK_HOST_CID};
use virtio_devices::{GuestMemoryMmap, VirtioDevice};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmrun_fuzz::{event, interrupt, wait_for, Desc, DriverQueue, ScratchDir};

const GUEST_CID: u64 = 3;
const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 128;
const RXQ: u64 = 0;
const TXQ: u64 = 0x1_0000;
const EVQ: u64 = 0x2_0000;
const RX_BUFS: u64 = 0x10_0000;
const RX_BUF_LEN: u32 = 4096;
const RX_COUNT: u16 = 32;
/// TX buffers: one 0x1000-byte slot per packet.
const TX_BUFS: u64 = 0x20_0000;
const TX_SLOT: u64 = 0x1000;
const MAX_PACKETS: usize = 32;
/// Guest-to-host connections to this port reach a real listener.
const LISTEN_PORT: u32 = 1234;
/// The first host-side port the device gives a host-initiated connection.
const FIRST_HOST_PORT: u32 = 1 << 30;

#[derive(Arbitrary, Debug)]
enum Cid {
    Guest,
    Host,
    Raw(u64),
}

impl Cid {
    fn get(&self) -> u64 {
        match *self {
            Cid::Guest => GUEST_CID,
            Cid::Host => VSOCK_HOST_CID,
            Cid::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Port {
    Listener,
    FirstHost,
    Guest(u8),
    Raw(u32),
}

impl Port {
    fn get(&self) -> u32 {
        match *self {
            Port::Listener => LISTEN_PORT,
            Port::FirstHost => FIRST_HOST_PORT,
            Port::Guest(p) => 1000 + u32::from(p % 4),
            Port::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Layout {
    /// Header descriptor, then a payload descriptor.
    Split,
    /// Header and payload in one descriptor (Linux >= 6.2).
    Single,
    /// The header descriptor cut to `n` bytes, then the payload.
    ShortHeader(u8),
    /// Payload descriptor `delta` bytes longer or shorter than the payload.
    PayloadLen(i16),
    /// The header device-writable.
    WritableHeader,
}

#[derive(Arbitrary, Debug)]
struct RawDesc {
    addr: u32,
    len: u32,
    write: bool,
    indirect: bool,
}

impl RawDesc {
    fn desc(&self) -> Desc {
        let mut flags = 0;
        if self.write {
            flags |= VRING_DESC_F_WRITE as u16;
        }
        if self.indirect {
            flags |= virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;
        }
        Desc {
            addr: u64::from(self.addr) % (2 * MEM_SIZE as u64),
            len: self.len % (2 * MEM_SIZE as u32),
            flags,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Packet {
    Structured {
        src_cid: Cid,
        dst_cid: Cid,
        src_port: Port,
        dst_port: Port,
        /// Index into the operations (1..=7), or raw.
        op: u16,
        type_raw: Option<u16>,
        flags: u32,
        buf_alloc: u32,
        fwd_cnt: u32,
        /// `hdr.len` other than the payload length.
        len_raw: Option<u32>,
        payload: Vec<u8>,
        layout: Layout,
    },
    /// Raw descriptors; `bytes` are written at the slot first.
    Raw { descs: Vec<RawDesc>, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// A host client asks for `CONNECT <1000 + port % 4>` first.
    host_connect: Option<u8>,
    /// Raw chains parsed directly (TX and RX) before the device runs.
    direct: Vec<(Vec<RawDesc>, Vec<u8>)>,
    packets: Vec<Packet>,
}

struct Backend {
    _dir: ScratchDir,
    uds: PathBuf,
    listener: UnixListener,
}

/// The socket directory and the host listener, kept for the process (the
/// device's own socket is created and removed with each device).
fn backend() -> &'static Backend {
    static B: OnceLock<Backend> = OnceLock::new();
    B.get_or_init(|| {
        let dir = ScratchDir::new("vsock");
        let uds = dir.path().join("v.sock");
        let listener =
            UnixListener::bind(format!("{}_{LISTEN_PORT}", uds.display())).expect("host listener");
        listener.set_nonblocking(true).expect("nonblocking");
        Backend {
            _dir: dir,
            uds,
            listener,
        }
    })
}

fn parse_directly(mem: &GuestMemoryMmap, descs: &[RawDesc], bytes: &[u8]) {
    if descs.is_empty() {
        return;
    }
    let _ = mem.write_slice(&bytes[..bytes.len().min(4096)], GuestAddress(TX_BUFS));
    let raw: Vec<RawDescriptor> = descs
        .iter()
        .take(8)
        .map(|d| {
            let d = d.desc();
            RawDescriptor::from(SplitDescriptor::new(d.addr, d.len, d.flags, 0))
        })
        .collect();
    let vq = MockSplitQueue::create(mem, GuestAddress(0x3_0000), 16);
    if let Ok(mut chain) = vq.build_desc_chain(&raw) {
        if let Ok(pkt) = parse_tx(mem, &mut chain) {
            if let Some(data) = pkt.data {
                assert_eq!(data.len(), pkt.hdr.len as usize, "payload is not hdr.len");
            }
        }
    }
    let vq = MockSplitQueue::create(mem, GuestAddress(0x3_0000), 16);
    if let Ok(mut chain) = vq.build_desc_chain(&raw) {
        if let Ok(mut rx) = RxBuffer::parse(mem, &mut chain) {
            let len = rx.data().len().min(u32::MAX as usize) as u32;
            let hdr = VsockHeader {
                len,
                ..VsockHeader::default()
            };
            let used = rx.write_header(&hdr).expect("header fits an RX buffer");
            assert_eq!(used, HEADER_SIZE as u32 + len);
        }
    }
}

/// Lays packet `i` out in its TX slot; returns its descriptors.
fn lay_out(mem: &GuestMemoryMmap, i: usize, pkt: &Packet) -> Vec<Desc> {
    let slot = TX_BUFS + i as u64 * TX_SLOT;
    let rd = |addr, len| Desc {
        addr,
        len,
        flags: 0,
    };
    match pkt {
        Packet::Structured {
            src_cid,
            dst_cid,
            src_port,
            dst_port,
            op,
            type_raw,
            flags,
            buf_alloc,
            fwd_cnt,
            len_raw,
            payload,
            layout,
        } => {
            let payload = &payload[..payload.len().min(0x800)];
            let op = if (1..=7).contains(op) || *op > 0xff00 {
                *op
            } else {
                1 + *op % 7
            };
            let hdr = VsockHeader {
                src_cid: src_cid.get(),
                dst_cid: dst_cid.get(),
                src_port: src_port.get(),
                dst_port: dst_port.get(),
                len: len_raw.unwrap_or(payload.len() as u32),
                type_: type_raw.unwrap_or(TYPE_STREAM),
                op,
                flags: *flags,
                buf_alloc: *buf_alloc,
                fwd_cnt: *fwd_cnt,
            };
            let h = HEADER_SIZE as u64;
            let hlen = HEADER_SIZE as u32;
            let plen = payload.len() as u32;
            mem.write_slice(&hdr.to_bytes(), GuestAddress(slot))
                .expect("tx slot");
            match layout {
                Layout::Single => {
                    mem.write_slice(payload, GuestAddress(slot + h))
                        .expect("tx slot");
                    vec![rd(slot, hlen + plen)]
                }
                other => {
                    let data = slot + 0x100;
                    mem.write_slice(payload, GuestAddress(data))
                        .expect("tx slot");
                    let mut descs = vec![rd(slot, hlen)];
                    match other {
                        Layout::ShortHeader(n) => descs[0].len = u32::from(*n) % hlen,
                        Layout::WritableHeader => descs[0].flags = VRING_DESC_F_WRITE as u16,
                        _ => {}
                    }
                    let dlen = match other {
                        Layout::PayloadLen(delta) => plen.saturating_add_signed(i32::from(*delta)),
                        _ => plen,
                    };
                    if dlen > 0 || matches!(other, Layout::PayloadLen(_)) {
                        descs.push(rd(data, dlen.min(0xf00)));
                    }
                    descs
                }
            }
        }
        Packet::Raw { descs, bytes } => {
            mem.write_slice(
                &bytes[..bytes.len().min(TX_SLOT as usize)],
                GuestAddress(slot),
            )
            .expect("tx slot");
            descs.iter().take(8).map(RawDesc::desc).collect()
        }
    }
}

fuzz_target!(|input: Input| {
    let b = backend();
    let mem = vmrun_fuzz::guest_memory(MEM_SIZE);
    for (descs, bytes) in input.direct.iter().take(4) {
        parse_directly(&mem, descs, bytes);
    }

    let mut dev = VsockDevice::new(GUEST_CID, b.uds.clone()).expect("vsock device");
    let mut rxq = DriverQueue::new(&mem, RXQ, QSIZE);
    let mut txq = DriverQueue::new(&mem, TXQ, QSIZE);
    let evq = DriverQueue::new(&mem, EVQ, QSIZE);
    let (rx_evt, tx_evt, ev_evt) = (event(), event(), event());
    for i in 0..RX_COUNT {
        let hdr = RX_BUFS + u64::from(i) * 0x2000;
        let w = VRING_DESC_F_WRITE as u16;
        rxq.add_chain(
            &mem,
            &[
                Desc {
                    addr: hdr,
                    len: HEADER_SIZE as u32,
                    flags: w,
                },
                Desc {
                    addr: hdr + 0x100,
                    len: RX_BUF_LEN,
                    flags: w,
                },
            ],
        );
    }
    dev.activate(
        mem.clone(),
        interrupt(),
        vec![rxq.queue(QSIZE), txq.queue(QSIZE), evq.queue(QSIZE)],
        vec![
            rx_evt.try_clone().expect("eventfd"),
            tx_evt.try_clone().expect("eventfd"),
            ev_evt.try_clone().expect("eventfd"),
        ],
    )
    .expect("activate");
    rx_evt.write(1).expect("kick rx");

    let mut client = None;
    if let Some(port) = input.host_connect {
        if let Ok(mut c) = UnixStream::connect(&b.uds) {
            let line = format!("CONNECT {}\n", 1000 + u32::from(port % 4));
            if c.write_all(line.as_bytes()).is_ok() {
                // The connection request reaches the guest's RX queue.
                wait_for(Duration::from_millis(200), || rxq.used_idx(&mem) > 0);
            }
            client = Some(c);
        }
    }

    let packets = &input.packets[..input.packets.len().min(MAX_PACKETS)];
    for (i, pkt) in packets.iter().enumerate() {
        let descs = lay_out(&mem, i, pkt);
        txq.add_chain(&mem, &descs);
    }
    if !packets.is_empty() {
        tx_evt.write(1).expect("kick tx");
        txq.wait_all_used(&mem);
    }
    dev.reset();
    drop(dev);
    drop(client);
    // Connections the device made to the listener.
    while let Ok((s, _)) = b.listener.accept() {
        drop(s);
    }
});
