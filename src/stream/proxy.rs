//! One proxy hop, upgraded or not: the API server to a kubelet, and the kubelet to the
//! container runtime's streaming server.
//!
//! Mirrors apimachinery's `util/proxy.UpgradeAwareHandler`: an ordinary request is sent and
//! its response streamed back as it arrives (`kubectl logs -f`); an upgrade request
//! (`Connection: Upgrade`, for WebSocket or SPDY) is sent, and when the backend answers
//! `101 Switching Protocols` the two connections are joined and copied byte for byte until
//! either side closes. The hop never reads the upgraded bytes, so it needs no knowledge of the
//! protocol inside. Leaves out HTTP/2 backends; a request body (`nodes/proxy` may carry one) is
//! read whole before it is sent on, not streamed.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::wrappers::ReceiverStream;

use super::Body;

/// What can fail on the hop, by step.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("HTTP handshake with {backend}")]
    Handshake {
        backend: String,
        #[source]
        source: hyper::Error,
    },
    #[error("building the request for {backend}{path}")]
    Build {
        backend: String,
        path: String,
        #[source]
        source: http::Error,
    },
    #[error("sending {path} to {backend}")]
    Send {
        backend: String,
        path: String,
        #[source]
        source: hyper::Error,
    },
}

/// Whether the request asks to switch protocols (`Connection: Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// The value of the `Upgrade` header, lowercased (`websocket`, `spdy/3.1`).
pub fn upgrade_to(headers: &HeaderMap) -> String {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Headers the hop does not pass on: the client's own credentials (the hop authenticates with
/// its own, as upstream's authentication filter strips them), the host, and body framing.
fn passed(name: &HeaderName) -> bool {
    !(name == header::HOST
        || name == header::AUTHORIZATION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name.as_str().starts_with("impersonate-"))
}

/// Sends one request (with `body`, empty for most) over `io` (already connected, TLS done)
/// to `backend` and returns the response to give the client. On `101`, a task joins the client's upgraded connection
/// (`client`) to the backend's and copies bytes both ways until either side closes.
pub async fn forward<IO>(
    io: IO,
    backend: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    client: Option<OnUpgrade>,
) -> Result<Response<Body>, ProxyError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|source| ProxyError::Handshake {
            backend: backend.to_owned(),
            source,
        })?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, backend);
    for (k, v) in headers {
        if passed(k) {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(Full::new(body))
        .map_err(|source| ProxyError::Build {
            backend: backend.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|source| ProxyError::Send {
            backend: backend.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(streamed));
    }
    let backend_side = hyper::upgrade::on(&mut resp);
    let (parts, _) = resp.into_parts();
    tokio::spawn(async move {
        let Some(client) = client else {
            return;
        };
        let (Ok(a), Ok(b)) = (client.await, backend_side.await) else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
    });
    Ok(Response::from_parts(parts, Empty::new().boxed()))
}

/// A backend's body as a [`Body`]: frames pass on as they arrive (a followed log is a body
/// that never ends); a failure ends the body, and so does the client going away, which drops
/// the backend's connection in turn.
pub fn streamed(body: hyper::body::Incoming) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let mut body = body;
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                () = tx.closed() => break,
            };
            let Some(Ok(frame)) = frame else {
                break;
            };
            if tx.send(Ok(frame)).await.is_err() {
                break;
            }
        }
    });
    StreamBody::new(ReceiverStream::new(rx)).boxed()
}
