//! The HTTP half of a probe: requests over the verified TLS connection, each recorded with its
//! headers, status, body and time, so `-v 6` and `-v 8` can show them as kubectl does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::Error;
use super::tls::Connected;

/// One request and its answer.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    #[serde(skip)]
    pub request_headers: Vec<(String, String)>,
    pub status: u16,
    pub reason: String,
    #[serde(skip)]
    pub response_headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    #[serde(rename = "milliseconds")]
    pub elapsed_ms: u128,
}

impl Exchange {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub struct Http {
    sender: SendRequest<Full<Bytes>>,
    base: String,
    host: String,
    /// Why the connection ended, if it did: in TLS 1.3 a server refuses a client certificate
    /// only after the handshake, so the alert surfaces here, not in the request.
    closed: Arc<Mutex<Option<String>>>,
}

pub const USER_AGENT: &str = concat!("klab/", env!("CARGO_PKG_VERSION"), " (probe)");

impl Http {
    pub async fn new(conn: Connected, base: &str, host: &str) -> Result<Http, Error> {
        let (sender, connection) = http1::handshake(TokioIo::new(conn.stream))
            .await
            .map_err(Error::Http)?;
        let closed = Arc::new(Mutex::new(None));
        let record = closed.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                *record.lock().unwrap_or_else(|p| p.into_inner()) = Some(super::error_chain(&e));
            }
        });
        Ok(Http {
            sender,
            base: base.trim_end_matches('/').into(),
            host: host.into(),
            closed,
        })
    }

    /// The connection's own error, given a moment to arrive after a failed request.
    async fn why_closed(&self) -> Option<String> {
        for _ in 0..20 {
            if let Some(why) = self
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Some(why);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<Exchange, Error> {
        let url = format!("{}{path}", self.base);
        let mut headers = vec![
            ("Accept".to_string(), "application/json, */*".to_string()),
            ("User-Agent".to_string(), USER_AGENT.to_string()),
        ];
        let payload = match &body {
            Some(b) => {
                headers.push(("Content-Type".into(), "application/json".into()));
                Bytes::from(serde_json::to_vec(b).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", &self.host);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(payload))
            .map_err(|e| Error::Request(e.to_string()))?;
        let started = Instant::now();
        // An HTTP/1 connection carries one request at a time: wait until the last one is done.
        if let Err(e) = self.sender.ready().await {
            return Err(match self.why_closed().await {
                Some(reason) => Error::Closed(reason),
                None => Error::Http(e),
            });
        }
        let sent = tokio::time::timeout(timeout, self.sender.send_request(req))
            .await
            .map_err(|_| Error::Timeout { addr: url.clone() })?;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                return Err(match self.why_closed().await {
                    Some(reason) => Error::Closed(reason),
                    None => Error::Http(e),
                });
            }
        };
        let status = resp.status();
        let response_headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = tokio::time::timeout(timeout, resp.into_body().collect())
            .await
            .map_err(|_| Error::Timeout { addr: url.clone() })?
            .map_err(Error::Http)?
            .to_bytes()
            .to_vec();
        Ok(Exchange {
            method: method.into(),
            url,
            request_headers: headers,
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("").into(),
            response_headers,
            body,
            elapsed_ms: started.elapsed().as_millis(),
        })
    }
}
