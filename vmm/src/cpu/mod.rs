//! vCPUs: configuration from the boot state, and the run loop that serves
//! port and MMIO exits until the guest resets or the VMM stops it.

pub mod cpuid;
pub mod msr;
pub mod regs;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::boot::EntryPoint;
use crate::compat::CompatProfile;
use crate::devices::Bus;
use crate::memory::GuestMemory;
use crate::vm::{VmEvent, VmExit};
use state::VcpuState;

/// Errors creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU {id}: {op} failed: {source}")]
    Kvm {
        id: u8,
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {id}: KVM accepted {set} of {wanted} boot MSRs")]
    Msrs { id: u8, set: usize, wanted: usize },
    #[error("vCPU {id}: {0}", id = .1)]
    Regs(#[source] regs::RegsError, u8),
    #[error("vCPU {id}: cannot build the MSR list: {source:?}")]
    MsrList {
        id: u8,
        source: vmm_sys_util::fam::Error,
    },
    #[error("vCPU {id}: KVM refused to restore MSR {index:#x}")]
    MsrRestore { id: u8, index: u32 },
}

/// One configured vCPU, ready to run in its own thread.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
}

impl Vcpu {
    /// Creates vCPU `id` of `count` with CPUID, MSRs and the local APIC set
    /// up; the boot vCPU (id 0) also gets the entry point's registers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vm: &VmFd,
        supported_cpuid: &CpuId,
        id: u8,
        count: u8,
        profile: &CompatProfile,
        mem: &GuestMemory,
        entry: EntryPoint,
        buses: (Arc<Bus>, Arc<Bus>),
    ) -> Result<Self, VcpuError> {
        let kvm = |op| move |source| VcpuError::Kvm { id, op, source };
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm("KVM_CREATE_VCPU"))?;

        let mut cpuid = supported_cpuid.clone();
        cpuid::filter(&mut cpuid, id, count, profile);
        fd.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;

        let msrs = msr::boot_msrs_fam().map_err(|source| VcpuError::MsrList { id, source })?;
        let set = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        let wanted = msrs.as_slice().len();
        if set != wanted {
            return Err(VcpuError::Msrs { id, set, wanted });
        }

        let mut lapic = fd.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
        regs::setup_lint(&mut lapic);
        fd.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;

        if id == 0 {
            let mut sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
            regs::setup_sregs(mem, entry, &mut sregs).map_err(|e| VcpuError::Regs(e, id))?;
            fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
            fd.set_regs(&regs::boot_regs(entry))
                .map_err(kvm("KVM_SET_REGS"))?;
            fd.set_fpu(&regs::boot_fpu()).map_err(kvm("KVM_SET_FPU"))?;
        }
        Ok(Self {
            id,
            fd,
            pio: buses.0,
            mmio: buses.1,
        })
    }

    /// Creates vCPU `state.id` and gives it the saved state of a snapshot.
    pub fn restore(
        vm: &VmFd,
        state: &VcpuState,
        buses: (Arc<Bus>, Arc<Bus>),
    ) -> Result<Self, VcpuError> {
        let id = state.id;
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Kvm {
                id,
                op: "KVM_CREATE_VCPU",
                source,
            })?;
        state.restore(&fd)?;
        Ok(Self {
            id,
            fd,
            pio: buses.0,
            mmio: buses.1,
        })
    }

    /// The vCPU's index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Runs the guest until it resets or fails, or until `stop` is set (the
    /// VMM then interrupts KVM_RUN with a signal). The reason the guest
    /// stopped is sent on `events`. Returns the vCPU, so that a stopped VM
    /// can still be saved.
    pub fn run(mut self, stop: &AtomicBool, events: &Sender<VmEvent>) -> Self {
        let exit = self.run_until_exit(stop);
        if let Some(exit) = exit {
            // The receiver is gone only when the VM is being torn down.
            let _ = events.send(VmEvent::Exited(exit));
        }
        self
    }

    /// Completes the port or MMIO access the vCPU last exited for, without
    /// running guest code: KVM finishes an emulated access only on the next
    /// KVM_RUN, and with `immediate_exit` set that run returns at once.
    /// Until then the registers do not describe a resumable state.
    pub fn quiesce(&mut self) -> Result<(), VcpuError> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.fd.run().map(|_| ()).or_else(|e| {
            if e.errno() == libc::EINTR {
                Ok(())
            } else {
                Err(VcpuError::Kvm {
                    id: self.id,
                    op: "KVM_RUN (immediate exit)",
                    source: e,
                })
            }
        });
        self.fd.set_kvm_immediate_exit(0);
        result
    }

    /// Reads the state of this stopped and [quiesced](Self::quiesce) vCPU.
    pub fn save_state(&self, msr_indexes: &[u32]) -> Result<VcpuState, VcpuError> {
        VcpuState::save(&self.fd, self.id, msr_indexes)
    }

    fn run_until_exit(&mut self, stop: &AtomicBool) -> Option<VmExit> {
        let id = self.id;
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => self.pio.read(u64::from(port), data),
                Ok(VcpuExit::IoOut(port, data)) => self.pio.write(u64::from(port), data),
                Ok(VcpuExit::MmioRead(addr, data)) => self.mmio.read(addr, data),
                Ok(VcpuExit::MmioWrite(addr, data)) => self.mmio.write(addr, data),
                // With the in-kernel LAPIC, HLT only exits when the vCPU is
                // halted for good (interrupts off): nothing will wake it.
                Ok(VcpuExit::Hlt) => return Some(VmExit::Halted { vcpu: id }),
                Ok(VcpuExit::Shutdown) => return Some(VmExit::TripleFault { vcpu: id }),
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    return Some(VmExit::SystemEvent { vcpu: id, kind })
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return Some(VmExit::FailEntry {
                        vcpu: id,
                        reason,
                        cpu,
                    })
                }
                Ok(VcpuExit::InternalError) => {
                    // SAFETY: after a KVM_EXIT_INTERNAL_ERROR exit, KVM filled the
                    // `internal` member of the exit union.
                    let suberror =
                        unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
                    return Some(VmExit::InternalError {
                        vcpu: id,
                        suberror,
                        rip,
                    });
                }
                Ok(other) => {
                    tracing::warn!(vcpu = id, exit = ?other, "unexpected vCPU exit ignored");
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => {
                    return Some(VmExit::RunFailed {
                        vcpu: id,
                        errno: e.errno(),
                    })
                }
            }
        }
    }
}
