//! The streaming protocols behind `kubectl logs -f`, `exec`, `attach` and `port-forward`,
//! shared by the API server and the kubelet.
//!
//! Mirrors apimachinery's `util/proxy` (the upgrade-aware proxy hop), `util/httpstream/wsstream`
//! and client-go's `tools/remotecommand` (the channel protocol over WebSocket), and the
//! client half of `util/httpstream/spdy` (SPDY/3.1, to talk to the container runtime's
//! streaming server). Leaves out the SPDY server side, port-forward over WebSocket and the
//! base64 WebSocket protocols.
//!
//! - [`proxy`]: one hop of a request, upgraded or not, to a backend, byte for byte.
//! - [`remotecommand`]: the WebSocket side, `v5.channel.k8s.io` and `v4.channel.k8s.io`.
//! - [`spdy`]: a SPDY/3.1 client for the runtime's `v4.channel.k8s.io` streams.

pub mod proxy;
pub mod remotecommand;
pub mod spdy;

use std::convert::Infallible;

use bytes::Bytes;

/// A response body that never fails: a stream that breaks just ends.
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
