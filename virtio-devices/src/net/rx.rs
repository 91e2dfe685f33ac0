//! One received packet (virtio-net header and frame) into the guest's
//! receive buffers: as many as it needs with `VIRTIO_NET_F_MRG_RXBUF`, one
//! without, published to the driver together.
//!
//! Buffers are returned in the order they were taken and none is kept
//! between calls: a packet that does not fit yet puts back what it took,
//! so a stopped device has returned every buffer it took (what a snapshot
//! of the transport assumes).

use std::ops::Range;

use tracing::{debug, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use super::header::NUM_BUFFERS_OFFSET;
use super::{QUEUE_SIZE, VNET_HDR_LEN};
use crate::GuestMemoryMmap;

/// Most descriptors one receive buffer may have (Linux posts one per
/// mergeable buffer, about 20 for a big one).
const MAX_BUFFER_DESCRIPTORS: usize = QUEUE_SIZE as usize;

/// What is wrong with one receive buffer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BufferError {
    /// A read-only descriptor: receive buffers are written by the device.
    #[error("descriptor {addr:#x}+{len} is read-only in a receive buffer")]
    ReadOnly {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A descriptor outside guest memory.
    #[error("descriptor {addr:#x}+{len} is not in guest memory")]
    BadAddress {
        /// Its guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain ends on a descriptor that says there is more.
    #[error("the chain is cut short (a loop, a bad next index or indirect table)")]
    Truncated,
    /// More than [`MAX_BUFFER_DESCRIPTORS`] descriptors.
    #[error("more than {MAX_BUFFER_DESCRIPTORS} descriptors")]
    TooManyDescriptors,
    /// No room at all, or (first buffer of a packet) none for the header.
    #[error("{0} bytes of room: too small")]
    TooSmall(usize),
}

/// Why a packet is dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RxError {
    /// Less than a header.
    #[error("{0} bytes is shorter than the {VNET_HDR_LEN}-byte header")]
    TooShort(usize),
    /// More than every buffer the guest can post at once (or, without
    /// mergeable buffers, than its buffer) holds.
    #[error("{len} bytes do not fit in the {room} bytes of buffers the guest can post")]
    DoesNotFit {
        /// The packet's length.
        len: usize,
        /// Room in the buffers found.
        room: usize,
    },
    /// A bad buffer came after the packet's first: the buffers taken so far
    /// are returned empty with it.
    #[error("receive buffer {head}: {source}")]
    Buffer {
        /// The bad buffer's head descriptor.
        head: u16,
        /// What is wrong with it.
        source: BufferError,
    },
    /// Writing guest memory failed.
    #[error("writing guest memory failed: {0}")]
    Memory(String),
}

/// What became of a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// In the guest's buffers, this many of them.
    Delivered(u16),
    /// The guest has not posted enough buffers yet: try again once it has.
    NoBuffers,
    /// Never going to be delivered.
    Dropped(RxError),
}

/// A delivery and how many used-ring entries it added (bad buffers
/// returned empty included): the guest needs an interrupt if any.
#[derive(Debug, PartialEq, Eq)]
pub struct RxResult {
    /// What became of the packet.
    pub delivery: Delivery,
    /// Used-ring entries added.
    pub used: u16,
}

/// A receive buffer taken for the packet being delivered.
struct Taken {
    head: u16,
    /// Its descriptors, in [`RxScratch::segments`].
    segments: Range<usize>,
    room: usize,
}

/// Allocations reused from one packet to the next, so that delivering a
/// packet allocates nothing (see [`RxScratch::new`]).
pub struct RxScratch {
    segments: Vec<(GuestAddress, u32)>,
    taken: Vec<Taken>,
    used: Vec<(u16, u32)>,
}

impl RxScratch {
    /// Room for a queue's worth of buffers of one descriptor each, which
    /// is what a Linux driver posts. Made with the device rather than in
    /// its worker thread: glibc opens `/proc/sys/vm/overcommit_memory` the
    /// first time it gives memory of a thread's own heap back, and a
    /// worker's seccomp filter has no `openat`; growing these keeps them in
    /// the heap they were made in.
    pub fn new() -> Self {
        let n = usize::from(QUEUE_SIZE);
        RxScratch {
            segments: Vec::with_capacity(n),
            taken: Vec::with_capacity(n),
            used: Vec::with_capacity(n),
        }
    }
}

impl Default for RxScratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Delivers `packet` (header first; its `num_buffers` is filled in here)
/// into the buffers of `queue`. Bad buffers before the packet's first good
/// one are returned empty and skipped.
pub fn deliver(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    packet: &mut [u8],
    mergeable: bool,
    scratch: &mut RxScratch,
) -> RxResult {
    let mut result = RxResult {
        delivery: Delivery::NoBuffers,
        used: 0,
    };
    if packet.len() < VNET_HDR_LEN {
        result.delivery = Delivery::Dropped(RxError::TooShort(packet.len()));
        return result;
    }
    scratch.segments.clear();
    scratch.taken.clear();
    let max_buffers = if mergeable { queue.size() } else { 1 };
    let mut start = queue.next_avail();
    let mut room = 0usize;
    while room < packet.len() {
        if scratch.taken.len() >= usize::from(max_buffers) {
            queue.set_next_avail(start);
            let len = packet.len();
            result.delivery = Delivery::Dropped(RxError::DoesNotFit { len, room });
            return result;
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            queue.set_next_avail(start);
            return result;
        };
        let head = chain.head_index();
        let first = scratch.taken.is_empty();
        match take_buffer(mem, chain, first, &mut scratch.segments) {
            Ok(taken) => {
                room += taken.room;
                scratch.taken.push(taken);
            }
            Err(source) if first => {
                debug!("virtio-net: returning a bad receive buffer empty: {source}");
                scratch.used.clear();
                scratch.used.push((head, 0));
                result.used += publish(mem, queue, &scratch.used);
                start = queue.next_avail();
            }
            Err(source) => {
                // The buffers taken are returned before the bad one, in the
                // order they were taken.
                scratch.used.clear();
                scratch
                    .used
                    .extend(scratch.taken.iter().map(|t| (t.head, 0)));
                scratch.used.push((head, 0));
                result.used += publish(mem, queue, &scratch.used);
                result.delivery = Delivery::Dropped(RxError::Buffer { head, source });
                return result;
            }
        }
    }
    let buffers = scratch.taken.len() as u16;
    packet[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&buffers.to_le_bytes());
    match write_packet(mem, packet, scratch) {
        Ok(()) => result.delivery = Delivery::Delivered(buffers),
        Err(e) => {
            scratch.used.clear();
            scratch
                .used
                .extend(scratch.taken.iter().map(|t| (t.head, 0)));
            result.delivery = Delivery::Dropped(RxError::Memory(e.to_string()));
        }
    }
    result.used += publish(mem, queue, &scratch.used);
    result
}

/// Checks one receive buffer and records its descriptors.
fn take_buffer(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    first: bool,
    segments: &mut Vec<(GuestAddress, u32)>,
) -> Result<Taken, BufferError> {
    let head = chain.head_index();
    let begin = segments.len();
    let room = check_buffer(mem, chain, segments)?;
    // The driver reads the whole header from the first buffer.
    let needed = if first { VNET_HDR_LEN } else { 1 };
    if room < needed {
        segments.truncate(begin);
        return Err(BufferError::TooSmall(room));
    }
    Ok(Taken {
        head,
        segments: begin..segments.len(),
        room,
    })
}

fn check_buffer(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    segments: &mut Vec<(GuestAddress, u32)>,
) -> Result<usize, BufferError> {
    let begin = segments.len();
    let mut room = 0usize;
    let mut more = None;
    let fail = |segments: &mut Vec<_>, e| {
        segments.truncate(begin);
        Err(e)
    };
    for desc in chain {
        more = Some(desc.has_next());
        let (addr, len) = (desc.addr(), desc.len());
        if !desc.is_write_only() {
            return fail(segments, BufferError::ReadOnly { addr: addr.0, len });
        }
        if !mem.check_range(addr, len as usize) {
            return fail(segments, BufferError::BadAddress { addr: addr.0, len });
        }
        if segments.len() - begin == MAX_BUFFER_DESCRIPTORS {
            return fail(segments, BufferError::TooManyDescriptors);
        }
        segments.push((addr, len));
        // The iterator refuses chains whose lengths overflow a u32.
        room += len as usize;
    }
    match more {
        None => fail(segments, BufferError::TooSmall(0)),
        Some(true) => fail(segments, BufferError::Truncated),
        Some(false) => Ok(room),
    }
}

/// Copies `packet` into the taken buffers, in order, and lists their used
/// lengths in `scratch.used`.
fn write_packet(
    mem: &GuestMemoryMmap,
    packet: &[u8],
    scratch: &mut RxScratch,
) -> Result<(), GuestMemoryError> {
    scratch.used.clear();
    let mut rest = packet;
    for taken in &scratch.taken {
        let mut written = 0usize;
        for &(addr, len) in scratch.segments.get(taken.segments.clone()).unwrap_or(&[]) {
            let n = rest.len().min(len as usize);
            let (now, later) = rest.split_at(n);
            mem.write_slice(now, addr)?;
            rest = later;
            written += n;
            if rest.is_empty() {
                break;
            }
        }
        // At most MAX_PACKET_LEN bytes in all.
        scratch.used.push((taken.head, written as u32));
    }
    Ok(())
}

/// Puts `used` into the used ring and makes all of it visible to the
/// driver at once (one index update): a driver that sees the first buffer
/// of a packet must find the others there too. Returns the entries added.
///
/// The entries but the last are written here and the last through
/// [`Queue::add_used`], which publishes the index. The queue then counts one
/// entry where there were several, which only `needs_notification` with
/// `VIRTIO_RING_F_EVENT_IDX` would get wrong: the device does not offer it.
pub(crate) fn publish(mem: &GuestMemoryMmap, queue: &mut Queue, used: &[(u16, u32)]) -> u16 {
    let Some((&(last_head, last_len), rest)) = used.split_last() else {
        return 0;
    };
    let base = queue.next_used();
    for (i, &(head, len)) in rest.iter().enumerate() {
        let slot = u64::from(base.wrapping_add(i as u16) % queue.size());
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        // The used ring was checked to lie in guest memory at activation.
        let at = GuestAddress(queue.used_ring()).checked_add(4 + 8 * slot);
        if let Err(e) = at.map_or(Err(GuestMemoryError::InvalidBackendAddress), |at| {
            mem.write_slice(&elem, at)
        }) {
            warn!("virtio-net: failed to return receive buffers: {e}");
            return 0;
        }
    }
    queue.set_next_used(base.wrapping_add(rest.len() as u16));
    if let Err(e) = queue.add_used(mem, last_head, last_len) {
        queue.set_next_used(base);
        warn!("virtio-net: failed to return receive buffers: {e}");
        return 0;
    }
    used.len() as u16
}
