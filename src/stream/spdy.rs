//! A SPDY/3.1 client for RemoteCommand (`v4.channel.k8s.io`): how the kubelet talks to the
//! container runtime's streaming server (the URL CRI `Exec` and `Attach` return) when kubectl
//! came in over WebSocket.
//!
//! Mirrors the client half of apimachinery's `util/httpstream/spdy` and the framing of
//! `moby/spdystream`: an HTTP/1.1 upgrade to `SPDY/3.1`, then one SYN_STREAM per stream, each
//! with a `streamType` header (`error`, `stdin`, `stdout`, `stderr`, `resize`), and DATA frames
//! (FIN on stdin is the client's end of input). SPDY compresses header blocks with zlib; klab
//! writes its few headers as stored (uncompressed) deflate blocks, which every zlib reader
//! accepts, and skips the server's header blocks unread, since nothing in them is needed. No
//! flow control (spdystream has none); no server side, no server push, no port-forward.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::remotecommand::{ERROR, RESIZE, STDERR, STDIN, STDOUT, V4};

/// What can fail while opening or using a session, by step.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("the runtime's streaming URL {0:?} is not http://HOST:PORT/PATH")]
    Url(String),
    #[error("connecting to the runtime's streaming server at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with the runtime's streaming server at {addr}")]
    Handshake {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error(
        "the runtime's streaming server answered {status} instead of switching to SPDY/3.1: {body}"
    )]
    Refused { status: StatusCode, body: String },
    #[error("switching the connection to SPDY/3.1")]
    Upgrade(#[source] hyper::Error),
    #[error("writing a SPDY frame")]
    Write(#[source] std::io::Error),
}

/// One thing the server sent that the session's user acts on.
#[derive(Debug)]
pub enum Event {
    /// Bytes on one of the streams the client opened.
    Data { stream: u32, data: Vec<u8> },
    /// A PING frame, to be sent back as it came.
    Ping(Vec<u8>),
}

/// The stream ids of one session (odd, as a SPDY client's are).
#[derive(Debug, Default, Clone, Copy)]
pub struct Ids {
    pub error: u32,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

type Io = TokioIo<Upgraded>;
type Ended = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// An open RemoteCommand session over SPDY.
pub struct Session {
    write: WriteHalf<Io>,
    events: mpsc::Receiver<Event>,
    ended: Ended,
    pub ids: Ids,
    /// Whether the zlib header of the outgoing header-block stream has been written.
    zlib_started: bool,
}

const SYN_STREAM: u16 = 1;
const PING: u16 = 6;
const RST_STREAM: u16 = 3;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;

/// A header block as SPDY/3 lays it out: a count, then length-prefixed names and values.
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = Vec::new();
    raw.extend((headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        raw.extend((k.len() as u32).to_be_bytes());
        raw.extend(k.as_bytes());
        raw.extend((v.len() as u32).to_be_bytes());
        raw.extend(v.as_bytes());
    }
    raw
}

/// `raw` as the next part of one never-ending zlib stream: the zlib header the first time,
/// then stored deflate blocks, none marked final (the stream continues in the next frame),
/// ended by a sync flush.
fn stored(raw: &[u8], first: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 8);
    if first {
        // CMF 0x78 (deflate, 32 KiB window), FLG 0x01: no preset dictionary, check bits valid.
        out.extend([0x78, 0x01]);
    }
    for chunk in raw.chunks(usize::from(u16::MAX)) {
        let len = chunk.len() as u16;
        out.push(0x00); // BFINAL 0, BTYPE 00 (stored), padding to the byte
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(chunk);
    }
    // An empty stored block, as zlib's Z_SYNC_FLUSH ends with: it makes the reader hand over
    // what it holds without reading past the frame (a stored block's bytes are otherwise
    // released only when the next block's header is read).
    out.extend([0x00, 0x00, 0x00, 0xff, 0xff]);
    out
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.extend([0x80, 0x03]);
    f.extend(kind.to_be_bytes());
    f.push(flags);
    f.extend(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend(payload);
    f
}

fn data_frame(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 8);
    f.extend((stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend(payload);
    f
}

/// Reads frames until the connection ends or the session is dropped; says why it ended.
async fn read_frames(mut r: ReadHalf<Io>, tx: mpsc::Sender<Event>, ended: Ended) {
    let why = read_until_end(&mut r, &tx).await;
    if let Ok(mut e) = ended.lock() {
        *e = Some(why);
    }
}

async fn read_until_end(r: &mut ReadHalf<Io>, tx: &mpsc::Sender<Event>) -> String {
    let mut head = [0u8; 8];
    loop {
        if let Err(e) = r.read_exact(&mut head).await {
            return format!("reading a frame: {e}");
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut body = vec![0; len];
        if let Err(e) = r.read_exact(&mut body).await {
            return format!("reading a frame: {e}");
        }
        let event = if head[0] & 0x80 != 0 {
            match u16::from_be_bytes([head[2], head[3]]) {
                PING => {
                    let mut f = head.to_vec();
                    f.extend(&body);
                    Some(Event::Ping(f))
                }
                GOAWAY => return "the server sent GOAWAY".into(),
                RST_STREAM => {
                    let stream = u32::from_be_bytes([
                        body.first().copied().unwrap_or(0) & 0x7f,
                        body.get(1).copied().unwrap_or(0),
                        body.get(2).copied().unwrap_or(0),
                        body.get(3).copied().unwrap_or(0),
                    ]);
                    let code = body
                        .get(4..8)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    return format!("the server reset stream {stream} (status {code})");
                }
                // SYN_REPLY, RST_STREAM, SETTINGS, WINDOW_UPDATE, HEADERS: nothing to act on.
                _ => None,
            }
        } else {
            let stream = u32::from_be_bytes([head[0] & 0x7f, head[1], head[2], head[3]]);
            Some(Event::Data { stream, data: body })
        };
        if let Some(e) = event {
            if tx.send(e).await.is_err() {
                return "the session was dropped".into();
            }
        }
    }
}

/// `http://HOST:PORT/PATH` as (`HOST:PORT`, `/PATH`): the shape of the runtime's streaming
/// URLs (containerd serves them on loopback, in plain HTTP).
pub fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let i = rest.find('/')?;
    Some((&rest[..i], &rest[i..]))
}

/// Opens a session at `url` (from CRI Exec or Attach) with the streams the options ask for.
pub async fn connect(
    url: &str,
    (stdin, stdout, stderr, tty): (bool, bool, bool, bool),
) -> Result<Session, SpdyError> {
    let (addr, path) = split_url(url).ok_or_else(|| SpdyError::Url(url.to_owned()))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| SpdyError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|source| SpdyError::Handshake {
            addr: addr.to_owned(),
            source,
        })?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, addr)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", V4)
        .body(Empty::<Bytes>::new())
        .map_err(|e| SpdyError::Url(format!("{url}: {e}")))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|source| SpdyError::Handshake {
            addr: addr.to_owned(),
            source,
        })?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(SpdyError::Refused { status, body });
    }
    let io = hyper::upgrade::on(&mut resp)
        .await
        .map_err(SpdyError::Upgrade)?;
    let (r, w) = tokio::io::split(TokioIo::new(io));
    let (tx, events) = mpsc::channel(32);
    let ended = Ended::default();
    tokio::spawn(read_frames(r, tx, ended.clone()));
    let mut s = Session {
        write: w,
        events,
        ended,
        ids: Ids::default(),
        zlib_started: false,
    };
    // Upstream's order: error first, then stdin, stdout, stderr, resize.
    let mut next = 1;
    let mut open = |on: bool| {
        on.then(|| {
            let id = next;
            next += 2;
            id
        })
    };
    s.ids = Ids {
        error: open(true).unwrap_or(1),
        stdin: open(stdin),
        stdout: open(stdout),
        stderr: open(stderr && !tty),
        resize: open(tty),
    };
    let ids = s.ids;
    for (id, kind) in [
        (Some(ids.error), "error"),
        (ids.stdin, "stdin"),
        (ids.stdout, "stdout"),
        (ids.stderr, "stderr"),
        (ids.resize, "resize"),
    ] {
        if let Some(id) = id {
            s.syn_stream(id, kind).await?;
        }
    }
    Ok(s)
}

impl Session {
    async fn syn_stream(&mut self, id: u32, stream_type: &str) -> Result<(), SpdyError> {
        let block = stored(
            &header_block(&[("streamtype", stream_type)]),
            !self.zlib_started,
        );
        self.zlib_started = true;
        let mut payload = Vec::with_capacity(block.len() + 10);
        payload.extend(id.to_be_bytes());
        payload.extend(0u32.to_be_bytes()); // associated stream
        payload.extend([0, 0]); // priority, slot
        payload.extend(block);
        self.raw(&control(SYN_STREAM, 0, &payload)).await
    }

    /// Writes one frame as it is.
    pub async fn raw(&mut self, frame: &[u8]) -> Result<(), SpdyError> {
        self.write
            .write_all(frame)
            .await
            .map_err(SpdyError::Write)?;
        self.write.flush().await.map_err(SpdyError::Write)
    }

    /// Bytes for the command's stdin; `fin` ends it (the command reads end of file).
    pub async fn stdin(&mut self, data: &[u8], fin: bool) -> Result<(), SpdyError> {
        let Some(id) = self.ids.stdin else {
            return Ok(());
        };
        let flags = if fin { FLAG_FIN } else { 0 };
        self.raw(&data_frame(id, flags, data)).await
    }

    /// A terminal size (`{"Width":80,"Height":24}`) for a TTY session.
    pub async fn resize(&mut self, data: &[u8]) -> Result<(), SpdyError> {
        let Some(id) = self.ids.resize else {
            return Ok(());
        };
        self.raw(&data_frame(id, 0, data)).await
    }

    /// The next thing the server sent, or `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Why the server's side ended, once it has.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().ok().and_then(|e| e.clone())
    }

    /// The WebSocket channel of one of this session's streams.
    pub fn channel_of(&self, stream: u32) -> Option<u8> {
        let i = self.ids;
        if stream == i.error {
            Some(ERROR)
        } else if Some(stream) == i.stdout {
            Some(STDOUT)
        } else if Some(stream) == i.stderr {
            Some(STDERR)
        } else if Some(stream) == i.stdin {
            Some(STDIN)
        } else if Some(stream) == i.resize {
            Some(RESIZE)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_blocks_carry_the_header_block_verbatim() {
        let raw = header_block(&[("streamtype", "error")]);
        assert_eq!(raw.len(), 4 + 4 + 10 + 4 + 5);
        let first = stored(&raw, true);
        assert_eq!(&first[..2], &[0x78, 0x01]);
        assert_eq!(u16::from_be_bytes([0x78, 0x01]) % 31, 0, "zlib check bits");
        assert_eq!(first[2], 0);
        let len = u16::from_le_bytes([first[3], first[4]]);
        assert_eq!(usize::from(len), raw.len());
        assert_eq!(!len, u16::from_le_bytes([first[5], first[6]]));
        assert_eq!(&first[7..7 + raw.len()], &raw[..]);
        assert_eq!(&first[7 + raw.len()..], &[0, 0, 0, 0xff, 0xff]);
        assert_eq!(stored(&raw, false).len(), raw.len() + 10);
    }

    #[test]
    fn frames_as_spdy3_lays_them_out() {
        assert_eq!(
            data_frame(3, FLAG_FIN, b"hi"),
            [0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(
            control(PING, 0, &[0, 0, 0, 2]),
            [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2]
        );
    }
}
