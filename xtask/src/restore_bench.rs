//! `cargo xtask bench-restore`: a sandbox restored from the default
//! snapshot against a cold boot, and QEMU restoring an equivalent saved
//! guest (`-incoming`) in the same run; then the host memory of many idle
//! restored sandboxes against one. Prints figures, asserts nothing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use vmrun_agent::client::{dial_hybrid_vsock, SandboxInit};

use crate::boot_bench::{qemu_command, secs, Installed};

const READY: &str = "vmrun-agent ready";

#[derive(Args)]
pub struct RestoreBenchArgs {
    /// Restores timed one after the other.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Idle restored sandboxes running at once for the memory figure.
    #[arg(long, default_value_t = 10)]
    sandboxes: usize,
    /// Skip the cold boots (vmrun's and QEMU's, minutes each on a
    /// software-KVM host) and QEMU's restore, which needs a QEMU boot.
    #[arg(long)]
    no_cold: bool,
    #[command(flatten)]
    installed: Installed,
    /// Seconds after which a cold boot is given up.
    #[arg(long, default_value_t = 600)]
    limit: u64,
    /// Working directory (sockets, consoles, QEMU's saved guest).
    #[arg(long, default_value = "/tmp/vmrun-bench-restore")]
    dir: PathBuf,
}

/// A `vmrun-vmm` process serving one sandbox, as the sandbox layer starts
/// it (the default VM, its vsock at a socket of ours).
struct Sandbox {
    child: Child,
    socket: PathBuf,
    started: Instant,
}

impl Sandbox {
    fn start(vmrun: &Path, dir: &Path, name: &str, snapshot: &str) -> anyhow::Result<Self> {
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let config = vmm::VmConfig {
            vsock_uds: Some(socket.clone()),
            snapshot: snapshot.parse().map_err(anyhow::Error::msg)?,
            ..vmm::VmConfig::default()
        };
        let config_file = dir.join(format!("{name}.json"));
        std::fs::write(&config_file, serde_json::to_vec(&config)?)?;
        let console = std::fs::File::create(dir.join(format!("{name}.console")))?;
        let vmm_binary = vmrun.with_file_name("vmrun-vmm");
        let started = Instant::now();
        let child = Command::new(&vmm_binary)
            .arg("--config")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .with_context(|| format!("cannot start {}", vmm_binary.display()))?;
        Ok(Self {
            child,
            socket,
            started,
        })
    }

    /// Time from the VMM's start to the agent's first answer, and to the
    /// end of `InitSandbox`.
    async fn until_initialised(&self, limit: Duration) -> anyhow::Result<(Duration, Duration)> {
        let agent = dial_hybrid_vsock(
            &self.socket,
            vmrun_agent::AGENT_VSOCK_PORT,
            Instant::now() + limit,
        )
        .await
        .context("the agent did not answer")?;
        let answered = self.started.elapsed();
        agent
            .init_sandbox(&SandboxInit::default())
            .await
            .context("InitSandbox")?;
        Ok((answered, self.started.elapsed()))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Rss and Pss of a process and its descendants, KiB (PSS counts each
/// shared page once across the processes that map it, split between them).
/// A `vmrun-vmm` is two processes under the jail: the supervisor and the
/// VMM, its child, which holds the guest memory.
fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (mut rss, mut pss) = (field("Rss:"), field("Pss:"));
    for child in children(pid) {
        let (child_rss, child_pss) = memory_kib(child)?;
        rss += child_rss;
        pss += child_pss;
    }
    Ok((rss, pss))
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A QMP connection: one JSON object a line; events are skipped.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path, deadline: Instant) -> anyhow::Result<Self> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => bail!("QMP {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let mut qmp = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        qmp.line()?; // greeting
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    fn line(&mut self) -> anyhow::Result<serde_json::Value> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("QMP connection closed");
            }
            let value: serde_json::Value = serde_json::from_str(&line)?;
            if value.get("event").is_none() {
                return Ok(value);
            }
        }
    }

    fn execute_with(
        &mut self,
        command: &str,
        arguments: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let request = serde_json::json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{request}")?;
        let answer = self.line()?;
        if let Some(error) = answer.get("error") {
            bail!("QMP {command}: {error}");
        }
        Ok(answer["return"].clone())
    }

    fn execute(&mut self, command: &str) -> anyhow::Result<serde_json::Value> {
        self.execute_with(command, serde_json::json!({}))
    }
}

fn qemu(args: &RestoreBenchArgs, cmdline: &str, qmp: &Path) -> Command {
    let config = vmm::VmConfig::default();
    let mut cmd = qemu_command(
        config.vcpus,
        config.memory_mib,
        &args.installed.share,
        cmdline,
    );
    cmd.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    cmd
}

/// Boots QEMU to the agent's ready line and saves the guest to `file`.
fn qemu_save(args: &RestoreBenchArgs, cmdline: &str, file: &Path) -> anyhow::Result<Duration> {
    let qmp_path = args.dir.join("qemu-save.qmp");
    let _ = std::fs::remove_file(&qmp_path);
    let started = Instant::now();
    let mut child = qemu(args, cmdline, &qmp_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let result = (|| {
        let mut qmp = Qmp::connect(&qmp_path, started + Duration::from_secs(10))?;
        let deadline = started + Duration::from_secs(args.limit);
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .context("QEMU ended before the agent was ready")??;
            if line.contains(READY) {
                break;
            }
            if Instant::now() > deadline {
                bail!("QEMU's guest did not reach the agent in {} s", args.limit);
            }
        }
        let booted = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        qmp.execute("stop")?;
        let uri = format!("exec:cat > {}", file.display());
        qmp.execute_with("migrate", serde_json::json!({"uri": uri}))?;
        loop {
            let status = qmp.execute("query-migrate")?;
            match status["status"].as_str() {
                Some("completed") => break,
                Some("failed") | Some("cancelled") => bail!("QEMU migration: {status}"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        Ok(booted)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Starts QEMU on the saved guest; time to `running` (it loads the saved
/// guest and, as that was stopped when saved, waits for `cont`), and its
/// memory.
fn qemu_restore(
    args: &RestoreBenchArgs,
    cmdline: &str,
    file: &Path,
) -> anyhow::Result<(Duration, u64, u64)> {
    let qmp_path = args.dir.join("qemu-restore.qmp");
    let _ = std::fs::remove_file(&qmp_path);
    let started = Instant::now();
    let mut child = qemu(args, cmdline, &qmp_path)
        .arg("-incoming")
        .arg(format!("exec:cat {}", file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let result = (|| {
        let mut qmp = Qmp::connect(&qmp_path, started + Duration::from_secs(10))?;
        loop {
            let status = qmp.execute("query-status")?;
            match status["status"].as_str() {
                Some("running") => break,
                // Loaded; paused because the guest was stopped when saved.
                Some("paused") => {
                    qmp.execute("cont")?;
                }
                _ => {}
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("QEMU did not resume: {status}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let resumed = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let (rss, pss) = memory_kib(child.id())?;
        Ok((resumed, rss, pss))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

pub fn run(args: &RestoreBenchArgs) -> anyhow::Result<()> {
    // VMRUN_LOG=vmrun_agent=debug shows each dial attempt.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VMRUN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    std::fs::create_dir_all(&args.dir)?;
    let vmrun = args.installed.vmrun();
    let runtime = tokio::runtime::Runtime::new()?;
    let limit = Duration::from_secs(args.limit);
    let config = vmm::VmConfig::default();
    println!(
        "default sandbox: {} vCPUs, {} MiB; vmrun {}",
        config.vcpus,
        config.memory_mib,
        vmrun.display()
    );

    println!(
        "\nvmrun, restored from the default snapshot ({} runs):",
        args.runs
    );
    let mut restored = Vec::new();
    for i in 0..args.runs {
        let sandbox = Sandbox::start(&vmrun, &args.dir, &format!("restore-{i}"), "auto")?;
        let (answered, initialised) = runtime.block_on(sandbox.until_initialised(limit))?;
        let (rss, pss) = memory_kib(sandbox.pid())?;
        println!(
            "  run {}: agent answered after {:.3} s, InitSandbox done after {:.3} s; VMM RSS {}, PSS {}",
            i + 1,
            answered.as_secs_f64(),
            initialised.as_secs_f64(),
            mib(rss),
            mib(pss)
        );
        restored.push(answered);
    }

    let mut cold = None;
    let mut qemu = None;
    if !args.no_cold {
        let sandbox = Sandbox::start(&vmrun, &args.dir, "cold", "off")?;
        match runtime.block_on(sandbox.until_initialised(limit)) {
            Ok((answered, _)) => {
                let (rss, pss) = memory_kib(sandbox.pid())?;
                println!(
                    "\nvmrun, cold boot: agent answered after {:.2} s; VMM RSS {}, PSS {}",
                    answered.as_secs_f64(),
                    mib(rss),
                    mib(pss)
                );
                cold = Some(answered);
            }
            Err(e) => println!("\nvmrun, cold boot: FAILED: {e:#}"),
        }
        drop(sandbox);

        let cmdline = String::from_utf8(Command::new(&vmrun).arg("cmdline").output()?.stdout)?
            .trim()
            .to_string();
        let saved = args.dir.join("qemu-guest.migration");
        match qemu_save(args, &cmdline, &saved) {
            Ok(booted) => {
                let size = std::fs::metadata(&saved).map(|m| m.len()).unwrap_or(0);
                println!(
                    "QEMU microvm, cold boot to the agent's ready line: {:.2} s; saved guest {}",
                    booted.as_secs_f64(),
                    mib(size / 1024)
                );
                for i in 0..args.runs {
                    match qemu_restore(args, &cmdline, &saved) {
                        Ok((resumed, rss, pss)) => {
                            println!(
                                "  QEMU -incoming run {}: running after {:.3} s; RSS {}, PSS {}",
                                i + 1,
                                resumed.as_secs_f64(),
                                mib(rss),
                                mib(pss)
                            );
                            qemu = Some(qemu.map_or(resumed, |q: Duration| q.min(resumed)));
                        }
                        Err(e) => println!("  QEMU -incoming run {}: FAILED: {e:#}", i + 1),
                    }
                }
            }
            Err(e) => println!("QEMU microvm: FAILED to boot and save: {e:#}"),
        }
        let _ = std::fs::remove_file(&saved);
    }

    let best = restored.iter().min().copied();
    println!("\nbest of runs            vmrun restore   vmrun cold   QEMU -incoming (to running)");
    println!(
        "to agent answer / run   {:>13}   {:>10}   {:>14}",
        secs(best),
        secs(cold),
        secs(qemu)
    );

    println!("\n{} idle restored sandboxes at once:", args.sandboxes);
    let mut many = Vec::new();
    for i in 0..args.sandboxes {
        many.push(Sandbox::start(
            &vmrun,
            &args.dir,
            &format!("many-{i}"),
            "auto",
        )?);
    }
    for sandbox in &many {
        runtime.block_on(sandbox.until_initialised(limit))?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut total = (0, 0);
    for sandbox in &many {
        let (rss, pss) = memory_kib(sandbox.pid())?;
        total = (total.0 + rss, total.1 + pss);
    }
    let n = args.sandboxes.max(1) as u64;
    println!(
        "  summed VMM RSS {} (the snapshot's shared pages counted in each), summed PSS {} \
         (each shared page once), PSS per sandbox {}",
        mib(total.0),
        mib(total.1),
        mib(total.1 / n)
    );
    drop(many);
    let one = Sandbox::start(&vmrun, &args.dir, "one", "auto")?;
    runtime.block_on(one.until_initialised(limit))?;
    std::thread::sleep(Duration::from_secs(2));
    let (rss, pss) = memory_kib(one.pid())?;
    println!(
        "  one restored sandbox alone: RSS {}, PSS {}; {} sandboxes' summed PSS / one's: {:.2}x",
        mib(rss),
        mib(pss),
        args.sandboxes,
        total.1 as f64 / pss.max(1) as f64
    );
    Ok(())
}
