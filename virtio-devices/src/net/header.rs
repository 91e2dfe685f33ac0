//! The virtio-net header in front of every frame: which offloads a tap and
//! a driver can share, and what the header of a frame may say under the
//! negotiated features.

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
};

use super::VNET_HDR_LEN;

/// One offload as the tap (`TUN_F_*`) and the two directions of virtio-net
/// (`VIRTIO_NET_F_GUEST_*`: the guest receives such frames, `*_HOST_*` /
/// `CSUM`: the guest sends them) name it.
struct Offload {
    tun: u32,
    guest_receives: u32,
    guest_sends: u32,
}

/// The offloads the device can pass through, in the order they depend on
/// each other: checksum first, ECN after the TSO ones.
const OFFLOADS: [Offload; 5] = [
    Offload {
        tun: libc::TUN_F_CSUM,
        guest_receives: VIRTIO_NET_F_GUEST_CSUM,
        guest_sends: VIRTIO_NET_F_CSUM,
    },
    Offload {
        tun: libc::TUN_F_TSO4,
        guest_receives: VIRTIO_NET_F_GUEST_TSO4,
        guest_sends: VIRTIO_NET_F_HOST_TSO4,
    },
    Offload {
        tun: libc::TUN_F_TSO6,
        guest_receives: VIRTIO_NET_F_GUEST_TSO6,
        guest_sends: VIRTIO_NET_F_HOST_TSO6,
    },
    Offload {
        tun: libc::TUN_F_TSO_ECN,
        guest_receives: VIRTIO_NET_F_GUEST_ECN,
        guest_sends: VIRTIO_NET_F_HOST_ECN,
    },
    Offload {
        tun: libc::TUN_F_UFO,
        guest_receives: VIRTIO_NET_F_GUEST_UFO,
        guest_sends: VIRTIO_NET_F_HOST_UFO,
    },
];

/// Every `TUN_F_*` flag the device knows.
pub(crate) const ALL_TUN_OFFLOADS: u32 =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN | libc::TUN_F_UFO;

fn has(features: u64, bit: u32) -> bool {
    features & (1u64 << bit) != 0
}

/// The feature bits to offer for the `TUN_F_*` flags a tap accepted. A
/// tap that takes an offload for frames it hands us also takes such frames
/// from us (the kernel parses both with the same code), so each flag
/// stands for both directions.
pub(crate) fn offload_features(accepted_tun: u32) -> u64 {
    OFFLOADS
        .iter()
        .filter(|o| accepted_tun & o.tun != 0)
        .fold(0, |features, o| {
            features | (1u64 << o.guest_receives) | (1u64 << o.guest_sends)
        })
}

/// The `TUNSETOFFLOAD` flags for what the driver said it can receive. The
/// tap ignores TSO and UFO without checksum offload, and ECN without TSO;
/// they are left out here too, so the flags say what the tap will do.
pub(crate) fn tun_offloads(acked: u64) -> u32 {
    if !has(acked, VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    for o in &OFFLOADS[1..3] {
        if has(acked, o.guest_receives) {
            flags |= o.tun;
        }
    }
    if flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 && has(acked, VIRTIO_NET_F_GUEST_ECN) {
        flags |= libc::TUN_F_TSO_ECN;
    }
    if has(acked, VIRTIO_NET_F_GUEST_UFO) {
        flags |= libc::TUN_F_UFO;
    }
    flags
}

/// A header field the negotiated features do not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than the header.
    #[error("{0} bytes cannot hold the {VNET_HDR_LEN}-byte header")]
    Short(usize),
    /// A partial checksum without checksum offload.
    #[error("checksum offload (NEEDS_CSUM) was not negotiated")]
    Checksum,
    /// A segmentation type not negotiated for this direction, or unknown.
    #[error("segmentation type {0:#x} was not negotiated")]
    Segmentation(u8),
}

/// Checks the header of a frame the guest sends: offloads it uses must be
/// ones it negotiated (`CSUM`, `HOST_*`). The rest of the header is the
/// host kernel's to check, as for any tap user.
pub(crate) fn check_guest_header(packet: &[u8], acked: u64) -> Result<(), HeaderError> {
    let (flags, gso) = flags_and_gso(packet)?;
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 != 0 && !has(acked, VIRTIO_NET_F_CSUM) {
        return Err(HeaderError::Checksum);
    }
    let allowed = match u32::from(gso & !(VIRTIO_NET_HDR_GSO_ECN as u8)) {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(acked, VIRTIO_NET_F_HOST_TSO4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(acked, VIRTIO_NET_F_HOST_TSO6),
        VIRTIO_NET_HDR_GSO_UDP => has(acked, VIRTIO_NET_F_HOST_UFO),
        _ => false,
    };
    let ecn_allowed = gso & VIRTIO_NET_HDR_GSO_ECN as u8 == 0 || has(acked, VIRTIO_NET_F_HOST_ECN);
    if !allowed || !ecn_allowed {
        return Err(HeaderError::Segmentation(gso));
    }
    Ok(())
}

/// Makes the header of a frame from the tap fit what the guest negotiated:
/// without `GUEST_CSUM` its flags must be zero (the tap then checksummed
/// the frame itself); a segmentation type the guest cannot take (which a
/// tap told the guest's offloads does not produce) refuses the frame.
pub(crate) fn fit_host_header(packet: &mut [u8], acked: u64) -> Result<(), HeaderError> {
    let (_, gso) = flags_and_gso(packet)?;
    let allowed = match u32::from(gso & !(VIRTIO_NET_HDR_GSO_ECN as u8)) {
        VIRTIO_NET_HDR_GSO_NONE => true,
        VIRTIO_NET_HDR_GSO_TCPV4 => has(acked, VIRTIO_NET_F_GUEST_TSO4),
        VIRTIO_NET_HDR_GSO_TCPV6 => has(acked, VIRTIO_NET_F_GUEST_TSO6),
        VIRTIO_NET_HDR_GSO_UDP => has(acked, VIRTIO_NET_F_GUEST_UFO),
        _ => false,
    };
    let ecn_allowed = gso & VIRTIO_NET_HDR_GSO_ECN as u8 == 0 || has(acked, VIRTIO_NET_F_GUEST_ECN);
    if !allowed || !ecn_allowed {
        return Err(HeaderError::Segmentation(gso));
    }
    if !has(acked, VIRTIO_NET_F_GUEST_CSUM) {
        packet[0] = 0;
    }
    Ok(())
}

/// Offset of `num_buffers` in the header.
pub(crate) const NUM_BUFFERS_OFFSET: usize = VNET_HDR_LEN - 2;

fn flags_and_gso(packet: &[u8]) -> Result<(u8, u8), HeaderError> {
    match packet {
        [flags, gso, _, _, _, _, _, _, _, _, _, _, ..] => Ok((*flags, *gso)),
        _ => Err(HeaderError::Short(packet.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(list: &[u32]) -> u64 {
        list.iter().fold(0, |f, b| f | (1u64 << b))
    }

    #[test]
    fn offloads_map_both_ways() {
        assert_eq!(offload_features(0), 0);
        assert_eq!(
            offload_features(libc::TUN_F_CSUM | libc::TUN_F_TSO4),
            bits(&[
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_CSUM,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_HOST_TSO4
            ])
        );
        assert_eq!(
            tun_offloads(offload_features(ALL_TUN_OFFLOADS)),
            ALL_TUN_OFFLOADS
        );
        // Nothing without checksum offload; no ECN without TSO.
        assert_eq!(tun_offloads(bits(&[VIRTIO_NET_F_GUEST_TSO4])), 0);
        assert_eq!(
            tun_offloads(bits(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN])),
            libc::TUN_F_CSUM
        );
        assert_eq!(
            tun_offloads(bits(&[
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_GUEST_TSO6,
                VIRTIO_NET_F_GUEST_ECN
            ])),
            libc::TUN_F_CSUM | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN
        );
    }

    fn header(flags: u8, gso: u8) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = flags;
        h[1] = gso;
        h
    }

    #[test]
    fn guest_headers_use_only_what_was_negotiated() {
        let csum = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        let tcp4 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
        let ecn = VIRTIO_NET_HDR_GSO_ECN as u8;
        assert_eq!(check_guest_header(&header(0, 0), 0), Ok(()));
        assert_eq!(check_guest_header(&[0; 11], 0), Err(HeaderError::Short(11)));
        assert_eq!(
            check_guest_header(&header(csum, 0), 0),
            Err(HeaderError::Checksum)
        );
        let tso = bits(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4]);
        assert_eq!(check_guest_header(&header(csum, tcp4), tso), Ok(()));
        assert_eq!(
            check_guest_header(&header(csum, tcp4 | ecn), tso),
            Err(HeaderError::Segmentation(tcp4 | ecn))
        );
        assert_eq!(
            check_guest_header(&header(csum, VIRTIO_NET_HDR_GSO_TCPV6 as u8), tso),
            Err(HeaderError::Segmentation(4))
        );
        assert_eq!(
            check_guest_header(&header(0, 0x42), u64::MAX),
            Err(HeaderError::Segmentation(0x42))
        );
    }

    #[test]
    fn host_headers_are_fitted_to_the_guest() {
        let mut h = header(VIRTIO_NET_HDR_F_NEEDS_CSUM as u8, 0);
        fit_host_header(&mut h, 0).unwrap();
        assert_eq!(h[0], 0, "flags cleared without GUEST_CSUM");
        let mut h = header(VIRTIO_NET_HDR_F_NEEDS_CSUM as u8, 0);
        fit_host_header(&mut h, bits(&[VIRTIO_NET_F_GUEST_CSUM])).unwrap();
        assert_eq!(h[0], VIRTIO_NET_HDR_F_NEEDS_CSUM as u8);
        let mut h = header(0, VIRTIO_NET_HDR_GSO_TCPV4 as u8);
        assert!(fit_host_header(&mut h, bits(&[VIRTIO_NET_F_GUEST_CSUM])).is_err());
        let guest_tso = bits(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4]);
        assert!(fit_host_header(&mut h, guest_tso).is_ok());
    }
}
