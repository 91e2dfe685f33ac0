//! virtio-net backed by a host tap interface.
//!
//! Two queues, receive (0) and transmit (1), no control queue. Every frame
//! on either side carries the 12-byte `virtio_net_hdr_v1` (the tap is opened
//! with `IFF_VNET_HDR` and that header size), so checksum and segmentation
//! offloads pass between guest and tap untouched: the device offers the
//! offloads the tap accepted when it was opened, and once the driver has
//! chosen, tells the tap (`TUNSETOFFLOAD`) which of them the guest can
//! receive.
//!
//! * **Transmit.** A chain is gathered into one frame (header included) of
//!   at most [`MAX_PACKET_LEN`] bytes and written to the tap with one
//!   `write(2)`. A tap that cannot take it right now drops it, as a full NIC
//!   queue would.
//! * **Receive.** One frame is read from the tap at a time and written into
//!   as many receive buffers as it needs (`VIRTIO_NET_F_MRG_RXBUF`; the
//!   header's `num_buffers` says how many), which are published to the
//!   driver together. When the guest has posted too few buffers, that frame
//!   is kept and the tap is no longer read until the guest posts more: the
//!   rest waits in the tap's own queue (the host kernel's to bound), never
//!   in the VMM.
//! * **Rate limits** ([`NetDevice::with_rate_limits`]), one each way, as
//!   token buckets of bytes and frames ([`crate::rate_limiter`]); a frame's
//!   bytes are its Ethernet frame's, the virtio-net header not counted.
//!   A transmit chain that does not fit stays in the ring, where the
//!   guest put it, with those behind it, until the limiter's timer says
//!   it fits (one the device cannot send costs a frame and no bytes: it
//!   made the device work all the same). A received frame that does not
//!   fit is kept, as one waiting for buffers is, and the tap is not read
//!   until the timer fires: the rest waits in the tap's queue. While
//!   throttled the worker sleeps in epoll, on the timer and its other
//!   events.
//!
//! # Hostile guests
//!
//! Every chain is checked before anything is copied: direction of each
//! descriptor, guest memory range, total length (a transmit chain between
//! the header and [`MAX_PACKET_LEN`]), chains cut short by a loop or a bad
//! next index, header fields the negotiated features do not allow. A bad
//! transmit chain is returned with nothing sent; a bad receive buffer is
//! returned empty (used length 0, which the Linux driver counts as a length
//! error and replaces). Only that chain fails, and, for a receive buffer
//! found in the middle of a frame, that frame.
//!
//! Module layout: [`device`] is the [`VirtioDevice`](crate::VirtioDevice)
//! face (features, configuration space, activation), [`tap`] the host
//! interface, `header` the rules for the virtio-net header and the offload
//! mapping, [`rx`] and [`tx`] one frame each way, `worker` the event loop.

pub mod device;
mod header;
pub mod rx;
pub mod tap;
pub mod tx;
mod worker;

#[cfg(test)]
mod tests;

use std::io;
use std::mem::size_of;

use virtio_bindings::virtio_net::virtio_net_hdr_v1;

pub use device::NetDevice;
pub use tap::Tap;
pub use worker::WakeCount;

use crate::rate_limiter::RateLimit;

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Length of the header in front of every frame (`virtio_net_hdr_v1`: with
/// `VIRTIO_F_VERSION_1` it always has the `num_buffers` field).
pub const VNET_HDR_LEN: usize = size_of::<virtio_net_hdr_v1>();
/// Largest Ethernet frame either way: a 64 KiB segmentation-offload frame
/// and its link-layer headers, with the margin other VMMs use.
pub const MAX_FRAME_LEN: usize = 65562;
/// Largest packet (header and frame) moved between a chain and the tap.
pub const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
/// Smallest MTU the device reports (IPv4's minimum, Linux's `ETH_MIN_MTU`).
pub const MIN_MTU: u16 = 68;
/// The MTU of an interface nobody chose one for.
pub const DEFAULT_MTU: u16 = 1500;
/// Longest interface name Linux takes (`IFNAMSIZ` less the NUL).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// What the guest learns about its interface from the configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The guest's MAC address (`VIRTIO_NET_F_MAC`): unicast.
    pub mac: [u8; 6],
    /// The MTU the guest uses (`VIRTIO_NET_F_MTU`), at least [`MIN_MTU`].
    pub mtu: u16,
}

impl NetConfig {
    /// Checks what a driver would refuse or misuse.
    pub fn validate(&self) -> Result<(), NetError> {
        if self.mac[0] & 1 != 0 || self.mac == [0; 6] {
            return Err(NetError::InvalidMac(self.mac));
        }
        if self.mtu < MIN_MTU {
            return Err(NetError::InvalidMtu(self.mtu));
        }
        Ok(())
    }
}

/// What a net device may move per second each way (see
/// [`crate::rate_limiter`]): `rx` from the tap to the guest, `tx` from the
/// guest to the tap; bytes of Ethernet frames and frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRateLimits {
    /// Tap to guest.
    pub rx: RateLimit,
    /// Guest to tap.
    pub tx: RateLimit,
}

/// Errors creating the net device or opening its tap.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap name cannot be a Linux interface name.
    #[error("invalid tap name {name:?}: {why}")]
    InvalidTapName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No interface of that name in the VMM's network namespace (the
    /// device only opens taps the host side made).
    #[error("tap {0:?} does not exist in this network namespace")]
    NoSuchTap(String),
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// A tap ioctl failed.
    #[error("tap {name:?}: {op} failed: {source}")]
    Ioctl {
        /// The tap.
        name: String,
        /// The ioctl.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A descriptor standing in for a tap could not be made non-blocking.
    #[error("cannot make the tap's stand-in socket non-blocking: {0}")]
    Socket(#[source] io::Error),
    /// A multicast or all-zero MAC address.
    #[error("MAC address {} is not a unicast address", format_mac(.0))]
    InvalidMac([u8; 6]),
    /// An MTU below [`MIN_MTU`].
    #[error("MTU {0} is below the minimum of {MIN_MTU}")]
    InvalidMtu(u16),
    /// A rate limiter's timer could not be created.
    #[error("cannot create the {direction} rate limiter: {source}")]
    RateLimiter {
        /// `receive` or `transmit`.
        direction: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
