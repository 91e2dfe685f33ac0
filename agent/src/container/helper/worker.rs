//! A forked worker of the container helper: builds one container (or one
//! process in a container) with libcontainer, reports the pid, waits until
//! the agent registered it, and exits. Its container processes then belong
//! to the agent.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;

use super::executor::ResolvedPathExecutor;
use super::protocol::{
    encode, receive, send, FailureKind, HelperOp, HelperReply, HelperRequest, MAX_MESSAGE_BYTES,
};
use crate::container::error::error_chain;

/// How long a worker waits for the agent to register its pid before it
/// exits anyway (the agent is then gone or stuck).
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the request and ends the worker process.
pub fn run(request: &HelperRequest, stdio: Option<[OwnedFd; 3]>, reply: OwnedFd) -> ! {
    // Die with the helper, which the agent kills when a request hangs.
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };

    let outcome = catch_unwind(AssertUnwindSafe(|| build(request, stdio)));
    let answer = match outcome {
        Ok(Ok(pid)) => HelperReply::Started { pid },
        Ok(Err(error)) => HelperReply::Failed {
            kind: classify(&error),
            message: truncate(error_chain(&error)),
        },
        Err(_) => HelperReply::Failed {
            kind: FailureKind::Runtime,
            message: "libcontainer panicked".into(),
        },
    };
    let started = matches!(answer, HelperReply::Started { .. });
    if send(reply.as_fd(), &encode(&answer), &[]).is_ok() && started {
        wait_for_ack(&reply);
    }
    // SAFETY: ends this forked process at once, without running exit
    // handlers that belong to the helper.
    unsafe { libc::_exit(0) }
}

fn build(request: &HelperRequest, stdio: Option<[OwnedFd; 3]>) -> Result<i32, LibcontainerError> {
    let mut builder = ContainerBuilder::new(request.container_id.clone(), SyscallType::Linux)
        .with_root_path(&request.state_root)?
        .with_console_socket(request.console_socket.clone())
        .with_executor(ResolvedPathExecutor::default());
    if let Some([stdin, stdout, stderr]) = stdio {
        builder = builder
            .with_stdin(stdin)
            .with_stdout(stdout)
            .with_stderr(stderr);
    }
    let builder = builder.validate_id()?;
    let pid = match &request.op {
        HelperOp::Create { bundle } => builder
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()?
            .pid()
            .ok_or_else(|| LibcontainerError::Other("the new container has no pid".into()))?,
        HelperOp::Exec { process } => builder
            .as_tenant()
            .with_process(Some(process))
            .with_detach(true)
            .build()?,
    };
    Ok(pid.as_raw())
}

fn classify(error: &LibcontainerError) -> FailureKind {
    match error {
        LibcontainerError::Exist => FailureKind::AlreadyExists,
        LibcontainerError::InvalidID(_)
        | LibcontainerError::MissingSpec(_)
        | LibcontainerError::InvalidSpec(_)
        | LibcontainerError::Spec(_)
        | LibcontainerError::InvalidInput(_) => FailureKind::InvalidSpec,
        _ => FailureKind::Runtime,
    }
}

fn truncate(mut message: String) -> String {
    let limit = MAX_MESSAGE_BYTES / 2;
    if message.len() > limit {
        let mut end = limit;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

fn wait_for_ack(reply: &OwnedFd) {
    let timeout = TimeVal::new(ACK_TIMEOUT.as_secs() as _, 0);
    if let Err(errno) = setsockopt(reply, ReceiveTimeout, &timeout) {
        tracing::warn!(%errno, "container worker: cannot bound the wait for the agent");
    }
    if let Err(errno) = receive(reply.as_fd()) {
        tracing::warn!(%errno, "container worker: no word from the agent");
    }
}
