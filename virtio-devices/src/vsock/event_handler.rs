//! The vsock worker thread: one epoll loop over the queue events, the
//! multiplexer's epoll fd and the kill event, moving packets between the
//! virtqueues and the multiplexer.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::packet::{parse_tx, RxBuffer};
use super::unix_backend::VsockMuxer;
use crate::{GuestMemoryMmap, IrqTrigger};

const TOKEN_KILL: u64 = 0;
const TOKEN_RX: u64 = 1;
const TOKEN_TX: u64 = 2;
const TOKEN_EVENT: u64 = 3;
const TOKEN_BACKEND: u64 = 4;

/// Rounds of TX/RX processing per wake-up when RX frees TX backlog.
const MAX_ROUNDS: usize = 4;
/// Longest packets to the guest wait for it to handle a transport reset.
const RESET_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything the worker thread owns while the device is active.
pub(crate) struct VsockWorker {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) interrupt: Arc<IrqTrigger>,
    pub(crate) rxq: Queue,
    pub(crate) txq: Queue,
    /// The event queue: its only event is the transport reset sent once
    /// after a snapshot restore (connections of the saved VM are gone).
    pub(crate) evq: Queue,
    /// Whether to send that reset when the worker starts.
    pub(crate) send_transport_reset: bool,
    /// Until when packets to the guest are held back after the reset:
    /// a connection request that reached the guest before it handled the
    /// reset would be reset with the rest. The driver re-posts the event
    /// buffer (kicking the event queue) once it has handled the event.
    pub(crate) reset_pending_until: Option<Instant>,
    pub(crate) rx_evt: EventFd,
    pub(crate) tx_evt: EventFd,
    pub(crate) ev_evt: EventFd,
    pub(crate) backend: VsockMuxer,
}

struct TxOutcome {
    used: bool,
    backlogged: bool,
}

impl VsockWorker {
    /// Runs until `kill` is signalled (or the loop fails) and hands the
    /// multiplexer back.
    pub(crate) fn run(mut self, kill: EventFd) -> VsockMuxer {
        let epoll = match self.setup_epoll(&kill) {
            Ok(epoll) => epoll,
            Err(e) => {
                error!("vsock: failed to set up the worker event loop: {e}");
                return self.backend;
            }
        };
        if self.send_transport_reset {
            self.send_transport_reset();
        }
        let mut events = [EpollEvent::default(); 8];
        loop {
            let n = match epoll.wait(self.epoll_timeout(), &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("vsock: epoll_wait failed, stopping the device: {e}");
                    return self.backend;
                }
            };
            let now = Instant::now();
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => return self.backend,
                    TOKEN_RX => drain(&self.rx_evt),
                    TOKEN_TX => drain(&self.tx_evt),
                    TOKEN_EVENT => {
                        drain(&self.ev_evt);
                        self.reset_pending_until = None;
                    }
                    TOKEN_BACKEND => self.backend.process_events(now),
                    other => debug!("vsock: unexpected epoll token {other}"),
                }
            }
            self.backend.sweep(now);
            self.process_queues(now);
        }
    }

    fn setup_epoll(&self, kill: &EventFd) -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (kill.as_raw_fd(), TOKEN_KILL),
            (self.rx_evt.as_raw_fd(), TOKEN_RX),
            (self.tx_evt.as_raw_fd(), TOKEN_TX),
            (self.ev_evt.as_raw_fd(), TOKEN_EVENT),
            (self.backend.epoll_fd(), TOKEN_BACKEND),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(epoll)
    }

    /// Milliseconds until the next connection deadline, or -1 (none).
    fn epoll_timeout(&self) -> i32 {
        let next = match (self.backend.next_deadline(), self.reset_pending_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map_or(-1, |d| {
            let ms = d.saturating_duration_since(Instant::now()).as_millis();
            // Round up so that the deadline has passed when we wake.
            i32::try_from(ms + 1).unwrap_or(i32::MAX)
        })
    }

    fn process_queues(&mut self, now: Instant) {
        if self.reset_pending_until.is_some_and(|until| now >= until) {
            warn!("vsock: the guest did not acknowledge the transport reset; going on");
            self.reset_pending_until = None;
        }
        let mut tx_used = false;
        let mut rx_used = false;
        let mut rounds = 0;
        loop {
            let tx = self.process_tx(now);
            let rx = self.reset_pending_until.is_none() && self.process_rx(now);
            tx_used |= tx.used;
            rx_used |= rx;
            rounds += 1;
            // Go again only if RX drained a backlog that held TX back.
            if !(tx.backlogged && rx) {
                break;
            }
            if rounds == MAX_ROUNDS {
                kick(&self.tx_evt);
                break;
            }
        }
        let mut notify = false;
        if tx_used {
            notify |= needs_notification(&mut self.txq, &self.mem);
        }
        if rx_used {
            notify |= needs_notification(&mut self.rxq, &self.mem);
        }
        if notify {
            if let Err(e) = self.interrupt.trigger_used_ring() {
                error!("vsock: failed to signal the guest: {e}");
            }
        }
    }

    /// Tells the guest driver that every connection it had is gone
    /// (`VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, a 4-byte event id 0): after a
    /// restore, the host sockets of the saved VM's connections do not
    /// exist. The driver resets its connected sockets and keeps its
    /// listeners. Sent into the first event buffer the driver posted; a
    /// driver that posted none gets no event.
    fn send_transport_reset(&mut self) {
        const EVENT_TRANSPORT_RESET: u32 = 0;
        let Some(chain) = self.evq.pop_descriptor_chain(&self.mem) else {
            warn!("vsock: no event buffer for the transport reset");
            return;
        };
        let head = chain.head_index();
        let written = chain
            .filter(|d| d.is_write_only() && d.len() >= 4)
            .take(1)
            .find_map(|d| {
                self.mem
                    .write_obj(EVENT_TRANSPORT_RESET.to_le(), d.addr())
                    .ok()
            })
            .map_or(0, |()| 4);
        if written == 0 {
            warn!("vsock: the event buffer cannot hold the transport reset");
        }
        if let Err(e) = self.evq.add_used(&self.mem, head, written) {
            warn!("vsock: failed to return the event buffer: {e}");
            return;
        }
        if let Err(e) = self.interrupt.trigger_used_ring() {
            error!("vsock: failed to signal the transport reset: {e}");
        }
        self.reset_pending_until = Some(Instant::now() + RESET_ACK_WAIT);
    }

    /// Hands guest packets to the multiplexer: at most one queue's worth per
    /// call (re-signalling itself if there may be more), and none while the
    /// multiplexer's RST backlog is full.
    fn process_tx(&mut self, now: Instant) -> TxOutcome {
        let budget = self.txq.size();
        let mut served = 0u16;
        let mut outcome = TxOutcome {
            used: false,
            backlogged: false,
        };
        loop {
            if self.backend.tx_backlogged() {
                outcome.backlogged = true;
                break;
            }
            if served == budget {
                kick(&self.tx_evt);
                break;
            }
            let Some(mut chain) = self.txq.pop_descriptor_chain(&self.mem) else {
                break;
            };
            served += 1;
            let head = chain.head_index();
            match parse_tx(&self.mem, &mut chain) {
                Ok(pkt) => self.backend.send_pkt(&pkt, now),
                Err(e) => debug!("vsock: dropping malformed TX packet: {e}"),
            }
            if let Err(e) = self.txq.add_used(&self.mem, head, 0) {
                warn!("vsock: failed to return a TX buffer: {e}");
                break;
            }
            outcome.used = true;
        }
        outcome
    }

    /// Fills guest RX buffers with pending packets. Returns whether any
    /// buffer was used.
    fn process_rx(&mut self, now: Instant) -> bool {
        let budget = self.rxq.size();
        let mut served = 0u16;
        while self.backend.has_pending_rx() {
            if served == budget {
                kick(&self.rx_evt);
                break;
            }
            let Some(mut chain) = self.rxq.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let len = match RxBuffer::parse(&self.mem, &mut chain) {
                Ok(mut rx) => match self.backend.recv_pkt(&mut rx, now) {
                    Some(len) => len,
                    None => {
                        // Nothing after all: give the buffer back to the ring.
                        self.rxq
                            .set_next_avail(self.rxq.next_avail().wrapping_sub(1));
                        break;
                    }
                },
                Err(e) => {
                    debug!("vsock: dropping malformed RX buffer: {e}");
                    0
                }
            };
            served += 1;
            if let Err(e) = self.rxq.add_used(&self.mem, head, len) {
                warn!("vsock: failed to return an RX buffer: {e}");
                break;
            }
        }
        served > 0
    }
}

fn drain(evt: &EventFd) {
    let _ = evt.read();
}

fn kick(evt: &EventFd) {
    if let Err(e) = evt.write(1) {
        error!("vsock: failed to re-signal a queue: {e}");
    }
}

fn needs_notification(q: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    q.needs_notification(mem).unwrap_or_else(|e| {
        warn!("vsock: failed to check queue notification: {e}");
        true
    })
}
