//! Rate limits each way, timed by a manual clock: what fits the budget
//! goes, what does not waits (in the transmit ring, in the tap) in order
//! until the clock has earned it and the limiter's timer has fired; a
//! frame larger than the burst waits for a full bucket; a throttled worker
//! sleeps and still serves the other way; a reset keeps the budget and a
//! restored device sends what a throttled one left in the ring.
//!
//! The limiter's timer runs on the host's clock for as long as the manual
//! clock says the wait is: the limits here make those waits short where the
//! clock is moved, and long where nothing may happen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::driver::{test_mem, Guest};
use super::wire::{test_pair, Wire};
use super::*;
use crate::rate_limiter::{Bucket, ManualClock, RateLimit, ThrottleCount};
use crate::VirtioDevice;

const WAIT: Duration = Duration::from_secs(5);
/// How long nothing must happen where nothing should (longer than the
/// timers of the tests that move the clock, so they fire in it).
const QUIET: Duration = Duration::from_millis(200);
const MS: Duration = Duration::from_millis(1);

fn bytes(rate: u64, burst: u64) -> RateLimit {
    RateLimit {
        bytes: Some(Bucket::new(rate, burst).unwrap()),
        ops: None,
    }
}

fn ops(rate: u64, burst: u64) -> RateLimit {
    RateLimit {
        bytes: None,
        ops: Some(Bucket::new(rate, burst).unwrap()),
    }
}

/// A device on a socket pair, limited as `limits` say, timed by the clock
/// returned.
fn limited(limits: NetRateLimits) -> (NetDevice, Wire, Arc<ManualClock>) {
    let (tap, wire) = test_pair();
    let clock = Arc::new(ManualClock::new());
    let dev = NetDevice::new(Some(tap), CONFIG)
        .unwrap()
        .with_rate_limits(limits, clock.clone())
        .unwrap();
    assert_eq!(dev.rate_limits(), limits);
    (dev, wire, clock)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(MS);
    }
}

/// Waits for `count` to go past `seen`.
fn refused_after(count: &ThrottleCount, seen: u64) {
    wait_until("a refusal", || count.get() > seen);
}

/// Every frame that comes out of the wire until it has been quiet for
/// [`QUIET`].
fn frames_out(wire: &Wire) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| wire.recv(QUIET)).collect()
}

/// A frame from the guest.
fn sent(tag: u8, len: usize) -> Vec<u8> {
    frame_to([0xff; 6], tag, len)
}

/// The heads of the first `n` used entries of the transmit ring.
fn used_heads(guest: &Guest, n: u16) -> Vec<u16> {
    (0..n).map(|i| guest.tx.used_elem(i).0 as u16).collect()
}

/// 8000 bytes a second, bursts of 8000: eight 1000-byte frames go, the
/// ninth waits in the ring (125 ms of the clock away) with the two behind
/// it, whatever the guest notifies and however often the timer fires,
/// until the clock has earned it; then they go in order.
#[test]
fn a_transmit_limit_sends_its_burst_and_holds_the_rest_in_the_ring_until_earned() {
    let (mut dev, wire, clock) = limited(NetRateLimits {
        tx: bytes(8000, 8000),
        ..NetRateLimits::default()
    });
    let throttled = dev.tx_throttle_count();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    let frames: Vec<Vec<u8>> = (0..11).map(|i| sent(i, 1000)).collect();
    let heads: Vec<u16> = frames
        .iter()
        .map(|f| guest.queue_tx(&packet(f), 2))
        .collect();
    guest.kick_tx();

    refused_after(&throttled, 0);
    assert_eq!(frames_out(&wire), frames[..8]);
    assert_eq!(guest.tx.used_idx(), 8);
    // A notification changes nothing; the timer fires (in QUIET), finds
    // the clock where it was, and the chain stays.
    guest.kick_tx();
    assert_eq!(wire.recv(QUIET), None);
    assert!(throttled.get() >= 2, "the timer fired and offered it again");
    assert_eq!(guest.tx.used_idx(), 8);

    // 1000 bytes earned: the ninth goes, the tenth waits.
    clock.advance(Duration::from_millis(125));
    assert_eq!(wire.recv(WAIT).unwrap(), frames[8]);
    assert_eq!(wire.recv(QUIET), None);
    assert_eq!(guest.tx.used_idx(), 9);
    // Enough for the rest.
    clock.advance(Duration::from_secs(1));
    assert_eq!(frames_out(&wire), frames[9..]);
    assert_eq!(guest.tx.used_idx(), 11);
    assert_eq!(used_heads(&guest, 11), heads, "returned in order");
    dev.reset();
}

/// The same limit on receive: eight frames reach guest buffers, the ninth
/// is held by the device and the rest stay in the tap until the clock
/// earns them.
#[test]
fn a_receive_limit_delivers_its_burst_and_leaves_the_rest_in_the_tap_until_earned() {
    let (mut dev, wire, clock) = limited(NetRateLimits {
        rx: bytes(8000, 8000),
        ..NetRateLimits::default()
    });
    let throttled = dev.rx_throttle_count();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    guest.post_rx(32, 2048);
    guest.kick_rx();
    let frames: Vec<Vec<u8>> = (0..11).map(|i| test_frame(i, 1000)).collect();
    for frame in &frames {
        wire.inject(frame);
    }
    let in_tap = |frames: usize| frames * (VNET_HDR_LEN + 1000);

    refused_after(&throttled, 0);
    for frame in &frames[..8] {
        assert_eq!(&guest.next_packet(WAIT).unwrap().frame, frame);
    }
    // The timer fires in QUIET and finds the clock where it was.
    assert!(guest.next_packet(QUIET).is_none());
    assert!(throttled.get() >= 2, "the timer fired and offered it again");
    assert_eq!(wire.unread_by_device(), in_tap(2));
    // Posting buffers changes nothing.
    guest.post_rx(4, 2048);
    guest.kick_rx();
    assert!(guest.next_packet(QUIET).is_none());

    // 1000 bytes earned: the ninth, and the tenth is read and held.
    clock.advance(Duration::from_millis(125));
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[8]);
    wait_until("the tenth frame to be read", || {
        wire.unread_by_device() == in_tap(1)
    });
    assert!(guest.next_packet(QUIET).is_none());
    clock.advance(Duration::from_secs(1));
    for frame in &frames[9..] {
        assert_eq!(&guest.next_packet(WAIT).unwrap().frame, frame);
    }
    assert_eq!(wire.unread_by_device(), 0);
    // Caught up, it reads the tap again.
    wire.inject(&frames[0]);
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[0]);
    dev.reset();
}

/// 20 frames a second (one every 50 ms of the clock), bursts of 3 sent and
/// 2 received, whatever their size; a reset does not refill the budget.
#[test]
fn operation_limits_count_frames_of_any_size_and_a_reset_keeps_the_budget() {
    let (mut dev, wire, clock) = limited(NetRateLimits {
        rx: ops(20, 2),
        tx: ops(20, 3),
    });
    let (rx_throttled, tx_throttled) = (dev.rx_throttle_count(), dev.tx_throttle_count());
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    let step = Duration::from_millis(50);

    let frames: Vec<Vec<u8>> = [64, 1514, 64, 9000, 64]
        .iter()
        .zip(0..)
        .map(|(&len, tag)| sent(tag, len))
        .collect();
    for frame in &frames {
        guest.queue_tx(&packet(frame), 1);
    }
    guest.kick_tx();
    refused_after(&tx_throttled, 0);
    assert_eq!(frames_out(&wire), frames[..3]);
    clock.advance(step);
    assert_eq!(frames_out(&wire), frames[3..4]);
    clock.advance(step);
    assert_eq!(frames_out(&wire), frames[4..]);
    assert_eq!(guest.tx.used_idx(), 5);

    // The receive bucket was full (2) all along.
    guest.post_rx(16, 2048);
    guest.kick_rx();
    let frames: Vec<Vec<u8>> = [64, 1500, 64, 64]
        .iter()
        .zip(0..)
        .map(|(&len, tag)| test_frame(tag, len))
        .collect();
    for frame in &frames {
        wire.inject(frame);
    }
    refused_after(&rx_throttled, 0);
    for frame in &frames[..2] {
        assert_eq!(&guest.next_packet(WAIT).unwrap().frame, frame);
    }
    assert!(guest.next_packet(QUIET).is_none());
    clock.advance(step);
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[2]);
    assert!(guest.next_packet(QUIET).is_none());
    clock.advance(step);
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[3]);

    // Empty when the device is reset: a new driver gets nothing for free.
    dev.reset();
    let mut guest = Guest::start(&mem, &mut dev, true);
    guest.post_rx(4, 2048);
    guest.kick_rx();
    let seen = rx_throttled.get();
    wire.inject(&frames[0]);
    refused_after(&rx_throttled, seen);
    assert!(guest.next_packet(QUIET).is_none());
    clock.advance(step);
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[0]);
    dev.reset();
}

/// Bursts of 1000 bytes at 10 bytes a millisecond: after a 600-byte frame,
/// one of 1500 waits for a full bucket (60 ms away, not 59), goes, and
/// leaves a debt the next frame waits for. Both ways.
#[test]
fn a_frame_larger_than_the_burst_goes_once_the_bucket_is_full() {
    let (mut dev, wire, clock) = limited(NetRateLimits {
        rx: bytes(10_000, 1000),
        tx: bytes(10_000, 1000),
    });
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);

    let frames = [sent(0, 600), sent(1, 1500), sent(2, 100)];
    for frame in &frames {
        guest.queue_tx(&packet(frame), 1);
    }
    guest.kick_tx();
    assert_eq!(frames_out(&wire), frames[..1]);
    clock.advance(Duration::from_millis(59));
    assert_eq!(wire.recv(QUIET), None);
    clock.advance(MS);
    assert_eq!(frames_out(&wire), frames[1..2]);
    // 500 bytes of debt and 100 for this one.
    clock.advance(Duration::from_millis(59));
    assert_eq!(wire.recv(QUIET), None);
    clock.advance(MS);
    assert_eq!(frames_out(&wire), frames[2..]);

    // The receive bucket is full.
    guest.post_rx(8, 2048);
    guest.kick_rx();
    let frames = [test_frame(0, 600), test_frame(1, 1500), test_frame(2, 100)];
    for frame in &frames {
        wire.inject(frame);
    }
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[0]);
    clock.advance(Duration::from_millis(59));
    assert!(guest.next_packet(QUIET).is_none());
    clock.advance(MS);
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[1]);
    clock.advance(Duration::from_millis(59));
    assert!(guest.next_packet(QUIET).is_none());
    clock.advance(MS);
    assert_eq!(guest.next_packet(WAIT).unwrap().frame, frames[2]);
    dev.reset();
}

/// A byte a second: once throttled both ways the timers are minutes away.
/// With chains in the transmit ring and a frame in the tap, the worker
/// sleeps (it does not wake at all); a notification wakes it once each,
/// it offers nothing again and sleeps; receiving goes on while transmit is
/// throttled; and a reset stops it.
#[test]
fn a_throttled_worker_sleeps_serves_the_other_way_and_stops_when_told() {
    const LEN: usize = 100;
    let (mut dev, wire, _clock) = limited(NetRateLimits {
        rx: bytes(1, 2 * LEN as u64),
        tx: bytes(1, LEN as u64),
    });
    let (rx_throttled, tx_throttled) = (dev.rx_throttle_count(), dev.tx_throttle_count());
    let wakes = dev.wake_count();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    guest.post_rx(8, 2048);
    guest.kick_rx();

    let out: Vec<Vec<u8>> = (0..3).map(|i| sent(i, LEN)).collect();
    for frame in &out {
        guest.queue_tx(&packet(frame), 1);
    }
    guest.kick_tx();
    refused_after(&tx_throttled, 0);
    assert_eq!(frames_out(&wire), out[..1]);

    // Transmit is throttled; receive goes on, to its own limit.
    let frames: Vec<Vec<u8>> = (0..4).map(|i| test_frame(i, LEN)).collect();
    for frame in &frames {
        wire.inject(frame);
    }
    for frame in &frames[..2] {
        assert_eq!(&guest.next_packet(WAIT).unwrap().frame, frame);
    }
    refused_after(&rx_throttled, 0);
    assert_eq!(wire.unread_by_device(), VNET_HDR_LEN + LEN);

    // Both ways throttled, work waiting both ways: no wake-up at all.
    let before = wakes.get();
    std::thread::sleep(QUIET);
    assert_eq!(wakes.get(), before, "the throttled worker woke up");
    // Notifications each wake it (at most) once; nothing is offered again.
    guest.kick_tx();
    guest.kick_rx();
    wait_until("the worker to wake", || wakes.get() > before);
    std::thread::sleep(QUIET);
    assert!(
        wakes.get() - before <= 2,
        "{} wake-ups",
        wakes.get() - before
    );
    assert_eq!((tx_throttled.get(), rx_throttled.get()), (1, 1));
    assert_eq!((guest.tx.used_idx(), guest.rx.used_idx()), (1, 2));
    assert_eq!(wire.unread_by_device(), VNET_HDR_LEN + LEN);
    // The kill event still stops it.
    dev.reset();
}

/// A snapshot of a throttled device: the chains it refused are still in
/// the ring, and the restored VM's device (the limits of its own config,
/// its bucket full) sends them, in order, without a notification.
#[test]
fn chains_a_throttled_device_left_in_the_ring_go_out_after_a_restore() {
    let (mut dev, wire, _clock) = limited(NetRateLimits {
        tx: ops(1, 1),
        ..NetRateLimits::default()
    });
    let throttled = dev.tx_throttle_count();
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    let frames: Vec<Vec<u8>> = (0..3).map(|i| sent(i, 80)).collect();
    let heads: Vec<u16> = frames
        .iter()
        .map(|f| guest.queue_tx(&packet(f), 1))
        .collect();
    guest.kick_tx();
    refused_after(&throttled, 0);
    assert_eq!(frames_out(&wire), frames[..1]);
    dev.reset();
    drop(dev);

    let (tap, wire) = test_pair();
    let limits = NetRateLimits {
        tx: ops(1, 8),
        ..NetRateLimits::default()
    };
    let mut restored = NetDevice::new(Some(tap), CONFIG)
        .unwrap()
        .with_rate_limits(limits, Arc::new(ManualClock::new()))
        .unwrap();
    guest.resume(&mut restored);
    assert_eq!(frames_out(&wire), frames[1..]);
    assert_eq!(guest.tx.used_idx(), 3);
    assert_eq!(used_heads(&guest, 3), heads);
    assert_eq!(restored.tx_throttle_count().get(), 0);
    restored.reset();
}

/// Without limits there is nothing to refuse and no timer to wait on.
#[test]
fn a_device_is_unlimited_unless_told() {
    let (tap, _wire) = test_pair();
    let dev = NetDevice::new(Some(tap), CONFIG).unwrap();
    assert_eq!(dev.rate_limits(), NetRateLimits::default());
    assert!(dev.rate_limits().rx.is_unlimited() && dev.rate_limits().tx.is_unlimited());
}
