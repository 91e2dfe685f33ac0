//! `vmrun snapshot create`: boot the standard guest once and save it, so
//! that every later VM of the same configuration restores instead.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use vmrun_agent::client::{dial_hybrid_vsock, ClientError};
use vmrun_agent::AGENT_VSOCK_PORT;

use crate::{CliError, Result, VmArgs};

/// How long the agent of a guest that just printed its ready line may take
/// to answer the warm-up call.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Boot a guest to its agent's ready point and save it (by default in
    /// the cache, where `vmrun run`, `vmrun boot` and the shim look).
    Create(CreateArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Save it in DIR instead of the cache.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Do nothing if a snapshot that fits is already there.
    #[arg(long)]
    if_missing: bool,
    /// Give up if the guest has not reached its agent after SECS.
    #[arg(long, value_name = "SECS", default_value_t = vmm::snapshot::DEFAULT_CREATE_TIMEOUT.as_secs())]
    timeout: u64,
}

pub fn run(command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Create(args) => create(&args),
    }
}

fn create(args: &CreateArgs) -> Result<()> {
    if !args.vm.per_vm_devices_empty() {
        return Err(CliError::Usage(
            "a snapshot has no shares, disks or network interfaces of its own: \
             drop --share, --disk and --net"
                .into(),
        ));
    }
    let started = Instant::now();
    // The snapshot being built puts the vsock socket inside itself.
    let config = args.vm.config();
    if args.if_missing {
        let inputs = vmm::snapshot::inputs_for(&config)?;
        let dir = args
            .dir
            .clone()
            .unwrap_or_else(|| vmm::snapshot::cache_dir(&inputs));
        match vmm::snapshot::load(&dir, &inputs, &config) {
            Ok(_) => {
                eprintln!("vmrun: the snapshot in {} is up to date", dir.display());
                println!("{}", dir.display());
                return Ok(());
            }
            Err(why) if dir.exists() => eprintln!("vmrun: making the snapshot again: {why}"),
            Err(_) => {}
        }
    }
    let dir = vmm::snapshot::create(
        &config,
        args.dir.as_deref(),
        Duration::from_secs(args.timeout),
        first_connection,
    )?;
    eprintln!(
        "vmrun: snapshot saved in {} after {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", dir.display());
    Ok(())
}

/// Why the warm-up before the snapshot failed.
#[derive(Debug, thiserror::Error)]
enum WarmUpFailure {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the agent's first call: {0}")]
    Agent(#[source] ClientError),
}

/// The agent's first connection and call, made before the guest is saved.
/// A guest's first connection writes ~0.3 MiB of fresh guest memory (the
/// kernel's vsock socket, the agent's HTTP/2 and gRPC state) that later
/// ones mostly reuse, measured with the host's pagemap of a restored VMM:
/// made here, it is in the snapshot, so a restored sandbox does not pay
/// those fresh pages' faults under emulation and writes less of its own.
/// The connection is closed when this returns.
fn first_connection(vsock: &std::path::Path) -> Result<(), vmm::snapshot::WarmUpError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WarmUpFailure::Runtime)?;
    runtime
        .block_on(dial_hybrid_vsock(
            vsock,
            AGENT_VSOCK_PORT,
            Instant::now() + WARM_UP_TIMEOUT,
        ))
        .map_err(WarmUpFailure::Agent)?;
    Ok(())
}
