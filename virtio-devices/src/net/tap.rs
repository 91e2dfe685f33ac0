//! The host side of a net device: a tap interface opened by name, in the
//! VMM's network namespace, non-blocking, with the virtio-net header in
//! front of every frame.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use tracing::debug;

use super::header::ALL_TUN_OFFLOADS;
use super::{NetError, MAX_IFNAME_LEN, VNET_HDR_LEN};

/// `struct ifreq` as `TUNSETIFF` reads it: the name and the flags member of
/// the union, padded to the kernel's size.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReqFlags>() == std::mem::size_of::<libc::ifreq>());

/// The `TUNSETOFFLOAD` sets tried when a tap is opened, most first: the
/// first one the kernel takes is what the device offers. Older kernels
/// refused UFO, and every tap with a virtio-net header takes checksums.
const OFFLOAD_PROBES: [u32; 5] = [
    ALL_TUN_OFFLOADS,
    ALL_TUN_OFFLOADS & !libc::TUN_F_UFO,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
    libc::TUN_F_CSUM,
    0,
];

/// A tap interface (or a socket standing in for one, see
/// [`Tap::from_socket`]). Reads and writes are one frame each, with the
/// 12-byte virtio-net header in front.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// The `TUN_F_*` offloads the tap accepted.
    offloads: u32,
    /// Whether this is a real tap (offloads are set with ioctls).
    is_tap: bool,
}

impl Tap {
    /// Opens the existing tap interface `name` (`IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR`, non-blocking), sets the header size and finds which
    /// offloads it takes; none is on until a driver asks for it (see
    /// [`set_offloads`](Self::set_offloads)). The host side creates the
    /// tap: a missing one is an error rather than a new, unconnected
    /// interface. Needs `CAP_NET_ADMIN` or the tap's owner.
    pub fn open(name: &str) -> Result<Tap, NetError> {
        check_name(name)?;
        let cname = CString::new(name).map_err(|_| NetError::InvalidTapName {
            name: name.to_string(),
            why: "contains a NUL byte",
        })?;
        // SAFETY: `cname` is a valid NUL-terminated string for the call.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(NetError::NoSuchTap(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(NetError::OpenTun)?;
        let ioctl_err = |op| {
            move |source| NetError::Ioctl {
                name: name.to_string(),
                op,
                source,
            }
        };
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
            _union_rest: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is one
        // (same size and layout of the members used), borrowed exclusively
        // for the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        check(ret).map_err(ioctl_err("TUNSETIFF"))?;
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at `hdr_len` for the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        check(ret).map_err(ioctl_err("TUNSETVNETHDRSZ"))?;
        let mut tap = Tap {
            file,
            name: name.to_string(),
            offloads: 0,
            is_tap: true,
        };
        tap.offloads = OFFLOAD_PROBES
            .into_iter()
            .find(|&flags| tap.set_offloads(flags).is_ok())
            .ok_or_else(|| ioctl_err("TUNSETOFFLOAD")(io::Error::last_os_error()))?;
        tap.set_offloads(0).map_err(ioctl_err("TUNSETOFFLOAD"))?;
        debug!(
            "virtio-net: opened tap {name}, offloads {:#x} accepted",
            tap.offloads
        );
        Ok(tap)
    }

    /// A connected datagram socket (`SOCK_SEQPACKET` or `SOCK_DGRAM`)
    /// standing in for a tap, for tests and fuzzing: one frame per
    /// message, header included, every offload taken as accepted (nothing
    /// interprets the headers). Made non-blocking here.
    pub fn from_socket(fd: OwnedFd, name: &str) -> Result<Tap, NetError> {
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFL on a descriptor we own; no memory is passed.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        check(flags).map_err(NetError::Socket)?;
        // SAFETY: F_SETFL with an int argument on a descriptor we own.
        let ret = unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        check(ret).map_err(NetError::Socket)?;
        Ok(Tap {
            file: File::from(fd),
            name: name.to_string(),
            offloads: ALL_TUN_OFFLOADS,
            is_tap: false,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `TUN_F_*` offloads the tap accepted when it was opened.
    pub fn accepted_offloads(&self) -> u32 {
        self.offloads
    }

    /// Tells the tap which offloads the guest can receive (`TUNSETOFFLOAD`):
    /// frames it hands over may then be unchecksummed or segmentation
    /// frames of those kinds, and no others.
    pub fn set_offloads(&self, tun_flags: u32) -> io::Result<()> {
        if !self.is_tap {
            return Ok(());
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is
        // passed.
        let ret = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(tun_flags),
            )
        };
        check(ret)
    }

    /// Reads one frame (header included) into `buf`; `WouldBlock` when
    /// there is none. A frame longer than `buf` is cut (the tap's MTU and
    /// offloads keep them within [`super::MAX_PACKET_LEN`]).
    pub(crate) fn read_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header included).
    pub(crate) fn write_packet(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// What Linux takes as an interface name (`dev_valid_name`).
pub fn check_name(name: &str) -> Result<(), NetError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("contains '/', ':', a NUL or whitespace")
    } else {
        None
    };
    match why {
        Some(why) => Err(NetError::InvalidTapName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
