//! RemoteCommand over WebSocket, the server's half: what `kubectl exec` and `kubectl attach`
//! (1.31 and later) speak first.
//!
//! Mirrors apimachinery's `util/httpstream/wsstream` and the kubelet's
//! `cri/streaming/remotecommand/websocket.go`, with the `v5.channel.k8s.io` close signal of
//! client-go's `remotecommand/websocket.go`. Every binary message starts with a channel byte:
//! 0 stdin, 1 stdout, 2 stderr, 3 error (a `Status` in JSON, written once at the end), 4 resize
//! (`{"Width":80,"Height":24}`), and in v5 255 close (`[255, 0]`: the client's stdin ended).
//! Leaves out the base64 protocols and the unversioned `channel.k8s.io`.

use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Body;
use super::proxy::upgrade_to;
use super::spdy::{Event, Session};

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";
/// The protocols klab serves, in its order of preference.
pub const PROTOCOLS: &[&str] = &[V5, V4];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// An upgraded WebSocket connection, server side.
pub type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// What kubectl asks for in the query of an exec or attach (`command=ls&command=-l&stdin=true`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    /// Parses the query; as upstream, `true` and `1` both mean on.
    pub fn from_query(query: &str) -> Options {
        let mut o = Options::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let on = v == "true" || v == "1";
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "container" => o.container = Some(v.into_owned()),
                "stdin" => o.stdin = on,
                "stdout" => o.stdout = on,
                "stderr" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        o
    }

    /// The query the next hop gets: the streams as `1`, as upstream's `streamParams` writes
    /// them, and each word of the command.
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for c in &self.command {
            q.append_pair("command", c);
        }
        for (k, on) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ] {
            if on {
                q.append_pair(k, "1");
            }
        }
        q.finish()
    }

    /// (stdin, stdout, stderr, tty), as the CRI calls take them.
    pub fn streams(&self) -> (bool, bool, bool, bool) {
        (self.stdin, self.stdout, self.stderr, self.tty)
    }
}

/// Whether the request asks for a WebSocket.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    upgrade_to(headers) == "websocket"
}

/// The subprotocol both sides speak: the first of the client's that klab serves.
pub fn negotiate(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| PROTOCOLS.iter().copied().find(|known| *known == p))
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade (RFC 6455's accept key), or
/// `None` when the request carries no key.
pub fn accept(headers: &HeaderMap, protocol: &str) -> Option<Response<Body>> {
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Empty::new().boxed())
        .ok()
}

/// The server's end of the WebSocket, once the 101 has gone out.
pub async fn open(upgrade: OnUpgrade) -> Option<Ws> {
    let io = upgrade.await.ok()?;
    Some(WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await)
}

/// One message on a channel.
pub fn message(channel: u8, data: &[u8]) -> Message {
    let mut b = Vec::with_capacity(data.len() + 1);
    b.push(channel);
    b.extend_from_slice(data);
    Message::Binary(b.into())
}

/// The error channel's Status for a session that failed on klab's side (the runtime's own
/// Status, `Success` or `NonZeroExitCode` with the exit code, is passed on as it came).
pub fn failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// Writes the readiness message upstream sends first (an empty message on the lowest
/// channel the client reads), so the client knows the streams are up.
pub async fn ready(ws: &mut Ws, o: &Options) -> bool {
    let ch = if o.stdout {
        STDOUT
    } else if o.stderr && !o.tty {
        STDERR
    } else {
        ERROR
    };
    ws.send(message(ch, &[])).await.is_ok()
}

/// Joins kubectl's WebSocket to the runtime's SPDY session, both speaking RemoteCommand:
/// stdin, resize and the v5 close signal go up; stdout, stderr and the error Status come down.
/// Ends when either side ends. This is the translation upstream's API server does in the
/// other direction (`StreamTranslatorHandler`); klab does it in the kubelet, next to the
/// runtime.
pub async fn translate(ws: Ws, mut up: Session) {
    let (mut tx, mut rx) = ws.split();
    let mut status_sent = false;
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    let data = &b[1..];
                    let sent = match b[0] {
                        STDIN => up.stdin(data, false).await,
                        RESIZE => up.resize(data).await,
                        CLOSE if data.first() == Some(&STDIN) => up.stdin(&[], true).await,
                        _ => Ok(()),
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            e = up.next() => match e {
                Some(Event::Data { stream, data }) => {
                    let Some(ch) = up.channel_of(stream) else { continue };
                    status_sent |= ch == ERROR && !data.is_empty();
                    if !data.is_empty() && tx.send(message(ch, &data)).await.is_err() {
                        break;
                    }
                }
                Some(Event::Ping(frame)) => {
                    if up.raw(&frame).await.is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
    }
    if !status_sent {
        // kubectl takes a session with no Status as success; say it was not.
        let status = failure(&format!(
            "the container runtime's stream ended without an exit status{}",
            up.ended().map(|why| format!(": {why}")).unwrap_or_default()
        ));
        let body = serde_json::to_vec(&status).unwrap_or_default();
        let _ = tx.send(message(ERROR, &body)).await;
    }
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let o = Options::from_query(
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=1&tty=false&container=c",
        );
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert_eq!(o.streams(), (true, true, false, false));
        assert_eq!(o.container.as_deref(), Some("c"));
        assert_eq!(
            o.to_query(),
            "command=sh&command=-c&command=echo+hi&stdin=1&stdout=1"
        );
    }

    #[test]
    fn picks_a_known_protocol_in_the_clients_order() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "base64.channel.k8s.io, v4.channel.k8s.io, v5.channel.k8s.io"
                .parse()
                .unwrap(),
        );
        assert_eq!(negotiate(&h), Some(V4));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "channel.k8s.io".parse().unwrap(),
        );
        assert_eq!(negotiate(&h), None);
    }
}
