//! Netlink work inside a pod's network namespace.
//!
//! A netlink socket talks to the namespace of the thread that created it,
//! and `setns(CLONE_NEWNET)` changes the namespace of the calling thread
//! only. So the work runs on a thread of its own, started for it: the
//! thread enters the namespace, makes a current-thread tokio runtime and
//! an `rtnetlink` connection there, runs the work and ends. No tokio worker
//! and no caller's thread ever changes namespace (a worker that did would
//! take every later task it runs there too), and nothing outlives the work
//! but its result.
//!
//! The namespace is held open by descriptor from [`NetNs::open`] on, so
//! everything done through one [`NetNs`] happens in the same namespace even
//! if its file is unmounted or replaced meanwhile (which also keeps the
//! namespace alive while the [`NetNs`] lives).

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::CloneFlags;
use rtnetlink::Handle;

use super::error::NetworkError;

/// An open network namespace (a bind-mounted namespace file such as
/// `/var/run/netns/cni-…`, or `/proc/PID/ns/net`). Cloning it is cheap and
/// shares the descriptor.
#[derive(Clone, Debug)]
pub struct NetNs {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl NetNs {
    /// Opens the namespace file at `path`, checking that it is a network
    /// namespace (`NS_GET_NSTYPE`).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NetworkError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetworkError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let not_netns = |why: String| NetworkError::NotNetns {
            path: path.to_path_buf(),
            why,
        };
        // SAFETY: NS_GET_NSTYPE takes no argument; it only asks the kernel
        // about the descriptor, which `file` keeps open for the call.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
        if kind < 0 {
            let err = io::Error::last_os_error();
            return Err(not_netns(if err.raw_os_error() == Some(libc::ENOTTY) {
                "not a namespace file".to_string()
            } else {
                format!("NS_GET_NSTYPE: {err}")
            }));
        }
        if kind != libc::CLONE_NEWNET {
            return Err(not_netns(format!("it is {}", namespace_kind(kind))));
        }
        Ok(NetNs {
            path: path.to_path_buf(),
            fd: Arc::new(OwnedFd::from(file)),
        })
    }

    /// The namespace file it was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` with a netlink handle of this namespace on a thread of
    /// its own (see the module docs) and returns its result; the caller's
    /// runtime is not blocked. If the returned future is dropped, the
    /// work still runs to its end.
    pub async fn run<T, F, Fut>(&self, work: F) -> Result<T, NetworkError>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, NetworkError>> + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let (path, fd) = (self.path.clone(), Arc::clone(&self.fd));
        self.spawn(move || {
            // The receiver is gone if the caller stopped waiting.
            let _ = done.send(run_inside(&path, &fd, work));
        })?;
        result.await.map_err(|_| NetworkError::Panicked {
            path: self.path.clone(),
        })?
    }

    /// [`run`](Self::run) for synchronous code: blocks the calling thread
    /// (never a runtime's worker: use `run` there) until `work` is done.
    pub fn run_blocking<T, F, Fut>(&self, work: F) -> Result<T, NetworkError>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, NetworkError>> + 'static,
    {
        let (path, fd) = (self.path.clone(), Arc::clone(&self.fd));
        self.spawn(move || run_inside(&path, &fd, work))?
            .join()
            .map_err(|_| NetworkError::Panicked {
                path: self.path.clone(),
            })?
    }

    fn spawn<R: Send + 'static>(
        &self,
        body: impl FnOnce() -> R + Send + 'static,
    ) -> Result<std::thread::JoinHandle<R>, NetworkError> {
        std::thread::Builder::new()
            .name("vmrun-netns".to_string())
            .spawn(body)
            .map_err(|source| NetworkError::Thread {
                path: self.path.clone(),
                what: "start a thread",
                source,
            })
    }
}

/// The body of a namespace thread: enter, connect, work.
fn run_inside<T, F, Fut>(path: &Path, fd: &OwnedFd, work: F) -> Result<T, NetworkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let failed = |what| {
        move |source| NetworkError::Thread {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    nix::sched::setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|errno| failed("enter it (setns)")(io::Error::from(errno)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed("start a runtime"))?;
    runtime.block_on(async move {
        // Made after setns, so the socket is the namespace's.
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(failed("open a netlink socket"))?;
        tokio::spawn(connection);
        tracing::trace!(netns = %path.display(), "netlink connection open");
        work(handle).await
    })
}

/// What a namespace of another type than network is, for errors.
fn namespace_kind(kind: libc::c_int) -> String {
    let name = match kind {
        libc::CLONE_NEWNS => "a mount namespace",
        libc::CLONE_NEWUTS => "a UTS namespace",
        libc::CLONE_NEWIPC => "an IPC namespace",
        libc::CLONE_NEWUSER => "a user namespace",
        libc::CLONE_NEWPID => "a PID namespace",
        libc::CLONE_NEWCGROUP => "a cgroup namespace",
        libc::CLONE_NEWTIME => "a time namespace",
        _ => return format!("a namespace of type {kind:#x}"),
    };
    name.to_string()
}
