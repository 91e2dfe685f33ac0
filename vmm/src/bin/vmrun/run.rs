//! `vmrun run -- CMD`: boot a microVM, run CMD in it through the agent with
//! the host's stdio, forward signals, exit with CMD's status.

use std::future::Future;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use vmm::console::ConsoleEvent;
use vmm::{Vm, VmEvent};
use vmrun_agent::client::{
    dial_sandbox, AgentClient, ClientError, ExecCommand, ExecId, SandboxInit,
};

use crate::console_tail::ConsoleTail;
use crate::file_binds::FileBinds;
use crate::runtime_dir::RuntimeDir;
use crate::{tty, VmArgs};
use std::path::PathBuf;
use vmm::oci::{self, ContainerPlan};

/// Exit status when vmrun itself fails (as `docker run` does).
pub const VMRUN_FAILURE: i32 = 125;
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
    /// Print when each phase ended (VM built, agent answered, command
    /// exited, VM stopped) to stderr.
    #[arg(long)]
    timings: bool,
    /// Seconds to wait for the guest agent to answer.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    boot_timeout: u64,
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
    fn container_plan(&self) -> Result<Option<ContainerPlan>, String> {
        let id = format!("vmrun-{}", std::process::id());
        if let Some(bundle) = &self.bundle {
            if !self.command.is_empty() || !self.env.is_empty() || self.workdir.is_some() {
                return Err("--bundle runs what its config.json says: drop CMD, -e and -w".into());
            }
            let mut plan = oci::plan_bundle(bundle, &id).map_err(|e| e.to_string())?;
            plan.terminal |= self.tty;
            return Ok(Some(plan));
        }
        if let Some(rootfs) = &self.rootfs {
            let command = oci::RootfsCommand {
                args: &self.command,
                env: &self.env,
                cwd: self.workdir.as_deref(),
                terminal: self.tty,
            };
            return oci::plan_rootfs(rootfs, &id, &command)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        Ok(None)
    }
}

/// Runs the command; returns the exit status vmrun should end with.
pub fn run(args: RunArgs) -> Result<i32, String> {
    if args.command.is_empty() && args.bundle.is_none() {
        return Err("nothing to run: give a command after `--`, or --bundle DIR".into());
    }
    for var in &args.env {
        if !var.contains('=') || var.starts_with('=') {
            return Err(format!("-e {var:?}: expected KEY=VALUE"));
        }
    }
    let container = args.container_plan()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(run_in_vm(&args, container.as_ref()));
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

async fn run_in_vm(args: &RunArgs, container: Option<&ContainerPlan>) -> Result<i32, String> {
    let started = Instant::now();
    let mut timings = Timings::default();
    // From here on SIGINT/SIGTERM/SIGHUP no longer kill vmrun outright: a
    // VM left running, or its runtime directory, would outlive us.
    let mut signals = TerminationSignals::listen()?;
    let dir = RuntimeDir::create(&crate::vm_name())?;
    let mut config = args.vm.config(dir.vsock_socket());
    // Dropped before `dir`, whose removal needs the files unmounted.
    let _file_binds = match container {
        Some(plan) => {
            config.shares.extend(plan.shares(&dir.files_dir()));
            Some(FileBinds::bind(&dir.files_dir(), &plan.files).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let console = ConsoleTail::new(args.console);
    let mut vm = Vm::start(&config, console.clone()).map_err(|e| e.to_string())?;
    timings.vm_started = Some(started.elapsed());
    let init = SandboxInit {
        share_tags: config.shares.iter().map(|s| s.tag.clone()).collect(),
        hostname: String::new(),
    };
    let result = supervise(
        &vm,
        &console,
        session(
            args,
            container,
            &dir,
            &init,
            &console,
            started,
            &mut timings,
            &mut signals,
        ),
    )
    .await;
    timings.command_exited.get_or_insert(started.elapsed());
    vm.stop();
    timings.vm_stopped = Some(started.elapsed());
    if args.timings {
        eprintln!("{timings}");
    }
    result
}

/// Drives `work` while watching the VM: if the guest stops first, that is
/// the error, with the end of the guest console.
async fn supervise(
    vm: &Vm,
    console: &ConsoleTail,
    work: impl Future<Output = Result<i32, String>>,
) -> Result<i32, String> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut panic = None;
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = tick.tick() => {
                while let Some(event) = vm.try_event() {
                    match event {
                        VmEvent::Console(ConsoleEvent::KernelPanic(line))
                        | VmEvent::Console(ConsoleEvent::AgentFatal(line)) => {
                            panic.get_or_insert(line);
                        }
                        VmEvent::Console(ConsoleEvent::AgentReady) => {}
                        VmEvent::Exited(exit) => {
                            let why = panic.take().unwrap_or_else(|| exit.to_string());
                            return Err(format!(
                                "guest stopped before the command finished: {why}\n\
                                 --- end of guest console ---\n{}",
                                console.contents()
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn client_error(what: &str, err: ClientError) -> String {
    format!("{what}: {err}")
}

/// Connects to the agent, runs the command with our stdio, returns its status.
#[allow(clippy::too_many_arguments)]
async fn session(
    args: &RunArgs,
    container: Option<&ContainerPlan>,
    dir: &RuntimeDir,
    init: &SandboxInit,
    console: &ConsoleTail,
    started: Instant,
    timings: &mut Timings,
    signals: &mut TerminationSignals,
) -> Result<i32, String> {
    // Until the command runs, a termination signal stops everything; after
    // that it is forwarded to the command.
    let (agent, launched) = tokio::select! {
        launched = launch(args, container, dir, init, console, started, timings) => match launched? {
            Ok(launched) => launched,
            Err(status) => return Ok(status),
        },
        signal = signals.next() => {
            return Err(format!(
                "{} before the command started: stopping the microVM",
                signal.as_str()
            ));
        }
    };
    let status = attach_and_wait(&agent, &launched, timings, started, signals).await;
    if let Some(plan) = container {
        crate::container::finish(&agent, plan).await;
    }
    status
}

/// Waits for the agent and launches the command or container in the guest;
/// `Ok(Err(status))` when the command cannot start (see [`exec_command`]).
async fn launch(
    args: &RunArgs,
    container: Option<&ContainerPlan>,
    dir: &RuntimeDir,
    init: &SandboxInit,
    console: &ConsoleTail,
    started: Instant,
    timings: &mut Timings,
) -> Result<Result<(AgentClient, Launched), i32>, String> {
    let deadline = Instant::now() + Duration::from_secs(args.boot_timeout);
    let agent = dial_sandbox(
        dir.vsock_socket(),
        vmrun_agent::AGENT_VSOCK_PORT,
        deadline,
        init,
    )
    .await
    .map_err(|e| {
        // Like a guest that died: say where it got to.
        format!(
            "the guest agent did not answer: {e}\n--- end of guest console ---\n{}",
            console.contents()
        )
    })?;
    timings.agent_ready = Some(started.elapsed());
    let launched = match container {
        Some(plan) => crate::container::create(&agent, plan, &dir.files_dir()).await?,
        None => match exec_command(args, &agent).await? {
            Ok(launched) => launched,
            Err(status) => return Ok(Err(status)),
        },
    };
    Ok(Ok((agent, launched)))
}

fn listen(kind: SignalKind) -> Result<tokio::signal::unix::Signal, String> {
    signal(kind).map_err(|e| format!("cannot handle signals: {e}"))
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
    fn listen() -> Result<Self, String> {
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
async fn exec_command(
    args: &RunArgs,
    agent: &AgentClient,
) -> Result<Result<Launched, i32>, String> {
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
                _ => return Err(client_error("cannot start the command", err)),
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
) -> Result<i32, String> {
    let id = &launched.exec_id;
    let stdin = std::io::stdin();
    let raw = if launched.terminal && stdin.is_terminal() {
        Some(tty::RawMode::enable(stdin.as_fd()).map_err(|e| format!("cannot set raw mode: {e}"))?)
    } else {
        None
    };

    let stdout = spawn_output(agent.read_stdout(id).await, tokio::io::stdout());
    // With a terminal the guest merges stderr into the terminal.
    let stderr = if launched.terminal {
        None
    } else {
        Some(spawn_output(
            agent.read_stderr(id).await,
            tokio::io::stderr(),
        ))
    };
    let stdin_copy = {
        let agent = agent.clone();
        let id = id.clone();
        tokio::spawn(async move { agent.copy_stdin(&id, tokio::io::stdin()).await })
    };
    if let Some(container) = &launched.container {
        agent
            .start_container(container)
            .await
            .map_err(|e| client_error("cannot start the container", e))?;
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

type OutputTask = tokio::task::JoinHandle<Result<u64, String>>;

fn spawn_output<W>(
    stream: Result<vmrun_agent::client::OutputStream, ClientError>,
    mut sink: W,
) -> OutputTask
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let stream = stream.map_err(|e| client_error("cannot attach output", e))?;
        let copied = stream
            .copy_to(&mut sink)
            .await
            .map_err(|e| client_error("output", e))?;
        sink.flush().await.map_err(|e| format!("flush: {e}"))?;
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
) -> Result<vmrun_agent::client::ProcessExit, String> {
    let mut winch = listen(SignalKind::window_change())?;
    let wait = agent.wait(id);
    tokio::pin!(wait);
    loop {
        let forward = tokio::select! {
            exit = &mut wait => return exit.map_err(|e| client_error("waiting for the command", e)),
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
