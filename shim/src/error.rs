//! The shim's errors, and the one place they become ttrpc status codes.

use containerd_shim::protos::ttrpc::{self, Code};
use vmrun_agent::client::ClientError;
use vmrun_sandbox::network::NetworkError;
use vmrun_sandbox::SandboxError;

/// Everything a Task API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The request names something this shim does not have.
    #[error("{0} not found")]
    NotFound(String),
    /// The request names something that exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The request is malformed or asks for something impossible.
    #[error("{0}")]
    InvalidArgument(String),
    /// The object is not in a state where the request makes sense.
    #[error("{0}")]
    FailedPrecondition(String),
    /// vmrun does not do this.
    #[error("{0} is not supported by vmrun")]
    Unsupported(&'static str),
    /// The bundle's config.json cannot be used.
    #[error("bundle {bundle}: {problem}")]
    Bundle { bundle: String, problem: String },
    /// The microVM could not be started or has stopped.
    #[error("microVM: {0}")]
    Vm(String),
    /// The guest agent refused or failed a call.
    #[error("guest agent: {0}")]
    Agent(#[from] ClientError),
    /// The sandbox layer (spec, host mounts, VMM) failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The shim's configuration file is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

impl ShimError {
    fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NOT_FOUND,
            Self::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Self::InvalidArgument(_) | Self::Bundle { .. } | Self::Config(_) => {
                Code::INVALID_ARGUMENT
            }
            Self::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Self::Unsupported(_) => Code::UNIMPLEMENTED,
            Self::Vm(_) => Code::UNAVAILABLE,
            Self::Sandbox(err) => match err {
                SandboxError::Spec(_) | SandboxError::Bundle { .. } => Code::INVALID_ARGUMENT,
                SandboxError::AlreadyExists(_) => Code::ALREADY_EXISTS,
                SandboxError::Host { .. } => Code::INTERNAL,
                SandboxError::Busy(_) => Code::FAILED_PRECONDITION,
                SandboxError::Vm(_) => Code::UNAVAILABLE,
                SandboxError::Agent(err) => agent_code(err),
                SandboxError::Network(err) => network_code(err),
            },
            Self::Agent(err) => agent_code(err),
        }
    }
}

/// The ttrpc code of a failure of the pod network's host side: a path
/// that is no network namespace is the request's fault, a pod network the
/// guest cannot have the pod's state, a missing tap the VM's.
fn network_code(err: &NetworkError) -> Code {
    match err {
        NetworkError::Open { .. } | NetworkError::NotNetns { .. } => Code::INVALID_ARGUMENT,
        NetworkError::UnsupportedLink { .. } | NetworkError::UnsupportedRoute { .. } => {
            Code::FAILED_PRECONDITION
        }
        NetworkError::MissingTap { .. } => Code::UNAVAILABLE,
        NetworkError::Thread { .. }
        | NetworkError::Panicked { .. }
        | NetworkError::Netlink { .. } => Code::INTERNAL,
    }
}

/// The ttrpc code of a failed agent call: the agent's own where it has one.
fn agent_code(err: &ClientError) -> Code {
    match err.code() {
        Some(tonic::Code::NotFound) => Code::NOT_FOUND,
        Some(tonic::Code::AlreadyExists) => Code::ALREADY_EXISTS,
        Some(tonic::Code::InvalidArgument) => Code::INVALID_ARGUMENT,
        Some(tonic::Code::FailedPrecondition) => Code::FAILED_PRECONDITION,
        Some(tonic::Code::PermissionDenied) => Code::PERMISSION_DENIED,
        Some(tonic::Code::Unimplemented) => Code::UNIMPLEMENTED,
        Some(tonic::Code::DeadlineExceeded) => Code::DEADLINE_EXCEEDED,
        Some(_) => Code::INTERNAL,
        None => Code::UNAVAILABLE,
    }
}

/// containerd reads the code (NotFound, AlreadyExists, ...) to decide what
/// happened; the message is what `ctr` and the kubelet show.
impl From<ShimError> for ttrpc::Error {
    fn from(err: ShimError) -> Self {
        tracing::warn!("request failed: {err}");
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.to_string()))
    }
}

pub type Result<T, E = ShimError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(err: ShimError) -> (Code, String) {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message.clone()),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn codes_follow_the_kind_of_failure() {
        assert_eq!(
            status(ShimError::NotFound("container c1".into())),
            (Code::NOT_FOUND, "container c1 not found".into())
        );
        assert_eq!(
            status(ShimError::Unsupported("checkpoint")).0,
            Code::UNIMPLEMENTED
        );
        let agent = ClientError::Rpc {
            op: "start container",
            status: tonic::Status::not_found("no container c2"),
        };
        let (code, message) = status(ShimError::Agent(agent));
        assert_eq!(code, Code::NOT_FOUND);
        assert!(message.contains("no container c2"), "{message}");
    }
}
