//! Boot figures: `vmrun boot --exit-when-ready` against QEMU's `microvm`
//! machine booting the same kernel, initramfs and command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::measure::{measure, Measurement};

/// The agent's first console line: "vmrun-agent ready" under vmrun. QEMU
/// gets no vsock here (these hosts have no vhost-vsock), so its agent stops
/// at the vsock bind with a "vmrun-agent: fatal:" line: the same point of
/// the boot, reached by the same kernel and initramfs.
const READY: &str = "vmrun-agent";
/// A boot that takes longer than this is reported as failed.
const BOOT_LIMIT: Duration = Duration::from_secs(400);

#[derive(Args)]
pub struct BenchArgs {
    /// Boots per VMM.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// vCPUs for both VMMs.
    #[arg(long, default_value_t = 2)]
    cpus: u8,
    /// Guest memory (MiB) for both VMMs.
    #[arg(long, default_value_t = 256)]
    memory: u64,
    /// The vmrun binary (default: target/release/vmrun, else `vmrun` on PATH).
    #[arg(long)]
    vmrun: Option<PathBuf>,
    /// Share directory holding vmlinux and initramfs.cpio.
    #[arg(long, default_value = "/usr/local/share/vmrun")]
    share: PathBuf,
}

fn vmrun_binary(args: &BenchArgs) -> PathBuf {
    if let Some(bin) = &args.vmrun {
        return bin.clone();
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/vmrun");
    if local.exists() {
        local
    } else {
        PathBuf::from("vmrun")
    }
}

fn kvm_pvm_host() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The command line vmrun gives the guest, as `vmrun cmdline` prints it.
fn vmrun_cmdline(vmrun: &Path) -> anyhow::Result<String> {
    let out = Command::new(vmrun)
        .args(["cmdline", "--exit-when-ready"])
        .output()
        .with_context(|| format!("cannot run {}", vmrun.display()))?;
    if !out.status.success() {
        bail!(
            "`vmrun cmdline` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn qemu_command(args: &BenchArgs, cmdline: &str) -> Command {
    let mut cpu = String::from("host");
    if kvm_pvm_host() {
        // Same CPUID mask vmrun's compat profile applies; this QEMU also
        // fails to set IA32_ARCH_CAPABILITIES on kvm_pvm.
        cpu.push_str(",-cx16,-arch-capabilities");
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off",
        "-enable-kvm",
        "-cpu",
        &cpu,
        "-smp",
        &args.cpus.to_string(),
        "-m",
        &args.memory.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
    ]);
    cmd.arg("-kernel")
        .arg(args.share.join("vmlinux"))
        .arg("-initrd")
        .arg(args.share.join("initramfs.cpio"))
        .arg("-append")
        .arg(cmdline);
    cmd
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    }
}

fn best<F: Fn(&Measurement) -> Option<f64>>(runs: &[Measurement], f: F) -> Option<f64> {
    runs.iter().filter_map(f).reduce(f64::min)
}

/// `vmrun run --timings -- true`: end to end, and where the time went.
fn run_true(args: &BenchArgs, vmrun: &Path) -> anyhow::Result<()> {
    println!();
    println!("vmrun run -- true ({} run(s)):", args.runs);
    for i in 0..args.runs {
        let out = Command::new(vmrun)
            .args(["run", "--timings"])
            .args(["--cpus", &args.cpus.to_string()])
            .args(["--memory", &args.memory.to_string()])
            .arg("--kernel")
            .arg(args.share.join("vmlinux"))
            .arg("--initrd")
            .arg(args.share.join("initramfs.cpio"))
            .args(["--", "true"])
            .output()
            .with_context(|| format!("cannot run {}", vmrun.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let Some(line) = stderr.lines().find(|l| l.starts_with("vmrun: timings")) else {
            bail!("`vmrun run --timings -- true` printed no timings: {stderr}");
        };
        let phase = |name: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
        };
        let (Some(vm), Some(ready), Some(exited), Some(stopped)) = (
            phase("vm_started"),
            phase("agent_ready"),
            phase("command_exited"),
            phase("vm_stopped"),
        ) else {
            bail!("cannot parse {line:?}");
        };
        println!(
            "  run {}: total {stopped:.2} s = VM built {vm:.3} s + boot to agent {:.2} s \
             + exec `true` {:.3} s + VM stop {:.3} s (exit status {})",
            i + 1,
            ready - vm,
            exited - ready,
            stopped - exited,
            out.status.code().unwrap_or(-1)
        );
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let vmrun = vmrun_binary(args);
    let cmdline = vmrun_cmdline(&vmrun)?;
    println!("kernel command line: {cmdline}");
    println!(
        "{} boot(s) each, {} vCPUs, {} MiB, host {}",
        args.runs,
        args.cpus,
        args.memory,
        if kvm_pvm_host() {
            "kvm_pvm (software KVM)"
        } else {
            "hardware KVM"
        }
    );

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..args.runs {
        let mut cmd = Command::new(&vmrun);
        cmd.args(["boot", "--exit-when-ready"])
            .args(["--cpus", &args.cpus.to_string()])
            .args(["--memory", &args.memory.to_string()])
            .arg("--kernel")
            .arg(args.share.join("vmlinux"))
            .arg("--initrd")
            .arg(args.share.join("initramfs.cpio"));
        ours.push(measure(&mut cmd, READY, BOOT_LIMIT)?);
        theirs.push(measure(
            &mut qemu_command(args, &cmdline),
            READY,
            BOOT_LIMIT,
        )?);
    }
    for (name, runs) in [("vmrun", &ours), ("qemu", &theirs)] {
        for (i, m) in runs.iter().enumerate() {
            println!(
                "{name} run {}: ready {} s, exit {} s, peak RSS {} MiB, {}",
                i + 1,
                secs(m.to_marker),
                secs(Some(m.to_exit)),
                m.peak_rss_kib / 1024,
                if m.success { "ok" } else { "FAILED" }
            );
        }
    }

    let ready = |m: &Measurement| m.to_marker.map(|d| d.as_secs_f64());
    let exit = |m: &Measurement| Some(m.to_exit.as_secs_f64());
    let rss = |m: &Measurement| Some(m.peak_rss_kib as f64 / 1024.0);
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>12}",
        "best of runs", "vmrun", "qemu", "vmrun/qemu"
    );
    for (label, f) in [
        (
            "boot to agent ready (s)",
            &ready as &dyn Fn(&Measurement) -> Option<f64>,
        ),
        ("boot to VMM exit (s)", &exit),
        ("VMM peak RSS (MiB)", &rss),
    ] {
        let (a, b) = (best(&ours, f), best(&theirs, f));
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{label:<28} {:>10} {:>10} {:>12}",
            fmt(a),
            fmt(b),
            ratio(a, b)
        );
    }
    run_true(args, &vmrun)
}
