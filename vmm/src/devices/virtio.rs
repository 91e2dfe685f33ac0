//! The VM's virtio-mmio devices: where each one lives (MMIO window, GSI),
//! how the guest learns about it (kernel command line), and their wiring to
//! KVM (irqfd, ioeventfd per queue, MMIO bus).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use virtio_devices::mmio::QUEUE_NOTIFY_OFFSET;
use virtio_devices::{
    kernel_cmdline_entry, BlockDevice, Bucket, Clock, FsConfig, FsDevice, IrqTrigger,
    MmioTransport, MonotonicClock, NetDevice, NetRateLimits, RateLimitError, RngDevice, Tap,
    VirtioDevice, VsockDevice, MMIO_WINDOW_SIZE,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Bus, BusDevice, BusError};
use crate::config::{Disk, NetConfig, RateLimit, SharedDir, VmConfig, GUEST_CID};
use crate::memory::{GuestMemory, VIRTIO_MMIO_START};

/// First GSI for virtio devices (0-4 are the PIT, keyboard, cascade, COM2, COM1).
const FIRST_IRQ: u32 = 5;

/// A device the VM will have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VirtioKind {
    Rng(RateLimit),
    Vsock {
        cid: u64,
        uds: PathBuf,
    },
    Fs(SharedDir),
    /// The disk with its rate limit resolved (its own or the VM's).
    Block(Disk),
    /// A network interface on a host tap, with its rate limits (a
    /// restored VM's are its own config's: limits are not in a snapshot).
    Net(NetConfig),
    /// Network slot `n` of a snapshot with no tap: link down, what the
    /// guest sends is dropped (see [`crate::snapshot::slot_nets`]).
    SpareNet(usize),
}

/// A device with its place in the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioSlot {
    pub kind: VirtioKind,
    pub base: u64,
    pub irq: u32,
}

impl VirtioSlot {
    /// The `virtio_mmio.device=` entry announcing it.
    pub fn cmdline_entry(&self) -> String {
        kernel_cmdline_entry(self.base, self.irq)
    }
}

/// Errors attaching devices.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("virtio-rng: {0}")]
    Rng(#[from] virtio_devices::RngError),
    #[error("virtio-vsock on {path}: {source}")]
    Vsock {
        path: PathBuf,
        source: virtio_devices::VsockError,
    },
    #[error("virtio-fs {tag:?} on {path}: {source}")]
    Fs {
        tag: String,
        path: PathBuf,
        source: virtio_devices::FsError,
    },
    #[error("virtio-blk on {path}: {source}")]
    Block {
        path: PathBuf,
        source: virtio_devices::BlockError,
    },
    #[error("virtio-net on tap {tap:?}: {source}")]
    Net {
        tap: String,
        source: virtio_devices::NetError,
    },
    #[error("cannot make a MAC address for tap {tap:?}: {source}")]
    RandomMac { tap: String, source: std::io::Error },
    #[error("the rate limit of {device}: {source}")]
    RateLimit {
        device: String,
        source: RateLimitError,
    },
    #[error("virtio-mmio transport: {0}")]
    Transport(#[from] virtio_devices::MmioError),
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("{op} for the virtio device at {base:#x}: {source}")]
    Kvm {
        op: &'static str,
        base: u64,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The devices `config` asks for, in a fixed order so that addresses and
/// IRQs (and so the command line) are the same for the same config. A
/// guest booted to be snapshotted gets the snapshot's spare network slots
/// instead of interfaces of its own.
pub fn plan(config: &VmConfig) -> Vec<VirtioSlot> {
    let nets = if config.template {
        crate::snapshot::slot_nets(&[])
    } else {
        config
            .nets_with_rate_limits()
            .into_iter()
            .map(VirtioKind::Net)
            .collect()
    };
    plan_with_nets(config, nets)
}

/// The devices of `config` with `nets` as its network devices (a restored
/// VM's: [`crate::snapshot::slot_nets`]).
pub fn plan_with_nets(config: &VmConfig, nets: Vec<VirtioKind>) -> Vec<VirtioSlot> {
    let mut kinds = vec![VirtioKind::Rng(config.rng_rate_limit)];
    if let Some(uds) = &config.vsock_uds {
        kinds.push(VirtioKind::Vsock {
            cid: GUEST_CID,
            uds: uds.clone(),
        });
    }
    kinds.extend(config.shares.iter().cloned().map(VirtioKind::Fs));
    kinds.extend(config.disks.iter().map(|disk| {
        VirtioKind::Block(Disk {
            rate_limit: Some(config.rate_limit_of(disk)),
            ..disk.clone()
        })
    }));
    kinds.extend(nets);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| VirtioSlot {
            kind,
            base: VIRTIO_MMIO_START + i as u64 * MMIO_WINDOW_SIZE,
            irq: FIRST_IRQ + i as u32,
        })
        .collect()
}

/// A transport on the MMIO bus.
pub struct MmioDevice(pub MmioTransport);

/// The transports of a VM, in slot order, for saving and restoring them.
pub type Transports = Vec<Arc<Mutex<MmioDevice>>>;

impl BusDevice for MmioDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.write(offset, data);
    }
}

/// The device crate's form of a configured rate limit (`device` names it
/// in the error; the configuration was validated, so there is none).
fn device_rate_limit(
    device: &str,
    limit: &RateLimit,
) -> Result<virtio_devices::RateLimit, VirtioError> {
    let bucket = |b: Option<vm_config::TokenBucket>| {
        b.map(|b| Bucket::new(b.rate, b.burst()))
            .transpose()
            .map_err(|source| VirtioError::RateLimit {
                device: device.to_string(),
                source,
            })
    };
    Ok(virtio_devices::RateLimit {
        bytes: bucket(limit.bytes)?,
        ops: bucket(limit.ops)?,
    })
}

/// Creates the planned devices and wires them to KVM and the MMIO bus.
pub fn attach(
    vm: &VmFd,
    mem: &GuestMemory,
    slots: &[VirtioSlot],
    bus: &mut Bus,
) -> Result<Transports, VirtioError> {
    let mut transports = Vec::with_capacity(slots.len());
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    for slot in slots {
        let device: Box<dyn VirtioDevice> = match &slot.kind {
            VirtioKind::Rng(limit) => Box::new(
                RngDevice::new()?
                    .with_rate_limit(device_rate_limit("virtio-rng", limit)?, clock.clone())?,
            ),
            VirtioKind::Vsock { cid, uds } => {
                Box::new(VsockDevice::new(*cid, uds.clone()).map_err(|source| {
                    VirtioError::Vsock {
                        path: uds.clone(),
                        source,
                    }
                })?)
            }
            VirtioKind::Fs(share) => {
                let config = FsConfig {
                    read_only: share.read_only,
                    max_inodes: share.max_inodes as usize,
                    max_handles: share.max_handles as usize,
                    ..FsConfig::default()
                };
                Box::new(
                    FsDevice::new(&share.tag, share.path.clone(), config).map_err(|source| {
                        VirtioError::Fs {
                            tag: share.tag.clone(),
                            path: share.path.clone(),
                            source,
                        }
                    })?,
                )
            }
            VirtioKind::Block(disk) => {
                let what = format!("disk {}", disk.path.display());
                let limit = device_rate_limit(&what, &disk.rate_limit.unwrap_or_default())?;
                Box::new(
                    BlockDevice::new(disk.path.clone(), disk.read_only)
                        .and_then(|dev| dev.with_rate_limit(limit, clock.clone()))
                        .map_err(|source| VirtioError::Block {
                            path: disk.path.clone(),
                            source,
                        })?,
                )
            }
            VirtioKind::Net(net) => Box::new(net_device(net, &clock)?),
            VirtioKind::SpareNet(slot) => Box::new(
                NetDevice::new(None, crate::snapshot::spare_net_config(*slot)).map_err(
                    |source| VirtioError::Net {
                        tap: format!("(none: spare slot {slot})"),
                        source,
                    },
                )?,
            ),
        };
        let kvm = |op| {
            move |source| VirtioError::Kvm {
                op,
                base: slot.base,
                source,
            }
        };
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VirtioError::EventFd)?;
        vm.register_irqfd(&irqfd, slot.irq)
            .map_err(kvm("KVM_IRQFD"))?;
        let transport = MmioTransport::new(mem.clone(), Arc::new(IrqTrigger::new(irqfd)), device)?;
        // Queue notifications go straight from KVM to the device's worker,
        // without a VM exit to a vCPU thread.
        let notify = IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET);
        for (index, event) in transport.queue_events().iter().enumerate() {
            vm.register_ioevent(event, &notify, index as u32)
                .map_err(kvm("KVM_IOEVENTFD"))?;
        }
        let device = Arc::new(Mutex::new(MmioDevice(transport)));
        bus.insert(slot.base, MMIO_WINDOW_SIZE, device.clone())?;
        transports.push(device);
    }
    Ok(transports)
}

/// A device on the tap `net` names, with its MAC or a random one and its
/// rate limits.
fn net_device(net: &NetConfig, clock: &Arc<dyn Clock>) -> Result<NetDevice, VirtioError> {
    let net_err = |source| VirtioError::Net {
        tap: net.tap.clone(),
        source,
    };
    let limits = NetRateLimits {
        rx: device_rate_limit(&format!("tap {} (receive)", net.tap), &net.rx_rate_limit)?,
        tx: device_rate_limit(&format!("tap {} (transmit)", net.tap), &net.tx_rate_limit)?,
    };
    let mac = match net.mac {
        Some(mac) => mac.0,
        None => random_mac().map_err(|source| VirtioError::RandomMac {
            tap: net.tap.clone(),
            source,
        })?,
    };
    let tap = if net.create {
        Tap::create(&net.tap)
    } else {
        Tap::open(&net.tap)
    }
    .map_err(net_err)?;
    let config = virtio_devices::NetConfig { mac, mtu: net.mtu };
    NetDevice::new(Some(tap), config)
        .and_then(|dev| dev.with_rate_limits(limits, clock.clone()))
        .map_err(net_err)
}

/// A random locally administered unicast MAC address (what Linux makes
/// for an interface that brings none).
fn random_mac() -> std::io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into `mac`.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n != mac.len() as isize {
        return Err(std::io::Error::other("getrandom returned too few bytes"));
    }
    mac[0] = (mac[0] & !0x01) | 0x02;
    Ok(mac)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn plan_is_stable_and_announces_each_device() {
        let config = VmConfig {
            vsock_uds: Some(PathBuf::from("/run/vm.sock")),
            ..VmConfig::default()
        };
        let slots = plan(&config);
        assert_eq!(slots.len(), 2);
        assert_eq!(
            slots[0].kind,
            VirtioKind::Rng(RateLimit::default_rng()),
            "the rng is limited by default"
        );
        assert_eq!(
            slots[1].cmdline_entry(),
            format!("virtio_mmio.device=4K@0x{:x}:6", VIRTIO_MMIO_START + 0x1000)
        );
        assert_eq!(plan(&config), slots);
        assert_eq!(plan(&VmConfig::default()).len(), 1);
    }

    fn net(tap: &str) -> NetConfig {
        NetConfig {
            tap: tap.into(),
            ..NetConfig::default()
        }
    }

    #[test]
    fn network_interfaces_come_last_and_snapshots_have_fixed_slots() {
        use crate::snapshot::{self, DISK_SLOTS, NET_SLOTS, SHARE_SLOTS};
        let config = VmConfig {
            vsock_uds: Some(PathBuf::from("/run/vm.sock")),
            disks: vec![Disk::new("/img", false)],
            nets: vec![net("tap0"), net("tap1")],
            ..VmConfig::default()
        };
        let kinds: Vec<VirtioKind> = plan(&config).into_iter().map(|s| s.kind).collect();
        assert!(
            matches!(&kinds[2], VirtioKind::Block(disk) if disk.path == config.disks[0].path),
            "{:?}",
            kinds[2]
        );
        assert_eq!(
            kinds[3..],
            [VirtioKind::Net(net("tap0")), VirtioKind::Net(net("tap1"))]
        );

        // The guest a snapshot is made of has spare network slots, a
        // restored VM the same layout with its taps in the first ones.
        let template = VmConfig {
            template: true,
            shares: snapshot::slot_shares(&VmConfig::default(), Path::new("/s")),
            disks: snapshot::slot_disks(&VmConfig::default(), Path::new("/s")),
            ..config.clone()
        };
        let saved = plan(&template);
        assert_eq!(saved.len(), 2 + SHARE_SLOTS + DISK_SLOTS + NET_SLOTS);
        assert!(saved.len() <= crate::config::MAX_VIRTIO_DEVICES);
        let spares: Vec<_> = (0..NET_SLOTS).map(VirtioKind::SpareNet).collect();
        assert_eq!(
            saved[saved.len() - NET_SLOTS..]
                .iter()
                .map(|s| s.kind.clone())
                .collect::<Vec<_>>(),
            spares
        );
        let one_net = VmConfig {
            nets: vec![net("tap0")],
            ..template.clone()
        };
        let restored = plan_with_nets(&one_net, snapshot::slot_nets(&one_net.nets));
        assert_eq!(restored.len(), saved.len());
        let tail: Vec<_> = restored[restored.len() - NET_SLOTS..]
            .iter()
            .map(|s| s.kind.clone())
            .collect();
        assert_eq!(
            tail,
            [VirtioKind::Net(net("tap0")), VirtioKind::SpareNet(1)]
        );
        for (a, b) in saved.iter().zip(&restored) {
            assert_eq!((a.base, a.irq), (b.base, b.irq));
        }
        let spare = snapshot::spare_net_config(1);
        assert_eq!(spare.mac, [0x02, 0x76, 0x6d, 0x72, 0, 1]);
        assert!(spare.validate().is_ok());
    }

    /// A network interface's limits come from its config, booted or
    /// restored (a snapshot holds none: the restored VM's config says).
    #[test]
    fn network_interfaces_keep_their_rate_limits_booted_and_restored() {
        use crate::snapshot;
        use vm_config::TokenBucket;
        let limited = NetConfig {
            rx_rate_limit: RateLimit {
                ops: Some(TokenBucket::per_second(1000)),
                bytes: None,
            },
            tx_rate_limit: RateLimit {
                bytes: Some(TokenBucket {
                    rate: 1 << 20,
                    burst: Some(1 << 21),
                }),
                ops: None,
            },
            ..net("tap0")
        };
        let config = VmConfig {
            vsock_uds: Some(PathBuf::from("/run/vm.sock")),
            nets: vec![limited.clone(), net("tap1")],
            ..VmConfig::default()
        };
        let nets = |slots: Vec<VirtioSlot>| -> Vec<NetConfig> {
            slots
                .into_iter()
                .filter_map(|slot| match slot.kind {
                    VirtioKind::Net(net) => Some(net),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(nets(plan(&config)), [limited.clone(), net("tap1")]);
        let restored = plan_with_nets(&config, snapshot::slot_nets(&config.nets));
        assert_eq!(nets(restored), [limited.clone(), net("tap1")]);
        // As the device crate has them.
        let tx = device_rate_limit("tap0", &limited.tx_rate_limit).unwrap();
        let bytes = tx.bytes.unwrap();
        assert_eq!((bytes.rate(), bytes.burst()), (1 << 20, 1 << 21));
        let rx = device_rate_limit("tap0", &limited.rx_rate_limit).unwrap();
        let ops = rx.ops.unwrap();
        assert_eq!((ops.rate(), ops.burst()), (1000, 1000));
        assert!(device_rate_limit("tap1", &net("tap1").rx_rate_limit)
            .unwrap()
            .is_unlimited());
    }

    #[test]
    fn random_macs_are_local_unicast_and_differ() {
        let a = random_mac().unwrap();
        let b = random_mac().unwrap();
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(a, b);
    }

    #[test]
    fn interfaces_get_their_own_rate_limits_or_the_vms_booted_and_restored() {
        let own = RateLimit {
            ops: Some(vm_config::TokenBucket::per_second(10)),
            bytes: None,
        };
        let default = RateLimit {
            bytes: Some(vm_config::TokenBucket::per_second(1 << 20)),
            ops: None,
        };
        let config = VmConfig {
            nets: vec![
                net("tap0"),
                NetConfig {
                    tx_rate_limit: own,
                    ..net("tap1")
                },
            ],
            net_rx_rate_limit: default,
            net_tx_rate_limit: default,
            ..VmConfig::default()
        };
        let limits = |slots: Vec<VirtioSlot>| -> Vec<(RateLimit, RateLimit)> {
            slots
                .into_iter()
                .filter_map(|slot| match slot.kind {
                    VirtioKind::Net(net) => Some((net.rx_rate_limit, net.tx_rate_limit)),
                    _ => None,
                })
                .collect()
        };
        let want = [(default, default), (default, own)];
        assert_eq!(limits(plan(&config)), want);
        let restored = plan_with_nets(
            &config,
            crate::snapshot::slot_nets(&config.nets_with_rate_limits()),
        );
        assert_eq!(limits(restored), want);
    }

    #[test]
    fn disks_get_their_own_rate_limit_or_the_vms() {
        let own = RateLimit {
            ops: Some(vm_config::TokenBucket::per_second(10)),
            bytes: None,
        };
        let default = RateLimit {
            bytes: Some(vm_config::TokenBucket {
                rate: 1 << 20,
                burst: Some(4 << 20),
            }),
            ops: None,
        };
        let config = VmConfig {
            disks: vec![
                Disk::new("/a.img", false),
                Disk {
                    rate_limit: Some(own),
                    ..Disk::new("/b.img", true)
                },
            ],
            disk_rate_limit: default,
            rng_rate_limit: RateLimit::UNLIMITED,
            ..VmConfig::default()
        };
        let limits: Vec<_> = plan(&config)
            .into_iter()
            .map(|slot| match slot.kind {
                VirtioKind::Block(disk) => disk.rate_limit,
                VirtioKind::Rng(limit) => Some(limit),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            limits,
            [Some(RateLimit::UNLIMITED), Some(default), Some(own)]
        );
        let device = device_rate_limit("d", &default).unwrap();
        let bytes = device.bytes.unwrap();
        assert_eq!((bytes.rate(), bytes.burst()), (1 << 20, 4 << 20));
        assert_eq!(device.ops, None);
        let zero = RateLimit {
            ops: Some(vm_config::TokenBucket::per_second(0)),
            bytes: None,
        };
        let err = device_rate_limit("disk /x", &zero).unwrap_err().to_string();
        assert!(err.contains("disk /x") && err.contains("rate"), "{err}");
    }

    /// The VM's configuration and the device crate default to the same caps
    /// (neither crate depends on the other).
    #[test]
    fn share_caps_default_alike() {
        let share = SharedDir::new("t", "/srv", false);
        assert_eq!(
            share.max_inodes as usize,
            virtio_devices::fs::DEFAULT_MAX_INODES
        );
        assert_eq!(
            share.max_handles as usize,
            virtio_devices::fs::DEFAULT_MAX_HANDLES
        );
    }
}
