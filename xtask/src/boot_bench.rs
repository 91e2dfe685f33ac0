//! Boot figures: `vmrun boot --exit-when-ready` against QEMU's `microvm`
//! machine booting the same kernel, initramfs and command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::measure::{measure, Measurement};

/// The agent's ready line (`READY_LINE` in agent/src/init/console.rs),
/// printed once its vsock listener is bound. Under QEMU the guest has no
/// virtio-vsock device, but binding an AF_VSOCK listener needs no transport,
/// so the agent gets there too and, with `vmrun.exit_when_ready`, prints
/// the line and powers off exactly as under vmrun.
const READY: &str = "vmrun-agent ready";

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
    #[command(flatten)]
    installed: Installed,
    /// Seconds after which a boot is killed and reported as failed.
    #[arg(long, default_value_t = 600)]
    limit: u64,
    /// Where each boot's console goes (one file per VMM and run).
    #[arg(long, default_value = "/tmp/vmrun-bench")]
    logs: PathBuf,
}

/// Where the benchmarks find vmrun, the guest kernel and the initramfs.
#[derive(Args)]
pub struct Installed {
    /// The vmrun binary (default: target/release/vmrun, else `vmrun` on PATH).
    #[arg(long)]
    pub vmrun: Option<PathBuf>,
    /// Share directory holding vmlinux and initramfs.cpio.
    #[arg(long, default_value = "/usr/local/share/vmrun")]
    pub share: PathBuf,
}

impl Installed {
    /// The vmrun binary to measure.
    pub fn vmrun(&self) -> PathBuf {
        vmrun_binary(self.vmrun.as_deref())
    }
}

/// `given`, else target/release/vmrun, else `vmrun` on PATH.
fn vmrun_binary(given: Option<&Path>) -> PathBuf {
    if let Some(bin) = given {
        return bin.to_path_buf();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let local = target.join("release/vmrun");
    if local.exists() {
        local
    } else {
        PathBuf::from("vmrun")
    }
}

pub fn kvm_pvm_host() -> bool {
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

/// QEMU's microvm machine set up like vmrun's VM: same kernel, initramfs,
/// command line, vCPUs and memory; a 16550 on ttyS0; an i8042 whose reset
/// line ends the VM. Differences that remain (see README "Figures"): QEMU
/// runs qboot before the kernel, and it has no virtio devices, so the
/// `virtio_mmio.device=` entries of the command line (vmrun's virtio-rng and
/// hybrid vsock) find no device and the guest has neither.
pub fn qemu_command(cpus: u8, memory_mib: u64, share: &Path, cmdline: &str) -> Command {
    let mut cpu = String::from("host");
    if kvm_pvm_host() {
        // Same CPUID mask vmrun's compat profile applies; this QEMU also
        // fails to set IA32_ARCH_CAPABILITIES on kvm_pvm.
        cpu.push_str(",-cx16,-arch-capabilities");
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-M",
        // auto-kernel-cmdline=off: the guest gets exactly vmrun's command
        // line (QEMU would otherwise append its own virtio-mmio entries).
        "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off,auto-kernel-cmdline=off",
        "-enable-kvm",
        "-cpu",
        &cpu,
        "-smp",
        &cpus.to_string(),
        "-m",
        &memory_mib.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-serial",
        "stdio",
        // The guest powers off with `reboot=k`: 0xfe to port 0x64. microvm
        // has no i8042 of its own; without one the write goes nowhere, the
        // kernel's fallback reset methods do not end the VM on kvm_pvm (a
        // vCPU spins after "reboot: machine restart") and QEMU never exits:
        // the hang seen before. With it, the reset and -no-reboot end QEMU,
        // as the i8042 reset ends vmrun.
        "-device",
        "i8042",
    ]);
    cmd.arg("-kernel")
        .arg(share.join("vmlinux"))
        .arg("-initrd")
        .arg(share.join("initramfs.cpio"))
        .arg("-append")
        .arg(cmdline);
    cmd
}

pub fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2}", d.as_secs_f64()))
}

pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_string(),
    }
}

/// The lowest value among the runs that reached the agent and exited
/// cleanly: a boot killed at the time limit would show a small peak RSS and
/// a meaningless time.
fn best<F: Fn(&Measurement) -> Option<f64>>(runs: &[Measurement], f: F) -> Option<f64> {
    runs.iter()
        .filter(|m| m.success && m.to_marker.is_some())
        .filter_map(f)
        .reduce(f64::min)
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
            .arg(args.installed.share.join("vmlinux"))
            .arg("--initrd")
            .arg(args.installed.share.join("initramfs.cpio"))
            .args(["--", "true"])
            .output()
            .with_context(|| format!("cannot run {}", vmrun.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // The phases it did not reach are NaN in its timings: say why
            // instead of printing them.
            let reason = stderr
                .lines()
                .rfind(|l| !l.starts_with("vmrun: timings"))
                .unwrap_or("");
            println!(
                "  run {}: FAILED (exit status {}): {reason}",
                i + 1,
                out.status.code().unwrap_or(-1)
            );
            continue;
        }
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
    let vmrun = args.installed.vmrun();
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

    std::fs::create_dir_all(&args.logs)
        .with_context(|| format!("cannot create {}", args.logs.display()))?;
    let limit = Duration::from_secs(args.limit);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 1..=args.runs {
        let mut cmd = Command::new(&vmrun);
        cmd.args(["boot", "--exit-when-ready"])
            .args(["--cpus", &args.cpus.to_string()])
            .args(["--memory", &args.memory.to_string()])
            .arg("--kernel")
            .arg(args.installed.share.join("vmlinux"))
            .arg("--initrd")
            .arg(args.installed.share.join("initramfs.cpio"));
        let log = args.logs.join(format!("vmrun-{i}.log"));
        ours.push(measure(&mut cmd, READY, limit, &log)?);
        let log = args.logs.join(format!("qemu-{i}.log"));
        theirs.push(measure(
            &mut qemu_command(args.cpus, args.memory, &args.installed.share, &cmdline),
            READY,
            limit,
            &log,
        )?);
    }
    for (name, runs) in [("vmrun", &ours), ("qemu", &theirs)] {
        for (i, m) in runs.iter().enumerate() {
            let outcome = if m.timed_out {
                format!("KILLED after {} s", args.limit)
            } else if m.success {
                "ok".to_string()
            } else {
                "FAILED".to_string()
            };
            println!(
                "{name} run {}: ready {} s, exit {} s, CPU {} s, peak RSS {} MiB, load {} at start, \
                 {outcome} (console: {})",
                i + 1,
                secs(m.to_marker),
                secs(Some(m.to_exit)),
                secs(Some(m.cpu)),
                m.peak_rss_kib / 1024,
                m.load_at_start
                    .map_or_else(|| "-".to_string(), |l| format!("{l:.2}")),
                args.logs.join(format!("{name}-{}.log", i + 1)).display(),
            );
        }
    }

    let ready = |m: &Measurement| m.to_marker.map(|d| d.as_secs_f64());
    let exit = |m: &Measurement| Some(m.to_exit.as_secs_f64());
    let cpu = |m: &Measurement| Some(m.cpu.as_secs_f64());
    let rss = |m: &Measurement| Some(m.peak_rss_kib as f64 / 1024.0);
    println!();
    println!(
        "{:<28} {:>10} {:>10} {:>12}",
        "best of completed runs", "vmrun", "qemu", "vmrun/qemu"
    );
    for (label, f) in [
        (
            "boot to agent ready (s)",
            &ready as &dyn Fn(&Measurement) -> Option<f64>,
        ),
        ("boot to VMM exit (s)", &exit),
        ("VMM CPU time to exit (s)", &cpu),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ready: Option<u64>, exit: u64, rss_kib: u64, success: bool) -> Measurement {
        Measurement {
            to_marker: ready.map(Duration::from_secs),
            to_exit: Duration::from_secs(exit),
            peak_rss_kib: rss_kib,
            cpu: Duration::from_secs(exit),
            load_at_start: None,
            success,
            timed_out: !success,
        }
    }

    #[test]
    fn best_ignores_runs_that_did_not_complete() {
        let runs = [
            run(None, 600, 1024, false),
            run(Some(100), 101, 4096, true),
            run(Some(90), 95, 8192, true),
        ];
        let rss = |m: &Measurement| Some(m.peak_rss_kib as f64);
        let exit = |m: &Measurement| Some(m.to_exit.as_secs_f64());
        assert_eq!(best(&runs, rss), Some(4096.0));
        assert_eq!(best(&runs, exit), Some(95.0));
        assert_eq!(best(&runs[..1], exit), None);
        assert_eq!(ratio(Some(1.0), Some(2.0)), "0.50x");
        assert_eq!(ratio(None, Some(2.0)), "-");
    }
}
