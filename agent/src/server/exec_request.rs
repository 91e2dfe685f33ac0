//! Turns an `ExecProcessRequest` into a checked [`ExecSpec`] of the process
//! runtime, so that every malformed field is answered with INVALID_ARGUMENT
//! before anything is forked.

use std::path::PathBuf;

use nix::unistd::{Gid, Uid};

use super::error::AgentError;
use crate::inherited_env;
use crate::process::{ExecSpec, TerminalSize, UserSpec, DEFAULT_PATH};
use crate::proto::{ExecProcessRequest, PtySize, User};

/// Window size when a terminal is asked for without one.
const DEFAULT_TERMINAL_SIZE: TerminalSize = TerminalSize { rows: 24, cols: 80 };

/// Linux's NGROUPS_MAX: more supplementary groups than this cannot be set.
const MAX_ADDITIONAL_GIDS: usize = 65_536;

const OP: &str = "exec";

/// Checks a size from the wire; `op` names the request for the error.
pub fn terminal_size_from_proto(
    op: &'static str,
    size: &PtySize,
) -> Result<TerminalSize, AgentError> {
    let fit = |value: u32| u16::try_from(value).ok();
    match (fit(size.rows), fit(size.cols)) {
        (Some(rows), Some(cols)) => Ok(TerminalSize { rows, cols }),
        _ => Err(AgentError::invalid(
            op,
            format!(
                "pty size {}x{} is too large (rows and cols are at most {})",
                size.rows,
                size.cols,
                u16::MAX
            ),
        )),
    }
}

/// The terminal a request asks for: `None` without one, the default size
/// when none is given.
pub fn terminal_from_proto(
    op: &'static str,
    terminal: bool,
    pty_size: Option<PtySize>,
) -> Result<Option<TerminalSize>, AgentError> {
    match (terminal, pty_size) {
        (true, Some(size)) => Ok(Some(terminal_size_from_proto(op, &size)?)),
        (true, None) => Ok(Some(DEFAULT_TERMINAL_SIZE)),
        (false, None) => Ok(None),
        (false, Some(_)) => Err(AgentError::invalid(
            op,
            "pty_size is set but terminal is false",
        )),
    }
}

impl TryFrom<ExecProcessRequest> for ExecSpec {
    type Error = AgentError;

    fn try_from(request: ExecProcessRequest) -> Result<Self, Self::Error> {
        let mut argv = request.argv.into_iter();
        let program = argv
            .next()
            .ok_or_else(|| AgentError::invalid(OP, "argv is empty"))?;
        if program.is_empty() {
            return Err(AgentError::invalid(OP, "argv[0] is empty"));
        }
        let args: Vec<String> = argv.collect();
        for (index, arg) in std::iter::once(&program).chain(&args).enumerate() {
            reject_nul(&format!("argv[{index}]"), arg)?;
        }

        let env = parse_env(request.env)?;
        let cwd = parse_cwd(request.cwd)?;
        let user = request.user.map(parse_user).transpose()?;
        let terminal = terminal_from_proto(OP, request.terminal, request.pty_size)?;

        Ok(Self {
            program,
            args,
            env,
            cwd,
            user,
            terminal,
        })
    }
}

fn reject_nul(what: &str, value: &str) -> Result<(), AgentError> {
    if value.contains('\0') {
        return Err(AgentError::invalid(
            OP,
            format!("{what} contains a NUL byte"),
        ));
    }
    Ok(())
}

fn parse_env(entries: Vec<String>) -> Result<Vec<(String, String)>, AgentError> {
    let mut env = Vec::with_capacity(entries.len() + 1);
    for entry in entries {
        reject_nul("env entry", &entry)?;
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => env.push((key.to_owned(), value.to_owned())),
            _ => {
                return Err(AgentError::invalid(
                    OP,
                    format!("env entry {entry:?} is not KEY=VALUE"),
                ))
            }
        }
    }
    if !env.iter().any(|(key, _)| key == "PATH") {
        env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    inherited_env::add_to_pairs(&mut env, inherited_env::agent_value());
    Ok(env)
}

fn parse_cwd(cwd: String) -> Result<PathBuf, AgentError> {
    if cwd.is_empty() {
        return Ok(PathBuf::from("/"));
    }
    reject_nul("cwd", &cwd)?;
    if !cwd.starts_with('/') {
        return Err(AgentError::invalid(
            OP,
            format!("cwd {cwd:?} is not an absolute path"),
        ));
    }
    Ok(PathBuf::from(cwd))
}

fn parse_user(user: User) -> Result<UserSpec, AgentError> {
    if user.additional_gids.len() > MAX_ADDITIONAL_GIDS {
        return Err(AgentError::invalid(
            OP,
            format!(
                "{} additional gids given, Linux allows at most {MAX_ADDITIONAL_GIDS}",
                user.additional_gids.len()
            ),
        ));
    }
    Ok(UserSpec {
        uid: Uid::from_raw(user.uid),
        gid: Gid::from_raw(user.gid),
        additional_gids: user
            .additional_gids
            .into_iter()
            .map(Gid::from_raw)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv: &[&str]) -> ExecProcessRequest {
        ExecProcessRequest {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }

    fn rejection(request: ExecProcessRequest) -> String {
        match ExecSpec::try_from(request) {
            Ok(spec) => panic!("accepted {spec:?}"),
            Err(error) => {
                assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
                error.to_string()
            }
        }
    }

    #[test]
    fn minimal_request_gets_root_cwd_default_path_and_no_terminal() {
        let spec = ExecSpec::try_from(request(&["echo", "hi"])).unwrap();
        assert_eq!(spec.program, "echo");
        assert_eq!(spec.args, vec!["hi".to_string()]);
        assert_eq!(spec.cwd, PathBuf::from("/"));
        assert_eq!(
            spec.env,
            vec![("PATH".to_string(), DEFAULT_PATH.to_string())]
        );
        assert_eq!(spec.user, None);
        assert_eq!(spec.terminal, None);
    }

    #[test]
    fn given_path_is_kept_and_values_may_contain_equals() {
        let mut req = request(&["env"]);
        req.env = vec!["PATH=/bin".into(), "OPTS=a=b".into(), "EMPTY=".into()];
        let spec = ExecSpec::try_from(req).unwrap();
        assert_eq!(
            spec.env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("OPTS".into(), "a=b".into()),
                ("EMPTY".into(), String::new()),
            ]
        );
    }

    #[test]
    fn empty_argv_is_rejected() {
        assert_eq!(rejection(request(&[])), "exec: argv is empty");
        assert_eq!(rejection(request(&[""])), "exec: argv[0] is empty");
    }

    #[test]
    fn nul_bytes_are_rejected() {
        assert_eq!(
            rejection(request(&["sh", "-c", "a\0b"])),
            "exec: argv[2] contains a NUL byte"
        );
    }

    #[test]
    fn env_entries_must_be_key_value() {
        let mut req = request(&["env"]);
        req.env = vec!["NOEQUALS".into()];
        assert_eq!(
            rejection(req.clone()),
            r#"exec: env entry "NOEQUALS" is not KEY=VALUE"#
        );
        req.env = vec!["=value".into()];
        assert_eq!(
            rejection(req),
            r#"exec: env entry "=value" is not KEY=VALUE"#
        );
    }

    #[test]
    fn cwd_must_be_absolute() {
        let mut req = request(&["pwd"]);
        req.cwd = "tmp".into();
        assert_eq!(rejection(req), r#"exec: cwd "tmp" is not an absolute path"#);
    }

    #[test]
    fn terminal_size_defaults_and_is_checked() {
        let mut req = request(&["sh"]);
        req.terminal = true;
        let spec = ExecSpec::try_from(req.clone()).unwrap();
        assert_eq!(spec.terminal, Some(TerminalSize { rows: 24, cols: 80 }));

        req.pty_size = Some(PtySize {
            rows: 70_000,
            cols: 80,
        });
        assert_eq!(
            rejection(req.clone()),
            "exec: pty size 70000x80 is too large (rows and cols are at most 65535)"
        );

        req.terminal = false;
        req.pty_size = Some(PtySize { rows: 1, cols: 1 });
        assert_eq!(
            rejection(req),
            "exec: pty_size is set but terminal is false"
        );
    }

    #[test]
    fn user_is_carried_over() {
        let mut req = request(&["id"]);
        req.user = Some(User {
            uid: 1000,
            gid: 100,
            additional_gids: vec![5, 6],
        });
        let spec = ExecSpec::try_from(req).unwrap();
        assert_eq!(
            spec.user,
            Some(UserSpec {
                uid: Uid::from_raw(1000),
                gid: Gid::from_raw(100),
                additional_gids: vec![Gid::from_raw(5), Gid::from_raw(6)],
            })
        );
    }
}
