//! Frames both ways: guest to tap, tap to guest (one buffer, several
//! mergeable ones, one big one), waiting for buffers without reading on,
//! and a device that is reset and started again.

use std::time::Duration;

use super::driver::{test_mem, Guest};
use super::wire::{in_fresh_netns, test_pair, test_tap, Wire};
use super::*;
use crate::VirtioDevice;

const WAIT: Duration = Duration::from_secs(5);
/// How long nothing must happen where nothing should.
const QUIET: Duration = Duration::from_millis(200);

/// The next test frame out of the wire.
fn recv_test_frame(wire: &Wire) -> Option<Vec<u8>> {
    while let Some(frame) = wire.recv(WAIT) {
        if is_test_frame(&frame) {
            return Some(frame);
        }
    }
    None
}

#[test]
fn a_frame_the_guest_sends_comes_out_of_the_tap() {
    in_fresh_netns(|| {
        let (tap, wire) = test_tap();
        let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
        let mem = test_mem();
        let mut guest = Guest::start(&mem, &mut dev, true);
        let broadcast = frame_to([0xff; 6], 1, 342);
        let large = frame_to([0xff; 6], 2, 1514);
        // Header and frame in one descriptor; then over three, the header
        // split between two of them.
        guest.queue_tx(&packet(&broadcast), 1);
        guest.queue_tx(&packet(&large), 3);
        guest.flush_tx();
        assert_eq!(guest.tx.used_idx(), 2);
        assert_eq!(recv_test_frame(&wire).unwrap(), broadcast);
        assert_eq!(recv_test_frame(&wire).unwrap(), large);
        assert_ne!(guest.irq.status() & 1, 0, "used-ring interrupt raised");
        dev.reset();
    });
}

#[test]
fn a_frame_from_the_tap_reaches_a_guest_buffer() {
    in_fresh_netns(|| {
        let (tap, wire) = test_tap();
        let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
        let mem = test_mem();
        let mut guest = Guest::start(&mem, &mut dev, true);
        guest.post_rx(16, 2048);
        guest.kick_rx();
        let frame = test_frame(7, 600);
        wire.inject(&frame);
        let received = guest.next_test_frame(WAIT).unwrap();
        assert_eq!(received.frame, frame);
        assert_eq!(num_buffers(&received), 1);
        assert_eq!(received.entries[0].1, (VNET_HDR_LEN + 600) as u32);
        // No offload asked of the tap for this frame: a plain header.
        assert_eq!(&received.header[..10], &[0; 10]);
        dev.reset();
    });
}

#[test]
fn a_frame_larger_than_a_buffer_spans_mergeable_buffers() {
    in_fresh_netns(|| {
        let (tap, wire) = test_tap();
        let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
        let mem = test_mem();
        let mut guest = Guest::start(&mem, &mut dev, true);
        guest.post_rx(64, 512);
        guest.kick_rx();
        let frame = test_frame(9, 1400);
        wire.inject(&frame);
        let received = guest.next_test_frame(WAIT).unwrap();
        assert_eq!(received.frame, frame);
        assert_eq!(num_buffers(&received), 3);
        let lens: Vec<u32> = received.entries.iter().map(|e| e.1).collect();
        assert_eq!(lens, [512, 512, (VNET_HDR_LEN + 1400 - 1024) as u32]);
        dev.reset();
    });
}

#[test]
fn without_mergeable_buffers_a_frame_needs_one_buffer_that_holds_it() {
    let (tap, wire) = test_pair();
    let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, false);
    let small = guest.post_rx(1, 256)[0];
    guest.kick_rx();
    // Too big for the buffer: dropped, the buffer stays for the next one.
    wire.inject(&test_frame(1, 600));
    wire.inject(&test_frame(2, 200));
    let received = guest.next_packet(WAIT).unwrap();
    assert_eq!(received.entries, [(u32::from(small), 212)]);
    assert_eq!(received.frame, test_frame(2, 200));
    assert_eq!(num_buffers(&received), 1);
    dev.reset();
}

#[test]
fn without_buffers_the_device_waits_and_stops_reading_the_tap() {
    let (tap, wire) = test_pair();
    let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| test_frame(i, 100 + usize::from(i)))
        .collect();
    for frame in &frames {
        wire.inject(frame);
    }
    std::thread::sleep(QUIET);
    assert_eq!(guest.rx.used_idx(), 0);
    // It holds the first frame and leaves the others in the tap.
    let left = 2 * VNET_HDR_LEN + 101 + 102;
    assert_eq!(wire.unread_by_device(), left);
    // One buffer: one frame, and again it stops.
    guest.post_rx(1, 2048);
    guest.kick_rx();
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[0]);
    std::thread::sleep(QUIET);
    assert_eq!(wire.unread_by_device(), VNET_HDR_LEN + 102);
    guest.post_rx(4, 2048);
    guest.kick_rx();
    for frame in &frames[1..] {
        assert_eq!(&guest.next_packet(WAIT).unwrap().frame, frame);
    }
    assert_eq!(wire.unread_by_device(), 0);
    // And it reads the tap again once it caught up.
    wire.inject(&frames[0]);
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[0]);
    dev.reset();
}

#[test]
fn short_messages_are_dropped_and_a_closed_stand_in_ends_only_receiving() {
    let (tap, wire) = test_pair();
    let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    guest.post_rx(4, 2048);
    guest.kick_rx();
    // Nothing at all, then less than a header: neither is the end.
    wire.inject_raw(&[]);
    wire.inject_raw(&[0; 5]);
    wire.inject(&test_frame(1, 64));
    let received = guest.next_packet(WAIT).unwrap();
    assert_eq!(received.frame, test_frame(1, 64));
    // The other end goes away: transmitting still returns every chain.
    drop(wire);
    std::thread::sleep(QUIET);
    guest.queue_tx(&packet(&test_frame(2, 64)), 1);
    guest.flush_tx();
    assert!(guest.next_packet(QUIET).is_none());
    dev.reset();
}

#[test]
fn the_tap_waits_for_the_guest_too() {
    in_fresh_netns(|| {
        let (tap, wire) = test_tap();
        let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
        let mem = test_mem();
        let mut guest = Guest::start(&mem, &mut dev, true);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| test_frame(i, 300)).collect();
        for frame in &frames {
            wire.inject(frame);
        }
        std::thread::sleep(QUIET);
        assert_eq!(guest.rx.used_idx(), 0);
        guest.post_rx(32, 2048);
        guest.kick_rx();
        for frame in &frames {
            assert_eq!(&guest.next_test_frame(WAIT).unwrap().frame, frame);
        }
        dev.reset();
    });
}

#[test]
fn a_reset_device_starts_again() {
    let (tap, wire) = test_pair();
    let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
    let mem = test_mem();
    for round in 0..3u8 {
        let mut guest = Guest::start(&mem, &mut dev, round % 2 == 0);
        guest.queue_tx(&packet(&test_frame(round, 80)), 2);
        guest.flush_tx();
        assert_eq!(wire.recv(WAIT).unwrap(), test_frame(round, 80));
        guest.post_rx(2, 1024);
        guest.kick_rx();
        wire.inject(&test_frame(round, 90));
        assert_eq!(
            guest.next_packet(WAIT).unwrap().frame,
            test_frame(round, 90)
        );
        dev.reset();
    }
    // Activating a running device is refused.
    let _guest = Guest::start(&mem, &mut dev, true);
    let again = dev.activate(mem.clone(), _guest.irq.clone(), vec![], vec![]);
    assert!(matches!(again, Err(crate::ActivateError::AlreadyActive)));
}
