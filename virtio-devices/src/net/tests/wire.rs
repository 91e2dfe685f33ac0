//! The host end of a test device: a real tap in a network namespace the
//! test made for itself (frames in and out through a packet socket bound
//! to the tap), or a socket pair standing in for the tap.
//!
//! Nothing here touches the namespace the tests started in: a tap is only
//! made after `unshare(CLONE_NEWNET)` moved the test's thread into a new,
//! empty namespace (checked), and it disappears with that namespace.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::*;

/// The tap every namespaced test makes (each in its own namespace).
pub(super) const TAP_NAME: &str = "vmrun-test0";
/// EtherType of test frames (IEEE local experimental): the packet socket
/// sees only those, not the host kernel's own IPv6 chatter on the link.
pub(super) const TEST_ETHERTYPE: u16 = 0x88b5;

/// Runs `f` on a thread of its own in a new network namespace; `None`
/// (test skipped, said on stderr) without the privilege to make one.
pub(super) fn in_fresh_netns<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let thread = std::thread::spawn(move || {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        // SAFETY: unshare(CLONE_NEWNET) only moves the calling thread into
        // a new network namespace; it touches no memory of ours.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let err = io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "unshare: {err}");
            eprintln!("skipped: making a network namespace needs CAP_SYS_ADMIN");
            return None;
        }
        let after = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(before, after, "still in the original network namespace");
        Some(f())
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `struct ifreq` with the flags, MTU or data-pointer member.
#[repr(C)]
struct IfReq<T> {
    name: [u8; libc::IFNAMSIZ],
    value: T,
    _rest: [u8; 16],
}

fn ifreq<T>(name: &str, value: T) -> IfReq<T> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        value,
        _rest: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    req
}

fn check(ret: libc::c_int, what: &str) {
    assert!(ret >= 0, "{what}: {}", io::Error::last_os_error());
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> OwnedFd {
    // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    check(fd, "socket");
    // SAFETY: `fd` is a new descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Makes the persistent tap [`TAP_NAME`] in the current (test) namespace
/// and brings it up.
fn create_tap() {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    let mut req = ifreq(TAP_NAME, flags);
    // SAFETY: TUNSETIFF reads and writes an ifreq; `req` is one.
    check(
        unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) },
        "TUNSETIFF",
    );
    // SAFETY: TUNSETPERSIST takes its argument by value.
    check(
        unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) },
        "TUNSETPERSIST",
    );
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    let mut req = ifreq(TAP_NAME, 0 as libc::c_short);
    // SAFETY: SIOCGIFFLAGS fills the flags member of `req`.
    check(
        unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) },
        "SIOCGIFFLAGS",
    );
    req.value |= (libc::IFF_UP | libc::IFF_NOARP) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the flags member of `req`.
    check(
        unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) },
        "SIOCSIFFLAGS",
    );
}

/// `ETHTOOL_G*` of the test tap: 1 if the feature is on.
pub(super) fn ethtool_get(cmd: u32) -> u32 {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd, data: 0 };
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
    let mut req = ifreq(TAP_NAME, std::ptr::addr_of_mut!(value));
    // SAFETY: SIOCETHTOOL reads the ifreq and writes `value` through its
    // data pointer, which stays valid for the call.
    check(
        unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) },
        "SIOCETHTOOL",
    );
    value.data
}

/// The host end of a test device.
pub(super) enum Wire {
    /// A packet socket on the tap.
    Tap(OwnedFd),
    /// Our end of the socket pair, and a duplicate of the device's end.
    Pair { ours: OwnedFd, device: OwnedFd },
}

/// A tap in this (test) namespace, opened as the device opens it, and the
/// packet socket on it. Call only inside [`in_fresh_netns`].
pub(super) fn test_tap() -> (Tap, Wire) {
    create_tap();
    let tap = Tap::open(TAP_NAME).unwrap();
    let packet = socket(
        libc::AF_PACKET,
        libc::SOCK_RAW | libc::SOCK_NONBLOCK,
        i32::from(TEST_ETHERTYPE.to_be()),
    );
    let name = std::ffi::CString::new(TAP_NAME).unwrap();
    // SAFETY: `name` is NUL-terminated.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0);
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = TEST_ETHERTYPE.to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the length given.
    let ret = unsafe {
        libc::bind(
            packet.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    check(ret, "bind");
    (tap, Wire::Tap(packet))
}

/// A socket pair standing in for a tap.
pub(super) fn test_pair() -> (Tap, Wire) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(ret, "socketpair");
    // SAFETY: both descriptors are new and owned by nothing else.
    let (ours, device) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let watch = device.try_clone().unwrap();
    let tap = Tap::from_socket(device, "pair").unwrap();
    (
        tap,
        Wire::Pair {
            ours,
            device: watch,
        },
    )
}

impl Wire {
    /// Sends `frame` towards the guest (through the tap; on a pair with a
    /// zero virtio-net header in front).
    pub(super) fn inject(&self, frame: &[u8]) {
        match self {
            Wire::Tap(fd) => write_all(fd, frame),
            Wire::Pair { ours, .. } => write_all(ours, &packet(frame)),
        }
    }

    /// Sends `bytes` as they are, header or not (socket pair only).
    pub(super) fn inject_raw(&self, bytes: &[u8]) {
        let Wire::Pair { ours, .. } = self else {
            panic!("only a socket pair carries raw messages");
        };
        write_all(ours, bytes);
    }

    /// The next frame the device sent out, within `timeout`.
    pub(super) fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let fd = match self {
            Wire::Tap(fd) => fd,
            Wire::Pair { ours, .. } => ours,
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if n <= 0 {
            return None;
        }
        let mut buf = vec![0u8; MAX_PACKET_LEN];
        // SAFETY: `buf` is writable for its length.
        let len = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let len = usize::try_from(len).ok()?;
        buf.truncate(len);
        if let Wire::Pair { .. } = self {
            buf.drain(..VNET_HDR_LEN);
        }
        Some(buf)
    }

    /// Bytes the device has not read from its end (socket pair only).
    pub(super) fn unread_by_device(&self) -> usize {
        let Wire::Pair { device, .. } = self else {
            panic!("only a socket pair can tell");
        };
        let mut unread: libc::c_int = 0;
        // SAFETY: SIOCINQ writes one int.
        check(
            unsafe { libc::ioctl(device.as_raw_fd(), libc::FIONREAD, &mut unread) },
            "SIOCINQ",
        );
        unread as usize
    }
}

fn write_all(fd: &OwnedFd, bytes: &[u8]) {
    // SAFETY: `bytes` is readable for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "send: {}",
        io::Error::last_os_error()
    );
}
