//! The process that started a jailed VMM stays outside the jail as its
//! supervisor (see `vmm::jail::pid_namespace`): it waits for the VMM, ends
//! it when it is told to, removes what it made outside the jail, and ends
//! the way the VMM did. It confines itself first: no capabilities, its own
//! small seccomp filter; it never reads anything the guest wrote.

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use vmm::seccomp::{confine_current_thread, ThreadKind};

use crate::{Result, VmmProcessError};

/// The signals that end the VMM process (with SIGCHLD, all blocked before the
/// fork so the supervisor waits for them).
pub fn signals() -> SigSet {
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        signals.add(signal);
    }
    signals
}

/// Blocks [`signals`] in the calling (single) thread.
pub fn block_signals() -> Result<()> {
    signals()
        .thread_block()
        .map_err(|e| VmmProcessError::host("block termination signals")(e.into()))
}

/// Unblocks them again (in the VMM, which does not use them).
pub fn unblock_signals() -> Result<()> {
    signals()
        .thread_unblock()
        .map_err(|e| VmmProcessError::host("unblock termination signals")(e.into()))
}

/// How the VMM ended.
enum Ended {
    Exit(i32),
    Signal(Signal),
}

/// Supervises the VMM `child` until it ends, then runs `cleanup` and ends
/// this process as the VMM ended (its exit code, or killed by the same
/// signal: a seccomp kill stays a SIGSYS for whoever waits for `vmrun`).
/// SIGTERM, SIGINT or SIGHUP kill the VMM and exit with 128 + the signal.
pub fn supervise(child: Pid, cleanup: impl FnOnce()) -> Result<std::convert::Infallible> {
    vmm::jail::capabilities::drop_all()?;
    vmm::jail::no_new_privileges()?;
    confine_current_thread(ThreadKind::Supervisor)?;
    let ended = loop {
        let signal = signals()
            .wait()
            .map_err(|e| VmmProcessError::host("wait for signals")(e.into()))?;
        if signal != Signal::SIGCHLD {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            cleanup();
            eprintln!("vmrun: {}: stopping the microVM", signal.as_str());
            std::process::exit(128 + signal as i32);
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break Ended::Exit(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => break Ended::Signal(signal),
            Ok(_) => continue,
            Err(e) => return Err(VmmProcessError::host("wait for the VMM")(e.into())),
        }
    };
    cleanup();
    match ended {
        Ended::Exit(code) => std::process::exit(code),
        Ended::Signal(signal) => {
            if signal == Signal::SIGSYS {
                eprintln!(
                    "vmrun: the VMM was killed by its seccomp filter (SIGSYS): one of its \
                     threads made a system call outside its filter"
                );
            }
            die_by(signal)
        }
    }
}

/// Ends this process with `signal`'s default action, no core dump.
fn die_by(signal: Signal) -> ! {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass; signal() installs the
    // default action, no handler code; raise sends a signal to this
    // thread.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(signal as i32, libc::SIG_DFL);
    }
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    let _ = nix::sys::signal::raise(signal);
    std::process::exit(128 + signal as i32)
}
