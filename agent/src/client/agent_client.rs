//! A typed front for the generated gRPC clients.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio_stream::{Stream, StreamExt};
use tokio_util::io::ReaderStream;
use tonic::transport::Channel;

use super::call_deadline::{CallDeadline, CallLimits, DeadlineMissed, Pace};
use super::error::ClientError;
use super::output_stream::OutputStream;
use crate::proto::check_response::ServingStatus;
use crate::proto::container_client::ContainerClient;
use crate::proto::guest_client::GuestClient;
use crate::proto::health_client::HealthClient;
use crate::proto::process_client::ProcessClient;
use crate::proto::storage_client::StorageClient;
use crate::proto::{
    wait_process_response, CheckRequest, CloseStdinRequest, ExecProcessRequest,
    GuestDetailsRequest, GuestDetailsResponse, PtySize, ReadOutputRequest, ResizePtyRequest,
    ShutdownRequest, SignalProcessRequest, VersionRequest, VersionResponse, WaitProcessRequest,
    WriteStdinRequest,
};

/// Size of the pieces local input is sent to a process's stdin in.
const STDIN_CHUNK_BYTES: usize = 32 * 1024;

/// Names a process started through [`AgentClient::exec`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecId(String);

impl ExecId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ExecId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A process the agent started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedProcess {
    pub exec_id: ExecId,
    /// Its pid in the guest, for logs.
    pub pid: u32,
}

/// How a guest process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
}

impl ProcessExit {
    /// The exit code a shell would report: the code, or 128 + the signal
    /// (the client only makes these from codes 0..=255 and signals 1..=64).
    pub fn shell_exit_code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled(signal) => signal.saturating_add(128),
        }
    }
}

/// The agent API, typed. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct AgentClient {
    health: HealthClient<Channel>,
    process: ProcessClient<Channel>,
    guest: GuestClient<Channel>,
    pub(super) container: ContainerClient<Channel>,
    pub(super) storage: StorageClient<Channel>,
    deadline: Option<Arc<CallDeadline>>,
}

impl AgentClient {
    /// A client over an established channel (see
    /// [`dial_hybrid_vsock`](super::dial_hybrid_vsock)).
    pub fn new(channel: Channel) -> Self {
        Self {
            health: HealthClient::new(channel.clone()),
            process: ProcessClient::new(channel.clone()),
            guest: GuestClient::new(channel.clone()),
            container: ContainerClient::new(channel.clone()),
            storage: StorageClient::new(channel),
            deadline: None,
        }
    }

    /// This client (and its clones) with every call bounded by `limits`;
    /// the receiver learns which call missed its limit first.
    pub fn with_call_deadline(mut self, limits: CallLimits) -> (Self, DeadlineMissed) {
        let (deadline, missed) = CallDeadline::new(limits);
        self.deadline = Some(deadline);
        (self, missed)
    }

    /// Runs a call that answers at once under the quick limit, if any.
    pub(super) async fn within<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.paced(op, Pace::Quick, call).await
    }

    /// Runs a call that sets up a container or process under the setup
    /// limit, if any.
    pub(super) async fn within_setup<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.paced(op, Pace::Setup, call).await
    }

    async fn paced<T>(
        &self,
        op: &'static str,
        pace: Pace,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match &self.deadline {
            Some(deadline) => deadline.run(op, pace, call).await,
            None => call.await,
        }
    }

    /// Succeeds when the agent serves.
    pub async fn check(&self) -> Result<(), ClientError> {
        let answer = self
            .within("check", self.health.clone().check(CheckRequest {}))
            .await
            .map_err(ClientError::rpc("check"))?
            .into_inner();
        match answer.status() {
            ServingStatus::Serving => Ok(()),
            ServingStatus::Unspecified => Err(ClientError::NotServing),
        }
    }

    pub async fn version(&self) -> Result<VersionResponse, ClientError> {
        Ok(self
            .within("version", self.health.clone().version(VersionRequest {}))
            .await
            .map_err(ClientError::rpc("version"))?
            .into_inner())
    }

    /// Starts a process. Its output is captured from the start; attach
    /// [`read_stdout`](Self::read_stdout) and
    /// [`read_stderr`](Self::read_stderr) whenever convenient.
    ///
    /// Its stdin stays open until [`close_stdin`](Self::close_stdin) or the
    /// end of a [`write_stdin`](Self::write_stdin) stream: close it when
    /// there is no input, or a process reading stdin waits forever.
    ///
    /// Takes an [`ExecCommand`](super::ExecCommand) or a raw request.
    /// A program that does not exist is NOT_FOUND, one that cannot be
    /// executed PERMISSION_DENIED (a shell's 127 and 126).
    pub async fn exec(
        &self,
        command: impl Into<ExecProcessRequest>,
    ) -> Result<StartedProcess, ClientError> {
        let answer = self
            .within_setup("exec", self.process.clone().exec_process(command.into()))
            .await
            .map_err(ClientError::rpc("exec"))?
            .into_inner();
        Ok(StartedProcess {
            exec_id: ExecId(answer.exec_id),
            pid: answer.pid,
        })
    }

    /// Waits for the process to end. Its output has been captured by then:
    /// output streams read to their end hold everything it wrote.
    pub async fn wait(&self, exec_id: &ExecId) -> Result<ProcessExit, ClientError> {
        let answer = self
            .process
            .clone()
            .wait_process(WaitProcessRequest {
                exec_id: exec_id.0.clone(),
            })
            .await
            .map_err(ClientError::rpc("wait"))?
            .into_inner();
        process_exit(answer.status)
    }

    /// Sends a signal (by number, e.g. 15 for SIGTERM). A process that has
    /// already exited is not an error.
    pub async fn signal(&self, exec_id: &ExecId, signal: i32) -> Result<(), ClientError> {
        self.within(
            "signal",
            self.process.clone().signal_process(SignalProcessRequest {
                exec_id: exec_id.0.clone(),
                signal,
            }),
        )
        .await
        .map_err(ClientError::rpc("signal"))?;
        Ok(())
    }

    /// Resizes the terminal of a process started with a terminal.
    pub async fn resize_pty(
        &self,
        exec_id: &ExecId,
        rows: u16,
        cols: u16,
    ) -> Result<(), ClientError> {
        self.within(
            "resize pty",
            self.process.clone().resize_pty(ResizePtyRequest {
                exec_id: exec_id.0.clone(),
                size: Some(PtySize {
                    rows: rows.into(),
                    cols: cols.into(),
                }),
            }),
        )
        .await
        .map_err(ClientError::rpc("resize pty"))?;
        Ok(())
    }

    /// Ends the process's input (for a terminal: sends Ctrl-D).
    pub async fn close_stdin(&self, exec_id: &ExecId) -> Result<(), ClientError> {
        self.within(
            "close stdin",
            self.process.clone().close_stdin(CloseStdinRequest {
                exec_id: exec_id.0.clone(),
            }),
        )
        .await
        .map_err(ClientError::rpc("close stdin"))?;
        Ok(())
    }

    /// Streams `data` into the process's stdin; when `data` ends, so does
    /// the process's input. Returns the bytes the process accepted, fewer
    /// than sent if it stopped reading (exited or closed stdin).
    pub async fn write_stdin<S>(&self, exec_id: &ExecId, data: S) -> Result<u64, ClientError>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        // The first message names the process, even if there is no data.
        let first = WriteStdinRequest {
            exec_id: exec_id.0.clone(),
            data: Bytes::new(),
        };
        let requests = tokio_stream::once(first).chain(data.map(|data| WriteStdinRequest {
            exec_id: String::new(),
            data,
        }));
        let answer = self
            .process
            .clone()
            .write_stdin(requests)
            .await
            .map_err(ClientError::rpc("write stdin"))?
            .into_inner();
        Ok(answer.bytes_written)
    }

    /// Copies `input` into the process's stdin until `input` ends, then
    /// closes the process's stdin.
    pub async fn copy_stdin<R>(&self, exec_id: &ExecId, input: R) -> Result<u64, ClientError>
    where
        R: AsyncRead + Send + 'static,
    {
        let read_error = Arc::new(Mutex::new(None));
        let record_error = Arc::clone(&read_error);
        let chunks = ReaderStream::with_capacity(input, STDIN_CHUNK_BYTES).map_while(
            move |chunk| match chunk {
                Ok(bytes) => Some(bytes),
                Err(error) => {
                    *record_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    None
                }
            },
        );
        let written = self.write_stdin(exec_id, chunks).await?;
        let read_error = read_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match read_error {
            Some(error) => Err(ClientError::StdinSource(error)),
            None => Ok(written),
        }
    }

    /// The process's standard output (everything, for a terminal).
    pub async fn read_stdout(&self, exec_id: &ExecId) -> Result<OutputStream, ClientError> {
        let chunks = self
            .within(
                "read stdout",
                self.process.clone().read_stdout(ReadOutputRequest {
                    exec_id: exec_id.0.clone(),
                }),
            )
            .await
            .map_err(ClientError::rpc("read stdout"))?
            .into_inner();
        Ok(OutputStream::new(chunks, "read stdout"))
    }

    /// The process's standard error (empty for a terminal).
    pub async fn read_stderr(&self, exec_id: &ExecId) -> Result<OutputStream, ClientError> {
        let chunks = self
            .within(
                "read stderr",
                self.process.clone().read_stderr(ReadOutputRequest {
                    exec_id: exec_id.0.clone(),
                }),
            )
            .await
            .map_err(ClientError::rpc("read stderr"))?
            .into_inner();
        Ok(OutputStream::new(chunks, "read stderr"))
    }

    pub(crate) fn guest_client(&self) -> GuestClient<Channel> {
        self.guest.clone()
    }

    pub async fn guest_details(&self) -> Result<GuestDetailsResponse, ClientError> {
        Ok(self
            .within(
                "guest details",
                self.guest.clone().guest_details(GuestDetailsRequest {}),
            )
            .await
            .map_err(ClientError::rpc("guest details"))?
            .into_inner())
    }

    /// Asks the agent to power the VM off. It answers first; the connection
    /// then goes away with the VM.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.within("shutdown", self.guest.clone().shutdown(ShutdownRequest {}))
            .await
            .map_err(ClientError::rpc("shutdown"))?;
        Ok(())
    }
}

/// How a process ended, from the agent's answer to `WaitProcess`.
fn process_exit(status: Option<wait_process_response::Status>) -> Result<ProcessExit, ClientError> {
    let impossible = |field, value: i32| ClientError::ImpossibleAnswer {
        op: "wait",
        field,
        value: value.into(),
    };
    // What the host makes of these (exit statuses, 128 + signal) must
    // not wrap: a guest's "exit 256" is no success.
    match status {
        Some(wait_process_response::Status::ExitCode(code)) if (0..=255).contains(&code) => {
            Ok(ProcessExit::Exited(code))
        }
        Some(wait_process_response::Status::ExitCode(code)) => Err(impossible("exit code", code)),
        Some(wait_process_response::Status::Signal(signal)) if (1..=64).contains(&signal) => {
            Ok(ProcessExit::Signaled(signal))
        }
        Some(wait_process_response::Status::Signal(signal)) => Err(impossible("signal", signal)),
        None => Err(ClientError::IncompleteAnswer {
            op: "wait",
            field: "exit status",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_exit_codes() {
        assert_eq!(ProcessExit::Exited(42).shell_exit_code(), 42);
        assert_eq!(ProcessExit::Signaled(9).shell_exit_code(), 137);
    }

    #[test]
    fn impossible_exit_statuses_from_the_guest_are_refused() {
        use wait_process_response::Status;
        assert_eq!(
            process_exit(Some(Status::ExitCode(255))).unwrap(),
            ProcessExit::Exited(255)
        );
        assert_eq!(
            process_exit(Some(Status::Signal(64))).unwrap(),
            ProcessExit::Signaled(64)
        );
        for status in [
            Status::ExitCode(256),
            Status::ExitCode(-1),
            Status::Signal(0),
            Status::Signal(i32::MAX),
        ] {
            let err = process_exit(Some(status)).unwrap_err().to_string();
            assert!(err.contains("impossible"), "{err}");
        }
        assert!(process_exit(None).is_err());
    }
}
