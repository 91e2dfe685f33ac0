//! The VMM of a sandbox, as its own process: `vmrun boot` with the
//! sandbox's vsock socket and shared directory. Keeping it out of the shim
//! lets it be confined on its own, and a guest that crashes the VMM cannot
//! take the shim (and containerd's view of the pod) with it.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;
use tokio::sync::{oneshot, watch};

use crate::config::ShimConfig;
use crate::error::{Result, ShimError};
use crate::sandbox_dir::SandboxDir;

/// The virtio-fs tag of a sandbox's shared directory.
pub const SHARE_TAG: &str = "sandbox";
/// How many console lines a report of a dead VM quotes.
const CONSOLE_TAIL_LINES: usize = 15;

/// A running VMM process and a way to stop it.
pub struct VmmProcess {
    pid: u32,
    console_log: std::path::PathBuf,
    kill: Option<oneshot::Sender<()>>,
    exited: watch::Receiver<Option<String>>,
}

impl VmmProcess {
    /// Starts the VM; it boots in the background.
    pub fn spawn(config: &ShimConfig, dir: &SandboxDir) -> Result<Self> {
        let binary = config.vmm_binary();
        let console = std::fs::File::create(dir.console_log()).map_err(ShimError::host(
            format!("create {}", dir.console_log().display()),
        ))?;
        let console_err = console
            .try_clone()
            .map_err(ShimError::host("duplicate the console log descriptor"))?;
        let mut command = Command::new(&binary);
        command
            .arg("boot")
            .arg("--kernel")
            .arg(&config.kernel)
            .arg("--initrd")
            .arg(&config.initrd)
            .args(["--cpus", &config.vcpus.to_string()])
            .args(["--memory", &config.memory_mib.to_string()])
            .args(["--compat", &config.compat])
            .arg("--vsock")
            .arg(dir.vsock())
            .arg("--share")
            .arg(format!("{SHARE_TAG}={}", dir.shared().display()));
        for word in &config.kernel_params {
            command.arg("--cmdline").arg(word);
        }
        command
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe system call.
        unsafe {
            command.pre_exec(|| {
                // A VM must not outlive its shim: containerd's `delete`
                // cleans up after a dead shim, not after a lost VMM.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(ShimError::host(format!("run the VMM {}", binary.display())))?;
        let pid = child.id().unwrap_or_default();
        let (kill_tx, kill_rx) = oneshot::channel();
        let (exited_tx, exited) = watch::channel(None);
        let console_log = dir.console_log();
        let watched_log = console_log.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = kill_rx => {
                    if let Err(e) = child.start_kill() {
                        tracing::warn!("cannot kill the VMM {pid}: {e}");
                    }
                    child.wait().await
                }
            };
            let reason = match status {
                Ok(status) => format!("the VMM (pid {pid}) exited: {status}"),
                Err(e) => format!("cannot wait for the VMM (pid {pid}): {e}"),
            };
            let reason = format!(
                "{reason}; last guest console lines:\n{}",
                tail(&watched_log)
            );
            let _ = exited_tx.send(Some(reason));
        });
        tracing::info!(pid, "VMM started");
        Ok(Self {
            pid,
            console_log,
            kill: Some(kill_tx),
            exited,
        })
    }

    /// The VMM's host pid: what containerd sees as the pid of every task in
    /// the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines of the guest console (and the VMM's messages), for
    /// reports of a VM that does not get anywhere.
    pub fn console_tail(&self) -> String {
        tail(&self.console_log)
    }

    /// A handle that tells when (and why) the VMM ended.
    pub fn exit_watch(&self) -> ExitWatch {
        ExitWatch(self.exited.clone())
    }

    /// Waits until the VMM process has ended; returns why.
    pub async fn exited(&self) -> String {
        self.exit_watch().wait().await
    }

    /// Kills the VMM and waits for it to be gone.
    pub async fn stop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.exited().await;
    }
}

/// Tells when the VMM ended; cheap to clone.
#[derive(Clone)]
pub struct ExitWatch(watch::Receiver<Option<String>>);

impl ExitWatch {
    /// Waits until the VMM has ended; returns why.
    pub async fn wait(mut self) -> String {
        match self.0.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the VMM watcher ended".to_string(),
        }
    }

    /// Why the VMM ended, if it has.
    pub fn reason(&self) -> Option<String> {
        self.0.borrow().clone()
    }
}

/// The last lines of the guest console, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..].join("\n")
}
