//! Test harness: a simulated guest driver for the vsock device, with its
//! virtqueues in test guest memory.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::packet::{VsockHeader, HEADER_SIZE};
use super::*;
use crate::test_utils::DriverQueue;
use crate::{GuestMemoryMmap, IrqTrigger, VirtioDevice};

pub(crate) const GUEST_CID: u64 = 3;
pub(crate) const MEM_SIZE: usize = 16 << 20;
pub(crate) const RX_BUF_SIZE: u32 = 4096;
/// Buffers in flight per queue (two descriptors each).
const SLOTS: u16 = 128;
const RXQ_ADDR: u64 = 0;
const TXQ_ADDR: u64 = 0x1_0000;
const EVQ_ADDR: u64 = 0x2_0000;
pub(crate) const EV_BUF_ADDR: u64 = 0x3_0000;
const RX_BUFS: u64 = 0x10_0000;
const RX_SLOT: u64 = 0x2000;
const TX_BUFS: u64 = 0x20_0000;
const TX_SLOT: u64 = 0x1_1000;
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// A temporary directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "vmrun-vsock-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn test_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// Polls `f` until it returns `Some` or [`TIMEOUT`] passes.
pub(crate) fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The guest side of the three vsock queues.
pub(crate) struct TestGuest<'a> {
    pub(crate) mem: &'a GuestMemoryMmap,
    rxq: DriverQueue<'a>,
    txq: DriverQueue<'a>,
    evq: DriverQueue<'a>,
    rx_evt: EventFd,
    tx_evt: EventFd,
    ev_evt: EventFd,
    pub(crate) irq: Arc<IrqTrigger>,
    rx_posted: u16,
    rx_seen: u16,
    tx_posted: u16,
    /// Post a new RX buffer for each one received.
    pub(crate) auto_rx: bool,
}

impl<'a> TestGuest<'a> {
    pub(crate) fn new(mem: &'a GuestMemoryMmap) -> Self {
        TestGuest {
            mem,
            rxq: DriverQueue::new(mem, RXQ_ADDR, QUEUE_SIZE),
            txq: DriverQueue::new(mem, TXQ_ADDR, QUEUE_SIZE),
            evq: DriverQueue::new(mem, EVQ_ADDR, QUEUE_SIZE),
            rx_evt: EventFd::new(EFD_NONBLOCK).unwrap(),
            tx_evt: EventFd::new(EFD_NONBLOCK).unwrap(),
            ev_evt: EventFd::new(EFD_NONBLOCK).unwrap(),
            irq: Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap())),
            rx_posted: 0,
            rx_seen: 0,
            tx_posted: 0,
            auto_rx: true,
        }
    }

    /// Activates `dev` on this guest's queues, with `rx_bufs` RX buffers and
    /// a few event buffers posted.
    pub(crate) fn activate(&mut self, dev: &mut dyn VirtioDevice, rx_bufs: u16) {
        let queues: Vec<Queue> = [&self.rxq, &self.txq, &self.evq]
            .iter()
            .map(|q| q.create_queue())
            .collect();
        let evts = [&self.rx_evt, &self.tx_evt, &self.ev_evt]
            .iter()
            .map(|e| e.try_clone().unwrap())
            .collect();
        // Event buffers, as the Linux driver posts them.
        for i in 0..4u16 {
            self.evq.set_desc(
                i,
                EV_BUF_ADDR + u64::from(i) * 8,
                8,
                VRING_DESC_F_WRITE as u16,
                0,
            );
            self.evq.publish(i, i);
        }
        dev.activate(self.mem.clone(), self.irq.clone(), queues, evts)
            .unwrap();
        self.ev_evt.write(1).unwrap();
        self.post_rx(rx_bufs);
    }

    /// Event buffers the device returned, and the event id in the first.
    pub(crate) fn events(&self) -> (u16, u32) {
        let first = self.mem.read_obj::<u32>(GuestAddress(EV_BUF_ADDR)).unwrap();
        (self.evq.used_idx(), u32::from_le(first))
    }

    /// Posts up to `n` RX buffers and notifies the device.
    pub(crate) fn post_rx(&mut self, n: u16) {
        for _ in 0..n {
            if self.rx_posted.wrapping_sub(self.rx_seen) >= SLOTS {
                break;
            }
            let slot = self.rx_posted % SLOTS;
            let hdr = RX_BUFS + u64::from(slot) * RX_SLOT;
            let w = VRING_DESC_F_WRITE as u16;
            self.rxq.set_desc(
                2 * slot,
                hdr,
                HEADER_SIZE as u32,
                w | VRING_DESC_F_NEXT as u16,
                2 * slot + 1,
            );
            self.rxq
                .set_desc(2 * slot + 1, hdr + 0x100, RX_BUF_SIZE, w, 0);
            self.rxq.publish(self.rx_posted, 2 * slot);
            self.rx_posted = self.rx_posted.wrapping_add(1);
        }
        self.rx_evt.write(1).unwrap();
    }

    /// Number of packets the device returned that were not read yet.
    pub(crate) fn rx_available(&self) -> u16 {
        self.rxq.used_idx().wrapping_sub(self.rx_seen)
    }

    /// Receives the next packet from the device, waiting up to `timeout`.
    pub(crate) fn try_recv(&mut self, timeout: Duration) -> Option<(VsockHeader, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        while self.rx_available() == 0 {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (id, used_len) = self.rxq.used_elem(self.rx_seen);
        self.rx_seen = self.rx_seen.wrapping_add(1);
        let slot = u64::from(id / 2);
        let hdr_addr = RX_BUFS + slot * RX_SLOT;
        let mut raw = [0u8; HEADER_SIZE];
        self.mem
            .read_slice(&mut raw, GuestAddress(hdr_addr))
            .unwrap();
        let hdr = VsockHeader::from_bytes(&raw);
        assert!(
            hdr.len <= RX_BUF_SIZE,
            "packet longer than the RX buffer: {hdr:?}"
        );
        assert_eq!(
            used_len,
            HEADER_SIZE as u32 + hdr.len,
            "used length does not match {hdr:?}"
        );
        let mut data = vec![0u8; hdr.len as usize];
        self.mem
            .read_slice(&mut data, GuestAddress(hdr_addr + 0x100))
            .unwrap();
        if self.auto_rx {
            self.post_rx(1);
        }
        Some((hdr, data))
    }

    /// Receives the next packet, failing the test after [`TIMEOUT`].
    pub(crate) fn recv(&mut self) -> (VsockHeader, Vec<u8>) {
        self.try_recv(TIMEOUT).expect("no packet from the device")
    }

    /// Receives the next packet and checks its operation.
    pub(crate) fn expect(&mut self, op: u16) -> (VsockHeader, Vec<u8>) {
        let (hdr, data) = self.recv();
        assert_eq!(hdr.op, op, "unexpected packet {hdr:?}");
        assert_eq!((hdr.src_cid, hdr.dst_cid), (VSOCK_HOST_CID, GUEST_CID));
        (hdr, data)
    }

    /// Asserts that no packet arrives within `wait`.
    pub(crate) fn expect_nothing(&mut self, wait: Duration) {
        if let Some((hdr, _)) = self.try_recv(wait) {
            panic!("unexpected packet {hdr:?}");
        }
    }

    /// Waits until the device consumed every TX buffer posted so far.
    pub(crate) fn wait_tx_done(&self) {
        wait_for("TX queue to drain", || {
            (self.tx_used() == self.tx_posted).then_some(())
        });
    }

    pub(crate) fn tx_used(&self) -> u16 {
        self.txq.used_idx()
    }

    pub(crate) fn tx_posted(&self) -> u16 {
        self.tx_posted
    }

    /// Puts a raw descriptor chain on the TX queue; `descs` are
    /// (address, length, flags) and are chained in order.
    pub(crate) fn send_chain(&mut self, descs: &[(u64, u32, u16)]) {
        wait_for("a free TX slot", || {
            (self.tx_posted.wrapping_sub(self.tx_used()) < SLOTS).then_some(())
        });
        let slot = self.tx_posted % SLOTS;
        let first = 2 * slot;
        assert!(descs.len() <= 2, "the harness chains at most 2 descriptors");
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = first + i as u16;
            let (flags, next) = if i + 1 < descs.len() {
                (flags | VRING_DESC_F_NEXT as u16, idx + 1)
            } else {
                (flags, 0)
            };
            self.txq.set_desc(idx, addr, len, flags, next);
        }
        self.txq.publish(self.tx_posted, first);
        self.tx_posted = self.tx_posted.wrapping_add(1);
        self.tx_evt.write(1).unwrap();
    }

    /// Address of the buffers of the next TX slot (header at +0, data at
    /// +0x100).
    pub(crate) fn next_tx_buf(&self) -> u64 {
        TX_BUFS + u64::from(self.tx_posted % SLOTS) * TX_SLOT
    }

    /// Sends a packet with `hdr` (its `len` set from `data`).
    pub(crate) fn send(&mut self, mut hdr: VsockHeader, data: &[u8]) {
        wait_for("a free TX slot", || {
            (self.tx_posted.wrapping_sub(self.tx_used()) < SLOTS).then_some(())
        });
        hdr.len = data.len() as u32;
        let buf = self.next_tx_buf();
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(buf))
            .unwrap();
        if data.is_empty() {
            self.send_chain(&[(buf, HEADER_SIZE as u32, 0)]);
        } else {
            self.mem
                .write_slice(data, GuestAddress(buf + 0x100))
                .unwrap();
            self.send_chain(&[
                (buf, HEADER_SIZE as u32, 0),
                (buf + 0x100, data.len() as u32, 0),
            ]);
        }
    }
}

/// A header from guest port `guest_port` to host port `host_port`.
pub(crate) fn guest_pkt(op: u16, guest_port: u32, host_port: u32) -> VsockHeader {
    VsockHeader {
        src_cid: GUEST_CID,
        dst_cid: VSOCK_HOST_CID,
        src_port: guest_port,
        dst_port: host_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 256 * 1024,
        fwd_cnt: 0,
    }
}
