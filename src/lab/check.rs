//! Running a lab's checks (klab's own): the built-in assertions read the API through kube-rs
//! and the cluster folder's files; a shell check is a command that must exit 0. Every outcome
//! is a sentence a learner can act on.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use time::OffsetDateTime;

use super::cluster::Cluster;
use super::spec::{Check, ObjectRef};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// What is true (passed) or what is still wrong (failed), in plain words.
    pub message: String,
}

fn pass(message: impl Into<String>) -> Outcome {
    Outcome {
        passed: true,
        message: message.into(),
    }
}

fn fail(message: impl Into<String>) -> Outcome {
    Outcome {
        passed: false,
        message: message.into(),
    }
}

/// Runs checks against one cluster, building the API client once, when a check needs it.
pub struct Checker<'a> {
    cluster: &'a Cluster,
    lab: String,
    rt: tokio::runtime::Runtime,
    client: Option<Result<kube::Client, String>>,
    now: OffsetDateTime,
}

const API_TIMEOUT: Duration = Duration::from_secs(10);

impl<'a> Checker<'a> {
    pub fn new(cluster: &'a Cluster, lab: &str, now: OffsetDateTime) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Checker {
            cluster,
            lab: lab.to_owned(),
            rt,
            client: None,
            now,
        })
    }

    fn client(&mut self) -> Result<kube::Client, String> {
        if self.client.is_none() {
            let kc = self.cluster.kubeconfig();
            let made = self
                .rt
                .block_on(crate::client::from_kubeconfig(&kc))
                .map_err(|e| {
                    let mut s = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(c) = src {
                        s.push_str(&format!(": {c}"));
                        src = c.source();
                    }
                    s
                });
            self.client = Some(made);
        }
        self.client
            .clone()
            .unwrap_or_else(|| Err("no client".into()))
    }

    /// Runs `f` against the API with a timeout; an unreachable API server becomes a failure
    /// that says so.
    fn api<T>(
        &mut self,
        f: impl AsyncFnOnce(kube::Client) -> Result<T, kube::Error>,
    ) -> Result<T, Outcome> {
        let client = self
            .client()
            .map_err(|e| fail(format!("cannot build an API client: {e}")))?;
        match self
            .rt
            // The timer must be made inside the runtime.
            .block_on(async move { tokio::time::timeout(API_TIMEOUT, f(client)).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(fail(api_problem(&e))),
            Err(_) => Err(fail(format!(
                "the API server did not answer within {} s: is kube-apiserver running? (`klab ps`, `kubectl get --raw /readyz`)",
                API_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Runs one check.
    pub fn run(&mut self, check: &Check, explain: Option<&str>) -> Outcome {
        let mut outcome = self.run_inner(check);
        if !outcome.passed
            && let Some(words) = explain
        {
            outcome.message = format!(
                "{} ({})",
                self.cluster.expand(words.trim()),
                outcome.message
            );
        }
        outcome
    }

    fn run_inner(&mut self, check: &Check) -> Outcome {
        match check {
            Check::Pod {
                pod,
                phase,
                restarts,
            } => self.pod(pod, phase, *restarts),
            Check::Node {
                node,
                ready,
                unschedulable,
                untainted,
            } => self.node(
                &self.cluster.expand(node),
                *ready,
                *unschedulable,
                untainted.as_deref(),
            ),
            Check::Deployment {
                deployment,
                available,
            } => self.deployment(deployment, *available),
            Check::Service { service, endpoints } => self.service(service, *endpoints),
            Check::File {
                file,
                chains_to,
                unexpired,
            } => self.file(file, chains_to.as_deref(), *unexpired),
            Check::Manifest {
                component,
                contains,
                lacks,
            } => self.manifest(component, contains.as_deref(), lacks.as_deref()),
            Check::ApiReady => self.api_ready(),
            Check::Shell { command } => self.shell(command),
        }
    }

    fn pod(&mut self, r: &ObjectRef, phase: &str, restarts: Option<i32>) -> Outcome {
        let (ns, name) = (r.namespace.clone(), r.name.clone());
        let pod = match self.api(async move |c| Api::<Pod>::namespaced(c, &ns).get_opt(&name).await)
        {
            Ok(Some(p)) => p,
            Ok(None) => return fail(format!("pod {r} does not exist")),
            Err(o) => return o,
        };
        let status = pod.status.clone().unwrap_or_default();
        let actual = status.phase.clone().unwrap_or_else(|| "Pending".into());
        if actual != phase {
            let mut why = String::new();
            if pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_none()
            {
                let reason = status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                    .and_then(|c| c.message.clone());
                why = match reason {
                    Some(m) => format!(": not scheduled: {m}"),
                    None => ": no node was assigned to it yet (is kube-scheduler running?)".into(),
                };
            }
            return fail(format!("pod {r} is {actual}, not {phase}{why}"));
        }
        if let Some(min) = restarts {
            let n: i32 = status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| c.restart_count)
                .sum();
            if n < min {
                return fail(format!(
                    "pod {r} has restarted {n} times; expected at least {min}"
                ));
            }
            return pass(format!("pod {r} is {phase} and restarted {n} times"));
        }
        pass(format!("pod {r} is {phase}"))
    }

    fn node(
        &mut self,
        name: &str,
        ready: Option<bool>,
        unschedulable: Option<bool>,
        untainted: Option<&str>,
    ) -> Outcome {
        let n = name.to_owned();
        let node = match self.api(async move |c| Api::<Node>::all(c).get_opt(&n).await) {
            Ok(Some(n)) => n,
            Ok(None) => return fail(format!("node {name} does not exist")),
            Err(o) => return o,
        };
        let mut said = vec![];
        if let Some(want) = ready {
            let cond = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
            let is = cond.is_some_and(|c| c.status == "True");
            let word = |b: bool| if b { "Ready" } else { "NotReady" };
            if is != want {
                let detail = cond
                    .and_then(|c| c.message.clone().or(c.reason.clone()))
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                return fail(format!(
                    "node {name} is {}, not {}{detail}",
                    word(is),
                    word(want)
                ));
            }
            said.push(word(is).to_owned());
        }
        if let Some(want) = unschedulable {
            let is = node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            if is != want {
                return fail(if is {
                    format!("node {name} is cordoned (SchedulingDisabled)")
                } else {
                    format!("node {name} is not cordoned")
                });
            }
            said.push(if is { "cordoned" } else { "schedulable" }.to_owned());
        }
        if let Some(key) = untainted {
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if let Some(t) = taints.iter().find(|t| t.key == key) {
                return fail(format!(
                    "node {name} still has the taint {}:{}",
                    t.key, t.effect
                ));
            }
            said.push(format!("without the taint {key}"));
        }
        pass(format!("node {name} is {}", said.join(", ")))
    }

    fn deployment(&mut self, r: &ObjectRef, available: Option<i32>) -> Outcome {
        let (ns, name) = (r.namespace.clone(), r.name.clone());
        let d = match self
            .api(async move |c| Api::<Deployment>::namespaced(c, &ns).get_opt(&name).await)
        {
            Ok(Some(d)) => d,
            Ok(None) => return fail(format!("deployment {r} does not exist")),
            Err(o) => return o,
        };
        let want = available
            .or_else(|| d.spec.as_ref().and_then(|s| s.replicas))
            .unwrap_or(1);
        let have = d
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        if have < want {
            return fail(format!(
                "deployment {r} has {have} of {want} replicas available"
            ));
        }
        pass(format!("deployment {r} has {have} replicas available"))
    }

    fn service(&mut self, r: &ObjectRef, endpoints: bool) -> Outcome {
        let (ns, name) = (r.namespace.clone(), r.name.clone());
        let found = self.api(async move |c| {
            let svc = Api::<Service>::namespaced(c.clone(), &ns)
                .get_opt(&name)
                .await?;
            let slices = Api::<EndpointSlice>::namespaced(c.clone(), &ns)
                .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
                .await?;
            let selector = svc
                .as_ref()
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let matching = if selector.is_empty() {
                None
            } else {
                let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let pods = Api::<Pod>::namespaced(c, &ns)
                    .list(&ListParams::default().labels(&sel.join(",")))
                    .await?;
                Some((sel.join(","), pods.items.len()))
            };
            Ok((svc, slices.items, matching))
        });
        let (svc, slices, matching) = match found {
            Ok(f) => f,
            Err(o) => return o,
        };
        if svc.is_none() {
            return fail(format!("service {r} does not exist"));
        }
        let ready = slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .count();
        match (endpoints, ready) {
            (true, 0) => {
                let why = match matching {
                    Some((sel, 0)) => format!(": its selector {sel} matches no pod"),
                    Some((sel, n)) => {
                        format!(": its selector {sel} matches {n} pod(s), none of them ready")
                    }
                    None => ": it has no selector".into(),
                };
                fail(format!("service {r} has no ready endpoints{why}"))
            }
            (true, n) => pass(format!("service {r} has {n} ready endpoint(s)")),
            (false, 0) => pass(format!("service {r} has no ready endpoints")),
            (false, n) => fail(format!("service {r} still has {n} ready endpoint(s)")),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        let f = self.cluster.expand(file);
        let p = PathBuf::from(&f);
        if p.is_absolute() {
            p
        } else {
            self.cluster.work_dir(&self.lab).join(p)
        }
    }

    fn file(&mut self, file: &str, chains_to: Option<&str>, unexpired: bool) -> Outcome {
        let path = self.path(file);
        let read = |p: &PathBuf, what: &str| -> Result<crate::pki::Certificate, String> {
            let bytes = std::fs::read(p).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("{what} does not exist"),
                _ => format!("{what} cannot be read: {e}"),
            })?;
            let certs = crate::pki::parse_certs(what, &bytes).map_err(|e| e.to_string())?;
            certs
                .into_iter()
                .next()
                .ok_or_else(|| format!("{what} holds no certificate"))
        };
        let cert = match read(&path, file) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let mut said = vec![];
        if let Some(ca) = chains_to {
            let (ca_path, ca_name) = if ca == "cluster-ca" {
                (
                    self.cluster.pki().join("ca.crt"),
                    "the cluster CA".to_owned(),
                )
            } else {
                (self.path(ca), ca.to_owned())
            };
            let issuer = match read(&ca_path, &ca_name) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if !(cert.signed_by(&issuer) || cert.der == issuer.der) {
                return fail(format!(
                    "{file} ({}) is not signed by {ca_name} ({})",
                    cert.subject, issuer.subject
                ));
            }
            said.push(format!("chains to {ca_name}"));
        }
        if unexpired {
            if !cert.valid_at(self.now) {
                let when = if cert.not_after < self.now {
                    "expired"
                } else {
                    "is not valid yet:"
                };
                let date = cert
                    .not_after
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                return fail(format!("{file} ({}) {when} {date}", cert.subject));
            }
            said.push("is valid now".into());
        }
        pass(format!("{file} {}", said.join(" and ")))
    }

    fn manifest(
        &mut self,
        component: &str,
        contains: Option<&str>,
        lacks: Option<&str>,
    ) -> Outcome {
        let path = self.cluster.manifest(component);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(_) => {
                return fail(format!(
                    "{component}.yaml is not in {}: the kubelet is not running {component}",
                    self.cluster.manifests().display()
                ));
            }
        };
        if let Some(want) = contains.map(|s| self.cluster.expand(s))
            && !text.contains(&want)
        {
            return fail(format!("{component}.yaml does not contain `{want}`"));
        }
        if let Some(bad) = lacks.map(|s| self.cluster.expand(s))
            && text.contains(&bad)
        {
            return fail(format!("{component}.yaml still contains `{bad}`"));
        }
        pass(format!("{component}.yaml is as it should be"))
    }

    fn api_ready(&mut self) -> Outcome {
        let got = self.api(async move |c| {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(kube::Error::HttpError)?;
            c.request_text(req).await
        });
        match got {
            Ok(_) => pass("the API server is ready"),
            Err(o) => o,
        }
    }

    fn shell(&mut self, command: &str) -> Outcome {
        match self
            .cluster
            .shell(&self.lab, command, Duration::from_secs(60))
        {
            Ok(out) if out.success() => pass(format!("`{}` succeeded", first_line(command))),
            Ok(out) => {
                let tail = out.tail(2);
                fail(if tail.is_empty() {
                    format!("`{}` failed", first_line(command))
                } else {
                    format!(
                        "`{}` failed: {}",
                        first_line(command),
                        tail.replace('\n', " / ")
                    )
                })
            }
            Err(e) => fail(format!("could not run sh: {e}")),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or_default()
}

/// An API error in plain words, with what to look at next.
fn api_problem(e: &kube::Error) -> String {
    let text = {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    };
    let lower = text.to_lowercase();
    if lower.contains("connection refused") || lower.contains("connect error") {
        "cannot reach the API server (connection refused): is kube-apiserver running? See `klab ps` and the static pod manifests".into()
    } else if let kube::Error::Api(s) = e {
        format!("the API server said {} {}: {}", s.code, s.reason, s.message)
    } else {
        format!("asking the API server failed: {text}")
    }
}
