//! A CRI v1 client over a unix socket: the kubelet's only way to the container runtime.
//! Each call is named in its error, as `crictl` names them, so a learner sees which step of
//! the pod lifecycle failed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use super::Error;

/// A connection to one runtime's CRI socket.
#[derive(Debug, Clone)]
pub struct Cri {
    pub socket: PathBuf,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

fn cri_err(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Cri { call, status }
}

impl Cri {
    pub async fn connect(socket: &Path) -> Result<Cri, Error> {
        let path = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector dials the unix socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| Error::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Cri {
            socket: socket.to_path_buf(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// `Version`: the runtime's name and version, as `crictl version` prints them.
    pub async fn version(&mut self) -> Result<cri::VersionResponse, Error> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        Ok(self
            .runtime
            .version(req)
            .await
            .map_err(cri_err("Version"))?
            .into_inner())
    }

    /// Waits until the runtime reports `NetworkReady` (a CNI config is loaded); before that,
    /// `RunPodSandbox` fails with "cni plugin not initialized".
    pub async fn wait_network_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .runtime
                .status(cri::StatusRequest { verbose: false })
                .await
                .map_err(cri_err("Status"))?
                .into_inner();
            let network = status
                .status
                .unwrap_or_default()
                .conditions
                .into_iter()
                .find(|c| c.r#type == "NetworkReady");
            let reason = match &network {
                Some(c) if c.status => return Ok(()),
                Some(c) => format!("{}: {}", c.reason, c.message),
                None => "the runtime reports no NetworkReady condition".into(),
            };
            if Instant::now() > deadline {
                return Err(Error::NetworkNotReady {
                    seconds: timeout.as_secs(),
                    reason,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn list_images(&mut self) -> Result<Vec<cri::Image>, Error> {
        let req = cri::ListImagesRequest { filter: None };
        Ok(self
            .images
            .list_images(req)
            .await
            .map_err(cri_err("ListImages"))?
            .into_inner()
            .images)
    }

    /// `ImageStatus`: whether the runtime holds `image` (by any of its names), and its ref.
    pub async fn image_status(&mut self, image: &str) -> Result<Option<cri::Image>, Error> {
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(self
            .images
            .image_status(req)
            .await
            .map_err(cri_err("ImageStatus"))?
            .into_inner()
            .image)
    }

    /// `PullImage`: fetches `image` from its registry; returns the image ref.
    pub async fn pull_image(&mut self, image: &str) -> Result<String, Error> {
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        };
        Ok(self
            .images
            .pull_image(req)
            .await
            .map_err(cri_err("PullImage"))?
            .into_inner()
            .image_ref)
    }

    /// `RunPodSandbox`: the pause container, which owns the pod's network namespace.
    pub async fn run_pod_sandbox(
        &mut self,
        config: cri::PodSandboxConfig,
    ) -> Result<String, Error> {
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let resp = self
            .runtime
            .run_pod_sandbox(req)
            .await
            .map_err(cri_err("RunPodSandbox"))?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    pub async fn pod_sandbox_status(&mut self, id: &str) -> Result<cri::PodSandboxStatus, Error> {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let resp = self
            .runtime
            .pod_sandbox_status(req)
            .await
            .map_err(cri_err("PodSandboxStatus"))?;
        Ok(resp.into_inner().status.unwrap_or_default())
    }

    pub async fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), Error> {
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime
            .stop_pod_sandbox(req)
            .await
            .map_err(cri_err("StopPodSandbox"))?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), Error> {
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime
            .remove_pod_sandbox(req)
            .await
            .map_err(cri_err("RemovePodSandbox"))?;
        Ok(())
    }

    /// `CreateContainer` in a sandbox; the sandbox's config is needed again, as upstream.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        config: cri::ContainerConfig,
        sandbox: cri::PodSandboxConfig,
    ) -> Result<String, Error> {
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox),
        };
        let resp = self
            .runtime
            .create_container(req)
            .await
            .map_err(cri_err("CreateContainer"))?;
        Ok(resp.into_inner().container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<(), Error> {
        let req = cri::StartContainerRequest {
            container_id: id.into(),
        };
        self.runtime
            .start_container(req)
            .await
            .map_err(cri_err("StartContainer"))?;
        Ok(())
    }

    pub async fn container_status(&mut self, id: &str) -> Result<cri::ContainerStatus, Error> {
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let resp = self
            .runtime
            .container_status(req)
            .await
            .map_err(cri_err("ContainerStatus"))?;
        Ok(resp.into_inner().status.unwrap_or_default())
    }

    /// `StopContainer`: SIGTERM, then SIGKILL after `grace` seconds (the runtime's side of a
    /// pod's terminationGracePeriodSeconds).
    pub async fn stop_container(&mut self, id: &str, grace: i64) -> Result<(), Error> {
        let req = cri::StopContainerRequest {
            container_id: id.into(),
            timeout: grace,
        };
        self.runtime
            .stop_container(req)
            .await
            .map_err(cri_err("StopContainer"))?;
        Ok(())
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<(), Error> {
        let req = cri::RemoveContainerRequest {
            container_id: id.into(),
        };
        self.runtime
            .remove_container(req)
            .await
            .map_err(cri_err("RemoveContainer"))?;
        Ok(())
    }

    /// `ExecSync`: runs a command in a container and returns (exit code, stdout, stderr), the
    /// way exec probes run.
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), Error> {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout.as_secs() as i64,
        };
        let r = self
            .runtime
            .exec_sync(req)
            .await
            .map_err(cri_err("ExecSync"))?
            .into_inner();
        Ok((r.exit_code, r.stdout, r.stderr))
    }

    /// `Exec`: asks the runtime's streaming server for a URL where this command will run
    /// with the given streams; the caller speaks the streaming protocol to that URL.
    pub async fn exec(
        &mut self,
        id: &str,
        cmd: &[String],
        (stdin, stdout, stderr, tty): (bool, bool, bool, bool),
    ) -> Result<String, Error> {
        let req = cri::ExecRequest {
            container_id: id.into(),
            cmd: cmd.to_vec(),
            tty,
            stdin,
            stdout,
            // With a TTY, stderr is merged into stdout, and the runtime refuses both.
            stderr: stderr && !tty,
        };
        Ok(self
            .runtime
            .exec(req)
            .await
            .map_err(cri_err("Exec"))?
            .into_inner()
            .url)
    }

    /// `Attach`: a streaming URL for the container's own stdio.
    pub async fn attach(
        &mut self,
        id: &str,
        (stdin, stdout, stderr, tty): (bool, bool, bool, bool),
    ) -> Result<String, Error> {
        let req = cri::AttachRequest {
            container_id: id.into(),
            stdin,
            tty,
            stdout,
            stderr: stderr && !tty,
        };
        Ok(self
            .runtime
            .attach(req)
            .await
            .map_err(cri_err("Attach"))?
            .into_inner()
            .url)
    }

    /// `PortForward`: a streaming URL that forwards to ports in the sandbox's network.
    pub async fn port_forward(&mut self, sandbox: &str, ports: &[i32]) -> Result<String, Error> {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: sandbox.into(),
            port: ports.to_vec(),
        };
        Ok(self
            .runtime
            .port_forward(req)
            .await
            .map_err(cri_err("PortForward"))?
            .into_inner()
            .url)
    }

    pub async fn list_pod_sandboxes(&mut self) -> Result<Vec<cri::PodSandbox>, Error> {
        self.list_pod_sandboxes_filtered(None).await
    }

    /// `ListContainerStats`: every container's CPU, memory and writable layer use.
    pub async fn list_container_stats(&mut self) -> Result<Vec<cri::ContainerStats>, Error> {
        let req = cri::ListContainerStatsRequest { filter: None };
        Ok(self
            .runtime
            .list_container_stats(req)
            .await
            .map_err(cri_err("ListContainerStats"))?
            .into_inner()
            .stats)
    }

    pub async fn list_containers(&mut self) -> Result<Vec<cri::Container>, Error> {
        self.list_containers_filtered(None).await
    }

    /// The sandboxes carrying label `key=value` (filtered by the runtime, not here).
    pub async fn list_pod_sandboxes_labelled(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Vec<cri::PodSandbox>, Error> {
        let filter = cri::PodSandboxFilter {
            label_selector: [(key.to_owned(), value.to_owned())].into(),
            ..Default::default()
        };
        self.list_pod_sandboxes_filtered(Some(filter)).await
    }

    async fn list_pod_sandboxes_filtered(
        &mut self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>, Error> {
        let req = cri::ListPodSandboxRequest { filter };
        Ok(self
            .runtime
            .list_pod_sandbox(req)
            .await
            .map_err(cri_err("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    /// The containers carrying label `key=value` (filtered by the runtime, not here).
    pub async fn list_containers_labelled(
        &mut self,
        key: &str,
        value: &str,
    ) -> Result<Vec<cri::Container>, Error> {
        let filter = cri::ContainerFilter {
            label_selector: [(key.to_owned(), value.to_owned())].into(),
            ..Default::default()
        };
        self.list_containers_filtered(Some(filter)).await
    }

    async fn list_containers_filtered(
        &mut self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>, Error> {
        let req = cri::ListContainersRequest { filter };
        Ok(self
            .runtime
            .list_containers(req)
            .await
            .map_err(cri_err("ListContainers"))?
            .into_inner()
            .containers)
    }
}
