//! Describing a process to start in the guest.

use crate::proto::{ExecProcessRequest, PtySize, User};

/// What to run: argv plus optional environment, working directory, user and
/// terminal. Converts into the wire request; the agent checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecCommand {
    request: ExecProcessRequest,
}

impl ExecCommand {
    /// `argv[0]` is looked up in the PATH of the command's environment (a
    /// default PATH when the environment has none).
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            request: ExecProcessRequest {
                argv: argv.into_iter().map(Into::into).collect(),
                ..Default::default()
            },
        }
    }

    /// Adds one `KEY=VALUE` environment entry. The environment is exactly
    /// what is given here; nothing is inherited.
    pub fn env(mut self, key_value: impl Into<String>) -> Self {
        self.request.env.push(key_value.into());
        self
    }

    /// Absolute working directory (default `/`).
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.request.cwd = cwd.into();
        self
    }

    /// Runs as `uid:gid` with these supplementary groups.
    pub fn user(mut self, uid: u32, gid: u32, additional_gids: Vec<u32>) -> Self {
        self.request.user = Some(User {
            uid,
            gid,
            additional_gids,
        });
        self
    }

    /// Runs on a new pseudo-terminal of `rows` x `cols`: output arrives on
    /// stdout only.
    pub fn terminal(mut self, rows: u16, cols: u16) -> Self {
        self.request.terminal = true;
        self.request.pty_size = Some(PtySize {
            rows: rows.into(),
            cols: cols.into(),
        });
        self
    }
}

impl From<ExecCommand> for ExecProcessRequest {
    fn from(command: ExecCommand) -> Self {
        command.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_wire_request() {
        let request = ExecProcessRequest::from(
            ExecCommand::new(["sh", "-c", "id"])
                .env("A=1")
                .cwd("/tmp")
                .user(1000, 100, vec![10])
                .terminal(30, 100),
        );
        assert_eq!(request.argv, ["sh", "-c", "id"]);
        assert_eq!(request.env, ["A=1"]);
        assert_eq!(request.cwd, "/tmp");
        assert_eq!(
            request.user,
            Some(User {
                uid: 1000,
                gid: 100,
                additional_gids: vec![10]
            })
        );
        assert!(request.terminal);
        assert_eq!(
            request.pty_size,
            Some(PtySize {
                rows: 30,
                cols: 100
            })
        );
    }
}
