//! What can go wrong on the host side of the agent API.

use std::error::Error;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

/// An error of the agent client. Its message is complete on its own (it
/// includes the cause), ready to show to a user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Setting up the gRPC channel failed (the dialer retries this).
    #[error("cannot open a channel to the agent: {}", chain(.0))]
    Channel(tonic::transport::Error),

    /// The agent answered a call with an error status.
    #[error("{op}: {}: {}", code_name(.status.code()), .status.message())]
    Rpc { op: &'static str, status: Status },

    /// The agent answered, but without a field it must always send.
    #[error("{op}: the agent's answer has no {field}")]
    IncompleteAnswer {
        op: &'static str,
        field: &'static str,
    },

    /// The agent answered with a value that cannot be (a hostile or
    /// broken guest).
    #[error("{op}: the agent's answer has an impossible {field}: {value}")]
    ImpossibleAnswer {
        op: &'static str,
        field: &'static str,
        value: i64,
    },

    /// `Check` answered, but the agent does not serve (yet).
    #[error("the agent is not serving")]
    NotServing,

    /// No working connection before the deadline.
    #[error(
        "no answer from the agent behind {} port {port} after {attempts} attempt(s) in {waited:?}; last error: {last_error}",
        .uds_path.display()
    )]
    Unreachable {
        uds_path: PathBuf,
        port: u32,
        attempts: u32,
        waited: Duration,
        last_error: String,
    },

    /// Reading the local input that feeds a process's stdin failed.
    #[error("reading stdin for the process: {0}")]
    StdinSource(io::Error),

    /// Writing a process's output to its local destination failed.
    #[error("writing the process's output: {0}")]
    OutputSink(io::Error),

    /// Something on the host that a request needs failed.
    #[error("cannot {what}: {source}")]
    Host {
        what: &'static str,
        source: io::Error,
    },
}

impl ClientError {
    /// The gRPC code when the agent answered with an error status.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    pub(crate) fn rpc(op: &'static str) -> impl FnOnce(Status) -> Self {
        move |status| Self::Rpc { op, status }
    }
}

/// An error and its sources, `: `-separated, since tonic's transport errors
/// say little at the top level. A source whose message is already part of
/// the text (errors that print their cause) is not repeated.
pub(crate) fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// gRPC's canonical spelling of a status code, as in `NOT_FOUND`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_read_like_grpc_statuses() {
        let error = ClientError::Rpc {
            op: "exec",
            status: Status::invalid_argument("exec: argv is empty"),
        };
        assert_eq!(
            error.to_string(),
            "exec: INVALID_ARGUMENT: exec: argv is empty"
        );
        assert_eq!(error.code(), Some(Code::InvalidArgument));
    }

    #[test]
    fn chain_includes_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] io::Error);

        let outer = Outer(io::Error::other("connection refused"));
        assert_eq!(chain(&outer), "transport error: connection refused");

        #[derive(Debug, thiserror::Error)]
        #[error("dialing: {0}")]
        struct PrintsItsCause(#[source] io::Error);

        let repeated = Outer(io::Error::other(PrintsItsCause(io::Error::other(
            "refused",
        ))));
        assert_eq!(chain(&repeated), "transport error: dialing: refused");
    }
}
