//! virtio-net tests: a simulated driver moves frames through the device's
//! queues in test guest memory, to and from a real tap in a network
//! namespace each test makes for itself (root only; skipped otherwise), or
//! a socket pair standing in for the tap where a test must see exactly
//! what the device read (no host kernel traffic on a socket pair).

#![allow(clippy::unwrap_used)]

mod config;
mod datapath;
mod driver;
mod hostile;
mod rate_limit;
mod wire;

use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;

use super::*;
use driver::Received;
use wire::TEST_ETHERTYPE;

/// The guest's MAC address in the tests.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The host side's MAC address in test frames.
const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
const CONFIG: NetConfig = NetConfig {
    mac: GUEST_MAC,
    mtu: DEFAULT_MTU,
};

/// A test frame of `len` bytes: Ethernet header (to `dst`), then `tag` and
/// a pattern.
fn frame_to(dst: [u8; 6], tag: u8, len: usize) -> Vec<u8> {
    assert!(len > 15);
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&HOST_MAC);
    frame.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    frame.push(tag);
    frame.extend((15..len).map(|i| (i * 7 + usize::from(tag)) as u8));
    frame
}

/// A test frame to the guest.
fn test_frame(tag: u8, len: usize) -> Vec<u8> {
    frame_to(GUEST_MAC, tag, len)
}

fn is_test_frame(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&TEST_ETHERTYPE.to_be_bytes()[..])
}

/// `frame` with a zero virtio-net header in front.
fn packet(frame: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; VNET_HDR_LEN];
    packet.extend_from_slice(frame);
    packet
}

/// Every feature the device offers, or all but mergeable buffers.
fn features(dev: &NetDevice, mergeable: bool) -> u64 {
    let all = crate::VirtioDevice::avail_features(dev);
    if mergeable {
        all
    } else {
        all & !(1 << VIRTIO_NET_F_MRG_RXBUF)
    }
}

/// The `num_buffers` field of a received header.
fn num_buffers(received: &Received) -> u16 {
    u16::from_le_bytes([received.header[10], received.header[11]])
}
