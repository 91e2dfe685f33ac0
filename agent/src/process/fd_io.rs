//! Async reads and writes on a process's stdio: pipe ends and pseudo-terminal
//! masters alike, through tokio's reactor.

use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;

/// What kind of file a [`StdioFd`] is; decides how its end is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioKind {
    Pipe,
    /// A pseudo-terminal master: once every slave fd is closed, reads fail
    /// with EIO instead of returning 0, and that is its end of file.
    TerminalMaster,
}

/// A non-blocking stdio fd registered with the tokio reactor.
#[derive(Debug)]
pub struct StdioFd {
    fd: AsyncFd<OwnedFd>,
    kind: StdioKind,
}

impl StdioFd {
    /// Switches `fd` to non-blocking mode and registers it.
    ///
    /// Only for fds whose open file description the agent does not share
    /// with the child (our end of a pipe, a pty master), since O_NONBLOCK
    /// is a property of the description.
    pub fn new(fd: OwnedFd, kind: StdioKind) -> io::Result<Self> {
        let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: `fd` is an open OwnedFd that the AsyncFd takes ownership
        // of; it is only lent out by reference (`get_ref`), never closed or
        // replaced, so it stays the same open description until dropped.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(Self { fd, kind })
    }

    pub fn kind(&self) -> StdioKind {
        self.kind
    }

    /// The registered fd, for ioctls.
    pub fn get_ref(&self) -> &OwnedFd {
        self.fd.get_ref()
    }

    /// Reads some bytes; `Ok(0)` is end of file. Cancel-safe: nothing is
    /// read unless the future completes.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| self.read_raw(fd.get_ref(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is available right now; `None` when nothing is.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.read_raw(self.fd.get_ref(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Writes all of `data`, waiting while the reader is slow.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| write_raw(fd.get_ref(), data)) {
                Ok(Ok(written)) => data = &data[written..],
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn read_raw(&self, fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(fd, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EIO) if self.kind == StdioKind::TerminalMaster => return Ok(0),
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}

fn write_raw(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::write(fd, data) {
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipe_round_trip_then_end_of_file() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let reader = StdioFd::new(read_end, StdioKind::Pipe).unwrap();
        let writer = StdioFd::new(write_end, StdioKind::Pipe).unwrap();

        let mut buf = [0u8; 16];
        assert_eq!(reader.read_now(&mut buf).unwrap(), None);

        writer.write_all(b"hello").await.unwrap();
        let n = reader.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");

        drop(writer);
        assert_eq!(reader.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn writing_to_a_pipe_without_reader_is_broken_pipe() {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let writer = StdioFd::new(write_end, StdioKind::Pipe).unwrap();
        drop(read_end);
        let error = writer.write_all(b"x").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
