//! `vmrun`: boot a microVM on KVM and run things in it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use vmm::compat::CompatMode;
use vmm::console::ConsoleEvent;
use vmm::{Vm, VmConfig, VmEvent, VmExit};

#[derive(Parser)]
#[command(name = "vmrun", version, about = "microVM-isolated containers on KVM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a microVM and stream its console to stdout.
    Boot(BootArgs),
    /// Print the kernel command line `vmrun boot` would give the guest.
    Cmdline(CmdlineArgs),
}

#[derive(Args)]
struct CmdlineArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// As with `vmrun boot --exit-when-ready`.
    #[arg(long)]
    exit_when_ready: bool,
}

#[derive(Args)]
struct VmArgs {
    /// Guest kernel (ELF vmlinux with PVH entry, or bzImage).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest initramfs.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = VmConfig::default().vcpus)]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = VmConfig::default().memory_mib)]
    memory: u64,
    /// Host compatibility profile: auto (detect), off, or pvm (software KVM).
    #[arg(long, default_value = "auto")]
    compat: CompatMode,
    /// Extra kernel command-line words.
    #[arg(long = "cmdline", value_name = "WORDS")]
    cmdline: Vec<String>,
    /// Give the guest a vsock whose host side is this Unix socket
    /// (Firecracker-style hybrid vsock: `CONNECT <port>`).
    #[arg(long, value_name = "PATH")]
    vsock: Option<PathBuf>,
}

impl VmArgs {
    fn config(&self) -> VmConfig {
        let defaults = VmConfig::default();
        VmConfig {
            kernel: self.kernel.clone().unwrap_or(defaults.kernel),
            initrd: self.initrd.clone().or(defaults.initrd),
            vcpus: self.cpus,
            memory_mib: self.memory,
            extra_cmdline: self
                .cmdline
                .iter()
                .flat_map(|w| w.split_whitespace().map(str::to_string))
                .collect(),
            compat: self.compat,
            timeout: None,
            vsock_uds: self.vsock.clone(),
        }
    }
}

#[derive(Args)]
struct BootArgs {
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
}

/// Kernel flag asking the agent to power off once ready.
const EXIT_WHEN_READY_FLAG: &str = "vmrun.exit_when_ready";

fn boot(args: BootArgs) -> Result<(), String> {
    let started = Instant::now();
    let mut config = args.vm.config();
    if args.exit_when_ready {
        config.extra_cmdline.push(EXIT_WHEN_READY_FLAG.to_string());
    }
    let timeout = args
        .timeout
        .or(args.exit_when_ready.then_some(600))
        .map(Duration::from_secs);
    let deadline = timeout.map(|t| started + t);

    let mut vm = Vm::start(&config, std::io::stdout()).map_err(|e| e.to_string())?;
    tracing::debug!(cmdline = vm.cmdline(), "guest started");

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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMRUN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Boot(args) => boot(args),
        Command::Cmdline(args) => {
            let mut config = args.vm.config();
            if args.exit_when_ready {
                config.extra_cmdline.push(EXIT_WHEN_READY_FLAG.to_string());
            }
            vmm::vm::kernel_cmdline(&config)
                .map(|c| println!("{c}"))
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vmrun: {message}");
            ExitCode::FAILURE
        }
    }
}
