//! One process of a container (its init or an exec): where its stdio
//! goes on the host, its state, and the task that copies its output and
//! records its exit.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use containerd_shim::api::Status;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use vmrun_agent::client::{AgentClient, ExecId};

use crate::error::{Result, ShimError};
use crate::stdio::{self, OutputSink, StdinFifo};

/// How long output may keep flowing after the process exited (a child that
/// inherited its stdout can hold the stream open).
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);
/// How long a failed wait looks for the VM's end to explain it.
const VM_GONE_GRACE: Duration = Duration::from_secs(5);
/// Exit status reported when the VM went away under a process.
pub const VM_GONE_STATUS: u32 = 255;

/// The stdio containerd gave a process.
#[derive(Clone, Debug, Default)]
pub struct ProcessIo {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub status: u32,
    pub at: SystemTime,
}

/// A process and what is known about it.
pub struct Process {
    /// "" for the container's init.
    pub exec_id: String,
    pub io: ProcessIo,
    /// An exec's OCI `process` (JSON); None for init.
    pub spec: Option<Vec<u8>>,
    agent_id: OnceLock<ExecId>,
    guest_pid: OnceLock<u32>,
    started: Mutex<bool>,
    exit: watch::Sender<Option<Exit>>,
    stdin: Option<StdinFifo>,
}

/// What the exit watcher needs beyond the process itself.
pub struct Attach<F> {
    pub agent: AgentClient,
    pub exec: ExecId,
    pub guest_pid: u32,
    pub container_id: String,
    pub namespace: String,
    /// Resolves when the VM is gone, with the reason.
    pub vm_stopped: F,
}

impl Process {
    pub fn new(exec_id: &str, io: ProcessIo, spec: Option<Vec<u8>>) -> Result<Arc<Self>> {
        let stdin = StdinFifo::new(&io.stdin)?;
        Ok(Arc::new(Self {
            exec_id: exec_id.to_string(),
            io,
            spec,
            agent_id: OnceLock::new(),
            guest_pid: OnceLock::new(),
            started: Mutex::new(false),
            exit: watch::channel(None).0,
            stdin,
        }))
    }

    /// Connects the process (created in the guest as `attach.exec`) to its
    /// host stdio and starts watching for its exit; `on_exit` runs once the
    /// output has been copied and the exit recorded.
    pub async fn attach<F, X, XF>(self: &Arc<Self>, attach: Attach<F>, on_exit: X) -> Result<()>
    where
        F: Future<Output = String> + Send + 'static,
        X: FnOnce(Exit) -> XF + Send + 'static,
        XF: Future<Output = ()> + Send + 'static,
    {
        let Attach {
            agent,
            exec,
            guest_pid,
            container_id,
            namespace,
            vm_stopped,
        } = attach;
        tracing::debug!(
            container_id,
            exec_id = self.exec_id,
            guest_pid,
            "attaching stdio"
        );
        let _ = self.agent_id.set(exec.clone());
        let _ = self.guest_pid.set(guest_pid);
        let outputs =
            stdio::open_outputs(&self.io.stdout, &self.io.stderr, &container_id, &namespace)
                .await?;
        let mut copies = Vec::new();
        if let Some(sink) = outputs.stdout {
            copies.push(copy_output(agent.read_stdout(&exec).await?, sink));
        }
        // On a terminal stderr is merged into stdout.
        if let (Some(sink), false) = (outputs.stderr, self.io.terminal) {
            copies.push(copy_output(agent.read_stderr(&exec).await?, sink));
        }
        let stdin_copy = self.stdin.as_ref().map(|_| {
            let process = Arc::clone(self);
            let agent = agent.clone();
            let exec = exec.clone();
            tokio::spawn(async move { process.copy_stdin(&agent, &exec).await })
        });

        let process = Arc::clone(self);
        let mut logger = outputs.logger;
        tokio::spawn(async move {
            tokio::pin!(vm_stopped);
            let status = tokio::select! {
                exit = agent.wait(&exec) => match exit {
                    Ok(exit) => u32::try_from(exit.shell_exit_code()).unwrap_or(VM_GONE_STATUS),
                    Err(e) => {
                        // A broken agent connection usually means the VM is
                        // gone: say why if it is.
                        match tokio::time::timeout(VM_GONE_GRACE, &mut vm_stopped).await {
                            Ok(reason) => tracing::warn!(container_id, exec_id = process.exec_id, "the microVM stopped: {reason}"),
                            Err(_) => tracing::warn!(container_id, exec_id = process.exec_id, "cannot wait for the process: {e}"),
                        }
                        VM_GONE_STATUS
                    }
                },
                reason = &mut vm_stopped => {
                    tracing::warn!(container_id, exec_id = process.exec_id, "the microVM stopped: {reason}");
                    VM_GONE_STATUS
                }
            };
            tracing::debug!(container_id, exec_id = process.exec_id, status, "exited");
            let at = SystemTime::now();
            for copy in copies {
                if tokio::time::timeout(OUTPUT_DRAIN, copy).await.is_err() {
                    tracing::warn!(
                        container_id,
                        "output still open {OUTPUT_DRAIN:?} after exit; cut"
                    );
                }
            }
            if let Some(stdin) = &process.stdin {
                stdin.release();
            }
            if let Some(copy) = stdin_copy {
                copy.abort();
            }
            if let Some(logger) = logger.as_mut() {
                let _ = logger.wait().await;
            }
            let exit = Exit { status, at };
            process.exit.send_replace(Some(exit));
            on_exit(exit).await;
        });
        Ok(())
    }

    async fn copy_stdin(&self, agent: &AgentClient, exec: &ExecId) {
        let Some(fifo) = &self.stdin else { return };
        match fifo.open().await {
            Ok(input) => {
                if let Err(e) = agent.copy_stdin(exec, input).await {
                    tracing::debug!("stdin: {e}");
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// The process's id in the agent, once created in the guest.
    pub fn agent_id(&self) -> Result<&ExecId> {
        self.agent_id.get().ok_or_else(|| {
            ShimError::FailedPrecondition(format!("process {:?} has not started", self.exec_id))
        })
    }

    /// Its pid in the guest (0 before it was created there).
    pub fn guest_pid(&self) -> u32 {
        self.guest_pid.get().copied().unwrap_or_default()
    }

    pub fn mark_started(&self) {
        *self.started.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    pub fn status(&self) -> Status {
        if self.exit().is_some() {
            Status::STOPPED
        } else if *self.started.lock().unwrap_or_else(PoisonError::into_inner) {
            Status::RUNNING
        } else {
            Status::CREATED
        }
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> Exit {
        let mut exit = self.exit.subscribe();
        let result = match exit.wait_for(Option::is_some).await {
            Ok(exit) => *exit,
            Err(_) => None,
        };
        result.unwrap_or(Exit {
            status: VM_GONE_STATUS,
            at: SystemTime::now(),
        })
    }

    /// CloseIO: no more input will come.
    pub fn close_stdin(&self) {
        if let Some(stdin) = &self.stdin {
            stdin.release();
        }
    }

    /// Records an exit for a process that never ran (its start failed).
    pub fn record_exit(&self, status: u32) {
        self.exit.send_if_modified(|exit| {
            if exit.is_some() {
                return false;
            }
            *exit = Some(Exit {
                status,
                at: SystemTime::now(),
            });
            true
        });
        self.close_stdin();
    }
}

fn copy_output(
    stream: vmrun_agent::client::OutputStream,
    mut sink: OutputSink,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = stream.copy_to(&mut sink).await {
            tracing::debug!("output: {e}");
        }
        let _ = sink.flush().await;
        // Dropping the sink closes the FIFO: containerd sees EOF.
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_follows_start_and_exit() {
        let process = Process::new("", ProcessIo::default(), None).unwrap();
        assert_eq!(process.status(), Status::CREATED);
        assert!(process.agent_id().is_err());
        process.mark_started();
        assert_eq!(process.status(), Status::RUNNING);
        let waiter = {
            let process = Arc::clone(&process);
            tokio::spawn(async move { process.wait().await })
        };
        process.record_exit(3);
        assert_eq!(waiter.await.unwrap().status, 3);
        assert_eq!(process.status(), Status::STOPPED);
        // The first exit stays.
        process.record_exit(9);
        assert_eq!(process.exit().unwrap().status, 3);
    }
}
