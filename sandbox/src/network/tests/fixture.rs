//! A pod network as a CNI plugin leaves it, in namespaces made for one
//! test (and deleted with it): a "pod" namespace with `eth0`, the veth
//! whose peer `veth-host` is in a "host" namespace; and the pieces a test
//! needs to play the VMM (a tap opened in the pod's namespace) and to
//! watch frames. No packet leaves these namespaces.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

/// The pod interface's MAC address.
pub const POD_MAC: [u8; 6] = [0x02, 0x76, 0x6d, 0, 0, 2];
/// The pod's IPv4 address; the host peer has .1.
pub const POD_IP: [u8; 4] = [192, 0, 2, 2];
/// The MTU of both ends of the veth.
pub const MTU: u16 = 1400;
/// The host end of the veth, in the host namespace.
pub const HOST_PEER: &str = "veth-host";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    pub fn new() -> TestNetns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("vmrun-nettest-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        TestNetns { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its namespace file.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS…`, which must succeed.
    pub fn ip(&self, args: &str) {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        run("ip", &all);
    }

    /// Whether `ip -n NAME ARGS…` succeeds.
    pub fn ip_ok(&self, args: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args.split_whitespace())
            .output()
            .unwrap()
            .status
            .success()
    }

    /// The JSON `ip -j -n NAME ARGS…` prints.
    pub fn ip_json(&self, args: &str) -> serde_json::Value {
        json("ip", &self.name, args)
    }

    /// The JSON `tc -j -n NAME ARGS…` prints (`[]` for nothing).
    pub fn tc_json(&self, args: &str) -> serde_json::Value {
        json("tc", &self.name, args)
    }

    /// Link `name`'s interface index.
    pub fn index_of(&self, name: &str) -> u32 {
        let link = self.ip_json(&format!("link show dev {name}"));
        u32::try_from(link[0]["ifindex"].as_u64().unwrap()).unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(program: &str, netns: &str, args: &str) -> serde_json::Value {
    let mut all = vec!["-j", "-n", netns];
    all.extend(args.split_whitespace());
    let out = run(program, &all);
    if out.trim().is_empty() {
        return serde_json::Value::Array(Vec::new());
    }
    serde_json::from_str(&out).unwrap()
}

/// The pod's and the host's namespaces, set up as a CNI plugin would.
pub struct Pod {
    pub pod: TestNetns,
    pub host: TestNetns,
}

/// A pod whose `eth0` has 192.0.2.2/24 and 2001:db8::2/64 (and the
/// link-local address the kernel gives it), MTU 1400, a default route via
/// the host peer (192.0.2.1), a static IPv4 route with a metric and an
/// IPv6 one; the host peer has .1 and ::1. Returns once `eth0` has its
/// link-local address.
pub fn pod() -> Pod {
    let (pod, host) = (TestNetns::new(), TestNetns::new());
    let mac = vm_config::MacAddr(POD_MAC);
    host.ip(&format!(
        "link add {HOST_PEER} mtu {MTU} type veth peer name eth0 mtu {MTU} address {mac} netns {}",
        pod.name()
    ));
    host.ip(&format!("link set {HOST_PEER} up"));
    host.ip(&format!("addr add 192.0.2.1/24 dev {HOST_PEER}"));
    host.ip(&format!("addr add 2001:db8::1/64 dev {HOST_PEER} nodad"));
    pod.ip("link set eth0 up");
    pod.ip("addr add 192.0.2.2/24 dev eth0");
    pod.ip("addr add 2001:db8::2/64 dev eth0 nodad");
    pod.ip("route add default via 192.0.2.1");
    pod.ip("route add 198.51.100.0/24 via 192.0.2.1 metric 50");
    pod.ip("-6 route add 2001:db8:1::/48 via 2001:db8::1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod
        .ip_json("-6 addr show dev eth0 scope link")
        .as_array()
        .is_none_or(|links| {
            links
                .iter()
                .all(|l| l["addr_info"].as_array().is_none_or(Vec::is_empty))
        })
    {
        assert!(Instant::now() < deadline, "eth0 got no link-local address");
        std::thread::sleep(Duration::from_millis(20));
    }
    Pod { pod, host }
}

/// Runs `work` on a thread of its own inside the namespace at `netns`.
pub fn in_netns<T: Send>(netns: &Path, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = File::open(netns).unwrap();
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
                work()
            })
            .join()
            .unwrap()
    })
}

/// Creates tap `name` in the namespace at `netns` as the VMM does
/// (`TUNSETIFF`, `IFF_TAP | IFF_NO_PI`, not persistent: it is gone once
/// the returned descriptor is closed).
pub fn open_tap(netns: &Path, name: &str) -> File {
    in_netns(netns, || {
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .unwrap();
        // SAFETY: ifreq is plain old data; all zeros is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is,
        // borrowed exclusively for the call.
        let ret = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        assert_eq!(ret, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        tun
    })
}

/// A UDP socket in the host namespace.
pub fn host_udp_socket(pod: &Pod) -> UdpSocket {
    in_netns(&pod.host.path(), || UdpSocket::bind("0.0.0.0:0").unwrap())
}

/// A packet socket on the host peer that receives every frame it gets.
pub fn host_packet_socket(pod: &Pod) -> File {
    in_netns(&pod.host.path(), || {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket() takes no pointers; a new descriptor or -1 comes
        // back.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: the descriptor was just made and is owned by no one else.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let peer = std::ffi::CString::new(HOST_PEER).unwrap();
        // SAFETY: `peer` is a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(peer.as_ptr()) };
        assert_ne!(index, 0);
        // SAFETY: sockaddr_ll is plain old data; all zeros is valid.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = i32::try_from(index).unwrap();
        // SAFETY: bind reads a sockaddr_ll of the size given from
        // `address`, which outlives the call.
        let ret = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(ret, 0, "bind: {}", std::io::Error::last_os_error());
        File::from(socket)
    })
}

/// The next frame readable on `fd` within `timeout`.
pub fn read_frame(fd: &mut File, timeout: Duration) -> Option<Vec<u8>> {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap();
    // SAFETY: poll reads and writes the one pollfd it is given.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    assert!(ready >= 0, "poll: {}", std::io::Error::last_os_error());
    if ready == 0 {
        return None;
    }
    let mut frame = vec![0; 65536];
    let len = fd.read(&mut frame).unwrap();
    frame.truncate(len);
    Some(frame)
}

/// Whether `frame` asks for (ARP) or carries (UDP) something for the pod's
/// IPv4 address.
pub fn is_for_pod_ip(frame: &[u8]) -> bool {
    let ethertype = frame.get(12..14);
    let arp_request_for_pod = ethertype == Some(&[0x08, 0x06])
        && frame.get(20..22) == Some(&[0, 1])
        && frame.get(38..42) == Some(&POD_IP);
    let udp_to_pod = ethertype == Some(&[0x08, 0x00])
        && frame.get(23) == Some(&17)
        && frame.get(30..34) == Some(&POD_IP);
    arp_request_for_pod || udp_to_pod
}

/// A broadcast frame of a local experimental EtherType from a MAC no one
/// else uses, carrying `marker`.
pub fn marked_frame(marker: &CStr) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend([0x02, 0x76, 0x6d, 0x72, 0x75, 0x6e]);
    frame.extend([0x88, 0xb5]);
    frame.extend(marker.to_bytes());
    frame.resize(60, 0);
    frame
}

/// Writes one frame to the tap.
pub fn write_frame(tap: &mut File, frame: &[u8]) {
    assert_eq!(tap.write(frame).unwrap(), frame.len());
}
