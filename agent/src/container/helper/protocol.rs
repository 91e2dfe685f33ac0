//! What the agent and the container helper say to each other: one JSON
//! message per request and per reply over Unix SOCK_SEQPACKET sockets, with
//! file descriptors passed alongside (SCM_RIGHTS).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

/// Largest message either side sends (requests carry paths; replies an
/// error message, cut to fit).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Most descriptors one message carries: the reply socket and stdio.
const MAX_FDS: usize = 4;

/// The one-byte message that lets a worker exit once the agent has
/// registered the pid it reported.
pub const ACK: &[u8] = b"A";

/// The one-byte message the helper sends on its control socket once it
/// serves requests, so that a helper started ahead of time is really up
/// (in a snapshot, say) before the agent goes on.
pub const READY: &[u8] = b"R";

/// Something libcontainer should build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelperOp {
    /// A new container from the bundle (`config.json` inside).
    Create { bundle: PathBuf },
    /// A process (OCI `process` JSON in this file) in a running container.
    Exec { process: PathBuf },
}

/// One request. Sent with the worker's end of a fresh reply socket, then
/// the child's stdin, stdout and stderr when `pipes` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperRequest {
    pub container_id: String,
    /// libcontainer's root path.
    pub state_root: PathBuf,
    pub op: HelperOp,
    /// Where the process's pty master goes, for a terminal.
    pub console_socket: Option<PathBuf>,
    pub pipes: bool,
}

/// Why libcontainer failed, coarsely, for the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The spec or id was rejected.
    InvalidSpec,
    AlreadyExists,
    /// Anything at run time: mounts, the program, hooks, cgroups...
    Runtime,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelperReply {
    /// The process exists with this pid (in the agent's pid namespace).
    /// The worker waits for [`ACK`] before it exits.
    Started {
        pid: i32,
    },
    Failed {
        kind: FailureKind,
        message: String,
    },
}

/// A message and the descriptors that came with it.
#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A connected pair of close-on-exec SOCK_SEQPACKET sockets.
pub fn seqpacket_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Sends one message with `fds`. Never raises SIGPIPE.
pub fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(bytes)];
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}

/// Receives one message; `None` when the other side is gone.
pub fn receive(socket: BorrowedFd<'_>) -> nix::Result<Option<Received>> {
    let mut buffer = vec![0u8; MAX_MESSAGE_BYTES];
    let mut control = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (length, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => {
                let mut fds = Vec::new();
                for cmsg in message.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        for fd in received {
                            // SAFETY: the kernel just installed `fd` in this
                            // process for us; nothing else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                let truncated = message.flags.contains(MsgFlags::MSG_TRUNC);
                break (message.bytes, fds, truncated);
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    };
    if length == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(Errno::EMSGSIZE);
    }
    buffer.truncate(length);
    Ok(Some(Received { bytes: buffer, fds }))
}

/// Serializes `value` for [`send`].
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings, paths and numbers always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn messages_and_descriptors_cross_a_pair() {
        let (left, right) = seqpacket_pair().unwrap();
        let (pipe_read, pipe_write) = nix::unistd::pipe().unwrap();
        let request = HelperRequest {
            container_id: "web".into(),
            state_root: "/run/vmrun-agent/lc".into(),
            op: HelperOp::Create {
                bundle: "/run/vmrun-agent/c/web".into(),
            },
            console_socket: None,
            pipes: true,
        };
        send(left.as_fd(), &encode(&request), &[pipe_write.as_fd()]).unwrap();
        drop(pipe_write);

        let received = receive(right.as_fd()).unwrap().unwrap();
        let decoded: HelperRequest = serde_json::from_slice(&received.bytes).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(received.fds.len(), 1);
        nix::unistd::write(&received.fds[0], b"through").unwrap();
        let mut buf = [0u8; 7];
        nix::unistd::read(&pipe_read, &mut buf).unwrap();
        assert_eq!(&buf, b"through");

        drop(left);
        assert!(receive(right.as_fd()).unwrap().is_none());
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            HelperReply::Started { pid: 42 },
            HelperReply::Failed {
                kind: FailureKind::InvalidSpec,
                message: "bad".into(),
            },
        ] {
            let decoded: HelperReply = serde_json::from_slice(&encode(&reply)).unwrap();
            assert_eq!(decoded, reply);
        }
    }
}
