//! The hybrid-vsock multiplexer: the host Unix socket listener, host clients
//! that have not sent their `CONNECT` line yet, and all connections, behind
//! one epoll instance of its own (nested in the device worker's epoll).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vm_memory::VolatileSlice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{ConnState, Connection};
use super::packet::{RxBuffer, TxPacket, VsockHeader};
use super::uds::connect_nonblocking;
use super::*;

/// First local port handed to host-initiated connections.
const LOCAL_PORT_BASE: u32 = 1 << 30;
/// Host clients accepted per listener wake-up.
const ACCEPT_BATCH: usize = 64;
/// Epoll events handled per call of `process_events`.
const EVENT_BATCH: usize = 64;
/// How long a host client gets to send its `CONNECT <port>\n` line.
pub(crate) const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection is identified by its host-side and guest-side ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub(crate) local_port: u32,
    pub(crate) peer_port: u32,
}

#[derive(Clone, Copy, Debug)]
enum FdOwner {
    Listener,
    Pending,
    Conn(ConnKey),
}

/// The sockets registered with the multiplexer's epoll instance.
///
/// Each registration gets a fresh token, carried in the upper half of the
/// epoll data (the fd is in the lower half), so that an event for a socket
/// closed earlier in the same batch is never applied to a new socket that
/// reuses its fd number.
#[derive(Default)]
struct FdTable {
    entries: HashMap<RawFd, (FdOwner, u32)>,
    next_token: u32,
}

impl FdTable {
    /// Records `fd` and returns the epoll data to register it with.
    fn register(&mut self, fd: RawFd, owner: FdOwner) -> u64 {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        self.entries.insert(fd, (owner, token));
        epoll_data(fd, token)
    }

    /// The epoll data `fd` is registered with.
    fn data(&self, fd: RawFd) -> Option<u64> {
        self.entries
            .get(&fd)
            .map(|&(_, token)| epoll_data(fd, token))
    }

    fn set_owner(&mut self, fd: RawFd, owner: FdOwner) {
        if let Some(entry) = self.entries.get_mut(&fd) {
            entry.0 = owner;
        }
    }

    fn remove(&mut self, fd: RawFd) {
        self.entries.remove(&fd);
    }

    /// The fd and owner an event is for, unless the event is stale.
    fn lookup(&self, data: u64) -> Option<(RawFd, FdOwner)> {
        let fd = data as u32 as RawFd;
        let token = (data >> 32) as u32;
        match self.entries.get(&fd) {
            Some(&(owner, t)) if t == token => Some((fd, owner)),
            _ => None,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn epoll_data(fd: RawFd, token: u32) -> u64 {
    (u64::from(token) << 32) | u64::from(fd as u32)
}

/// A host client that has not finished its `CONNECT <port>\n` line.
struct PendingClient {
    stream: UnixStream,
    line: Vec<u8>,
    /// When it is dropped if the line is not complete by then: a client
    /// that never sends it must not hold one of the connection slots.
    deadline: Instant,
}

enum LineStatus {
    Incomplete,
    Connect(u32),
    Invalid(&'static str),
}

impl PendingClient {
    /// Reads the line one byte at a time, so that nothing the client sends
    /// after the newline is consumed here.
    fn read_line(&mut self) -> LineStatus {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return LineStatus::Invalid("closed before CONNECT line"),
                Ok(_) if byte[0] == b'\n' => return parse_connect_line(&self.line),
                Ok(_) => {
                    self.line.push(byte[0]);
                    if self.line.len() >= MAX_CONNECT_LINE {
                        return LineStatus::Invalid("CONNECT line too long");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return LineStatus::Incomplete,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return LineStatus::Invalid("read error"),
            }
        }
    }
}

/// Parses `CONNECT <port>` (without the newline).
fn parse_connect_line(line: &[u8]) -> LineStatus {
    let Ok(text) = std::str::from_utf8(line) else {
        return LineStatus::Invalid("CONNECT line is not UTF-8");
    };
    let mut words = text.split_ascii_whitespace();
    match (
        words.next(),
        words.next().map(str::parse::<u32>),
        words.next(),
    ) {
        (Some("CONNECT"), Some(Ok(port)), None) => LineStatus::Connect(port),
        _ => LineStatus::Invalid("malformed CONNECT line"),
    }
}

/// The host side of the vsock device.
pub(crate) struct VsockMuxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    /// (device, inode) of the socket file we created, to remove only ours.
    socket_id: Option<(u64, u64)>,
    epoll: Epoll,
    fds: FdTable,
    pending_clients: HashMap<RawFd, PendingClient>,
    conns: HashMap<ConnKey, Connection>,
    /// Connections that may have a packet for the guest, each at most once.
    rx_ready: VecDeque<ConnKey>,
    /// RST replies to packets for unknown connections.
    rst_queue: VecDeque<VsockHeader>,
    local_ports: HashSet<u32>,
    next_local_port: u32,
}

impl VsockMuxer {
    /// Listens on `uds_path`.
    pub(crate) fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        let bind_err = |source| VsockError::Bind {
            path: uds_path.clone(),
            source,
        };
        let listener = UnixListener::bind(&uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let socket_id = std::fs::metadata(&uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let epoll = Epoll::new().map_err(VsockError::Epoll)?;
        let fd = listener.as_raw_fd();
        let mut fds = FdTable::default();
        let data = fds.register(fd, FdOwner::Listener);
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, data),
            )
            .map_err(VsockError::Epoll)?;
        info!("vsock: listening on {}", uds_path.display());
        Ok(VsockMuxer {
            guest_cid,
            uds_path,
            listener,
            socket_id,
            epoll,
            fds,
            pending_clients: HashMap::new(),
            conns: HashMap::new(),
            rx_ready: VecDeque::new(),
            rst_queue: VecDeque::new(),
            local_ports: HashSet::new(),
            next_local_port: LOCAL_PORT_BASE,
        })
    }

    /// The multiplexer's epoll fd: readable when a host socket needs service.
    pub(crate) fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Whether a packet may be waiting for a guest RX buffer.
    pub(crate) fn has_pending_rx(&self) -> bool {
        !self.rst_queue.is_empty() || !self.rx_ready.is_empty()
    }

    /// Whether the guest's TX queue should be left alone until RX drains.
    pub(crate) fn tx_backlogged(&self) -> bool {
        self.rst_queue.len() >= MAX_PENDING_RST
    }

    /// The earliest deadline (a connection's request or shutdown timeout, a
    /// host client's CONNECT line).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending_clients.values().map(|c| c.deadline);
        self.conns
            .values()
            .filter_map(Connection::deadline)
            .chain(pending)
            .min()
    }

    /// Drops every connection and pending host client (device reset). The
    /// listener stays.
    pub(crate) fn reset(&mut self) {
        for (fd, _) in self.pending_clients.drain() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.fds.remove(fd);
        }
        for (_, conn) in self.conns.drain() {
            if let (Some(fd), Some(_)) = (conn.fd(), conn.registered) {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default());
                self.fds.remove(fd);
            }
        }
        self.rx_ready.clear();
        self.rst_queue.clear();
        self.local_ports.clear();
    }

    /// Services ready host sockets.
    pub(crate) fn process_events(&mut self, now: Instant) {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                warn!("vsock: epoll_wait failed: {e}");
                0
            }
        };
        for ev in &events[..n] {
            let evset = ev.event_set();
            match self.fds.lookup(ev.data()) {
                Some((_, FdOwner::Listener)) => self.accept_clients(now),
                Some((fd, FdOwner::Pending)) => self.handle_pending_client(fd, now),
                Some((_, FdOwner::Conn(key))) => {
                    if let Some(conn) = self.conns.get_mut(&key) {
                        conn.notify(evset, now);
                    }
                    self.update_conn(key);
                }
                None => {}
            }
        }
    }

    /// Resets connections whose deadline passed, and drops host clients
    /// that did not send their CONNECT line in time.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let silent: Vec<RawFd> = self
            .pending_clients
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in silent {
            debug!(
                "vsock: host client sent no CONNECT line in {CONNECT_LINE_TIMEOUT:?}, closing it"
            );
            self.drop_pending_client(fd);
        }
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.expire(now);
            }
            self.update_conn(key);
        }
    }

    /// Handles a packet from the guest.
    pub(crate) fn send_pkt(&mut self, pkt: &TxPacket<'_>, now: Instant) {
        let hdr = &pkt.hdr;
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != VSOCK_HOST_CID {
            debug!(
                "vsock: dropping packet from CID {} to CID {} (op {})",
                hdr.src_cid, hdr.dst_cid, hdr.op
            );
            return;
        }
        if hdr.type_ != TYPE_STREAM {
            if hdr.op != OP_RST {
                self.enqueue_rst(hdr);
            }
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.send_pkt(hdr, pkt.data.as_ref(), now);
            self.update_conn(key);
            return;
        }
        match hdr.op {
            OP_REQUEST => self.connect_to_host(hdr),
            OP_RST => {}
            _ => self.enqueue_rst(hdr),
        }
    }

    /// Fills a guest RX buffer with the next packet, if any. Returns the
    /// length to report in the used ring.
    pub(crate) fn recv_pkt(&mut self, rx: &mut RxBuffer<'_>, now: Instant) -> Option<u32> {
        let hdr = match self.rst_queue.pop_front() {
            Some(hdr) => hdr,
            None => {
                let data = *rx.data();
                self.next_conn_pkt(&data, now)?
            }
        };
        match rx.write_header(&hdr) {
            Ok(len) => Some(len),
            Err(e) => {
                warn!("vsock: failed to write a packet header: {e}");
                Some(0)
            }
        }
    }

    fn next_conn_pkt(&mut self, data: &VolatileSlice<'_, ()>, now: Instant) -> Option<VsockHeader> {
        while let Some(key) = self.rx_ready.pop_front() {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.queued = false;
            let hdr = conn.recv_pkt(data, now);
            // Re-queues the connection (at the back) if it has more.
            self.update_conn(key);
            if hdr.is_some() {
                return hdr;
            }
        }
        None
    }

    fn enqueue_rst(&mut self, to: &VsockHeader) {
        if self.rst_queue.len() >= MAX_PENDING_RST {
            debug!(
                "vsock: RST queue full, dropping RST to port {}",
                to.src_port
            );
            return;
        }
        self.rst_queue.push_back(VsockHeader {
            src_cid: VSOCK_HOST_CID,
            dst_cid: self.guest_cid,
            src_port: to.dst_port,
            dst_port: to.src_port,
            len: 0,
            type_: to.type_,
            op: OP_RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        });
    }

    fn connection_count(&self) -> usize {
        self.conns.len() + self.pending_clients.len()
    }

    /// The guest connects to host port `hdr.dst_port`: forward to
    /// `<uds_path>_<port>`.
    fn connect_to_host(&mut self, hdr: &VsockHeader) {
        if self.connection_count() >= MAX_CONNECTIONS {
            debug!(
                "vsock: too many connections, refusing guest port {}",
                hdr.src_port
            );
            self.enqueue_rst(hdr);
            return;
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        let path = PathBuf::from(path);
        match connect_nonblocking(&path) {
            Ok(stream) => {
                let key = ConnKey {
                    local_port: hdr.dst_port,
                    peer_port: hdr.src_port,
                };
                debug!(
                    "vsock: guest port {} connected to {}",
                    hdr.src_port,
                    path.display()
                );
                self.conns
                    .insert(key, Connection::new_peer(stream, self.guest_cid, hdr));
                self.update_conn(key);
            }
            Err(e) => {
                debug!("vsock: guest connection to {} refused: {e}", path.display());
                self.enqueue_rst(hdr);
            }
        }
    }

    fn accept_clients(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("vsock: accept on {} failed: {e}", self.uds_path.display());
                    return;
                }
            };
            if self.connection_count() >= MAX_CONNECTIONS {
                debug!("vsock: too many connections, closing new host client");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("vsock: failed to make a host client non-blocking: {e}");
                continue;
            }
            let fd = stream.as_raw_fd();
            let data = self.fds.register(fd, FdOwner::Pending);
            if let Err(e) = self.epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, data),
            ) {
                warn!("vsock: failed to watch a host client: {e}");
                self.fds.remove(fd);
                continue;
            }
            self.pending_clients.insert(
                fd,
                PendingClient {
                    stream,
                    line: Vec::new(),
                    deadline: now + CONNECT_LINE_TIMEOUT,
                },
            );
        }
    }

    fn drop_pending_client(&mut self, fd: RawFd) {
        if self.pending_clients.remove(&fd).is_some() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.fds.remove(fd);
        }
    }

    fn handle_pending_client(&mut self, fd: RawFd, now: Instant) {
        let Some(client) = self.pending_clients.get_mut(&fd) else {
            return;
        };
        // The read result, not the event, decides: a hung-up client reads EOF.
        match client.read_line() {
            LineStatus::Incomplete => {}
            LineStatus::Invalid(why) => {
                debug!("vsock: closing host client: {why}");
                self.drop_pending_client(fd);
            }
            LineStatus::Connect(peer_port) => self.connect_to_guest(fd, peer_port, now),
        }
    }

    /// Turns a pending host client into a connection to guest `peer_port`.
    fn connect_to_guest(&mut self, fd: RawFd, peer_port: u32, now: Instant) {
        let Some(local_port) = self.allocate_local_port(peer_port) else {
            debug!("vsock: no free local port, closing host client");
            self.drop_pending_client(fd);
            return;
        };
        let Some(client) = self.pending_clients.remove(&fd) else {
            self.local_ports.remove(&local_port);
            return;
        };
        let key = ConnKey {
            local_port,
            peer_port,
        };
        let mut conn =
            Connection::new_local(client.stream, self.guest_cid, local_port, peer_port, now);
        conn.registered = Some(EventSet::IN);
        self.fds.set_owner(fd, FdOwner::Conn(key));
        self.conns.insert(key, conn);
        debug!("vsock: host client connecting to guest port {peer_port} from port {local_port}");
        self.update_conn(key);
    }

    fn allocate_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = port.checked_add(1).unwrap_or(LOCAL_PORT_BASE);
            let key = ConnKey {
                local_port: port,
                peer_port,
            };
            if !self.local_ports.contains(&port) && !self.conns.contains_key(&key) {
                self.local_ports.insert(port);
                return Some(port);
            }
        }
        None
    }

    /// Brings a connection's epoll registration and RX queueing in line with
    /// its state, and removes it once it is finished.
    fn update_conn(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.is_finished() {
            self.remove_conn(key);
            return;
        }
        if let Err(e) = sync_epoll(&self.epoll, &mut self.fds, key, conn) {
            warn!("vsock: epoll update failed, resetting connection: {e}");
            conn.kill();
            let _ = sync_epoll(&self.epoll, &mut self.fds, key, conn);
        }
        if conn.state() == ConnState::Killed {
            conn.drop_stream();
        }
        if conn.has_pending_rx() && !conn.queued {
            conn.queued = true;
            self.rx_ready.push_back(key);
        }
    }

    fn remove_conn(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        if let (Some(fd), Some(_)) = (conn.fd(), conn.registered) {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.fds.remove(fd);
        }
        if conn.queued {
            // Keep rx_ready to live connections, each at most once.
            self.rx_ready.retain(|k| *k != key);
        }
        if conn.is_host_initiated() {
            self.local_ports.remove(&key.local_port);
        }
        debug!(
            "vsock: connection {}:{} closed",
            key.local_port, key.peer_port
        );
    }
}

/// Adds, modifies or removes `conn`'s host socket in the epoll set.
fn sync_epoll(
    epoll: &Epoll,
    fds: &mut FdTable,
    key: ConnKey,
    conn: &mut Connection,
) -> io::Result<()> {
    let Some(fd) = conn.fd() else {
        return Ok(());
    };
    let want = conn.wants_epoll().then(|| conn.interest());
    match (conn.registered, want) {
        (None, Some(ev)) => {
            let data = fds.register(fd, FdOwner::Conn(key));
            if let Err(e) = epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(ev, data)) {
                fds.remove(fd);
                return Err(e);
            }
            conn.registered = Some(ev);
        }
        (Some(old), Some(ev)) if old != ev => {
            let data = fds
                .data(fd)
                .unwrap_or_else(|| fds.register(fd, FdOwner::Conn(key)));
            epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(ev, data))?;
            conn.registered = Some(ev);
        }
        (Some(_), None) => {
            fds.remove(fd);
            conn.registered = None;
            epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())?;
        }
        _ => {}
    }
    Ok(())
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        // Remove the socket file, unless someone replaced it meanwhile.
        let current = std::fs::metadata(&self.uds_path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current == self.socket_id {
            if let Err(e) = std::fs::remove_file(&self.uds_path) {
                warn!("vsock: failed to remove {}: {e}", self.uds_path.display());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::vsock::test_guest::{guest_pkt, TempDir, GUEST_CID};

    fn pkt(op: u16, guest_port: u32, host_port: u32) -> TxPacket<'static> {
        TxPacket {
            hdr: guest_pkt(op, guest_port, host_port),
            data: None,
        }
    }

    #[test]
    fn stale_events_for_reused_fds_are_ignored() {
        let mut t = FdTable::default();
        let old = t.register(7, FdOwner::Pending);
        assert!(matches!(t.lookup(old), Some((7, FdOwner::Pending))));
        t.remove(7);
        assert!(t.lookup(old).is_none());
        // fd 7 is reused by another socket: the old event must not match.
        let new = t.register(7, FdOwner::Listener);
        assert!(t.lookup(old).is_none());
        assert!(matches!(t.lookup(new), Some((7, FdOwner::Listener))));
        assert_eq!(t.data(7), Some(new));
        t.set_owner(7, FdOwner::Pending);
        assert!(matches!(t.lookup(new), Some((7, FdOwner::Pending))));
    }

    #[test]
    fn connection_churn_without_rx_buffers_stays_bounded() {
        let dir = TempDir::new();
        let uds = dir.path().join("v.sock");
        let mut m = VsockMuxer::new(GUEST_CID, uds.clone()).unwrap();
        let mut path = uds.into_os_string();
        path.push("_80");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let now = Instant::now();
        for _ in 0..1000 {
            m.send_pkt(&pkt(OP_REQUEST, 5000, 80), now);
            assert_eq!(m.conns.len(), 1);
            let _accepted = listener.accept().unwrap();
            m.send_pkt(&pkt(OP_RST, 5000, 80), now);
        }
        // Each connection owed the guest a RESPONSE it never had room for;
        // none of that may pile up once the connections are gone.
        assert!(m.conns.is_empty());
        assert!(m.rx_ready.is_empty());
        assert!(m.rst_queue.is_empty());
        assert_eq!(m.fds.len(), 1, "only the listener stays registered");
        assert!(!m.has_pending_rx());
    }

    #[test]
    fn host_ports_are_not_freed_by_guest_connections() {
        let dir = TempDir::new();
        let uds = dir.path().join("v.sock");
        let mut m = VsockMuxer::new(GUEST_CID, uds.clone()).unwrap();
        let first = m.allocate_local_port(52).unwrap();
        assert_eq!(first, LOCAL_PORT_BASE);
        // A guest connection to host port `first` comes and goes.
        let mut path = uds.into_os_string();
        path.push(format!("_{first}"));
        let _listener = UnixListener::bind(&path).unwrap();
        let now = Instant::now();
        m.send_pkt(&pkt(OP_REQUEST, 7000, first), now);
        assert_eq!(m.conns.len(), 1);
        m.send_pkt(&pkt(OP_RST, 7000, first), now);
        assert!(m.conns.is_empty());
        assert!(m.local_ports.contains(&first));
    }

    #[test]
    fn connect_line_parsing() {
        assert!(matches!(
            parse_connect_line(b"CONNECT 52"),
            LineStatus::Connect(52)
        ));
        assert!(matches!(
            parse_connect_line(b"CONNECT  4294967295 "),
            LineStatus::Connect(u32::MAX)
        ));
        for bad in [
            &b"CONNECT"[..],
            b"CONNECT x",
            b"CONNECT -1",
            b"CONNECT 4294967296",
            b"CONNECT 1 2",
            b"connect 1",
            b"LISTEN 1",
            b"",
            b"CONNECT \xff",
        ] {
            assert!(
                matches!(parse_connect_line(bad), LineStatus::Invalid(_)),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
