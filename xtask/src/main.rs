//! `cargo xtask bench`: vmrun's figures, printed beside a reference VMM
//! measured in the same run. Benchmarks print numbers; they assert nothing.
//! `cargo xtask fuzz` runs the fuzz targets of `fuzz/`.

mod boot_bench;
mod container_bench;
mod containerd_bench;
mod fuzz;
mod measure;
mod net_bench;
mod restore_bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "vmrun developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot benchmarks: vmrun against QEMU's microvm machine.
    Bench(boot_bench::BenchArgs),
    /// containerd: `ctr run --rm ... true` with runc and with vmrun, and the
    /// host memory of a vmrun pod.
    BenchContainerd(containerd_bench::ContainerdBenchArgs),
    /// Containers in one microVM: start time, virtio-fs against the host.
    BenchContainers(container_bench::ContainersBenchArgs),
    /// Pod networking through containerd's CRI plugin, runc against vmrun:
    /// TCP throughput, request latency, and the VMM's CPU per MiB.
    BenchNet(net_bench::NetBenchArgs),
    /// Snapshot restore against a cold boot and QEMU's `-incoming`, and the
    /// host memory of many restored sandboxes.
    BenchRestore(restore_bench::RestoreBenchArgs),
    /// The cargo-fuzz targets of fuzz/, each for a while (needs nightly and
    /// cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => boot_bench::run(&args),
        Command::BenchContainerd(args) => containerd_bench::run(&args),
        Command::BenchContainers(args) => container_bench::run(&args),
        Command::BenchNet(args) => net_bench::run(&args),
        Command::BenchRestore(args) => restore_bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    }
}
