//! Token-bucket rate limiting for device workers: how much a guest may make
//! a device do per second, in bytes and in operations.
//!
//! A [`RateLimiter`] holds up to two [`Bucket`]s, one counting bytes and one
//! counting operations (requests). A bucket holds at most `burst` tokens and
//! gains `rate` tokens per second; a request costs its bytes from the first
//! and one token from the second, and goes ahead only if both have enough
//! ([`RateLimiter::consume`]). A request larger than a bucket's burst goes
//! ahead when that bucket is full and leaves it in debt, which the refill pays
//! off before anything else goes ahead: over time a bucket never lets more
//! than `rate` per second through, and no request size waits forever.
//!
//! A refused request is the worker's to keep (a queue worker leaves it in
//! the ring). The limiter then arms its timer ([`RateLimiter::timer_fd`], a
//! `timerfd` the worker's epoll waits on) for the moment the refused request
//! will fit, and refuses everything until the worker hands the expiry to
//! [`RateLimiter::on_timer`]. A throttled worker so sleeps in epoll like an
//! idle one: no busy loop, no blocking call, and its kill event still wakes
//! it.
//!
//! Time comes from a [`Clock`]: [`MonotonicClock`] in the VMM, a
//! [`ManualClock`] in tests, which then decide exactly what time it is.
//! Nothing here knows about a particular device or queue.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::error;
use vmm_sys_util::timerfd::TimerFd;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A monotonic time source: the time since some fixed, arbitrary point.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The time elapsed since the clock's origin; never goes back.
    fn now(&self) -> Duration;
}

/// The host's monotonic clock (`CLOCK_MONOTONIC`, through [`Instant`]).
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that stands still until told to move: tests decide what time it
/// is, so that what a rate limiter lets through does not depend on how fast
/// the test runs.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (saturating at `u64::MAX` ns).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

/// A rate limit that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    /// A bucket's rate or burst is 0: nothing would ever go through.
    #[error("a token bucket's {field} must be at least 1, got 0")]
    Zero {
        /// `rate` or `burst`.
        field: &'static str,
    },
}

/// One token bucket's shape: it holds at most `burst` tokens and gains
/// `rate` tokens per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    rate: u64,
    burst: u64,
}

impl Bucket {
    /// `rate` tokens per second, at most `burst` at once; both at least 1.
    pub fn new(rate: u64, burst: u64) -> Result<Self, RateLimitError> {
        if rate == 0 {
            return Err(RateLimitError::Zero { field: "rate" });
        }
        if burst == 0 {
            return Err(RateLimitError::Zero { field: "burst" });
        }
        Ok(Bucket { rate, burst })
    }

    /// Tokens gained per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Most tokens held at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

/// What a device may do per second; a missing bucket does not limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Bytes moved (read, written, generated).
    pub bytes: Option<Bucket>,
    /// Requests served.
    pub ops: Option<Bucket>,
}

impl RateLimit {
    /// No limit at all.
    pub const UNLIMITED: RateLimit = RateLimit {
        bytes: None,
        ops: None,
    };

    /// Whether this limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.ops.is_none()
    }
}

/// A bucket's state. Tokens are kept as a signed balance (negative: debt
/// from a request larger than the burst) plus the fraction of a token the
/// time since the last whole one has earned, in token-nanoseconds, so that
/// no refill is lost to rounding however often it is asked.
#[derive(Debug)]
struct TokenBucket {
    rate: u128,
    burst: i128,
    balance: i128,
    /// Token-nanoseconds towards the next whole token (< 10^9).
    partial: u128,
    /// When the balance was last brought up to date, in clock nanoseconds.
    updated: u128,
}

impl TokenBucket {
    /// A full bucket at `now`.
    fn new(shape: Bucket, now: u128) -> Self {
        TokenBucket {
            rate: u128::from(shape.rate),
            burst: i128::from(shape.burst),
            balance: i128::from(shape.burst),
            partial: 0,
            updated: now,
        }
    }

    fn refill(&mut self, now: u128) {
        let elapsed = now.saturating_sub(self.updated);
        self.updated = self.updated.max(now);
        if self.balance >= self.burst {
            return;
        }
        // At most 2^64 ns x 2^64 tokens/s: fits u128.
        let earned = self.partial + elapsed * self.rate;
        // < 2^128 / 10^9 < 2^98: fits i128.
        let whole = (earned / NANOS_PER_SEC) as i128;
        self.partial = earned % NANOS_PER_SEC;
        self.balance = self.balance.saturating_add(whole);
        if self.balance >= self.burst {
            self.balance = self.burst;
            self.partial = 0;
        }
    }

    /// Whether `cost` may go ahead now: the bucket has it, or the bucket is
    /// full (a request larger than the burst).
    fn fits(&self, cost: u64) -> bool {
        self.balance >= i128::from(cost) || self.balance >= self.burst
    }

    fn take(&mut self, cost: u64) {
        self.balance -= i128::from(cost);
    }

    /// Nanoseconds from now until `cost` fits (0 if it does).
    fn wait(&self, cost: u64) -> u128 {
        let target = i128::from(cost).min(self.burst);
        if self.balance >= target {
            return 0;
        }
        // `missing` >= 1 and `partial` < 10^9, so this is positive.
        let missing = (target - self.balance).unsigned_abs();
        let needed = missing * NANOS_PER_SEC - self.partial;
        needed.div_ceil(self.rate)
    }
}

/// The buckets of a limit and the clock that refills them.
#[derive(Debug)]
struct Budget {
    clock: Arc<dyn Clock>,
    bytes: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

impl Budget {
    fn new(limit: RateLimit, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now().as_nanos();
        Budget {
            bytes: limit.bytes.map(|b| TokenBucket::new(b, now)),
            ops: limit.ops.map(|b| TokenBucket::new(b, now)),
            clock,
        }
    }

    /// Takes `bytes` and `ops` if both buckets have them; otherwise takes
    /// nothing and says how long until they will.
    fn take(&mut self, bytes: u64, ops: u64) -> Result<(), Duration> {
        let now = self.clock.now().as_nanos();
        let mut wait = 0u128;
        for (bucket, cost) in [(&mut self.bytes, bytes), (&mut self.ops, ops)] {
            if let Some(bucket) = bucket {
                bucket.refill(now);
                if !bucket.fits(cost) {
                    wait = wait.max(bucket.wait(cost));
                }
            }
        }
        if wait > 0 {
            let nanos = u64::try_from(wait).unwrap_or(u64::MAX);
            return Err(Duration::from_nanos(nanos));
        }
        for (bucket, cost) in [(&mut self.bytes, bytes), (&mut self.ops, ops)] {
            if let Some(bucket) = bucket {
                bucket.take(cost);
            }
        }
        Ok(())
    }
}

/// How often a limiter refused work, readable from another thread (the
/// limiter itself moves into the device's worker).
#[derive(Clone, Debug, Default)]
pub struct ThrottleCount(Arc<AtomicU64>);

impl ThrottleCount {
    /// Refusals so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// A rate limit applied to one device's requests, with the timer its worker
/// waits on while throttled. An unlimited one admits everything and has no
/// timer.
#[derive(Debug)]
pub struct RateLimiter {
    budget: Option<Budget>,
    timer: Option<TimerFd>,
    /// Refusing everything until the timer has fired.
    blocked: bool,
    /// How long the last refusal armed the timer for.
    retry_after: Option<Duration>,
    throttled: ThrottleCount,
}

impl RateLimiter {
    /// A limiter for `limit`, its buckets full, timed by `clock`. Creates
    /// its timer (a non-blocking `timerfd`) unless `limit` is unlimited.
    pub fn new(limit: RateLimit, clock: Arc<dyn Clock>) -> io::Result<Self> {
        if limit.is_unlimited() {
            return Ok(Self::unlimited());
        }
        let timer = TimerFd::new().map_err(io::Error::from)?;
        set_nonblocking(timer.as_raw_fd())?;
        Ok(RateLimiter {
            budget: Some(Budget::new(limit, clock)),
            timer: Some(timer),
            blocked: false,
            retry_after: None,
            throttled: ThrottleCount::default(),
        })
    }

    /// A limiter that admits everything.
    pub fn unlimited() -> Self {
        RateLimiter {
            budget: None,
            timer: None,
            blocked: false,
            retry_after: None,
            throttled: ThrottleCount::default(),
        }
    }

    /// Whether this limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.budget.is_none()
    }

    /// Takes the budget of one piece of work that moves `bytes` and counts
    /// as `ops` operations, if there is enough of it; false if not, and the
    /// work must wait for the timer. While throttled (until
    /// [`on_timer`](Self::on_timer)) everything is refused, so that work
    /// goes ahead in the order it was refused.
    pub fn consume(&mut self, bytes: u64, ops: u64) -> bool {
        let Some(budget) = &mut self.budget else {
            return true;
        };
        if self.blocked {
            return false;
        }
        match budget.take(bytes, ops) {
            Ok(()) => true,
            Err(wait) => {
                self.throttled.bump();
                self.block_for(wait);
                false
            }
        }
    }

    /// Arms the timer for `wait` (at least 1 ns: 0 would disarm it).
    fn block_for(&mut self, wait: Duration) {
        let wait = wait.max(Duration::from_nanos(1));
        self.blocked = true;
        self.retry_after = Some(wait);
        if let Some(timer) = &mut self.timer {
            if let Err(e) = timer.reset(wait, None) {
                // Not expected; the work then waits for the guest's next
                // notification instead of the timer.
                error!("rate limiter: cannot arm the timer for {wait:?}: {e}");
                self.blocked = false;
            }
        }
    }

    /// Whether work is refused until the timer fires.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// How long the last refusal set the timer for.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The timer to wait on for readability while [`is_blocked`]; `None`
    /// for an unlimited limiter.
    ///
    /// [`is_blocked`]: Self::is_blocked
    pub fn timer_fd(&self) -> Option<RawFd> {
        self.timer.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// To be called when the timer is readable: reads its expiry (so that
    /// it is no longer readable) and lets work be offered again.
    pub fn on_timer(&mut self) {
        if let Some(timer) = &mut self.timer {
            // Non-blocking: a spurious call reads nothing (EAGAIN).
            let _ = timer.wait();
        }
        self.blocked = false;
    }

    /// A handle on the number of refusals, for tests and metrics.
    pub fn throttle_count(&self) -> ThrottleCount {
        self.throttled.clone()
    }
}

/// A device's rate limit between activations: the limit, its clock, and
/// the limiter a worker takes when it starts and hands back when it stops
/// ([`lend`](Self::lend), [`give_back`](Self::give_back)), so that a reset
/// does not refill the guest's budget.
#[derive(Debug)]
pub struct LimiterStore {
    limit: RateLimit,
    clock: Arc<dyn Clock>,
    /// `None` while a worker has it, or after one panicked with it.
    idle: Option<RateLimiter>,
    throttled: ThrottleCount,
}

impl LimiterStore {
    /// A store of an unlimited limiter.
    pub fn unlimited() -> Self {
        let limiter = RateLimiter::unlimited();
        LimiterStore {
            limit: RateLimit::UNLIMITED,
            clock: Arc::new(MonotonicClock::new()),
            throttled: limiter.throttle_count(),
            idle: Some(limiter),
        }
    }

    /// A store of a limiter for `limit`, timed by `clock`; creates its
    /// timer now (see [`RateLimiter::new`]).
    pub fn new(limit: RateLimit, clock: Arc<dyn Clock>) -> io::Result<Self> {
        let limiter = RateLimiter::new(limit, clock.clone())?;
        Ok(LimiterStore {
            limit,
            clock,
            throttled: limiter.throttle_count(),
            idle: Some(limiter),
        })
    }

    /// The limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// How often the limiter has refused work, whichever worker has it.
    pub fn throttle_count(&self) -> ThrottleCount {
        self.throttled.clone()
    }

    /// The limiter for a worker that starts: the one the last worker
    /// handed back, or, if it panicked with it, a new one, full, counting
    /// its refusals where the old one did.
    pub fn lend(&mut self) -> io::Result<RateLimiter> {
        if let Some(limiter) = self.idle.take() {
            return Ok(limiter);
        }
        let mut limiter = RateLimiter::new(self.limit, self.clock.clone())?;
        limiter.throttled = self.throttled.clone();
        Ok(limiter)
    }

    /// Takes back what a worker returned (`None` if it panicked).
    pub fn give_back(&mut self, limiter: Option<RateLimiter>) {
        self.idle = limiter;
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor this limiter owns; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL on the same descriptor with an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const NS: Duration = Duration::from_nanos(1);

    fn bucket(rate: u64, burst: u64) -> Option<Bucket> {
        Some(Bucket::new(rate, burst).unwrap())
    }

    fn limiter(limit: RateLimit) -> (Arc<ManualClock>, RateLimiter) {
        let clock = Arc::new(ManualClock::new());
        let limiter = RateLimiter::new(limit, clock.clone()).unwrap();
        (clock, limiter)
    }

    #[test]
    fn buckets_must_pass_something() {
        assert_eq!(
            Bucket::new(0, 10),
            Err(RateLimitError::Zero { field: "rate" })
        );
        assert_eq!(
            Bucket::new(10, 0),
            Err(RateLimitError::Zero { field: "burst" })
        );
        assert!(RateLimitError::Zero { field: "rate" }
            .to_string()
            .contains("rate must be at least 1"));
        assert!(RateLimit::UNLIMITED.is_unlimited());
        assert!(!RateLimit {
            ops: bucket(1, 1),
            ..RateLimit::UNLIMITED
        }
        .is_unlimited());
    }

    #[test]
    fn a_full_bucket_lets_its_burst_through_then_its_rate() {
        let (clock, mut l) = limiter(RateLimit {
            bytes: bucket(1000, 4000),
            ops: None,
        });
        for _ in 0..4 {
            assert!(l.consume(1000, 1));
        }
        assert!(!l.consume(1000, 1));
        // The next 1000 bytes take a second to earn.
        assert_eq!(l.retry_after(), Some(Duration::from_secs(1)));
        assert!(l.is_blocked());
        assert_eq!(l.throttle_count().get(), 1);
        // Blocked until the timer fires, whatever the clock says.
        clock.advance(Duration::from_secs(5));
        assert!(!l.consume(1, 1));
        assert_eq!(l.throttle_count().get(), 1);
        l.on_timer();
        assert!(!l.is_blocked());
        // Five seconds earned 4000 (the burst), not 5000.
        for _ in 0..4 {
            assert!(l.consume(1000, 1));
        }
        assert!(!l.consume(1000, 1));
        l.on_timer();
        clock.advance(Duration::from_millis(999));
        assert!(!l.consume(1000, 1));
        assert_eq!(l.retry_after(), Some(MS));
        l.on_timer();
        clock.advance(MS);
        assert!(l.consume(1000, 1));
        assert_eq!(l.throttle_count().get(), 3);
    }

    #[test]
    fn fractions_of_a_token_are_not_lost() {
        let (clock, mut l) = limiter(RateLimit {
            bytes: None,
            ops: bucket(3, 100),
        });
        assert!(l.consume(0, 100));
        // A third of a second is 999_999_999 token-ns at 3/s: not yet one.
        clock.advance(Duration::from_nanos(333_333_333));
        assert!(!l.consume(0, 1));
        assert_eq!(l.retry_after(), Some(NS));
        l.on_timer();
        clock.advance(NS);
        assert!(l.consume(0, 1));
        // Thirty asks a ninth of a second apart (1 ns short of 10/3 s in
        // all), then 30 ns: exactly ten tokens.
        let mut granted = 0;
        for _ in 0..30 {
            clock.advance(Duration::from_nanos(111_111_111));
            l.on_timer();
            if l.consume(0, 1) {
                granted += 1;
            }
        }
        clock.advance(Duration::from_nanos(30));
        l.on_timer();
        granted += u32::from(l.consume(0, 1));
        assert_eq!(granted, 10);
    }

    #[test]
    fn work_larger_than_the_burst_waits_for_a_full_bucket_and_pays_its_debt() {
        let (clock, mut l) = limiter(RateLimit {
            bytes: bucket(100, 100),
            ops: None,
        });
        assert!(l.consume(60, 1));
        // 250 > burst: it needs a full bucket, 60 bytes away (0.6 s).
        assert!(!l.consume(250, 1));
        assert_eq!(l.retry_after(), Some(Duration::from_millis(600)));
        l.on_timer();
        clock.advance(Duration::from_millis(600));
        assert!(l.consume(250, 1));
        // 150 bytes of debt, then 10 for the next: 1.6 s.
        assert!(!l.consume(10, 1));
        assert_eq!(l.retry_after(), Some(Duration::from_millis(1600)));
        l.on_timer();
        clock.advance(Duration::from_millis(1599));
        assert!(!l.consume(10, 1));
        l.on_timer();
        clock.advance(MS);
        assert!(l.consume(10, 1));
    }

    #[test]
    fn both_buckets_must_agree_and_a_refusal_takes_from_neither() {
        let (clock, mut l) = limiter(RateLimit {
            bytes: bucket(1000, 1000),
            ops: bucket(10, 2),
        });
        assert!(l.consume(100, 1));
        assert!(l.consume(100, 1));
        // Bytes left, no operation left: refused, for a tenth of a second.
        assert!(!l.consume(100, 1));
        assert_eq!(l.retry_after(), Some(Duration::from_millis(100)));
        l.on_timer();
        clock.advance(Duration::from_millis(100));
        // The refusal took no bytes: 800 + 100 earned.
        assert!(l.consume(900, 1));
        // Both empty: the longer wait, 1000 bytes (1 s) over 1 op (0.1 s).
        assert!(!l.consume(1000, 1));
        assert_eq!(l.retry_after(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn huge_rates_bursts_and_times_do_not_overflow() {
        let (clock, mut l) = limiter(RateLimit {
            bytes: bucket(u64::MAX, u64::MAX),
            ops: bucket(1, 1),
        });
        assert!(l.consume(u64::MAX, 1));
        assert!(!l.consume(u64::MAX, 1));
        assert_eq!(l.retry_after(), Some(Duration::from_secs(1)));
        l.on_timer();
        // The clock saturates; so does the refill.
        clock.advance(Duration::from_nanos(u64::MAX));
        clock.advance(Duration::from_secs(1));
        assert!(l.consume(u64::MAX, u64::MAX));
        // A debt of 2^64 operations at 1 per second: the longest wait a
        // Duration of nanoseconds holds, no panic.
        assert!(!l.consume(0, 1));
        assert_eq!(l.retry_after(), Some(Duration::from_nanos(u64::MAX)));
    }

    #[test]
    fn unlimited_admits_everything_without_a_timer() {
        let (_, mut l) = limiter(RateLimit::UNLIMITED);
        assert!(l.is_unlimited());
        assert_eq!(l.timer_fd(), None);
        for _ in 0..1000 {
            assert!(l.consume(u64::MAX, u64::MAX));
        }
        assert_eq!(l.throttle_count().get(), 0);
        assert!(!l.is_blocked());
    }

    /// A worker hands its limiter back as it left it; after one panicked
    /// with it, the next gets a full one that counts where the old did.
    #[test]
    fn a_store_lends_the_same_limiter_until_it_is_lost() {
        let clock = Arc::new(ManualClock::new());
        let limit = RateLimit {
            bytes: None,
            ops: bucket(1, 1),
        };
        let mut store = LimiterStore::new(limit, clock).unwrap();
        assert_eq!(store.limit(), limit);
        let count = store.throttle_count();
        let mut l = store.lend().unwrap();
        assert!(l.consume(0, 1));
        store.give_back(Some(l));
        let mut l = store.lend().unwrap();
        assert!(!l.consume(0, 1), "the budget was spent");
        assert_eq!(count.get(), 1);
        store.give_back(None);
        let mut l = store.lend().unwrap();
        assert!(l.consume(0, 1) && !l.consume(0, 1));
        assert_eq!(count.get(), 2);

        let mut unlimited = LimiterStore::unlimited();
        assert!(unlimited.limit().is_unlimited());
        assert!(unlimited.lend().unwrap().is_unlimited());
        assert!(unlimited.lend().unwrap().is_unlimited());
    }

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    /// The timer is armed for the refusal's wait and becomes readable when
    /// it expires; `on_timer` makes it unreadable again.
    #[test]
    fn the_timer_is_armed_by_a_refusal_and_read_by_on_timer() {
        // A tiny deficit at a huge rate: the real timer expires at once.
        let (clock, mut l) = limiter(RateLimit {
            bytes: bucket(u64::MAX, 10),
            ops: None,
        });
        let fd = l.timer_fd().unwrap();
        assert!(!readable(fd));
        assert!(l.consume(10, 1));
        assert!(!l.consume(10, 1));
        assert_eq!(l.retry_after(), Some(NS));
        let mut spins = 0;
        while !readable(fd) {
            spins += 1;
            assert!(spins < 10_000_000, "the timer never fired");
            std::hint::spin_loop();
        }
        l.on_timer();
        assert!(!readable(fd));
        assert!(!l.is_blocked());
        // A spurious call neither blocks nor unblocks anything it should not.
        l.on_timer();
        // The manual clock has not moved: still nothing earned.
        assert!(!l.consume(10, 1));
        l.on_timer();
        clock.advance(NS);
        assert!(l.consume(10, 1));

        // A long wait leaves the timer armed and unreadable.
        let (_, mut slow) = limiter(RateLimit {
            bytes: bucket(1, 1000),
            ops: None,
        });
        assert!(slow.consume(1000, 1));
        assert!(!slow.consume(1000, 1));
        assert_eq!(slow.retry_after(), Some(Duration::from_secs(1000)));
        assert!(!readable(slow.timer_fd().unwrap()));
    }
}
