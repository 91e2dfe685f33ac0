//! A small CRI v1 client (the `k8s-cri` crate) over containerd's Unix socket:
//! what kubelet does to run a pod, one call at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, ListPodSandboxRequest, PodSandbox,
    PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1::{ContainerState, ExecSyncResponse};

/// Errors talking to the CRI plugin.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the CRI socket: {0}")]
    Connect(tonic::transport::Error),
    /// A call failed; `op` names it (`RunPodSandbox`).
    #[error("{op}: {:?}: {}", status.code(), status.message())]
    Call {
        op: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("the reply has no {0}")]
    Missing(&'static str),
}

fn call(op: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Call {
        op,
        status: Box::new(status),
    }
}

/// A connected CRI runtime-service client.
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to containerd's gRPC socket (the CRI plugin serves on it).
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        let socket: PathBuf = socket.to_path_buf();
        // The URI is required by the API but unused: the connector dials
        // the socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(CriError::Connect)?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel),
        })
    }

    /// A pod sandbox configuration named `name` (namespace `default`) that
    /// logs to `log_directory`, which is created, as kubelet does.
    pub fn pod_config(name: &str, log_directory: &Path) -> PodSandboxConfig {
        let _ = std::fs::create_dir_all(log_directory);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("{name}-uid-{}", std::process::id()),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels: HashMap::from([("vmrun-test".to_string(), name.to_string())]),
            ..Default::default()
        }
    }

    /// A container configuration: `image` running `command`, logging to
    /// `<name>.log` in the pod's log directory.
    pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `runtime_handler` ("" or "runc": the default;
    /// "vmrun": ours). Returns the sandbox ID.
    pub async fn run_pod_sandbox(
        &mut self,
        config: &PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError> {
        let reply = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: runtime_handler.to_string(),
            })
            .await
            .map_err(call("RunPodSandbox"))?;
        Ok(reply.into_inner().pod_sandbox_id)
    }

    /// CreateContainer in the pod (`sandbox` is the pod's configuration,
    /// passed again as kubelet does). Returns the container ID.
    pub async fn create_container(
        &mut self,
        pod_sandbox_id: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, CriError> {
        let reply = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map_err(call("CreateContainer"))?;
        Ok(reply.into_inner().container_id)
    }

    pub async fn start_container(&mut self, container_id: &str) -> Result<(), CriError> {
        self.runtime
            .start_container(StartContainerRequest {
                container_id: container_id.to_string(),
            })
            .await
            .map_err(call("StartContainer"))?;
        Ok(())
    }

    /// ExecSync: runs `cmd` in the container, waits at most `timeout`.
    pub async fn exec_sync(
        &mut self,
        container_id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, CriError> {
        let reply = self
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: container_id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(call("ExecSync"))?;
        Ok(reply.into_inner())
    }

    pub async fn container_status(
        &mut self,
        container_id: &str,
    ) -> Result<ContainerStatus, CriError> {
        let reply = self
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: false,
            })
            .await
            .map_err(call("ContainerStatus"))?;
        reply
            .into_inner()
            .status
            .ok_or(CriError::Missing("container status"))
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout`.
    pub async fn stop_container(
        &mut self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), CriError> {
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: container_id.to_string(),
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(call("StopContainer"))?;
        Ok(())
    }

    pub async fn remove_container(&mut self, container_id: &str) -> Result<(), CriError> {
        self.runtime
            .remove_container(RemoveContainerRequest {
                container_id: container_id.to_string(),
            })
            .await
            .map_err(call("RemoveContainer"))?;
        Ok(())
    }

    pub async fn stop_pod_sandbox(&mut self, pod_sandbox_id: &str) -> Result<(), CriError> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_sandbox_id.to_string(),
            })
            .await
            .map_err(call("StopPodSandbox"))?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&mut self, pod_sandbox_id: &str) -> Result<(), CriError> {
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_sandbox_id.to_string(),
            })
            .await
            .map_err(call("RemovePodSandbox"))?;
        Ok(())
    }

    /// Every pod sandbox the runtime knows (any state).
    pub async fn list_pod_sandbox(&mut self) -> Result<Vec<PodSandbox>, CriError> {
        let reply = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .map_err(call("ListPodSandbox"))?;
        Ok(reply.into_inner().items)
    }
}
