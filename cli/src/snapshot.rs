//! `vmrun snapshot create`: boot the standard guest once and save it, so
//! that every later VM of the same configuration restores instead.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::{CliError, Result, VmArgs};

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
    )?;
    eprintln!(
        "vmrun: snapshot saved in {} after {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", dir.display());
    Ok(())
}
