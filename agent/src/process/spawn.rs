//! Forks and execs a process from an [`ExecSpec`]: its stdio (pipes or a
//! new pseudo-terminal), session, credentials and environment.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::unistd::{setgid, setgroups, setsid, setuid};
use tokio::sync::oneshot;

use super::error::ProcessError;
use super::exec_spec::ExecSpec;
use super::pty::{make_stdin_controlling_terminal, open_pty};
use super::reaper::{self, ProcessExit};

/// A started process, its stdio ends on the agent's side and where its
/// exit will be delivered.
#[derive(Debug)]
pub struct SpawnedProcess {
    pub pid: nix::unistd::Pid,
    pub stdio: SpawnedStdio,
    pub exit: oneshot::Receiver<ProcessExit>,
}

/// The agent's ends of a process's stdio.
#[derive(Debug)]
pub enum SpawnedStdio {
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// stdin, stdout and stderr are all the terminal's slave side.
    Terminal { master: OwnedFd },
}

/// Starts the process. Blocks for the fork and exec, so run it on a
/// blocking thread.
pub fn spawn(spec: &ExecSpec) -> Result<SpawnedProcess, ProcessError> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .current_dir(&spec.cwd);

    let terminal_master = match spec.terminal {
        Some(size) => {
            let pty = open_pty(size).map_err(|errno| ProcessError::Internal {
                op: "exec",
                reason: format!("cannot open a pseudo-terminal: {errno}"),
            })?;
            let slave_copy = |pty: &super::pty::Pty| {
                pty.slave
                    .try_clone()
                    .map_err(|source| ProcessError::Internal {
                        op: "exec",
                        reason: format!("cannot duplicate the terminal fd: {source}"),
                    })
            };
            command
                .stdin(Stdio::from(slave_copy(&pty)?))
                .stdout(Stdio::from(slave_copy(&pty)?))
                .stderr(Stdio::from(pty.slave));
            Some(pty.master)
        }
        None => {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };

    let in_terminal = terminal_master.is_some();
    let credentials = spec.user.clone();
    let prepare_child = move || -> io::Result<()> {
        // A session of its own: the process is not tied to the agent's
        // console, and with a terminal it gets job control on it.
        setsid()?;
        if in_terminal {
            make_stdin_controlling_terminal()?;
        }
        // Groups first, uid last: each step needs the privilege the next
        // one drops.
        if let Some(user) = &credentials {
            setgroups(&user.additional_gids)?;
            setgid(user.gid)?;
            setuid(user.uid)?;
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec in the child, where
    // only async-signal-safe calls are allowed. It only makes syscalls
    // (setsid, ioctl, setgroups, setgid, setuid) on data prepared before the
    // fork, and neither allocates nor takes locks.
    unsafe { command.pre_exec(prepare_child) };

    let (mut child, exit) =
        reaper::spawn_registered(|| command.spawn()).map_err(|source| spawn_error(spec, source))?;
    // The Command holds the parent's copies of the terminal slave; they must
    // close, or the terminal never reports end of file.
    drop(command);

    let stdio = match terminal_master {
        Some(master) => SpawnedStdio::Terminal { master },
        None => match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(stdin), Some(stdout), Some(stderr)) => SpawnedStdio::Pipes {
                stdin: stdin.into(),
                stdout: stdout.into(),
                stderr: stderr.into(),
            },
            _ => {
                return Err(ProcessError::Internal {
                    op: "exec",
                    reason: "piped stdio missing after spawn".into(),
                })
            }
        },
    };
    Ok(SpawnedProcess {
        pid: reaper::pid_of(&child),
        stdio,
        exit,
    })
}

/// Tells a missing working directory apart from a missing program: both
/// fail the exec with ENOENT.
fn spawn_error(spec: &ExecSpec, source: io::Error) -> ProcessError {
    if source.kind() == io::ErrorKind::NotFound && !spec.cwd.is_dir() {
        return ProcessError::Cwd {
            cwd: spec.cwd.clone(),
            source,
        };
    }
    ProcessError::Spawn {
        program: spec.program.clone(),
        source,
    }
}
