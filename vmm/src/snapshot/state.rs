//! What a snapshot's state file holds: the VM's KVM state, every vCPU's,
//! every device's, and what the snapshot was made from.

use kvm_bindings::{kvm_clock_data, kvm_cpuid_entry2, kvm_irqchip, kvm_pit_state2};
use serde::{Deserialize, Serialize};
use virtio_devices::mmio::TransportState;

use crate::cpu::state::VcpuState;
use crate::devices::serial::SerialSnapshot;

/// Everything a restore needs besides guest memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotState {
    pub meta: SnapshotMeta,
    pub vcpus: Vec<VcpuState>,
    pub vm: VmKvmState,
    pub serial: SerialSnapshot,
    /// The virtio-mmio transports, in slot order.
    pub virtio: Vec<TransportState>,
    /// Guest RAM regions, in the order they follow each other in the
    /// memory file.
    pub memory: Vec<MemoryRegion>,
}

/// What the snapshot was made from; a restore must ask for the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInputs {
    /// [`VMM_BUILD`](super::VMM_BUILD) of the VMM that made it.
    pub vmm_version: String,
    pub vcpus: u8,
    pub memory_mib: u64,
    /// SHA-256 of the kernel image, hex.
    pub kernel_digest: String,
    /// SHA-256 of the initramfs, hex, if there was one.
    pub initrd_digest: Option<String>,
    /// The caller's extra kernel command-line words.
    pub extra_cmdline: Vec<String>,
    /// Whether the software-KVM compatibility profile was on.
    pub compat_profile: bool,
    /// virtio-fs devices the guest probed, tagged [`super::share_slot_tag`].
    pub share_slots: usize,
    /// Empty virtio-blk devices the guest probed.
    pub disk_slots: usize,
    /// virtio-net devices on no tap the guest probed.
    pub net_slots: usize,
}

/// [`SnapshotInputs`] plus facts about the host it was made on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub inputs: SnapshotInputs,
    /// The CPUID vCPU 0 got (KVM's supported CPUID, filtered): a host whose
    /// KVM offers other features must not resume this guest.
    pub host_cpuid: Vec<kvm_cpuid_entry2>,
    /// The kernel command line the guest booted with.
    pub cmdline: String,
    /// When it was made (seconds since the epoch).
    pub created_unix: u64,
}

/// The VM-wide KVM state.
///
/// On `kvm_pvm` every one of these ioctls works (measured: a snapshot made
/// and restored there), as QEMU's migration on the same hosts suggested.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmKvmState {
    pub pit: kvm_pit_state2,
    /// kvmclock: the guest's clock continues from here after a restore.
    pub clock: kvm_clock_data,
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
}

/// One guest RAM region and where its bytes are in the memory file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegion {
    pub guest_addr: u64,
    pub len: u64,
    pub file_offset: u64,
}
