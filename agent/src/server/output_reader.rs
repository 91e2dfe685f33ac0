//! The response stream of `ReadStdout`/`ReadStderr`: claims the output
//! stream for as long as the client reads and releases it when the client
//! goes away, so a later reader continues where this one stopped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_stream::Stream;
use tonic::Status;

use super::error::AgentError;
use crate::process::{ManagedProcess, OutputStream, ProcessTable};
use crate::proto::OutputChunk;

/// One client's read of one output stream.
#[derive(Debug)]
pub struct OutputReader {
    process: Arc<ManagedProcess>,
    stream: OutputStream,
    table: Arc<ProcessTable>,
}

impl OutputReader {
    /// Claims the stream's output, or says who has it.
    pub fn attach(
        table: Arc<ProcessTable>,
        process: Arc<ManagedProcess>,
        stream: OutputStream,
    ) -> Result<Self, AgentError> {
        if !process.output(stream).attach_reader() {
            return Err(AgentError::OutputBusy {
                stream: stream.name(),
                exec_id: process.exec_id().to_owned(),
            });
        }
        Ok(Self {
            process,
            stream,
            table,
        })
    }
}

impl Stream for OutputReader {
    type Item = Result<OutputChunk, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.process
            .output(self.stream)
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|data| Ok(OutputChunk { data })))
    }
}

impl Drop for OutputReader {
    fn drop(&mut self) {
        self.process.output(self.stream).detach_reader();
        self.table.forget_if_finished(self.process.exec_id());
    }
}
