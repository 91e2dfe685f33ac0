//! virtio-rng: fills guest buffers with bytes from the host's `/dev/urandom`.
//! The worker runs the event loop shared with fs and block
//! ([`crate::queue_loop`]); this file only says what one request is.
//!
//! It may be rate limited ([`RngDevice::with_rate_limit`]): a request costs
//! the bytes it will get (its writable length, at most
//! [`MAX_BYTES_PER_REQUEST`]) and one operation; one that does not fit
//! waits in the ring until the limiter's timer says it fits.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;

use tracing::debug;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::{DescriptorChain, Queue};
use vmm_sys_util::eventfd::EventFd;

use crate::device::exact_queues;
use crate::queue_loop::serve_rate_limited_queue;
use crate::rate_limiter::{Clock, LimiterStore, RateLimit, RateLimiter, ThrottleCount};
use crate::worker::Worker;
use crate::{ActivateError, GuestMemoryMmap, IrqTrigger, VirtioDevice};

/// Size of the request queue.
pub const RNG_QUEUE_SIZE: u16 = 256;
/// At most this many random bytes are written per request, whatever the size
/// of the guest's buffer.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

const QUEUE_SIZES: [u16; 1] = [RNG_QUEUE_SIZE];

/// Errors of the rng device.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    /// Opening the host entropy source failed.
    #[error("failed to open /dev/urandom: {0}")]
    OpenEntropy(#[source] io::Error),
    /// The rate limiter's timer could not be created.
    #[error("cannot create the virtio-rng rate limiter: {0}")]
    RateLimiter(#[source] io::Error),
}

/// The virtio-rng device.
pub struct RngDevice {
    entropy: File,
    /// The limiter, lent to each worker and handed back when it stops.
    limiter: LimiterStore,
    worker: Option<Worker<RateLimiter>>,
}

impl RngDevice {
    /// Creates the device; it reads the host's `/dev/urandom`, as fast as
    /// the guest asks (see [`with_rate_limit`](Self::with_rate_limit)).
    pub fn new() -> Result<Self, RngError> {
        let entropy = File::open("/dev/urandom").map_err(RngError::OpenEntropy)?;
        Ok(RngDevice {
            entropy,
            limiter: LimiterStore::unlimited(),
            worker: None,
        })
    }

    /// Limits the bytes and requests the guest may get per second, timed by
    /// `clock` (a [`MonotonicClock`](crate::MonotonicClock) outside tests).
    /// Creates the limiter's timer now.
    pub fn with_rate_limit(
        mut self,
        limit: RateLimit,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RngError> {
        self.limiter = LimiterStore::new(limit, clock).map_err(RngError::RateLimiter)?;
        Ok(self)
    }

    /// The rate limit.
    pub fn rate_limit(&self) -> RateLimit {
        self.limiter.limit()
    }

    /// How often the rate limiter has held requests back.
    pub fn throttle_count(&self) -> ThrottleCount {
        self.limiter.throttle_count()
    }
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {
        // virtio-rng has no configuration space.
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        debug!(
            "virtio-rng: ignoring config write at {offset:#x} ({} bytes)",
            data.len()
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<IrqTrigger>,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let ([mut queue], [queue_evt]) = exact_queues::<1>(queues, queue_events)?;
        let mut entropy = self.entropy.try_clone().map_err(ActivateError::Worker)?;
        let mut limiter = self.limiter.lend().map_err(ActivateError::Worker)?;
        let worker = Worker::spawn("virtio-rng", move |kill| {
            let mut buf = Vec::new();
            serve_rate_limited_queue(
                "virtio-rng",
                &kill,
                &mem,
                &mut queue,
                &queue_evt,
                &interrupt,
                &mut limiter,
                |chain| (request_bytes(chain), 1),
                |chain| serve_request(&mem, &mut entropy, &mut buf, chain),
            );
            limiter
        })
        .map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.limiter.give_back(worker.stop());
        }
    }
}

/// The bytes a request will get, for rate limiting: its writable length
/// (from the descriptors alone), at most [`MAX_BYTES_PER_REQUEST`].
fn request_bytes(chain: &DescriptorChain<&GuestMemoryMmap>) -> u64 {
    chain
        .clone()
        .filter(|desc| desc.is_write_only())
        .map(|desc| u64::from(desc.len()))
        .fold(0u64, u64::saturating_add)
        .min(MAX_BYTES_PER_REQUEST as u64)
}

/// Serves one request: a chain the guest got wrong (outside guest memory,
/// no writable buffer) goes back with nothing written, never a panic.
fn serve_request(
    mem: &GuestMemoryMmap,
    entropy: &mut File,
    buf: &mut Vec<u8>,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    fill(mem, entropy, buf, chain).unwrap_or_else(|e| {
        debug!("virtio-rng: dropping malformed request: {e}");
        0
    })
}

/// Fills the writable part of `chain` from `entropy`; returns the number of
/// bytes written.
fn fill(
    mem: &GuestMemoryMmap,
    entropy: &mut File,
    buf: &mut Vec<u8>,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> io::Result<u32> {
    let mut writer = chain
        .writer(mem)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let len = writer.available_bytes().min(MAX_BYTES_PER_REQUEST);
    buf.resize(len, 0);
    entropy.read_exact(buf)?;
    writer.write_all(buf)?;
    // `len` is at most MAX_BYTES_PER_REQUEST.
    Ok(len as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use std::time::{Duration, Instant};

    fn wait_used(vq: &MockSplitQueue<GuestMemoryMmap>, n: u16) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while vq.used().idx().load() < n {
            assert!(
                Instant::now() < deadline,
                "device did not return {n} buffers"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    struct Setup {
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
        evt: EventFd,
        dev: RngDevice,
    }

    fn setup(mem: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>) -> Setup {
        setup_device(mem, vq, RngDevice::new().unwrap())
    }

    fn setup_device(
        mem: &GuestMemoryMmap,
        vq: &MockSplitQueue<GuestMemoryMmap>,
        mut dev: RngDevice,
    ) -> Setup {
        let irq = Arc::new(IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        dev.activate(
            mem.clone(),
            irq.clone(),
            vec![vq.create_queue::<Queue>().unwrap()],
            vec![evt.try_clone().unwrap()],
        )
        .unwrap();
        Setup {
            mem: mem.clone(),
            irq,
            evt,
            dev,
        }
    }

    #[test]
    fn fills_guest_buffers() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        // Two chains: one single 64-byte buffer, one split over two buffers.
        let descs = [
            RawDescriptor::from(Descriptor::new(0x1_0000, 64, VRING_DESC_F_WRITE as u16, 0)),
            RawDescriptor::from(Descriptor::new(
                0x2_0000,
                16,
                (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                2,
            )),
            RawDescriptor::from(Descriptor::new(0x3_0000, 48, VRING_DESC_F_WRITE as u16, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut s = setup(&mem, &vq);
        s.evt.write(1).unwrap();
        wait_used(&vq, 2);

        let used0 = vq.used().ring().ref_at(0).unwrap().load();
        let used1 = vq.used().ring().ref_at(1).unwrap().load();
        assert_eq!((used0.id(), used0.len()), (0, 64));
        assert_eq!((used1.id(), used1.len()), (1, 64));
        for (addr, len) in [(0x1_0000u64, 64usize), (0x2_0000, 16), (0x3_0000, 48)] {
            let mut buf = vec![0u8; len];
            s.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
            assert!(
                buf.iter().any(|&b| b != 0),
                "buffer at {addr:#x} not filled"
            );
        }
        assert_ne!(s.irq.status() & 1, 0, "used-ring interrupt not raised");
        assert_eq!(s.irq.irqfd().read().unwrap(), 1);
        // Not limited unless asked.
        assert!(s.dev.rate_limit().is_unlimited());
        assert_eq!(s.dev.throttle_count().get(), 0);
        s.dev.reset();
    }

    /// Polls `done` until it holds; a hang guard, not a timing assertion.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// 256 bytes at once, 1 MiB/s: four 64-byte requests get their bytes,
    /// the rest wait in the ring until the (manual) clock has earned them.
    #[test]
    fn a_rate_limited_rng_serves_its_budget_then_what_the_clock_earns() {
        use crate::rate_limiter::{Bucket, ManualClock, RateLimit};
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs: Vec<RawDescriptor> = (0..8u64)
            .map(|i| {
                RawDescriptor::from(Descriptor::new(
                    0x1_0000 + 0x100 * i,
                    64,
                    VRING_DESC_F_WRITE as u16,
                    0,
                ))
            })
            .collect();
        vq.add_desc_chains(&descs, 0).unwrap();
        let clock = Arc::new(ManualClock::new());
        let limit = RateLimit {
            bytes: Some(Bucket::new(1 << 20, 256).unwrap()),
            ops: None,
        };
        let dev = RngDevice::new()
            .unwrap()
            .with_rate_limit(limit, clock.clone())
            .unwrap();
        assert_eq!(dev.rate_limit(), limit);
        let throttled = dev.throttle_count();
        let mut s = setup_device(&mem, &vq, dev);
        s.evt.write(1).unwrap();
        wait_until("the fifth request to be refused", || throttled.get() >= 1);
        assert_eq!(vq.used().idx().load(), 4);
        let filled = |i: u64| {
            let mut buf = [0u8; 64];
            s.mem
                .read_slice(&mut buf, GuestAddress(0x1_0000 + 0x100 * i))
                .unwrap();
            buf.iter().any(|&b| b != 0)
        };
        assert!((0..4).all(filled));
        assert!(!(4..8).any(filled), "a refused request got bytes");

        // 128 bytes at 1 MiB/s: two more.
        clock.advance(Duration::from_nanos(122_071));
        wait_until("two more requests", || vq.used().idx().load() == 6);
        let seen = throttled.get();
        wait_until("the seventh to be refused", || throttled.get() > seen);
        assert_eq!(vq.used().idx().load(), 6);
        clock.advance(Duration::from_secs(1));
        wait_until("the last two", || vq.used().idx().load() == 8);
        assert!((0..8).all(filled));
        s.dev.reset();
    }

    #[test]
    fn malformed_requests_are_returned_empty() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [
            // Outside guest memory.
            RawDescriptor::from(Descriptor::new(
                0x4000_0000,
                64,
                VRING_DESC_F_WRITE as u16,
                0,
            )),
            // Read-only buffer: nothing to write into.
            RawDescriptor::from(Descriptor::new(0x1_0000, 64, 0, 0)),
            // A chain that loops on itself: must terminate.
            RawDescriptor::from(Descriptor::new(
                0x2_0000,
                8,
                (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                2,
            )),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut s = setup(&mem, &vq);
        s.evt.write(1).unwrap();
        wait_used(&vq, 3);
        let lens: Vec<u32> = (0..3)
            .map(|i| vq.used().ring().ref_at(i).unwrap().load().len())
            .collect();
        assert_eq!(lens[0], 0);
        assert_eq!(lens[1], 0);
        // The loop is cut at the queue size (16 descriptors of 8 bytes).
        assert_eq!(lens[2], 16 * 8);
        s.dev.reset();
        // A reset device can be activated again.
        let vq2 = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        s.dev
            .activate(
                mem.clone(),
                s.irq.clone(),
                vec![vq2.create_queue::<Queue>().unwrap()],
                vec![s.evt.try_clone().unwrap()],
            )
            .unwrap();
        assert!(matches!(
            s.dev.activate(mem.clone(), s.irq.clone(), vec![], vec![]),
            Err(ActivateError::AlreadyActive)
        ));
    }
}
