//! `vmrun boot`: boot a microVM, stream its console, report how far it got.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use vmm::console::ConsoleEvent;
use vmm::{Vm, VmEvent, VmExit};

use crate::runtime_dir::RuntimeDir;
use crate::VmArgs;

/// Kernel flag asking the agent to power off once ready.
const EXIT_WHEN_READY_FLAG: &str = "vmrun.exit_when_ready";

#[derive(Args)]
pub struct BootArgs {
    #[command(flatten)]
    vm: VmArgs,
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
/// at exit, or the path the caller chose.
enum VsockPlace {
    Private(RuntimeDir),
    Given(PathBuf),
}

impl VsockPlace {
    fn new(args: &BootArgs) -> Result<Self, String> {
        match &args.vsock {
            Some(path) => Ok(Self::Given(path.clone())),
            None => RuntimeDir::create(&crate::vm_name()).map(Self::Private),
        }
    }

    fn socket(&self) -> PathBuf {
        match self {
            Self::Private(dir) => dir.vsock_socket(),
            Self::Given(path) => path.clone(),
        }
    }
}

impl BootArgs {
    fn config(&self, vsock: &VsockPlace) -> vmm::VmConfig {
        let mut config = self.vm.config(vsock.socket());
        if self.exit_when_ready {
            config.extra_cmdline.push(EXIT_WHEN_READY_FLAG.to_string());
        }
        config
    }
}

/// `vmrun cmdline`.
pub fn print_cmdline(args: &BootArgs) -> Result<(), String> {
    let vsock = VsockPlace::new(args)?;
    let cmdline = vmm::vm::kernel_cmdline(&args.config(&vsock)).map_err(|e| e.to_string())?;
    println!("{cmdline}");
    Ok(())
}

/// `vmrun boot`.
pub fn boot(args: BootArgs) -> Result<(), String> {
    let started = Instant::now();
    let vsock = VsockPlace::new(&args)?;
    let config = args.config(&vsock);
    let timeout = args
        .timeout
        .or(args.exit_when_ready.then_some(600))
        .map(Duration::from_secs);
    let deadline = timeout.map(|t| started + t);

    let mut vm = Vm::start(&config, std::io::stdout()).map_err(|e| e.to_string())?;
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
                break Err(format!(
                    "timed out after {} s{}",
                    timeout.map_or(0, |t| t.as_secs()),
                    if ready.is_none() {
                        " waiting for the agent"
                    } else {
                        ""
                    }
                ))
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
        return Err(failure);
    }
    if exit != VmExit::Reset {
        return Err(format!("guest stopped: {exit}"));
    }
    if args.exit_when_ready && ready.is_none() {
        return Err("guest shut down before the agent was ready".to_string());
    }
    eprintln!("vmrun: guest shut down after {elapsed:.2} s");
    Ok(())
}
