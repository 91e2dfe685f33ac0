//! Tests of the virtio-mmio register interface.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::test_utils::DriverQueue;
use crate::RngDevice;

const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRV: u32 = VIRTIO_CONFIG_S_DRIVER;
const FOK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const DOK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const MEM_SIZE: usize = 0x10_0000;
const FAKE_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << 3) | (1 << 40);

/// What the device was handed for one queue: size, desc, avail, used, ready.
type QueueSeen = (u16, u64, u64, u64, bool);

#[derive(Default)]
struct FakeState {
    activations: Vec<Vec<QueueSeen>>,
    /// The features handed over before each activation.
    acked: Vec<u64>,
    resets: usize,
    config: [u8; 8],
}

struct FakeDevice(Arc<Mutex<FakeState>>);

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn avail_features(&self) -> u64 {
        FAKE_FEATURES
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let st = self.0.lock().unwrap();
        let off = offset as usize;
        let n = data.len().min(8usize.saturating_sub(off));
        data[..n].copy_from_slice(&st.config[off.min(8)..off.min(8) + n]);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut st = self.0.lock().unwrap();
        let off = offset as usize;
        let n = data.len().min(8usize.saturating_sub(off));
        st.config[off.min(8)..off.min(8) + n].copy_from_slice(&data[..n]);
    }
    fn ack_features(&mut self, features: u64) {
        self.0.lock().unwrap().acked.push(features);
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        _interrupt: Arc<IrqTrigger>,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        assert_eq!(queues.len(), queue_events.len());
        let qs = queues
            .iter()
            .map(|q| {
                (
                    q.size(),
                    q.desc_table(),
                    q.avail_ring(),
                    q.used_ring(),
                    q.ready(),
                )
            })
            .collect();
        self.0.lock().unwrap().activations.push(qs);
        Ok(())
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().resets += 1;
    }
}

struct Setup {
    t: MmioTransport,
    state: Arc<Mutex<FakeState>>,
}

fn setup() -> Setup {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let state = Arc::new(Mutex::new(FakeState::default()));
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let t = MmioTransport::new(mem, irq, Box::new(FakeDevice(state.clone()))).unwrap();
    Setup { t, state }
}

fn r32(t: &mut MmioTransport, off: u32) -> u32 {
    let mut b = [0xffu8; 4];
    t.read(u64::from(off), &mut b);
    u32::from_le_bytes(b)
}

fn w32(t: &mut MmioTransport, off: u32, v: u32) {
    t.write(u64::from(off), &v.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    w32(t, VIRTIO_MMIO_STATUS, ACK);
    w32(t, VIRTIO_MMIO_STATUS, ACK | DRV);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    w32(t, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
    w32(t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK);
}

fn setup_queue(t: &mut MmioTransport, sel: u32, size: u32, desc: u64, avail: u64, used: u64) {
    w32(t, VIRTIO_MMIO_QUEUE_SEL, sel);
    w32(t, VIRTIO_MMIO_QUEUE_NUM, size);
    w32(t, VIRTIO_MMIO_QUEUE_DESC_LOW, desc as u32);
    w32(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (desc >> 32) as u32);
    w32(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail as u32);
    w32(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (avail >> 32) as u32);
    w32(t, VIRTIO_MMIO_QUEUE_USED_LOW, used as u32);
    w32(t, VIRTIO_MMIO_QUEUE_USED_HIGH, (used >> 32) as u32);
    w32(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

fn setup_both_queues(t: &mut MmioTransport) {
    setup_queue(t, 0, 16, 0x1000, 0x2000, 0x3000);
    setup_queue(t, 1, 8, 0x4000, 0x5000, 0x6000);
}

#[test]
fn identity_registers() {
    let Setup { mut t, .. } = setup();
    assert_eq!(r32(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_VERSION), 2);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_DEVICE_ID), 42);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_CONFIG_GENERATION), 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    w32(&mut t, VIRTIO_MMIO_SHM_SEL, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_SHM_LEN_HIGH), u32::MAX);
    assert_eq!(t.device_type(), 42);
    assert_eq!(t.queue_events().len(), 2);
}

#[test]
fn transport_is_driven_from_another_thread() {
    let Setup { t, .. } = setup();
    let mut t = std::thread::spawn(move || {
        let mut t = t;
        assert_eq!(r32(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        w32(&mut t, VIRTIO_MMIO_STATUS, ACK);
        t
    })
    .join()
    .unwrap();
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK);
}

#[test]
fn feature_negotiation() {
    let Setup { mut t, .. } = setup();
    for (sel, want) in [
        (0, FAKE_FEATURES as u32),
        (1, (FAKE_FEATURES >> 32) as u32),
        (2, 0),
    ] {
        w32(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        assert_eq!(r32(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), want);
    }

    // Feature writes before DRIVER are ignored.
    w32(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1 << 3);
    assert_eq!(t.acked_features, 0);

    // An offered subset with VERSION_1 is accepted.
    negotiate(&mut t, (1 << VIRTIO_F_VERSION_1) | (1 << 3));
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV | FOK);
    assert_eq!(t.acked_features, (1 << VIRTIO_F_VERSION_1) | (1 << 3));
    // ... and frozen after FEATURES_OK.
    w32(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    w32(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0);
    assert_eq!(t.acked_features, (1 << VIRTIO_F_VERSION_1) | (1 << 3));

    // Not offered: FEATURES_OK stays clear.
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    negotiate(&mut t, (1 << VIRTIO_F_VERSION_1) | (1 << 5));
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV);

    // Legacy driver without VERSION_1: refused.
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    negotiate(&mut t, 1 << 3);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV);
}

#[test]
fn queue_setup_and_activation() {
    let Setup { mut t, state, .. } = setup();
    negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 8);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 2);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);

    setup_queue(&mut t, 0, 8, 0x1000, 0x2000, 0x3000);
    setup_queue(&mut t, 1, 8, 0x4000, 0x5000, 0x6000);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW), 0x1000);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_USED_HIGH), 0);
    assert!(!t.is_activated());

    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
    assert!(t.is_activated());
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV | FOK | DOK);
    let st = state.lock().unwrap();
    assert_eq!(
        st.activations,
        vec![vec![
            (8, 0x1000, 0x2000, 0x3000, true),
            (8, 0x4000, 0x5000, 0x6000, true)
        ]]
    );
    assert_eq!(st.acked, vec![1 << VIRTIO_F_VERSION_1]);
    drop(st);

    // Queue registers are frozen once running.
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
    w32(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
    w32(&mut t, VIRTIO_MMIO_QUEUE_READY, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW), 0x1000);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
    // Setting DRIVER_OK again does not re-activate.
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(state.lock().unwrap().activations.len(), 1);
}

#[test]
fn invalid_queues_are_not_activated() {
    type Breaker = fn(&mut MmioTransport);
    let cases: [(&str, Breaker); 8] = [
        ("size not a power of two", |t| {
            setup_queue(t, 0, 12, 0x1000, 0x2000, 0x3000)
        }),
        ("size above max", |t| {
            setup_queue(t, 0, 32, 0x1000, 0x2000, 0x3000)
        }),
        ("size zero", |t| {
            setup_queue(t, 0, 0, 0x1000, 0x2000, 0x3000)
        }),
        ("size above u16", |t| {
            setup_queue(t, 0, 0x1_0010, 0x1000, 0x2000, 0x3000)
        }),
        ("descriptors outside memory", |t| {
            setup_queue(t, 0, 16, MEM_SIZE as u64 - 0x10, 0x2000, 0x3000)
        }),
        ("used ring above 4 GiB", |t| {
            setup_queue(t, 0, 16, 0x1000, 0x2000, 0x1_0000_3000)
        }),
        ("misaligned descriptors", |t| {
            setup_queue(t, 0, 16, 0x1008, 0x2000, 0x3000)
        }),
        ("queue not ready", |t| {
            setup_queue(t, 0, 16, 0x1000, 0x2000, 0x3000);
            w32(t, VIRTIO_MMIO_QUEUE_READY, 0);
        }),
    ];
    for (what, breaker) in cases {
        let Setup { mut t, state, .. } = setup();
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        setup_both_queues(&mut t);
        breaker(&mut t);
        w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        assert!(!t.is_activated(), "{what}: activated");
        assert!(state.lock().unwrap().activations.is_empty(), "{what}");
        let status = r32(&mut t, VIRTIO_MMIO_STATUS);
        assert_eq!(
            status,
            ACK | DRV | FOK | VIRTIO_CONFIG_S_NEEDS_RESET,
            "{what}"
        );
        assert_eq!(
            r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_CONFIG,
            "{what}"
        );
        // A reset recovers.
        w32(&mut t, VIRTIO_MMIO_STATUS, 0);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        setup_both_queues(&mut t);
        w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        assert!(t.is_activated(), "{what}: not activated after reset");
    }
}

#[test]
fn status_state_machine() {
    let Setup { mut t, state, .. } = setup();
    // Steps out of order are ignored.
    w32(&mut t, VIRTIO_MMIO_STATUS, DRV);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | FOK);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | DOK);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV);
    // Queue setup before FEATURES_OK is ignored.
    setup_queue(&mut t, 0, 8, 0x1000, 0x2000, 0x3000);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    // Clearing bits without a reset is ignored.
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV);

    // Several steps in one write are applied in order.
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV);

    // Full bring-up, then reset.
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
    setup_both_queues(&mut t);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
    assert!(t.is_activated());
    t.interrupt().trigger_used_ring().unwrap();
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    assert!(!t.is_activated());
    assert_eq!(state.lock().unwrap().resets, 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW), 0);
    assert_eq!(t.acked_features, 0);

    // FAILED sticks until reset and blocks config writes.
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV);
    w32(
        &mut t,
        VIRTIO_MMIO_STATUS,
        ACK | DRV | VIRTIO_CONFIG_S_FAILED,
    );
    assert_eq!(
        r32(&mut t, VIRTIO_MMIO_STATUS),
        ACK | DRV | VIRTIO_CONFIG_S_FAILED
    );
    t.write(0x100, &[9]);
    assert_eq!(state.lock().unwrap().config[0], 0);
    w32(
        &mut t,
        VIRTIO_MMIO_STATUS,
        ACK | DRV | FOK | VIRTIO_CONFIG_S_FAILED,
    );
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS) & FOK, 0);

    // Dropping an active transport resets the device.
    w32(&mut t, VIRTIO_MMIO_STATUS, 0);
    negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
    setup_both_queues(&mut t);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
    drop(t);
    assert_eq!(state.lock().unwrap().resets, 2);
}

#[test]
fn bad_widths_and_offsets_are_ignored() {
    let Setup { mut t, .. } = setup();
    // Sub-word and unaligned register reads read as zero.
    let mut b2 = [0xffu8; 2];
    t.read(u64::from(VIRTIO_MMIO_MAGIC_VALUE), &mut b2);
    assert_eq!(b2, [0, 0]);
    let mut b4 = [0xffu8; 4];
    t.read(1, &mut b4);
    assert_eq!(b4, [0; 4]);
    let mut b8 = [0xffu8; 8];
    t.read(0, &mut b8);
    assert_eq!(b8, [0; 8]);
    // Unknown and write-only registers read as zero.
    for off in [
        0x0f0u32,
        0x018,
        VIRTIO_MMIO_QUEUE_SEL,
        VIRTIO_MMIO_QUEUE_NOTIFY,
        VIRTIO_MMIO_INTERRUPT_ACK,
    ] {
        assert_eq!(r32(&mut t, off), 0, "offset {off:#x}");
    }
    // Beyond the window.
    t.read(0x1000, &mut b4);
    assert_eq!(b4, [0; 4]);
    t.read(u64::MAX, &mut b4);
    assert_eq!(b4, [0; 4]);
    t.write(u64::MAX, &[1, 2, 3, 4]);
    t.write(0x1ffc, &[1, 2, 3, 4]);
    // Writes to read-only registers and with bad widths change nothing.
    w32(&mut t, VIRTIO_MMIO_MAGIC_VALUE, 0);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    t.write(u64::from(VIRTIO_MMIO_STATUS), &[ACK as u8]);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0);
    t.write(u64::from(VIRTIO_MMIO_STATUS) + 2, &ACK.to_le_bytes());
    assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), 0);
    t.write(u64::from(VIRTIO_MMIO_STATUS), &[]);
    t.read(u64::from(VIRTIO_MMIO_STATUS), &mut []);
    // QueueReady only takes 0 or 1.
    negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
    w32(&mut t, VIRTIO_MMIO_QUEUE_READY, 7);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    // Queue registers of a nonexistent queue.
    w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 9);
    w32(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    assert!(t.bad_accesses > BAD_ACCESS_WARN_LIMIT / 2);
}

#[test]
fn config_space_access() {
    let Setup { mut t, state, .. } = setup();
    state.lock().unwrap().config = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut b = [0u8; 8];
    t.read(0x100, &mut b);
    assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);
    let mut b2 = [0u8; 2];
    t.read(0x106, &mut b2);
    assert_eq!(b2, [7, 8]);
    let mut b3 = [0xffu8; 3];
    t.read(0x100, &mut b3);
    assert_eq!(b3, [0, 0, 0], "3-byte config reads are invalid");
    // Past the device's config: zeros.
    let mut b4 = [0xffu8; 4];
    t.read(0x200, &mut b4);
    assert_eq!(b4, [0; 4]);

    // Writes need DRIVER.
    t.write(0x100, &[0xaa]);
    assert_eq!(state.lock().unwrap().config[0], 1);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK);
    w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV);
    t.write(0x100, &[0xaa]);
    t.write(0x102, &[0xbb, 0xcc]);
    t.write(0x104, &[0xdd, 0xee, 0xff]);
    assert_eq!(
        state.lock().unwrap().config,
        [0xaa, 2, 0xbb, 0xcc, 5, 6, 7, 8]
    );
}

#[test]
fn notify_and_interrupt_registers() {
    let Setup { mut t, .. } = setup();
    w32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    assert_eq!(t.queue_events()[1].read().unwrap(), 1);
    assert!(t.queue_events()[0].read().is_err());
    w32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 5);
    assert!(t.queue_events()[0].read().is_err());
    assert!(t.queue_events()[1].read().is_err());

    t.interrupt().trigger_used_ring().unwrap();
    t.interrupt().trigger_config_change().unwrap();
    assert_eq!(r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 3);
    w32(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, 1);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 2);
    w32(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, 2);
    assert_eq!(r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

#[test]
fn invalid_device_queue_sizes_are_refused() {
    struct Bad;
    impl VirtioDevice for Bad {
        fn device_type(&self) -> u32 {
            1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[100]
        }
        fn avail_features(&self) -> u64 {
            1 << VIRTIO_F_VERSION_1
        }
        fn read_config(&self, _: u64, _: &mut [u8]) {}
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(
            &mut self,
            _: GuestMemoryMmap,
            _: Arc<IrqTrigger>,
            _: Vec<Queue>,
            _: Vec<EventFd>,
        ) -> Result<(), ActivateError> {
            Ok(())
        }
        fn reset(&mut self) {}
    }
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    assert!(matches!(
        MmioTransport::new(mem, irq, Box::new(Bad)),
        Err(MmioError::InvalidQueueMaxSize {
            queue: 0,
            size: 100
        })
    ));
}

/// A guest driver brings the rng device up through the registers alone and
/// gets random bytes.
#[test]
fn rng_end_to_end_through_registers() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mut t = MmioTransport::new(
        mem.clone(),
        irq.clone(),
        Box::new(RngDevice::new().unwrap()),
    )
    .unwrap();
    assert_eq!(r32(&mut t, VIRTIO_MMIO_DEVICE_ID), 4);

    for round in 0..2u64 {
        let q = DriverQueue::new(&mem, 0x1_0000, 64);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        assert_eq!(r32(&mut t, VIRTIO_MMIO_STATUS), ACK | DRV | FOK);
        w32(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
        assert_eq!(r32(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
        setup_queue(&mut t, 0, 64, q.desc, q.avail, q.used);
        w32(&mut t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
        assert!(t.is_activated());

        let buf = 0x8_0000 + round * 0x1000;
        mem.write_slice(&[0u8; 256], GuestAddress(buf)).unwrap();
        q.set_desc(
            0,
            buf,
            256,
            virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
            0,
        );
        q.publish(0, 0);
        // The notification takes the MMIO path (no ioeventfd here).
        w32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while q.used_idx() != 1 {
            assert!(Instant::now() < deadline, "rng did not answer");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(q.used_elem(0), (0, 256));
        let mut got = [0u8; 256];
        mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
        assert!(
            got.iter().filter(|&&b| b == 0).count() < 32,
            "buffer not filled"
        );
        assert_eq!(
            r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
            VIRTIO_MMIO_INT_VRING
        );
        assert!(irq.irqfd().read().unwrap() >= 1);
        w32(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);

        // Driver reset stops the device; the next round brings it up again.
        w32(&mut t, VIRTIO_MMIO_STATUS, 0);
        assert!(!t.is_activated());
    }
}

fn activated_transport() -> Setup {
    let mut s = setup();
    negotiate(&mut s.t, 1 << VIRTIO_F_VERSION_1);
    setup_both_queues(&mut s.t);
    w32(&mut s.t, VIRTIO_MMIO_STATUS, ACK | DRV | FOK | DOK);
    assert!(s.t.is_activated());
    s
}

#[test]
fn saved_state_restores_registers_rings_and_activation() {
    let Setup { mut t, state } = activated_transport();
    // The device returned 5 chains on queue 0: used.idx in guest memory.
    t.mem.write_obj(5u16, GuestAddress(0x3002)).unwrap();
    t.interrupt().trigger_used_ring().unwrap();
    let saved = t.save_state();
    assert_eq!(state.lock().unwrap().resets, 1, "saving stops the worker");
    assert!(saved.activated);
    assert_eq!(saved.status, ACK | DRV | FOK | DOK);
    assert_eq!(
        (saved.queues[0].next_avail, saved.queues[0].next_used),
        (5, 5)
    );
    assert_eq!(saved.interrupt_status, VIRTIO_MMIO_INT_VRING);

    let Setup {
        t: mut restored,
        state: restored_state,
    } = setup();
    restored.restore_state(&saved).unwrap();
    assert!(
        restored_state.lock().unwrap().activations.is_empty(),
        "started before resume"
    );
    restored.resume().unwrap();
    assert_eq!(
        restored_state.lock().unwrap().acked,
        vec![1 << VIRTIO_F_VERSION_1],
        "a resumed device hears what was negotiated before the snapshot"
    );
    assert_eq!(
        r32(&mut restored, VIRTIO_MMIO_STATUS),
        ACK | DRV | FOK | DOK
    );
    assert_eq!(
        r32(&mut restored, VIRTIO_MMIO_INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_VRING
    );
    w32(&mut restored, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(r32(&mut restored, VIRTIO_MMIO_QUEUE_DESC_LOW), 0x4000);
    assert_eq!(
        restored_state.lock().unwrap().activations,
        vec![vec![
            (
                16,
                GuestAddress(0x1000),
                GuestAddress(0x2000),
                GuestAddress(0x3000),
                true
            ),
            (
                8,
                GuestAddress(0x4000),
                GuestAddress(0x5000),
                GuestAddress(0x6000),
                true
            ),
        ]
        .into_iter()
        .map(|(s, d, a, u, r)| (s, d.0, a.0, u.0, r))
        .collect::<Vec<_>>()]
    );
    // The rings live in guest memory, which a restore maps from the
    // snapshot: the same memory gives the same state back.
    restored.mem.write_obj(5u16, GuestAddress(0x3002)).unwrap();
    assert_eq!(restored.save_state(), saved);
}

#[test]
fn saved_state_that_does_not_fit_the_device_is_refused() {
    let Setup { mut t, .. } = activated_transport();
    let saved = t.save_state();
    let refused = |state: TransportState| {
        let Setup { mut t, state: seen } = setup();
        let err = t
            .restore_state(&state)
            .and_then(|()| t.resume())
            .unwrap_err();
        assert!(seen.lock().unwrap().activations.is_empty());
        err.to_string()
    };
    let other_type = TransportState {
        device_type: 4,
        ..saved.clone()
    };
    assert!(refused(other_type).contains("device type 4"));
    let mut one_queue = saved.clone();
    one_queue.queues.pop();
    assert!(refused(one_queue).contains("saved 1 queues"));
    let mut huge = saved.clone();
    huge.queues[0].size = 1024;
    assert!(refused(huge).contains("exceeds the device maximum 16"));
    let features = TransportState {
        acked_features: 1 << 50,
        ..saved.clone()
    };
    assert!(refused(features).contains("not all offered"));
    let mut outside = saved;
    outside.queues[1].used = MEM_SIZE as u64;
    assert!(refused(outside).contains("cannot restart it"));
}
