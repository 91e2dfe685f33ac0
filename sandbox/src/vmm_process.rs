//! The VMM of a sandbox, as its own process: `vmrun-vmm --config FILE`,
//! FILE being the sandbox's [`VmConfig`] as JSON. Keeping it out of the
//! shim and out of `vmrun run` lets it be confined on its own, and a guest
//! that crashes the VMM cannot take its supervisor with it. Its output goes
//! through a pipe into a [`ConsoleLog`].

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Notify};
use vm_config::VmConfig;

use crate::console_log::{ConsoleConfig, ConsoleLog};
use crate::error::{Result, SandboxError};
use crate::sandbox_dir::SandboxDir;

/// The name of the VMM binary (the `vmrun-vmm` crate's).
pub const VMM_BINARY: &str = "vmrun-vmm";

/// The VMM binary a caller runs by default: the one next to the caller's
/// own binary (an installation, or a cargo target directory), else the one
/// on PATH.
pub fn default_vmm_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(VMM_BINARY)))
        .filter(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(VMM_BINARY))
}

/// A running VMM process and a way to stop it. Dropping it kills the
/// process.
pub struct VmmProcess {
    pid: u32,
    console: ConsoleLog,
    killer: Killer,
    exited: watch::Receiver<Option<String>>,
}

/// Kills the VMM, saying why; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Killer {
    notify: Arc<Notify>,
    reason: Arc<Mutex<Option<String>>>,
}

impl Killer {
    /// Kills the VMM; `reason` (the first one given) goes into the report
    /// of its end.
    pub fn kill(&self, reason: Option<String>) {
        if let Some(reason) = reason {
            self.reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(reason);
        }
        self.notify.notify_one();
    }

    fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl VmmProcess {
    /// Starts `binary` on `config`, in `dir`; the VM boots (or restores) in
    /// the background; its console goes as `console` says.
    pub fn spawn(
        binary: &Path,
        config: &VmConfig,
        dir: &SandboxDir,
        console: ConsoleConfig,
    ) -> Result<Self> {
        let config_path = dir.vm_config();
        write_private(&config_path, config)?;
        let log = std::fs::File::create(dir.console_log()).map_err(SandboxError::host(format!(
            "create {}",
            dir.console_log().display()
        )))?;
        let console = ConsoleLog::new(Some(log), console);
        let (reader, writer) = nix::unistd::pipe().map_err(SandboxError::sys("make a pipe"))?;
        let writer_err = writer
            .try_clone()
            .map_err(SandboxError::host("duplicate a pipe descriptor"))?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer_err))
            // Its own process group: a Ctrl-C at the user's terminal is for
            // `vmrun run` to forward to the command, not for the VMM.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe system call.
        unsafe {
            command.pre_exec(|| {
                // A VM must not outlive its supervisor: containerd's
                // `delete` cleans up after a dead shim, not after a lost VMM.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(SandboxError::host(format!(
            "run the VMM {}",
            binary.display()
        )))?;
        // The write ends now belong to the child alone, so the pipe ends
        // when the VMM does.
        drop(command);
        let pid = child.id().unwrap_or_default();
        let output = tokio::net::unix::pipe::Receiver::from_owned_fd(reader)
            .map_err(SandboxError::host("watch the VMM's output"))?;
        let killer = Killer::default();
        let (exited_tx, exited) = watch::channel(None);
        tokio::spawn(watch_vmm(
            child,
            output,
            console.clone(),
            killer.clone(),
            exited_tx,
        ));
        tracing::info!(pid, "VMM started");
        Ok(Self {
            pid,
            console,
            killer,
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
        self.console.tail()
    }

    /// A handle that tells when (and why) the VMM ended.
    pub fn exit_watch(&self) -> ExitWatch {
        ExitWatch(self.exited.clone())
    }

    /// What kills this VMM.
    pub fn killer(&self) -> Killer {
        self.killer.clone()
    }

    /// Kills the VMM and waits for it to be gone.
    pub async fn stop(&mut self) {
        self.killer.kill(None);
        self.exit_watch().wait().await;
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        self.killer.kill(None);
    }
}

/// Copies the VMM's output into `console` until it ends, kills it when
/// asked, and reports why it ended (with the console's tail).
async fn watch_vmm(
    mut child: Child,
    mut output: tokio::net::unix::pipe::Receiver,
    console: ConsoleLog,
    killer: Killer,
    exited: watch::Sender<Option<String>>,
) {
    let pid = child.id().unwrap_or_default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut output_open = true;
    let status = loop {
        tokio::select! {
            read = output.read(&mut buf), if output_open => match read {
                Ok(0) | Err(_) => output_open = false,
                Ok(n) => console.append(&buf[..n]),
            },
            status = child.wait() => break status,
            () = killer.notify.notified() => {
                if let Err(e) = child.start_kill() {
                    tracing::warn!("cannot kill the VMM {pid}: {e}");
                }
                break child.wait().await;
            }
        }
    };
    // What it printed last is what says why.
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_millis(100), output.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        console.append(&buf[..n]);
    }
    let mut reason = match status {
        Ok(status) if status.signal() == Some(libc::SIGSYS) => format!(
            "the VMM (pid {pid}) was killed by its seccomp filter (SIGSYS): one of its \
             threads made a system call outside its filter"
        ),
        Ok(status) => format!("the VMM (pid {pid}) exited: {status}"),
        Err(e) => format!("cannot wait for the VMM (pid {pid}): {e}"),
    };
    if let Some(why) = killer.reason() {
        reason = format!("{why}: the microVM was stopped ({reason})");
    }
    let reason = format!("{reason}; last guest console lines:\n{}", console.tail());
    let _ = exited.send(Some(reason));
}

/// Writes `config` as JSON to a new root-only file at `path`.
fn write_private(path: &Path, config: &VmConfig) -> Result<()> {
    let json = serde_json::to_vec_pretty(config)
        .map_err(|e| SandboxError::Vm(format!("cannot encode the VM configuration: {e}")))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(&json))
        .map_err(SandboxError::host(format!("write {}", path.display())))
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
