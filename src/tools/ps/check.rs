//! `klab ps --check`: the security rules that can be judged from a command line, printed in
//! kube-bench's shape (`[PASS]`/`[WARN]`/`[FAIL]`, remediations, summaries).
//!
//! The sections and wording follow the CIS Kubernetes Benchmark as kube-bench prints it; the
//! numbering is klab's own, and klab adds rules of its own where the seed's story needs them
//! (the legacy insecure port, plain-HTTP etcd). A flag that is absent counts with upstream's
//! default, as the component itself would.

use std::io::Write;

use serde::Serialize;

use super::catalog::Component;
use super::{Error, Process};
use crate::cli::OutputFormat;
use crate::tools::output::write_structured;

/// What a rule asks of a flag's value in effect.
enum Test {
    /// The value equals this.
    Is(&'static str, &'static str),
    /// The value is anything but this (an unset flag with no default passes).
    IsNot(&'static str, &'static str),
    /// Each of these flags is given a non-empty value.
    Set(&'static [&'static str]),
    /// The flag is not given.
    Unset(&'static str),
    /// The comma-separated list includes this item.
    Includes(&'static str, &'static str),
    /// The comma-separated list does not include this item.
    Excludes(&'static str, &'static str),
    /// The address (host or host:port) is a loopback address.
    Loopback(&'static str),
    /// Every URL in the comma-separated list uses TLS (https) or a unix socket.
    AllTls(&'static str),
    /// The legacy insecure port is off (0 or unset), or at least bound to loopback.
    InsecurePortOff,
}

/// A failure of a scored rule is a FAIL; of a manual one, a WARN (as kube-bench does).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Weight {
    Scored,
    Manual,
}

struct Rule {
    id: &'static str,
    text: &'static str,
    test: Test,
    weight: Weight,
    remediation: &'static str,
}

/// A group of rules for one component, as a kube-bench section.
struct Section {
    id: &'static str,
    title: &'static str,
    components: &'static [&'static str],
    manifest: &'static str,
    rules: &'static [Rule],
}

/// kube-bench's top-level groups ("master", "etcd", "node").
struct Group {
    name: &'static str,
    id: &'static str,
    title: &'static str,
    sections: &'static [Section],
}

macro_rules! rule {
    ($id:literal, $w:ident, $text:literal, $test:expr, $fix:literal) => {
        Rule {
            id: $id,
            text: $text,
            test: $test,
            weight: Weight::$w,
            remediation: $fix,
        }
    };
}

use Test::*;

const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";

static GROUPS: &[Group] = &[
    Group {
        name: "master",
        id: "1",
        title: "Control Plane Security Configuration",
        sections: &[
            Section {
                id: "1.2",
                title: "API Server",
                components: &["kube-apiserver"],
                manifest: APISERVER_MANIFEST,
                rules: &[
                    rule!(
                        "1.2.1",
                        Scored,
                        "Ensure that the --anonymous-auth argument is set to false",
                        Is("anonymous-auth", "false"),
                        "set --anonymous-auth=false"
                    ),
                    rule!(
                        "1.2.2",
                        Scored,
                        "Ensure that the --token-auth-file parameter is not set",
                        Unset("token-auth-file"),
                        "remove --token-auth-file and use client certificates or service-account tokens"
                    ),
                    rule!(
                        "1.2.3",
                        Scored,
                        "Ensure that the --kubelet-client-certificate and --kubelet-client-key arguments are set as appropriate",
                        Set(&["kubelet-client-certificate", "kubelet-client-key"]),
                        "set --kubelet-client-certificate and --kubelet-client-key to the API server's kubelet client certificate and key"
                    ),
                    rule!(
                        "1.2.4",
                        Manual,
                        "Ensure that the --kubelet-certificate-authority argument is set as appropriate",
                        Set(&["kubelet-certificate-authority"]),
                        "set --kubelet-certificate-authority to the CA that signs the kubelets' serving certificates"
                    ),
                    rule!(
                        "1.2.5",
                        Scored,
                        "Ensure that the --authorization-mode argument is not set to AlwaysAllow",
                        Excludes("authorization-mode", "AlwaysAllow"),
                        "set --authorization-mode=Node,RBAC"
                    ),
                    rule!(
                        "1.2.6",
                        Scored,
                        "Ensure that the --authorization-mode argument includes Node",
                        Includes("authorization-mode", "Node"),
                        "set --authorization-mode=Node,RBAC"
                    ),
                    rule!(
                        "1.2.7",
                        Scored,
                        "Ensure that the --authorization-mode argument includes RBAC",
                        Includes("authorization-mode", "RBAC"),
                        "set --authorization-mode=Node,RBAC"
                    ),
                    rule!(
                        "1.2.8",
                        Scored,
                        "Ensure that the admission control plugin AlwaysAdmit is not set",
                        Excludes("enable-admission-plugins", "AlwaysAdmit"),
                        "remove AlwaysAdmit from --enable-admission-plugins"
                    ),
                    rule!(
                        "1.2.9",
                        Scored,
                        "Ensure that the admission control plugin NodeRestriction is set",
                        Includes("enable-admission-plugins", "NodeRestriction"),
                        "add NodeRestriction to --enable-admission-plugins"
                    ),
                    rule!(
                        "1.2.10",
                        Scored,
                        "Ensure that the --profiling argument is set to false",
                        Is("profiling", "false"),
                        "set --profiling=false"
                    ),
                    rule!(
                        "1.2.11",
                        Manual,
                        "Ensure that the --audit-log-path argument is set",
                        Set(&["audit-log-path"]),
                        "set --audit-log-path to a file, with an audit policy"
                    ),
                    rule!(
                        "1.2.12",
                        Scored,
                        "Ensure that the --service-account-lookup argument is set to true",
                        Is("service-account-lookup", "true"),
                        "set --service-account-lookup=true (or remove it: true is the default)"
                    ),
                    rule!(
                        "1.2.13",
                        Scored,
                        "Ensure that the --service-account-key-file argument is set as appropriate",
                        Set(&["service-account-key-file"]),
                        "set --service-account-key-file to the public key that verifies service-account tokens"
                    ),
                    rule!(
                        "1.2.14",
                        Scored,
                        "Ensure that the --etcd-certfile and --etcd-keyfile arguments are set as appropriate",
                        Set(&["etcd-certfile", "etcd-keyfile"]),
                        "set --etcd-certfile and --etcd-keyfile to the API server's etcd client certificate and key"
                    ),
                    rule!(
                        "1.2.15",
                        Scored,
                        "Ensure that the --tls-cert-file and --tls-private-key-file arguments are set as appropriate",
                        Set(&["tls-cert-file", "tls-private-key-file"]),
                        "set --tls-cert-file and --tls-private-key-file to the serving certificate and key"
                    ),
                    rule!(
                        "1.2.16",
                        Scored,
                        "Ensure that the --client-ca-file argument is set as appropriate",
                        Set(&["client-ca-file"]),
                        "set --client-ca-file to the cluster CA, so that client certificates authenticate"
                    ),
                    rule!(
                        "1.2.17",
                        Scored,
                        "Ensure that the --etcd-cafile argument is set as appropriate",
                        Set(&["etcd-cafile"]),
                        "set --etcd-cafile to the CA that signed etcd's serving certificate"
                    ),
                    rule!(
                        "1.2.18",
                        Manual,
                        "Ensure that the --encryption-provider-config argument is set as appropriate",
                        Set(&["encryption-provider-config"]),
                        "set --encryption-provider-config to encrypt Secrets at rest in etcd"
                    ),
                    rule!(
                        "1.2.19",
                        Scored,
                        "Ensure that the legacy --insecure-port is off, or bound to loopback only",
                        InsecurePortOff,
                        "remove --insecure-port (or set it to 0); if a lab needs it, keep --insecure-bind-address=127.0.0.1"
                    ),
                    rule!(
                        "1.2.20",
                        Scored,
                        "Ensure that the --etcd-servers are reached over TLS",
                        AllTls("etcd-servers"),
                        "use https:// URLs in --etcd-servers, with --etcd-cafile, --etcd-certfile and --etcd-keyfile"
                    ),
                ],
            },
            Section {
                id: "1.3",
                title: "Controller Manager",
                components: &["kube-controller-manager"],
                manifest: "/etc/kubernetes/manifests/kube-controller-manager.yaml",
                rules: &[
                    rule!(
                        "1.3.1",
                        Manual,
                        "Ensure that the --terminated-pod-gc-threshold argument is set as appropriate",
                        Set(&["terminated-pod-gc-threshold"]),
                        "set --terminated-pod-gc-threshold, for example --terminated-pod-gc-threshold=10"
                    ),
                    rule!(
                        "1.3.2",
                        Scored,
                        "Ensure that the --profiling argument is set to false",
                        Is("profiling", "false"),
                        "set --profiling=false"
                    ),
                    rule!(
                        "1.3.3",
                        Scored,
                        "Ensure that the --use-service-account-credentials argument is set to true",
                        Is("use-service-account-credentials", "true"),
                        "set --use-service-account-credentials=true"
                    ),
                    rule!(
                        "1.3.4",
                        Scored,
                        "Ensure that the --service-account-private-key-file argument is set as appropriate",
                        Set(&["service-account-private-key-file"]),
                        "set --service-account-private-key-file to the key that signs service-account tokens"
                    ),
                    rule!(
                        "1.3.5",
                        Scored,
                        "Ensure that the --root-ca-file argument is set as appropriate",
                        Set(&["root-ca-file"]),
                        "set --root-ca-file to the cluster CA"
                    ),
                    rule!(
                        "1.3.6",
                        Scored,
                        "Ensure that the --bind-address argument is set to 127.0.0.1",
                        Loopback("bind-address"),
                        "set --bind-address=127.0.0.1"
                    ),
                ],
            },
            Section {
                id: "1.4",
                title: "Scheduler",
                components: &["kube-scheduler"],
                manifest: "/etc/kubernetes/manifests/kube-scheduler.yaml",
                rules: &[
                    rule!(
                        "1.4.1",
                        Scored,
                        "Ensure that the --profiling argument is set to false",
                        Is("profiling", "false"),
                        "set --profiling=false"
                    ),
                    rule!(
                        "1.4.2",
                        Scored,
                        "Ensure that the --bind-address argument is set to 127.0.0.1",
                        Loopback("bind-address"),
                        "set --bind-address=127.0.0.1"
                    ),
                ],
            },
        ],
    },
    Group {
        name: "etcd",
        id: "2",
        title: "Etcd Node Configuration",
        sections: &[Section {
            id: "2",
            title: "Etcd Node Configuration Files",
            components: &["etcd", "klab-store"],
            manifest: "/etc/kubernetes/manifests/etcd.yaml",
            rules: &[
                rule!(
                    "2.1",
                    Scored,
                    "Ensure that the --cert-file and --key-file arguments are set as appropriate",
                    Set(&["cert-file", "key-file"]),
                    "set --cert-file and --key-file to the store's serving certificate and key"
                ),
                rule!(
                    "2.2",
                    Scored,
                    "Ensure that the --client-cert-auth argument is set to true",
                    Is("client-cert-auth", "true"),
                    "set --client-cert-auth=true with --trusted-ca-file"
                ),
                rule!(
                    "2.3",
                    Scored,
                    "Ensure that the --auto-tls argument is not set to true",
                    IsNot("auto-tls", "true"),
                    "remove --auto-tls or set it to false"
                ),
                rule!(
                    "2.4",
                    Scored,
                    "Ensure that the --listen-client-urls use TLS",
                    AllTls("listen-client-urls"),
                    "use https:// URLs in --listen-client-urls"
                ),
                rule!(
                    "2.5",
                    Scored,
                    "Ensure that the --peer-auto-tls argument is not set to true",
                    IsNot("peer-auto-tls", "true"),
                    "remove --peer-auto-tls or set it to false"
                ),
            ],
        }],
    },
    Group {
        name: "node",
        id: "4",
        title: "Worker Node Security Configuration",
        sections: &[
            Section {
                id: "4.2",
                title: "Kubelet",
                components: &["kubelet"],
                manifest: "/var/lib/kubelet/config.yaml",
                rules: &[
                    rule!(
                        "4.2.1",
                        Scored,
                        "Ensure that the --anonymous-auth argument is set to false",
                        Is("anonymous-auth", "false"),
                        "set authentication.anonymous.enabled: false in the kubelet config (or --anonymous-auth=false)"
                    ),
                    rule!(
                        "4.2.2",
                        Scored,
                        "Ensure that the --authorization-mode argument is not set to AlwaysAllow",
                        IsNot("authorization-mode", "AlwaysAllow"),
                        "set authorization.mode: Webhook in the kubelet config (or --authorization-mode=Webhook)"
                    ),
                    rule!(
                        "4.2.3",
                        Scored,
                        "Ensure that the --client-ca-file argument is set as appropriate",
                        Set(&["client-ca-file"]),
                        "set authentication.x509.clientCAFile in the kubelet config (or --client-ca-file)"
                    ),
                    rule!(
                        "4.2.4",
                        Scored,
                        "Ensure that the --read-only-port argument is set to 0",
                        Is("read-only-port", "0"),
                        "set readOnlyPort: 0 in the kubelet config (or --read-only-port=0)"
                    ),
                    rule!(
                        "4.2.5",
                        Scored,
                        "Ensure that the --streaming-connection-idle-timeout argument is not set to 0",
                        IsNot("streaming-connection-idle-timeout", "0"),
                        "remove --streaming-connection-idle-timeout=0"
                    ),
                    rule!(
                        "4.2.6",
                        Scored,
                        "Ensure that the --make-iptables-util-chains argument is set to true",
                        Is("make-iptables-util-chains", "true"),
                        "set --make-iptables-util-chains=true (the default)"
                    ),
                    rule!(
                        "4.2.7",
                        Manual,
                        "Ensure that the --rotate-certificates argument is not set to false",
                        IsNot("rotate-certificates", "false"),
                        "set rotateCertificates: true in the kubelet config"
                    ),
                ],
            },
            Section {
                id: "4.3",
                title: "kube-proxy",
                components: &["kube-proxy"],
                manifest: "the kube-proxy DaemonSet (kubectl -n kube-system edit ds kube-proxy)",
                rules: &[rule!(
                    "4.3.1",
                    Manual,
                    "Ensure that the kube-proxy metrics service is bound to localhost",
                    Loopback("metrics-bind-address"),
                    "set --metrics-bind-address=127.0.0.1:10249"
                )],
            },
        ],
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Warn,
    Info,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub text: String,
    pub status: Status,
    pub component: &'static str,
    pub pid: u32,
    /// What was found on the command line.
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
    pub info: usize,
}

impl Totals {
    fn add(&mut self, s: Status) {
        match s {
            Status::Pass => self.pass += 1,
            Status::Fail => self.fail += 1,
            Status::Warn => self.warn += 1,
            Status::Info => self.info += 1,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub name: &'static str,
    pub id: &'static str,
    pub title: &'static str,
    /// Sections whose component is not running, so nothing was judged.
    pub not_running: Vec<String>,
    pub findings: Vec<Finding>,
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub groups: Vec<GroupReport>,
    pub totals: Totals,
}

fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(
        addr,
        |(h, p)| if p.parse::<u16>().is_ok() { h } else { addr },
    );
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Judges one rule on one process: pass or not, and the evidence.
fn judge(rule: &Rule, p: &Process) -> (bool, String) {
    let list = |v: Option<&str>| -> Vec<String> {
        v.unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    match &rule.test {
        Is(flag, want) => {
            let e = p.effective(flag);
            (e.value() == Some(want), e.describe(flag))
        }
        IsNot(flag, bad) => {
            let e = p.effective(flag);
            (e.value() != Some(bad), e.describe(flag))
        }
        Set(flags) => {
            let found: Vec<String> = flags.iter().map(|f| p.effective(f).describe(f)).collect();
            let ok = flags.iter().all(|f| {
                p.flags()
                    .iter()
                    .any(|g| g.name == *f && g.value.as_deref().is_some_and(|v| !v.is_empty()))
            });
            (ok, found.join(", "))
        }
        Unset(flag) => {
            let e = p.effective(flag);
            (!matches!(e, super::Effective::Given(_)), e.describe(flag))
        }
        Includes(flag, item) => {
            let e = p.effective(flag);
            (list(e.value()).iter().any(|i| i == item), e.describe(flag))
        }
        Excludes(flag, item) => {
            let e = p.effective(flag);
            (!list(e.value()).iter().any(|i| i == item), e.describe(flag))
        }
        Loopback(flag) => {
            let e = p.effective(flag);
            (e.value().is_some_and(is_loopback), e.describe(flag))
        }
        AllTls(flag) => {
            let e = p.effective(flag);
            let urls = list(e.value());
            let ok = !urls.is_empty()
                && urls.iter().all(|u| {
                    u.starts_with("https://") || u.starts_with("unix:") || u.starts_with("unixs:")
                });
            (ok, e.describe(flag))
        }
        InsecurePortOff => {
            // klab's own API server keeps the port off unless asked; upstream removed it in 1.24.
            let port = p
                .flags()
                .into_iter()
                .rev()
                .find(|f| f.name == "insecure-port")
                .and_then(|f| f.value);
            let bind = p.effective("insecure-bind-address");
            let evidence = match &port {
                Some(v) => format!(
                    "--insecure-port={v}, {}",
                    bind.describe("insecure-bind-address")
                ),
                None => "--insecure-port not set (off)".into(),
            };
            let off = port.as_deref().is_none_or(|v| v == "0");
            (off, evidence)
        }
    }
}

fn status_for(
    rule: &Rule,
    pass: bool,
    p: &Process,
    c: &Component,
    evidence: &mut String,
) -> Status {
    if pass {
        return Status::Pass;
    }
    if let InsecurePortOff = rule.test
        && p.effective("insecure-bind-address")
            .value()
            .is_some_and(is_loopback)
    {
        evidence.push_str(
            ": open on loopback only, but anyone on the node is cluster-admin through it",
        );
        return Status::Warn;
    }
    // A flag absent from the command line may be set in the component's config file instead.
    let absent = !evidence.contains('=');
    if absent
        && let Some(cf) = c.config_flag
        && let Some(file) = p
            .flags()
            .iter()
            .find(|f| f.name == cf)
            .and_then(|f| f.value.clone())
    {
        evidence.push_str(&format!(
            "; it may be set in the config file {file} (--{cf}), which klab ps does not read"
        ));
        return Status::Warn;
    }
    match rule.weight {
        Weight::Scored => Status::Fail,
        Weight::Manual => Status::Warn,
    }
}

/// Runs every rule against every running component it applies to.
pub fn report(procs: &[Process]) -> Report {
    let mut totals = Totals::default();
    let groups = GROUPS
        .iter()
        .map(|g| {
            let mut gr = GroupReport {
                name: g.name,
                id: g.id,
                title: g.title,
                not_running: Vec::new(),
                findings: Vec::new(),
                totals: Totals::default(),
            };
            for s in g.sections {
                let running: Vec<(&Process, &Component)> = procs
                    .iter()
                    .filter_map(|p| {
                        p.component()
                            .filter(|c| s.components.contains(&c.name))
                            .map(|c| (p, c))
                    })
                    .collect();
                if running.is_empty() {
                    gr.not_running.push(format!("{} {}", s.id, s.title));
                    continue;
                }
                for rule in s.rules {
                    for (p, c) in &running {
                        let (pass, mut evidence) = judge(rule, p);
                        let status = status_for(rule, pass, p, c, &mut evidence);
                        gr.totals.add(status);
                        totals.add(status);
                        let where_ = if s.manifest.starts_with('/') {
                            format!("Edit {} and ", s.manifest)
                        } else {
                            format!("In {}, ", s.manifest)
                        };
                        gr.findings.push(Finding {
                            id: rule.id,
                            text: format!(
                                "{} ({})",
                                rule.text,
                                if rule.weight == Weight::Scored {
                                    "Automated"
                                } else {
                                    "Manual"
                                }
                            ),
                            status,
                            component: c.name,
                            pid: p.pid,
                            evidence,
                            remediation: (status != Status::Pass)
                                .then(|| format!("{where_}{}.", rule.remediation)),
                        });
                    }
                }
            }
            gr
        })
        .collect();
    Report { groups, totals }
}

fn label(s: Status) -> &'static str {
    match s {
        Status::Pass => "[PASS]",
        Status::Fail => "[FAIL]",
        Status::Warn => "[WARN]",
        Status::Info => "[INFO]",
    }
}

fn write_totals(out: &mut dyn Write, title: &str, t: &Totals) -> std::io::Result<()> {
    writeln!(out, "== Summary {title} ==")?;
    writeln!(
        out,
        "{} checks PASS\n{} checks FAIL\n{} checks WARN\n{} checks INFO\n",
        t.pass, t.fail, t.warn, t.info
    )
}

pub fn check(
    procs: &[Process],
    format: Option<OutputFormat>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let report = report(procs);
    if let Some(f) = format {
        write_structured(out, f, &report)?;
        return Ok(());
    }
    let several = |component: &str| {
        procs
            .iter()
            .filter(|p| p.component().is_some_and(|c| c.name == component))
            .count()
            > 1
    };
    for (g, gr) in GROUPS.iter().zip(&report.groups) {
        writeln!(out, "[INFO] {} {}", g.id, g.title)?;
        for s in g.sections {
            let prefix = format!("{}.", s.id);
            let findings: Vec<&Finding> = gr
                .findings
                .iter()
                .filter(|f| f.id.starts_with(&prefix) || (s.id == "2" && f.id.starts_with("2.")))
                .collect();
            if findings.is_empty() {
                writeln!(
                    out,
                    "[INFO] {} {} (not running here: not checked)",
                    s.id, s.title
                )?;
                continue;
            }
            writeln!(out, "[INFO] {} {}", s.id, s.title)?;
            for f in findings {
                let who = if several(f.component) {
                    format!(" [{} pid {}]", f.component, f.pid)
                } else {
                    String::new()
                };
                writeln!(out, "{} {} {}{who}", label(f.status), f.id, f.text)?;
            }
        }
        writeln!(out, "\n== Remediations {} ==", g.name)?;
        for f in gr.findings.iter().filter(|f| f.status != Status::Pass) {
            writeln!(
                out,
                "{} Found: {}.\n{}\n",
                f.id,
                f.evidence,
                f.remediation.as_deref().unwrap_or("")
            )?;
        }
        writeln!(out)?;
        write_totals(out, g.name, &gr.totals)?;
    }
    write_totals(out, "total", &report.totals)?;
    Ok(())
}
