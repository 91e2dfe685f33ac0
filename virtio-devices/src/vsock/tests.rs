//! End-to-end tests of the vsock device: a simulated guest driver on real
//! virtqueues in test memory, and real host Unix sockets.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use super::packet::HEADER_SIZE;
use super::test_guest::*;
use super::*;
use crate::VirtioDevice;

const SHORT: Duration = Duration::from_millis(200);

struct Env {
    _dir: TempDir,
    uds: PathBuf,
    dev: VsockDevice,
}

fn env() -> Env {
    let dir = TempDir::new();
    let uds = dir.path().join("v.sock");
    let dev = VsockDevice::new(GUEST_CID, uds.clone()).unwrap();
    Env {
        _dir: dir,
        uds,
        dev,
    }
}

fn client(uds: &Path) -> UnixStream {
    let c = UnixStream::connect(uds).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

fn read_line(c: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        assert_eq!(c.read(&mut b).unwrap(), 1, "EOF inside a line");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

fn read_n(c: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    c.read_exact(&mut v).unwrap();
    v
}

/// The host client's socket was closed by the device.
fn assert_closed(c: &mut UnixStream) {
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the socket to be closed, got {other:?}"),
    }
}

/// Connects a host client to guest port `guest_port` and completes the
/// handshake, the guest advertising `buf_alloc`. Returns the client and the
/// host port of the connection.
fn host_connect(
    g: &mut TestGuest,
    uds: &Path,
    guest_port: u32,
    buf_alloc: u32,
) -> (UnixStream, u32) {
    let mut c = client(uds);
    c.write_all(format!("CONNECT {guest_port}\n").as_bytes())
        .unwrap();
    let (req, _) = g.expect(OP_REQUEST);
    assert_eq!(req.dst_port, guest_port);
    assert!(req.src_port >= 1 << 30, "host ports start at 2^30: {req:?}");
    assert_eq!(
        (req.type_, req.len, req.buf_alloc),
        (TYPE_STREAM, 0, CONN_TX_BUF_SIZE)
    );
    let mut resp = guest_pkt(OP_RESPONSE, guest_port, req.src_port);
    resp.buf_alloc = buf_alloc;
    g.send(resp, &[]);
    assert_eq!(read_line(&mut c), format!("OK {}\n", req.src_port));
    (c, req.src_port)
}

/// Reads `n` payload bytes the device sends the guest on one connection,
/// ignoring credit updates.
fn guest_read(g: &mut TestGuest, host_port: u32, guest_port: u32, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let (h, d) = g.recv();
        assert_eq!((h.src_port, h.dst_port), (host_port, guest_port), "{h:?}");
        match h.op {
            OP_RW => got.extend_from_slice(&d),
            OP_CREDIT_UPDATE => {}
            _ => panic!("unexpected packet {h:?}"),
        }
    }
    assert_eq!(got.len(), n);
    got
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn host_initiated_handshake_and_data() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    let (mut c, hp) = host_connect(&mut g, &e.uds, 52, 256 * 1024);
    c.write_all(b"hello from host").unwrap();
    let (h, d) = g.expect(OP_RW);
    assert_eq!((h.src_port, h.dst_port, h.type_), (hp, 52, TYPE_STREAM));
    assert_eq!(h.buf_alloc, CONN_TX_BUF_SIZE);
    assert_eq!(d, b"hello from host");

    g.send(guest_pkt(OP_RW, 52, hp), b"hello from guest");
    assert_eq!(read_n(&mut c, 16), b"hello from guest");
    assert_ne!(g.irq.status() & 1, 0, "no used-ring interrupt");
}

#[test]
fn connect_line_followed_by_data_in_one_write() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    let mut c = client(&e.uds);
    c.write_all(b"CONNECT 7\nearly bytes").unwrap();
    let (req, _) = g.expect(OP_REQUEST);
    g.expect_nothing(SHORT);
    g.send(guest_pkt(OP_RESPONSE, 7, req.src_port), &[]);
    assert_eq!(read_line(&mut c), format!("OK {}\n", req.src_port));
    let (_, d) = g.expect(OP_RW);
    assert_eq!(d, b"early bytes");
}

#[test]
fn guest_rst_closes_host_client() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    let mut c = client(&e.uds);
    c.write_all(b"CONNECT 99\n").unwrap();
    let (req, _) = g.expect(OP_REQUEST);
    g.send(guest_pkt(OP_RST, 99, req.src_port), &[]);
    assert_closed(&mut c);
    // The connection is gone: data for it is answered with RST.
    g.send(guest_pkt(OP_RW, 99, req.src_port), b"late");
    let (rst, _) = g.expect(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (req.src_port, 99));
}

#[test]
fn malformed_connect_lines_close_client() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    let long = vec![b'A'; 40];
    let cases: [&[u8]; 6] = [
        b"CONNECT abc\n",
        b"HELLO 52\n",
        b"CONNECT 52 53\n",
        b"CONNECT 99999999999\n",
        b"\n",
        &long,
    ];
    for line in cases {
        let mut c = client(&e.uds);
        c.write_all(line).unwrap();
        assert_closed(&mut c);
    }
    // A client that goes away mid-line.
    let mut c = client(&e.uds);
    c.write_all(b"CONNECT 5").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_closed(&mut c);
    g.expect_nothing(SHORT);
    // The listener still works.
    host_connect(&mut g, &e.uds, 52, 4096);
}

/// A host client that connects and never sends its CONNECT line is closed
/// after the timeout (1024 of them would otherwise lock every other client
/// out); one that does in time is served.
#[test]
fn a_silent_host_client_is_closed_after_the_connect_timeout() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);
    let started = std::time::Instant::now();
    let mut silent = UnixStream::connect(&e.uds).unwrap();
    silent
        .set_read_timeout(Some(unix_backend::CONNECT_LINE_TIMEOUT * 3))
        .unwrap();
    host_connect(&mut g, &e.uds, 52, 4096);
    assert_closed(&mut silent);
    assert!(started.elapsed() >= unix_backend::CONNECT_LINE_TIMEOUT);
}

#[test]
fn guest_initiated_connection_to_uds_port() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    let mut path = e.uds.clone().into_os_string();
    path.push("_1234");
    let listener = UnixListener::bind(&path).unwrap();

    g.send(guest_pkt(OP_REQUEST, 5000, 1234), &[]);
    let (resp, _) = g.expect(OP_RESPONSE);
    assert_eq!(
        (resp.src_port, resp.dst_port, resp.buf_alloc),
        (1234, 5000, CONN_TX_BUF_SIZE)
    );
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();

    g.send(guest_pkt(OP_RW, 5000, 1234), b"ping");
    assert_eq!(read_n(&mut s, 4), b"ping");
    s.write_all(b"pong").unwrap();
    assert_eq!(guest_read(&mut g, 1234, 5000, 4), b"pong");

    // The host side closes: the guest gets a full SHUTDOWN and answers RST.
    drop(s);
    let (sd, _) = g.expect(OP_SHUTDOWN);
    assert_eq!(sd.flags, SHUTDOWN_BOTH);
    g.send(guest_pkt(OP_RST, 5000, 1234), &[]);
    g.send(guest_pkt(OP_RW, 5000, 1234), b"gone");
    let (rst, _) = g.expect(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (1234, 5000));
}

#[test]
fn guest_connect_without_listener_gets_rst() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    g.send(guest_pkt(OP_REQUEST, 5001, 4321), &[]);
    let (rst, _) = g.expect(OP_RST);
    assert_eq!(
        (rst.src_port, rst.dst_port, rst.type_),
        (4321, 5001, TYPE_STREAM)
    );
    g.expect_nothing(SHORT);
}

#[test]
fn unknown_and_invalid_packets() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);
    let mut path = e.uds.clone().into_os_string();
    path.push("_1234");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();

    // Data for a connection that does not exist.
    g.send(guest_pkt(OP_RW, 6000, 1234), b"x");
    let (rst, _) = g.expect(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (1234, 6000));
    // RST for an unknown connection: no reply.
    g.send(guest_pkt(OP_RST, 6000, 1234), &[]);
    // Wrong destination or source CID: dropped.
    let mut p = guest_pkt(OP_REQUEST, 6001, 1234);
    p.dst_cid = 7;
    g.send(p, &[]);
    let mut p = guest_pkt(OP_REQUEST, 6002, 1234);
    p.src_cid = 9;
    g.send(p, &[]);
    g.expect_nothing(SHORT);
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    // Unsupported socket type: RST of the same type.
    let mut p = guest_pkt(OP_REQUEST, 6003, 1234);
    p.type_ = 2;
    g.send(p, &[]);
    let (rst, _) = g.expect(OP_RST);
    assert_eq!((rst.type_, rst.dst_port), (2, 6003));

    // Malformed descriptor chains are consumed and dropped.
    let buf = g.next_tx_buf();
    let mut hdr = guest_pkt(OP_REQUEST, 6004, 1234);
    mem_write(&g, buf, &hdr.to_bytes());
    g.send_chain(&[(buf, 10, 0)]); // short header
    g.send_chain(&[(MEM_SIZE as u64 - 8, HEADER_SIZE as u32, 0)]); // outside memory
    g.send_chain(&[(buf, HEADER_SIZE as u32, 2)]); // write-only header
    hdr.op = OP_RW;
    hdr.len = 100;
    let buf = g.next_tx_buf();
    mem_write(&g, buf, &hdr.to_bytes());
    g.send_chain(&[(buf, HEADER_SIZE as u32, 0), (buf + 0x100, 50, 0)]); // len > data
    hdr.len = MAX_PKT_BUF_SIZE + 1;
    let buf = g.next_tx_buf();
    mem_write(&g, buf, &hdr.to_bytes());
    g.send_chain(&[
        (buf, HEADER_SIZE as u32, 0),
        (buf + 0x100, MAX_PKT_BUF_SIZE + 1, 0),
    ]);
    g.wait_tx_done();
    g.expect_nothing(SHORT);

    // Still serving.
    g.send(guest_pkt(OP_REQUEST, 6005, 1234), &[]);
    g.expect(OP_RESPONSE);
}

fn mem_write(g: &TestGuest, addr: u64, data: &[u8]) {
    use vm_memory::{Bytes, GuestAddress};
    g.mem.write_slice(data, GuestAddress(addr)).unwrap();
}

#[test]
fn host_to_guest_respects_guest_credit() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    let (mut c, hp) = host_connect(&mut g, &e.uds, 52, 1000);
    let data = pattern(5000, 1);
    c.write_all(&data).unwrap();
    assert_eq!(guest_read(&mut g, hp, 52, 1000), data[..1000]);
    // Out of credit: at most a CREDIT_REQUEST, no data.
    while let Some((h, _)) = g.try_recv(SHORT) {
        assert_eq!(h.op, OP_CREDIT_REQUEST, "unexpected packet {h:?}");
    }
    let mut upd = guest_pkt(OP_CREDIT_UPDATE, 52, hp);
    upd.buf_alloc = 1000;
    upd.fwd_cnt = 1000;
    g.send(upd, &[]);
    assert_eq!(guest_read(&mut g, hp, 52, 1000), data[1000..2000]);
    while let Some((h, _)) = g.try_recv(SHORT) {
        assert_eq!(h.op, OP_CREDIT_REQUEST, "unexpected packet {h:?}");
    }
}

#[test]
fn bulk_transfer_both_ways_with_flow_control() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);
    const GUEST_BUF: u32 = 64 * 1024;
    const N: usize = 1 << 20;

    let (c, hp) = host_connect(&mut g, &e.uds, 52, GUEST_BUF);

    // Host to guest: the host writes 1 MiB, the guest consumes with a 64 KiB
    // window and never sees more than that in flight.
    let mut writer = c.try_clone().unwrap();
    let host_data = pattern(N, 3);
    let to_send = host_data.clone();
    let w = thread::spawn(move || writer.write_all(&to_send).unwrap());
    let mut got = Vec::new();
    let mut fwd = 0usize;
    while got.len() < N {
        let (h, d) = g.recv();
        match h.op {
            OP_RW => got.extend_from_slice(&d),
            OP_CREDIT_REQUEST => fwd = got.len().max(fwd),
            other => panic!("unexpected op {other}"),
        }
        assert!(
            got.len() - fwd <= GUEST_BUF as usize,
            "device exceeded the guest's credit"
        );
        if got.len() - fwd >= GUEST_BUF as usize / 2 || h.op == OP_CREDIT_REQUEST {
            fwd = got.len();
            let mut upd = guest_pkt(OP_CREDIT_UPDATE, 52, hp);
            upd.buf_alloc = GUEST_BUF;
            upd.fwd_cnt = fwd as u32;
            g.send(upd, &[]);
        }
    }
    w.join().unwrap();
    assert!(got == host_data, "host-to-guest data corrupted");

    // Guest to host: the guest sends 1 MiB within the device's credit, the
    // host reads it concurrently.
    let mut reader = c.try_clone().unwrap();
    let r = thread::spawn(move || {
        let mut v = vec![0u8; N];
        reader.read_exact(&mut v).unwrap();
        v
    });
    let guest_data = pattern(N, 7);
    let mut sent = 0usize;
    let mut peer_fwd = 0u32;
    while sent < N {
        let credit = CONN_TX_BUF_SIZE as usize - (sent - peer_fwd as usize);
        if credit == 0 || g.rx_available() > 0 {
            let (h, _) = g.recv();
            peer_fwd = h.fwd_cnt;
            match h.op {
                OP_CREDIT_UPDATE => {}
                OP_CREDIT_REQUEST => {
                    let mut upd = guest_pkt(OP_CREDIT_UPDATE, 52, hp);
                    upd.buf_alloc = GUEST_BUF;
                    upd.fwd_cnt = fwd as u32;
                    g.send(upd, &[]);
                }
                _ => panic!("unexpected packet {h:?}"),
            }
            continue;
        }
        let n = credit.min(N - sent).min(MAX_PKT_BUF_SIZE as usize);
        let mut p = guest_pkt(OP_RW, 52, hp);
        p.buf_alloc = GUEST_BUF;
        p.fwd_cnt = fwd as u32;
        g.send(p, &guest_data[sent..sent + n]);
        sent += n;
    }
    let received = r.join().unwrap();
    assert!(received == guest_data, "guest-to-host data corrupted");
}

#[test]
fn guest_within_credit_is_buffered_beyond_it_is_reset() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);
    let (mut c, hp) = host_connect(&mut g, &e.uds, 52, 4096);

    // The host client does not read: a well-behaved guest fills exactly its
    // credit and nothing is lost.
    let data = pattern(CONN_TX_BUF_SIZE as usize, 9);
    for chunk in data.chunks(MAX_PKT_BUF_SIZE as usize) {
        g.send(guest_pkt(OP_RW, 52, hp), chunk);
    }
    g.wait_tx_done();
    while let Some((h, _)) = g.try_recv(SHORT) {
        assert_eq!(h.op, OP_CREDIT_UPDATE, "unexpected packet {h:?}");
    }
    assert!(read_n(&mut c, data.len()) == data);

    // A guest that ignores its credit is reset; the host buffer stays bounded.
    let chunk = pattern(MAX_PKT_BUF_SIZE as usize, 5);
    let mut sent = 0usize;
    let rst = loop {
        assert!(sent < 64 << 20, "no RST after {sent} bytes over credit");
        g.send(guest_pkt(OP_RW, 52, hp), &chunk);
        sent += chunk.len();
        g.wait_tx_done();
        if let Some((h, _)) = g.try_recv(Duration::ZERO) {
            if h.op == OP_RST {
                break h;
            }
            assert_eq!(h.op, OP_CREDIT_UPDATE, "unexpected packet {h:?}");
        }
    };
    assert_eq!((rst.src_port, rst.dst_port), (hp, 52));
    assert!(sent > CONN_TX_BUF_SIZE as usize);
    // The client gets at most what was sent, then EOF.
    let mut forwarded = 0usize;
    let mut b = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut b) {
            Ok(0) => break,
            Ok(n) => forwarded += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    assert!(forwarded < sent, "forwarded {forwarded} of {sent}");
}

#[test]
fn host_close_and_half_close() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    // Full close by the host: data first, then SHUTDOWN(both); guest RSTs.
    let (mut c, hp) = host_connect(&mut g, &e.uds, 52, 4096);
    c.write_all(b"bye").unwrap();
    drop(c);
    assert_eq!(guest_read(&mut g, hp, 52, 3), b"bye");
    let (sd, _) = g.expect(OP_SHUTDOWN);
    assert_eq!(sd.flags, SHUTDOWN_BOTH);
    g.send(guest_pkt(OP_RST, 52, hp), &[]);
    g.expect_nothing(SHORT);

    // Half close by the host: the guest may still send.
    let (mut c, hp) = host_connect(&mut g, &e.uds, 53, 4096);
    c.shutdown(Shutdown::Write).unwrap();
    let (sd, _) = g.expect(OP_SHUTDOWN);
    assert_eq!(sd.flags, SHUTDOWN_SEND);
    g.send(guest_pkt(OP_RW, 53, hp), b"reply");
    assert_eq!(read_n(&mut c, 5), b"reply");
    let mut sd = guest_pkt(OP_SHUTDOWN, 53, hp);
    sd.flags = SHUTDOWN_BOTH;
    g.send(sd, &[]);
    let (rst, _) = g.expect(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (hp, 53));
    assert_closed(&mut c);
}

#[test]
fn guest_close_half_close_and_reset() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    // Guest half close: the host reads EOF but can still send.
    let (mut c, hp) = host_connect(&mut g, &e.uds, 60, 4096);
    g.send(guest_pkt(OP_RW, 60, hp), b"last");
    let mut sd = guest_pkt(OP_SHUTDOWN, 60, hp);
    sd.flags = SHUTDOWN_SEND;
    g.send(sd, &[]);
    assert_eq!(read_n(&mut c, 4), b"last");
    assert_closed(&mut c);
    c.write_all(b"still here").unwrap();
    assert_eq!(guest_read(&mut g, hp, 60, 10), b"still here");
    // Then the full close: RST and the client is closed.
    sd.flags = SHUTDOWN_BOTH;
    g.send(sd, &[]);
    g.expect(OP_RST);

    // Guest full close.
    let (mut c, hp) = host_connect(&mut g, &e.uds, 61, 4096);
    let mut sd = guest_pkt(OP_SHUTDOWN, 61, hp);
    sd.flags = SHUTDOWN_BOTH;
    g.send(sd, &[]);
    let (rst, _) = g.expect(OP_RST);
    assert_eq!(rst.src_port, hp);
    assert_closed(&mut c);

    // Guest reset.
    let (mut c, hp) = host_connect(&mut g, &e.uds, 62, 4096);
    g.send(guest_pkt(OP_RST, 62, hp), &[]);
    assert_closed(&mut c);
    g.expect_nothing(SHORT);
}

#[test]
fn guest_that_never_answers_is_timed_out() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);

    // No RESPONSE: the client is closed after the connect timeout.
    let mut c = client(&e.uds);
    c.write_all(b"CONNECT 52\n").unwrap();
    g.expect(OP_REQUEST);
    assert_closed(&mut c);
    let (rst, _) = g.expect(OP_RST);
    assert_eq!(rst.dst_port, 52);

    // No RST after the host closed: the device resets the connection.
    let (c, hp) = host_connect(&mut g, &e.uds, 53, 4096);
    drop(c);
    let (sd, _) = g.expect(OP_SHUTDOWN);
    assert_eq!(sd.flags, SHUTDOWN_BOTH);
    let (rst, _) = g.expect(OP_RST);
    assert_eq!((rst.src_port, rst.dst_port), (hp, 53));
}

#[test]
fn many_connections_at_once() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 128);
    const N: usize = 40;

    let mut clients: Vec<UnixStream> = (0..N)
        .map(|i| {
            let mut c = client(&e.uds);
            c.write_all(format!("CONNECT {}\n", 100 + i).as_bytes())
                .unwrap();
            c
        })
        .collect();
    let mut host_ports = std::collections::HashMap::new();
    for _ in 0..N {
        let (req, _) = g.expect(OP_REQUEST);
        assert!(host_ports.insert(req.dst_port, req.src_port).is_none());
        g.send(guest_pkt(OP_RESPONSE, req.dst_port, req.src_port), &[]);
    }
    let unique: std::collections::HashSet<u32> = host_ports.values().copied().collect();
    assert_eq!(unique.len(), N);
    for (i, c) in clients.iter_mut().enumerate() {
        let hp = host_ports[&(100 + i as u32)];
        assert_eq!(read_line(c), format!("OK {hp}\n"));
        c.write_all(format!("msg {i}").as_bytes()).unwrap();
    }
    // The guest echoes every message back on its own connection.
    let mut echoed = 0;
    while echoed < N {
        let (h, d) = g.recv();
        if h.op == OP_CREDIT_UPDATE {
            continue;
        }
        assert_eq!(h.op, OP_RW);
        assert_eq!(
            String::from_utf8(d.clone()).unwrap(),
            format!("msg {}", h.dst_port - 100)
        );
        let mut p = guest_pkt(OP_RW, h.dst_port, h.src_port);
        p.fwd_cnt = d.len() as u32;
        g.send(p, &d);
        echoed += 1;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let expect = format!("msg {i}");
        assert_eq!(read_n(c, expect.len()), expect.as_bytes());
    }
}

#[test]
fn rx_waits_for_guest_buffers() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 0);

    let mut c = client(&e.uds);
    c.write_all(b"CONNECT 52\n").unwrap();
    thread::sleep(SHORT);
    assert_eq!(g.rx_available(), 0);
    g.post_rx(1);
    let (req, _) = g.expect(OP_REQUEST);
    g.send(guest_pkt(OP_RESPONSE, 52, req.src_port), &[]);
    assert!(read_line(&mut c).starts_with("OK "));
}

#[test]
fn rst_backlog_holds_back_tx() {
    let mut e = env();
    let mem = test_mem();
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 0);
    g.auto_rx = false;

    // Without RX buffers the RST replies pile up to MAX_PENDING_RST, then the
    // device stops taking TX packets.
    let total = MAX_PENDING_RST + 100;
    for i in 0..total {
        g.send(guest_pkt(OP_RW, 10_000 + i as u32, 80), b"x");
    }
    wait_for("the RST backlog to fill", || {
        (usize::from(g.tx_used()) == MAX_PENDING_RST).then_some(())
    });
    thread::sleep(SHORT);
    assert_eq!(usize::from(g.tx_used()), MAX_PENDING_RST);
    assert!(usize::from(g.tx_posted()) == total);

    g.auto_rx = true;
    g.post_rx(64);
    for i in 0..total {
        let (rst, _) = g.expect(OP_RST);
        assert_eq!((rst.src_port, rst.dst_port), (80, 10_000 + i as u32));
    }
    g.wait_tx_done();
}

#[test]
fn reset_drops_connections_and_device_restarts() {
    let mut e = env();
    let mem = test_mem();
    {
        let mut g = TestGuest::new(&mem);
        g.activate(&mut e.dev, 64);
        let (mut c, _) = host_connect(&mut g, &e.uds, 52, 4096);
        e.dev.reset();
        assert_closed(&mut c);
        assert!(e.uds.exists(), "the listener survives a reset");
    }
    // The driver sets the device up again on fresh rings.
    let mut g = TestGuest::new(&mem);
    g.activate(&mut e.dev, 64);
    let (mut c, hp) = host_connect(&mut g, &e.uds, 52, 4096);
    g.send(guest_pkt(OP_RW, 52, hp), b"again");
    assert_eq!(read_n(&mut c, 5), b"again");

    // Dropping an active device stops it and removes the socket.
    let Env { _dir, uds, dev } = e;
    drop(dev);
    assert!(!uds.exists());
    assert_closed(&mut c);
}

#[test]
fn a_restored_device_sends_one_transport_reset() {
    let mem = test_mem();
    let mut e = env();
    // Set to something other than the reset event's id (0).
    vm_memory::Bytes::write_obj(&mem, 0xffff_ffffu32, vm_memory::GuestAddress(EV_BUF_ADDR))
        .unwrap();
    let mut guest = TestGuest::new(&mem);
    e.dev.restored();
    guest.activate(&mut e.dev, 4);
    let (used, event) = wait_for("the transport reset event", || {
        let seen = guest.events();
        (seen.0 == 1).then_some(seen)
    });
    assert_eq!((used, event), (1, 0));
    assert!(guest.irq.status() != 0, "the guest was not interrupted");
    // A device that was not restored sends none.
    e.dev.reset();
    let mem = test_mem();
    let mut fresh = TestGuest::new(&mem);
    fresh.activate(&mut e.dev, 4);
    thread::sleep(SHORT);
    assert_eq!(fresh.events().0, 0);
}
