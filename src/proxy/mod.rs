//! kube-proxy: watches Services and EndpointSlices through the API server and programs the
//! node's iptables so that Service IPs and NodePorts load-balance across ready endpoints.
//!
//! Mirrors upstream's `cmd/kube-proxy` and `pkg/proxy/iptables` in iptables mode only:
//! `rules` is the pure translation (snapshot-tested).

pub mod rules;
