//! A process's stdout or stderr as the host receives it.

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tonic::Streaming;

use super::error::ClientError;
use crate::proto::OutputChunk;

/// One output stream of a guest process, until the process and everything
/// sharing its output closed it.
#[derive(Debug)]
pub struct OutputStream {
    chunks: Streaming<OutputChunk>,
    op: &'static str,
}

impl OutputStream {
    pub(crate) fn new(chunks: Streaming<OutputChunk>, op: &'static str) -> Self {
        Self { chunks, op }
    }

    /// The next piece of output; `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        let chunk = self
            .chunks
            .message()
            .await
            .map_err(ClientError::rpc(self.op))?;
        Ok(chunk.map(|chunk| chunk.data))
    }

    /// Copies everything to `sink`, flushing after each chunk so interactive
    /// output shows up at once. Returns the number of bytes copied.
    pub async fn copy_to<W>(mut self, sink: &mut W) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut copied = 0u64;
        while let Some(chunk) = self.next_chunk().await? {
            sink.write_all(&chunk)
                .await
                .map_err(ClientError::OutputSink)?;
            sink.flush().await.map_err(ClientError::OutputSink)?;
            copied += chunk.len() as u64;
        }
        Ok(copied)
    }

    /// Collects all of the output.
    pub async fn read_to_end(mut self) -> Result<Vec<u8>, ClientError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }
}
