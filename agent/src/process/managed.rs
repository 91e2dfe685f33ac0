//! One process the agent started (by `ExecProcess` or as a container's
//! process): its stdio, its terminal and its exit, from spawn until the
//! table forgets it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::error::ProcessError;
use super::exec_spec::TerminalSize;
use super::fd_io::{StdioFd, StdioKind};
use super::output::{pump_output, OutputBuffer};
use super::pty::set_window_size;
use super::reaper::{self, ProcessExit};
use super::spawn::{SpawnedProcess, SpawnedStdio};

/// How long after a process exits its output may still be open elsewhere
/// (a background child inherited it) before the agent stops waiting for end
/// of file and reports the exit. Output already written is never cut off.
pub const OUTPUT_LINGER_AFTER_EXIT: Duration = Duration::from_secs(3);

/// The end-of-input character a terminal turns into end of file (Ctrl-D,
/// the default VEOF).
const TERMINAL_EOF: u8 = 0x04;

/// Which output stream a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// What became of a stdin write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinWrite {
    Written,
    /// The process closed its stdin or exited; further input is pointless.
    ReaderGone,
}

/// A process started by the agent.
#[derive(Debug)]
pub struct ManagedProcess {
    exec_id: String,
    pid: Pid,
    /// Where input goes: our end of the stdin pipe (taken on close) or the
    /// terminal master (which stays, for output).
    stdin: Mutex<Option<Arc<StdioFd>>>,
    stdin_closed: AtomicBool,
    terminal: Option<Arc<StdioFd>>,
    stdout: Arc<OutputBuffer>,
    stderr: Arc<OutputBuffer>,
    /// `Some` once the process exited and its output was captured.
    exit: watch::Receiver<Option<ProcessExit>>,
    /// Set as soon as the process was reaped, before its output is done.
    reaped: Arc<OnceLock<ProcessExit>>,
    exit_delivered: AtomicBool,
}

impl ManagedProcess {
    /// Starts capturing the output of a freshly spawned process and
    /// watching for its exit. Needs a tokio runtime.
    pub fn start(exec_id: String, spawned: SpawnedProcess) -> Result<Arc<Self>, ProcessError> {
        let register = |fd, kind| {
            StdioFd::new(fd, kind)
                .map(Arc::new)
                .map_err(|source| ProcessError::Io {
                    op: "exec: watch stdio of",
                    exec_id: exec_id.clone(),
                    source,
                })
        };
        let (stop_waiting_tx, stop_waiting_rx) = watch::channel(false);
        let mut pumps = Vec::with_capacity(2);
        let mut pump = |source: &Arc<StdioFd>| {
            let buffer = OutputBuffer::new();
            pumps.push(tokio::spawn(pump_output(
                Arc::clone(source),
                Arc::clone(&buffer),
                stop_waiting_rx.clone(),
            )));
            buffer
        };

        let (stdin, terminal, stdout, stderr) = match spawned.stdio {
            SpawnedStdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let stdin = register(stdin, StdioKind::Pipe)?;
                let stdout = pump(&register(stdout, StdioKind::Pipe)?);
                let stderr = pump(&register(stderr, StdioKind::Pipe)?);
                (stdin, None, stdout, stderr)
            }
            SpawnedStdio::Terminal { master } => {
                let master = register(master, StdioKind::TerminalMaster)?;
                let stdout = pump(&master);
                (
                    Arc::clone(&master),
                    Some(master),
                    stdout,
                    OutputBuffer::ended(),
                )
            }
        };

        let (exit_tx, exit_rx) = watch::channel(None);
        let reaped = Arc::new(OnceLock::new());
        tokio::spawn(report_exit(
            spawned.exit,
            Arc::clone(&reaped),
            pumps,
            stop_waiting_tx,
            exit_tx,
        ));

        Ok(Arc::new(Self {
            exec_id,
            pid: spawned.pid,
            stdin: Mutex::new(Some(stdin)),
            stdin_closed: AtomicBool::new(false),
            terminal,
            stdout,
            stderr,
            exit: exit_rx,
            reaped,
            exit_delivered: AtomicBool::new(false),
        }))
    }

    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// How the process ended, once it was reaped (its pid may then belong to
    /// another process); `None` while it runs.
    pub fn exit_if_reaped(&self) -> Option<ProcessExit> {
        self.reaped.get().copied()
    }

    /// Waits until the process exited and its output was captured.
    pub async fn wait(&self) -> Result<ProcessExit, ProcessError> {
        let mut exit = self.exit.clone();
        let outcome = exit.wait_for(Option::is_some).await;
        match outcome.ok().and_then(|exit| *exit) {
            Some(exit) => {
                self.exit_delivered.store(true, Ordering::Release);
                Ok(exit)
            }
            None => Err(ProcessError::Internal {
                op: "wait",
                reason: format!("lost track of exec id {:?}", self.exec_id),
            }),
        }
    }

    /// Sends a signal unless the process is already gone (then: no-op).
    pub async fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        match reaper::signal_if_alive(self.pid, signal).await {
            Ok(_) => Ok(()),
            Err(errno) => Err(ProcessError::Io {
                op: "signal",
                exec_id: self.exec_id.clone(),
                source: errno.into(),
            }),
        }
    }

    pub fn resize(&self, size: TerminalSize) -> Result<(), ProcessError> {
        let terminal = self
            .terminal
            .as_ref()
            .ok_or_else(|| ProcessError::NoTerminal {
                exec_id: self.exec_id.clone(),
            })?;
        set_window_size(terminal.get_ref(), size).map_err(|errno| ProcessError::Io {
            op: "resize pty of",
            exec_id: self.exec_id.clone(),
            source: errno.into(),
        })
    }

    /// Writes to the process's stdin.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<StdinWrite, ProcessError> {
        let stdin = self.open_stdin()?;
        match stdin.write_all(data).await {
            Ok(()) => Ok(StdinWrite::Written),
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                Ok(StdinWrite::ReaderGone)
            }
            Err(source) => Err(ProcessError::Io {
                op: "write stdin of",
                exec_id: self.exec_id.clone(),
                source,
            }),
        }
    }

    /// Ends the process's input. Closing twice is fine.
    pub async fn close_stdin(&self) -> Result<(), ProcessError> {
        if self.stdin_closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let Some(stdin) = self.lock_stdin().take() else {
            return Ok(());
        };
        if stdin.kind() == StdioKind::TerminalMaster {
            // The terminal stays open for output; input ends the way a
            // user ends it. A process that already exited cannot care.
            if let Err(source) = stdin.write_all(&[TERMINAL_EOF]).await {
                tracing::debug!(exec_id = %self.exec_id, %source, "terminal EOF not delivered");
            }
        }
        // A pipe's write end closes when the last in-flight write lets go.
        Ok(())
    }

    /// The output of one stream, for one reader at a time.
    pub fn output(&self, stream: OutputStream) -> &OutputBuffer {
        match stream {
            OutputStream::Stdout => &self.stdout,
            OutputStream::Stderr => &self.stderr,
        }
    }

    /// Whether the process may be forgotten: its exit was reported to a
    /// waiter and readers have seen the end of all of its output.
    pub fn is_finished(&self) -> bool {
        self.exit_delivered.load(Ordering::Acquire)
            && self.stdout.was_read_to_end()
            && self.stderr.was_read_to_end()
    }

    fn open_stdin(&self) -> Result<Arc<StdioFd>, ProcessError> {
        self.lock_stdin()
            .as_ref()
            .map(Arc::clone)
            .ok_or_else(|| ProcessError::StdinClosed {
                exec_id: self.exec_id.clone(),
            })
    }

    fn lock_stdin(&self) -> std::sync::MutexGuard<'_, Option<Arc<StdioFd>>> {
        // Guards a plain Option; a panicking holder cannot corrupt it.
        self.stdin.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // Forgotten with output unread: let pumps waiting for room go.
        self.stdout.abandon();
        self.stderr.abandon();
    }
}

/// Publishes the exit once the process was reaped and its output captured.
async fn report_exit(
    reaped: oneshot::Receiver<ProcessExit>,
    reaped_status: Arc<OnceLock<ProcessExit>>,
    pumps: Vec<JoinHandle<()>>,
    stop_waiting: watch::Sender<bool>,
    exit: watch::Sender<Option<ProcessExit>>,
) {
    let Ok(status) = reaped.await else {
        // The reaper dropped us: waiters get an error rather than hanging.
        tracing::error!("process exit was never delivered");
        return;
    };
    // Only this task sets it, once.
    let _first = reaped_status.set(status);
    let mut captured = Box::pin(async {
        for pump in pumps {
            if let Err(error) = pump.await {
                tracing::warn!(%error, "output pump failed");
            }
        }
    });
    tokio::select! {
        () = &mut captured => {}
        () = tokio::time::sleep(OUTPUT_LINGER_AFTER_EXIT) => {
            stop_waiting.send_replace(true);
            captured.await;
        }
    }
    exit.send_replace(Some(status));
}
