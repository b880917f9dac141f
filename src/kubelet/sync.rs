//! One pod through CRI, in the seed's order: data folder, sandbox (pause), init containers one
//! by one, then each container, replacing one whose spec hash changed and restarting exited
//! ones by restartPolicy with CrashLoopBackOff back-off; and the pod's termination. Mirrors
//! upstream's `kuberuntime_manager.go` (`SyncPod`, `computePodActions`, `KillPod`) and the
//! prober's workers; leaves out preStop hooks and ephemeral containers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};

use super::events::Pending;
use super::spec::{self, PodRef};
use super::status::{Observed, Run, Seen, View, initialized};
use super::{Error, env, probe, volumes};
use crate::runtime::cri::Cri;

/// Upstream's back-off for restarting a failed container: 10 s, doubling, at most 5 min.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off forgotten (upstream: twice the maximum).
const BACKOFF_RESET_NANOS: i64 = 600 * 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
    until: Instant,
    reported: bool,
}

/// The CRI side of one pod worker: its runtime connection and what it remembers between
/// syncs (back-off per container, and why a container is waiting).
pub struct PodRuntime {
    cri: Cri,
    client: kube::Client,
    /// Where each of the pod's volumes is on the host, by volume name.
    volumes: HashMap<String, PathBuf>,
    /// Events to write once the sync is done.
    events: Vec<Pending>,
    /// The pod's and node's IPs, for `fieldRef` env values.
    pod_ip: String,
    host_ip: String,
    root: PathBuf,
    dns: super::dns::Settings,
    backoff: HashMap<String, Backoff>,
    waiting: HashMap<String, (String, String)>,
    /// Probe history per (container id, "liveness" | "readiness").
    probes: HashMap<(String, &'static str), probe::Tracker>,
    /// What the runtime said during this sync, until the kubelet changes something: the
    /// pod's containers and their statuses. A sync reads them many times (init containers,
    /// containers, probes, garbage, status); asking once keeps containerd's load per pod low.
    listed: Option<Vec<cri::Container>>,
    statuses: HashMap<String, cri::ContainerStatus>,
    /// Each sandbox's IP, which does not change while it lives.
    ips: HashMap<String, String>,
}

/// CRI ids travel in pod status as `containerd://<id>`; CRI calls take the bare id.
fn bare(id: &str) -> &str {
    id.rsplit("://").next().unwrap_or(id)
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::PodDir {
        path: path.to_path_buf(),
        source,
    })
}

impl PodRuntime {
    pub fn new(
        cri: Cri,
        client: kube::Client,
        root: &Path,
        dns: super::dns::Settings,
    ) -> PodRuntime {
        PodRuntime {
            cri,
            client,
            volumes: HashMap::new(),
            pod_ip: String::new(),
            host_ip: String::new(),
            events: Vec::new(),
            root: root.to_path_buf(),
            dns,
            backoff: HashMap::new(),
            waiting: HashMap::new(),
            probes: HashMap::new(),
            listed: None,
            statuses: HashMap::new(),
            ips: HashMap::new(),
        }
    }

    /// Whether the pod needs a sync every second rather than only when the PLEG sees a
    /// change: probes to run, or a container waiting (back-off, an error to retry).
    pub fn needs_ticks(&self, pod: &Pod) -> bool {
        let spec = pod.spec.as_ref();
        let probed = spec.iter().flat_map(|s| &s.containers).any(|c| {
            c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
        });
        probed || !self.waiting.is_empty()
    }

    /// Forgets what the runtime said: called when a sync starts and after every change the
    /// kubelet makes to the pod's containers or sandboxes.
    fn invalidate(&mut self) {
        self.listed = None;
        self.statuses.clear();
    }

    fn cri_err(pod: &PodRef) -> impl FnOnce(crate::runtime::Error) -> Error + '_ {
        move |source| Error::Runtime {
            pod: pod.key(),
            source,
        }
    }

    /// The pod's sandboxes, newest first.
    async fn sandboxes(&mut self, r: &PodRef) -> Result<Vec<cri::PodSandbox>, Error> {
        let mut all: Vec<cri::PodSandbox> = self
            .cri
            .list_pod_sandboxes_labelled(spec::POD_UID, &r.uid)
            .await
            .map_err(Self::cri_err(r))?;
        all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(all)
    }

    /// The pod's containers (of any sandbox), newest attempt first.
    async fn containers(&mut self, r: &PodRef) -> Result<Vec<cri::Container>, Error> {
        if let Some(listed) = &self.listed {
            return Ok(listed.clone());
        }
        let mut all: Vec<cri::Container> = self
            .cri
            .list_containers_labelled(spec::POD_UID, &r.uid)
            .await
            .map_err(Self::cri_err(r))?;
        all.sort_by_key(|c| std::cmp::Reverse(c.metadata.as_ref().map(|m| m.attempt)));
        self.listed = Some(all.clone());
        Ok(all)
    }

    async fn seen(&mut self, r: &PodRef, c: &cri::Container) -> Result<Seen, Error> {
        let st = match self.statuses.get(&c.id) {
            Some(st) => st.clone(),
            None => {
                let st = self
                    .cri
                    .container_status(&c.id)
                    .await
                    .map_err(Self::cri_err(r))?;
                self.statuses.insert(c.id.clone(), st.clone());
                st
            }
        };
        let state = match cri::ContainerState::try_from(st.state) {
            Ok(cri::ContainerState::ContainerRunning) => Run::Running {
                started: st.started_at,
            },
            Ok(cri::ContainerState::ContainerExited) => Run::Exited {
                code: st.exit_code,
                reason: st.reason.clone(),
                message: st.message.clone(),
                started: st.started_at,
                finished: st.finished_at,
            },
            _ => Run::Created,
        };
        Ok(Seen {
            id: format!("containerd://{}", c.id),
            attempt: c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            hash: c
                .annotations
                .get(spec::CONTAINER_HASH)
                .cloned()
                .unwrap_or_default(),
            image_ref: st.image_ref,
            state,
        })
    }

    /// What runs for each container of the spec in `sandbox`: newest and previous instance.
    async fn views(
        &mut self,
        r: &PodRef,
        sandbox: &str,
        specs: &[Container],
    ) -> Result<Vec<View>, Error> {
        let all = self.containers(r).await?;
        let mut views = Vec::new();
        for c in specs {
            let mine: Vec<&cri::Container> = all
                .iter()
                .filter(|k| k.pod_sandbox_id == sandbox)
                .filter(|k| k.labels.get(spec::CONTAINER_NAME) == Some(&c.name))
                .collect();
            let current = match mine.first() {
                Some(k) => Some(self.seen(r, k).await?),
                None => None,
            };
            let previous = match mine.get(1) {
                Some(k) => Some(self.seen(r, k).await?),
                None => None,
            };
            let probe_ready = c.readiness_probe.as_ref().map(|_| {
                current.as_ref().is_some_and(|s| {
                    self.probes
                        .get(&(s.id.clone(), "readiness"))
                        .is_some_and(|t| t.ok)
                })
            });
            let probe_started = c.startup_probe.as_ref().map(|_| {
                current.as_ref().is_some_and(|s| {
                    self.probes
                        .get(&(s.id.clone(), "startup"))
                        .is_some_and(|t| t.ok)
                })
            });
            views.push(View {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                current,
                previous,
                waiting: self.waiting.get(&c.name).cloned(),
                probe_ready,
                probe_started,
            });
        }
        Ok(views)
    }

    /// Brings the pod's containers to its spec, one step of the way, and says what runs.
    pub async fn sync(&mut self, pod: &Pod, host_ip: &str) -> Result<Observed, Error> {
        let r = PodRef::of(pod);
        mkdir(&r.dir(&self.root).join("volumes"))?;
        mkdir(&r.log_dir(&self.root))?;
        self.invalidate();
        self.volumes = volumes::prepare(&self.client, pod, &self.root).await?;
        self.waiting.clear();
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let sandboxes = self.sandboxes(&r).await?;
        let ready = sandboxes
            .iter()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32);
        let (sandbox, attempt) = match ready {
            Some(s) => (
                s.id.clone(),
                s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            ),
            None if terminal => return self.observe(pod, "", host_ip).await,
            None => {
                // The seed: a pod whose pause container is gone has its containers stopped
                // first, then gets a new sandbox.
                for s in &sandboxes {
                    self.remove_sandbox(&r, &s.id, 0, None).await?;
                }
                let attempt = sandboxes.len() as u32;
                let config = spec::sandbox_config(pod, attempt, &self.root, &self.dns);
                let id = self.cri.run_pod_sandbox(config).await;
                self.invalidate();
                let id = id.map_err(Self::cri_err(&r))?;
                eprintln!("kubelet: pod {}: sandbox {id} running", r.key());
                (id, attempt)
            }
        };
        let config = spec::sandbox_config(pod, attempt, &self.root, &self.dns);
        self.host_ip = host_ip.to_string();
        self.pod_ip = self.pod_ip(pod, &sandbox, host_ip).await?;
        let pod_spec = pod.spec.clone().unwrap_or_default();
        let init_specs = pod_spec.init_containers.clone().unwrap_or_default();
        let init = self.views(&r, &sandbox, &init_specs).await?;
        for (c, v) in init_specs.iter().zip(&init) {
            match (&v.current, v.exit_code()) {
                (Some(_), Some(0)) => continue,
                (None, _) => self.start(pod, &sandbox, &config, c, 0, true).await,
                (Some(cur), Some(_)) if restart_policy(pod) != "Never" => {
                    self.restart(pod, &sandbox, &config, c, cur.attempt + 1, true)
                        .await
                }
                _ => {}
            }
            break;
        }
        let init = self.views(&r, &sandbox, &init_specs).await?;
        let done = initialized(&Observed {
            init,
            ..Default::default()
        });
        if done {
            let views = self.views(&r, &sandbox, &pod_spec.containers).await?;
            for (c, v) in pod_spec.containers.iter().zip(&views) {
                self.sync_container(pod, &sandbox, &config, c, v).await?;
            }
            self.probe(pod, &sandbox, host_ip, &pod_spec.containers)
                .await?;
        }
        self.collect_garbage(&r, &sandbox).await?;
        self.observe(pod, &sandbox, host_ip).await
    }

    async fn sync_container(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        config: &cri::PodSandboxConfig,
        c: &Container,
        v: &View,
    ) -> Result<(), Error> {
        let Some(cur) = &v.current else {
            self.start(pod, sandbox, config, c, 0, false).await;
            return Ok(());
        };
        let changed = cur.hash != spec::container_hash(c);
        match (&cur.state, v.exit_code()) {
            (Run::Running { .. }, _) if changed => {
                eprintln!(
                    "kubelet: pod {}: container {} spec changed, replacing it",
                    PodRef::of(pod).key(),
                    c.name
                );
                self.event(
                    false,
                    "Killing",
                    format!("Container {} definition changed, will be restarted", c.name),
                );
                let grace = spec::grace_period(pod);
                let stopped = self.cri.stop_container(bare(&cur.id), grace).await;
                self.invalidate();
                stopped.map_err(Self::cri_err(&PodRef::of(pod)))?;
                self.backoff.remove(&c.name);
                self.start(pod, sandbox, config, c, cur.attempt + 1, false)
                    .await;
            }
            (Run::Running { started }, _) => {
                let now = k8s_openapi::jiff::Timestamp::now().as_nanosecond() as i64;
                if now - started > BACKOFF_RESET_NANOS {
                    self.backoff.remove(&c.name);
                }
            }
            (Run::Created, _) => {
                let started = self.cri.start_container(bare(&cur.id)).await;
                self.invalidate();
                if let Err(e) = started {
                    self.wait(&c.name, "RunContainerError", e.to_string());
                }
            }
            (Run::Exited { .. }, Some(code)) => {
                let restart = match restart_policy(pod) {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if restart {
                    self.restart(pod, sandbox, config, c, cur.attempt + 1, false)
                        .await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs the probes that are due. A startup probe runs alone until it succeeds once;
    /// liveness and readiness probes wait for it. A liveness or startup probe that failed
    /// failureThreshold times in a row stops its container, which the restart policy then
    /// restarts, as upstream.
    async fn probe(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        host_ip: &str,
        specs: &[Container],
    ) -> Result<(), Error> {
        let r = PodRef::of(pod);
        let ip = self.pod_ip(pod, sandbox, host_ip).await?;
        let views = self.views(&r, sandbox, specs).await?;
        for (c, v) in specs.iter().zip(&views) {
            let Some(Seen {
                id,
                state: Run::Running { started },
                ..
            }) = &v.current
            else {
                continue;
            };
            let starting = c.startup_probe.is_some()
                && !self
                    .probes
                    .get(&(id.clone(), "startup"))
                    .is_some_and(|t| t.ok);
            let kinds: &[(&'static str, &Option<Probe>)] = if starting {
                &[("startup", &c.startup_probe)]
            } else {
                &[
                    ("liveness", &c.liveness_probe),
                    ("readiness", &c.readiness_probe),
                ]
            };
            for &(kind, p) in kinds {
                let Some(p) = p else { continue };
                let key = (id.clone(), kind);
                let mut t = self.probes.get(&key).cloned().unwrap_or_default();
                if !t.due(p, *started) {
                    continue;
                }
                let outcome = probe::run(&mut self.cri, c, bare(id), &ip, p).await;
                if let Err(why) = &outcome {
                    let what = match kind {
                        "liveness" => "Liveness",
                        "startup" => "Startup",
                        _ => "Readiness",
                    };
                    self.event(true, "Unhealthy", format!("{what} probe failed: {why}"));
                }
                t.record(p, outcome);
                if kind != "readiness" && t.failed {
                    self.event(
                        false,
                        "Killing",
                        format!(
                            "Container {} failed {kind} probe, will be restarted",
                            c.name
                        ),
                    );
                    eprintln!(
                        "kubelet: pod {}: container {} failed {kind} probe ({}), will be restarted",
                        r.key(),
                        c.name,
                        t.message
                    );
                    let stopped = self
                        .cri
                        .stop_container(bare(id), spec::grace_period(pod))
                        .await;
                    self.invalidate();
                    stopped.map_err(Self::cri_err(&r))?;
                }
                self.probes.insert(key, t);
            }
        }
        let live: Vec<String> = views
            .iter()
            .filter_map(|v| v.current.as_ref().map(|s| s.id.clone()))
            .collect();
        self.probes.retain(|(id, _), _| live.contains(id));
        Ok(())
    }

    async fn pod_ip(&mut self, pod: &Pod, sandbox: &str, host_ip: &str) -> Result<String, Error> {
        if sandbox.is_empty() {
            return Ok(String::new());
        }
        if spec::host_network(pod) {
            return Ok(host_ip.to_string());
        }
        if let Some(ip) = self.ips.get(sandbox) {
            return Ok(ip.clone());
        }
        let ip = self
            .cri
            .pod_sandbox_status(sandbox)
            .await
            .map_err(Self::cri_err(&PodRef::of(pod)))?
            .network
            .unwrap_or_default()
            .ip;
        if !ip.is_empty() {
            self.ips.insert(sandbox.to_owned(), ip.clone());
        }
        Ok(ip)
    }

    fn wait(&mut self, name: &str, reason: &str, message: String) {
        self.waiting.insert(name.into(), (reason.into(), message));
    }

    fn event(&mut self, warning: bool, reason: &'static str, message: String) {
        self.events.push(Pending {
            warning,
            reason,
            message,
        });
    }

    /// The events of the last sync, for the worker to write.
    pub fn take_events(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.events)
    }

    /// Restarts an exited container unless it is backing off (CrashLoopBackOff).
    async fn restart(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        config: &cri::PodSandboxConfig,
        c: &Container,
        attempt: u32,
        init: bool,
    ) {
        let now = Instant::now();
        let prev = self.backoff.get(&c.name).copied();
        if let Some(mut b) = prev.filter(|b| now < b.until) {
            let r = PodRef::of(pod);
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                b.delay.as_secs(),
                c.name,
                r.name,
                r.namespace,
                r.uid
            );
            self.wait(&c.name, "CrashLoopBackOff", msg);
            if !b.reported {
                b.reported = true;
                self.backoff.insert(c.name.clone(), b);
                self.event(
                    true,
                    "BackOff",
                    "Back-off restarting failed container".into(),
                );
            }
            return;
        }
        let delay = prev.map_or(BACKOFF_START, |b| (b.delay * 2).min(BACKOFF_MAX));
        self.backoff.insert(
            c.name.clone(),
            Backoff {
                delay,
                until: now + delay,
                reported: false,
            },
        );
        self.start(pod, sandbox, config, c, attempt, init).await;
    }

    /// Image, CreateContainer, StartContainer; a failure becomes the container's waiting
    /// reason (upstream's ErrImagePull, CreateContainerError, RunContainerError).
    async fn start(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        config: &cri::PodSandboxConfig,
        c: &Container,
        attempt: u32,
        init: bool,
    ) {
        let r = PodRef::of(pod);
        let image = c.image.clone().unwrap_or_default();
        // No registry is reachable on a klab node: a local image is used whatever the pull
        // policy says; a missing one is pulled.
        match self.cri.image_status(&image).await {
            Ok(Some(_)) => self.event(
                false,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ),
            Ok(None) => {
                if let Err(e) = self.cri.pull_image(&image).await {
                    self.event(
                        true,
                        "Failed",
                        format!("Failed to pull image \"{image}\": {e}"),
                    );
                    self.wait(&c.name, "ErrImagePull", e.to_string());
                    return;
                }
                self.event(
                    false,
                    "Pulled",
                    format!("Successfully pulled image \"{image}\""),
                );
            }
            Err(e) => {
                self.wait(&c.name, "ErrImagePull", e.to_string());
                return;
            }
        }
        if let Err(e) = mkdir(&r.log_dir(&self.root).join(&c.name)) {
            self.wait(&c.name, "CreateContainerError", e.to_string());
            return;
        }
        let mut cfg = spec::container_config(pod, c, attempt, init);
        cfg.mounts = volumes::mounts(c, &self.volumes);
        match env::resolve(&self.client, pod, c, &self.pod_ip, &self.host_ip).await {
            Ok(envs) => cfg.envs = envs,
            Err(e) => {
                self.wait(&c.name, "CreateContainerConfigError", super::chain(&e));
                return;
            }
        }
        let created = self
            .cri
            .create_container(sandbox, cfg, config.clone())
            .await;
        self.invalidate();
        let id = match created {
            Ok(id) => id,
            Err(e) => {
                self.wait(&c.name, "CreateContainerError", e.to_string());
                return;
            }
        };
        self.event(false, "Created", format!("Created container: {}", c.name));
        let started = self.cri.start_container(&id).await;
        self.invalidate();
        match started {
            Ok(()) => {
                eprintln!(
                    "kubelet: pod {}: container {} started ({id}, attempt {attempt})",
                    r.key(),
                    c.name
                );
                self.event(false, "Started", format!("Started container {}", c.name));
            }
            Err(e) => self.wait(&c.name, "RunContainerError", e.to_string()),
        }
    }

    /// Keeps the newest two instances of each container (current and lastState); removes
    /// exited older ones and everything in sandboxes other than `keep`.
    async fn collect_garbage(&mut self, r: &PodRef, keep: &str) -> Result<(), Error> {
        let all = self.containers(r).await?;
        let mut count: HashMap<String, usize> = HashMap::new();
        for c in all {
            let name = c
                .labels
                .get(spec::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let n = count.entry(name).or_default();
            *n += 1;
            let exited = c.state == cri::ContainerState::ContainerExited as i32;
            if exited && (*n > 2 || c.pod_sandbox_id != keep) {
                let _ = self.cri.remove_container(&c.id).await;
                self.invalidate();
            }
        }
        Ok(())
    }

    /// Stops the sandbox's running containers at once, each after its preStop hook (from
    /// `pod`, when given), within `grace` seconds in all, then stops and removes the sandbox.
    async fn remove_sandbox(
        &mut self,
        r: &PodRef,
        id: &str,
        grace: i64,
        pod: Option<&Pod>,
    ) -> Result<(), Error> {
        let running: Vec<(String, String)> = self
            .containers(r)
            .await?
            .into_iter()
            .filter(|c| c.pod_sandbox_id == id)
            .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .map(|c| {
                let name = c.labels.get(spec::CONTAINER_NAME).cloned();
                (c.id, name.unwrap_or_default())
            })
            .collect();
        // Every container gets the whole grace period at once, as upstream kills in parallel.
        let mut stops = tokio::task::JoinSet::new();
        for (c, name) in running {
            let mut cri = self.cri.clone();
            let hook = pod.and_then(|p| pre_stop(p, &name));
            stops.spawn(async move {
                let start = Instant::now();
                if let Some(cmd) = hook {
                    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
                    let limit = Duration::from_secs(grace.max(1) as u64);
                    let _ = cri.exec_sync(&c, &cmd, limit).await;
                }
                let left = grace - start.elapsed().as_secs() as i64;
                cri.stop_container(&c, left.max(0)).await
            });
        }
        while let Some(done) = stops.join_next().await {
            if let Ok(Err(e)) = done {
                eprintln!("kubelet: pod {}: {e}", r.key());
            }
        }
        self.invalidate();
        self.ips.remove(id);
        let err = Self::cri_err(r);
        self.cri.stop_pod_sandbox(id).await.map_err(err)?;
        self.cri
            .remove_pod_sandbox(id)
            .await
            .map_err(Self::cri_err(r))
    }

    /// Stops every container of the pod within `grace` seconds (preStop hook, SIGTERM, then
    /// SIGKILL by the runtime), then its sandboxes, and removes its data folder.
    pub async fn kill(&mut self, pod: &Pod, grace: i64) -> Result<(), Error> {
        let r = PodRef::of(pod);
        self.invalidate();
        for s in self.sandboxes(&r).await? {
            self.remove_sandbox(&r, &s.id, grace, Some(pod)).await?;
        }
        let _ = std::fs::remove_dir_all(r.dir(&self.root));
        let _ = std::fs::remove_dir_all(r.log_dir(&self.root));
        Ok(())
    }

    async fn observe(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        host_ip: &str,
    ) -> Result<Observed, Error> {
        let r = PodRef::of(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let init = self
            .views(&r, sandbox, &spec.init_containers.unwrap_or_default())
            .await?;
        let containers = self.views(&r, sandbox, &spec.containers).await?;
        let pod_ip = self.pod_ip(pod, sandbox, host_ip).await?;
        Ok(Observed {
            init,
            containers,
            sandbox_ready: !sandbox.is_empty(),
            pod_ip,
            host_ip: host_ip.to_string(),
            simulated: false,
        })
    }
}

/// The exec command of container `name`'s preStop hook (the only hook handler klab runs).
fn pre_stop(pod: &Pod, name: &str) -> Option<Vec<String>> {
    let spec = pod.spec.as_ref()?;
    let c = spec.containers.iter().find(|c| c.name == name)?;
    c.lifecycle
        .as_ref()?
        .pre_stop
        .as_ref()?
        .exec
        .as_ref()?
        .command
        .clone()
}

/// Sandboxes whose pod the kubelet does not know: left by pods deleted while it was down.
pub async fn orphans(cri: &mut Cri, known: &[String], node: &str) -> Vec<(String, String)> {
    cri.list_pod_sandboxes()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.labels.get(spec::NODE).is_none_or(|n| n == node))
        .filter_map(|s| {
            let uid = s.labels.get(spec::POD_UID)?.clone();
            (!known.contains(&uid)).then_some((uid, s.id))
        })
        .collect()
}

/// Stops an orphaned sandbox's containers (with the grace period they were created with) and
/// removes it.
pub async fn remove_orphan(cri: &mut Cri, sandbox: &str) {
    let containers = cri.list_containers().await.unwrap_or_default();
    for c in containers.iter().filter(|c| c.pod_sandbox_id == sandbox) {
        if c.state == cri::ContainerState::ContainerRunning as i32 {
            let grace = c
                .annotations
                .get(spec::GRACE)
                .and_then(|g| g.parse().ok())
                .unwrap_or(30);
            let _ = cri.stop_container(&c.id, grace).await;
        }
    }
    let _ = cri.stop_pod_sandbox(sandbox).await;
    let _ = cri.remove_pod_sandbox(sandbox).await;
}
