//! `rootfs-builder`: builds the guest initramfs around the vmrun agent, and
//! the OCI bundles and image tarballs the demo and the tests run. It only
//! packs files; it must not run anything in a VM.

mod bundle;
mod cpio;
mod initramfs;
mod oci_image;

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
        /// process.args (default: sh), after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Write a busybox OCI image-layout tarball for `ctr images import`: a
    /// shell image (`sh`) and a pause image (`sleep 2147483647`, for the
    /// CRI plugin's sandbox_image) sharing one layer.
    OciImage {
        /// A static busybox.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// The shell image's name (repeatable).
        #[arg(long = "name", value_name = "REF", default_value = oci_image::DEFAULT_NAME)]
        names: Vec<String>,
        /// The pause image's name (repeatable).
        #[arg(long = "pause-name", value_name = "REF", default_value = oci_image::DEFAULT_PAUSE_NAME)]
        pause_names: Vec<String>,
        /// Where to write the tarball.
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
        Command::Bundle {
            busybox,
            output,
            args,
        } => bundle::build(&busybox, &output, &args)
            .map(|()| eprintln!("rootfs-builder: wrote bundle {}", output.display()))
            .map_err(|e| e.to_string()),
        Command::OciImage {
            busybox,
            names,
            pause_names,
            output,
        } => {
            let images = names
                .into_iter()
                .map(|n| (n, oci_image::Flavor::Shell))
                .chain(
                    pause_names
                        .into_iter()
                        .map(|n| (n, oci_image::Flavor::Pause)),
                )
                .collect();
            oci_image::build(&oci_image::OciImageSpec { busybox, images }, &output)
                .map(|()| eprintln!("rootfs-builder: wrote OCI image {}", output.display()))
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rootfs-builder: {err}");
            ExitCode::FAILURE
        }
    }
}
