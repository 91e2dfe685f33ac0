//! Everything that can go wrong while serving a request, and the one place
//! where it becomes a gRPC status code.

use std::io;

use nix::errno::Errno;
use tonic::{Code, Status};

use crate::container::ContainerError;
use crate::network::{ApplyError, NetworkError};
use crate::process::ProcessError;
use crate::storage::StorageError;

/// An error answering an agent API request.
///
/// Messages name the operation and what was wrong, since they reach the user
/// of `vmrun run` unchanged (prefixed with the status code).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A request field is missing or malformed.
    #[error("{op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    /// A second reader for an output stream while the first is attached.
    #[error("{stream} of exec id {exec_id:?} already has a reader")]
    OutputBusy {
        stream: &'static str,
        exec_id: String,
    },

    /// The agent itself is in a state it should never be in.
    #[error("{op}: {reason}")]
    Internal { op: &'static str, reason: String },

    /// The process runtime failed (unknown exec id, spawn, stdio...).
    #[error(transparent)]
    Process(#[from] ProcessError),

    /// A `Container` request failed.
    #[error(transparent)]
    Container(#[from] ContainerError),

    /// A `Storage` request failed.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// `InitSandbox` could not make the guest its own.
    #[error("init sandbox: {0}")]
    InitSandbox(#[from] crate::sandbox_init::InitSandboxError),

    /// `ConfigureNetwork` failed.
    #[error("configure network: {0}")]
    Network(#[from] NetworkError),
}

impl AgentError {
    /// Shorthand for [`AgentError::InvalidArgument`].
    pub fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    /// The gRPC code a client sees for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::OutputBusy { .. } => Code::FailedPrecondition,
            Self::Internal { .. } => Code::Internal,
            Self::Process(error) => process_code(error),
            Self::Container(error) => container_code(error),
            Self::Storage(error) => storage_code(error),
            Self::InitSandbox(crate::sandbox_init::InitSandboxError::EntropySize(_)) => {
                Code::InvalidArgument
            }
            Self::InitSandbox(_) => Code::Internal,
            Self::Network(error) => network_code(error),
        }
    }
}

fn process_code(error: &ProcessError) -> Code {
    match error {
        ProcessError::UnknownExec { .. } => Code::NotFound,
        ProcessError::NoTerminal { .. } | ProcessError::StdinClosed { .. } => {
            Code::FailedPrecondition
        }
        // Callers map these like a shell does: NOT_FOUND is "command not
        // found" (127), PERMISSION_DENIED is "not executable" (126).
        ProcessError::Spawn { source, .. } => match source.kind() {
            io::ErrorKind::NotFound => Code::NotFound,
            io::ErrorKind::PermissionDenied => Code::PermissionDenied,
            _ => Code::FailedPrecondition,
        },
        ProcessError::Cwd { .. } => Code::FailedPrecondition,
        ProcessError::Io { .. } | ProcessError::Internal { .. } => Code::Internal,
    }
}

fn container_code(error: &ContainerError) -> Code {
    match error {
        ContainerError::InvalidArgument { .. } => Code::InvalidArgument,
        ContainerError::NotFound { .. } => Code::NotFound,
        ContainerError::AlreadyExists { .. } | ContainerError::CgroupInUse { .. } => {
            Code::AlreadyExists
        }
        // What the container asks for cannot be done here (its program is
        // missing, a mount fails...): like a failed exec, not an agent bug.
        ContainerError::WrongState { .. } | ContainerError::Runtime { .. } => {
            Code::FailedPrecondition
        }
        ContainerError::Io { .. } | ContainerError::Helper { .. } => Code::Internal,
        ContainerError::HelperTimeout { .. } => Code::DeadlineExceeded,
    }
}

fn storage_code(error: &StorageError) -> Code {
    match error {
        StorageError::InvalidArgument { .. } => Code::InvalidArgument,
        StorageError::NoSource { .. } | StorageError::NotMounted { .. } => Code::NotFound,
        StorageError::AlreadyMounted { .. } => Code::AlreadyExists,
        StorageError::Mount { errno, .. } => match errno {
            // Unknown virtio-fs tag or bad options.
            Errno::EINVAL => Code::InvalidArgument,
            Errno::ENOENT | Errno::ENXIO => Code::NotFound,
            Errno::EACCES | Errno::EPERM | Errno::EROFS => Code::PermissionDenied,
            // The guest kernel lacks the file system, the device is in use.
            Errno::ENODEV | Errno::EBUSY | Errno::ENOTBLK => Code::FailedPrecondition,
            _ => Code::Internal,
        },
        StorageError::Unmount { errno, .. } => match errno {
            Errno::EBUSY => Code::FailedPrecondition,
            _ => Code::Internal,
        },
        StorageError::MakeMountPoint { .. } => Code::FailedPrecondition,
    }
}

fn network_code(error: &NetworkError) -> Code {
    match error {
        NetworkError::Plan(_) => Code::InvalidArgument,
        // Well-formed, but not for this guest (the API's FAILED_PRECONDITION).
        NetworkError::Apply(
            ApplyError::TooFewLinks { .. }
            | ApplyError::NoIpv6 { .. }
            | ApplyError::NameTaken { .. }
            | ApplyError::LinkGone { .. },
        ) => Code::FailedPrecondition,
        NetworkError::Apply(error @ ApplyError::Netlink { .. }) => match error.errno() {
            // The kernel refuses what the request asks of this guest: an
            // MTU beyond the device's maximum (EINVAL, ERANGE), a MAC it
            // cannot take (EADDRNOTAVAIL, EOPNOTSUPP), a gateway no link
            // reaches (ENETUNREACH), an address the guest has elsewhere.
            Some(
                Errno::EINVAL
                | Errno::ERANGE
                | Errno::EADDRNOTAVAIL
                | Errno::EOPNOTSUPP
                | Errno::ENETUNREACH
                | Errno::EEXIST
                | Errno::ENODEV,
            ) => Code::FailedPrecondition,
            _ => Code::Internal,
        },
        NetworkError::Links(_) | NetworkError::Netlink(_) => Code::Internal,
    }
}

impl From<AgentError> for Status {
    fn from(error: AgentError) -> Self {
        let code = error.code();
        if code == Code::Internal {
            tracing::warn!(%error, "request failed");
        }
        Status::new(code, error.to_string())
    }
}

impl From<ProcessError> for Status {
    fn from(error: ProcessError) -> Self {
        AgentError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn invalid_argument_keeps_operation_and_reason() {
        let status = Status::from(AgentError::invalid("exec", "argv is empty"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "exec: argv is empty");
    }

    #[test]
    fn unknown_exec_is_not_found_and_quotes_the_id() {
        let status = Status::from(ProcessError::UnknownExec {
            exec_id: "x".into(),
        });
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), r#"no process with exec id "x""#);
    }

    #[test]
    fn container_errors_map_to_what_a_client_can_act_on() {
        let code = |error: ContainerError| AgentError::from(error).code();
        assert_eq!(
            code(ContainerError::invalid(
                "create container",
                "process.args is empty"
            )),
            Code::InvalidArgument
        );
        assert_eq!(
            code(ContainerError::NotFound { id: "x".into() }),
            Code::NotFound
        );
        assert_eq!(
            code(ContainerError::AlreadyExists { id: "x".into() }),
            Code::AlreadyExists
        );
        assert_eq!(
            code(ContainerError::CgroupInUse {
                id: "x".into(),
                cgroup: "/c".into(),
                other: "y".into()
            }),
            Code::AlreadyExists
        );
        assert_eq!(
            code(ContainerError::WrongState {
                op: "start",
                id: "x".into(),
                status: crate::container::ContainerStatus::Stopped,
                hint: ""
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ContainerError::Runtime {
                op: "create container",
                id: "x".into(),
                message: "exec failed".into()
            }),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(ContainerError::Helper {
                op: "create container",
                id: "x".into(),
                reason: "gone".into()
            }),
            Code::Internal
        );
        assert_eq!(
            code(ContainerError::HelperTimeout {
                op: "create container",
                id: "x".into(),
                seconds: 1
            }),
            Code::DeadlineExceeded
        );
        let status = Status::from(AgentError::from(ContainerError::NotFound {
            id: "web".into(),
        }));
        assert_eq!(status.message(), r#"no container with id "web""#);
    }

    #[test]
    fn storage_errors_map_by_cause() {
        let code = |error: StorageError| AgentError::from(error).code();
        let mount = |errno| StorageError::Mount {
            fstype: "virtiofs".into(),
            source_name: "tag".into(),
            mount_point: PathBuf::from("/m"),
            errno,
        };
        assert_eq!(
            code(StorageError::invalid("mount storage", "x")),
            Code::InvalidArgument
        );
        assert_eq!(
            code(StorageError::NoSource {
                source_path: PathBuf::from("/dev/vdz")
            }),
            Code::NotFound
        );
        assert_eq!(
            code(StorageError::AlreadyMounted {
                mount_point: PathBuf::from("/m")
            }),
            Code::AlreadyExists
        );
        assert_eq!(code(mount(Errno::EINVAL)), Code::InvalidArgument);
        assert_eq!(code(mount(Errno::ENODEV)), Code::FailedPrecondition);
        assert_eq!(code(mount(Errno::EIO)), Code::Internal);
        assert_eq!(
            code(StorageError::Unmount {
                mount_point: PathBuf::from("/m"),
                errno: Errno::EBUSY
            }),
            Code::FailedPrecondition
        );
    }

    #[test]
    fn network_errors_map_to_the_apis_codes() {
        use crate::network::NetlinkCause;
        let code = |error: NetworkError| AgentError::from(error).code();
        let netlink = |errno| {
            NetworkError::Apply(ApplyError::Netlink {
                step: "interfaces[0] (eth0, link index 2): set MTU 9000".into(),
                cause: NetlinkCause::Errno(errno),
            })
        };
        assert_eq!(
            code(NetworkError::Plan(
                crate::network::PlanError::InvalidField {
                    field: "interfaces[0].mac".into(),
                    reason: "5 bytes, want 6".into()
                }
            )),
            Code::InvalidArgument
        );
        assert_eq!(
            code(NetworkError::Apply(ApplyError::TooFewLinks {
                interfaces: 2,
                links: 1
            })),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(NetworkError::Apply(ApplyError::NoIpv6 {
                field: "interfaces[0].addresses[0]".into(),
                prefix: crate::network::plan::IpPrefix::new("2001:db8::5".parse().unwrap(), 64)
                    .unwrap()
            })),
            Code::FailedPrecondition
        );
        assert_eq!(code(netlink(Errno::EINVAL)), Code::FailedPrecondition);
        assert_eq!(code(netlink(Errno::ENETUNREACH)), Code::FailedPrecondition);
        assert_eq!(code(netlink(Errno::ENOMEM)), Code::Internal);
        assert_eq!(
            code(NetworkError::Netlink(io::Error::from(io::ErrorKind::Other))),
            Code::Internal
        );
        let status = Status::from(AgentError::from(netlink(Errno::EINVAL)));
        assert_eq!(
            status.message(),
            "configure network: interfaces[0] (eth0, link index 2): set MTU 9000: \
             EINVAL: Invalid argument"
        );
    }

    #[test]
    fn spawn_errors_map_like_a_shell() {
        let spawn = |kind| {
            AgentError::from(ProcessError::Spawn {
                program: "prog".into(),
                source: io::Error::from(kind),
            })
        };
        assert_eq!(spawn(io::ErrorKind::NotFound).code(), Code::NotFound);
        assert_eq!(
            spawn(io::ErrorKind::PermissionDenied).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            spawn(io::ErrorKind::InvalidData).code(),
            Code::FailedPrecondition
        );
    }
}
