//! A worker forked ahead of its request.
//!
//! Forking the helper is the first step of every container create and exec,
//! and on a software-KVM host a fork costs most of a second of emulated
//! kernel work. So the helper keeps one worker forked in advance, blocked
//! on a socket of its own; a request is handed to it (its bytes and
//! descriptors, as they came), and the next spare is forked once that
//! worker is done, off the request's path. The first spare is forked before
//! the helper says it is ready, so a snapshot taken at the agent's ready
//! point holds it and a restored sandbox's first container skips the fork.
//!
//! A spare is what a worker forked at request time would be: the helper
//! keeps no state between requests.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use super::protocol::{receive, send, seqpacket_pair, Received};

/// A forked worker waiting for its request.
#[derive(Debug)]
pub struct SpareWorker {
    pid: Pid,
    requests: OwnedFd,
}

impl SpareWorker {
    /// Forks a worker that waits for one request and hands it to `serve`
    /// (which ends the process). It dies with the helper.
    ///
    /// Only for the single-threaded helper: the child runs arbitrary code.
    pub fn fork(serve: fn(Received) -> !) -> nix::Result<SpareWorker> {
        let (ours, theirs) = seqpacket_pair()?;
        // SAFETY: the helper is single-threaded (it never starts threads), so
        // the child is a complete copy and may run arbitrary code.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(ours);
                wait_for_request(theirs, serve)
            }
            ForkResult::Parent { child } => Ok(SpareWorker {
                pid: child,
                requests: ours,
            }),
        }
    }

    /// Gives the spare its request; the pid to wait for once it is handed
    /// over. On failure the spare is gone (killed and reaped).
    pub fn hand_over(self, message: &Received) -> nix::Result<Pid> {
        let fds: Vec<_> = message.fds.iter().map(AsFd::as_fd).collect();
        match send(self.requests.as_fd(), &message.bytes, &fds) {
            Ok(()) => Ok(self.pid),
            Err(errno) => {
                self.discard();
                Err(errno)
            }
        }
    }

    /// Ends a spare that will get no request.
    fn discard(self) {
        // It may have died already; either way it is reaped here.
        let _ = kill(self.pid, Signal::SIGKILL);
        while let Err(Errno::EINTR) = waitpid(self.pid, None) {}
    }
}

fn wait_for_request(requests: OwnedFd, serve: fn(Received) -> !) -> ! {
    // Die with the helper rather than wait forever for a request.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    match receive(requests.as_fd()) {
        Ok(Some(message)) => {
            drop(requests);
            serve(message)
        }
        // The helper closed the socket without a request, or it broke.
        Ok(None) | Err(_) => {
            // SAFETY: ends this forked process at once, without running
            // exit handlers that belong to the helper.
            unsafe { libc::_exit(0) }
        }
    }
}
