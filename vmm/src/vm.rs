//! A running microVM: KVM VM, guest memory, devices and vCPU threads, and the
//! events the host program waits on.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::path::Path;

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_irqchip, kvm_pit_config, kvm_userspace_memory_region,
    CpuId, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VmFd};
use linux_loader::cmdline::Cmdline;
use vm_memory::{GuestMemory as _, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::boot::{self, cmdline};
use crate::compat::CompatProfile;
use crate::config::{ConfigError, VmConfig};
use crate::console::{ConsoleEvent, ConsoleSink};
use crate::cpu::{Vcpu, VcpuError};
use crate::devices::i8042::{self, I8042};
use crate::devices::serial::{self, SavedSerial, SerialDevice, SerialSnapshot};
use crate::devices::virtio::{self, Transports, VirtioError};
use crate::devices::{Bus, BusError, IrqLine};
use crate::memory::{self, GuestMemory};
use crate::seccomp::ThreadKind;
use crate::snapshot::state::{SnapshotInputs, SnapshotMeta, SnapshotState, VmKvmState};
use crate::snapshot::{self, SnapshotError};

/// KVM's TSS needs three pages somewhere the guest never uses.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
const KVM_PIT_SPEAKER_DUMMY: u32 = 1;

/// Why the guest stopped running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest pulsed the i8042 reset line: a reboot, poweroff or panic.
    Reset,
    /// A vCPU halted with interrupts off.
    Halted { vcpu: u8 },
    /// A vCPU triple-faulted.
    TripleFault { vcpu: u8 },
    /// KVM reported a system event (shutdown, reset, crash).
    SystemEvent { vcpu: u8, kind: u32 },
    /// KVM could not enter the guest.
    FailEntry { vcpu: u8, reason: u64, cpu: u32 },
    /// KVM could not emulate an instruction.
    InternalError { vcpu: u8, suberror: u32, rip: u64 },
    /// KVM_RUN itself failed.
    RunFailed { vcpu: u8, errno: i32 },
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reset => write!(f, "guest reset"),
            Self::Halted { vcpu } => write!(f, "vCPU {vcpu} halted with interrupts off"),
            Self::TripleFault { vcpu } => write!(f, "vCPU {vcpu} triple-faulted"),
            Self::SystemEvent { vcpu, kind } => {
                write!(f, "vCPU {vcpu}: KVM system event {kind}")
            }
            Self::FailEntry { vcpu, reason, cpu } => write!(
                f,
                "vCPU {vcpu}: KVM entry failed (hardware reason {reason:#x} on host CPU {cpu})"
            ),
            Self::InternalError {
                vcpu,
                suberror,
                rip,
            } => write!(
                f,
                "vCPU {vcpu}: KVM internal error (suberror {suberror}) at RIP {rip:#x}: \
                 an instruction could not be emulated"
            ),
            Self::RunFailed { vcpu, errno } => write!(
                f,
                "vCPU {vcpu}: KVM_RUN failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

impl VmExit {
    /// Whether this is how a guest ends when asked to (reboot/poweroff).
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Reset)
    }
}

/// What the VM tells the host program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// Something recognised on the console.
    Console(ConsoleEvent),
    /// The guest stopped.
    Exited(VmExit),
}

/// Errors building or starting a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("invalid VM configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you allowed to use it?)")]
    OpenKvm(kvm_ioctls::Error),
    #[error("{op} failed: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    Memory {
        mib: u64,
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("guest memory region at {0:#x} has no host mapping")]
    MemoryMapping(u64),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Virtio(#[from] VirtioError),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("cannot start vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("snapshot memory: {0}")]
    SnapshotMemory(#[from] memory::MapError),
    #[error("restoring a device: {0}")]
    DeviceRestore(#[from] virtio_devices::mmio::RestoreError),
    #[error("restoring the serial port: {0}")]
    SerialRestore(#[from] serial::SerialRestoreError),
}

/// The kernel command line a VM built from `config` gets on this host.
pub fn kernel_cmdline(config: &VmConfig) -> Result<String, VmError> {
    let profile = CompatProfile::for_host(config.compat);
    let cmdline = build_cmdline(config, &profile, &virtio::plan(config))?;
    Ok(cmdline_text(&cmdline))
}

fn build_cmdline(
    config: &VmConfig,
    profile: &CompatProfile,
    slots: &[virtio::VirtioSlot],
) -> Result<Cmdline, VmError> {
    let devices: Vec<String> = slots
        .iter()
        .map(virtio::VirtioSlot::cmdline_entry)
        .collect();
    let mut extra = Vec::new();
    if config.template {
        extra.push(snapshot::TEMPLATE_FLAG.to_string());
    }
    // On a software-KVM host the guest boots with one vCPU online, since
    // 2-vCPU boots stall there (see guest-kernel/README.md); the agent
    // brings the others online before its ready line, so a snapshot holds
    // them all online.
    if profile.is_active() && config.vcpus > 1 {
        extra.push("maxcpus=1".to_string());
    }
    extra.extend(config.extra_cmdline.iter().cloned());
    Ok(cmdline::build(profile, &devices, &extra)?)
}

fn cmdline_text(cmdline: &Cmdline) -> String {
    cmdline
        .as_cstring()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Signal used to kick vCPU threads out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), VmError> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick).map_err(VmError::Signal);
    });
    result
}

/// A running microVM. Dropping it stops the vCPUs and frees everything.
pub struct Vm {
    events: Receiver<VmEvent>,
    stop: Arc<AtomicBool>,
    vcpus: Vec<JoinHandle<Vcpu>>,
    /// What [`Vm::run`] still has to start.
    pending: Option<PendingStart>,
    cmdline: String,
    restored: bool,
    /// The host profile the VM runs with (a snapshot records the CPUID it
    /// implies).
    profile: CompatProfile,
    serial: Arc<Mutex<dyn SavedSerial>>,
    transports: Transports,
    kvm: Kvm,
    // Kept for the VM's lifetime: the fds own the VM and its memory.
    vm: VmFd,
    mem: GuestMemory,
}

/// A created VM's vCPUs and devices, started by [`Vm::run`].
struct PendingStart {
    vcpus: Vec<Vcpu>,
    event_tx: Sender<VmEvent>,
    seccomp: bool,
    /// For a restored VM: its devices resume, and those at these indexes
    /// were bound at restore (the guest is told their configuration
    /// changed).
    resume: Option<Vec<usize>>,
}

/// The parts of a VM before its vCPUs run.
struct Parts {
    kvm: Kvm,
    vm: VmFd,
    mem: GuestMemory,
    events: Receiver<VmEvent>,
    event_tx: Sender<VmEvent>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<dyn SavedSerial>>,
    transports: Transports,
    supported_cpuid: CpuId,
    profile: CompatProfile,
}

fn kvm_op(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

impl Vm {
    /// Builds the VM described by `config` and starts its vCPUs: restored
    /// from a snapshot where `config.snapshot` finds one that fits (see
    /// [`snapshot::select`]), booted otherwise. Guest console output goes
    /// to `console`.
    pub fn start<W: Write + Send + 'static>(config: &VmConfig, console: W) -> Result<Vm, VmError> {
        let mut vm = Self::create(config, console)?;
        vm.run()?;
        Ok(vm)
    }

    /// Builds the VM described by `config` (restored or booted, as
    /// [`Vm::start`]) without running it: every file, device and socket is
    /// open, and no thread has started, so the process can still confine
    /// itself (see [`crate::jail`]) before [`Vm::run`].
    pub fn create<W: Write + Send + 'static>(config: &VmConfig, console: W) -> Result<Vm, VmError> {
        config.validate()?;
        if config.seccomp {
            virtio_devices::set_worker_confinement(crate::seccomp::confine_worker);
        } else {
            tracing::warn!(
                "seccomp is OFF: the VMM's threads run unconfined (a debugging switch only)"
            );
        }
        if let Some(netns) = config.netns.as_deref().filter(|_| !config.nets.is_empty()) {
            crate::netns::enter(netns)?;
        }
        match snapshot::select(config)? {
            Some(loaded) => Self::restore(config, loaded, console),
            None => Self::boot(config, console),
        }
    }

    /// Creates the KVM VM, its memory and its devices.
    fn build<W: Write + Send + 'static>(
        config: &VmConfig,
        mem: GuestMemory,
        console: W,
        serial_state: Option<&SerialSnapshot>,
        slots: &[virtio::VirtioSlot],
    ) -> Result<Parts, VmError> {
        let profile = CompatProfile::for_host(config.compat);
        if profile.is_active() {
            tracing::info!("software KVM host: applying the kvm_pvm compatibility profile");
        }
        install_kick_handler()?;
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let vm = kvm.create_vm().map_err(kvm_op("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_op("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip().map_err(kvm_op("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_op("KVM_CREATE_PIT2"))?;
        register_memory(&vm, &mem)?;

        let (event_tx, events) = channel();
        let (pio, serial) = legacy_devices(&vm, console, &event_tx, serial_state)?;
        let mut mmio = Bus::default();
        let transports = virtio::attach(&vm, &mem, slots, &mut mmio)?;
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_op("KVM_GET_SUPPORTED_CPUID"))?;
        Ok(Parts {
            kvm,
            vm,
            mem,
            events,
            event_tx,
            pio: Arc::new(pio),
            mmio: Arc::new(mmio),
            serial,
            transports,
            supported_cpuid,
            profile,
        })
    }

    /// Boots the kernel.
    fn boot<W: Write + Send + 'static>(config: &VmConfig, console: W) -> Result<Vm, VmError> {
        let mem = memory::create_guest_memory(config.memory_bytes()).map_err(|source| {
            VmError::Memory {
                mib: config.memory_mib,
                source,
            }
        })?;
        let slots = virtio::plan(config);
        let parts = Self::build(config, mem, console, None, &slots)?;
        let mem = &parts.mem;
        let kernel = boot::load_kernel(mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(mem, path)?),
            None => None,
        };
        let cmdline = build_cmdline(config, &parts.profile, &slots)?;
        boot::write_boot_info(
            mem,
            &kernel,
            &cmdline,
            initrd,
            config.vcpus,
            config.memory_bytes(),
        )?;
        let vcpus = (0..config.vcpus)
            .map(|id| {
                Vcpu::new(
                    &parts.vm,
                    &parts.supported_cpuid,
                    id,
                    config.vcpus,
                    &parts.profile,
                    mem,
                    kernel.entry,
                    (parts.pio.clone(), parts.mmio.clone()),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pending = PendingStart {
            vcpus,
            event_tx: parts.event_tx.clone(),
            seccomp: config.seccomp,
            resume: None,
        };
        Ok(Self::assemble(parts, pending, cmdline_text(&cmdline)))
    }

    /// Restores the snapshot `loaded`, bound to `config`'s vsock socket,
    /// shares, disks and taps.
    fn restore<W: Write + Send + 'static>(
        config: &VmConfig,
        loaded: snapshot::LoadedSnapshot,
        console: W,
    ) -> Result<Vm, VmError> {
        let started = Instant::now();
        let state = loaded.state;
        let mem = memory::map_snapshot_memory(loaded.memory, &state.memory)?;
        let mut slot_config = config.clone();
        slot_config.shares = snapshot::slot_shares(config, &loaded.dir);
        slot_config.disks = snapshot::slot_disks(config, &loaded.dir);
        let slots = virtio::plan_with_nets(
            &slot_config,
            snapshot::slot_nets(&config.nets_with_rate_limits()),
        );
        let parts = Self::build(config, mem, console, Some(&state.serial), &slots)?;

        let here = vcpu0_cpuid(&parts.supported_cpuid, config.vcpus, &parts.profile);
        if let Some(leaf) = first_difference(&state.meta.host_cpuid, &here) {
            return Err(SnapshotError::Mismatch {
                what: "host CPU features (CPUID)",
                snapshot: leaf.0,
                wanted: leaf.1,
            }
            .into());
        }
        if parts.transports.len() != state.virtio.len() {
            return Err(SnapshotError::Mismatch {
                what: "device count",
                snapshot: state.virtio.len().to_string(),
                wanted: parts.transports.len().to_string(),
            }
            .into());
        }
        for (transport, saved) in parts.transports.iter().zip(&state.virtio) {
            lock(transport).0.restore_state(saved)?;
        }
        let vcpus = state
            .vcpus
            .iter()
            .map(|saved| Vcpu::restore(&parts.vm, saved, (parts.pio.clone(), parts.mmio.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        restore_vm_state(&parts.vm, &state.vm)?;
        // Devices start only now: what they signal the guest first (the
        // vsock transport reset) must not be overwritten by the saved
        // state of the interrupt controllers.
        // The guest probed the disk slots empty and the network slots
        // down: on a configuration change it re-reads the capacity of the
        // disks and the link status of the interfaces now bound.
        let mut disks = 0;
        let mut bound = Vec::new();
        for (index, slot) in slots.iter().enumerate() {
            let is_bound = match slot.kind {
                virtio::VirtioKind::Block(_) => {
                    disks += 1;
                    disks <= config.disks.len()
                }
                virtio::VirtioKind::Net(_) => true,
                _ => false,
            };
            if is_bound {
                bound.push(index);
            }
        }
        tracing::info!(
            snapshot = %loaded.dir.display(),
            "loaded the VM in {:.3} s",
            started.elapsed().as_secs_f64()
        );
        let pending = PendingStart {
            vcpus,
            event_tx: parts.event_tx.clone(),
            seccomp: config.seccomp,
            resume: Some(bound),
        };
        Ok(Self::assemble(parts, pending, state.meta.cmdline))
    }

    fn assemble(parts: Parts, pending: PendingStart, cmdline: String) -> Vm {
        Vm {
            events: parts.events,
            stop: Arc::new(AtomicBool::new(false)),
            vcpus: Vec::new(),
            restored: pending.resume.is_some(),
            pending: Some(pending),
            cmdline,
            profile: parts.profile,
            serial: parts.serial,
            transports: parts.transports,
            kvm: parts.kvm,
            vm: parts.vm,
            mem: parts.mem,
        }
    }

    /// Runs a VM made by [`Vm::create`]: starts its devices (restored ones
    /// resume) and a thread per vCPU, each confined by the vCPU seccomp
    /// filter (if the configuration says so) before it runs guest code.
    pub fn run(&mut self) -> Result<(), VmError> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        if let Some(bound) = pending.resume {
            // Devices start only now: what they signal the guest first (the
            // vsock transport reset) must not be overwritten by the saved
            // state of the interrupt controllers.
            for transport in &self.transports {
                lock(transport).0.resume()?;
            }
            for transport in bound.iter().filter_map(|&i| self.transports.get(i)) {
                lock(transport).0.config_changed();
            }
        }
        let seccomp = pending.seccomp;
        for vcpu in pending.vcpus {
            let stop = self.stop.clone();
            let events = pending.event_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id()))
                .spawn(move || {
                    if seccomp {
                        if let Err(e) = crate::seccomp::confine_current_thread(ThreadKind::Vcpu) {
                            // Never run guest code unconfined.
                            tracing::error!("cannot confine vCPU {}: {e}", vcpu.id());
                            std::process::abort();
                        }
                    }
                    vcpu.run(&stop, &events)
                })
                .map_err(VmError::Thread)?;
            self.vcpus.push(handle);
        }
        Ok(())
    }

    /// The kernel command line the guest was given.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Whether the VM was restored from a snapshot (rather than booted).
    pub fn restored(&self) -> bool {
        self.restored
    }

    /// Waits for the next event, at most until `deadline`. `None` means
    /// the deadline passed.
    pub fn next_event(&self, deadline: Option<Instant>) -> Option<VmEvent> {
        match deadline {
            None => self.events.recv().ok(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                self.events.recv_timeout(left).ok()
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_event(&self) -> Option<VmEvent> {
        self.events.try_recv().ok()
    }

    /// Stops every vCPU and waits for their threads; returns the vCPUs.
    fn stop_vcpus(&mut self) -> Vec<Vcpu> {
        self.stop.store(true, Ordering::Release);
        let mut stopped = Vec::with_capacity(self.vcpus.len());
        for handle in self.vcpus.drain(..) {
            // A vCPU blocked in KVM_RUN (e.g. an idle guest) only returns
            // when signalled; keep kicking until the thread is gone.
            while !handle.is_finished() {
                let _ = handle.kill(kick_signal());
                std::thread::sleep(Duration::from_millis(5));
            }
            match handle.join() {
                Ok(vcpu) => stopped.push(vcpu),
                Err(_) => tracing::error!("a vCPU thread panicked"),
            }
        }
        stopped
    }

    /// Stops every vCPU and waits for their threads.
    pub fn stop(&mut self) {
        self.stop_vcpus();
    }

    /// Pauses the VM for good and saves it in `dir` (which must exist):
    /// the state file and the memory file. `inputs` says what it was made
    /// from.
    pub fn snapshot(mut self, dir: &Path, inputs: SnapshotInputs) -> Result<(), SnapshotError> {
        let count = self.vcpus.len();
        let mut vcpus = self.stop_vcpus();
        if vcpus.len() != count {
            return Err(SnapshotError::Guest("lost a vCPU thread".into()));
        }
        let msr_indexes = self
            .kvm
            .get_msr_index_list()
            .map_err(|e| SnapshotError::Guest(format!("KVM_GET_MSR_INDEX_LIST: {e}")))?
            .as_slice()
            .to_vec();
        let vcpu_err = |e: VcpuError| SnapshotError::Guest(e.to_string());
        let mut vcpu_states = Vec::with_capacity(count);
        for vcpu in &mut vcpus {
            vcpu.quiesce().map_err(vcpu_err)?;
            vcpu_states.push(vcpu.save_state(&msr_indexes).map_err(vcpu_err)?);
        }
        let supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| SnapshotError::Guest(format!("KVM_GET_SUPPORTED_CPUID: {e}")))?;
        let vcpu_count = u8::try_from(count).unwrap_or(u8::MAX);
        let host_cpuid = vcpu0_cpuid(&supported, vcpu_count, &self.profile);
        let vm_state = save_vm_state(&self.vm)?;
        let virtio = self
            .transports
            .iter()
            .map(|t| lock(t).0.save_state())
            .collect();
        let serial = lock(&self.serial).snapshot();
        let (state_path, memory_path) = snapshot::file::paths(dir);
        let memory = snapshot::file::write_memory(&memory_path, &self.mem)?;
        let state = SnapshotState {
            meta: SnapshotMeta {
                inputs,
                host_cpuid,
                cmdline: self.cmdline.clone(),
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            },
            vcpus: vcpu_states,
            vm: vm_state,
            serial,
            virtio,
            memory,
        };
        snapshot::file::write_state(&state_path, &state)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The CPUID a new vCPU 0 gets here: what the fit check of a restore
/// compares with the snapshot's.
fn vcpu0_cpuid(supported: &CpuId, count: u8, profile: &CompatProfile) -> Vec<kvm_cpuid_entry2> {
    let mut cpuid = supported.clone();
    crate::cpu::cpuid::filter(&mut cpuid, 0, count, profile);
    cpuid.as_slice().to_vec()
}

/// The first CPUID leaf that differs, as (snapshot, here) descriptions.
fn first_difference(
    saved: &[kvm_cpuid_entry2],
    here: &[kvm_cpuid_entry2],
) -> Option<(String, String)> {
    let show = |e: Option<&kvm_cpuid_entry2>| match e {
        Some(e) => format!(
            "leaf {:#x}.{}: {:08x} {:08x} {:08x} {:08x}",
            e.function, e.index, e.eax, e.ebx, e.ecx, e.edx
        ),
        None => "absent".to_string(),
    };
    let same = |a: &kvm_cpuid_entry2, b: &kvm_cpuid_entry2| {
        (a.function, a.index, a.flags, a.eax, a.ebx, a.ecx, a.edx)
            == (b.function, b.index, b.flags, b.eax, b.ebx, b.ecx, b.edx)
    };
    (0..saved.len().max(here.len())).find_map(|i| {
        let (a, b) = (saved.get(i), here.get(i));
        match (a, b) {
            (Some(a), Some(b)) if same(a, b) => None,
            _ => Some((show(a), show(b))),
        }
    })
}

const IRQCHIP_PIC_MASTER: u32 = 0;
const IRQCHIP_PIC_SLAVE: u32 = 1;
const IRQCHIP_IOAPIC: u32 = 2;

fn get_irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, SnapshotError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(|e| SnapshotError::Guest(format!("KVM_GET_IRQCHIP {chip_id}: {e}")))?;
    Ok(chip)
}

fn save_vm_state(vm: &VmFd) -> Result<VmKvmState, SnapshotError> {
    let err = |op: &str, e: kvm_ioctls::Error| SnapshotError::Guest(format!("{op}: {e}"));
    Ok(VmKvmState {
        pit: vm.get_pit2().map_err(|e| err("KVM_GET_PIT2", e))?,
        clock: vm.get_clock().map_err(|e| err("KVM_GET_CLOCK", e))?,
        pic_master: get_irqchip(vm, IRQCHIP_PIC_MASTER)?,
        pic_slave: get_irqchip(vm, IRQCHIP_PIC_SLAVE)?,
        ioapic: get_irqchip(vm, IRQCHIP_IOAPIC)?,
    })
}

fn restore_vm_state(vm: &VmFd, state: &VmKvmState) -> Result<(), VmError> {
    vm.set_pit2(&state.pit).map_err(kvm_op("KVM_SET_PIT2"))?;
    // The guest's clock carries on from the moment it was saved (flags
    // cleared: KVM_CLOCK_REALTIME would advance it by the wall time since
    // then); the agent sets the wall clock from the host.
    let clock = kvm_clock_data {
        flags: 0,
        ..state.clock
    };
    vm.set_clock(&clock).map_err(kvm_op("KVM_SET_CLOCK"))?;
    for chip in [&state.pic_master, &state.pic_slave, &state.ioapic] {
        vm.set_irqchip(chip).map_err(kvm_op("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

fn register_memory(vm: &VmFd, mem: &GuestMemory) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| VmError::MemoryMapping(region.start_addr().0))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which the Vm keeps
        // until after the VM fd is closed; slots do not overlap.
        unsafe { vm.set_user_memory_region(region) }.map_err(|source| VmError::Kvm {
            op: "KVM_SET_USER_MEMORY_REGION",
            source,
        })?;
    }
    Ok(())
}

/// The reset line of the i8042: tells the host program the guest is done.
struct ResetLine(Sender<VmEvent>);

impl vm_superio::Trigger for ResetLine {
    type E = std::sync::mpsc::SendError<VmEvent>;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.send(VmEvent::Exited(VmExit::Reset))
    }
}

fn legacy_devices<W: Write + Send + 'static>(
    vm: &VmFd,
    console: W,
    events: &Sender<VmEvent>,
    saved: Option<&SerialSnapshot>,
) -> Result<(Bus, Arc<Mutex<dyn SavedSerial>>), VmError> {
    let irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
    vm.register_irqfd(&irq, serial::COM1_IRQ)
        .map_err(|source| VmError::Kvm {
            op: "KVM_IRQFD (serial)",
            source,
        })?;
    let sink = ConsoleSink::new(console, events.clone());
    let serial = match saved {
        Some(saved) => SerialDevice::restore(IrqLine(irq), sink, saved)?,
        None => SerialDevice::new(IrqLine(irq), sink),
    };
    let serial = Arc::new(Mutex::new(serial));
    let i8042 = I8042::new(ResetLine(events.clone()));

    let mut pio = Bus::default();
    pio.insert(serial::COM1_PORT, serial::PORT_COUNT, serial.clone())?;
    pio.insert(
        i8042::I8042_DATA_PORT,
        i8042::PORT_COUNT,
        Arc::new(Mutex::new(i8042)),
    )?;
    Ok((pio, serial))
}
