//! The one place that waits for child processes.
//!
//! As PID 1 the agent inherits every orphan in the guest and must reap them,
//! which takes `waitpid(-1)`. That would steal the exit status of the
//! processes the agent started itself, so those are registered here and
//! their status is handed over; everything else is reaped and forgotten.
//!
//! Registration happens under the same lock as reaping and spans the fork,
//! so a child that exits before its pid is known cannot be reaped as an
//! orphan (and std's own `waitpid` after a failed exec cannot race us).

use std::collections::BTreeMap;
use std::io;
use std::process::Child;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, Mutex};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    /// It called `exit` with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

/// Children started by the agent that have not been reaped yet, with where
/// to send their exit. A pid is in here exactly while it is safe to signal.
///
/// Process-wide, because `waitpid(-1)` is: several servers in one process
/// (as in tests) share it, and any of their reapers may deliver any exit.
static LIVE_CHILDREN: Mutex<BTreeMap<Pid, oneshot::Sender<ProcessExit>>> =
    Mutex::const_new(BTreeMap::new());

/// Starts a child with `spawn` and registers it for its exit status.
///
/// Blocks while the child forks and execs (and waits for a reap in
/// progress), so call it from a blocking thread, never from async code.
pub fn spawn_registered(
    spawn: impl FnOnce() -> io::Result<Child>,
) -> io::Result<(Child, oneshot::Receiver<ProcessExit>)> {
    let mut live = LIVE_CHILDREN.blocking_lock();
    let child = spawn()?;
    let (exit_tx, exit_rx) = oneshot::channel();
    live.insert(pid_of(&child), exit_tx);
    Ok((child, exit_rx))
}

/// Registers `pid` for its exit status: a process that is not a child of
/// this process yet but becomes one when its parent exits (a container
/// process whose parent, a helper, exits once the pid was registered; this
/// process is PID 1 or a subreaper). Its pid cannot be reused before it is
/// reaped, and only this process will reap it.
///
/// Blocks while a reap is in progress: call it from a blocking thread.
pub fn register_adopted(pid: Pid) -> oneshot::Receiver<ProcessExit> {
    let (exit_tx, exit_rx) = oneshot::channel();
    LIVE_CHILDREN.blocking_lock().insert(pid, exit_tx);
    exit_rx
}

/// Makes this process the reaper of its descendants' orphans (PID 1 is
/// anyway), so that processes registered with [`register_adopted`] come to
/// it even when it is not PID 1 (as in tests).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is
    // passed.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of a started child as nix spells it.
pub fn pid_of(child: &Child) -> Pid {
    // Linux pids are at most 2^22, so they always fit an i32.
    Pid::from_raw(child.id() as i32)
}

/// Sends `signal` to `pid` if it is a registered child that has not been
/// reaped, and says whether it was. A reaped pid may already belong to an
/// unrelated process, so it is never signalled.
pub async fn signal_if_alive(pid: Pid, signal: Signal) -> nix::Result<bool> {
    let live = LIVE_CHILDREN.lock().await;
    if !live.contains_key(&pid) {
        return Ok(false);
    }
    kill(pid, signal)?;
    Ok(true)
}

/// Reaps children whenever SIGCHLD arrives, for as long as the current
/// tokio runtime runs. Registers for SIGCHLD before returning, so no exit
/// after this call is missed.
pub fn start() -> io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        // Children may have exited before the handler was in place.
        reap_exited().await;
        while sigchld.recv().await.is_some() {
            reap_exited().await;
        }
    });
    Ok(())
}

/// Reaps every child that has exited so far. SIGCHLDs coalesce, so one
/// signal may stand for many exits.
async fn reap_exited() {
    let mut live = LIVE_CHILDREN.lock().await;
    loop {
        let (pid, exit) = match wait_any_exited() {
            Ok(Some(reaped)) => reaped,
            Ok(None) | Err(Errno::ECHILD) => return,
            Err(errno) => {
                tracing::warn!(%errno, "waitpid failed");
                return;
            }
        };
        match live.remove(&pid) {
            // The receiver is gone only if the exec was dropped; fine.
            Some(exit_tx) => drop(exit_tx.send(exit)),
            None => tracing::debug!(%pid, ?exit, "reaped orphan"),
        }
    }
}

/// One non-blocking `waitpid(-1)`: `None` when no child has exited.
///
/// Calls libc rather than `nix::sys::wait::waitpid` because nix fails to
/// decode a death by a real-time signal *after* the child was reaped, which
/// would lose its pid and leave its waiters hanging forever.
fn wait_any_exited() -> Result<Option<(Pid, ProcessExit)>, Errno> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid only writes the status through the pointer, which
        // points to a live local c_int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return Ok(None),
            -1 => match Errno::last() {
                Errno::EINTR => continue,
                errno => return Err(errno),
            },
            pid if libc::WIFEXITED(status) => {
                return Ok(Some((
                    Pid::from_raw(pid),
                    ProcessExit::Code(libc::WEXITSTATUS(status)),
                )))
            }
            pid if libc::WIFSIGNALED(status) => {
                return Ok(Some((
                    Pid::from_raw(pid),
                    ProcessExit::Signal(libc::WTERMSIG(status)),
                )))
            }
            // Stops and continues are not asked for; nothing to deliver.
            _ => continue,
        }
    }
}
