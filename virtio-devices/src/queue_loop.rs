//! The event loop shared by request/response devices (fs, block, rng):
//! wait on the queue events and the kill event, pop descriptor chains, serve
//! them, return them to the used ring and signal the guest.

use std::io;
use std::os::fd::AsRawFd;

use tracing::{debug, error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::{GuestMemoryMmap, IrqTrigger};

const TOKEN_KILL: u64 = u64::MAX;

/// Runs until `kill` is signalled (or epoll fails), calling `on_queue(i)`
/// whenever queue event `i` fires. The event is drained before the call.
pub(crate) fn run_event_loop(
    device: &str,
    kill: &EventFd,
    queue_evts: &[EventFd],
    mut on_queue: impl FnMut(usize),
) {
    let epoll = match setup_epoll(kill, queue_evts) {
        Ok(e) => e,
        Err(e) => {
            error!("{device}: failed to set up the event loop: {e}");
            return;
        }
    };
    let mut events = vec![EpollEvent::default(); queue_evts.len() + 1];
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
            let Some((index, evt)) = usize::try_from(ev.data())
                .ok()
                .and_then(|i| queue_evts.get(i).map(|evt| (i, evt)))
            else {
                debug!("{device}: unexpected epoll token {}", ev.data());
                continue;
            };
            let _ = evt.read();
            on_queue(index);
        }
    }
}

fn setup_epoll(kill: &EventFd, queue_evts: &[EventFd]) -> io::Result<Epoll> {
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
    Ok(epoll)
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
    mut serve: impl FnMut(DescriptorChain<&GuestMemoryMmap>) -> u32,
) {
    let budget = queue.size();
    let mut served = 0u16;
    while served < budget {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
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
