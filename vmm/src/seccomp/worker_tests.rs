//! A net worker serves both its queues under its own filter, throttled
//! both ways by its rate limiters and woken by their timers: in a forked
//! child of the test binary (a filter is for good, and other tests run
//! threads of their own), with a socket pair standing in for the tap.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_devices::{
    Bucket, IrqTrigger, ManualClock, NetConfig, NetDevice, NetRateLimits, RateLimit, Tap,
    VirtioDevice,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const QUEUE_SIZE: u16 = 16;
/// Descriptor tables of the receive and transmit queues; each queue's
/// rings follow its table.
const RINGS: [u64; 2] = [0x0, 0x1000];
const WRITE: u16 = 2;

#[test]
fn the_net_worker_needs_nothing_outside_its_filter() {
    // SAFETY: the child runs the worker and exits; glibc keeps malloc
    // usable across fork, and the child touches no other test's state.
    match unsafe { libc::fork() } {
        0 => {
            let ok = std::panic::catch_unwind(net_worker_round_trip).is_ok();
            // SAFETY: _exit ends the child without the parent's handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            // A call outside the filter kills the child with SIGSYS.
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "the confined net worker failed: status {status:#x}"
            );
        }
    }
}

/// The queue with its rings at `base`.
fn queue(base: u64) -> Queue {
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    let avail = base + 16 * u64::from(QUEUE_SIZE);
    let used = base + 0x800;
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some(avail as u32), Some(0));
    q.set_used_ring_address(Some(used as u32), Some(0));
    q.set_ready(true);
    q
}

/// Makes descriptor `n` a one-descriptor chain, available as the queue's
/// `n`-th (at `base`; `n` < [`QUEUE_SIZE`]).
fn post(mem: &GuestMemoryMmap, base: u64, n: u16, addr: u64, len: u32, flags: u16) {
    let mut desc = [0u8; 16];
    desc[..8].copy_from_slice(&addr.to_le_bytes());
    desc[8..12].copy_from_slice(&len.to_le_bytes());
    desc[12..14].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&desc, GuestAddress(base + 16 * u64::from(n)))
        .unwrap();
    let avail = base + 16 * u64::from(QUEUE_SIZE);
    mem.write_obj(n, GuestAddress(avail + 4 + 2 * u64::from(n)))
        .unwrap();
    mem.write_obj(n + 1, GuestAddress(avail + 2)).unwrap();
}

fn used_idx(mem: &GuestMemoryMmap, base: u64) -> u16 {
    mem.read_obj(GuestAddress(base + 0x802)).unwrap()
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Moves two frames each way through a net worker confined by its filter,
/// limited to one frame at once each way: the second waits for the clock,
/// which stands still until the limiter's timer has fired and been read
/// (and re-armed) at least once.
fn net_worker_round_trip() {
    virtio_devices::set_worker_confinement(super::confine_worker);
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let ret = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
    assert_eq!(ret, 0);
    // SAFETY: both descriptors are new and owned by nothing else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let tap = Tap::from_socket(theirs, "pair").unwrap();
    let config = NetConfig {
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
    };
    let clock = Arc::new(ManualClock::new());
    let one_per_ms = RateLimit {
        bytes: None,
        ops: Some(Bucket::new(1000, 1).unwrap()),
    };
    let limits = NetRateLimits {
        rx: one_per_ms,
        tx: one_per_ms,
    };
    let mut dev = NetDevice::new(Some(tap), config)
        .unwrap()
        .with_rate_limits(limits, clock.clone())
        .unwrap();
    let (rx_throttled, tx_throttled) = (dev.rx_throttle_count(), dev.tx_throttle_count());
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let events = [
        EventFd::new(EFD_NONBLOCK).unwrap(),
        EventFd::new(EFD_NONBLOCK).unwrap(),
    ];
    let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    dev.ack_features(dev.avail_features());
    dev.activate(
        mem.clone(),
        irq,
        vec![queue(RINGS[0]), queue(RINGS[1])],
        events.iter().map(|e| e.try_clone().unwrap()).collect(),
    )
    .unwrap();

    // Transmit: twice a header and a 60-byte frame.
    let packet: Vec<u8> = (0..72u8).collect();
    mem.write_slice(&[0; 12], GuestAddress(0x1_0000)).unwrap();
    mem.write_slice(&packet[12..], GuestAddress(0x1_000c))
        .unwrap();
    post(&mem, RINGS[1], 0, 0x1_0000, 72, 0);
    post(&mem, RINGS[1], 1, 0x1_0000, 72, 0);
    events[1].write(1).unwrap();
    wait("the timer to fire", || tx_throttled.get() >= 2);
    assert_eq!(used_idx(&mem, RINGS[1]), 1);
    clock.advance(Duration::from_millis(1));
    wait("the transmitted frames", || used_idx(&mem, RINGS[1]) == 2);
    for _ in 0..2 {
        let mut buf = [0u8; 128];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(ours.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert_eq!(n, 72);
    }

    // Receive: the same packet twice into guest buffers.
    post(&mem, RINGS[0], 0, 0x2_0000, 2048, WRITE);
    post(&mem, RINGS[0], 1, 0x3_0000, 2048, WRITE);
    events[0].write(1).unwrap();
    for _ in 0..2 {
        // SAFETY: `packet`'s bytes are readable for its length.
        let n = unsafe { libc::send(ours.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0) };
        assert_eq!(n, 72);
    }
    wait("the timer to fire", || rx_throttled.get() >= 2);
    assert_eq!(used_idx(&mem, RINGS[0]), 1);
    clock.advance(Duration::from_millis(1));
    wait("the received frames", || used_idx(&mem, RINGS[0]) == 2);
    dev.reset();
}
