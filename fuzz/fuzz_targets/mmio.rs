//! The virtio-mmio transport wrapping a real device (virtio-rng) over guest
//! memory: sequences of register reads and writes at arbitrary offsets and
//! sizes, guest memory writes, descriptors and notifications, so that a
//! driver's whole life (negotiation, queue setup, DRIVER_OK, requests,
//! reset) and every wrong turn in it reach the transport and the device.
//!
//! Besides raw register accesses the input has a few driver-shaped steps
//! (`Init`, `Desc`, `Publish`) that set queue 0 up at fixed addresses, so
//! that the fuzzer reaches the device's request path quickly; raw accesses
//! can still put the rings anywhere.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_devices::{GuestMemoryMmap, MmioTransport, RngDevice};
use vm_memory::{Bytes, GuestAddress};
use vmrun_fuzz::{interrupt, is_signalled, wait_for};

const MEM_SIZE: usize = 0x1_0000;
/// Where `Init` puts queue 0 (room for 256 entries each).
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// How long to wait for the device to catch up after a notification. The
/// device may legitimately never return a chain (a ring the guest broke),
/// so running out of time is not an error.
const SETTLE: Duration = Duration::from_millis(5);
/// Largest queue of the rng device.
const RNG_QUEUE_MAX: u16 = 256;

#[derive(Arbitrary, Debug)]
enum Size {
    B1,
    B2,
    B4,
    B8,
    Other(u8),
}

impl Size {
    fn len(&self) -> usize {
        match self {
            Size::B1 => 1,
            Size::B2 => 2,
            Size::B4 => 4,
            Size::B8 => 8,
            Size::Other(n) => usize::from(*n % 17),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A register read; offsets past the 4 KiB window included.
    Read { offset: u16, size: Size },
    /// A register write.
    Write { offset: u16, size: Size, value: u64 },
    /// A 32-bit register write (most registers are 32-bit only).
    Write32 { reg: u8, value: u32 },
    /// The usual driver bring-up: reset, ACKNOWLEDGE, DRIVER, VERSION_1,
    /// FEATURES_OK, queue 0 at DESC/AVAIL/USED, ready, DRIVER_OK.
    Init { size_log2: u8, skip_driver_ok: bool },
    /// Descriptor `index` of the queue `Init` sets up.
    Desc {
        index: u8,
        addr: u16,
        outside: bool,
        len: u16,
        flags: u8,
        next: u8,
    },
    /// Makes `head` available in the queue `Init` sets up.
    Publish { head: u8 },
    /// A whole request in the queue `Init` sets up, as a driver makes one:
    /// descriptors (NEXT-linked) at the next free entries, published and
    /// notified.
    Chain { descs: Vec<(u16, u16, bool)> },
    /// QueueNotify.
    Notify { queue: u8 },
    /// Raw bytes into guest memory (rings, indirect tables, ...).
    Mem { addr: u16, data: Vec<u8> },
}

/// Queue 0 as the transport handed it to the device, read back through the
/// registers when it was activated.
#[derive(Clone, Copy)]
struct Rings {
    avail: u64,
    used: u64,
}

struct Harness {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    /// The last QueueSel the guest wrote (the register is write-only).
    queue_sel: u32,
    /// The size `Init` configured, for `Desc`, `Publish` and `Chain`.
    init_size: u16,
    /// The next descriptor `Chain` uses.
    next_desc: u16,
    rings: Option<Rings>,
}

impl Harness {
    fn read(&mut self, offset: u64, len: usize) {
        let mut buf = vec![0u8; len];
        self.t.read(offset, &mut buf);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let was_active = self.t.is_activated();
        self.t.write(offset, data);
        if data.len() == 4 {
            let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            match offset as u32 {
                VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
                VIRTIO_MMIO_STATUS if value == 0 => self.queue_sel = 0,
                _ => {}
            }
        }
        match (was_active, self.t.is_activated()) {
            (false, true) => self.rings = Some(self.read_rings()),
            (true, false) => self.rings = None,
            _ => {}
        }
        if offset == u64::from(VIRTIO_MMIO_QUEUE_NOTIFY) {
            self.settle();
        }
    }

    fn w32(&mut self, reg: u32, value: u32) {
        self.write(u64::from(reg), &value.to_le_bytes());
    }

    fn r32(&mut self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(u64::from(reg), &mut b);
        u32::from_le_bytes(b)
    }

    fn read_rings(&mut self) -> Rings {
        self.t
            .write(u64::from(VIRTIO_MMIO_QUEUE_SEL), &0u32.to_le_bytes());
        let pair = |h: &mut Self, lo, hi| u64::from(h.r32(lo)) | (u64::from(h.r32(hi)) << 32);
        let rings = Rings {
            avail: pair(
                self,
                VIRTIO_MMIO_QUEUE_AVAIL_LOW,
                VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
            ),
            used: pair(
                self,
                VIRTIO_MMIO_QUEUE_USED_LOW,
                VIRTIO_MMIO_QUEUE_USED_HIGH,
            ),
        };
        self.t.write(
            u64::from(VIRTIO_MMIO_QUEUE_SEL),
            &self.queue_sel.to_le_bytes(),
        );
        rings
    }

    /// Waits until the worker took the notification and returned what the
    /// guest made available (or gave up on a broken ring).
    fn settle(&mut self) {
        let Some(rings) = self.rings else {
            return;
        };
        let evt = &self.t.queue_events()[0];
        wait_for(SETTLE, || !is_signalled(evt));
        let mem = &self.mem;
        let idx = |addr: u64| {
            mem.read_obj::<u16>(GuestAddress(addr + 2))
                .map(u16::from_le)
                .unwrap_or(0)
        };
        wait_for(SETTLE, || {
            let pending = idx(rings.avail).wrapping_sub(idx(rings.used));
            pending == 0 || pending > RNG_QUEUE_MAX
        });
    }

    fn init(&mut self, size_log2: u8, skip_driver_ok: bool) {
        let size = if size_log2 < 9 {
            1u16 << size_log2
        } else {
            // Not a power of two, or too large: DRIVER_OK must fail.
            u16::from(size_log2) * 3
        };
        self.init_size = size.clamp(1, RNG_QUEUE_MAX);
        self.next_desc = 0;
        let ack = VIRTIO_CONFIG_S_ACKNOWLEDGE;
        let drv = ack | VIRTIO_CONFIG_S_DRIVER;
        let fok = drv | VIRTIO_CONFIG_S_FEATURES_OK;
        self.w32(VIRTIO_MMIO_STATUS, 0);
        // Zeroed rings, as a driver allocates them.
        self.mem
            .write_slice(&[0u8; 0x3000], GuestAddress(DESC))
            .expect("rings");
        self.w32(VIRTIO_MMIO_STATUS, ack);
        self.w32(VIRTIO_MMIO_STATUS, drv);
        self.w32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.w32(VIRTIO_MMIO_DRIVER_FEATURES, 1 << (VIRTIO_F_VERSION_1 - 32));
        self.w32(VIRTIO_MMIO_STATUS, fok);
        self.w32(VIRTIO_MMIO_QUEUE_SEL, 0);
        self.w32(VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
        for (lo, hi, addr) in [
            (
                VIRTIO_MMIO_QUEUE_DESC_LOW,
                VIRTIO_MMIO_QUEUE_DESC_HIGH,
                DESC,
            ),
            (
                VIRTIO_MMIO_QUEUE_AVAIL_LOW,
                VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
                AVAIL,
            ),
            (
                VIRTIO_MMIO_QUEUE_USED_LOW,
                VIRTIO_MMIO_QUEUE_USED_HIGH,
                USED,
            ),
        ] {
            self.w32(lo, addr as u32);
            self.w32(hi, (addr >> 32) as u32);
        }
        self.w32(VIRTIO_MMIO_QUEUE_READY, 1);
        if !skip_driver_ok {
            self.w32(VIRTIO_MMIO_STATUS, fok | VIRTIO_CONFIG_S_DRIVER_OK);
        }
    }

    fn publish(&mut self, head: u16) {
        let Ok(idx) = self.mem.read_obj::<u16>(GuestAddress(AVAIL + 2)) else {
            return;
        };
        let idx = u16::from_le(idx);
        let slot = AVAIL + 4 + 2 * u64::from(idx % self.init_size);
        let _ = self.mem.write_obj(head.to_le(), GuestAddress(slot));
        let _ = self
            .mem
            .write_obj(idx.wrapping_add(1).to_le(), GuestAddress(AVAIL + 2));
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Read { offset, ref size } => self.read(u64::from(offset % 0x1200), size.len()),
            Op::Write {
                offset,
                ref size,
                value,
            } => {
                let bytes = value.to_le_bytes();
                let len = size.len();
                let mut data = vec![0u8; len];
                let n = len.min(8);
                data[..n].copy_from_slice(&bytes[..n]);
                self.write(u64::from(offset % 0x1200), &data);
            }
            Op::Write32 { reg, value } => self.w32(u32::from(reg) * 4, value),
            Op::Init {
                size_log2,
                skip_driver_ok,
            } => self.init(size_log2 % 12, skip_driver_ok),
            Op::Desc {
                index,
                addr,
                outside,
                len,
                flags,
                next,
            } => {
                let addr = if outside {
                    u64::from(addr) | 0xffff_0000_0000
                } else {
                    u64::from(addr)
                };
                let index = u64::from(u16::from(index) % self.init_size);
                let mut raw = [0u8; 16];
                raw[0..8].copy_from_slice(&addr.to_le_bytes());
                raw[8..12].copy_from_slice(&u32::from(len).to_le_bytes());
                raw[12..14].copy_from_slice(&u16::from(flags & 0x7).to_le_bytes());
                raw[14..16].copy_from_slice(&u16::from(next).to_le_bytes());
                let _ = self.mem.write_slice(&raw, GuestAddress(DESC + 16 * index));
            }
            Op::Publish { head } => self.publish(u16::from(head)),
            Op::Chain { ref descs } => {
                let n = descs.len().clamp(1, 4) as u16;
                let head = self.next_desc % self.init_size;
                for i in 0..n {
                    let (addr, len, write) = descs.get(usize::from(i)).copied().unwrap_or_default();
                    let index = (head + i) % self.init_size;
                    let next = (index + 1) % self.init_size;
                    let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
                    if i + 1 < n {
                        flags |= VRING_DESC_F_NEXT as u16;
                    }
                    let mut raw = [0u8; 16];
                    raw[0..8].copy_from_slice(&u64::from(addr).to_le_bytes());
                    raw[8..12].copy_from_slice(&u32::from(len).to_le_bytes());
                    raw[12..14].copy_from_slice(&flags.to_le_bytes());
                    raw[14..16].copy_from_slice(&next.to_le_bytes());
                    let at = DESC + 16 * u64::from(index);
                    let _ = self.mem.write_slice(&raw, GuestAddress(at));
                }
                self.next_desc = (head + n) % self.init_size;
                self.publish(head);
                self.w32(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
            }
            Op::Notify { queue } => self.w32(VIRTIO_MMIO_QUEUE_NOTIFY, u32::from(queue % 2)),
            Op::Mem { addr, ref data } => {
                let n = data.len().min(256);
                let _ = self
                    .mem
                    .write_slice(&data[..n], GuestAddress(u64::from(addr)));
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mem = vmrun_fuzz::guest_memory(MEM_SIZE);
    let device = RngDevice::new().expect("rng device");
    let t = MmioTransport::new(mem.clone(), interrupt(), Box::new(device)).expect("transport");
    let mut h = Harness {
        t,
        mem,
        queue_sel: 0,
        init_size: 16,
        next_desc: 0,
        rings: None,
    };
    for op in ops.iter().take(64) {
        h.run(op);
    }
    // Dropping the transport resets the device and joins its worker.
});
