//! `rootfs-builder`: builds the guest initramfs around the vmrun agent.

mod bundle;
mod cpio;
mod initramfs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rootfs-builder", about = "Builds vmrun's guest images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack the uncompressed newc initramfs: /init = agent, /dev/console,
    /// busybox and its applets.
    Initramfs {
        /// The static agent binary.
        #[arg(long)]
        agent: PathBuf,
        /// A static busybox (Debian's busybox-static: /bin/busybox).
        #[arg(long)]
        busybox: Option<PathBuf>,
        /// Where to write the archive.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Write a busybox OCI bundle: config.json (runtime-spec defaults, as
    /// `runc spec` writes) and rootfs/.
    Bundle {
        /// A static busybox.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// The bundle directory (created; must be empty).
        #[arg(long, short)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Initramfs {
            agent,
            busybox,
            output,
        } => initramfs::build(&initramfs::InitramfsSpec { agent, busybox }, &output)
            .map(|()| eprintln!("rootfs-builder: wrote {}", output.display()))
            .map_err(|e| e.to_string()),
        Command::Bundle { busybox, output } => bundle::build(&busybox, &output)
            .map(|()| eprintln!("rootfs-builder: wrote bundle {}", output.display()))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rootfs-builder: {err}");
            ExitCode::FAILURE
        }
    }
}
