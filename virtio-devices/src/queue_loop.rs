//! The event loop shared by request/response devices (fs, block, rng):
//! wait on the queue events and the kill event, pop descriptor chains, serve
//! them, return them to the used ring and signal the guest; and, for a
//! rate-limited queue, wait on the limiter's timer while it is throttled,
//! leaving the requests it refused in the ring.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tracing::{debug, error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::rate_limiter::RateLimiter;
use crate::{GuestMemoryMmap, IrqTrigger};

const TOKEN_KILL: u64 = u64::MAX;
/// Timer `j` has token `TOKEN_TIMERS + j`; queue events have their index.
const TOKEN_TIMERS: u64 = 1 << 32;

/// What woke the event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Queue event `i` fired (it has been drained).
    Queue(usize),
    /// Timer `j` is readable; the callee must read it, or it stays so.
    Timer(usize),
}

/// Runs until `kill` is signalled (or epoll fails), calling `on_queue(i)`
/// whenever queue event `i` fires. The event is drained before the call.
pub(crate) fn run_event_loop(
    device: &str,
    kill: &EventFd,
    queue_evts: &[EventFd],
    mut on_queue: impl FnMut(usize),
) {
    run_event_loop_with_timers(device, kill, queue_evts, &[], |wake| {
        if let Wake::Queue(index) = wake {
            on_queue(index);
        }
    });
}

/// [`run_event_loop`] that also waits on `timers` (descriptors that become
/// readable, such as a rate limiter's timerfd) and reports each wake-up.
pub(crate) fn run_event_loop_with_timers(
    device: &str,
    kill: &EventFd,
    queue_evts: &[EventFd],
    timers: &[RawFd],
    mut on_wake: impl FnMut(Wake),
) {
    let epoll = match setup_epoll(kill, queue_evts, timers) {
        Ok(e) => e,
        Err(e) => {
            error!("{device}: failed to set up the event loop: {e}");
            return;
        }
    };
    let mut events = vec![EpollEvent::default(); queue_evts.len() + timers.len() + 1];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error!("{device}: epoll_wait failed: {e}");
                return;
            }
        };
        // The kill event wins over queue work that became ready at the same
        // time, so that a reset never waits for another round of requests.
        if events[..n].iter().any(|ev| ev.data() == TOKEN_KILL) {
            return;
        }
        for ev in &events[..n] {
            let token = ev.data();
            if let Some(timer) = token
                .checked_sub(TOKEN_TIMERS)
                .and_then(|j| usize::try_from(j).ok())
                .filter(|&j| j < timers.len())
            {
                on_wake(Wake::Timer(timer));
                continue;
            }
            let Some((index, evt)) = usize::try_from(token)
                .ok()
                .and_then(|i| queue_evts.get(i).map(|evt| (i, evt)))
            else {
                debug!("{device}: unexpected epoll token {token}");
                continue;
            };
            let _ = evt.read();
            on_wake(Wake::Queue(index));
        }
    }
}

fn setup_epoll(kill: &EventFd, queue_evts: &[EventFd], timers: &[RawFd]) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        kill.as_raw_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_KILL),
    )?;
    for (i, evt) in queue_evts.iter().enumerate() {
        epoll.ctl(
            ControlOperation::Add,
            evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, i as u64),
        )?;
    }
    for (j, &fd) in timers.iter().enumerate() {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, TOKEN_TIMERS + j as u64),
        )?;
    }
    Ok(epoll)
}

/// Serves one queue whose requests `limiter` admits, until `kill` is
/// signalled: `cost(chain)` says what a request costs (bytes, operations)
/// and `serve(chain)` serves it, returning its used length.
///
/// A request the limiter refuses goes back to the available ring, and
/// nothing more is taken from the queue until the limiter's timer fires;
/// guest notifications meanwhile only wake the loop. The queue is looked at
/// once before waiting: a device restored from a snapshot may find requests
/// a throttled device had left in the ring, which the guest will not notify
/// again. An unlimited limiter admits everything and has no timer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve_rate_limited_queue(
    device: &str,
    kill: &EventFd,
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    queue_evt: &EventFd,
    interrupt: &IrqTrigger,
    limiter: &mut RateLimiter,
    mut cost: impl FnMut(&DescriptorChain<&GuestMemoryMmap>) -> (u64, u64),
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) {
    let timers: Vec<RawFd> = limiter.timer_fd().into_iter().collect();
    let mut round = |limiter: &mut RateLimiter| {
        serve_queue_admitting(
            device,
            mem,
            queue,
            queue_evt,
            interrupt,
            |chain| {
                let (bytes, ops) = cost(chain);
                limiter.consume(bytes, ops)
            },
            &mut serve,
        );
    };
    round(limiter);
    run_event_loop_with_timers(
        device,
        kill,
        std::slice::from_ref(queue_evt),
        &timers,
        |wake| {
            match wake {
                Wake::Timer(_) => limiter.on_timer(),
                // Still throttled: the timer says when to look again.
                Wake::Queue(_) if limiter.is_blocked() => return,
                Wake::Queue(_) => {}
            }
            round(limiter);
        },
    );
}

/// Serves at most one queue's worth of available chains with `serve`, which
/// returns the number of bytes it wrote into the chain (the used length).
///
/// If the budget runs out the queue event is re-signalled, so that the event
/// loop gets to look at the kill event between rounds instead of spinning on
/// a guest that keeps the queue full.
pub(crate) fn serve_queue(
    device: &str,
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    queue_evt: &EventFd,
    interrupt: &IrqTrigger,
    serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) {
    serve_queue_admitting(device, mem, queue, queue_evt, interrupt, |_| true, serve);
}

/// [`serve_queue`], offering each chain to `admit` first: the first chain
/// it refuses is put back (the next pop returns it again) and ends the
/// round, without re-signalling the queue event.
pub(crate) fn serve_queue_admitting(
    device: &str,
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    queue_evt: &EventFd,
    interrupt: &IrqTrigger,
    mut admit: impl FnMut(&DescriptorChain<&GuestMemoryMmap>) -> bool,
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) {
    let budget = queue.size();
    let mut served = 0u16;
    while served < budget {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        if !admit(&chain) {
            // Left in the available ring, where the guest put it.
            queue.go_to_previous_position();
            break;
        }
        served += 1;
        let head = chain.head_index();
        let used_len = serve(chain);
        if let Err(e) = queue.add_used(mem, head, used_len) {
            warn!("{device}: failed to return a buffer: {e}");
            break;
        }
    }
    if served == 0 {
        return;
    }
    if served == budget {
        let _ = queue_evt.write(1);
    }
    match queue.needs_notification(mem) {
        Ok(true) => {
            if let Err(e) = interrupt.trigger_used_ring() {
                error!("{device}: failed to signal the guest: {e}");
            }
        }
        Ok(false) => {}
        Err(e) => warn!("{device}: failed to check notification: {e}"),
    }
}
