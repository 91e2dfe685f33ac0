//! What can go wrong managing containers. Which gRPC code each variant
//! becomes is decided in one place, `server::error`.

use std::io;
use std::path::PathBuf;

use super::status::ContainerStatus;

/// An error of a container operation. Messages name the operation, the
/// container and, for bad requests, the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A request field or a part of the OCI spec is missing or malformed.
    #[error("{op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    #[error("no container with id {id:?}")]
    NotFound { id: String },

    #[error("a container with id {id:?} already exists")]
    AlreadyExists { id: String },

    /// Two containers cannot share a cgroup: removing one would kill both.
    #[error("create container {id:?}: cgroup {cgroup} is already used by container {other:?}")]
    CgroupInUse {
        id: String,
        cgroup: String,
        other: String,
    },

    /// The container's state does not allow the operation.
    #[error("{op} {id:?}: it is {status}{hint}")]
    WrongState {
        op: &'static str,
        id: String,
        status: ContainerStatus,
        /// What would work instead, starting with "; " (or empty).
        hint: &'static str,
    },

    /// libcontainer could not do it: the spec asks for something the guest
    /// cannot provide, the program cannot run, a hook failed...
    #[error("{op} {id:?}: {message}")]
    Runtime {
        op: &'static str,
        id: String,
        message: String,
    },

    /// A file or mount of the agent's own bookkeeping failed.
    #[error("{op} {id:?}: {what} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        id: String,
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// The helper process that forks containers failed or did not answer.
    #[error("{op} {id:?}: container helper: {reason}")]
    Helper {
        op: &'static str,
        id: String,
        reason: String,
    },

    /// The helper did not answer in time (it was killed).
    #[error("{op} {id:?}: no answer from the container helper within {seconds} s")]
    HelperTimeout {
        op: &'static str,
        id: String,
        seconds: u64,
    },
}

impl ContainerError {
    /// Shorthand for [`ContainerError::InvalidArgument`].
    pub fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`ContainerError::Io`].
    pub fn io(
        op: &'static str,
        id: &str,
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let id = id.to_owned();
        let path = path.into();
        move |source| Self::Io {
            op,
            id,
            what,
            path,
            source,
        }
    }
}

/// An error and its sources, `: `-separated, skipping sources whose text
/// is already part of the message (libcontainer's top-level messages say
/// little, e.g. "io error").
pub fn error_chain(error: &dyn std::error::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_sources_without_repeating_them() {
        #[derive(Debug, thiserror::Error)]
        #[error("io error")]
        struct Terse(#[source] io::Error);

        let error = Terse(io::Error::other("no space left"));
        assert_eq!(error_chain(&error), "io error: no space left");
    }

    #[test]
    fn wrong_state_reads_naturally() {
        let error = ContainerError::WrongState {
            op: "start container",
            id: "web".into(),
            status: ContainerStatus::Running,
            hint: "",
        };
        assert_eq!(error.to_string(), r#"start container "web": it is running"#);
    }
}
