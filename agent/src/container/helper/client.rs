//! The agent's side of the container helper: starts it on first use (or
//! ahead of time), sends it one request at a time, and registers the pid
//! it reports with the reaper before letting its worker exit.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tracing::level_filters::LevelFilter;

use super::protocol::{
    encode, receive, send, seqpacket_pair, FailureKind, HelperReply, HelperRequest, Received, ACK,
    READY,
};
use super::server::HELPER_LOG_ENV;
use super::HELPER_ARG;
use crate::container::error::ContainerError;
use crate::process::{reaper, ProcessExit};

/// How often a wait for an answer checks that the helper still lives.
const LIVENESS_CHECK: Duration = Duration::from_millis(200);

/// A process the helper started, registered for its exit.
#[derive(Debug)]
pub struct HelperProcess {
    pub pid: Pid,
    pub exit: oneshot::Receiver<ProcessExit>,
}

#[derive(Debug)]
struct RunningHelper {
    control: OwnedFd,
    pid: Pid,
    exit: oneshot::Receiver<ProcessExit>,
}

impl RunningHelper {
    fn is_alive(&mut self) -> bool {
        is_alive(&mut self.exit)
    }
}

fn is_alive(exit: &mut oneshot::Receiver<ProcessExit>) -> bool {
    matches!(exit.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

/// The container helper as the agent sees it.
#[derive(Debug)]
pub struct HelperClient {
    program: PathBuf,
    timeout: Duration,
    running: Mutex<Option<RunningHelper>>,
}

impl HelperClient {
    pub fn new(program: PathBuf, timeout: Duration) -> Self {
        Self {
            program,
            timeout,
            running: Mutex::new(None),
        }
    }

    /// Starts the helper now, so the first container does not wait for it.
    /// Blocking.
    pub fn prestart(&self) -> Result<(), String> {
        let mut running = self.lock();
        self.ensure_running(&mut running).map(drop)
    }

    /// Runs one request: the helper's worker builds the process and this
    /// registers its pid. `stdio` (the child's ends) is sent along and
    /// closed here. Blocking; requests are served one at a time.
    pub fn run(
        &self,
        op: &'static str,
        request: &HelperRequest,
        stdio: Option<[OwnedFd; 3]>,
    ) -> Result<HelperProcess, ContainerError> {
        let id = request.container_id.as_str();
        let helper_error = |reason: String| ContainerError::Helper {
            op,
            id: id.to_owned(),
            reason,
        };
        let mut running = self.lock();
        let helper = self.ensure_running(&mut running).map_err(helper_error)?;

        let (ours, theirs) =
            seqpacket_pair().map_err(|errno| helper_error(format!("socketpair: {errno}")))?;
        let mut fds = vec![theirs.as_fd()];
        if let Some(stdio) = &stdio {
            fds.extend(stdio.iter().map(AsFd::as_fd));
        }
        send(helper.control.as_fd(), &encode(request), &fds)
            .map_err(|errno| helper_error(format!("cannot send the request: {errno}")))?;
        // The helper and its worker hold their own copies now.
        drop(fds);
        drop(theirs);
        drop(stdio);

        let reply =
            wait_for_message(ours.as_fd(), &mut helper.exit, self.timeout).and_then(|message| {
                serde_json::from_slice::<HelperReply>(&message.bytes)
                    .map_err(|error| WaitError::Protocol(format!("malformed reply: {error}")))
            });
        let reply = match reply {
            Ok(reply) => reply,
            Err(WaitError::Died) => {
                *running = None;
                return Err(helper_error("it exited unexpectedly".into()));
            }
            Err(WaitError::Timeout) => {
                kill(helper.pid);
                *running = None;
                return Err(ContainerError::HelperTimeout {
                    op,
                    id: id.to_owned(),
                    seconds: self.timeout.as_secs(),
                });
            }
            Err(WaitError::Protocol(reason)) => return Err(helper_error(reason)),
        };
        match reply {
            HelperReply::Started { pid } => {
                let pid = Pid::from_raw(pid);
                let exit = reaper::register_adopted(pid);
                // The worker may exit now; its orphans come to us.
                if let Err(errno) = send(ours.as_fd(), ACK, &[]) {
                    tracing::debug!(%errno, "container worker gone before the ack");
                }
                Ok(HelperProcess { pid, exit })
            }
            HelperReply::Failed { kind, message } => Err(match kind {
                FailureKind::InvalidSpec => ContainerError::invalid(op, message),
                FailureKind::AlreadyExists => ContainerError::AlreadyExists { id: id.to_owned() },
                FailureKind::Runtime => ContainerError::Runtime {
                    op,
                    id: id.to_owned(),
                    message,
                },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<RunningHelper>> {
        // The Option is replaced whole; a panic cannot leave it half-set.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ensure_running<'a>(
        &self,
        running: &'a mut Option<RunningHelper>,
    ) -> Result<&'a mut RunningHelper, String> {
        if !running.as_mut().is_some_and(RunningHelper::is_alive) {
            *running = Some(self.spawn()?);
        }
        running
            .as_mut()
            .ok_or_else(|| "the helper vanished".to_owned())
    }

    fn spawn(&self) -> Result<RunningHelper, String> {
        reaper::become_subreaper()
            .map_err(|error| format!("cannot become a subreaper: {error}"))?;
        let (control, theirs) = seqpacket_pair().map_err(|errno| format!("socketpair: {errno}"))?;
        let level = helper_log_level(LevelFilter::current()).to_string();
        let (child, exit) = reaper::spawn_registered(|| {
            Command::new(&self.program)
                .arg(HELPER_ARG)
                .env(HELPER_LOG_ENV, level)
                .stdin(Stdio::from(theirs))
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .map_err(|error| format!("cannot start {}: {error}", self.program.display()))?;
        let pid = reaper::pid_of(&child);
        let mut helper = RunningHelper { control, pid, exit };
        // Until it says so the helper may still be loading; a helper started
        // ahead of time must be serving when the agent goes on (a snapshot
        // then holds it ready).
        let ready = wait_for_message(helper.control.as_fd(), &mut helper.exit, self.timeout)
            .and_then(|message| match message.bytes.as_slice() {
                READY => Ok(()),
                _ => Err(WaitError::Protocol(
                    "its first message was not READY".into(),
                )),
            });
        match ready {
            Ok(()) => {
                tracing::debug!(%pid, "container helper ready");
                Ok(helper)
            }
            Err(WaitError::Died) => Err("it exited while starting".into()),
            Err(WaitError::Timeout) => {
                kill(pid);
                Err(format!(
                    "it did not get ready within {} s",
                    self.timeout.as_secs()
                ))
            }
            Err(WaitError::Protocol(reason)) => {
                kill(pid);
                Err(reason)
            }
        }
    }
}

/// Waits for one message on `socket`, checking every [`LIVENESS_CHECK`]
/// that the helper (whose exit is `exit`) still lives.
fn wait_for_message(
    socket: BorrowedFd<'_>,
    exit: &mut oneshot::Receiver<ProcessExit>,
    timeout: Duration,
) -> Result<Received, WaitError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut poll_fds = [PollFd::new(socket, PollFlags::POLLIN)];
        let step = PollTimeout::try_from(LIVENESS_CHECK).unwrap_or(PollTimeout::MAX);
        match poll(&mut poll_fds, step) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => {
                return match receive(socket) {
                    Ok(Some(message)) => Ok(message),
                    Ok(None) => Err(WaitError::Protocol(
                        "it closed the socket without answering".into(),
                    )),
                    Err(errno) => Err(WaitError::Protocol(format!("cannot read: {errno}"))),
                }
            }
            Err(errno) => return Err(WaitError::Protocol(format!("poll: {errno}"))),
        }
        if !is_alive(exit) {
            return Err(WaitError::Died);
        }
        if Instant::now() >= deadline {
            return Err(WaitError::Timeout);
        }
    }
}

/// libcontainer is chatty at info level and the guest console is slow:
/// the helper logs warnings and errors, unless the agent debugs.
fn helper_log_level(agent: LevelFilter) -> LevelFilter {
    if agent >= LevelFilter::DEBUG {
        agent
    } else {
        agent.min(LevelFilter::WARN)
    }
}

enum WaitError {
    Died,
    Timeout,
    Protocol(String),
}

fn kill(pid: Pid) {
    // The helper is registered until reaped, so this cannot hit a reused
    // pid; its worker dies with it (PDEATHSIG).
    if let Err(errno) = nix::sys::signal::kill(pid, Signal::SIGKILL) {
        tracing::warn!(%pid, %errno, "cannot kill the container helper");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_is_quieter_than_the_agent_unless_debugging() {
        assert_eq!(helper_log_level(LevelFilter::INFO), LevelFilter::WARN);
        assert_eq!(helper_log_level(LevelFilter::ERROR), LevelFilter::ERROR);
        assert_eq!(helper_log_level(LevelFilter::OFF), LevelFilter::OFF);
        assert_eq!(helper_log_level(LevelFilter::DEBUG), LevelFilter::DEBUG);
    }
}
