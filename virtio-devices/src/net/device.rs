//! The virtio-net [`VirtioDevice`]: identity, features, configuration
//! space (MAC, link status, MTU), rate limits and the worker thread.

use std::mem::offset_of;
use std::sync::Arc;

use tracing::debug;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    virtio_net_config, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::header::{offload_features, tun_offloads, ALL_TUN_OFFLOADS};
use super::worker::{Buffers, Limiters, NetWorker, WakeCount};
use super::{NetConfig, NetError, NetRateLimits, Tap, QUEUE_SIZE};
use crate::device::{exact_queues, read_config_bytes};
use crate::rate_limiter::{Clock, LimiterStore, ThrottleCount};
use crate::worker::Worker;
use crate::{ActivateError, GuestMemoryMmap, IrqTrigger, VirtioDevice};

const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];

/// What every net device offers, whatever its tap takes.
const BASE_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_MTU)
    | (1 << VIRTIO_NET_F_STATUS)
    | (1 << VIRTIO_NET_F_MRG_RXBUF);

/// The prefix of `struct virtio_net_config` the offered features make
/// valid: `mac`, `status`, `max_virtqueue_pairs` (1; no multiqueue) and
/// `mtu`.
const CONFIG_LEN: usize = offset_of!(virtio_net_config, mtu) + 2;

/// A virtio-net device on a tap, or on none.
pub struct NetDevice {
    tap: Option<Arc<Tap>>,
    config: NetConfig,
    avail_features: u64,
    acked_features: u64,
    /// The worker's buffers while no worker runs.
    buffers: Option<Buffers>,
    /// Tap to guest: lent to each worker and handed back when it stops.
    rx_limiter: LimiterStore,
    /// Guest to tap, likewise.
    tx_limiter: LimiterStore,
    wakeups: WakeCount,
    /// Whether the driver activated the device (until it resets it).
    active: bool,
    worker: Option<Worker<(Buffers, Limiters)>>,
}

impl NetDevice {
    /// A device on `tap`; with `None`, an interface whose link is down and
    /// whose frames go nowhere (a snapshot's spare slot, bound to a tap
    /// when a VM is restored). It offers the offloads the tap accepted;
    /// without a tap, every offload a current Linux tap takes, so that a
    /// guest that probed it can be resumed on such a tap. It is not rate
    /// limited (see [`with_rate_limits`](Self::with_rate_limits)).
    pub fn new(tap: Option<Tap>, config: NetConfig) -> Result<Self, NetError> {
        config.validate()?;
        let offloads = tap
            .as_ref()
            .map_or(ALL_TUN_OFFLOADS, Tap::accepted_offloads);
        Ok(NetDevice {
            tap: tap.map(Arc::new),
            config,
            avail_features: BASE_FEATURES | offload_features(offloads),
            acked_features: 0,
            // Made at the first activation with a tap: a spare slot never
            // needs them.
            buffers: None,
            rx_limiter: LimiterStore::unlimited(),
            tx_limiter: LimiterStore::unlimited(),
            wakeups: WakeCount::default(),
            active: false,
            worker: None,
        })
    }

    /// Limits what the device moves per second each way, timed by `clock`
    /// (a [`MonotonicClock`](crate::MonotonicClock) outside tests): a
    /// frame costs its Ethernet frame's bytes (the virtio-net header is
    /// not counted) and one operation. Creates the limiters' timers now.
    pub fn with_rate_limits(
        mut self,
        limits: NetRateLimits,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, NetError> {
        let store = |limit, direction| {
            LimiterStore::new(limit, clock.clone())
                .map_err(|source| NetError::RateLimiter { direction, source })
        };
        self.rx_limiter = store(limits.rx, "receive")?;
        self.tx_limiter = store(limits.tx, "transmit")?;
        Ok(self)
    }

    /// The rate limits.
    pub fn rate_limits(&self) -> NetRateLimits {
        NetRateLimits {
            rx: self.rx_limiter.limit(),
            tx: self.tx_limiter.limit(),
        }
    }

    /// How often the receive limiter has held a frame back.
    pub fn rx_throttle_count(&self) -> ThrottleCount {
        self.rx_limiter.throttle_count()
    }

    /// How often the transmit limiter has held a chain back.
    pub fn tx_throttle_count(&self) -> ThrottleCount {
        self.tx_limiter.throttle_count()
    }

    /// How often the worker has woken up, across activations.
    pub fn wake_count(&self) -> WakeCount {
        self.wakeups.clone()
    }

    /// The MAC address and MTU the guest is told.
    pub fn config(&self) -> NetConfig {
        self.config
    }

    /// The tap's name, if the device has one.
    pub fn tap_name(&self) -> Option<&str> {
        self.tap.as_deref().map(Tap::name)
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut space = [0u8; CONFIG_LEN];
        let status = if self.tap.is_some() {
            VIRTIO_NET_S_LINK_UP as u16
        } else {
            0
        };
        let fields: [(usize, &[u8]); 4] = [
            (offset_of!(virtio_net_config, mac), &self.config.mac),
            (offset_of!(virtio_net_config, status), &status.to_le_bytes()),
            (
                offset_of!(virtio_net_config, max_virtqueue_pairs),
                &1u16.to_le_bytes(),
            ),
            (
                offset_of!(virtio_net_config, mtu),
                &self.config.mtu.to_le_bytes(),
            ),
        ];
        for (offset, bytes) in fields {
            space[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        space
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR (not
        // offered); so is the rest.
        debug!(
            "virtio-net: ignoring config write at {offset:#x} ({} bytes)",
            data.len()
        );
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<IrqTrigger>,
        queues: Vec<Queue>,
        queue_events: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        if self.active {
            return Err(ActivateError::AlreadyActive);
        }
        let ([rxq, txq], [rx_evt, tx_evt]) = exact_queues::<2>(queues, queue_events)?;
        let Some(tap) = &self.tap else {
            // A spare slot: its link is down, so nothing ever arrives and
            // the guest sends nothing; a worker would only sit there, its
            // thread and buffers memory of every sandbox. Kicks the guest
            // makes anyway only count up in their eventfds.
            self.active = true;
            return Ok(());
        };
        // What the guest can receive: the tap checksums and segments
        // everything else before handing it over.
        let offloads = tun_offloads(self.acked_features);
        tap.set_offloads(offloads).map_err(|e| {
            ActivateError::Backend(format!(
                "tap {}: TUNSETOFFLOAD {offloads:#x}: {e}",
                tap.name()
            ))
        })?;
        // A worker that panicked kept its limiters and buffers: new ones.
        let rx = self.rx_limiter.lend().map_err(ActivateError::Worker)?;
        let tx = match self.tx_limiter.lend() {
            Ok(tx) => tx,
            Err(e) => {
                self.rx_limiter.give_back(Some(rx));
                return Err(ActivateError::Worker(e));
            }
        };
        let limiters = Limiters { rx, tx };
        let worker = NetWorker {
            mem,
            interrupt,
            rxq,
            txq,
            rx_evt,
            tx_evt,
            tap: Arc::clone(tap),
            acked: self.acked_features,
            wakeups: self.wakeups.clone(),
        };
        let buffers = self.buffers.take().unwrap_or_else(Buffers::new);
        let worker = Worker::spawn("virtio-net", move |kill| {
            worker.run(kill, buffers, limiters)
        })
        .map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        self.active = true;
        Ok(())
    }

    fn reset(&mut self) {
        self.active = false;
        if let Some(worker) = self.worker.take() {
            let (buffers, limiters) = worker.stop().unzip();
            self.buffers = buffers;
            let (rx, tx) = limiters.map(|l| (l.rx, l.tx)).unzip();
            self.rx_limiter.give_back(rx);
            self.tx_limiter.give_back(tx);
        }
    }
}
