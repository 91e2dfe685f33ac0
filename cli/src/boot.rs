//! `vmrun boot`: boot (or restore) a microVM from the VM flags, stream its
//! console, report how far it got. The run itself is the VMM process's
//! (`vmrun_vmm::run`), as for a sandbox's `vmrun-vmm`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use vm_config::VmConfig;
use vmrun_sandbox::SandboxDir;
use vmrun_vmm::{Cleanup, RunOptions};

use crate::{Result, VmArgs};

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
    /// that talks to the agent itself.
    #[arg(long, value_name = "PATH")]
    vsock: Option<PathBuf>,
}

impl BootArgs {
    /// The VM the flags describe (no vsock yet).
    fn config(&self) -> VmConfig {
        let mut config = self.vm.config();
        if self.exit_when_ready {
            config.extra_cmdline.push(EXIT_WHEN_READY_FLAG.to_string());
        }
        config
    }

    /// Where the guest's vsock goes: `--vsock`, or a private runtime
    /// directory, made here and removed (from outside the jail) when the VM
    /// ends.
    fn vsock(&self) -> Result<(PathBuf, Option<Cleanup>)> {
        if let Some(path) = &self.vsock {
            return Ok((path.clone(), None));
        }
        let dir = SandboxDir::for_this_process();
        dir.create("vmrun boot")?;
        let socket = dir.vsock();
        let cleanup: Cleanup = Arc::new(move || {
            if let Err(e) = dir.remove() {
                tracing::warn!("{e}");
            }
        });
        Ok((socket, Some(cleanup)))
    }
}

/// `vmrun cmdline`.
pub fn print_cmdline(args: &BootArgs) -> Result<()> {
    let cmdline = vmm::vm::kernel_cmdline(&args.config())?;
    println!("{cmdline}");
    Ok(())
}

/// `vmrun boot`.
pub fn boot(args: BootArgs) -> Result<()> {
    let mut config = args.config();
    let (socket, cleanup) = args.vsock()?;
    config.vsock_uds = Some(socket);
    let options = RunOptions {
        timeout: args
            .timeout
            .or(args.exit_when_ready.then_some(600))
            .map(Duration::from_secs),
        exit_when_ready: args.exit_when_ready,
        cleanup,
    };
    Ok(vmrun_vmm::run(&config, &options)?)
}
