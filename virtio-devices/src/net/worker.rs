//! The net worker thread: one epoll loop over the kill event, both queue
//! events and the tap, moving frames between the queues and the tap.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tracing::{debug, error, warn};
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::header::fit_host_header;
use super::rx::{self, Delivery, RxScratch};
use super::{tx, Tap, MAX_PACKET_LEN};
use crate::{GuestMemoryMmap, IrqTrigger};

const TOKEN_KILL: u64 = 0;
const TOKEN_RX: u64 = 1;
const TOKEN_TX: u64 = 2;
const TOKEN_TAP: u64 = 3;
/// What the worker waits for on the tap.
const TAP_EVENTS: EventSet = EventSet::IN.union(EventSet::READ_HANG_UP);

/// Whether the worker reads the tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TapReading {
    /// The tap is in the epoll set.
    On,
    /// A packet waits for receive buffers; the tap is out of the epoll set
    /// until the guest posts some.
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
    /// `None` for a slot bound to no tap (a snapshot's spare interface):
    /// what the guest sends goes nowhere, nothing is received.
    pub(crate) tap: Option<Arc<Tap>>,
    /// The features the driver accepted.
    pub(crate) acked: u64,
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

/// The worker's buffers and receive state.
struct State {
    bufs: Buffers,
    /// Length of the packet in `bufs.rx_packet` that waits for buffers.
    rx_pending: Option<usize>,
    tap: TapReading,
    /// epoll said the other end of the tap hung up (only a socket standing
    /// in for a tap has one): a read of nothing is then the end, not an
    /// empty message.
    tap_hung_up: bool,
}

impl NetWorker {
    /// Runs until `kill` is signalled (or epoll fails); hands the buffers
    /// back. A packet waiting for receive buffers is dropped.
    pub(crate) fn run(mut self, kill: EventFd, bufs: Buffers) -> Buffers {
        let epoll = match self.setup_epoll(&kill) {
            Ok(epoll) => epoll,
            Err(e) => {
                error!("virtio-net: failed to set up the worker event loop: {e}");
                return bufs;
            }
        };
        let mut state = State {
            bufs,
            rx_pending: None,
            tap: if self.tap.is_some() {
                TapReading::On
            } else {
                TapReading::Gone
            },
            tap_hung_up: false,
        };
        // Chains may be waiting already (a restored driver does not kick
        // again for them).
        self.process(&epoll, &mut state);
        let mut events = [EpollEvent::default(); 4];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("virtio-net: epoll_wait failed, stopping the device: {e}");
                    return state.bufs;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => return state.bufs,
                    TOKEN_RX => drain(&self.rx_evt),
                    TOKEN_TX => drain(&self.tx_evt),
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

    fn setup_epoll(&self, kill: &EventFd) -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (kill.as_raw_fd(), TOKEN_KILL),
            (self.rx_evt.as_raw_fd(), TOKEN_RX),
            (self.tx_evt.as_raw_fd(), TOKEN_TX),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        if let Some(tap) = &self.tap {
            epoll.ctl(
                ControlOperation::Add,
                tap.as_raw_fd(),
                EpollEvent::new(TAP_EVENTS, TOKEN_TAP),
            )?;
        }
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
    /// there may be more, so that the kill event is looked at in between).
    /// Returns whether any chain was returned.
    fn process_tx(&mut self, state: &mut State) -> bool {
        let budget = self.txq.size();
        let mut served = 0u16;
        while served < budget {
            // Rate limiting (issue 12/13): a transmit token bucket plugs in
            // here; when it is empty, stop taking chains and wake on its
            // timer instead.
            let Some(chain) = self.txq.pop_descriptor_chain(&self.mem) else {
                break;
            };
            served += 1;
            let head = chain.head_index();
            let packet = &mut state.bufs.tx_packet;
            match tx::gather(&self.mem, chain, packet, self.acked) {
                Ok(len) => {
                    if let Some(tap) = &self.tap {
                        // A tap that cannot take a frame now drops it, as a
                        // NIC with a full queue would.
                        if let Err(e) = tap.write_packet(&packet[..len]) {
                            debug!(
                                "virtio-net: {}: dropping a {len}-byte frame: {e}",
                                tap.name()
                            );
                        }
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
    /// none past a frame the guest has no buffers for. Returns whether any
    /// buffer was returned.
    fn process_rx(&mut self, epoll: &Epoll, state: &mut State) -> bool {
        let Some(tap) = self.tap.clone() else {
            return false;
        };
        let mergeable = self.acked & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let mut used = false;
        for _ in 0..self.rxq.size() {
            let len = match state.rx_pending.take() {
                Some(len) => len,
                None if state.tap != TapReading::On => break,
                // Rate limiting (issue 12/13): a receive token bucket plugs
                // in here; when it is empty, pause the tap as for missing
                // buffers and wake on its timer.
                None => match tap.read_packet(&mut state.bufs.rx_packet) {
                    Ok(0) if state.tap_hung_up => {
                        warn!("virtio-net: {}: the tap was closed", tap.name());
                        stop_reading(epoll, &tap, state, TapReading::Gone);
                        break;
                    }
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!("virtio-net: {}: cannot read the tap: {e}", tap.name());
                        stop_reading(epoll, &tap, state, TapReading::Gone);
                        break;
                    }
                },
            };
            let Some(packet) = state.bufs.rx_packet.get_mut(..len) else {
                continue;
            };
            if let Err(e) = fit_host_header(packet, self.acked) {
                debug!("virtio-net: {}: dropping a received frame: {e}", tap.name());
                continue;
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
                    state.rx_pending = Some(len);
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
