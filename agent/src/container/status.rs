//! A container's life cycle as the agent reports it.

use std::fmt;

use crate::process::ProcessExit;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    /// `CreateContainer` has not finished.
    Creating,
    /// The init process waits for `StartContainer`.
    Created,
    Running,
    /// Frozen by the cgroup freezer.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl ContainerStatus {
    /// Combines libcontainer's view with the agent's: once the agent reaped
    /// the init process the container is stopped, whatever libcontainer
    /// concludes from a pid that may already be reused.
    pub fn reconcile(engine: ContainerStatus, init_exit: Option<ProcessExit>) -> Self {
        match init_exit {
            Some(_) => Self::Stopped,
            None => engine,
        }
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Creating => "being created",
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        })
    }
}

/// What `ContainerState` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReport {
    pub id: String,
    pub status: ContainerStatus,
    /// The init process's pid in the guest (0 while creating).
    pub pid: u32,
    /// The init process's exec id (empty while creating).
    pub exec_id: String,
    /// How the init process ended, once stopped.
    pub exit: Option<ProcessExit>,
    /// The OOM killer struck in the container's cgroup since creation.
    pub oom_killed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_init_means_stopped_whatever_libcontainer_says() {
        for engine in [
            ContainerStatus::Created,
            ContainerStatus::Running,
            ContainerStatus::Paused,
        ] {
            assert_eq!(
                ContainerStatus::reconcile(engine, Some(ProcessExit::Signal(9))),
                ContainerStatus::Stopped
            );
            assert_eq!(ContainerStatus::reconcile(engine, None), engine);
        }
    }
}
