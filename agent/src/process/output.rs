//! Capturing a process's output from the moment it starts, so nothing is
//! lost when it exits before a reader attaches, and handing it to at most one
//! reader at a time.
//!
//! A pump task reads the fd into an [`OutputBuffer`], a bounded byte queue.
//! Bytes are appended, not queued as chunks, so a process writing many tiny
//! pieces with no reader attached costs no more than their size. When the
//! buffer is full the pump stops reading and the process blocks on its next
//! write, exactly as with a full pipe: output is held back, never dropped.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, Notify};

use super::fd_io::StdioFd;

/// Largest piece read from a process at once, and largest message sent.
pub const OUTPUT_CHUNK_BYTES: usize = 64 * 1024;

/// Output held per stream before the process is made to wait.
pub const OUTPUT_BUFFER_BYTES: usize = 1024 * 1024;

/// The buffered output of one stream, filled by its pump.
#[derive(Debug, Default)]
pub struct OutputBuffer {
    state: Mutex<BufferState>,
    /// Wakes the pump when a reader made room (or the buffer was abandoned).
    room_made: Notify,
}

#[derive(Debug, Default)]
struct BufferState {
    data: BytesMut,
    /// The pump has finished: no more data will come.
    ended: bool,
    /// A reader has seen the end.
    read_to_end: bool,
    /// A reader is attached; there is at most one.
    reader_attached: bool,
    /// Who to wake when data arrives or the stream ends.
    reader_waker: Option<Waker>,
    /// Nobody will ever read again: the pump should stop.
    abandoned: bool,
}

/// The pump could not deliver: the buffer was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

impl OutputBuffer {
    /// A buffer its pump will fill.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A stream that has ended already and need not be read (stderr of a
    /// terminal process).
    pub fn ended() -> Arc<Self> {
        let buffer = Self::new();
        {
            let mut state = buffer.lock();
            state.ended = true;
            state.read_to_end = true;
        }
        buffer
    }

    /// Appends output, first waiting while the buffer is full.
    pub async fn push(&self, data: &[u8]) -> Result<(), Abandoned> {
        loop {
            let room_made = self.room_made.notified();
            {
                let mut state = self.lock();
                if state.abandoned {
                    return Err(Abandoned);
                }
                if state.data.len() < OUTPUT_BUFFER_BYTES {
                    state.data.extend_from_slice(data);
                    wake_reader(state);
                    return Ok(());
                }
            }
            room_made.await;
        }
    }

    /// Marks the end of the stream.
    pub fn finish(&self) {
        let mut state = self.lock();
        state.ended = true;
        wake_reader(state);
    }

    /// Claims the stream for a reader; false while another reader has it.
    pub fn attach_reader(&self) -> bool {
        let mut state = self.lock();
        !std::mem::replace(&mut state.reader_attached, true)
    }

    /// Releases the stream; the next reader continues where this one
    /// stopped.
    pub fn detach_reader(&self) {
        let mut state = self.lock();
        state.reader_attached = false;
        state.reader_waker = None;
    }

    /// The next piece of output for the attached reader; `None` at the end.
    pub fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut state = self.lock();
        if !state.data.is_empty() {
            let len = state.data.len().min(OUTPUT_CHUNK_BYTES);
            let chunk = state.data.split_to(len).freeze();
            drop(state);
            self.room_made.notify_one();
            return Poll::Ready(Some(chunk));
        }
        if state.ended {
            state.read_to_end = true;
            return Poll::Ready(None);
        }
        state.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether a reader has seen the end: nothing is left for anyone.
    pub fn was_read_to_end(&self) -> bool {
        self.lock().read_to_end
    }

    /// Tells the pump nobody will read any more, so it stops instead of
    /// waiting for room forever.
    pub fn abandon(&self) {
        self.lock().abandoned = true;
        self.room_made.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, BufferState> {
        // Every update is a few field writes that cannot panic halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn wake_reader(mut state: MutexGuard<'_, BufferState>) {
    let waker = state.reader_waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Copies `source` into `sink` until end of file, then marks the end.
///
/// When `stop_waiting` turns true (the process exited a while ago, but a
/// descendant still holds its stdio open), takes what is readable right now
/// and ends instead of waiting for an end of file that may never come.
pub async fn pump_output(
    source: Arc<StdioFd>,
    sink: Arc<OutputBuffer>,
    stop_waiting: watch::Receiver<bool>,
) {
    copy_output(&source, &sink, stop_waiting).await;
    sink.finish();
}

async fn copy_output(
    source: &StdioFd,
    sink: &OutputBuffer,
    mut stop_waiting: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    loop {
        // Only a bool may cross the await below: the watch guard is not Send.
        let stop_now = async { stop_waiting.wait_for(|stop| *stop).await.is_ok() };
        let read = tokio::select! {
            read = source.read(&mut buf) => read,
            true = stop_now => {
                drain_available(source, sink, &mut buf).await;
                return;
            }
        };
        match read {
            Ok(0) => return,
            Ok(n) => {
                if sink.push(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading process output failed");
                return;
            }
        }
    }
}

async fn drain_available(source: &StdioFd, sink: &OutputBuffer, buf: &mut [u8]) {
    loop {
        match source.read_now(buf) {
            Ok(Some(0)) | Ok(None) => return,
            Ok(Some(n)) => {
                if sink.push(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading process output failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::super::fd_io::StdioKind;
    use super::*;

    fn pipe() -> (Arc<StdioFd>, std::os::fd::OwnedFd) {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        (
            Arc::new(StdioFd::new(read_end, StdioKind::Pipe).unwrap()),
            write_end,
        )
    }

    async fn read_all(buffer: &OutputBuffer) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = poll_fn(|cx| buffer.poll_chunk(cx)).await {
            all.extend_from_slice(&chunk);
        }
        all
    }

    #[tokio::test]
    async fn output_written_before_a_reader_attaches_is_kept() {
        let (source, write_end) = pipe();
        nix::unistd::write(&write_end, b"early output").unwrap();
        drop(write_end);

        let buffer = OutputBuffer::new();
        let (_stop_tx, stop_rx) = watch::channel(false);
        pump_output(source, Arc::clone(&buffer), stop_rx).await;

        assert!(!buffer.was_read_to_end());
        assert_eq!(read_all(&buffer).await, b"early output");
        assert!(buffer.was_read_to_end());
    }

    #[tokio::test]
    async fn many_tiny_writes_are_held_as_bytes_not_pieces() {
        let buffer = OutputBuffer::new();
        for _ in 0..100_000 {
            buffer.push(b"x\n").await.unwrap();
        }
        buffer.finish();
        assert_eq!(read_all(&buffer).await.len(), 200_000);
    }

    #[tokio::test]
    async fn a_full_buffer_holds_the_writer_back_until_read() {
        let buffer = OutputBuffer::new();
        buffer.push(&vec![b'a'; OUTPUT_BUFFER_BYTES]).await.unwrap();

        let blocked = tokio::time::timeout(Duration::from_millis(50), buffer.push(b"b")).await;
        assert!(blocked.is_err(), "a push into a full buffer went through");

        let pusher = {
            let buffer = Arc::clone(&buffer);
            tokio::spawn(async move {
                buffer.push(b"b").await.unwrap();
                buffer.finish();
            })
        };
        let all = read_all(&buffer).await;
        pusher.await.unwrap();
        assert_eq!(all.len(), OUTPUT_BUFFER_BYTES + 1);
        assert_eq!(all.last(), Some(&b'b'));
    }

    #[tokio::test]
    async fn abandoning_releases_a_waiting_pump() {
        let buffer = OutputBuffer::new();
        buffer.push(&vec![0; OUTPUT_BUFFER_BYTES]).await.unwrap();
        let waiting = {
            let buffer = Arc::clone(&buffer);
            tokio::spawn(async move { buffer.push(b"more").await })
        };
        tokio::task::yield_now().await;
        buffer.abandon();
        assert_eq!(waiting.await.unwrap(), Err(Abandoned));
    }

    #[test]
    fn one_reader_at_a_time() {
        let buffer = OutputBuffer::ended();
        assert!(buffer.attach_reader());
        assert!(!buffer.attach_reader());
        buffer.detach_reader();
        assert!(buffer.attach_reader());
    }

    #[tokio::test]
    async fn stopping_takes_what_is_readable_without_waiting_for_end_of_file() {
        let (source, write_end) = pipe();
        nix::unistd::write(&write_end, b"left behind").unwrap();
        let buffer = OutputBuffer::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        stop_tx.send_replace(true);

        // The write end stays open, as if a background child held it.
        pump_output(source, Arc::clone(&buffer), stop_rx).await;
        assert_eq!(read_all(&buffer).await, b"left behind");
        drop(write_end);
    }
}
