//! `cargo xtask bench-containers`: one microVM with a virtio-fs share of a
//! host temp directory. Measures container start inside the VM (the agent's
//! create_container up to the first output byte of `echo`), and the same
//! file operations (dd of an 8 MiB file by default, 200 small files) on
//! the share in the guest, on a tmpfs in the guest and on the shared
//! directory on the host, side by side. The guest tmpfs column is what the
//! guest kernel alone costs (every page it zeroes or copies), so the
//! difference to it is what going through virtio-fs adds. Prints figures;
//! asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use oci_spec::runtime::Spec;
use vmm::config::SharedDir;
use vmm::{Vm, VmConfig};
use vmrun_agent::client::{
    dial_sandbox, AgentClient, ContainerCreate, ExecCommand, ProcessExit, SandboxInit, StorageMount,
};

const ROOTFS_MOUNT: &str = "/run/vmrun/rootfs/bench";
const DATA_MOUNT: &str = "/run/vmrun/bench-data";
/// A tmpfs in the guest, the baseline without virtio-fs.
const GUEST_TMPFS: &str = "/run/vmrun/bench-tmpfs";
/// The busybox whose `sh`, `dd`, `stat` and `rm` run the host half, as
/// the guest's do.
const HOST_BUSYBOX: &str = "/bin/busybox";

#[derive(Args)]
pub struct ContainersBenchArgs {
    /// Container starts measured (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Size of the sequentially written and read file, in MiB.
    #[arg(long, default_value_t = 8)]
    file_mib: u32,
    /// Number of small files created, stat'ed and deleted.
    #[arg(long, default_value_t = 200)]
    files: u32,
    /// Guest kernel (default: the installed one).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest initramfs (default: the installed one).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u64,
    /// Seconds to wait for the guest agent.
    #[arg(long, default_value_t = 600)]
    boot_timeout: u64,
}

/// One file-system operation, as a shell script run in a directory `$D`
/// (`$MIB`: the big file's size, `$N`: the number of small files).
struct FsOp {
    name: &'static str,
    script: &'static str,
    /// What the rate counts.
    unit: Unit,
}

#[derive(Clone, Copy)]
enum Unit {
    MiB,
    Files,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::MiB => "MiB/s",
            Unit::Files => "files/s",
        }
    }
}

/// The parameters every script sees, on either side.
#[derive(Clone, Copy)]
struct Sizes {
    mib: u32,
    files: u32,
}

impl Sizes {
    fn amount(self, unit: Unit) -> f64 {
        match unit {
            Unit::MiB => f64::from(self.mib),
            Unit::Files => f64::from(self.files),
        }
    }

    fn env(self, dir: &str) -> [(&'static str, String); 3] {
        [
            ("D", dir.to_string()),
            ("MIB", self.mib.to_string()),
            ("N", self.files.to_string()),
        ]
    }
}

const FS_OPS: &[FsOp] = &[
    FsOp {
        name: "write file (dd bs=1M)",
        script: "dd if=/dev/zero of=$D/big bs=1M count=$MIB 2>/dev/null",
        unit: Unit::MiB,
    },
    FsOp {
        name: "read file (dd bs=1M)",
        script: "dd if=$D/big of=/dev/null bs=1M 2>/dev/null && rm $D/big",
        unit: Unit::MiB,
    },
    FsOp {
        name: "create small files",
        script: "mkdir $D/s && i=0; while [ $i -lt $N ]; do : > $D/s/f$i; i=$((i+1)); done",
        unit: Unit::Files,
    },
    FsOp {
        name: "stat small files",
        script: "stat -c %s $D/s/* >/dev/null",
        unit: Unit::Files,
    },
    FsOp {
        name: "delete small files",
        script: "rm -r $D/s",
        unit: Unit::Files,
    },
];

/// Guest page cache is dropped before a read so the data crosses virtio-fs.
const GUEST_DROP_CACHES: &str = "sync; echo 3 > /proc/sys/vm/drop_caches";

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A host temp directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wall time of `script` in busybox sh on the host, with `D` set to `dir`.
fn host_sh(script: &str, dir: &Path, sizes: Sizes) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let done = Command::new(HOST_BUSYBOX)
        .args(["sh", "-c", script])
        .envs(sizes.env(&dir.to_string_lossy()))
        .output()
        .with_context(|| format!("cannot run {HOST_BUSYBOX} sh"))?;
    let took = started.elapsed();
    if !done.status.success() {
        bail!("host: {script}: {done:?}");
    }
    Ok(took)
}

/// Wall time of `script` run by the guest agent (outside any container),
/// with `D` set to `dir`.
async fn guest_sh(
    agent: &AgentClient,
    script: &str,
    dir: &str,
    sizes: Sizes,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let command = sizes
        .env(dir)
        .into_iter()
        .fold(ExecCommand::new(["sh", "-c", script]), |command, (k, v)| {
            command.env(format!("{k}={v}"))
        });
    let process = agent.exec(command).await.context("exec in the guest")?;
    agent.close_stdin(&process.exec_id).await?;
    let stderr = agent.read_stderr(&process.exec_id).await?.read_to_end();
    let exit = agent.wait(&process.exec_id).await?;
    let took = started.elapsed();
    if exit != ProcessExit::Exited(0) {
        let stderr = stderr.await.unwrap_or_default();
        bail!(
            "guest: {script}: {exit:?} {}",
            String::from_utf8_lossy(&stderr)
        );
    }
    Ok(took)
}

/// `runc spec`'s defaults (read-only root, so no overlay: what `vmrun run
/// --bundle` does with such a bundle) running `echo hello`, no terminal.
fn echo_spec() -> anyhow::Result<Vec<u8>> {
    let mut spec = Spec::default();
    let process = spec
        .process_mut()
        .as_mut()
        .context("default spec has no process")?;
    process.set_args(Some(vec!["echo".into(), "hello".into()]));
    process.set_terminal(Some(false));
    Ok(serde_json::to_vec(&spec)?)
}

/// Container start: create_container up to the first byte `echo` writes.
/// Returns (create, first byte), both from the create call.
async fn container_start(agent: &AgentClient, id: &str) -> anyhow::Result<(Duration, Duration)> {
    let spec = echo_spec()?;
    let started = Instant::now();
    let init = agent
        .create_container(ContainerCreate::new(id, spec, ROOTFS_MOUNT))
        .await
        .context("create container")?;
    let created = started.elapsed();
    let mut stdout = agent.read_stdout(&init.exec_id).await?;
    agent.close_stdin(&init.exec_id).await?;
    agent.start_container(id).await.context("start container")?;
    let first = stdout.next_chunk().await?;
    let first_byte = started.elapsed();
    if first.is_none() {
        bail!("container {id} wrote nothing");
    }
    let exit = agent.wait(&init.exec_id).await?;
    agent.remove_container(id, true).await?;
    if exit != ProcessExit::Exited(0) {
        bail!("container {id}: {exit:?}");
    }
    Ok((created, first_byte))
}

async fn dial(args: &ContainersBenchArgs, socket: &Path) -> anyhow::Result<AgentClient> {
    let deadline = Instant::now() + Duration::from_secs(args.boot_timeout);
    let init = SandboxInit {
        share_tags: vec!["rootfs".into(), "data".into()],
        hostname: String::new(),
    };
    dial_sandbox(socket, vmrun_agent::AGENT_VSOCK_PORT, deadline, &init)
        .await
        .context("the guest agent did not answer")
}

async fn bench(args: &ContainersBenchArgs, dir: &Path) -> anyhow::Result<()> {
    let bundle = dir.join("bundle");
    vmrun_tests::busybox_bundle(&bundle);
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let defaults = VmConfig::default();
    let config = VmConfig {
        kernel: args.kernel.clone().unwrap_or(defaults.kernel),
        initrd: args.initrd.clone().or(defaults.initrd),
        memory_mib: args.memory,
        vsock_uds: Some(dir.join("vsock.sock")),
        shares: vec![
            SharedDir::new("rootfs", bundle.join("rootfs"), true),
            SharedDir::new("data", data.clone(), false),
        ],
        ..defaults
    };
    let console = std::fs::File::create(dir.join("console.log"))?;
    let booted = Instant::now();
    let mut vm = Vm::start(&config, console).context("start the VM")?;
    let result = async {
        let agent = dial(args, &dir.join("vsock.sock")).await?;
        println!(
            "one microVM ({} vCPUs, {} MiB), agent ready after {:.1} s",
            config.vcpus,
            config.memory_mib,
            secs(booted.elapsed())
        );
        agent
            .mount_storage(StorageMount::virtiofs("rootfs", ROOTFS_MOUNT).read_only())
            .await?;
        agent
            .mount_storage(StorageMount::virtiofs("data", DATA_MOUNT))
            .await?;
        measure(args, &agent, &data).await
    }
    .await;
    vm.stop();
    result.with_context(|| format!("guest console: {}", dir.join("console.log").display()))
}

async fn measure(
    args: &ContainersBenchArgs,
    agent: &AgentClient,
    data: &Path,
) -> anyhow::Result<()> {
    println!("container start in the VM: create_container -> first output byte of `echo`");
    let mut creates = Vec::new();
    let mut firsts = Vec::new();
    for n in 0..args.runs {
        let (create, first) = container_start(agent, &format!("bench-{n}")).await?;
        eprintln!(
            "  run {n}: created {:.3} s, first byte {:.3} s",
            secs(create),
            secs(first)
        );
        creates.push(create);
        firsts.push(first);
    }
    println!(
        "  create {:.3} s, first byte {:.3} s (median of {})",
        secs(median(creates)),
        secs(median(firsts)),
        args.runs
    );

    let sizes = Sizes {
        mib: args.file_mib,
        files: args.files,
    };
    guest_sh(
        agent,
        "mkdir -p $D && mount -t tmpfs bench $D",
        GUEST_TMPFS,
        sizes,
    )
    .await?;
    // What running a shell costs on each side, taken off every figure.
    let mut guest_base = Vec::new();
    let mut host_base = Vec::new();
    for _ in 0..3 {
        guest_base.push(guest_sh(agent, ":", DATA_MOUNT, sizes).await?);
        host_base.push(host_sh(":", data, sizes)?);
    }
    let guest_base = median(guest_base);
    // The host's files go next to the guest's, in the shared directory.
    let host_dir = data.join("host");
    std::fs::create_dir_all(&host_dir)?;
    let host_base = median(host_base);
    println!(
        "file operations: virtio-fs in the guest | tmpfs in the guest | the shared directory on \
         the host ({} MiB file, {} small files; busybox sh; shell start-up taken off: guest {:.3} s, \
         host {:.3} s)",
        sizes.mib,
        sizes.files,
        secs(guest_base),
        secs(host_base)
    );
    println!(
        "  {:<22} {:>20} {:>20} {:>20}",
        "operation", "guest virtio-fs", "guest tmpfs", "host"
    );
    for op in FS_OPS {
        let mut cells = Vec::new();
        for dir in [DATA_MOUNT, GUEST_TMPFS] {
            if op.name.starts_with("read") {
                guest_sh(agent, GUEST_DROP_CACHES, dir, sizes).await?;
            }
            let took = guest_sh(agent, op.script, dir, sizes).await?;
            cells.push(took.saturating_sub(guest_base));
        }
        cells.push(host_sh(op.script, &host_dir, sizes)?.saturating_sub(host_base));
        let amount = sizes.amount(op.unit);
        let cell = |d: &Duration| {
            let rate = amount / d.as_secs_f64().max(1e-6);
            format!("{:.3} s {:>7.1}", secs(*d), rate)
        };
        println!(
            "  {:<22} {:>20} {:>20} {:>20}  ({})",
            op.name,
            cell(&cells[0]),
            cell(&cells[1]),
            cell(&cells[2]),
            op.unit.label()
        );
    }
    Ok(())
}

pub fn run(args: &ContainersBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.file_mib == 0 || args.files == 0 {
        bail!("--runs, --file-mib and --files must be at least 1");
    }
    if !Path::new(HOST_BUSYBOX).exists() {
        bail!("{HOST_BUSYBOX} is missing (busybox-static; scripts/setup.sh installs it)");
    }
    let dir = TempDir(
        std::env::temp_dir().join(format!("vmrun-bench-containers-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(args, &dir.0))
}
