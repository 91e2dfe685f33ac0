//! Descriptor chains for the virtio-net target: laid out in guest memory
//! from what the fuzzer chose, with what a good chain must give.

use arbitrary::Arbitrary;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_devices::net::{MAX_PACKET_LEN, VNET_HDR_LEN};
use virtio_devices::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::{Desc, DriverQueue};

#[derive(Arbitrary, Debug)]
pub struct Part {
    pub len: u16,
    pub writable: bool,
    /// Points here instead (wrapped into twice the guest memory).
    pub wild: Option<u32>,
}

#[derive(Arbitrary, Debug)]
pub enum Chain {
    /// Header then payload (`fill` repeated) over `parts`, or a receive
    /// buffer made of `parts`.
    Structured {
        header: [u8; VNET_HDR_LEN],
        fill: u8,
        parts: Vec<Part>,
        indirect: bool,
    },
    /// Raw descriptors at consecutive indices: address, length, flags
    /// (WRITE, NEXT, INDIRECT bits kept), next index.
    Raw(Vec<(u32, u32, u8, u8)>),
}

/// A bump allocator over one area of guest memory.
pub struct Area {
    start: u64,
    len: u64,
    next: u64,
}

impl Area {
    pub fn new(start: u64, len: u64) -> Self {
        Area {
            start,
            len,
            next: 0,
        }
    }

    pub fn take(&mut self, n: u64) -> u64 {
        if self.next + n > self.len {
            self.next = 0;
        }
        let at = self.start + self.next;
        self.next = (self.next + n + 15) & !15;
        at
    }
}

/// A chain laid out in guest memory: its descriptors, and, if it is a
/// well-formed one, its bytes (transmit) or room (receive).
pub struct Laid {
    pub descs: Vec<Desc>,
    pub expected: Option<Vec<u8>>,
    pub room: Option<u64>,
}

/// A guest address anywhere in twice the guest memory.
fn wild(mem: &GuestMemoryMmap, addr: u32) -> u64 {
    u64::from(addr) % (2 * (mem.last_addr().0 + 1))
}

/// Lays `chain` out; `writable` is the direction a good one has.
pub fn lay_out(mem: &GuestMemoryMmap, area: &mut Area, chain: &Chain, writable: bool) -> Laid {
    let w = VRING_DESC_F_WRITE as u16;
    match chain {
        Chain::Structured {
            header,
            fill,
            parts,
            indirect,
        } => {
            let mut descs = Vec::new();
            let mut bytes = Vec::new();
            let mut good = !parts.is_empty();
            for (i, part) in parts.iter().take(8).enumerate() {
                let len = u64::from(part.len) % (MAX_PACKET_LEN as u64 / 4);
                let addr = match part.wild {
                    Some(a) => {
                        good = false;
                        wild(mem, a)
                    }
                    None => area.take(len),
                };
                if part.wild.is_none() {
                    let content: Vec<u8> = (0..len)
                        .map(|j| {
                            let at = bytes.len() + j as usize;
                            header
                                .get(at)
                                .copied()
                                .unwrap_or_else(|| fill.wrapping_add((at + i) as u8))
                        })
                        .collect();
                    mem.write_slice(&content, GuestAddress(addr))
                        .expect("chain data");
                    bytes.extend(content);
                }
                good &= part.writable == writable;
                descs.push(Desc {
                    addr,
                    len: len as u32,
                    flags: if part.writable { w } else { 0 },
                });
            }
            if *indirect && !descs.is_empty() {
                let table = area.take(16 * descs.len() as u64);
                for (j, d) in descs.iter().enumerate() {
                    let last = j + 1 == descs.len();
                    let flags = d.flags | if last { 0 } else { VRING_DESC_F_NEXT as u16 };
                    let mut raw = [0u8; 16];
                    raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
                    raw[8..12].copy_from_slice(&d.len.to_le_bytes());
                    raw[12..14].copy_from_slice(&flags.to_le_bytes());
                    raw[14..16].copy_from_slice(&(j as u16 + 1).to_le_bytes());
                    mem.write_slice(&raw, GuestAddress(table + 16 * j as u64))
                        .expect("indirect table");
                }
                descs = vec![Desc {
                    addr: table,
                    len: 16 * descs.len() as u32,
                    flags: VRING_DESC_F_INDIRECT as u16,
                }];
            }
            let room = bytes.len() as u64;
            Laid {
                descs,
                expected: good.then_some(bytes),
                room: (good || !writable).then_some(room),
            }
        }
        Chain::Raw(raw) => Laid {
            descs: raw
                .iter()
                .take(8)
                .map(|&(addr, len, flags, _)| Desc {
                    addr: wild(mem, addr),
                    len: len % (2 * MAX_PACKET_LEN as u32),
                    flags: u16::from(flags)
                        & (w | VRING_DESC_F_INDIRECT as u16 | VRING_DESC_F_NEXT as u16),
                })
                .collect(),
            expected: None,
            room: None,
        },
    }
}

/// Publishes `laid` on `q`; raw chains keep their own NEXT flags (and so
/// may loop or run off the table).
pub fn publish(
    mem: &GuestMemoryMmap,
    q: &mut DriverQueue,
    laid: &Laid,
    raw_next: Option<&[u8]>,
) -> u16 {
    match raw_next {
        None => q.add_chain(mem, &laid.descs),
        Some(next) => {
            let head = q.add_chain(mem, &laid.descs);
            for (i, d) in laid.descs.iter().enumerate() {
                let index = (head + i as u16) % q.size;
                let nx = next.get(i).map_or(0, |&n| u16::from(n));
                q.set_desc(mem, index, d.addr, d.len, d.flags, nx % (2 * q.size));
            }
            head
        }
    }
}

pub fn raw_nexts(chain: &Chain) -> Option<Vec<u8>> {
    match chain {
        Chain::Raw(raw) => Some(raw.iter().take(8).map(|r| r.3).collect()),
        Chain::Structured { .. } => None,
    }
}
