//! A running microVM: KVM VM, guest memory, devices and vCPU threads, and the
//! events the host program waits on.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
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
use crate::devices::serial::{self, SerialDevice};
use crate::devices::virtio::{self, VirtioError};
use crate::devices::{Bus, BusError, IrqLine};
use crate::memory::{self, GuestMemory};

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
    Ok(cmdline::build(profile, &devices, &config.extra_cmdline)?)
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
    vcpus: Vec<JoinHandle<()>>,
    cmdline: String,
    // Kept for the VM's lifetime: the fds own the VM and its memory.
    _vm: VmFd,
    _mem: GuestMemory,
}

impl Vm {
    /// Builds the VM described by `config` and starts its vCPUs. Guest
    /// console output goes to `console`.
    pub fn start<W: Write + Send + 'static>(config: &VmConfig, console: W) -> Result<Vm, VmError> {
        config.validate()?;
        let profile = CompatProfile::for_host(config.compat);
        if profile.is_active() {
            tracing::info!("software KVM host: applying the kvm_pvm compatibility profile");
        }
        install_kick_handler()?;

        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let kvm_op = |op| move |source| VmError::Kvm { op, source };
        let vm = kvm.create_vm().map_err(kvm_op("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm_op("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip().map_err(kvm_op("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_op("KVM_CREATE_PIT2"))?;

        let mem = memory::create_guest_memory(config.memory_bytes()).map_err(|source| {
            VmError::Memory {
                mib: config.memory_mib,
                source,
            }
        })?;
        register_memory(&vm, &mem)?;

        let kernel = boot::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(boot::load_initrd(&mem, path)?),
            None => None,
        };

        let (event_tx, events) = channel();
        let pio = Arc::new(legacy_devices(&vm, console, &event_tx)?);
        let slots = virtio::plan(config);
        let mut mmio = Bus::default();
        virtio::attach(&vm, &mem, &slots, &mut mmio)?;
        let mmio = Arc::new(mmio);

        let cmdline = build_cmdline(config, &profile, &slots)?;
        boot::write_boot_info(
            &mem,
            &kernel,
            &cmdline,
            initrd,
            config.vcpus,
            config.memory_bytes(),
        )?;

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_op("KVM_GET_SUPPORTED_CPUID"))?;
        let vcpus = (0..config.vcpus)
            .map(|id| {
                Vcpu::new(
                    &vm,
                    &supported,
                    id,
                    config.vcpus,
                    &profile,
                    &mem,
                    kernel.entry,
                    (pio.clone(), mmio.clone()),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;

        let stop = Arc::new(AtomicBool::new(false));
        let mut vm = Vm {
            events,
            stop: stop.clone(),
            vcpus: Vec::new(),
            cmdline: cmdline_text(&cmdline),
            _vm: vm,
            _mem: mem,
        };
        for vcpu in vcpus {
            let stop = stop.clone();
            let events = event_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{}", vcpu.id()))
                .spawn(move || vcpu.run(&stop, &events))
                .map_err(VmError::Thread)?;
            vm.vcpus.push(handle);
        }
        Ok(vm)
    }

    /// The kernel command line the guest was given.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
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

    /// Stops every vCPU and waits for their threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for handle in self.vcpus.drain(..) {
            // A vCPU blocked in KVM_RUN (e.g. an idle guest) only returns
            // when signalled; keep kicking until the thread is gone.
            while !handle.is_finished() {
                let _ = handle.kill(kick_signal());
                std::thread::sleep(Duration::from_millis(5));
            }
            if handle.join().is_err() {
                tracing::error!("a vCPU thread panicked");
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
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
) -> Result<Bus, VmError> {
    let irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
    vm.register_irqfd(&irq, serial::COM1_IRQ)
        .map_err(|source| VmError::Kvm {
            op: "KVM_IRQFD (serial)",
            source,
        })?;
    let serial = SerialDevice::new(IrqLine(irq), ConsoleSink::new(console, events.clone()));
    let i8042 = I8042::new(ResetLine(events.clone()));

    let mut pio = Bus::default();
    pio.insert(
        serial::COM1_PORT,
        serial::PORT_COUNT,
        Arc::new(Mutex::new(serial)),
    )?;
    pio.insert(
        i8042::I8042_DATA_PORT,
        i8042::PORT_COUNT,
        Arc::new(Mutex::new(i8042)),
    )?;
    Ok(pio)
}
