//! Shared helpers for vmrun's integration tests: finding the binaries under
//! test, and running them with a hard deadline so a stuck guest fails the
//! test instead of hanging CI.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod cni;
pub mod confinement;
pub mod containerd;
pub mod cri;
pub mod netns;

/// Guests boot in ~80 s on an idle software-KVM host and take minutes on a
/// loaded one; leave generous room (a stuck guest still fails the test).
pub const BOOT_DEADLINE: Duration = Duration::from_secs(900);

/// The workspace's target directory (where `cargo build` put the binaries).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("target"))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// A binary of this workspace built for this profile (`cargo build --bins`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let bin = target_dir().join(profile).join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Writes a busybox OCI bundle (`rootfs-builder bundle`) into a fresh `dir`.
pub fn busybox_bundle(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    let done = run(
        Command::new(workspace_bin("rootfs-builder"))
            .arg("bundle")
            .arg("--output")
            .arg(dir),
        Duration::from_secs(60),
    );
    assert!(done.status.success(), "rootfs-builder bundle: {done:?}");
}

/// The `vmrun` binary under test: `$VMRUN_BIN`, or the one `cargo build`
/// produced for this profile.
pub fn vmrun_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("VMRUN_BIN") {
        return PathBuf::from(bin);
    }
    workspace_bin("vmrun")
}

/// The VMM binary that goes with [`vmrun_bin`]: `vmrun-vmm` next to it, as
/// `vmrun` and the shim find theirs.
pub fn vmm_bin() -> PathBuf {
    vmrun_bin().with_file_name("vmrun-vmm")
}

/// What a finished command left.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, killing it if it outlives `deadline`.
pub fn run(cmd: &mut Command, deadline: Duration) -> Finished {
    try_run(cmd, deadline).unwrap_or_else(|err| panic!("{err}"))
}

/// [`run`] that reports a command that cannot start or outlives `deadline`
/// (killed) as an error instead of panicking: for clean-up paths (`Drop`).
pub fn try_run(cmd: &mut Command, deadline: Duration) -> Result<Finished, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout pipe");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for {cmd:?}: {e}")),
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            return Err(format!(
                "command {cmd:?} still running after {deadline:?}; killed ({status})\n\
                 --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    })
}
