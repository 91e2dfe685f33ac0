//! Network namespaces the tests make for themselves (`ip netns add`), so
//! that containerd, its CNI bridge, the pods and every packet a test sends
//! stay off the host's own network.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::run;

/// How long one `ip` command may take.
const IP_DEADLINE: Duration = Duration::from_secs(30);

static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// A named network namespace with its loopback up; deleted when dropped.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

impl TestNetns {
    /// Makes `vmrun-<prefix>-<pid>-<n>`.
    pub fn create(prefix: &str) -> Self {
        let n = NAMESPACES.fetch_add(1, Ordering::SeqCst);
        let name = format!("vmrun-{prefix}-{}-{n}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
        let added = run(
            Command::new("ip").args(["netns", "add", &name]),
            IP_DEADLINE,
        );
        assert!(added.status.success(), "ip netns add {name}: {added:?}");
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file (what `setns` and `ip netns exec` take).
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`, which must succeed; its standard output.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            IP_DEADLINE,
        );
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {out:?}",
            self.name
        );
        out.stdout
    }

    /// A command that runs in the namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `f` on a thread of its own inside the namespace (sockets it
    /// makes belong there) and returns what it returned.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let file = File::open(self.path()).expect("open the test network namespace");
        std::thread::spawn(move || {
            enter(&file);
            f()
        })
        .join()
        .expect("the thread in the test network namespace panicked")
    }
}

/// Moves the calling thread into the network namespace `file` is.
pub fn enter(file: &File) {
    // SAFETY: setns(2) on an open namespace file; it only changes this
    // thread's network namespace.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        ret,
        0,
        "setns into a test network namespace: {}",
        std::io::Error::last_os_error()
    );
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
