//! PID 1: bring the guest up, serve the agent API, power off at the end.

pub mod cmdline;
pub mod console;
pub mod mounts;
pub mod power;
pub mod root;

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

use crate::server::{AgentServer, ServeError, ServeOutcome, ServerConfig};
use crate::{sandbox_init, AGENT_VSOCK_PORT};
use cmdline::AgentOptions;
use mounts::{mount_all, MountError, SyscallMounter, GUEST_MOUNTS};

/// PATH of the agent and of everything it starts without one.
pub const GUEST_PATH: &str = crate::process::DEFAULT_PATH;

/// Why the agent could not carry on.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Root(#[from] root::RootError),
    #[error("cannot attach the console: {0}")]
    Console(#[source] nix::Error),
    #[error("cannot read /proc/cmdline: {0}")]
    Cmdline(#[source] io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot listen on vsock port {port}: {source}")]
    Listen { port: u32, source: io::Error },
    #[error("cannot print the ready line: {0}")]
    Announce(#[source] io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs the agent as PID 1 until it should power off (on request or with
/// `vmrun.exit_when_ready`). The caller then powers off.
pub fn run() -> Result<(), InitError> {
    // The console may not exist before /dev is mounted, so a mount error is
    // reported only after trying to attach it.
    let mounted = root::leave_initramfs()
        .map_err(InitError::from)
        .and_then(|()| Ok(mount_all(&mut SyscallMounter, GUEST_MOUNTS)?));
    console::attach_console().map_err(InitError::Console)?;
    mounted?;
    // Still single-threaded here, so changing the environment is sound.
    std::env::set_var("PATH", GUEST_PATH);

    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(InitError::Cmdline)?;
    let options = AgentOptions::from_cmdline(&cmdline);
    init_logging(&options);
    // On a software-KVM host the guest boots with one vCPU online (2-vCPU
    // boots stall there, see the VMM's kernel command line); the others come
    // up here, before the ready line, so that a snapshot holds them online
    // and no restored sandbox pays the seconds this takes under emulation.
    let cpus_online = sandbox_init::online_cpus(Path::new(sandbox_init::SYS_CPU));
    tracing::info!(cpus_online, "vCPUs online");

    // One thread: the guest has few vCPUs and every thread costs start-up
    // time; blocking work (fork+exec) goes to tokio's blocking pool.
    one_malloc_arena();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A blocking thread stays once started: one the snapshot holds (it
        // started the container helper) then serves every restored
        // sandbox, which neither pays for a new thread under emulation nor
        // writes that thread's fresh pages (its own copy on the host).
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
        .map_err(InitError::Runtime)?;
    runtime.block_on(serve_until_done(options))
}

/// How long an idle thread of the blocking pool waits for work before it
/// ends (tokio's default is 10 s).
const BLOCKING_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(24 * 60 * 60);

/// One malloc arena for the agent. glibc gives each thread that allocates
/// an arena of its own, whose first pages a restored sandbox then writes
/// afresh: on the host each is a private copy of a snapshot page, in the
/// guest a page fault that costs milliseconds under emulation. The agent's
/// threads allocate little and rarely at once, so one lock costs nothing.
fn one_malloc_arena() {
    // SAFETY: mallopt takes two integers and only changes malloc's tuning.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } != 1 {
        tracing::debug!("mallopt(M_ARENA_MAX) refused: threads keep their own arenas");
    }
}

async fn serve_until_done(options: AgentOptions) -> Result<(), InitError> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, AGENT_VSOCK_PORT)).map_err(
        |source| InitError::Listen {
            port: AGENT_VSOCK_PORT,
            source,
        },
    )?;
    if options.exit_when_ready {
        console::announce_ready().map_err(InitError::Announce)?;
        return Ok(());
    }
    let config = ServerConfig {
        template: options.template,
        ..ServerConfig::guest()
    };
    // Ready only once the container helper runs: a snapshot is taken after
    // the ready line, and every sandbox restored from it then has the
    // helper up (starting it costs seconds on a software-KVM host).
    let server = AgentServer::start(config).await?;
    console::announce_ready().map_err(InitError::Announce)?;
    match server.serve(listener.incoming()).await? {
        ServeOutcome::ShutdownRequested => tracing::info!("powering off on request"),
        ServeOutcome::ListenerClosed => tracing::warn!("vsock listener closed, powering off"),
    }
    Ok(())
}

fn init_logging(options: &AgentOptions) {
    // Fails only if a subscriber is already installed, which is then used.
    let _already_installed = tracing_subscriber::fmt()
        .with_max_level(options.log_level)
        .with_writer(io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}
