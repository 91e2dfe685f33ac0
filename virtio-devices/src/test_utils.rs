//! Test helpers: the driver side of a split virtqueue in test guest memory.
//!
//! (virtio-queue's `MockSplitQueue` lays the used ring out right after the
//! first `size` *bytes* of the available ring, so on large queues the two
//! overlap; it is only used for small, short-lived queues in this crate.)

#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemoryMmap;

/// A split virtqueue as a driver sees it: descriptor table, available ring
/// and used ring at fixed, non-overlapping addresses.
pub(crate) struct DriverQueue<'a> {
    mem: &'a GuestMemoryMmap,
    pub(crate) size: u16,
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
}

impl<'a> DriverQueue<'a> {
    /// Lays a queue of `size` entries out from `base` (16-byte aligned) and
    /// zeroes it. It takes less than `base + 19 * size + 16` bytes.
    pub(crate) fn new(mem: &'a GuestMemoryMmap, base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        let end = used + 6 + 8 * n;
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .unwrap();
        DriverQueue {
            mem,
            size,
            desc,
            avail,
            used,
        }
    }

    /// A device-side queue configured like a driver would.
    pub(crate) fn create_queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
        q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
        q.set_ready(true);
        q
    }

    pub(crate) fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let at = self.desc + 16 * u64::from(index);
        self.mem.write_slice(&raw, GuestAddress(at)).unwrap();
    }

    /// Makes `head` available at position `pos` (taken modulo the size) and
    /// publishes avail idx `pos + 1`.
    pub(crate) fn publish(&self, pos: u16, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(pos % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.mem
            .store(
                pos.wrapping_add(1).to_le(),
                GuestAddress(self.avail + 2),
                Ordering::Release,
            )
            .unwrap();
    }

    pub(crate) fn used_idx(&self) -> u16 {
        u16::from_le(
            self.mem
                .load(GuestAddress(self.used + 2), Ordering::Acquire)
                .unwrap(),
        )
    }

    /// The used element at position `pos`: (descriptor id, length).
    pub(crate) fn used_elem(&self, pos: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(pos % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }
}
