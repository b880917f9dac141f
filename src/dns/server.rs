//! The DNS server itself: one question in, one answer out, over UDP and TCP (RFC 1035 wire
//! format, encoded and decoded with `hickory-proto`). Names in the cluster domain are answered
//! from the [`Zone`]; every other name is forwarded, byte for byte, to the upstream servers.
//!
//! Mirrors a CoreDNS server block `.:53 { errors; kubernetes cluster.local …; forward .
//! /etc/resolv.conf }`: the `kubernetes` plugin answers authoritatively (AA set, SOA in the
//! authority section of NXDOMAIN and NODATA answers), `forward` relays the rest and answers
//! SERVFAIL when no upstream does. Leaves out the cache, the loop detector, DNSSEC and
//! zone transfers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::metrics::Metrics;
use super::records::{Data, Lookup, Qtype, Rec, Zone};

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle TCP connection is kept, as CoreDNS's default read timeout.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The transport a question came in on; a forwarded question leaves on the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// What every query handler shares: the current zone, whether the watches have synced, the
/// upstreams and the counters.
pub struct State {
    zone: RwLock<Arc<Zone>>,
    ready: AtomicBool,
    pub upstreams: Vec<SocketAddr>,
    pub metrics: Metrics,
}

impl State {
    pub fn new(zone: Zone, upstreams: Vec<SocketAddr>, metrics: Metrics) -> State {
        State {
            zone: RwLock::new(Arc::new(zone)),
            ready: AtomicBool::new(false),
            upstreams,
            metrics,
        }
    }

    /// Replaces the zone (after a Service or EndpointSlice changed) and marks the server ready.
    pub fn set_zone(&self, zone: Zone) {
        if let Ok(mut z) = self.zone.write() {
            *z = Arc::new(zone);
        }
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn zone(&self) -> Option<Arc<Zone>> {
        self.zone.read().ok().map(|z| z.clone())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

fn qtype(t: RecordType) -> Qtype {
    match t {
        RecordType::A => Qtype::A,
        RecordType::AAAA => Qtype::Aaaa,
        RecordType::SRV => Qtype::Srv,
        RecordType::CNAME => Qtype::Cname,
        RecordType::TXT => Qtype::Txt,
        RecordType::SOA => Qtype::Soa,
        RecordType::NS => Qtype::Ns,
        RecordType::PTR => Qtype::Ptr,
        RecordType::ANY => Qtype::Any,
        _ => Qtype::Other,
    }
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

fn record(rec: &Rec, ttl: u32) -> Option<Record> {
    let owner = name(&rec.name)?;
    let data = match &rec.data {
        Data::Ip(std::net::IpAddr::V4(ip)) => RData::A(A(*ip)),
        Data::Ip(std::net::IpAddr::V6(ip)) => RData::AAAA(AAAA(*ip)),
        Data::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
        Data::Cname(t) => RData::CNAME(CNAME(name(t)?)),
        Data::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
        Data::Ptr(t) => RData::PTR(PTR(name(t)?)),
    };
    Some(Record::from_rdata(owner, ttl, data))
}

fn soa(zone: &Zone) -> Option<Record> {
    let s = &zone.soa;
    let data = SOA::new(
        name(&s.mname)?,
        name(&s.rname)?,
        s.serial,
        s.refresh,
        s.retry,
        s.expire,
        s.minimum,
    );
    Some(Record::from_rdata(
        name(&s.zone)?,
        zone.ttl,
        RData::SOA(data),
    ))
}

/// A response to `req` with its id, opcode, RD and question, and EDNS if the query had it.
fn response(req: &Message, code: ResponseCode) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = code;
    resp.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        resp.edns = Some(edns);
    }
    resp
}

/// The answer to one wire-format query, or `None` when it cannot even be answered with an
/// error (shorter than a header, or itself a response).
pub async fn handle(state: &State, query: &[u8], proto: Proto) -> Option<Vec<u8>> {
    let req = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 12 => {
            // Undecodable: FORMERR with the id echoed, as a server must.
            let id = u16::from_be_bytes([query[0], query[1]]);
            let msg = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            state.metrics.response(ResponseCode::FormErr);
            return msg.to_vec().ok();
        }
        Err(_) => return None,
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let qt = req
        .queries
        .first()
        .map_or(RecordType::Unknown(0), |q| q.query_type());
    state.metrics.request(proto, qt);
    let resp = if req.metadata.op_code != OpCode::Query {
        response(&req, ResponseCode::NotImp)
    } else if req.queries.len() != 1 {
        response(&req, ResponseCode::FormErr)
    } else {
        let q = &req.queries[0];
        let qname = super::records::fqdn(&q.name().to_ascii());
        let Some(zone) = state.zone() else {
            return Some(forward(state, &req, query, proto).await);
        };
        if zone.contains(&qname) && !state.is_ready() {
            // The watches have not listed yet: say so rather than NXDOMAIN.
            response(&req, ResponseCode::ServFail)
        } else {
            match zone.lookup(&qname, qtype(q.query_type())) {
                Lookup::Outside => return Some(forward(state, &req, query, proto).await),
                lookup => authoritative(&req, &zone, lookup),
            }
        }
    };
    state.metrics.response(resp.metadata.response_code);
    encode(resp, &req, proto)
}

fn authoritative(req: &Message, zone: &Zone, lookup: Lookup) -> Message {
    let code = if lookup == Lookup::NxDomain {
        ResponseCode::NXDomain
    } else {
        ResponseCode::NoError
    };
    let mut resp = response(req, code);
    resp.metadata.authoritative = true;
    match lookup {
        Lookup::Answer {
            answers,
            additional,
        } => {
            resp.answers = answers.iter().filter_map(|r| record(r, zone.ttl)).collect();
            resp.additionals = additional
                .iter()
                .filter_map(|r| record(r, zone.ttl))
                .collect();
        }
        Lookup::Soa => resp.answers.extend(soa(zone)),
        Lookup::NoData | Lookup::NxDomain | Lookup::Outside => resp.authorities.extend(soa(zone)),
    }
    resp
}

/// The response's bytes; over UDP, a response larger than the client can take becomes an
/// empty one with TC set, so the client retries over TCP.
fn encode(mut resp: Message, req: &Message, proto: Proto) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    let limit = req.edns.as_ref().map_or(512, |e| e.max_payload().max(512)) as usize;
    if proto == Proto::Tcp || bytes.len() <= limit {
        return Some(bytes);
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    resp.metadata.truncation = true;
    resp.to_vec().ok()
}

/// Relays the query to each upstream in turn; SERVFAIL when none answers.
async fn forward(state: &State, req: &Message, query: &[u8], proto: Proto) -> Vec<u8> {
    for upstream in &state.upstreams {
        state.metrics.forward_request(upstream);
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            match proto {
                Proto::Udp => forward_udp(*upstream, query, req.metadata.id).await,
                Proto::Tcp => forward_tcp(*upstream, query).await,
            }
        })
        .await;
        match result {
            Ok(Ok(bytes)) => {
                let code = Message::from_vec(&bytes)
                    .map_or(ResponseCode::ServFail, |m| m.metadata.response_code);
                state.metrics.forward_response(upstream, code);
                state.metrics.response(code);
                return bytes;
            }
            Ok(Err(e)) => eprintln!("coredns: forward to {upstream} ({}): {e}", proto.label()),
            Err(_) => {
                eprintln!("coredns: forward to {upstream}: no answer within {UPSTREAM_TIMEOUT:?}")
            }
        }
    }
    state.metrics.response(ResponseCode::ServFail);
    response(req, ResponseCode::ServFail)
        .to_vec()
        .unwrap_or_default()
}

async fn forward_udp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to this query: a stray datagram with another id is dropped.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(upstream).await?;
    write_framed(&mut s, query).await?;
    read_framed(&mut s).await
}

async fn write_framed(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| std::io::Error::other("message longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(&framed).await
}

async fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Answers UDP queries until the process ends, each in its own task.
pub async fn serve_udp(sock: UdpSocket, state: Arc<State>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("coredns: udp receive: {e}");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (sock, state) = (sock.clone(), state.clone());
        tokio::spawn(async move {
            if let Some(resp) = handle(&state, &query, Proto::Udp).await {
                let _ = sock.send_to(&resp, peer).await;
            }
        });
    }
}

/// Answers TCP connections until the process ends: length-prefixed queries, several per
/// connection, closed after an idle while.
pub async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            while let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut conn)).await {
                let Some(resp) = handle(&state, &query, Proto::Tcp).await else {
                    break;
                };
                if write_framed(&mut conn, &resp).await.is_err() {
                    break;
                }
            }
        });
    }
}
