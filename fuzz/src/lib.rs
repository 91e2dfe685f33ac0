//! What the fuzz targets share: the driver side of a split virtqueue in
//! guest memory, and waiting for a device's worker thread.
//!
//! The devices serve their queues in a worker thread of their own, so a
//! target hands them descriptor chains the way a guest driver does (write
//! the descriptors, publish them in the available ring, signal the queue
//! event) and then waits until the device put every chain in the used ring.
//! Panics in the worker abort the process too (libfuzzer-sys installs an
//! aborting panic hook), so they are reported as crashes of the input.

pub mod net;

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_devices::{GuestMemoryMmap, IrqTrigger};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// How long a device may take for work it always completes; past it the
/// input is reported as a hang.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(10);

/// Guest memory of `size` bytes at guest address 0.
pub fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory")
}

/// A non-blocking event, as the VMM creates for irqfds and queue events.
pub fn event() -> EventFd {
    EventFd::new(EFD_NONBLOCK).expect("eventfd")
}

/// A device interrupt on a fresh irqfd.
pub fn interrupt() -> Arc<IrqTrigger> {
    Arc::new(IrqTrigger::new(event()))
}

/// Polls `done` until it holds or `timeout` passes; returns whether it held.
/// Spins (yielding) first, then sleeps briefly: device round trips take
/// microseconds.
pub fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        if spins < 2000 {
            spins += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Whether `evt` has been written and not read since (its counter is not 0).
pub fn is_signalled(evt: &EventFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: evt.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and the
    // count (1) matches; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

/// One descriptor of a chain: guest address, length, device-writable.
/// Chains built from these get `NEXT` flags and indices set by the queue.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    /// Extra flag bits besides NEXT (WRITE, INDIRECT).
    pub flags: u16,
}

/// A split virtqueue as a driver lays it out: descriptor table, available
/// ring and used ring at fixed, non-overlapping addresses.
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// Next free descriptor (chains are allocated round-robin).
    next_desc: u16,
    /// The available index published so far.
    posted: u16,
}

impl DriverQueue {
    /// Lays a queue of `size` entries out from `base` (16-byte aligned) and
    /// zeroes it; it takes less than `base + 19 * size + 16` bytes.
    pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        let end = used + 6 + 8 * n;
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .expect("queue memory");
        DriverQueue {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            posted: 0,
        }
    }

    /// The device side of this queue, configured as a driver would.
    pub fn queue(&self, max_size: u16) -> Queue {
        let mut q = Queue::new(max_size).expect("queue");
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        q
    }

    /// Writes descriptor `index` (raw fields).
    pub fn set_desc(
        &self,
        mem: &GuestMemoryMmap,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let at = self.desc + 16 * u64::from(index % self.size);
        mem.write_slice(&raw, GuestAddress(at)).expect("descriptor");
    }

    /// Makes `head` available and publishes the new available index.
    pub fn publish(&mut self, mem: &GuestMemoryMmap, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.posted % self.size);
        mem.write_obj(head.to_le(), GuestAddress(slot))
            .expect("avail ring");
        self.posted = self.posted.wrapping_add(1);
        mem.store(
            self.posted.to_le(),
            GuestAddress(self.avail + 2),
            Ordering::Release,
        )
        .expect("avail idx");
    }

    /// Writes `descs` as one chain into free descriptors and publishes it;
    /// returns its head. At most `size` descriptors are used (an empty
    /// chain becomes one zero-length descriptor).
    pub fn add_chain(&mut self, mem: &GuestMemoryMmap, descs: &[Desc]) -> u16 {
        let zero = [Desc {
            addr: 0,
            len: 0,
            flags: 0,
        }];
        let descs = if descs.is_empty() { &zero[..] } else { descs };
        let n = descs.len().min(usize::from(self.size));
        let head = self.next_desc % self.size;
        for (i, d) in descs[..n].iter().enumerate() {
            let index = (head + i as u16) % self.size;
            let next = (index + 1) % self.size;
            let flags = if i + 1 < n {
                d.flags | VRING_DESC_F_NEXT as u16
            } else {
                d.flags & !(VRING_DESC_F_NEXT as u16)
            };
            self.set_desc(mem, index, d.addr, d.len, flags, next);
        }
        self.next_desc = (head + n as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// Chains published so far.
    pub fn posted(&self) -> u16 {
        self.posted
    }

    /// The used index the device wrote.
    pub fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        u16::from_le(
            mem.load(GuestAddress(self.used + 2), Ordering::Acquire)
                .expect("used idx"),
        )
    }

    /// The used element at position `pos`: (descriptor id, length).
    pub fn used_elem(&self, mem: &GuestMemoryMmap, pos: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(pos % self.size);
        let id: u32 = mem.read_obj(GuestAddress(at)).expect("used elem");
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).expect("used elem");
        (u32::from_le(id), u32::from_le(len))
    }

    /// Waits until the device returned every chain published so far;
    /// panics (a hang of the device) after [`HANG_TIMEOUT`].
    pub fn wait_all_used(&self, mem: &GuestMemoryMmap) {
        let done = wait_for(HANG_TIMEOUT, || self.used_idx(mem) == self.posted);
        assert!(
            done,
            "device hang: {} of {} chains returned after {HANG_TIMEOUT:?}",
            self.used_idx(mem),
            self.posted
        );
    }
}

/// A fresh, empty directory below the system's temp directory, removed
/// (with everything in it) on drop.
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> Self {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vmrun-fuzz-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
