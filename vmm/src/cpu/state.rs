//! A vCPU's complete KVM state, read from a paused vCPU and written to a
//! fresh one: what a snapshot keeps of each vCPU.
//!
//! What `kvm_pvm` (software KVM) supports was found by snapshotting and
//! restoring guests on such a host: every ioctl used here works there,
//! except that some MSRs of `KVM_GET_MSR_INDEX_LIST` cannot be read; those
//! are left out (see [`readable_msrs`]) as Firecracker does on hardware.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::VcpuError;

/// Largest CPUID table read back from a vCPU.
const MAX_CPUID_ENTRIES: usize = kvm_bindings::KVM_MAX_CPUID_ENTRIES;

/// Everything KVM keeps for one vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub id: u8,
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub msrs: Vec<kvm_msr_entry>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// FPU, SSE and extended state; also covers what KVM_GET_FPU returns.
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
    /// The guest TSC frequency, if KVM reports it.
    pub tsc_khz: Option<u32>,
}

fn kvm(id: u8, op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Kvm { id, op, source }
}

/// Of `candidates` (KVM_GET_MSR_INDEX_LIST), the MSRs this vCPU lets us
/// read, with their values. KVM stops a KVM_GET_MSRS batch at the first MSR
/// it cannot read and returns how many it read before it: that one is
/// dropped and the rest retried.
pub fn readable_msrs(
    fd: &VcpuFd,
    id: u8,
    candidates: &[u32],
) -> Result<Vec<kvm_msr_entry>, VcpuError> {
    let mut read = Vec::with_capacity(candidates.len());
    let mut rest = candidates;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs =
            Msrs::from_entries(&entries).map_err(|source| VcpuError::MsrList { id, source })?;
        let n = fd.get_msrs(&mut msrs).map_err(kvm(id, "KVM_GET_MSRS"))?;
        read.extend_from_slice(&msrs.as_slice()[..n.min(rest.len())]);
        if n < rest.len() {
            tracing::debug!(vcpu = id, msr = rest[n], "MSR not readable, left out");
        }
        rest = rest.get(n + 1..).unwrap_or_default();
    }
    Ok(read)
}

impl VcpuState {
    /// Reads the state of a vCPU that is not running. Any port or MMIO
    /// access it was in must have been completed (see
    /// [`Vcpu::quiesce`](super::Vcpu::quiesce)).
    pub fn save(fd: &VcpuFd, id: u8, msr_indexes: &[u32]) -> Result<Self, VcpuError> {
        let op = |name| kvm(id, name);
        // Events and MP state first: reading them does not change them, but
        // they describe what the registers below are in the middle of.
        let mp_state = fd.get_mp_state().map_err(op("KVM_GET_MP_STATE"))?;
        let events = fd.get_vcpu_events().map_err(op("KVM_GET_VCPU_EVENTS"))?;
        let regs = fd.get_regs().map_err(op("KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(op("KVM_GET_SREGS"))?;
        let xsave = fd.get_xsave().map_err(op("KVM_GET_XSAVE"))?;
        let xcrs = fd.get_xcrs().map_err(op("KVM_GET_XCRS"))?;
        let debug_regs = fd.get_debug_regs().map_err(op("KVM_GET_DEBUGREGS"))?;
        let lapic = fd.get_lapic().map_err(op("KVM_GET_LAPIC"))?;
        let cpuid = fd
            .get_cpuid2(MAX_CPUID_ENTRIES)
            .map_err(op("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec();
        let msrs = readable_msrs(fd, id, msr_indexes)?;
        let tsc_khz = fd.get_tsc_khz().ok();
        Ok(Self {
            id,
            cpuid,
            msrs,
            regs,
            sregs,
            xsave,
            xcrs,
            debug_regs,
            lapic,
            mp_state,
            events,
            tsc_khz,
        })
    }

    /// Writes the state into a freshly created vCPU. The order follows
    /// KVM's dependencies: CPUID before anything that checks features,
    /// special registers before the MSRs whose validity depends on mode,
    /// the LAPIC before pending events, and the TSC (an MSR) last but one.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), VcpuError> {
        let id = self.id;
        let op = |name| kvm(id, name);
        if let Some(khz) = self.tsc_khz {
            // Only needed when the host's TSC runs at another rate; hosts
            // without TSC scaling refuse, and the fit check has already
            // compared the rates.
            if fd.get_tsc_khz().ok() != Some(khz) {
                fd.set_tsc_khz(khz).map_err(op("KVM_SET_TSC_KHZ"))?;
            }
        }
        let cpuid =
            CpuId::from_entries(&self.cpuid).map_err(|source| VcpuError::MsrList { id, source })?;
        fd.set_cpuid2(&cpuid).map_err(op("KVM_SET_CPUID2"))?;
        fd.set_mp_state(self.mp_state)
            .map_err(op("KVM_SET_MP_STATE"))?;
        fd.set_sregs(&self.sregs).map_err(op("KVM_SET_SREGS"))?;
        fd.set_regs(&self.regs).map_err(op("KVM_SET_REGS"))?;
        // SAFETY: `xsave` came from KVM_GET_XSAVE of a vCPU with the same
        // CPUID (set just above), so its layout matches what KVM expects;
        // KVM validates the header itself.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(op("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&self.xcrs).map_err(op("KVM_SET_XCRS"))?;
        fd.set_debug_regs(&self.debug_regs)
            .map_err(op("KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&self.lapic).map_err(op("KVM_SET_LAPIC"))?;
        let msrs =
            Msrs::from_entries(&self.msrs).map_err(|source| VcpuError::MsrList { id, source })?;
        let set = fd.set_msrs(&msrs).map_err(op("KVM_SET_MSRS"))?;
        if set != self.msrs.len() {
            return Err(VcpuError::MsrRestore {
                id,
                index: self.msrs.get(set).map_or(0, |m| m.index),
            });
        }
        fd.set_vcpu_events(&self.events)
            .map_err(op("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}
