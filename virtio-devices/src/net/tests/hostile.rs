//! A hostile driver: malformed transmit chains and receive buffers fail
//! alone (returned with used length 0, nothing sent), and the next good
//! one still goes through.

use std::time::Duration;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use super::driver::{test_mem, Guest, Ring, MEM_SIZE};
use super::wire::{in_fresh_netns, test_pair, test_tap, Wire};
use super::*;
use crate::VirtioDevice;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(200);
const OUTSIDE: u64 = MEM_SIZE as u64 + 0x1000;

/// A chain of one descriptor looping back on itself; returns its head.
fn looping_chain(ring: &mut Ring, addr: u64, len: u32, flags: u32) -> u16 {
    let index = ring.reserve(1);
    ring.set_desc(index, addr, len, flags | VRING_DESC_F_NEXT, index);
    ring.publish(index);
    index
}

/// The test frames that come out of `wire` within [`QUIET`] of the last.
fn test_frames_out(wire: &Wire) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Some(frame) = wire.recv(QUIET) {
        if is_test_frame(&frame) {
            frames.push(frame);
        }
    }
    frames
}

#[test]
fn malformed_transmit_chains_send_nothing_and_the_next_frame_goes_out() {
    in_fresh_netns(|| {
        let (tap, wire) = test_tap();
        let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
        let mem = test_mem();
        // No offloads negotiated: headers asking for them are the guest's
        // mistake.
        let acked = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_NET_F_MRG_RXBUF);
        let mut guest = Guest::activate(&mem, &mut dev, acked);
        let bad_frame = frame_to([0xff; 6], 0xbb, 100);
        let at = guest.tx_space(MAX_PACKET_LEN + 1);
        mem.write_slice(&packet(&bad_frame), GuestAddress(at))
            .unwrap();
        let tx = &mut guest.tx;
        // Shorter than the header.
        tx.add_chain(&[(at, 8, false)]);
        // Device-writable.
        tx.add_chain(&[(at, 112, true)]);
        // One byte too long, in two descriptors.
        tx.add_chain(&[
            (at, 60_000, false),
            (at, (MAX_PACKET_LEN - 59_999) as u32, false),
        ]);
        // Outside guest memory.
        tx.add_chain(&[(OUTSIDE, 112, false)]);
        // A loop, and a next index beyond the table.
        looping_chain(tx, at, 112, 0);
        let index = tx.reserve(1);
        tx.set_desc(index, at, 112, VRING_DESC_F_NEXT, 300);
        tx.publish(index);
        // An indirect table of a length no table has.
        let index = tx.reserve(1);
        tx.set_desc(index, at, 17, VRING_DESC_F_INDIRECT, 0);
        tx.publish(index);
        // Offloads that were not negotiated.
        for (flags, gso) in [
            (VIRTIO_NET_HDR_F_NEEDS_CSUM, 0),
            (0, VIRTIO_NET_HDR_GSO_TCPV4),
        ] {
            let mut p = packet(&bad_frame);
            p[0] = flags as u8;
            p[1] = gso as u8;
            guest.queue_tx(&p, 1);
        }
        let good = frame_to([0xff; 6], 0x60, 100);
        guest.queue_tx(&packet(&good), 2);
        guest.flush_tx();
        for pos in 0..guest.tx.posted() {
            assert_eq!(guest.tx.used_elem(pos).1, 0);
        }
        assert_eq!(test_frames_out(&wire), std::slice::from_ref(&good));
        dev.reset();

        // With offloads negotiated, a header the host kernel refuses (a
        // checksum beyond the frame) is dropped at the tap; the next frame
        // still goes out.
        let mut guest = Guest::start(&mem, &mut dev, true);
        let mut p = packet(&bad_frame);
        p[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        p[6..8].copy_from_slice(&5000u16.to_le_bytes());
        guest.queue_tx(&p, 1);
        guest.queue_tx(&packet(&good), 1);
        guest.flush_tx();
        assert_eq!(test_frames_out(&wire), [good]);
        dev.reset();
    });
}

/// Posts receive buffers that are each wrong in another way; returns their
/// heads.
fn post_bad_buffers(guest: &mut Guest) -> Vec<u16> {
    let at = guest.rx_space(2048);
    let rx = &mut guest.rx;
    vec![
        rx.add_chain(&[(at, 2048, false)]),
        rx.add_chain(&[(OUTSIDE, 2048, true)]),
        rx.add_chain(&[(at, 8, true)]),
        rx.add_chain(&[(at, 1024, true), (at, 1024, false)]),
        looping_chain(rx, at, 64, VRING_DESC_F_WRITE),
    ]
}

#[test]
fn malformed_receive_buffers_are_returned_empty_and_the_frame_takes_the_next() {
    let (tap, wire) = test_pair();
    let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    let bad = post_bad_buffers(&mut guest);
    let good = guest.post_rx(1, 2048)[0];
    guest.kick_rx();
    wire.inject(&test_frame(1, 300));
    for &head in &bad {
        let empty = guest.next_packet(WAIT).unwrap();
        assert_eq!(empty.entries, [(u32::from(head), 0)]);
    }
    let received = guest.next_packet(WAIT).unwrap();
    assert_eq!(received.entries, [(u32::from(good), 312)]);
    assert_eq!(received.frame, test_frame(1, 300));

    // A bad buffer in the middle of a frame: the frame is dropped, the
    // buffers it took come back empty, the next frame is delivered.
    let first = guest.post_rx(1, 256)[0];
    let at = guest.rx_space(2048);
    let read_only = guest.rx.add_chain(&[(at, 2048, false)]);
    let good = guest.post_rx(1, 2048)[0];
    guest.kick_rx();
    wire.inject(&test_frame(2, 1000));
    wire.inject(&test_frame(3, 100));
    for head in [first, read_only] {
        assert_eq!(
            guest.next_packet(WAIT).unwrap().entries,
            [(u32::from(head), 0)]
        );
    }
    let received = guest.next_packet(WAIT).unwrap();
    assert_eq!(received.entries, [(u32::from(good), 112)]);
    assert_eq!(received.frame, test_frame(3, 100));
    dev.reset();
}

#[test]
fn a_frame_no_posted_buffers_can_hold_is_dropped_and_they_stay() {
    let (tap, wire) = test_pair();
    let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    // A full ring of small buffers: 16 KiB in all.
    let heads = guest.post_rx(usize::from(QUEUE_SIZE), 64);
    guest.kick_rx();
    wire.inject(&test_frame(1, 20_000));
    wire.inject(&test_frame(2, 40));
    let received = guest.next_packet(WAIT).unwrap();
    assert_eq!(received.entries, [(u32::from(heads[0]), 52)]);
    assert_eq!(received.frame, test_frame(2, 40));
    dev.reset();
}

#[test]
fn on_a_real_tap_bad_buffers_are_returned_empty_and_frames_still_arrive() {
    in_fresh_netns(|| {
        let (tap, wire) = test_tap();
        let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
        let mem = test_mem();
        let mut guest = Guest::start(&mem, &mut dev, true);
        let bad = post_bad_buffers(&mut guest);
        guest.post_rx(16, 2048);
        guest.kick_rx();
        let frame = test_frame(5, 900);
        wire.inject(&frame);
        // The host kernel may send frames of its own first: bad buffers go
        // back empty whichever frame meets them.
        let mut seen_bad = Vec::new();
        let received = loop {
            let p = guest.next_packet(WAIT).unwrap();
            if p.entries[0].1 == 0 {
                seen_bad.push(p.entries[0].0 as u16);
            } else if is_test_frame(&p.frame) {
                break p;
            }
        };
        assert_eq!(seen_bad, bad);
        assert_eq!(received.frame, frame);
        dev.reset();
    });
}
