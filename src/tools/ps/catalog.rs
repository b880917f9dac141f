//! What klab knows about cluster processes: each component's names, role and documented flags.
//!
//! Mirrors the upstream components' `--help` (kube-apiserver, etcd, kube-controller-manager,
//! kube-scheduler, kubelet, kube-proxy, containerd and its shim, CoreDNS, …) in a learner's
//! words. Defaults are upstream's defaults, used by `klab ps --check` when a flag is absent.

/// Where a process sits in the cluster, as the seed's football team is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plane {
    /// The five control-plane components of the seed (the coach's staff).
    ControlPlane,
    /// The node agents: kubelet and kube-proxy (the players' own staff).
    Node,
    /// The container runtime and what it starts: containerd, shims, pause.
    Runtime,
    /// Cluster add-ons that run as pods: CoreDNS, CNI daemons, provisioners.
    Addon,
}

/// A component `klab ps` recognises.
#[derive(Debug)]
pub struct Component {
    /// Canonical upstream name, as `ps -C` would match it: `kube-apiserver`, `etcd`, `pause`.
    pub name: &'static str,
    /// Other names the same component runs under: klab subcommands (`apiserver`) and
    /// binary names of look-alikes (`klab-store` is not an alias of `etcd`; it has its own entry).
    pub aliases: &'static [&'static str],
    pub plane: Plane,
    /// One line: the component's role, in the seed's words where it has some.
    pub role: &'static str,
    /// The flag whose file holds further settings (`config` for the kubelet), if any.
    pub config_flag: Option<&'static str>,
    pub flags: &'static [Flag],
}

/// One documented flag of a component.
#[derive(Debug)]
pub struct Flag {
    /// Without dashes: `anonymous-auth`.
    pub name: &'static str,
    /// Takes no value (`--leader-elect` alone means true).
    pub boolean: bool,
    /// Upstream's default when the flag is absent, as `--help` prints it; `None` if it has none.
    pub default: Option<&'static str>,
    /// What it means, one or two sentences for a learner.
    pub meaning: &'static str,
    /// Why it matters for security, when it does.
    pub security: Option<&'static str>,
}
