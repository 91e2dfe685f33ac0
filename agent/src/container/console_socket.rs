//! The console socket of a container process on a terminal: libcontainer
//! creates the pseudo-terminal inside the container and sends its master
//! here (SCM_RIGHTS), as runc does with `--console-socket`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::helper::protocol_receive;

/// How long the master may take to arrive once libcontainer reported the
/// process (it is sent before that, so this only guards against bugs).
const MASTER_TIMEOUT: Duration = Duration::from_secs(10);

/// A listening console socket; its file is removed on drop.
#[derive(Debug)]
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn bind(path: PathBuf) -> io::Result<Self> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(&path)?;
        Ok(Self { path, listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the pty master the container process sent.
    pub fn receive_master(&self) -> io::Result<OwnedFd> {
        wait_readable(self.listener.as_fd())?;
        let (connection, _) = self.listener.accept()?;
        wait_readable(connection.as_fd())?;
        let message = protocol_receive(connection.as_fd())?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the console socket closed without a terminal",
            )
        })?;
        message.fds.into_iter().next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the console socket message carried no terminal",
            )
        })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::debug!(%error, path = %self.path.display(), "console socket not removed");
        }
    }
}

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(MASTER_TIMEOUT).unwrap_or(PollTimeout::MAX);
    loop {
        match poll(&mut fds, timeout) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no terminal arrived on the console socket",
                ))
            }
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

    use super::*;

    #[test]
    fn receives_the_descriptor_a_peer_sends_and_removes_its_file() {
        let path = std::env::temp_dir().join(format!("vmrun-console-{}.sock", std::process::id()));
        let socket = ConsoleSocket::bind(path.clone()).unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();

        let peer = UnixStream::connect(socket.path()).unwrap();
        let fds = [write_end.as_raw_fd()];
        sendmsg::<()>(
            peer.as_raw_fd(),
            &[IoSlice::new(b"/dev/ptmx")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(write_end);

        let received = socket.receive_master().unwrap();
        nix::unistd::write(&received, b"x").unwrap();
        let mut buf = [0u8; 1];
        nix::unistd::read(&read_end, &mut buf).unwrap();
        assert_eq!(&buf, b"x");

        drop(socket);
        assert!(!path.exists());
    }
}
