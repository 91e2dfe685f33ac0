//! virtio-net: transmit chains, receive buffers and packets, directly and
//! through a live device.
//!
//! Each input negotiates a subset of what the device offers, then:
//! 1. gathers its transmit chains with `net::tx::gather` (structured ones:
//!    header, payload split in parts, directions and addresses as the
//!    fuzzer says; or raw descriptors with any flags and next indices);
//!    a structured chain that is readable, in memory and of a possible
//!    length must come out byte for byte (or be refused for its header);
//! 2. posts its receive buffers on a queue and delivers its packets into
//!    them with `net::rx::deliver`: the used lengths of a delivered packet
//!    add up to it, a buffer is never filled past its room, and every
//!    buffer the device took is returned or put back (the next available
//!    and next used positions stay equal, which snapshots rely on);
//! 3. runs a device on a socket pair standing in for the tap with the
//!    same chains: its receive buffers (then plenty of good ones) and
//!    transmit chains in one batch, then its packets written to the tap
//!    side; every transmit chain comes back, the frames out are of a
//!    possible size, the device reads everything (it never waits while it
//!    has buffers; unless a receive buffer lies over the receive queue's
//!    descriptor table or available ring, which the device only reads: a
//!    packet written there destroys the guest's own buffers, and waiting
//!    for new ones is then right); then, restarted on fresh queues, it
//!    still moves a frame each way, intact.

#![no_main]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_devices::net::rx::{deliver, Delivery, RxScratch};
use virtio_devices::net::tx::{gather, TxError};
use virtio_devices::net::{MAX_PACKET_LEN, VNET_HDR_LEN};
use virtio_devices::{GuestMemoryMmap, NetConfig, NetDevice, Tap, VirtioDevice};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmrun_fuzz::net::{lay_out, publish, raw_nexts, Area, Chain};
use vmrun_fuzz::{event, interrupt, wait_for, Desc, DriverQueue, HANG_TIMEOUT};

const MEM_SIZE: usize = 4 << 20;
const SYNC_QSIZE: u16 = 64;
const SYNC_TXQ: u64 = 0x0;
const SYNC_RXQ: u64 = 0x2000;
const LIVE_QSIZE: u16 = 256;
const LIVE_RXQ: u64 = 0x4000;
const LIVE_TXQ: u64 = 0x1_0000;
/// Transmit data, allocated from the start for each input.
const TX_AREA: u64 = 0x10_0000;
const TX_AREA_LEN: u64 = 0x10_0000;
/// The fuzzer's receive buffers.
const RX_AREA: u64 = 0x20_0000;
const RX_AREA_LEN: u64 = 0x10_0000;
/// The live phase's good receive buffers.
const GOOD_RX: u64 = 0x30_0000;
const GOOD_RX_LEN: u32 = 4096;
const GOOD_RX_COUNT: u16 = 128;
/// The queues of the device's second start.
const MARKER_QSIZE: u16 = 16;
const MARKER_RXQ: u64 = 0x8000;
const MARKER_TXQ: u64 = 0xa000;
const MAX_CHAINS: usize = 16;
const MAX_LIVE_PACKETS: usize = 4;
const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

#[derive(Arbitrary, Debug)]
struct Packet {
    /// Header (and frame start); cut to `len` if shorter.
    header: [u8; VNET_HDR_LEN],
    len: u16,
    fill: u8,
}

impl Packet {
    fn bytes(&self) -> Vec<u8> {
        let len = usize::from(self.len).min(MAX_PACKET_LEN);
        let mut bytes: Vec<u8> = self.header.iter().copied().take(len).collect();
        bytes.extend((bytes.len()..len).map(|i| self.fill.wrapping_add(i as u8)));
        bytes
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which optional features (of those offered) are negotiated.
    features: u32,
    tx: Vec<Chain>,
    rx: Vec<Chain>,
    packets: Vec<Packet>,
}

fn sync_tx(mem: &GuestMemoryMmap, chains: &[Chain], acked: u64) {
    let mut q = DriverQueue::new(mem, SYNC_TXQ, SYNC_QSIZE);
    let mut queue = q.queue(SYNC_QSIZE);
    let mut area = Area::new(TX_AREA, TX_AREA_LEN);
    let mut buf = vec![0u8; MAX_PACKET_LEN];
    // One at a time: chains reuse the descriptors of those before them.
    for chain in chains {
        let l = lay_out(mem, &mut area, chain, false);
        publish(mem, &mut q, &l, raw_nexts(chain).as_deref());
        let Some(desc_chain) = queue.pop_descriptor_chain(mem) else {
            panic!("a published chain was not available");
        };
        match gather(mem, desc_chain, &mut buf, acked) {
            Ok(len) => {
                assert!(
                    (VNET_HDR_LEN..=MAX_PACKET_LEN).contains(&len),
                    "gathered {len} bytes"
                );
                if let Some(expected) = &l.expected {
                    assert_eq!(&buf[..len], &expected[..], "gathered bytes differ");
                }
            }
            Err(TxError::Header(_)) => {}
            Err(e) => {
                if let Some(expected) = &l.expected {
                    let possible = (VNET_HDR_LEN..=MAX_PACKET_LEN).contains(&expected.len());
                    assert!(
                        !possible,
                        "a good chain of {} bytes refused: {e}",
                        expected.len()
                    );
                }
            }
        }
    }
}

fn sync_rx(mem: &GuestMemoryMmap, chains: &[Chain], packets: &[Packet], mergeable: bool) {
    let mut q = DriverQueue::new(mem, SYNC_RXQ, SYNC_QSIZE);
    let mut area = Area::new(RX_AREA, RX_AREA_LEN);
    let mut rooms = std::collections::HashMap::new();
    let mut descriptors = 0;
    for chain in chains {
        let l = lay_out(mem, &mut area, chain, true);
        // Chains must not share descriptors (but raw ones may point into
        // others).
        descriptors += l.descs.len().max(1);
        if descriptors > usize::from(SYNC_QSIZE) {
            break;
        }
        let head = publish(mem, &mut q, &l, raw_nexts(chain).as_deref());
        rooms.insert(u32::from(head), l.room);
    }
    let mut queue = q.queue(SYNC_QSIZE);
    let mut scratch = RxScratch::new();
    for packet in packets {
        let mut bytes = packet.bytes();
        let before = queue.next_used();
        let result = deliver(mem, &mut queue, &mut bytes, mergeable, &mut scratch);
        let after = queue.next_used();
        assert_eq!(
            after.wrapping_sub(before),
            result.used,
            "used entries miscounted"
        );
        assert_eq!(q.used_idx(mem), after, "used index not published");
        assert_eq!(queue.next_avail(), after, "a buffer was taken and kept");
        for pos in before..after {
            let (head, len) = q.used_elem(mem, pos);
            if let Some(Some(room)) = rooms.get(&head) {
                assert!(
                    u64::from(len) <= *room,
                    "{len} bytes into a {room}-byte buffer"
                );
            }
        }
        if let Delivery::Delivered(n) = result.delivery {
            assert!(n >= 1 && (mergeable || n == 1), "{n} buffers");
            let total: u64 = (after.wrapping_sub(n)..after)
                .map(|pos| u64::from(q.used_elem(mem, pos).1))
                .sum();
            assert_eq!(total, bytes.len() as u64, "used lengths do not add up");
        }
    }
}

fn socket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(ret, 0, "socketpair");
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Reads and drops what waits on `fd` (a bounded number of messages: empty
/// ones read as 0 too).
fn discard_unread(fd: &OwnedFd) {
    let mut buf = vec![0u8; 2 * MAX_PACKET_LEN];
    for _ in 0..1024 {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
    }
}

fn guest_bytes(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    mem.read_slice(&mut bytes, GuestAddress(addr))
        .expect("queue memory");
    bytes
}

fn send(fd: &OwnedFd, bytes: &[u8]) -> bool {
    // SAFETY: `bytes` is readable for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    n == bytes.len() as isize
}

fn unread(fd: &OwnedFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    n
}

fn live(mem: &GuestMemoryMmap, input: &Input, mask: u32) {
    let (ours, theirs) = socket_pair();
    let watch = theirs.try_clone().expect("dup");
    let tap = Tap::from_socket(theirs, "fuzz").expect("stand-in tap");
    let mut dev = NetDevice::new(
        Some(tap),
        NetConfig {
            mac: MAC,
            mtu: 1500,
        },
    )
    .expect("device");
    let acked = choose(dev.avail_features(), mask);
    let mut rxq = DriverQueue::new(mem, LIVE_RXQ, LIVE_QSIZE);
    let mut txq = DriverQueue::new(mem, LIVE_TXQ, LIVE_QSIZE);
    let mut area = Area::new(RX_AREA, RX_AREA_LEN);
    for chain in input.rx.iter().take(MAX_CHAINS) {
        let l = lay_out(mem, &mut area, chain, true);
        publish(mem, &mut rxq, &l, raw_nexts(chain).as_deref());
    }
    for i in 0..GOOD_RX_COUNT {
        let addr = GOOD_RX + u64::from(i) * u64::from(GOOD_RX_LEN);
        rxq.add_chain(
            mem,
            &[Desc {
                addr,
                len: GOOD_RX_LEN,
                flags: VRING_DESC_F_WRITE as u16,
            }],
        );
    }
    let mut area = Area::new(TX_AREA, TX_AREA_LEN);
    for chain in input.tx.iter().take(MAX_CHAINS) {
        let l = lay_out(mem, &mut area, chain, false);
        publish(mem, &mut txq, &l, raw_nexts(chain).as_deref());
    }
    let (rx_evt, tx_evt) = (event(), event());
    dev.ack_features(acked);
    dev.activate(
        mem.clone(),
        interrupt(),
        vec![rxq.queue(LIVE_QSIZE), txq.queue(LIVE_QSIZE)],
        vec![
            rx_evt.try_clone().expect("eventfd"),
            tx_evt.try_clone().expect("eventfd"),
        ],
    )
    .expect("activate");
    tx_evt.write(1).expect("kick");
    rx_evt.write(1).expect("kick");
    txq.wait_all_used(mem);
    let mut buf = vec![0u8; 2 * MAX_PACKET_LEN];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(ours.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            break;
        }
        let n = n as usize;
        assert!(
            (VNET_HDR_LEN..=MAX_PACKET_LEN).contains(&n),
            "sent {n} bytes"
        );
    }
    // What only the guest writes: the descriptor table and available ring.
    let ring_len = (rxq.used - rxq.desc) as usize;
    let ring_before = guest_bytes(mem, rxq.desc, ring_len);
    let ring_overwritten = || guest_bytes(mem, rxq.desc, ring_len) != ring_before;
    for packet in input.packets.iter().take(MAX_LIVE_PACKETS) {
        // A full socket drops it, as a full tap queue would.
        let _ = send(&ours, &packet.bytes());
    }
    // Plenty of buffers: the device never has to stop reading, unless the
    // guest's buffers overwrote its own ring.
    let read = wait_for(HANG_TIMEOUT, || unread(&watch) == 0 || ring_overwritten());
    assert!(
        read,
        "device hang: {} bytes left unread",
        unread(&watch)
    );
    dev.reset();
    // What a device whose guest overwrote its ring left unread would come
    // before the marker frame (and, one too big for the one marker buffer,
    // hold it up): the stopped device's tap is emptied first.
    discard_unread(&watch);
    still_works(mem, &mut dev, acked, &ours);
}

/// The device, started again on fresh queues, still moves a frame each way.
fn still_works(mem: &GuestMemoryMmap, dev: &mut NetDevice, acked: u64, ours: &OwnedFd) {
    let mut rxq = DriverQueue::new(mem, MARKER_RXQ, MARKER_QSIZE);
    let mut txq = DriverQueue::new(mem, MARKER_TXQ, MARKER_QSIZE);
    let mut marker = vec![0u8; VNET_HDR_LEN];
    marker.extend((0..60u8).map(|i| i ^ 0x5a));
    mem.write_slice(&marker, GuestAddress(TX_AREA))
        .expect("marker");
    let w = VRING_DESC_F_WRITE as u16;
    rxq.add_chain(
        mem,
        &[Desc {
            addr: GOOD_RX,
            len: GOOD_RX_LEN,
            flags: w,
        }],
    );
    txq.add_chain(
        mem,
        &[Desc {
            addr: TX_AREA,
            len: marker.len() as u32,
            flags: 0,
        }],
    );
    let (rx_evt, tx_evt) = (event(), event());
    dev.ack_features(acked);
    dev.activate(
        mem.clone(),
        interrupt(),
        vec![rxq.queue(MARKER_QSIZE), txq.queue(MARKER_QSIZE)],
        vec![
            rx_evt.try_clone().expect("eventfd"),
            tx_evt.try_clone().expect("eventfd"),
        ],
    )
    .expect("activate again");
    tx_evt.write(1).expect("kick");
    txq.wait_all_used(mem);
    let mut buf = vec![0u8; 2 * MAX_PACKET_LEN];
    let got = wait_for(HANG_TIMEOUT, || {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(ours.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        n == marker.len() as isize
    });
    assert!(got, "the marker frame did not come out");
    assert_eq!(&buf[VNET_HDR_LEN..marker.len()], &marker[VNET_HDR_LEN..]);
    let sent = wait_for(HANG_TIMEOUT, || send(ours, &marker));
    assert!(sent, "cannot send the marker frame");
    rxq.wait_all_used(mem);
    assert_eq!(
        rxq.used_elem(mem, 0).1 as usize,
        marker.len(),
        "marker delivery"
    );
    let mut got = vec![0u8; marker.len()];
    mem.read_slice(&mut got, GuestAddress(GOOD_RX))
        .expect("marker");
    assert_eq!(
        &got[VNET_HDR_LEN..],
        &marker[VNET_HDR_LEN..],
        "the marker arrived damaged"
    );
    dev.reset();
}

/// VERSION_1 and the offered features `mask` picks.
fn choose(offered: u64, mask: u32) -> u64 {
    let optional: Vec<u32> = (0..64)
        .filter(|b| *b != VIRTIO_F_VERSION_1 && offered & (1 << b) != 0)
        .collect();
    optional
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << (i % 32)) != 0)
        .fold(1 << VIRTIO_F_VERSION_1, |f, (_, b)| f | (1u64 << b))
}

fuzz_target!(|input: Input| {
    let mem = vmrun_fuzz::guest_memory(MEM_SIZE);
    let offered = NetDevice::new(
        None,
        NetConfig {
            mac: MAC,
            mtu: 1500,
        },
    )
    .expect("device")
    .avail_features();
    let acked = choose(offered, input.features);
    let mergeable = acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
    let tx = &input.tx[..input.tx.len().min(MAX_CHAINS)];
    let rx = &input.rx[..input.rx.len().min(MAX_CHAINS)];
    let packets = &input.packets[..input.packets.len().min(MAX_CHAINS)];
    sync_tx(&mem, tx, acked);
    sync_rx(&mem, rx, packets, mergeable);
    live(&mem, &input, input.features);
});
