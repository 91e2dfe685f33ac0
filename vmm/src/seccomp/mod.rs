//! Seccomp filters for the VMM's threads, one per kind of thread, from the
//! tables in [`filters`] (data, with a reason for every system call),
//! compiled by `seccompiler` when the VMM is built (`build/
//! seccomp_programs.rs`). A thread installs its filter before it runs
//! anything the guest drives; a system call outside it kills the VMM
//! process (`SIGSYS`), which its supervisor reports as such.
//!
//! Filters are inherited by the threads a thread starts, and vCPU threads
//! start device workers (a driver's `DRIVER_OK` register write activates
//! the device), so the vCPU filter also holds what the workers need; each
//! worker then narrows to its own.

mod filters;
#[cfg(test)]
mod worker_tests;

use std::io;

use seccompiler::BpfProgramRef;

pub use filters::ThreadKind;

/// The programs compiled at build time: read-only data of the binary, so
/// no thread spends heap or stack compiling its own.
mod programs {
    use super::ThreadKind;
    use seccompiler::sock_filter;

    include!(concat!(env!("OUT_DIR"), "/seccomp_programs.rs"));
}

/// Why a thread could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot install the seccomp filter of the {kind} thread: {source}")]
    Install {
        kind: &'static str,
        source: seccompiler::Error,
    },
}

/// The compiled filter of `kind`.
pub fn filter(kind: ThreadKind) -> BpfProgramRef<'static> {
    programs::program(kind)
}

/// Installs the filter of `kind` on the calling thread (and so on every
/// thread it starts from now on).
pub fn confine_current_thread(kind: ThreadKind) -> Result<(), SeccompError> {
    seccompiler::apply_filter(filter(kind)).map_err(|source| SeccompError::Install {
        kind: kind.name(),
        source,
    })
}

/// The confinement of device worker threads, by thread name (see
/// `virtio_devices::set_worker_confinement`).
pub fn confine_worker(name: &str) -> io::Result<()> {
    let kind = ThreadKind::of_worker(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no seccomp filter for a worker named {name:?}"),
        )
    })?;
    confine_current_thread(kind).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles_and_workers_are_named() {
        for kind in ThreadKind::ALL {
            assert!(!filter(kind).is_empty(), "{}", kind.name());
        }
        for name in [
            "vsock",
            "virtio-fs",
            "virtio-blk",
            "virtio-rng",
            "virtio-net",
        ] {
            assert!(ThreadKind::of_worker(name).is_some(), "{name}");
        }
        for kind in ThreadKind::WORKERS {
            assert_eq!(ThreadKind::of_worker(kind.name()), Some(kind));
        }
        assert!(confine_worker("something-else").is_err());
    }

    #[test]
    fn the_vcpu_filter_holds_every_worker_syscall() {
        let vcpu: Vec<i64> = ThreadKind::Vcpu
            .syscalls()
            .iter()
            .map(|(nr, _)| *nr)
            .collect();
        for kind in ThreadKind::WORKERS {
            for (nr, why) in kind.syscalls() {
                assert!(vcpu.contains(&nr), "{} {nr} ({why})", kind.name());
            }
        }
    }

    /// In a child process under the rng, blk and net worker's filter, a
    /// rate limiter throttles (arms its timer) and is woken (reads it):
    /// those calls are allowed, the child exits normally.
    #[test]
    fn a_throttled_worker_may_arm_and_read_its_timer() {
        use std::sync::Arc;
        use virtio_devices::{Bucket, ManualClock, RateLimit, RateLimiter};
        for kind in [ThreadKind::Rng, ThreadKind::Block, ThreadKind::Net] {
            // Everything is made before the fork: the child must not allocate.
            let program = filter(kind);
            let limit = RateLimit {
                bytes: None,
                ops: Some(Bucket::new(1, 1).unwrap()),
            };
            let mut limiter = RateLimiter::new(limit, Arc::new(ManualClock::new())).unwrap();
            // SAFETY: the child only installs the filter, uses the limiter
            // (no allocation, no locks) and makes system calls before _exit.
            match unsafe { libc::fork() } {
                0 => {
                    if seccompiler::apply_filter(program).is_err() {
                        // SAFETY: _exit is async-signal-safe.
                        unsafe { libc::_exit(2) };
                    }
                    let refused = limiter.consume(0, 1) && !limiter.consume(0, 1);
                    limiter.on_timer();
                    // SAFETY: _exit is async-signal-safe.
                    unsafe { libc::_exit(if refused { 0 } else { 3 }) };
                }
                pid => {
                    let mut status = 0;
                    // SAFETY: waits for our own child.
                    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                    assert!(
                        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                        "{}: status {status:#x}",
                        kind.name()
                    );
                }
            }
        }
    }

    /// In a child process: a filtered thread that makes a call outside its
    /// filter is killed with SIGSYS.
    #[test]
    fn a_call_outside_the_filter_kills_with_sigsys() {
        // Built before the fork: the child must not allocate.
        let program = filter(ThreadKind::Rng);
        // SAFETY: the child only installs the filter and makes system calls
        // before _exit; it touches no lock another thread could hold.
        match unsafe { libc::fork() } {
            0 => {
                if seccompiler::apply_filter(program).is_err() {
                    // SAFETY: _exit is async-signal-safe.
                    unsafe { libc::_exit(2) };
                }
                // The rng worker never traces anything.
                // SAFETY: a plain system call.
                unsafe { libc::syscall(libc::SYS_ptrace, 0, 0, 0, 0) };
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(0) };
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(libc::WIFSIGNALED(status), "status {status:#x}");
                assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
            }
        }
    }
}
