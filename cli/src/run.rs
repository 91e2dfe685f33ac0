//! `vmrun run -- CMD`: boot a microVM, run CMD in it through the agent with
//! the host's stdio, forward signals, exit with CMD's status.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use vm_config::SharedDir;
use vmrun_agent::client::{AgentClient, ClientError, ExecCommand, ExecId, StorageMount};
use vmrun_sandbox::bundle::{self, BundleSpec, RootfsCommand};
use vmrun_sandbox::host_mounts::HostMounts;
use vmrun_sandbox::{Sandbox, SandboxConfig, SandboxDir};

use crate::{tty, CliError, Result, VmArgs};

/// Exit status when vmrun itself fails: the VMM process's.
pub const VMRUN_FAILURE: i32 = vmrun_vmm::VMM_FAILURE as i32;
/// How long output may keep draining after the process exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Give the command a terminal (and put this one in raw mode).
    #[arg(short = 't', long)]
    tty: bool,
    /// Environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory of the command in the guest.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Copy the guest console to stderr.
    #[arg(long)]
    console: bool,
    /// Bytes of guest console the VM's console.log keeps (in its runtime
    /// directory); past them it says so and keeps no more.
    #[arg(long, value_name = "BYTES", default_value_t = vmrun_sandbox::console_log::LOG_CAP_BYTES)]
    console_log_cap: u64,
    /// Print when each phase ended (VM built, agent answered, command
    /// exited, VM stopped) to stderr.
    #[arg(long)]
    timings: bool,
    /// Seconds to wait for the guest agent to answer.
    #[arg(long, default_value_t = vmrun_sandbox::layout::DEFAULT_BOOT_TIMEOUT.as_secs(), value_name = "SECS")]
    boot_timeout: u64,
    /// Seconds an agent call that answers at once (signals, resizes,
    /// state) may take before the guest is taken for hung and stopped;
    /// creating the container and starting the command get --boot-timeout.
    #[arg(long, default_value_t = vmrun_sandbox::layout::DEFAULT_CALL_TIMEOUT.as_secs(), value_name = "SECS")]
    agent_timeout: u64,
    /// Let the bundle's bind mounts share host paths outside the bundle
    /// directory (refused by default: see the README's trust model).
    #[arg(long, requires = "bundle")]
    allow_host_mounts: bool,
    /// Give the VM the network of the network namespace PATH, as a pod gets
    /// its CNI network: each interface there (a veth, say) is connected to a
    /// tap of the VM by tc redirection, and the guest's interface takes its
    /// name, MAC, MTU, addresses and routes (e.g. after `ip netns add NAME`
    /// and a CNI ADD or `ip link` into it: --netns /run/netns/NAME). The
    /// container runs in that network.
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// Run the OCI bundle in DIR (its config.json and rootfs) as a container.
    #[arg(long, value_name = "DIR", conflicts_with = "rootfs")]
    bundle: Option<PathBuf>,
    /// Run CMD in a container whose root filesystem is the host directory
    /// DIR (runtime-spec defaults, writable overlay; the host copy is never
    /// written).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// The command and its arguments (with --bundle: none, the spec says).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

impl RunArgs {
    /// The container to run, if this is a container run.
    fn container(&self) -> Result<Option<BundleSpec>> {
        if let Some(dir) = &self.bundle {
            if !self.command.is_empty() || !self.env.is_empty() || self.workdir.is_some() {
                return Err(CliError::Usage(
                    "--bundle runs what its config.json says: drop CMD, -e and -w".into(),
                ));
            }
            let mut bundle = bundle::load(dir)?;
            if !self.allow_host_mounts {
                bundle.check_sources_inside()?;
            }
            bundle.terminal |= self.tty;
            return Ok(Some(bundle));
        }
        if let Some(rootfs) = &self.rootfs {
            let command = RootfsCommand {
                args: &self.command,
                env: &self.env,
                cwd: self.workdir.as_deref(),
                terminal: self.tty,
            };
            return Ok(Some(bundle::from_rootfs(rootfs, &command)?));
        }
        Ok(None)
    }

    /// The sandbox this run's VM is.
    fn sandbox_config(&self, container: bool) -> Result<SandboxConfig> {
        let vmm_binary = vmrun_sandbox::vmm_process::default_vmm_binary();
        Ok(SandboxConfig {
            boot_timeout: Duration::from_secs(self.boot_timeout),
            call_limits: vmrun_agent::client::CallLimits {
                quick: Duration::from_secs(self.agent_timeout),
                setup: Duration::from_secs(self.boot_timeout),
            },
            share: container,
            console: vmrun_sandbox::console_log::ConsoleConfig {
                echo: self.console,
                log_cap_bytes: self.console_log_cap,
            },
            network: self.netns.clone(),
            ..SandboxConfig::new(self.vm.config(), vmm_binary)
        })
    }
}

/// Runs the command; returns the exit status vmrun should end with.
pub fn run(args: RunArgs) -> Result<i32> {
    if args.command.is_empty() && args.bundle.is_none() {
        return Err(CliError::Usage(
            "nothing to run: give a command after `--`, or --bundle DIR".into(),
        ));
    }
    for var in &args.env {
        if !var.contains('=') || var.starts_with('=') {
            return Err(CliError::Usage(format!("-e {var:?}: expected KEY=VALUE")));
        }
    }
    let container = args.container()?;
    let config = args.sandbox_config(container.is_some())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::host("cannot start the async runtime"))?;
    let result = runtime.block_on(run_in_vm(&args, &config, container.as_ref()));
    // A blocking read of the host's stdin may still be pending: do not wait for it.
    runtime.shutdown_background();
    result
}

/// When each phase of a run ended, from vmrun's start.
#[derive(Default)]
struct Timings {
    vm_started: Option<Duration>,
    agent_ready: Option<Duration>,
    command_exited: Option<Duration>,
    vm_stopped: Option<Duration>,
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
        write!(
            f,
            "vmrun: timings (s): vm_started={:.3} agent_ready={:.3} command_exited={:.3} vm_stopped={:.3}",
            s(self.vm_started),
            s(self.agent_ready),
            s(self.command_exited),
            s(self.vm_stopped)
        )
    }
}

async fn run_in_vm(
    args: &RunArgs,
    config: &SandboxConfig,
    container: Option<&BundleSpec>,
) -> Result<i32> {
    let started = Instant::now();
    let mut timings = Timings::default();
    // From here on SIGINT/SIGTERM/SIGHUP no longer kill vmrun outright: a
    // VM left running, or its runtime directory, would outlive us.
    let mut signals = TerminationSignals::listen()?;
    let offset = started.elapsed();
    // Dropping the start (on a signal) stops the VM and removes its directory.
    let sandbox = tokio::select! {
        sandbox = Sandbox::start(config, SandboxDir::for_this_process(), "vmrun run") => sandbox?,
        signal = signals.next() => return Err(CliError::Interrupted(signal.as_str())),
    };
    let times = sandbox.start_times();
    timings.vm_started = Some(offset + times.vmm_spawned);
    timings.agent_ready = Some(offset + times.agent_ready);
    let mut mounts = HostMounts::default();
    let result = tokio::select! {
        result = session(args, container, &sandbox, &mut mounts, started, &mut timings, &mut signals) => result,
        reason = sandbox.stopped() => Err(CliError::Guest(format!(
            "guest stopped before the command finished: {reason}"
        ))),
    };
    timings.command_exited.get_or_insert(started.elapsed());
    if let Err(e) = mounts.cleanup() {
        tracing::warn!("{e}");
    }
    sandbox.stop().await;
    timings.vm_stopped = Some(started.elapsed());
    if args.timings {
        eprintln!("{timings}");
    }
    result
}

/// Runs the command (or container) in the sandbox with our stdio; returns
/// its status.
async fn session(
    args: &RunArgs,
    container: Option<&BundleSpec>,
    sandbox: &Arc<Sandbox>,
    mounts: &mut HostMounts,
    started: Instant,
    timings: &mut Timings,
    signals: &mut TerminationSignals,
) -> Result<i32> {
    let agent = sandbox.agent();
    // Until the command runs, a termination signal stops everything; after
    // that it is forwarded to the command.
    let launched = tokio::select! {
        launched = launch(args, container, sandbox, mounts) => match launched? {
            Ok(launched) => launched,
            Err(status) => return Ok(status),
        },
        signal = signals.next() => return Err(CliError::Interrupted(signal.as_str())),
    };
    let status = attach_and_wait(agent, &launched, timings, started, signals).await;
    if let Some(id) = &launched.container {
        crate::container::finish(agent, id).await;
    }
    status
}

/// Launches the command or container in the guest; `Ok(Err(status))` when
/// the command cannot start (see [`exec_command`]).
async fn launch(
    args: &RunArgs,
    container: Option<&BundleSpec>,
    sandbox: &Sandbox,
    mounts: &mut HostMounts,
) -> Result<Result<Launched, i32>> {
    mount_user_shares(&args.vm.shares, sandbox.agent()).await?;
    match container {
        Some(bundle) => {
            let id = format!("vmrun-{}", std::process::id());
            crate::container::create(sandbox, &id, bundle, mounts)
                .await
                .map(Ok)
        }
        None => exec_command(args, sandbox.agent()).await,
    }
}

/// Where `vmrun run` mounts each `--share TAG=DIR` in the guest: the tag a
/// user gave means nothing to a guest restored from a snapshot (its
/// virtio-fs devices are slots), so the agent, which maps tags onto slots,
/// mounts them.
const USER_SHARES_DIR: &str = "/mnt";

async fn mount_user_shares(shares: &[SharedDir], agent: &AgentClient) -> Result<()> {
    for share in shares {
        let mut mount =
            StorageMount::virtiofs(&share.tag, format!("{USER_SHARES_DIR}/{}", share.tag));
        if share.read_only {
            mount = mount.read_only();
        }
        agent
            .mount_storage(mount)
            .await
            .map_err(CliError::agent("mount a --share in the guest"))?;
    }
    Ok(())
}

fn listen(kind: SignalKind) -> Result<tokio::signal::unix::Signal> {
    signal(kind).map_err(CliError::host("cannot handle signals"))
}

/// SIGINT, SIGTERM and SIGHUP, caught from [`listen`](Self::listen) on
/// instead of killing vmrun: before the command runs they stop the VM,
/// afterwards they are forwarded to the command.
struct TerminationSignals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
}

impl TerminationSignals {
    fn listen() -> Result<Self> {
        Ok(Self {
            sigint: listen(SignalKind::interrupt())?,
            sigterm: listen(SignalKind::terminate())?,
            sighup: listen(SignalKind::hangup())?,
        })
    }

    /// The next one received.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.sigint.recv() => Signal::SIGINT,
            _ = self.sigterm.recv() => Signal::SIGTERM,
            _ = self.sighup.recv() => Signal::SIGHUP,
        }
    }
}

/// A process whose stdio the host attaches to.
pub struct Launched {
    pub exec_id: ExecId,
    pub terminal: bool,
    /// The container to start once output is attached.
    pub container: Option<String>,
}

/// Starts the plain command; `Err(status)` when it cannot start the way a
/// shell reports it (127 not found, 126 not executable).
async fn exec_command(args: &RunArgs, agent: &AgentClient) -> Result<Result<Launched, i32>> {
    let mut command = ExecCommand::new(args.command.iter().cloned());
    for var in &args.env {
        command = command.env(var.clone());
    }
    if let Some(dir) = &args.workdir {
        command = command.cwd(dir.clone());
    }
    if args.tty {
        let (rows, cols) = terminal_size();
        command = command.terminal(rows, cols);
    }
    match agent.exec(command).await {
        Ok(process) => Ok(Ok(Launched {
            exec_id: process.exec_id,
            terminal: args.tty,
            container: None,
        })),
        Err(err) => {
            let status = match err.code() {
                Some(tonic::Code::NotFound) => 127,
                Some(tonic::Code::PermissionDenied) => 126,
                _ => return Err(CliError::agent("cannot start the command")(err)),
            };
            eprintln!("vmrun: {}: {err}", args.command[0]);
            Ok(Err(status))
        }
    }
}

/// The host terminal's size, or 24x80 when stdout is no terminal.
pub fn terminal_size() -> (u16, u16) {
    tty::size(std::io::stdout()).unwrap_or((24, 80))
}

/// Connects stdio to the launched process, starts it if it is a created
/// container, forwards signals, and returns its exit status.
async fn attach_and_wait(
    agent: &AgentClient,
    launched: &Launched,
    timings: &mut Timings,
    started: Instant,
    signals: &mut TerminationSignals,
) -> Result<i32> {
    let id = &launched.exec_id;
    let stdin = std::io::stdin();
    let raw = if launched.terminal && stdin.is_terminal() {
        Some(
            tty::RawMode::enable(stdin.as_fd())
                .map_err(|e| CliError::host("cannot set raw mode")(e.into()))?,
        )
    } else {
        None
    };

    // The agent keeps a process's output from its first byte until a reader
    // attaches, so the streams and the start go out together: one round
    // trip to the guest instead of three (each ~0.3 s on a software-KVM
    // host). With a terminal the guest merges stderr into the terminal.
    let (stdout, stderr, start) = tokio::join!(
        agent.read_stdout(id),
        async {
            match launched.terminal {
                true => None,
                false => Some(agent.read_stderr(id).await),
            }
        },
        async {
            match &launched.container {
                Some(container) => agent.start_container(container).await,
                None => Ok(()),
            }
        },
    );
    let stdout = spawn_output(stdout, tokio::io::stdout());
    let stderr = stderr.map(|stream| spawn_output(stream, tokio::io::stderr()));
    let stdin_copy = {
        let agent = agent.clone();
        let id = id.clone();
        tokio::spawn(async move { agent.copy_stdin(&id, tokio::io::stdin()).await })
    };
    if let Err(e) = start {
        stdin_copy.abort();
        return Err(CliError::agent("cannot start the container")(e));
    }

    let exit = wait_forwarding_signals(agent, id, launched.terminal, signals).await;
    timings.command_exited = Some(started.elapsed());
    for output in [Some(stdout), stderr].into_iter().flatten() {
        match tokio::time::timeout(OUTPUT_DRAIN, output).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("output stream: {e}"),
            Ok(Err(e)) => tracing::warn!("output task: {e}"),
            Err(_) => tracing::warn!("output still open {OUTPUT_DRAIN:?} after exit"),
        }
    }
    stdin_copy.abort();
    drop(raw);
    Ok(exit?.shell_exit_code())
}

type OutputTask = tokio::task::JoinHandle<Result<u64>>;

fn spawn_output<W>(
    stream: Result<vmrun_agent::client::OutputStream, ClientError>,
    mut sink: W,
) -> OutputTask
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let stream = stream.map_err(CliError::agent("cannot attach output"))?;
        let copied = stream
            .copy_to(&mut sink)
            .await
            .map_err(CliError::agent("output"))?;
        sink.flush().await.map_err(CliError::host("flush"))?;
        Ok(copied)
    })
}

/// Waits for the process; SIGINT/SIGTERM (and SIGHUP) received meanwhile go
/// to it, and with a terminal, size changes follow the host terminal.
async fn wait_forwarding_signals(
    agent: &AgentClient,
    id: &ExecId,
    tty_mode: bool,
    signals: &mut TerminationSignals,
) -> Result<vmrun_agent::client::ProcessExit> {
    let mut winch = listen(SignalKind::window_change())?;
    let wait = agent.wait(id);
    tokio::pin!(wait);
    loop {
        let forward = tokio::select! {
            exit = &mut wait => return exit.map_err(CliError::agent("waiting for the command")),
            signal = signals.next() => signal as i32,
            _ = winch.recv() => {
                if tty_mode {
                    if let Some((rows, cols)) = tty::size(std::io::stdout()) {
                        if let Err(e) = agent.resize_pty(id, rows, cols).await {
                            tracing::warn!("resize: {e}");
                        }
                    }
                }
                continue;
            }
        };
        if let Err(e) = agent.signal(id, forward).await {
            tracing::warn!("cannot forward signal {forward}: {e}");
        }
    }
}
