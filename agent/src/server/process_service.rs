//! The `Process` service: checks each request and hands it to the process
//! runtime's table ([`crate::process`]).

use std::sync::Arc;

use nix::sys::signal::Signal;
use tonic::{Request, Response, Status, Streaming};

use super::error::AgentError;
use super::exec_request::terminal_size_from_proto;
use super::output_reader::OutputReader;
use crate::process::{
    reaper, spawn, ExecSpec, OutputStream, ProcessExit, ProcessTable, StdinWrite,
};
use crate::proto::process_server::Process;
use crate::proto::{
    wait_process_response, CloseStdinRequest, CloseStdinResponse, ExecProcessRequest,
    ExecProcessResponse, ReadOutputRequest, ResizePtyRequest, ResizePtyResponse,
    SignalProcessRequest, SignalProcessResponse, WaitProcessRequest, WaitProcessResponse,
    WriteStdinRequest, WriteStdinResponse,
};

/// Serves `Process` from a shared table.
#[derive(Debug, Clone)]
pub struct ProcessService {
    table: Arc<ProcessTable>,
}

impl ProcessService {
    pub fn new(table: Arc<ProcessTable>) -> Self {
        Self { table }
    }

    fn read_output(
        &self,
        request: ReadOutputRequest,
        stream: OutputStream,
    ) -> Result<OutputReader, AgentError> {
        let op = match stream {
            OutputStream::Stdout => "read stdout",
            OutputStream::Stderr => "read stderr",
        };
        let process = self.table.get(required_exec_id(op, &request.exec_id)?)?;
        OutputReader::attach(Arc::clone(&self.table), process, stream)
    }

    async fn write_stdin_stream(
        &self,
        mut stream: Streaming<WriteStdinRequest>,
    ) -> Result<WriteStdinResponse, Status> {
        const OP: &str = "write stdin";
        let Some(first) = stream.message().await? else {
            return Err(AgentError::invalid(OP, "stream ended before naming an exec id").into());
        };
        let exec_id = required_exec_id(OP, &first.exec_id)?.to_owned();
        let process = self.table.get(&exec_id)?;

        let mut bytes_written = 0u64;
        let mut next = Some(first);
        while let Some(message) = next {
            if !message.exec_id.is_empty() && message.exec_id != exec_id {
                return Err(AgentError::invalid(
                    OP,
                    format!(
                        "stream for exec id {exec_id:?} switched to {:?}",
                        message.exec_id
                    ),
                )
                .into());
            }
            if !message.data.is_empty() {
                match process.write_stdin(&message.data).await? {
                    StdinWrite::Written => bytes_written += message.data.len() as u64,
                    StdinWrite::ReaderGone => return Ok(WriteStdinResponse { bytes_written }),
                }
            }
            // A broken stream (client gone) leaves stdin open: the client
            // may come back. Only a clean end means end of input.
            next = stream.message().await?;
        }
        process.close_stdin().await?;
        Ok(WriteStdinResponse { bytes_written })
    }
}

fn required_exec_id<'a>(op: &'static str, exec_id: &'a str) -> Result<&'a str, AgentError> {
    if exec_id.is_empty() {
        return Err(AgentError::invalid(op, "exec_id is empty"));
    }
    Ok(exec_id)
}

fn parse_signal(number: i32) -> Result<Signal, AgentError> {
    Signal::try_from(number)
        .map_err(|_| AgentError::invalid("signal", format!("{number} is not a signal number")))
}

#[tonic::async_trait]
impl Process for ProcessService {
    async fn exec_process(
        &self,
        request: Request<ExecProcessRequest>,
    ) -> Result<Response<ExecProcessResponse>, Status> {
        let spec = ExecSpec::try_from(request.into_inner())?;
        // fork+exec blocks until the exec happened (and is slow in a guest),
        // so it must not stall the runtime.
        let spawned = tokio::task::spawn_blocking(move || spawn(&spec))
            .await
            .map_err(|join_error| AgentError::Internal {
                op: "exec",
                reason: format!("spawn thread failed: {join_error}"),
            })??;
        let pid = spawned.pid;
        let process = match self.table.insert(spawned) {
            Ok(process) => process,
            Err(error) => {
                // Nobody could ever wait for or read from it: don't leave it
                // running blind.
                if let Err(errno) = reaper::signal_if_alive(pid, Signal::SIGKILL).await {
                    tracing::warn!(%pid, %errno, "cannot kill untracked process");
                }
                return Err(error.into());
            }
        };
        tracing::debug!(exec_id = process.exec_id(), pid = %process.pid(), "process started");
        Ok(Response::new(ExecProcessResponse {
            exec_id: process.exec_id().to_owned(),
            pid: process.pid().as_raw().unsigned_abs(),
        }))
    }

    async fn wait_process(
        &self,
        request: Request<WaitProcessRequest>,
    ) -> Result<Response<WaitProcessResponse>, Status> {
        let exec_id = request.into_inner().exec_id;
        let process = self.table.get(required_exec_id("wait", &exec_id)?)?;
        let exit = process.wait().await?;
        self.table.forget_if_finished(&exec_id);
        if !process.is_finished() {
            self.table.forget_later(&exec_id);
        }
        let status = match exit {
            ProcessExit::Code(code) => wait_process_response::Status::ExitCode(code),
            ProcessExit::Signal(signal) => wait_process_response::Status::Signal(signal),
        };
        Ok(Response::new(WaitProcessResponse {
            status: Some(status),
        }))
    }

    async fn signal_process(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        let request = request.into_inner();
        let signal = parse_signal(request.signal)?;
        let process = self
            .table
            .get(required_exec_id("signal", &request.exec_id)?)?;
        process.signal(signal).await?;
        Ok(Response::new(SignalProcessResponse {}))
    }

    async fn resize_pty(
        &self,
        request: Request<ResizePtyRequest>,
    ) -> Result<Response<ResizePtyResponse>, Status> {
        const OP: &str = "resize pty";
        let request = request.into_inner();
        let size = request
            .size
            .ok_or_else(|| AgentError::invalid(OP, "size is missing"))?;
        let size = terminal_size_from_proto(OP, &size)?;
        let process = self.table.get(required_exec_id(OP, &request.exec_id)?)?;
        process.resize(size)?;
        Ok(Response::new(ResizePtyResponse {}))
    }

    async fn close_stdin(
        &self,
        request: Request<CloseStdinRequest>,
    ) -> Result<Response<CloseStdinResponse>, Status> {
        let exec_id = request.into_inner().exec_id;
        let process = self.table.get(required_exec_id("close stdin", &exec_id)?)?;
        process.close_stdin().await?;
        Ok(Response::new(CloseStdinResponse {}))
    }

    async fn write_stdin(
        &self,
        request: Request<Streaming<WriteStdinRequest>>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        self.write_stdin_stream(request.into_inner())
            .await
            .map(Response::new)
    }

    type ReadStdoutStream = OutputReader;

    async fn read_stdout(
        &self,
        request: Request<ReadOutputRequest>,
    ) -> Result<Response<OutputReader>, Status> {
        Ok(Response::new(
            self.read_output(request.into_inner(), OutputStream::Stdout)?,
        ))
    }

    type ReadStderrStream = OutputReader;

    async fn read_stderr(
        &self,
        request: Request<ReadOutputRequest>,
    ) -> Result<Response<OutputReader>, Status> {
        Ok(Response::new(
            self.read_output(request.into_inner(), OutputStream::Stderr)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_are_checked() {
        assert_eq!(parse_signal(9).unwrap(), Signal::SIGKILL);
        assert_eq!(
            parse_signal(0).unwrap_err().to_string(),
            "signal: 0 is not a signal number"
        );
        assert_eq!(
            parse_signal(999).unwrap_err().to_string(),
            "signal: 999 is not a signal number"
        );
    }

    #[test]
    fn exec_id_is_required() {
        assert_eq!(
            required_exec_id("wait", "").unwrap_err().to_string(),
            "wait: exec_id is empty"
        );
        assert_eq!(required_exec_id("wait", "exec-1").unwrap(), "exec-1");
    }
}
