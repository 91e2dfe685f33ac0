//! Checks the OCI `process` of an `ExecInContainer` request.

use oci_spec::runtime::Process;

use super::error::ContainerError;
use super::spec::{apply_terminal, check_process};
use crate::inherited_env;
use crate::process::TerminalSize;

const OP: &str = "exec in container";

/// Parses and checks the process, and applies the terminal the host asked
/// for.
pub fn prepare_exec_process(
    json: &[u8],
    terminal: Option<TerminalSize>,
) -> Result<Process, ContainerError> {
    let mut process: Process = serde_json::from_slice(json).map_err(|error| {
        ContainerError::invalid(OP, format!("process_json is not an OCI process: {error}"))
    })?;
    check_process(OP, &process)?;
    apply_terminal(&mut process, terminal);
    inherited_env::add_to_process(&mut process, inherited_env::agent_value());
    Ok(process)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_minimal_process_is_accepted_and_gets_the_terminal_flag() {
        let json =
            json!({"args": ["sh", "-c", "id"], "cwd": "/", "user": {"uid": 1000, "gid": 1000}});
        let process = prepare_exec_process(json.to_string().as_bytes(), None).unwrap();
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.terminal(), Some(false));
        let process = prepare_exec_process(
            json.to_string().as_bytes(),
            Some(TerminalSize { rows: 24, cols: 80 }),
        )
        .unwrap();
        assert_eq!(process.terminal(), Some(true));
    }

    #[test]
    fn bad_processes_name_the_field() {
        let error = prepare_exec_process(
            json!({"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}})
                .to_string()
                .as_bytes(),
            None,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "exec in container: process.args is empty"
        );
        let error = prepare_exec_process(
            json!({"args": ["sh"], "cwd": "tmp", "user": {"uid": 0, "gid": 0}})
                .to_string()
                .as_bytes(),
            None,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"exec in container: process.cwd "tmp" is not an absolute path"#
        );
        let error = prepare_exec_process(b"[1]", None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("exec in container: process_json is not an OCI process: "),
            "{error}"
        );
    }
}
