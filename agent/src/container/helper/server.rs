//! The container helper process: the agent binary started with
//! [`HELPER_ARG`](super::HELPER_ARG). It stays single-threaded, so forking
//! is safe here as it is not in the agent (a fork of a multi-threaded
//! process may inherit a lock another thread held, and libcontainer runs
//! plenty of code between its clones and the final exec). For each request
//! it forks a worker that runs libcontainer and then exits, which hands the
//! container's processes to the agent (PID 1 or a subreaper).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::protocol::{
    encode, receive, send, FailureKind, HelperReply, HelperRequest, Received, READY,
};
use super::spare::SpareWorker;
use super::worker;

/// Environment variable with the helper's log level (as the agent's).
pub const HELPER_LOG_ENV: &str = "VMRUN_AGENT_HELPER_LOG";

/// Runs the helper until the agent closes the control socket (stdin).
pub fn run_helper() -> ExitCode {
    init_logging();
    if let Err(errno) = reset_signals() {
        tracing::error!(%errno, "container helper: cannot reset signal dispositions");
        return ExitCode::FAILURE;
    }
    let control = match take_control_socket() {
        Ok(control) => control,
        Err(errno) => {
            tracing::error!(%errno, "container helper: no control socket on stdin");
            return ExitCode::FAILURE;
        }
    };
    // Forked before READY, so a snapshot at the agent's ready point has it.
    let mut spare = fork_spare();
    if let Err(errno) = send(control.as_fd(), READY, &[]) {
        tracing::error!(%errno, "container helper: cannot say it is ready");
        return ExitCode::FAILURE;
    }
    loop {
        match receive(control.as_fd()) {
            Ok(Some(message)) => {
                serve_one(message, spare.take());
                spare = fork_spare();
            }
            Ok(None) => return ExitCode::SUCCESS,
            Err(errno) => {
                tracing::error!(%errno, "container helper: cannot read a request");
                return ExitCode::FAILURE;
            }
        }
    }
}

fn init_logging() {
    let level = std::env::var(HELPER_LOG_ENV)
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::WARN);
    // Log to a private copy of the helper's stderr (the guest console), not
    // to fd 2: libcontainer logs from inside the container's init after fd 2
    // became the container's stderr or terminal, and its messages must not
    // end up in the container's output. The copy is close-on-exec, so the
    // container's program never inherits it.
    let console = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from);
    let Ok(console) = console else {
        return;
    };
    // Fails only if a subscriber is already installed, which is then used.
    let _already_installed = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::sync::Mutex::new(console))
        .with_ansi(false)
        .without_time()
        .try_init();
}

/// Containers inherit ignored signals and the signal mask across their
/// exec, and libcontainer resets neither; Rust's runtime ignores SIGPIPE.
/// Give them what a shell would.
fn reset_signals() -> nix::Result<()> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installs the default disposition, no handler code runs.
        unsafe { signal(sig, SigHandler::SigDfl) }?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Moves the control socket off stdin (containers must not inherit it as
/// their stdin) and puts /dev/null there.
fn take_control_socket() -> nix::Result<OwnedFd> {
    let control = nix::fcntl::fcntl(
        std::io::stdin().as_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3),
    )?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else
    // owns.
    let control = unsafe { OwnedFd::from_raw_fd(control) };
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|_| Errno::EBADF)?;
    nix::unistd::dup2(&null, &mut stdin)?;
    // `stdin` is a duplicate of fd 0 that now also points at /dev/null.
    drop(stdin);
    if control.as_raw_fd() <= 2 {
        return Err(Errno::EBADF);
    }
    Ok(control)
}

fn fork_spare() -> Option<SpareWorker> {
    SpareWorker::fork(run_request)
        .map_err(|errno| tracing::warn!(%errno, "container helper: cannot fork a spare worker"))
        .ok()
}

/// Has a worker (the spare, else one forked now) serve one request, and
/// waits for it. The worker answers on the request's reply socket; if it
/// dies without answering, this does.
fn serve_one(message: Received, spare: Option<SpareWorker>) {
    let reply = match message.fds.first().map(|fd| fd.try_clone()) {
        Some(Ok(reply)) => reply,
        Some(Err(error)) => {
            tracing::error!(%error, "container helper: cannot keep the reply socket");
            return;
        }
        None => {
            tracing::error!("container helper: request without a reply socket");
            return;
        }
    };
    let handed_over = spare.map(|spare| {
        spare.hand_over(&message).map_err(|errno| {
            tracing::warn!(%errno, "container helper: the spare worker did not take the request")
        })
    });
    let worker = match handed_over {
        Some(Ok(pid)) => {
            // The worker has its own copies; containers must not get ours.
            drop(message);
            Ok(pid)
        }
        Some(Err(())) | None => fork_worker(message),
    };
    match worker {
        Ok(pid) => wait_for_worker(pid, &reply),
        Err(errno) => answer(
            &reply,
            FailureKind::Runtime,
            format!("cannot fork: {errno}"),
        ),
    }
}

fn fork_worker(message: Received) -> nix::Result<Pid> {
    // SAFETY: the helper is single-threaded (it never starts threads), so
    // the child is a complete copy and may run arbitrary code.
    match unsafe { fork() }? {
        ForkResult::Child => run_request(message),
        // The worker has its own copies; containers must not get ours.
        ForkResult::Parent { child } => Ok(child),
    }
}

fn wait_for_worker(worker: Pid, reply: &OwnedFd) {
    let status = loop {
        match waitpid(worker, None) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Exited(_, 0)) => {}
        other => answer(
            reply,
            FailureKind::Runtime,
            format!("the worker died without answering ({other:?})"),
        ),
    }
}

/// In a worker: runs one request and ends the process.
fn run_request(message: Received) -> ! {
    let mut fds = message.fds.into_iter();
    let Some(reply) = fds.next() else {
        // SAFETY: ends this forked process; the helper reports it.
        unsafe { libc::_exit(1) }
    };
    let request: HelperRequest = match serde_json::from_slice(&message.bytes) {
        Ok(request) => request,
        Err(error) => exit_answering(&reply, format!("malformed request: {error}")),
    };
    let stdio: Option<[OwnedFd; 3]> = if request.pipes {
        match (fds.next(), fds.next(), fds.next()) {
            (Some(stdin), Some(stdout), Some(stderr)) => Some([stdin, stdout, stderr]),
            _ => exit_answering(&reply, "request without its stdio".into()),
        }
    } else {
        None
    };
    worker::run(&request, stdio, reply)
}

fn exit_answering(reply: &OwnedFd, message: String) -> ! {
    answer(reply, FailureKind::Runtime, message);
    // SAFETY: ends this forked process at once, without running exit
    // handlers that belong to the helper.
    unsafe { libc::_exit(0) }
}

fn answer(reply: &OwnedFd, kind: FailureKind, message: String) {
    tracing::warn!(%message, "container helper: request failed");
    let bytes = encode(&HelperReply::Failed { kind, message });
    if let Err(errno) = send(reply.as_fd(), &bytes, &[]) {
        tracing::warn!(%errno, "container helper: cannot answer");
    }
}
