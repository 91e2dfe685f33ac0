//! Real containers on the host: a private cgroup v2 for the test thread, a
//! busybox rootfs, the `runc spec` config, and an agent whose container
//! helper is the freshly built agent binary.
//!
//! The host is cgroup v1 with an extra (controller-less) cgroup2 at
//! /sys/fs/cgroup/unified, and libcontainer's v2 manager insists on a
//! cgroup2 at /sys/fs/cgroup. So each test moves its thread into a mount
//! namespace of its own and mounts cgroup2 there; everything the test
//! starts (the agent's threads, the helper, the containers) inherits it.
//! Without controllers, limits (memory.max, pids.max, cpu.max) cannot be
//! enforced here: those cases run in real guests.

#![allow(dead_code, clippy::unwrap_used)]

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vmrun_agent::container::ContainerConfig;
use vmrun_agent::server::ServerConfig;

use crate::common::TempDir;

/// The applets the tests' containers use.
const APPLETS: &[&str] = &[
    "sh", "echo", "id", "hostname", "pwd", "cat", "sleep", "touch", "env", "true", "false", "ls",
    "mkdir", "grep", "chown", "tty", "wc",
];

/// This thread (and what it starts) in a mount namespace with cgroup2 on
/// /sys/fs/cgroup. Removes its cgroup parent when dropped.
pub struct PrivateCgroup2 {
    /// The cgroup parent for this test's containers, e.g. "/vmrun-test-7-0".
    pub parent: String,
}

impl PrivateCgroup2 {
    pub fn enter() -> Self {
        // SAFETY: unshare takes flags only; it moves this thread into a
        // new mount namespace (other threads keep theirs).
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNS) };
        assert_eq!(unshared, 0, "unshare: {}", std::io::Error::last_os_error());
        mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE);
        mount(Some("cgroup2"), "/sys/fs/cgroup", Some("cgroup2"), 0);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let parent = format!(
            "/vmrun-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self { parent }
    }

    /// The directory of a cgroup path below this namespace's cgroup2.
    pub fn dir(path: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
    }
}

impl Drop for PrivateCgroup2 {
    /// The cgroup2 hierarchy is the host's (its /sys/fs/cgroup/unified):
    /// leave nothing there, even after a failed test. Empty cgroups are
    /// removed with rmdir, children first.
    fn drop(&mut self) {
        let parent = Self::dir(&self.parent);
        if let Ok(children) = std::fs::read_dir(&parent) {
            for child in children.flatten() {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        let _ = std::fs::remove_dir(parent);
    }
}

fn mount(source: Option<&str>, target: &str, fstype: Option<&str>, flags: libc::c_ulong) {
    let c = |s: &str| CString::new(s).unwrap();
    let source = source.map(c);
    let target = c(target);
    let fstype = fstype.map(c);
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that lives
    // across the call; no data argument.
    let result = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(
        result,
        0,
        "mount {target:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// A directory with the rootfs (`rootfs/`, busybox) and the state root.
pub struct ContainerHost {
    pub dir: TempDir,
    pub rootfs: PathBuf,
    pub cgroups: PrivateCgroup2,
}

impl ContainerHost {
    pub fn new() -> Self {
        let cgroups = PrivateCgroup2::enter();
        let dir = TempDir::new();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "proc", "sys", "dev", "tmp", "etc", "root", "data"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        Self {
            dir,
            rootfs,
            cgroups,
        }
    }

    pub fn state_root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            containers: ContainerConfig {
                state_root: self.state_root(),
                cgroup_root: PathBuf::from("/sys/fs/cgroup"),
                cgroup_parent: self.cgroups.parent.clone(),
                helper_program: helper_program(),
                helper_timeout: Duration::from_secs(60),
            },
            prestart_container_helper: false,
            prepare_cgroup_parent: false,
            template: false,
        }
    }

    /// The cgroup directory of container `id` (with the default path).
    pub fn cgroup_dir(&self, id: &str) -> PathBuf {
        PrivateCgroup2::dir(&format!("{}/{id}", self.cgroups.parent))
    }
}

/// The agent binary that serves as container helper: the one cargo built
/// for this test, or `VMRUN_AGENT_TEST_HELPER` (e.g. the static release
/// build, to check it on the host).
fn helper_program() -> PathBuf {
    std::env::var_os("VMRUN_AGENT_TEST_HELPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vmrun-agent")))
}

/// `runc spec`'s config.json, as runc 1.1 writes it.
pub fn runc_spec() -> serde_json::Value {
    serde_json::from_str(include_str!("../fixtures/runc-spec.json")).unwrap()
}

/// `runc spec` running `args` without a terminal.
pub fn spec_running(args: &[&str]) -> serde_json::Value {
    let mut spec = runc_spec();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec
}

/// The mounts of this thread's mount namespace.
pub fn mount_table() -> String {
    std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
}
