//! A device worker thread that can be stopped through a kill [`EventFd`].

use std::io;
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};

use tracing::error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// What every worker thread runs first, by thread name (the VMM installs
/// its seccomp filter there); see [`set_worker_confinement`].
static CONFINE: OnceLock<fn(&str) -> io::Result<()>> = OnceLock::new();

/// Makes every device worker started from now on call `confine` with its
/// thread name before it serves the guest. A worker it fails for aborts
/// the process rather than run unconfined. Set once per process.
pub fn set_worker_confinement(confine: fn(&str) -> io::Result<()>) {
    let _ = CONFINE.set(confine);
}

/// A running worker thread. The thread function receives the kill event and
/// must return promptly once it is signalled; its return value (typically the
/// device backend) is handed back by [`stop`](Self::stop).
pub(crate) struct Worker<T> {
    name: String,
    kill: EventFd,
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Spawns `f` on a new thread called `name`.
    pub(crate) fn spawn<F>(name: &str, f: F) -> io::Result<Self>
    where
        F: FnOnce(EventFd) -> T + Send + 'static,
    {
        let kill = EventFd::new(EFD_NONBLOCK)?;
        let thread_kill = kill.try_clone()?;
        let thread_name = name.to_string();
        let handle = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Some(confine) = CONFINE.get() {
                    if let Err(e) = confine(&thread_name) {
                        error!(worker = %thread_name, "cannot confine the worker: {e}");
                        std::process::abort();
                    }
                }
                f(thread_kill)
            })?;
        Ok(Worker {
            name: name.to_string(),
            kill,
            handle: Some(handle),
        })
    }

    /// Signals the thread to stop and joins it. Returns the thread's result,
    /// or `None` if it panicked.
    pub(crate) fn stop(mut self) -> Option<T> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Option<T> {
        let handle = self.handle.take()?;
        if let Err(e) = self.kill.write(1) {
            error!(worker = %self.name, "failed to signal worker to stop: {e}");
        }
        match handle.join() {
            Ok(v) => Some(v),
            Err(_) => {
                error!(worker = %self.name, "worker thread panicked");
                None
            }
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            if let Err(e) = self.kill.write(1) {
                error!(worker = %self.name, "failed to signal worker to stop: {e}");
            }
            if handle.join().is_err() {
                error!(worker = %self.name, "worker thread panicked");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

    #[test]
    fn stop_joins_and_returns_value() {
        let w = Worker::spawn("test-worker", |kill: EventFd| {
            let epoll = Epoll::new().unwrap();
            epoll
                .ctl(
                    ControlOperation::Add,
                    std::os::fd::AsRawFd::as_raw_fd(&kill),
                    EpollEvent::new(EventSet::IN, 0),
                )
                .unwrap();
            let mut evs = [EpollEvent::default(); 1];
            let n = epoll.wait(-1, &mut evs).unwrap();
            n as u32 + 41
        })
        .unwrap();
        assert_eq!(w.stop(), Some(42));
    }

    #[test]
    fn panicking_worker_yields_none() {
        let w = Worker::spawn("test-panic", |_kill: EventFd| -> u32 { panic!("boom") }).unwrap();
        assert_eq!(w.stop(), None);
    }
}
