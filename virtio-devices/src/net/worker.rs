//! The net worker thread: one epoll loop over the kill event, both queue
//! events, the tap and the rate limiters' timers, moving frames between the
//! queues and the tap.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{debug, error, warn};
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::header::fit_host_header;
use super::rx::{self, Delivery, RxScratch};
use super::{tx, Tap, MAX_PACKET_LEN, VNET_HDR_LEN};
use crate::rate_limiter::RateLimiter;
use crate::{GuestMemoryMmap, IrqTrigger};

const TOKEN_KILL: u64 = 0;
const TOKEN_RX: u64 = 1;
const TOKEN_TX: u64 = 2;
const TOKEN_TAP: u64 = 3;
const TOKEN_RX_TIMER: u64 = 4;
const TOKEN_TX_TIMER: u64 = 5;
/// Most descriptors the worker waits on: the kill event, two queue
/// events, the tap and two timers.
const MAX_EVENTS: usize = 6;
/// What the worker waits for on the tap.
const TAP_EVENTS: EventSet = EventSet::IN.union(EventSet::READ_HANG_UP);

/// Whether the worker reads the tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TapReading {
    /// The tap is in the epoll set.
    On,
    /// A packet waits for receive buffers or the receive rate limiter;
    /// the tap is out of the epoll set until the guest posts some or the
    /// limiter's timer fires.
    Paused,
    /// Reading failed for good (the tap went away): only transmit goes on.
    Gone,
}

/// Everything the worker thread owns while the device is active.
pub(crate) struct NetWorker {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) interrupt: Arc<IrqTrigger>,
    pub(crate) rxq: Queue,
    pub(crate) txq: Queue,
    pub(crate) rx_evt: EventFd,
    pub(crate) tx_evt: EventFd,
    /// A slot bound to no tap (a snapshot's spare interface) runs no
    /// worker at all (see `NetDevice::activate`).
    pub(crate) tap: Arc<Tap>,
    /// The features the driver accepted.
    pub(crate) acked: u64,
    /// Counts the worker's wake-ups.
    pub(crate) wakeups: WakeCount,
}

/// The worker's rate limiters, one each way: made with the device, lent to
/// each worker and handed back when it stops, like [`Buffers`].
pub(crate) struct Limiters {
    /// Frames from the tap to the guest.
    pub(crate) rx: RateLimiter,
    /// Frames from the guest to the tap.
    pub(crate) tx: RateLimiter,
}

/// How often a net worker has woken up (returned from `epoll_wait`),
/// readable from another thread: one that sleeps while it waits (for
/// buffers, for a rate limiter's timer) adds nothing to it.
#[derive(Clone, Debug, Default)]
pub struct WakeCount(Arc<AtomicU64>);

impl WakeCount {
    /// Wake-ups so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The worker's buffers: made with the device, lent to each worker and
/// handed back when it stops, so that the worker thread neither allocates
/// nor frees them (see [`RxScratch::new`] for why that matters).
pub(crate) struct Buffers {
    rx_packet: Box<[u8]>,
    rx_scratch: RxScratch,
    tx_packet: Box<[u8]>,
}

impl Buffers {
    pub(crate) fn new() -> Self {
        Buffers {
            rx_packet: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
            rx_scratch: RxScratch::new(),
            tx_packet: vec![0u8; MAX_PACKET_LEN].into_boxed_slice(),
        }
    }
}

/// A packet read from the tap and kept in `bufs.rx_packet`.
#[derive(Clone, Copy, Debug)]
struct Pending {
    len: usize,
    /// Whether the receive limiter has admitted it (it then waits for
    /// buffers only).
    admitted: bool,
}

/// The worker's buffers, limiters and receive state.
struct State {
    bufs: Buffers,
    limiters: Limiters,
    /// The packet in `bufs.rx_packet` that waits for buffers or the
    /// receive limiter.
    rx_pending: Option<Pending>,
    tap: TapReading,
    /// epoll said the other end of the tap hung up (only a socket standing
    /// in for a tap has one): a read of nothing is then the end, not an
    /// empty message.
    tap_hung_up: bool,
}

impl NetWorker {
    /// Runs until `kill` is signalled (or epoll fails); hands the buffers
    /// and limiters back. A packet waiting for receive buffers or the
    /// receive limiter is dropped.
    pub(crate) fn run(
        mut self,
        kill: EventFd,
        bufs: Buffers,
        limiters: Limiters,
    ) -> (Buffers, Limiters) {
        let epoll = match self.setup_epoll(&kill, &limiters) {
            Ok(epoll) => epoll,
            Err(e) => {
                error!("virtio-net: failed to set up the worker event loop: {e}");
                return (bufs, limiters);
            }
        };
        let mut state = State {
            bufs,
            limiters,
            rx_pending: None,
            tap: TapReading::On,
            tap_hung_up: false,
        };
        // Chains may be waiting already (a restored driver does not kick
        // again for them).
        self.process(&epoll, &mut state);
        let mut events = [EpollEvent::default(); MAX_EVENTS];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("virtio-net: epoll_wait failed, stopping the device: {e}");
                    return (state.bufs, state.limiters);
                }
            };
            self.wakeups.bump();
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => return (state.bufs, state.limiters),
                    TOKEN_RX => drain(&self.rx_evt),
                    TOKEN_TX => drain(&self.tx_evt),
                    TOKEN_RX_TIMER => state.limiters.rx.on_timer(),
                    TOKEN_TX_TIMER => state.limiters.tx.on_timer(),
                    TOKEN_TAP => {
                        let hang_up = EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR;
                        state.tap_hung_up |= ev.event_set().intersects(hang_up);
                    }
                    other => debug!("virtio-net: unexpected epoll token {other}"),
                }
            }
            self.process(&epoll, &mut state);
        }
    }

    fn setup_epoll(&self, kill: &EventFd, limiters: &Limiters) -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let fds: [(Option<RawFd>, u64); 5] = [
            (Some(kill.as_raw_fd()), TOKEN_KILL),
            (Some(self.rx_evt.as_raw_fd()), TOKEN_RX),
            (Some(self.tx_evt.as_raw_fd()), TOKEN_TX),
            // An unlimited limiter has no timer.
            (limiters.rx.timer_fd(), TOKEN_RX_TIMER),
            (limiters.tx.timer_fd(), TOKEN_TX_TIMER),
        ];
        for (fd, token) in fds {
            let Some(fd) = fd else { continue };
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        epoll.ctl(
            ControlOperation::Add,
            self.tap.as_raw_fd(),
            EpollEvent::new(TAP_EVENTS, TOKEN_TAP),
        )?;
        Ok(epoll)
    }

    fn process(&mut self, epoll: &Epoll, state: &mut State) {
        let tx_used = self.process_tx(state);
        let rx_used = self.process_rx(epoll, state);
        let mut notify = false;
        if tx_used {
            notify |= needs_notification(&mut self.txq, &self.mem);
        }
        if rx_used {
            notify |= needs_notification(&mut self.rxq, &self.mem);
        }
        if notify {
            if let Err(e) = self.interrupt.trigger_used_ring() {
                error!("virtio-net: failed to signal the guest: {e}");
            }
        }
    }

    /// Sends at most one queue's worth of chains (re-signalling itself if
    /// there may be more, so that the kill event is looked at in between),
    /// none past the first the transmit limiter refuses: that one stays in
    /// the ring, and nothing is taken from it until the limiter's timer
    /// has fired. Returns whether any chain was returned.
    fn process_tx(&mut self, state: &mut State) -> bool {
        if state.limiters.tx.is_blocked() {
            return false;
        }
        let budget = self.txq.size();
        let mut served = 0u16;
        while served < budget {
            let Some(chain) = self.txq.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let packet = &mut state.bufs.tx_packet;
            let gathered = tx::gather(&self.mem, chain, packet, self.acked);
            // A chain that cannot be sent costs a frame and no bytes.
            let bytes = gathered.as_ref().map_or(0, |&len| frame_bytes(len));
            if !state.limiters.tx.consume(bytes, 1) {
                // Back in the available ring, in its place: the next pop
                // returns it again.
                self.txq.go_to_previous_position();
                break;
            }
            served += 1;
            match gathered {
                Ok(len) => {
                    // A tap that cannot take a frame now drops it, as a NIC
                    // with a full queue would.
                    if let Err(e) = self.tap.write_packet(&packet[..len]) {
                        debug!(
                            "virtio-net: {}: dropping a {len}-byte frame: {e}",
                            self.tap.name()
                        );
                    }
                }
                Err(e) => debug!("virtio-net: dropping a malformed transmit chain: {e}"),
            }
            if let Err(e) = self.txq.add_used(&self.mem, head, 0) {
                warn!("virtio-net: failed to return a transmit buffer: {e}");
                break;
            }
        }
        if served == budget {
            kick(&self.tx_evt);
        }
        served > 0
    }

    /// Moves frames from the tap into receive buffers: at most one queue's
    /// worth per call (the tap stays readable, so epoll comes back), and
    /// none past a frame the guest has no buffers for or the receive
    /// limiter refuses (the tap is then out of the epoll set until buffers
    /// come or the limiter's timer fires). Returns whether any buffer was
    /// returned.
    fn process_rx(&mut self, epoll: &Epoll, state: &mut State) -> bool {
        let tap = self.tap.clone();
        let mergeable = self.acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let mut used = false;
        for _ in 0..self.rxq.size() {
            let pending = match state.rx_pending.take() {
                Some(pending) => pending,
                None if state.tap != TapReading::On => break,
                None => match tap.read_packet(&mut state.bufs.rx_packet) {
                    Ok(0) if state.tap_hung_up => {
                        warn!("virtio-net: {}: the tap was closed", tap.name());
                        stop_reading(epoll, &tap, state, TapReading::Gone);
                        break;
                    }
                    Ok(len) => Pending {
                        len,
                        admitted: false,
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!("virtio-net: {}: cannot read the tap: {e}", tap.name());
                        stop_reading(epoll, &tap, state, TapReading::Gone);
                        break;
                    }
                },
            };
            let len = pending.len;
            let Some(packet) = state.bufs.rx_packet.get_mut(..len) else {
                continue;
            };
            if let Err(e) = fit_host_header(packet, self.acked) {
                debug!("virtio-net: {}: dropping a received frame: {e}", tap.name());
                continue;
            }
            if !pending.admitted && !state.limiters.rx.consume(frame_bytes(len), 1) {
                // Kept until the limiter's timer fires; the tap is not
                // read meanwhile.
                state.rx_pending = Some(pending);
                if state.tap == TapReading::On {
                    stop_reading(epoll, &tap, state, TapReading::Paused);
                }
                return used;
            }
            let result = rx::deliver(
                &self.mem,
                &mut self.rxq,
                packet,
                mergeable,
                &mut state.bufs.rx_scratch,
            );
            used |= result.used > 0;
            match result.delivery {
                Delivery::Delivered(_) => {}
                Delivery::Dropped(e) => {
                    debug!("virtio-net: {}: dropping a received frame: {e}", tap.name());
                }
                Delivery::NoBuffers => {
                    state.rx_pending = Some(Pending {
                        len,
                        admitted: true,
                    });
                    if state.tap == TapReading::On {
                        stop_reading(epoll, &tap, state, TapReading::Paused);
                    }
                    return used;
                }
            }
        }
        if state.tap == TapReading::Paused {
            match epoll.ctl(
                ControlOperation::Add,
                tap.as_raw_fd(),
                EpollEvent::new(TAP_EVENTS, TOKEN_TAP),
            ) {
                Ok(()) => state.tap = TapReading::On,
                Err(e) => {
                    error!(
                        "virtio-net: {}: cannot watch the tap again: {e}",
                        tap.name()
                    );
                    state.tap = TapReading::Gone;
                }
            }
        }
        used
    }
}

/// The bytes of the Ethernet frame in a packet of `len` bytes (what a rate
/// limit counts).
fn frame_bytes(len: usize) -> u64 {
    len.saturating_sub(VNET_HDR_LEN) as u64
}

/// Takes the tap out of the epoll set.
fn stop_reading(epoll: &Epoll, tap: &Tap, state: &mut State, why: TapReading) {
    if state.tap == TapReading::On {
        if let Err(e) = epoll.ctl(
            ControlOperation::Delete,
            tap.as_raw_fd(),
            EpollEvent::default(),
        ) {
            // Still in the set: it would wake the loop for nothing.
            error!(
                "virtio-net: {}: cannot stop watching the tap: {e}",
                tap.name()
            );
        }
    }
    state.tap = why;
}

fn drain(evt: &EventFd) {
    let _ = evt.read();
}

fn kick(evt: &EventFd) {
    if let Err(e) = evt.write(1) {
        error!("virtio-net: failed to re-signal a queue: {e}");
    }
}

fn needs_notification(q: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    q.needs_notification(mem).unwrap_or_else(|e| {
        warn!("virtio-net: failed to check queue notification: {e}");
        true
    })
}
