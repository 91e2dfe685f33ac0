//! Identity, features, configuration space, offload negotiation with the
//! tap, and what the device refuses to be made with.

use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::*;

use super::driver::{test_mem, Guest};
use super::wire::{ethtool_get, in_fresh_netns, test_pair, test_tap, TAP_NAME};
use super::*;
use crate::{ActivateError, IrqTrigger, VirtioDevice};

fn irq() -> Arc<IrqTrigger> {
    Arc::new(IrqTrigger::new(
        vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap(),
    ))
}

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GTSO: u32 = 0x1e;

fn bit(b: u32) -> u64 {
    1 << b
}

const BASE: [u32; 5] = [
    VIRTIO_F_VERSION_1,
    VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS,
    VIRTIO_NET_F_MRG_RXBUF,
];
const OFFLOADS: [u32; 10] = [
    VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_ECN,
    VIRTIO_NET_F_HOST_UFO,
    VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_UFO,
];

fn read_config(dev: &NetDevice, offset: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0xaau8; len];
    dev.read_config(offset, &mut data);
    data
}

#[test]
fn a_tap_device_offers_what_the_tap_takes_and_reports_mac_link_and_mtu() {
    in_fresh_netns(|| {
        let (tap, _wire) = test_tap();
        assert_eq!(tap.name(), TAP_NAME);
        let accepted = tap.accepted_offloads();
        assert_ne!(
            accepted & libc::TUN_F_CSUM,
            0,
            "every vnet-header tap checksums"
        );
        let mut dev = NetDevice::new(
            Some(tap),
            NetConfig {
                mtu: 9000,
                ..CONFIG
            },
        )
        .unwrap();
        assert_eq!(dev.device_type(), VIRTIO_ID_NET);
        assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
        assert_eq!(dev.tap_name(), Some(TAP_NAME));
        let features = dev.avail_features();
        for b in BASE {
            assert_ne!(features & bit(b), 0, "feature {b} not offered");
        }
        assert_eq!(
            features & !BASE.iter().fold(0, |f, &b| f | bit(b)),
            super::super::header::offload_features(accepted)
        );
        // This host's kernel (Linux >= 4.14) takes every offload.
        for b in OFFLOADS {
            assert_ne!(features & bit(b), 0, "offload {b} not offered");
        }
        for b in [VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ] {
            assert_eq!(features & bit(b), 0);
        }
        let space = read_config(&dev, 0, 12);
        assert_eq!(&space[0..6], &GUEST_MAC);
        assert_eq!(&space[6..8], &[1, 0], "link up");
        assert_eq!(&space[8..10], &[1, 0], "one queue pair");
        assert_eq!(&space[10..12], &9000u16.to_le_bytes());
        assert_eq!(read_config(&dev, 10, 4), [0x28, 0x23, 0xaa, 0xaa]);
        assert_eq!(read_config(&dev, 4096, 2), [0xaa, 0xaa]);
        dev.write_config(0, &[0; 6]);
        assert_eq!(&read_config(&dev, 0, 6), &GUEST_MAC, "the MAC is read-only");
        assert!(matches!(
            dev.activate(test_mem(), irq(), vec![], vec![]),
            Err(ActivateError::QueueCount { expected: 2, .. })
        ));
    });
}

#[test]
fn the_tap_gets_the_offloads_the_driver_can_receive() {
    in_fresh_netns(|| {
        let (tap, _wire) = test_tap();
        let mut dev = NetDevice::new(Some(tap), CONFIG).unwrap();
        assert_eq!(ethtool_get(ETHTOOL_GTSO), 0, "no offload before a driver");
        let mem = test_mem();
        let cases = [
            (0, 0, 0),
            (bit(VIRTIO_NET_F_GUEST_CSUM), 1, 0),
            (
                bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4),
                1,
                1,
            ),
            // TSO without checksum offload is nothing to the tap.
            (
                bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6),
                0,
                0,
            ),
        ];
        for (guest, csum, tso) in cases {
            let acked = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) | guest;
            let _guest = Guest::activate(&mem, &mut dev, acked);
            assert_eq!(
                ethtool_get(ETHTOOL_GTXCSUM),
                csum,
                "checksum for {guest:#x}"
            );
            assert_eq!(ethtool_get(ETHTOOL_GTSO), tso, "TSO for {guest:#x}");
            dev.reset();
        }
    });
}

#[test]
fn a_device_without_a_tap_is_down_and_nothing_moves() {
    let mut dev = NetDevice::new(None, CONFIG).unwrap();
    assert_eq!(dev.tap_name(), None);
    assert_eq!(&read_config(&dev, 6, 2), &[0, 0], "link down");
    // It offers every offload, so a guest that probed it fits any tap.
    for b in OFFLOADS {
        assert_ne!(dev.avail_features() & bit(b), 0);
    }
    let mem = test_mem();
    let mut guest = Guest::start(&mem, &mut dev, true);
    // A guest that sends on a link that is down: no worker takes the
    // frame (a spare slot runs none), none arrives either.
    guest.queue_tx(&packet(&test_frame(1, 60)), 1);
    guest.kick_tx();
    guest.post_rx(4, 2048);
    guest.kick_rx();
    assert!(guest.next_packet(Duration::from_millis(50)).is_none());
    assert_eq!(guest.tx.used_idx(), 0, "nothing took the frame");
    dev.reset();
}

#[test]
fn bad_configurations_and_tap_names_are_refused() {
    for mac in [[0x01, 0, 0, 0, 0, 1], [0xff; 6], [0; 6]] {
        assert!(matches!(
            NetDevice::new(None, NetConfig { mac, ..CONFIG }),
            Err(NetError::InvalidMac(m)) if m == mac
        ));
    }
    let err = NetDevice::new(None, NetConfig { mtu: 67, ..CONFIG })
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "MTU 67 is below the minimum of 68");
    for name in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-bytes-xx"] {
        assert!(
            matches!(tap::check_name(name), Err(NetError::InvalidTapName { .. })),
            "{name:?}"
        );
    }
    assert!(tap::check_name("fifteen-bytes-x").is_ok());
    assert_eq!(format_mac(&GUEST_MAC), "52:54:00:12:34:56");
}

#[test]
fn only_existing_taps_are_opened() {
    in_fresh_netns(|| {
        let err = Tap::open("vmrun-none0").unwrap_err();
        assert!(matches!(err, NetError::NoSuchTap(_)), "{err}");
        // Nothing was made by trying.
        assert!(matches!(
            Tap::open("vmrun-none0"),
            Err(NetError::NoSuchTap(_))
        ));
        // A tap in use by another device is refused, not shared.
        let (_tap, _wire) = test_tap();
        let err = Tap::open(TAP_NAME).unwrap_err();
        assert!(
            matches!(
                err,
                NetError::Ioctl {
                    op: "TUNSETIFF",
                    ..
                }
            ),
            "{err}"
        );
    });
}

#[test]
fn a_socket_pair_stands_in_for_a_tap() {
    let (tap, _wire) = test_pair();
    assert_eq!(tap.name(), "pair");
    assert_eq!(
        tap.accepted_offloads(),
        super::super::header::ALL_TUN_OFFLOADS
    );
    tap.set_offloads(0).unwrap();
}
