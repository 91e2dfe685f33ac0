//! The VMM as PID 1 of a PID namespace of its own. A process cannot move
//! itself into a new PID namespace, only its children: the process that
//! starts the VMM forks, and stays as the VMM's supervisor (it waits for
//! it, passes its end on, and cleans up what it made outside the jail).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{fork, ForkResult, Pid};

use super::JailError;

/// Which side of [`fork_into_new_pid_namespace`] this is.
pub enum Forked {
    /// The supervisor, outside; `child` is the VMM's pid as seen here.
    Supervisor { child: Pid },
    /// PID 1 of the new namespace: go on and run the VMM.
    Vmm,
}

/// Forks the rest of this program into a new PID namespace. Call it while
/// the process has a single thread. The child dies with the supervisor
/// (`PR_SET_PDEATHSIG`).
pub fn fork_into_new_pid_namespace() -> Result<Forked, JailError> {
    // SAFETY: unshare takes no pointers; CLONE_NEWPID only decides where
    // this process's next child goes.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(JailError::sys("unshare the PID namespace")(
            io::Error::last_os_error(),
        ));
    }
    // The supervisor holds the write end for as long as it lives: its
    // child sees the pipe hang up if it died before PDEATHSIG was armed.
    let (alive_read, alive_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| JailError::sys("make a pipe")(e.into()))?;
    // SAFETY: the caller guarantees a single-threaded process, so the
    // child inherits no lock held by another thread.
    match unsafe { fork() }.map_err(|e| JailError::sys("fork the VMM")(e.into()))? {
        ForkResult::Parent { child } => {
            drop(alive_read);
            // Closed when the supervisor exits, never before.
            std::mem::forget(alive_write);
            Ok(Forked::Supervisor { child })
        }
        ForkResult::Child => {
            drop(alive_write);
            die_with_supervisor(alive_read)?;
            Ok(Forked::Vmm)
        }
    }
}

fn die_with_supervisor(alive: OwnedFd) -> Result<(), JailError> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(JailError::sys("set the parent-death signal")(
            io::Error::last_os_error(),
        ));
    }
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::ZERO)
        .map_err(|e| JailError::sys("poll the supervisor's pipe")(e.into()))?;
    let hung_up = ready > 0
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP));
    if hung_up {
        // The supervisor is gone already: nobody would ever stop this VM.
        std::process::exit(1);
    }
    Ok(())
}
