//! `cargo xtask bench-containerd`: `ctr run --rm IMAGE ID true` with runc
//! and with vmrun against one private containerd, in the same run, and the
//! host memory a vmrun pod costs (shim + VMM resident set) beside runc's
//! shim. Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use vmrun_tests::containerd::{Containerd, IMAGE, RUNC_RUNTIME, VMRUN_RUNTIME};

#[derive(Args)]
pub struct ContainerdBenchArgs {
    /// `ctr run --rm ... true` runs per runtime (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// runc runs (cheap, so more of them).
    #[arg(long, default_value_t = 10)]
    runc_runs: usize,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Wall time of one `ctr run --rm` of `true`.
fn run_true(ctrd: &Containerd, runtime: &str, id: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let done = ctrd.ctr(&["run", "--rm", "--runtime", runtime, IMAGE, id, "true"]);
    let elapsed = started.elapsed();
    if !done.status.success() {
        bail!(
            "ctr run --runtime {runtime}: {done:?}\n{}",
            ctrd.log_tail(40)
        );
    }
    Ok(elapsed)
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    field("VmRSS:").context("no VmRSS")
}

fn parent_of(pid: u32) -> anyhow::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no PPid")
}

/// The host pid `ctr task ls` shows for `task`.
fn task_pid(ctrd: &Containerd, task: &str) -> anyhow::Result<u32> {
    let listed = ctrd.ctr(&["task", "ls"]);
    listed
        .stdout
        .lines()
        .skip(1)
        .find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&task)).then(|| cols.get(1).and_then(|p| p.parse().ok()))?
        })
        .with_context(|| format!("task {task} not listed: {listed:?}"))
}

/// Host memory of a running task of `runtime`: (shim KiB, VMM KiB or 0).
fn task_memory(ctrd: &Containerd, runtime: &str, id: &str) -> anyhow::Result<(u64, u64)> {
    let started = ctrd.ctr(&["run", "-d", "--runtime", runtime, IMAGE, id, "sleep", "600"]);
    if !started.status.success() {
        bail!("ctr run -d --runtime {runtime}: {started:?}");
    }
    let pid = task_pid(ctrd, id)?;
    // vmrun reports the VMM as the task's pid (its parent is the shim);
    // runc reports the container's init (its parent is the shim).
    let shim = parent_of(pid)?;
    let memory = if runtime == VMRUN_RUNTIME {
        (rss_kib(shim)?, rss_kib(pid)?)
    } else {
        (rss_kib(shim)?, 0)
    };
    let _ = ctrd.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctrd.ctr(&["task", "rm", id]).status.code() != Some(0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = ctrd.ctr(&["containers", "rm", id]);
    Ok(memory)
}

pub fn run(args: &ContainerdBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.runc_runs == 0 {
        bail!("--runs and --runc-runs must be at least 1");
    }
    let ctrd = Containerd::start();
    println!("containerd: `ctr run --rm {IMAGE} ID true`, wall time (median)");
    let mut runc = Vec::new();
    for n in 0..args.runc_runs {
        runc.push(run_true(&ctrd, RUNC_RUNTIME, &format!("bench-runc-{n}"))?);
    }
    let runc = median(runc);
    println!(
        "  {RUNC_RUNTIME:<24} {:>9.3} s  ({} runs)",
        runc.as_secs_f64(),
        args.runc_runs
    );
    let mut vmrun = Vec::new();
    for n in 0..args.runs {
        let took = run_true(&ctrd, VMRUN_RUNTIME, &format!("bench-vmrun-{n}"))?;
        eprintln!("  vmrun run {n}: {:.3} s", took.as_secs_f64());
        vmrun.push(took);
    }
    let vmrun = median(vmrun);
    println!(
        "  {VMRUN_RUNTIME:<24} {:>9.3} s  ({} runs)",
        vmrun.as_secs_f64(),
        args.runs
    );
    println!(
        "  ratio vmrun/runc: {:.1}x",
        vmrun.as_secs_f64() / runc.as_secs_f64()
    );

    println!("host memory of one running task (VmRSS)");
    let (runc_shim, _) = task_memory(&ctrd, RUNC_RUNTIME, "bench-mem-runc")?;
    println!("  runc: shim {runc_shim} KiB");
    let (shim, vmm) = task_memory(&ctrd, VMRUN_RUNTIME, "bench-mem-vmrun")?;
    println!(
        "  vmrun: shim {shim} KiB + VMM {vmm} KiB = {} KiB per pod (guest RAM is touched lazily)",
        shim + vmm
    );
    Ok(())
}
