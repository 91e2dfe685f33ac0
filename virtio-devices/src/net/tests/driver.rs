//! The guest side of a test device: both virtqueues in test guest memory,
//! driven as a virtio-net driver drives them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::test_utils::DriverQueue;
use crate::{GuestMemoryMmap, IrqTrigger, VirtioDevice};

pub(super) const MEM_SIZE: usize = 8 << 20;
const RX_RING: u64 = 0;
const TX_RING: u64 = 0x2000;
/// Where transmitted packets are written, up to 3 MiB.
const TX_AREA: u64 = 0x10_0000;
/// Where receive buffers are, up to 3 MiB.
const RX_AREA: u64 = 0x40_0000;
const AREA_LEN: u64 = 0x30_0000;

/// One descriptor: guest address, length, device-writable.
pub(super) type Desc = (u64, u32, bool);

/// A received packet as the driver sees it.
#[derive(Debug)]
pub(super) struct Received {
    /// The used entries it took: (head, used length).
    pub(super) entries: Vec<(u32, u32)>,
    pub(super) header: Vec<u8>,
    pub(super) frame: Vec<u8>,
}

/// One split virtqueue with chains allocated round-robin.
pub(super) struct Ring<'a> {
    mem: &'a GuestMemoryMmap,
    queue: DriverQueue<'a>,
    next_desc: u16,
    posted: u16,
    seen: u16,
    chains: HashMap<u16, Vec<Desc>>,
}

impl<'a> Ring<'a> {
    fn new(mem: &'a GuestMemoryMmap, base: u64) -> Self {
        Ring {
            mem,
            queue: DriverQueue::new(mem, base, QUEUE_SIZE),
            next_desc: 0,
            posted: 0,
            seen: 0,
            chains: HashMap::new(),
        }
    }

    /// Writes `descs` as one chain and makes it available; returns its head.
    pub(super) fn add_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        let size = self.queue.size;
        for (i, &(addr, len, writable)) in descs.iter().enumerate() {
            let index = (head + i as u16) % size;
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            self.queue
                .set_desc(index, addr, len, flags as u16, (index + 1) % size);
        }
        self.next_desc = (head + descs.len().max(1) as u16) % size;
        self.chains.insert(head, descs.to_vec());
        self.publish(head);
        head
    }

    /// Writes one raw descriptor (for chains `add_chain` cannot make).
    pub(super) fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u32, next: u16) {
        self.queue.set_desc(index, addr, len, flags as u16, next);
    }

    /// Makes the chain at `head` available.
    pub(super) fn publish(&mut self, head: u16) {
        self.queue.publish(self.posted, head);
        self.posted = self.posted.wrapping_add(1);
    }

    /// Skips `n` descriptors (left for raw chains).
    pub(super) fn reserve(&mut self, n: u16) -> u16 {
        let first = self.next_desc;
        self.next_desc = (first + n) % self.queue.size;
        first
    }

    pub(super) fn used_idx(&self) -> u16 {
        self.queue.used_idx()
    }

    /// The used entry at `pos`: (head, length).
    pub(super) fn used_elem(&self, pos: u16) -> (u32, u32) {
        self.queue.used_elem(pos)
    }

    /// Chains made available so far.
    pub(super) fn posted(&self) -> u16 {
        self.posted
    }

    /// The next used entry not looked at yet, waiting up to `timeout`.
    pub(super) fn next_used(&mut self, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        while self.queue.used_idx() == self.seen {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let entry = self.queue.used_elem(self.seen);
        self.seen = self.seen.wrapping_add(1);
        Some(entry)
    }

    /// The first `len` bytes the chain at `head` holds.
    fn read_chain(&self, head: u32, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut left = len as usize;
        for &(addr, desc_len, _) in &self.chains[&(head as u16)] {
            let n = left.min(desc_len as usize);
            let mut buf = vec![0u8; n];
            self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
            out.extend_from_slice(&buf);
            left -= n;
        }
        assert_eq!(left, 0, "used length beyond the chain");
        out
    }
}

/// The driver: both queues, their notification events and the interrupt.
pub(super) struct Guest<'a> {
    pub(super) mem: &'a GuestMemoryMmap,
    pub(super) rx: Ring<'a>,
    pub(super) tx: Ring<'a>,
    pub(super) irq: Arc<IrqTrigger>,
    rx_evt: EventFd,
    tx_evt: EventFd,
    tx_at: u64,
    rx_at: u64,
}

pub(super) fn test_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

impl<'a> Guest<'a> {
    /// Negotiates `features` and activates `dev` on fresh queues.
    pub(super) fn activate(mem: &'a GuestMemoryMmap, dev: &mut NetDevice, features: u64) -> Self {
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let rx_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let tx_evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let rx = Ring::new(mem, RX_RING);
        let tx = Ring::new(mem, TX_RING);
        dev.ack_features(features);
        dev.activate(
            mem.clone(),
            irq.clone(),
            vec![rx.queue.create_queue(), tx.queue.create_queue()],
            vec![rx_evt.try_clone().unwrap(), tx_evt.try_clone().unwrap()],
        )
        .unwrap();
        Guest {
            mem,
            rx,
            tx,
            irq,
            rx_evt,
            tx_evt,
            tx_at: TX_AREA,
            rx_at: RX_AREA,
        }
    }

    /// Negotiates every offered feature (all but mergeable buffers unless
    /// `mergeable`) and activates `dev`.
    pub(super) fn start(mem: &'a GuestMemoryMmap, dev: &mut NetDevice, mergeable: bool) -> Self {
        let features = features(dev, mergeable);
        Self::activate(mem, dev, features)
    }

    /// Activates `dev` (a restored VM's device) on these rings where the
    /// last device left them, as a restored transport does: every chain
    /// it did not return is still available. No notification.
    pub(super) fn resume(&self, dev: &mut NetDevice) {
        let queue = |ring: &Ring| {
            let mut queue = ring.queue.create_queue();
            queue.set_next_avail(ring.used_idx());
            queue.set_next_used(ring.used_idx());
            queue
        };
        dev.ack_features(features(dev, true));
        dev.activate(
            self.mem.clone(),
            self.irq.clone(),
            vec![queue(&self.rx), queue(&self.tx)],
            vec![
                self.rx_evt.try_clone().unwrap(),
                self.tx_evt.try_clone().unwrap(),
            ],
        )
        .unwrap();
    }

    pub(super) fn kick_tx(&self) {
        self.tx_evt.write(1).unwrap();
    }

    pub(super) fn kick_rx(&self) {
        self.rx_evt.write(1).unwrap();
    }

    /// Guest memory for `len` more bytes of transmit data.
    pub(super) fn tx_space(&mut self, len: usize) -> u64 {
        let at = self.tx_at;
        self.tx_at += (len as u64 + 15) & !15;
        assert!(self.tx_at <= TX_AREA + AREA_LEN, "test transmit area full");
        at
    }

    /// Writes `packet` into guest memory and makes it available as a chain
    /// of `parts` descriptors (about equal); returns its head. No kick.
    pub(super) fn queue_tx(&mut self, packet: &[u8], parts: usize) -> u16 {
        let at = self.tx_space(packet.len());
        self.mem.write_slice(packet, GuestAddress(at)).unwrap();
        let step = packet.len().div_ceil(parts.max(1)).max(1);
        let descs: Vec<Desc> = (0..packet.len())
            .step_by(step)
            .map(|off| {
                let len = step.min(packet.len() - off);
                (at + off as u64, len as u32, false)
            })
            .collect();
        self.tx.add_chain(&descs)
    }

    /// Kicks the transmit queue and waits until every chain is back.
    pub(super) fn flush_tx(&mut self) {
        self.kick_tx();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.tx.used_idx() != self.tx.posted() {
            assert!(Instant::now() < deadline, "transmit chains not returned");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Posts `count` receive buffers of `size` bytes (one descriptor
    /// each); returns their heads. No kick.
    pub(super) fn post_rx(&mut self, count: usize, size: u32) -> Vec<u16> {
        (0..count)
            .map(|_| {
                let at = self.rx_space(size);
                self.rx.add_chain(&[(at, size, true)])
            })
            .collect()
    }

    /// Guest memory for a receive buffer of `len` bytes.
    pub(super) fn rx_space(&mut self, len: u32) -> u64 {
        let at = self.rx_at;
        self.rx_at += (u64::from(len) + 15) & !15;
        assert!(self.rx_at <= RX_AREA + AREA_LEN, "test receive area full");
        at
    }

    /// The next packet (or empty buffer) the device returned, within
    /// `timeout`.
    pub(super) fn next_packet(&mut self, timeout: Duration) -> Option<Received> {
        let (head, len) = self.rx.next_used(timeout)?;
        let mut received = Received {
            entries: vec![(head, len)],
            header: Vec::new(),
            frame: Vec::new(),
        };
        if len == 0 {
            return Some(received);
        }
        let mut bytes = self.rx.read_chain(head, len);
        let num_buffers = u16::from_le_bytes([bytes[10], bytes[11]]);
        for _ in 1..num_buffers {
            let (head, len) = self
                .rx
                .next_used(Duration::ZERO)
                .expect("a packet's buffers are published together");
            bytes.extend(self.rx.read_chain(head, len));
            received.entries.push((head, len));
        }
        received.frame = bytes.split_off(VNET_HDR_LEN);
        received.header = bytes;
        Some(received)
    }

    /// The next received test frame (skipping what the host kernel sends
    /// on its own), within `timeout`.
    pub(super) fn next_test_frame(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let received = self.next_packet(left)?;
            if is_test_frame(&received.frame) {
                return Some(received);
            }
        }
    }
}
