//! How a container's init process becomes the container's program: the
//! program is looked up once, before the start signal, and then exec'd by
//! its path, as runc does (`exec.LookPath`, then `execve`).
//!
//! libcontainer's default executor checks the program against `PATH` and
//! then calls `execvp`, which walks `PATH` again and makes one failed
//! `execve` per directory before the one that holds it. On Linux 6.1 every
//! such attempt sets up a new address space and copies the arguments and
//! environment before it finds that the file is missing, and the lookups go
//! to the rootfs share: on a software-KVM host that was ~0.9 s of the demo
//! container's start (`sh` is the sixth candidate of the default `PATH`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;

/// Execs the container's program by the path found for it in `validate`
/// (which libcontainer runs in the same init process, before `exec`).
#[derive(Clone, Debug, Default)]
pub struct ResolvedPathExecutor {
    program: OnceLock<CString>,
}

impl Executor for ResolvedPathExecutor {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let program = program_of(spec)?;
        if self.program.set(program).is_err() {
            // validate ran twice: keep the first answer, it is the same.
            tracing::debug!("container program already resolved");
        }
        Ok(())
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = process_args(spec)
            .map_err(|_| ExecutorError::InvalidArg)?
            .iter()
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ExecutorError::InvalidArg)?;
        let program = match self.program.get() {
            Some(program) => program.clone(),
            None => program_of(spec).map_err(|e| ExecutorError::Other(e.to_string()))?,
        };
        // The environment is the spec's: libcontainer's `setup_envs` set it.
        let errno = match nix::unistd::execv(&program, &args) {
            Err(errno) => errno,
            Ok(never) => match never {},
        };
        Err(ExecutorError::Execution(
            format!("cannot exec {}: {errno}", program.to_string_lossy()).into(),
        ))
    }
}

/// The path of the spec's program, as a C string for `execv`.
fn program_of(spec: &Spec) -> Result<CString, ExecutorValidationError> {
    let args = process_args(spec)?;
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let path_var = env.iter().find_map(|e| e.strip_prefix("PATH="));
    let program = resolve_program(&args[0], path_var, is_regular_file)?;
    check_executable(&program)?;
    CString::new(program.as_os_str().as_bytes())
        .map_err(|_| invalid("the program's path contains NUL"))
}

fn process_args(spec: &Spec) -> Result<&[String], ExecutorValidationError> {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().as_deref())
        .filter(|args| !args.is_empty())
        .ok_or_else(|| invalid("the spec has no process args"))
}

/// Where `name` is: itself if it has a slash (relative to the working
/// directory), otherwise the first directory of `path_var` in which `found`
/// says it exists.
fn resolve_program(
    name: &str,
    path_var: Option<&str>,
    found: impl Fn(&Path) -> bool,
) -> Result<PathBuf, ExecutorValidationError> {
    if name.is_empty() {
        return Err(invalid("the program name (args[0]) is empty"));
    }
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let Some(path_var) = path_var else {
        return Err(invalid(format!(
            "executable '{name}' not found: the process environment has no PATH"
        )));
    };
    path_var
        .split(':')
        // An empty PATH entry is the working directory (POSIX).
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|candidate| found(candidate))
        .ok_or_else(|| {
            invalid(format!(
                "executable '{name}' not found in $PATH ({path_var})"
            ))
        })
}

fn is_regular_file(path: &Path) -> bool {
    path.metadata().map(|m| m.is_file()).unwrap_or(false)
}

fn check_executable(path: &Path) -> Result<(), ExecutorValidationError> {
    let metadata = path
        .metadata()
        .map_err(|e| invalid(format!("cannot run '{}': {e}", path.display())))?;
    if !metadata.is_file() {
        return Err(invalid(format!(
            "cannot run '{}': not a regular file",
            path.display()
        )));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(invalid(format!(
            "cannot run '{}': it has no execute permission",
            path.display()
        )));
    }
    Ok(())
}

fn invalid(reason: impl Into<String>) -> ExecutorValidationError {
    ExecutorValidationError::ArgValidationError(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch_dir::ScratchDir;
    use std::fs;

    fn spec_with(args: &[&str], env: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        process.set_env(Some(env.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(process));
        spec
    }

    fn executable(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_name_is_found_in_the_first_path_directory_that_has_it() {
        let tmp = ScratchDir::new("executor-first_dir");
        let (a, b, c) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("c"),
        );
        for dir in [&a, &b, &c] {
            fs::create_dir(dir).unwrap();
        }
        executable(&b, "prog", 0o755);
        let in_c = executable(&c, "prog", 0o755);
        fs::create_dir(a.join("prog")).unwrap(); // a directory is not a program
        let path = format!("{}:{}:{}", a.display(), b.display(), c.display());
        let spec = spec_with(&["prog", "-x"], &["HOME=/", &format!("PATH={path}")]);
        let program = program_of(&spec).unwrap();
        assert_eq!(program.to_str().unwrap(), b.join("prog").to_str().unwrap());
        assert_ne!(program.to_str().unwrap(), in_c.to_str().unwrap());
    }

    #[test]
    fn a_path_with_a_slash_is_taken_as_given() {
        let tmp = ScratchDir::new("executor-slash");
        let prog = executable(tmp.path(), "prog", 0o700);
        let spec = spec_with(&[prog.to_str().unwrap()], &[]);
        assert_eq!(program_of(&spec).unwrap().to_str().ok(), prog.to_str());
        let searched = resolve_program("./x/y", Some("/nowhere"), |_| panic!("no search"));
        assert_eq!(searched.unwrap(), PathBuf::from("./x/y"));
    }

    #[test]
    fn a_missing_program_names_the_name_and_the_path_searched() {
        let spec = spec_with(&["no-such-program"], &["PATH=/nonexistent/bin:/also/not"]);
        let err = program_of(&spec).unwrap_err().to_string();
        assert!(err.contains("'no-such-program' not found"), "{err}");
        assert!(err.contains("/nonexistent/bin:/also/not"), "{err}");
        let err = program_of(&spec_with(&["sh"], &["HOME=/"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PATH"), "{err}");
    }

    #[test]
    fn a_file_without_execute_permission_is_refused() {
        let tmp = ScratchDir::new("executor-no_exec");
        let prog = executable(tmp.path(), "data", 0o644);
        let spec = spec_with(&[prog.to_str().unwrap()], &[]);
        let err = program_of(&spec).unwrap_err().to_string();
        assert!(err.contains("no execute permission"), "{err}");
        let err = program_of(&spec_with(&[tmp.path().to_str().unwrap()], &[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn an_empty_args_list_or_name_is_refused() {
        assert!(program_of(&spec_with(&[], &["PATH=/bin"])).is_err());
        let err = program_of(&spec_with(&[""], &["PATH=/bin"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn validate_keeps_the_path_exec_uses() {
        let tmp = ScratchDir::new("executor-validate");
        executable(tmp.path(), "prog", 0o755);
        let spec = spec_with(&["prog"], &[&format!("PATH={}", tmp.path().display())]);
        let executor = ResolvedPathExecutor::default();
        executor.validate(&spec).unwrap();
        let kept = executor.program.get().unwrap().to_str().unwrap().to_owned();
        assert_eq!(kept, tmp.path().join("prog").to_str().unwrap());
    }
}
