//! `vmrun boot`: boot (or restore) a microVM, stream its console, report how
//! far it got. With `--config FILE` this is the VMM process of a sandbox.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use vm_config::VmConfig;
use vmm::console::ConsoleEvent;
use vmm::jail::pid_namespace::Forked;
use vmm::{Vm, VmEvent, VmExit};
use vmrun_sandbox::SandboxDir;

use crate::{heap, supervisor, CliError, Result, VmArgs};

/// Kernel flag asking the agent to power off once ready.
const EXIT_WHEN_READY_FLAG: &str = "vmrun.exit_when_ready";

#[derive(Args)]
pub struct BootArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Build the VM from this JSON file (a `VmConfig`, as the sandbox layer
    /// writes it) instead of the VM flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["VmArgs", "vsock"])]
    config: Option<PathBuf>,
    /// Shut the guest down as soon as the agent is ready, and exit 0 if it
    /// got there.
    #[arg(long)]
    exit_when_ready: bool,
    /// Give up after this many seconds (default: 600 with --exit-when-ready,
    /// otherwise none).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Put the host end of the guest's vsock (hybrid vsock: a Unix socket)
    /// at PATH instead of a private runtime directory; for a supervisor
    /// such as the containerd shim that talks to the agent itself.
    #[arg(long, value_name = "PATH")]
    vsock: Option<PathBuf>,
}

/// Where a booted VM's sockets live: a private runtime directory removed
/// at exit, or the path the caller chose (or its configuration names).
enum VsockPlace {
    Private(SandboxDir),
    Given(PathBuf),
}

impl VsockPlace {
    fn new(args: &BootArgs, config: &VmConfig) -> Result<Self> {
        if let Some(path) = args.vsock.clone().or(config.vsock_uds.clone()) {
            return Ok(Self::Given(path));
        }
        let dir = SandboxDir::for_this_process();
        dir.create("vmrun boot")?;
        Ok(Self::Private(dir))
    }

    fn socket(&self) -> PathBuf {
        match self {
            Self::Private(dir) => dir.vsock(),
            Self::Given(path) => path.clone(),
        }
    }

    fn private_dir(&self) -> Option<&SandboxDir> {
        match self {
            Self::Private(dir) => Some(dir),
            Self::Given(_) => None,
        }
    }
}

impl Drop for VsockPlace {
    fn drop(&mut self) {
        if let Self::Private(dir) = self {
            if let Err(e) = dir.remove() {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Unjailed (a debugging switch): SIGTERM, SIGINT or SIGHUP end `vmrun
/// boot` as they would, but first remove its private directory (the VM's
/// threads go with the process). The signals are blocked here, before any
/// VM thread exists, so that only the watcher thread takes them.
fn remove_on_termination(dir: &SandboxDir) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .map_err(|e| CliError::host("block termination signals")(e.into()))?;
    let dir = dir.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let signal = signals.wait().unwrap_or(Signal::SIGTERM);
            if let Err(e) = dir.remove() {
                tracing::warn!("{e}");
            }
            eprintln!("vmrun: {}: stopping the microVM", signal.as_str());
            std::process::exit(128 + signal as i32);
        })
        .map_err(CliError::host("start the signal thread"))?;
    Ok(())
}

impl BootArgs {
    /// The VM: from `--config`, or from the flags.
    fn base_config(&self) -> Result<VmConfig> {
        let Some(path) = &self.config else {
            return Ok(self.vm.config());
        };
        let bad = |problem: String| CliError::Config {
            path: path.clone(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
    }

    fn config(&self) -> Result<(VmConfig, VsockPlace)> {
        let mut config = self.base_config()?;
        let vsock = VsockPlace::new(self, &config)?;
        config.vsock_uds = Some(vsock.socket());
        if self.exit_when_ready {
            config.extra_cmdline.push(EXIT_WHEN_READY_FLAG.to_string());
        }
        Ok((config, vsock))
    }
}

/// `vmrun cmdline`.
pub fn print_cmdline(args: &BootArgs) -> Result<()> {
    let (config, _vsock) = args.config()?;
    let cmdline = vmm::vm::kernel_cmdline(&config)?;
    println!("{cmdline}");
    Ok(())
}

/// `vmrun boot`.
pub fn boot(args: BootArgs) -> Result<()> {
    let started = Instant::now();
    let (config, vsock) = args.config()?;
    let timeout = args
        .timeout
        .or(args.exit_when_ready.then_some(600))
        .map(Duration::from_secs);
    let deadline = timeout.map(|t| started + t);

    let jail = match config.jail.enabled {
        true => Some(vmm::jail::JailPlan::for_vm(&config)?),
        false => {
            tracing::warn!(
                "the jail is OFF: the VMM runs with every capability in the host's \
                 namespaces (a debugging switch only)"
            );
            if let Some(dir) = vsock.private_dir() {
                remove_on_termination(dir)?;
            }
            None
        }
    };
    if jail.is_some() {
        // Still one thread: the fork takes everything with it.
        supervisor::block_signals()?;
        match vmm::jail::pid_namespace::fork_into_new_pid_namespace()? {
            Forked::Supervisor { child } => {
                let cleanup = move || drop(vsock);
                match supervisor::supervise(child, cleanup)? {}
            }
            Forked::Vmm => {
                supervisor::unblock_signals()?;
                // The supervisor removes the private directory, from outside.
                std::mem::forget(vsock);
            }
        }
    }

    heap::use_one_arena();
    let mut vm = Vm::create(&config, std::io::stdout())?;
    if let Some(plan) = &jail {
        vmm::jail::enter(plan)?;
    }
    vm.run()?;
    if config.seccomp {
        // From here on this thread only relays events and the console.
        vmm::seccomp::confine_current_thread(vmm::seccomp::ThreadKind::Main)?;
    }
    tracing::debug!(cmdline = vm.cmdline(), "guest started");
    if vm.restored() {
        // No boot, so no ready line: the agent serves already.
        eprintln!(
            "vmrun: restored from a snapshot after {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }

    let mut ready = None;
    let mut failure = None;
    let exit = loop {
        match vm.next_event(deadline) {
            None => {
                break Err(CliError::Guest(format!(
                    "timed out after {} s{}",
                    timeout.map_or(0, |t| t.as_secs()),
                    if ready.is_none() {
                        " waiting for the agent"
                    } else {
                        ""
                    }
                )))
            }
            Some(VmEvent::Console(ConsoleEvent::AgentReady)) if ready.is_none() => {
                let at = started.elapsed();
                eprintln!("vmrun: agent ready after {:.2} s", at.as_secs_f64());
                ready = Some(at);
            }
            Some(VmEvent::Console(ConsoleEvent::KernelPanic(line))) => {
                failure.get_or_insert(format!("guest kernel panicked: {line}"));
            }
            Some(VmEvent::Console(ConsoleEvent::AgentFatal(line))) => {
                failure.get_or_insert(format!("guest agent failed: {line}"));
            }
            Some(VmEvent::Console(ConsoleEvent::AgentReady)) => {}
            Some(VmEvent::Exited(exit)) => break Ok(exit),
        }
    };
    vm.stop();
    let elapsed = started.elapsed().as_secs_f64();
    let exit = exit?;
    if let Some(failure) = failure {
        return Err(CliError::Guest(failure));
    }
    if exit != VmExit::Reset {
        return Err(CliError::Guest(format!("guest stopped: {exit}")));
    }
    if args.exit_when_ready && ready.is_none() {
        return Err(CliError::Guest(
            "guest shut down before the agent was ready".to_string(),
        ));
    }
    eprintln!("vmrun: guest shut down after {elapsed:.2} s");
    Ok(())
}
