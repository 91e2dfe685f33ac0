//! The stdio of a container process being started: pipes, or a terminal
//! whose master arrives on a console socket. The agent keeps its ends and
//! serves them through the `Process` service like any process's.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use super::console_socket::ConsoleSocket;
use super::engine::EngineStdio;
use crate::process::{set_window_size, SpawnedStdio, TerminalSize};

/// The agent's ends, until the process exists.
#[derive(Debug)]
pub enum PendingStdio {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal {
        console: ConsoleSocket,
        size: TerminalSize,
    },
}

/// Makes the stdio: the agent's ends and what the engine hands the child.
pub fn prepare_stdio(
    terminal: Option<TerminalSize>,
    console_socket: PathBuf,
) -> io::Result<(PendingStdio, EngineStdio)> {
    match terminal {
        Some(size) => {
            let console = ConsoleSocket::bind(console_socket)?;
            let engine = EngineStdio::Terminal {
                console_socket: console.path().to_owned(),
            };
            Ok((PendingStdio::Terminal { console, size }, engine))
        }
        None => {
            // Close-on-exec: no other process the agent starts inherits
            // them (which would hold the output open).
            let (child_stdin, stdin) = pipe2(OFlag::O_CLOEXEC)?;
            let (stdout, child_stdout) = pipe2(OFlag::O_CLOEXEC)?;
            let (stderr, child_stderr) = pipe2(OFlag::O_CLOEXEC)?;
            Ok((
                PendingStdio::Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
                EngineStdio::Pipes([child_stdin, child_stdout, child_stderr]),
            ))
        }
    }
}

impl PendingStdio {
    /// Once the process exists: the agent's ends, with the terminal's
    /// master received and sized.
    pub fn finish(self) -> io::Result<SpawnedStdio> {
        match self {
            Self::Pipes {
                stdin,
                stdout,
                stderr,
            } => Ok(SpawnedStdio::Pipes {
                stdin,
                stdout,
                stderr,
            }),
            Self::Terminal { console, size } => {
                let master = console.receive_master()?;
                set_window_size(&master, size)?;
                Ok(SpawnedStdio::Terminal { master })
            }
        }
    }
}
