//! One vsock stream connection between a guest socket and a host Unix socket:
//! state machine, credit-based flow control and the packets it owes the guest.

use std::io::{self, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use tracing::debug;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};
use vmm_sys_util::epoll::EventSet;

use super::packet::VsockHeader;
use super::tx_buf::TxBuf;
use super::*;

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Host-initiated: REQUEST queued or sent, waiting for the guest's
    /// RESPONSE.
    LocalInit,
    /// Data may flow (possibly half-closed in either direction).
    Established,
    /// Dead: the host socket is shut down; an RST may still be owed to the
    /// guest, after which the connection is removed.
    Killed,
}

// Control packets owed to the guest.
const PENDING_REQUEST: u8 = 1 << 0;
const PENDING_RESPONSE: u8 = 1 << 1;
const PENDING_RST: u8 = 1 << 2;
const PENDING_SHUTDOWN: u8 = 1 << 3;
const PENDING_CREDIT_UPDATE: u8 = 1 << 4;
const PENDING_CREDIT_REQUEST: u8 = 1 << 5;

/// A vsock stream connection.
///
/// Guest-to-host data is written straight to the host socket; what the socket
/// does not take is kept in a [`TxBuf`] of [`CONN_TX_BUF_SIZE`] bytes, which is
/// also the `buf_alloc` the guest is told, so a guest that respects its credit
/// never overflows it (one that does not is reset). Host-to-guest data is read
/// from the socket straight into guest RX buffers, never more than the guest's
/// advertised credit.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: Option<UnixStream>,
    guest_cid: u64,
    local_port: u32,
    peer_port: u32,
    state: ConnState,
    pending: u8,
    /// The host socket may have data (or EOF) for the guest.
    rx_data_ready: bool,
    /// A CREDIT_REQUEST was sent and the guest has not granted credit since.
    credit_requested: bool,
    tx_buf: TxBuf,
    /// Guest bytes written to the host socket.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    last_fwd_cnt_to_peer: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Host bytes sent to the guest.
    tx_cnt: Wrapping<u32>,
    /// SHUTDOWN flags received from the guest.
    peer_shut: u32,
    /// SHUTDOWN flags of the host side (sent, or to be sent, to the guest).
    local_shut: u32,
    host_write_shut: bool,
    /// Opened by a host client (its local port was allocated by us).
    host_initiated: bool,
    /// The host peer closed its socket (EPOLLHUP).
    hup: bool,
    deadline: Option<Instant>,
    /// In the multiplexer's RX queue.
    pub(crate) queued: bool,
    /// Events registered with the multiplexer's epoll, if registered.
    pub(crate) registered: Option<EventSet>,
}

impl Connection {
    fn new(
        stream: UnixStream,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        state: ConnState,
    ) -> Self {
        Connection {
            stream: Some(stream),
            guest_cid,
            local_port,
            peer_port,
            state,
            pending: 0,
            rx_data_ready: false,
            credit_requested: false,
            tx_buf: TxBuf::new(CONN_TX_BUF_SIZE as usize),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_to_peer: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            peer_shut: 0,
            local_shut: 0,
            host_write_shut: false,
            host_initiated: false,
            hup: false,
            deadline: None,
            queued: false,
            registered: None,
        }
    }

    /// A host-initiated connection to guest port `peer_port`: owes the guest a
    /// REQUEST and waits [`CONN_TIMEOUT`] for its RESPONSE.
    pub(crate) fn new_local(
        stream: UnixStream,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        now: Instant,
    ) -> Self {
        let mut c = Self::new(
            stream,
            guest_cid,
            local_port,
            peer_port,
            ConnState::LocalInit,
        );
        c.pending = PENDING_REQUEST;
        c.deadline = Some(now + CONN_TIMEOUT);
        c.host_initiated = true;
        c
    }

    /// A guest-initiated connection whose host side is already connected:
    /// owes the guest a RESPONSE.
    pub(crate) fn new_peer(stream: UnixStream, guest_cid: u64, request: &VsockHeader) -> Self {
        let mut c = Self::new(
            stream,
            guest_cid,
            request.dst_port,
            request.src_port,
            ConnState::Established,
        );
        c.pending = PENDING_RESPONSE;
        c.peer_buf_alloc = request.buf_alloc;
        c.peer_fwd_cnt = Wrapping(request.fwd_cnt);
        c
    }

    pub(crate) fn state(&self) -> ConnState {
        self.state
    }

    pub(crate) fn is_host_initiated(&self) -> bool {
        self.host_initiated
    }

    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.stream.as_ref().map(|s| s.as_raw_fd())
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Dead and owes the guest nothing: can be removed.
    pub(crate) fn is_finished(&self) -> bool {
        self.state == ConnState::Killed && self.pending == 0
    }

    /// Whether the host socket should be in the epoll set at all.
    pub(crate) fn wants_epoll(&self) -> bool {
        self.stream.is_some() && !self.hup && self.state != ConnState::Killed
    }

    /// Closes the host socket of a dead connection (after it left epoll).
    pub(crate) fn drop_stream(&mut self) {
        if self.state == ConnState::Killed {
            self.stream = None;
        }
    }

    /// The host socket events the connection needs now. Readability is only
    /// watched while the guest has credit and no read is already pending, so
    /// a host that sends faster than the guest takes does not spin the loop.
    pub(crate) fn interest(&self) -> EventSet {
        let mut ev = EventSet::empty();
        if self.can_read_host() && !self.rx_data_ready && self.peer_credit() > 0 {
            ev |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            ev |= EventSet::OUT;
        }
        ev
    }

    /// Whether the connection has a packet for the guest.
    pub(crate) fn has_pending_rx(&self) -> bool {
        self.pending != 0 || (self.rx_data_ready && self.can_read_host() && self.peer_credit() > 0)
    }

    fn can_read_host(&self) -> bool {
        self.state == ConnState::Established
            && self.stream.is_some()
            && self.local_shut & SHUTDOWN_SEND == 0
            && self.peer_shut & SHUTDOWN_RCV == 0
    }

    /// Bytes the guest can still take.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn header(&self, op: u16) -> VsockHeader {
        VsockHeader {
            src_cid: VSOCK_HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    fn take(&mut self, flag: u8) -> bool {
        let set = self.pending & flag != 0;
        self.pending &= !flag;
        set
    }

    /// Resets the connection: shuts the host socket down and owes the guest
    /// an RST (unless the guest never heard of it).
    pub(crate) fn kill(&mut self) {
        if self.state == ConnState::Killed {
            return;
        }
        let guest_knows =
            !(self.state == ConnState::LocalInit && self.pending & PENDING_REQUEST != 0);
        self.pending = if guest_knows { PENDING_RST } else { 0 };
        self.close_host();
    }

    /// Ends the connection without telling the guest (it sent RST).
    fn close_silently(&mut self) {
        self.pending = 0;
        self.close_host();
    }

    fn close_host(&mut self) {
        self.state = ConnState::Killed;
        if let Some(stream) = &self.stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.tx_buf.clear();
        self.rx_data_ready = false;
        self.deadline = None;
    }

    /// Handles a packet from the guest for this connection.
    pub(crate) fn send_pkt(
        &mut self,
        hdr: &VsockHeader,
        data: Option<&VolatileSlice<'_, ()>>,
        now: Instant,
    ) {
        if self.state == ConnState::Killed {
            if hdr.op == OP_RST {
                // Both sides reset: nothing more to say.
                self.pending = 0;
            }
            return;
        }
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
        }
        match (hdr.op, self.state) {
            (OP_RST, _) => self.close_silently(),
            (OP_RESPONSE, ConnState::LocalInit) => self.established_by_guest(),
            (OP_RW, ConnState::Established) => self.forward_guest_data(data),
            (OP_SHUTDOWN, ConnState::Established) => self.peer_shutdown(hdr.flags, now),
            (OP_CREDIT_UPDATE, ConnState::Established) => {}
            (OP_CREDIT_REQUEST, ConnState::Established) => self.pending |= PENDING_CREDIT_UPDATE,
            (op, state) => {
                debug!(
                    "vsock {}:{}: unexpected op {op} in state {state:?}, resetting",
                    self.local_port, self.peer_port
                );
                self.kill();
            }
        }
    }

    /// The guest accepted a host-initiated connection: tell the host client.
    fn established_by_guest(&mut self) {
        self.state = ConnState::Established;
        self.deadline = None;
        // A guest that answers before being asked gets no REQUEST after all.
        self.pending &= !PENDING_REQUEST;
        let line = format!("OK {}\n", self.local_port);
        let result = match self.stream.as_mut() {
            Some(s) => s.write(line.as_bytes()),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match result {
            Ok(n) if n == line.len() => {}
            Ok(_) | Err(_) => {
                debug!("vsock {}: host client went away before OK", self.local_port);
                self.kill();
            }
        }
    }

    fn forward_guest_data(&mut self, data: Option<&VolatileSlice<'_, ()>>) {
        let Some(data) = data else {
            return;
        };
        if self.peer_shut & SHUTDOWN_SEND != 0 {
            debug!(
                "vsock {}:{}: data after guest shutdown, resetting",
                self.local_port, self.peer_port
            );
            self.kill();
            return;
        }
        if self.local_shut & SHUTDOWN_RCV != 0 {
            // The host peer is gone and the guest was (or is about to be)
            // told so; drop what was already in flight.
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut written = 0;
        if self.tx_buf.is_empty() {
            match stream.write_volatile(data) {
                Ok(n) => written = n,
                Err(VolatileMemoryError::IOError(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    debug!(
                        "vsock {}:{}: host write failed: {e}",
                        self.local_port, self.peer_port
                    );
                    self.kill();
                    return;
                }
            }
            self.fwd_cnt += written as u32;
        }
        if written < data.len() {
            let pushed = data
                .offset(written)
                .map_err(|_| ())
                .and_then(|rest| self.tx_buf.push(&rest).map_err(|_| ()));
            if pushed.is_err() {
                debug!(
                    "vsock {}:{}: guest exceeded its credit, resetting",
                    self.local_port, self.peer_port
                );
                self.kill();
                return;
            }
        }
        self.check_credit_update();
    }

    fn check_credit_update(&mut self) {
        if (self.fwd_cnt - self.last_fwd_cnt_to_peer).0 >= CONN_CREDIT_UPDATE_THRESHOLD {
            self.pending |= PENDING_CREDIT_UPDATE;
        }
    }

    fn peer_shutdown(&mut self, flags: u32, now: Instant) {
        self.peer_shut |= flags & SHUTDOWN_BOTH;
        if self.tx_buf.is_empty() {
            self.after_tx_drained();
        } else if self.peer_shut == SHUTDOWN_BOTH && self.deadline.is_none() {
            // Give the host reader a bounded time to take the rest.
            self.deadline = Some(now + CONN_TIMEOUT);
        }
    }

    /// Guest data all handed to the host: apply the guest's shutdown.
    fn after_tx_drained(&mut self) {
        if self.peer_shut & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            if let Some(s) = &self.stream {
                let _ = s.shutdown(Shutdown::Write);
            }
            self.host_write_shut = true;
        }
        if self.peer_shut == SHUTDOWN_BOTH {
            // Clean close requested by the guest: answer with RST.
            self.kill();
        }
    }

    /// Handles readiness of the host socket.
    pub(crate) fn notify(&mut self, ev: EventSet, now: Instant) {
        if self.state == ConnState::Killed {
            return;
        }
        if ev.contains(EventSet::ERROR) {
            debug!(
                "vsock {}:{}: host socket error",
                self.local_port, self.peer_port
            );
            self.kill();
            return;
        }
        if ev.contains(EventSet::HANG_UP) {
            self.host_hung_up();
            return;
        }
        if ev.contains(EventSet::IN) && self.can_read_host() {
            self.rx_data_ready = true;
        }
        if ev.contains(EventSet::OUT) {
            self.flush(now);
        }
    }

    /// The host peer closed its socket: it takes no more data; what it sent
    /// is still delivered, then the guest gets a full SHUTDOWN.
    fn host_hung_up(&mut self) {
        self.hup = true;
        if self.state == ConnState::LocalInit {
            self.kill();
            return;
        }
        self.tx_buf.clear();
        if self.can_read_host() {
            // Deliver what is left; reading EOF then sends SHUTDOWN(both).
            self.local_shut |= SHUTDOWN_RCV;
            self.rx_data_ready = true;
        } else {
            self.local_shut = SHUTDOWN_BOTH;
            self.pending |= PENDING_SHUTDOWN;
        }
    }

    fn flush(&mut self, _now: Instant) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        match self.tx_buf.flush_to(stream) {
            Ok(n) => {
                self.fwd_cnt += n as u32;
                self.check_credit_update();
            }
            Err(e) => {
                debug!(
                    "vsock {}:{}: host write failed: {e}",
                    self.local_port, self.peer_port
                );
                self.kill();
                return;
            }
        }
        if self.tx_buf.is_empty() {
            self.after_tx_drained();
        }
    }

    /// Resets the connection if its deadline has passed.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            debug!(
                "vsock {}:{}: timed out in state {:?}",
                self.local_port, self.peer_port, self.state
            );
            self.kill();
        }
    }

    /// Produces the next packet for the guest, reading host data into `data`
    /// (the guest RX buffer's payload area). Returns its header, with `len`
    /// the number of payload bytes written.
    pub(crate) fn recv_pkt(
        &mut self,
        data: &VolatileSlice<'_, ()>,
        now: Instant,
    ) -> Option<VsockHeader> {
        let hdr = self.next_pkt(data, now)?;
        // Every packet carries fwd_cnt: it doubles as a credit update.
        self.last_fwd_cnt_to_peer = self.fwd_cnt;
        self.pending &= !PENDING_CREDIT_UPDATE;
        Some(hdr)
    }

    fn next_pkt(&mut self, data: &VolatileSlice<'_, ()>, now: Instant) -> Option<VsockHeader> {
        if self.take(PENDING_RST) {
            self.pending = 0;
            return Some(self.header(OP_RST));
        }
        if self.take(PENDING_REQUEST) {
            return Some(self.header(OP_REQUEST));
        }
        if self.take(PENDING_RESPONSE) {
            return Some(self.header(OP_RESPONSE));
        }
        if self.rx_data_ready && self.can_read_host() {
            match self.read_host(data) {
                Ok(Some(hdr)) => return Some(hdr),
                Ok(None) => {}
                Err(e) => {
                    debug!(
                        "vsock {}:{}: host read failed: {e}",
                        self.local_port, self.peer_port
                    );
                    self.kill();
                    return self.take(PENDING_RST).then(|| self.header(OP_RST));
                }
            }
        }
        if self.take(PENDING_SHUTDOWN) {
            let mut hdr = self.header(OP_SHUTDOWN);
            hdr.flags = self.local_shut;
            if self.local_shut == SHUTDOWN_BOTH && self.deadline.is_none() {
                // The guest should answer with RST.
                self.deadline = Some(now + CONN_TIMEOUT);
            }
            return Some(hdr);
        }
        if self.take(PENDING_CREDIT_REQUEST) {
            return Some(self.header(OP_CREDIT_REQUEST));
        }
        if self.take(PENDING_CREDIT_UPDATE) {
            return Some(self.header(OP_CREDIT_UPDATE));
        }
        None
    }

    /// Reads host data into `data`, within the guest's credit.
    fn read_host(&mut self, data: &VolatileSlice<'_, ()>) -> io::Result<Option<VsockHeader>> {
        let credit = self.peer_credit();
        if credit == 0 {
            self.request_credit();
            return Ok(None);
        }
        let max = (credit as usize)
            .min(data.len())
            .min(MAX_PKT_BUF_SIZE as usize);
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        let mut buf = data
            .subslice(0, max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match stream.read_volatile(&mut buf) {
            Ok(0) => {
                // EOF: the host sends no more.
                self.rx_data_ready = false;
                self.local_shut |= SHUTDOWN_SEND;
                self.pending |= PENDING_SHUTDOWN;
                Ok(None)
            }
            Ok(n) => {
                if n < max && !self.hup {
                    // Drained for now; level-triggered epoll reports more.
                    // (A hung-up socket is out of epoll: read on until EOF.)
                    self.rx_data_ready = false;
                }
                self.tx_cnt += n as u32;
                if self.rx_data_ready && self.peer_credit() == 0 {
                    self.request_credit();
                }
                let mut hdr = self.header(OP_RW);
                // n <= MAX_PKT_BUF_SIZE.
                hdr.len = n as u32;
                Ok(Some(hdr))
            }
            Err(VolatileMemoryError::IOError(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.rx_data_ready = false;
                Ok(None)
            }
            Err(VolatileMemoryError::IOError(e)) if e.kind() == io::ErrorKind::Interrupted => {
                Ok(None)
            }
            Err(VolatileMemoryError::IOError(e)) => Err(e),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    fn request_credit(&mut self) {
        if !self.credit_requested {
            self.credit_requested = true;
            self.pending |= PENDING_CREDIT_REQUEST;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CID: u64 = 3;

    fn guest_hdr(op: u16, buf_alloc: u32, fwd_cnt: u32) -> VsockHeader {
        VsockHeader {
            src_cid: CID,
            dst_cid: VSOCK_HOST_CID,
            src_port: 1000,
            dst_port: 500,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn established(buf_alloc: u32) -> (Connection, UnixStream) {
        let (host, ours) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut c = Connection::new_peer(ours, CID, &guest_hdr(OP_REQUEST, buf_alloc, 0));
        let mut buf = [0u8; 64];
        let data = VolatileSlice::from(&mut buf[..]);
        assert_eq!(c.recv_pkt(&data, Instant::now()).unwrap().op, OP_RESPONSE);
        (c, host)
    }

    #[test]
    fn host_data_limited_by_guest_credit() {
        let (mut c, mut host) = established(10);
        host.write_all(&[7u8; 100]).unwrap();
        let now = Instant::now();
        c.notify(EventSet::IN, now);
        let mut buf = [0u8; 64];
        let data = VolatileSlice::from(&mut buf[..]);
        let hdr = c.recv_pkt(&data, now).unwrap();
        assert_eq!((hdr.op, hdr.len), (OP_RW, 10));
        // Out of credit: one CREDIT_REQUEST, then nothing, no read interest.
        assert_eq!(c.recv_pkt(&data, now).unwrap().op, OP_CREDIT_REQUEST);
        assert!(c.recv_pkt(&data, now).is_none());
        assert!(!c.has_pending_rx());
        assert!(!c.interest().contains(EventSet::IN));
        // The guest consumed 10 bytes: 10 more may flow.
        c.send_pkt(&guest_hdr(OP_CREDIT_UPDATE, 10, 10), None, now);
        assert!(c.has_pending_rx());
        let hdr = c.recv_pkt(&data, now).unwrap();
        assert_eq!((hdr.op, hdr.len), (OP_RW, 10));
        assert_eq!(buf[..10], [7u8; 10]);
    }

    #[test]
    fn guest_over_credit_is_reset() {
        let (mut c, _host) = established(4096);
        // Host reader never reads: fill the socket buffer and then ours.
        let mut chunk = vec![1u8; MAX_PKT_BUF_SIZE as usize];
        let now = Instant::now();
        let mut sent = 0usize;
        while c.state() == ConnState::Established && sent < 64 * 1024 * 1024 {
            let mut h = guest_hdr(OP_RW, 4096, 0);
            h.len = chunk.len() as u32;
            let data = VolatileSlice::from(&mut chunk[..]);
            c.send_pkt(&h, Some(&data), now);
            sent += chunk.len();
        }
        assert_eq!(c.state(), ConnState::Killed);
        assert!(c.tx_buf.is_empty());
        let mut buf = [0u8; 64];
        let data = VolatileSlice::from(&mut buf[..]);
        assert_eq!(c.recv_pkt(&data, now).unwrap().op, OP_RST);
        assert!(c.is_finished());
    }

    #[test]
    fn unanswered_request_times_out_without_rst() {
        let (_host, ours) = UnixStream::pair().unwrap();
        let now = Instant::now();
        let mut c = Connection::new_local(ours, CID, 1 << 30, 52, now);
        c.expire(now);
        assert_eq!(c.state(), ConnState::LocalInit);
        c.expire(now + CONN_TIMEOUT);
        // The REQUEST never reached the guest: nothing owed.
        assert!(c.is_finished());
    }
}
