//! Entering the network namespace a VM's taps live in (a pod's CNI
//! namespace), before they are opened. The VMM's jail later gives the
//! process a namespace of its own; an open tap stays bound to its
//! interface wherever the process goes.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open the network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter the network namespace {path} (is it one?): {source}")]
    Enter { path: PathBuf, source: nix::Error },
}

/// Moves the calling thread (the VMM's main thread, before it starts any
/// other) into the network namespace at `path`; threads started later are
/// in it too.
pub fn enter(path: &Path) -> Result<(), NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::debug!(netns = %path.display(), "entered the taps' network namespace");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_no_namespace_is_refused_by_name() {
        // Run on a thread of its own: entering would change it for good.
        let err = std::thread::spawn(|| enter(Path::new("/proc/self/status")))
            .join()
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, NetnsError::Enter { .. }), "{err}");
        assert!(err.to_string().contains("/proc/self/status"), "{err}");
        let err = enter(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }

    #[test]
    fn a_thread_enters_another_network_namespace() {
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        // A thread that makes a namespace and holds it while the test
        // enters it through its /proc path.
        let (path_tx, path_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
            let tid = nix::unistd::gettid();
            let pid = std::process::id();
            path_tx
                .send(PathBuf::from(format!("/proc/{pid}/task/{tid}/ns/net")))
                .unwrap();
            let _ = done_rx.recv();
        });
        let path = path_rx.recv().unwrap();
        let target = std::fs::read_link(&path).unwrap();
        assert_ne!(target, own);
        let entered = std::thread::spawn(move || {
            enter(&path).unwrap();
            std::fs::read_link("/proc/thread-self/ns/net").unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(entered, target);
        assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
        done_tx.send(()).unwrap();
        holder.join().unwrap();
    }
}
