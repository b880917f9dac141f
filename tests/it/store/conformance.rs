//! The conformance suite: scenarios that record what a client observes, run unchanged against
//! klab-store and etcd; the transcripts must be equal once ids and lease ids are scrubbed.

use std::fmt::Debug;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseTimeToLiveOptions,
    PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchFilterType, WatchOptions, WatchStream,
};

pub type Transcript = Vec<(&'static str, Vec<String>)>;

/// Runs every scenario, in order, on a fresh server at `endpoint`.
pub async fn run_all(endpoint: &str) -> Transcript {
    let mut c = Client::connect([endpoint], None).await.unwrap();
    vec![
        ("kv", kv(&mut c).await),
        ("put options", put_options(&mut c).await),
        ("ranges", ranges(&mut c).await),
        ("txn", txn(&mut c).await),
        ("limits", limits(&mut c).await),
        ("watch", watch(&mut c).await),
        ("leases", leases(&mut c).await),
        ("compaction", compaction(&mut c).await),
        ("cluster", cluster(&mut c).await),
    ]
}

/// Compares transcripts line by line and reports the first difference with its scenario.
pub fn assert_same(got: &Transcript, want: &Transcript) {
    for ((name, g), (_, w)) in got.iter().zip(want) {
        for (i, (gl, wl)) in g.iter().zip(w).enumerate() {
            assert_eq!(
                gl, wl,
                "scenario {name:?}, step {i}: klab-store (left) differs from etcd"
            );
        }
        assert_eq!(
            g.len(),
            w.len(),
            "scenario {name:?}: different number of steps"
        );
    }
}

/// Replaces the number after `field: ` (a whole field name) with `_`.
fn scrub(s: &str, field: &str) -> String {
    let pat = format!("{field}: ");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&pat) {
        let whole = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        if whole {
            let n = rest
                .find(|c: char| !c.is_ascii_digit() && c != '-')
                .unwrap_or(rest.len());
            if n > 0 && &rest[..n] != "0" {
                out.push('_');
                rest = &rest[n..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn show<T: Debug>(r: &Result<T, etcd_client::Error>) -> String {
    let s = match r {
        Ok(v) => format!("{v:?}"),
        Err(etcd_client::Error::GRpcStatus(s)) => format!("error {:?}: {}", s.code(), s.message()),
        Err(e) => format!("error {e}"),
    };
    ["cluster_id", "member_id", "raft_term", "id", "lease"]
        .iter()
        .fold(s, |s, f| scrub(&s, f))
}

struct Rec(Vec<String>);

impl Rec {
    fn push<T: Debug>(&mut self, what: &str, r: &Result<T, etcd_client::Error>) {
        self.0.push(format!("{what} => {}", show(r)));
    }
    fn note(&mut self, what: impl Into<String>) {
        self.0.push(what.into());
    }
}

async fn kv(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    let prev = Some(PutOptions::new().with_prev_key());
    r.push("put a", &c.put("kv/a", "1", prev.clone()).await);
    r.push("put a again", &c.put("kv/a", "2", prev.clone()).await);
    r.push("put b", &c.put("kv/b", "1", None).await);
    r.push("get a", &c.get("kv/a", None).await);
    r.push(
        "get a at 2",
        &c.get("kv/a", Some(GetOptions::new().with_revision(2)))
            .await,
    );
    r.push("get missing", &c.get("kv/zzz", None).await);
    r.push(
        "get future",
        &c.get("kv/a", Some(GetOptions::new().with_revision(1000)))
            .await,
    );
    let del_prev = Some(DeleteOptions::new().with_prev_key());
    r.push("delete a", &c.delete("kv/a", del_prev.clone()).await);
    r.push("delete missing", &c.delete("kv/a", del_prev).await);
    r.push("put a after delete", &c.put("kv/a", "3", None).await);
    r.push("get a new life", &c.get("kv/a", None).await);
    r.push(
        "delete prefix",
        &c.delete("kv/", Some(DeleteOptions::new().with_prefix()))
            .await,
    );
    r.0
}

async fn put_options(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    let iv = || Some(PutOptions::new().with_ignore_value());
    r.push("ignore_value on missing", &c.put("po/k", "", iv()).await);
    r.push("ignore_value with value", &c.put("po/k", "x", iv()).await);
    r.push("put", &c.put("po/k", "v", None).await);
    r.push("ignore_value", &c.put("po/k", "", iv()).await);
    r.push("get", &c.get("po/k", None).await);
    let il = Some(PutOptions::new().with_ignore_lease().with_lease(5));
    r.push("ignore_lease with lease", &c.put("po/k", "v", il).await);
    r.push(
        "unknown lease",
        &c.put("po/k", "v", Some(PutOptions::new().with_lease(12345)))
            .await,
    );
    r.push("empty key", &c.put("", "v", None).await);
    r.0
}

async fn ranges(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    for (k, v) in [
        ("r/c", "3"),
        ("r/a", "1"),
        ("r/b", "2"),
        ("r/b", "22"),
        ("r/d", "0"),
    ] {
        c.put(k, v, None).await.unwrap();
    }
    let q = |o: GetOptions| Some(o);
    r.push(
        "prefix",
        &c.get("r/", q(GetOptions::new().with_prefix())).await,
    );
    r.push(
        "from key",
        &c.get("r/b", q(GetOptions::new().with_from_key())).await,
    );
    r.push(
        "span",
        &c.get("r/a", q(GetOptions::new().with_range("r/c"))).await,
    );
    r.push(
        "inverted span",
        &c.get("r/c", q(GetOptions::new().with_range("r/a"))).await,
    );
    r.push(
        "limit",
        &c.get("r/", q(GetOptions::new().with_prefix().with_limit(2)))
            .await,
    );
    r.push(
        "count only",
        &c.get("r/", q(GetOptions::new().with_prefix().with_count_only()))
            .await,
    );
    r.push(
        "keys only",
        &c.get("r/", q(GetOptions::new().with_prefix().with_keys_only()))
            .await,
    );
    let sorted = |t, o| q(GetOptions::new().with_prefix().with_sort(t, o));
    r.push(
        "key desc",
        &c.get("r/", sorted(SortTarget::Key, SortOrder::Descend))
            .await,
    );
    r.push(
        "mod asc",
        &c.get("r/", sorted(SortTarget::Mod, SortOrder::Ascend))
            .await,
    );
    r.push(
        "value none",
        &c.get("r/", sorted(SortTarget::Value, SortOrder::None))
            .await,
    );
    r.push(
        "create desc limit",
        &c.get(
            "r/",
            q(GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(2)),
        )
        .await,
    );
    r.push(
        "min mod rev",
        &c.get(
            "r/",
            q(GetOptions::new().with_prefix().with_min_mod_revision(5)),
        )
        .await,
    );
    r.push("empty key", &c.get("", None).await);
    r.0
}

async fn txn(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    c.put("t/a", "1", None).await.unwrap();
    let t = Txn::new()
        .when([Compare::value("t/a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("t/b", "x", None), TxnOp::get("t/a", None)])
        .or_else([TxnOp::get("t/b", None)]);
    r.push("value equal", &c.txn(t).await);
    let t = Txn::new()
        .when([Compare::version("t/a", CompareOp::Greater, 1)])
        .and_then([TxnOp::delete("t/a", None)])
        .or_else([TxnOp::get("t/", Some(GetOptions::new().with_prefix()))]);
    r.push("version greater fails", &c.txn(t).await);
    let t = Txn::new().when([
        Compare::create_revision("t/missing", CompareOp::Equal, 0),
        Compare::mod_revision("t/b", CompareOp::Less, 1000),
        Compare::version("t/missing", CompareOp::Equal, 0),
    ]);
    r.push("missing key compares as zero", &c.txn(t).await);
    let t = Txn::new().when([Compare::value("t/missing", CompareOp::NotEqual, "x")]);
    r.push("value compare on missing key", &c.txn(t).await);
    let inner = Txn::new()
        .when([Compare::value("t/b", CompareOp::Equal, "x")])
        .and_then([TxnOp::put("t/c", "nested", None)]);
    let t = Txn::new()
        .when([Compare::mod_revision("t/a", CompareOp::Greater, 0)])
        .and_then([
            TxnOp::txn(inner),
            TxnOp::delete("t/b", Some(DeleteOptions::new().with_prev_key())),
        ]);
    r.push("nested", &c.txn(t).await);
    let t = Txn::new().and_then([TxnOp::put("t/d", "1", None), TxnOp::put("t/d", "2", None)]);
    r.push("duplicate key", &c.txn(t).await);
    let ops: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::get(format!("t/{i}"), None))
        .collect();
    r.push("too many ops", &c.txn(Txn::new().and_then(ops)).await);
    r.push(
        "read-only txn keeps revision",
        &c.txn(Txn::new().and_then([TxnOp::get("t/a", None)])).await,
    );
    r.0
}

async fn limits(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    let big = vec![b'x'; 1024 * 1024 + 600 * 1024];
    r.push("1.6 MiB value", &c.put("l/big", big, None).await);
    let ok = vec![b'x'; 1024 * 1024];
    let put = c.put("l/ok", ok, None).await.map(|_| "ok");
    r.push("1 MiB value", &put);
    r.push("empty delete key", &c.delete("", None).await);
    r.0
}

/// Reads watch responses until `n` events arrived, recording responses without events too.
async fn events(s: &mut WatchStream, n: usize, r: &mut Rec) {
    let mut seen = 0;
    while seen < n {
        let msg = tokio::time::timeout(Duration::from_secs(10), s.message()).await;
        let Ok(Ok(Some(resp))) = msg else {
            r.note(format!("watch ended early after {seen} of {n} events"));
            return;
        };
        if resp.created() || resp.canceled() {
            r.note(format!(
                "watch {} created={} canceled={} compact_revision={}",
                resp.watch_id(),
                resp.created(),
                resp.canceled(),
                resp.compact_revision()
            ));
        }
        for e in resp.events() {
            seen += 1;
            let kind = if e.event_type() == EventType::Put {
                "PUT"
            } else {
                "DELETE"
            };
            r.note(format!(
                "watch {} {kind} {}",
                resp.watch_id(),
                show::<_>(&Ok::<_, etcd_client::Error>((e.kv(), e.prev_kv())))
            ));
        }
    }
}

async fn next(s: &mut WatchStream, r: &mut Rec, what: &str) {
    let msg = tokio::time::timeout(Duration::from_secs(10), s.message()).await;
    match msg {
        Ok(Ok(Some(resp))) => r.note(format!(
            "{what}: watch {} created={} canceled={} compact={} events={} rev={}",
            resp.watch_id(),
            resp.created(),
            resp.canceled(),
            resp.compact_revision(),
            resp.events().len(),
            resp.header().map(|h| h.revision()).unwrap_or(-1)
        )),
        other => {
            r.note(format!("{what}: no response ({:?})", other.map(|x| x.map(|_| ()))).to_string())
        }
    }
}

async fn watch(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    let first = c
        .put("w/a", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("w/b", "1", None).await.unwrap();
    c.put("w/a", "2", None).await.unwrap();
    c.delete("w/b", None).await.unwrap();
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(first)
        .with_prev_key();
    let mut s = c.watch("w/", Some(opts)).await.unwrap();
    next(&mut s, &mut r, "create from history").await;
    events(&mut s, 4, &mut r).await;
    s.watch("w/a", None).await.unwrap();
    next(&mut s, &mut r, "second watch on the stream").await;
    let filtered = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoPut]);
    s.watch("w/", Some(filtered)).await.unwrap();
    next(&mut s, &mut r, "third watch, deletes only").await;
    c.put("w/a", "3", None).await.unwrap();
    c.delete("w/a", None).await.unwrap();
    let mut lines = Vec::new();
    let mut sub = Rec(vec![]);
    events(&mut s, 5, &mut sub).await;
    lines.extend(sub.0);
    // Responses of different watchers may interleave differently; their order per watcher may not.
    lines.sort_by_key(|l| l.split(' ').nth(1).map(str::to_owned));
    r.0.extend(lines);
    s.cancel(1).await.unwrap();
    next(&mut s, &mut r, "cancel").await;
    s.request_progress().await.unwrap();
    next(&mut s, &mut r, "progress").await;
    // A watch may start in the future: it waits for that revision.
    let now = c
        .get("w/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut f = c
        .watch(
            "w/f",
            Some(WatchOptions::new().with_start_revision(now + 2)),
        )
        .await
        .unwrap();
    next(&mut f, &mut r, "watch from the future").await;
    c.put("w/f", "1", None).await.unwrap();
    c.put("w/f", "2", None).await.unwrap();
    events(&mut f, 1, &mut r).await;
    r.0
}

async fn leases(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    let grant = c.lease_grant(60, None).await;
    r.push("grant 60", &grant);
    let id = grant.unwrap().id();
    r.push(
        "grant 1 becomes the minimum",
        &c.lease_grant(1, None).await.map(|g| g.ttl()),
    );
    r.push(
        "put with lease",
        &c.put("le/a", "1", Some(PutOptions::new().with_lease(id)))
            .await,
    );
    c.put("le/b", "1", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let ttl = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    // etcd lists a lease's keys from a Go map, in no particular order.
    let mut keys = ttl.keys().to_vec();
    keys.sort();
    r.note(format!(
        "ttl granted={} in range={} keys={:?}",
        ttl.granted_ttl(),
        ttl.ttl() > 0 && ttl.ttl() <= 60,
        keys
    ));
    let leases = c.leases().await.unwrap();
    r.note(format!(
        "leases lists it: {}",
        leases.leases().iter().any(|l| l.id() == id)
    ));
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let ka = stream.message().await.map(|m| m.map(|m| m.ttl()));
    r.push("keepalive", &ka);
    let opts = WatchOptions::new().with_prefix();
    let mut w = c.watch("le/", Some(opts)).await.unwrap();
    next(&mut w, &mut r, "watch leased keys").await;
    r.push("revoke", &c.lease_revoke(id).await);
    events(&mut w, 2, &mut r).await;
    r.push(
        "get after revoke",
        &c.get("le/", Some(GetOptions::new().with_prefix())).await,
    );
    r.push("revoke again", &c.lease_revoke(id).await);
    r.push(
        "ttl of unknown",
        &c.lease_time_to_live(id, None).await.map(|t| t.ttl()),
    );
    r.push(
        "keepalive of unknown",
        &c.lease_keep_alive(id).await.map(|_| ()),
    );
    // Expiry: the shortest lease etcd grants (2 s) runs out and takes its key with it.
    let short = c.lease_grant(2, None).await.unwrap().id();
    c.put("le/short", "1", Some(PutOptions::new().with_lease(short)))
        .await
        .unwrap();
    events(&mut w, 2, &mut r).await;
    r.push("too large ttl", &c.lease_grant(9_000_000_001, None).await);
    r.0
}

async fn compaction(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    let rev = c
        .put("cp/a", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("cp/a", "2", None).await.unwrap();
    c.put("cp/b", "1", None).await.unwrap();
    r.push("compact", &c.compact(rev + 1, None).await);
    r.push(
        "get before",
        &c.get("cp/a", Some(GetOptions::new().with_revision(rev)))
            .await,
    );
    r.push(
        "get at",
        &c.get("cp/a", Some(GetOptions::new().with_revision(rev + 1)))
            .await,
    );
    r.push("compact again", &c.compact(rev + 1, None).await);
    r.push("compact future", &c.compact(rev + 100, None).await);
    let opts = WatchOptions::new().with_start_revision(rev);
    let mut s = c.watch("cp/a", Some(opts)).await.unwrap();
    next(&mut s, &mut r, "watch from compacted revision").await;
    next(&mut s, &mut r, "then").await;
    let opts = WatchOptions::new().with_start_revision(rev + 1);
    let mut s = c.watch("cp/", Some(opts.with_prefix())).await.unwrap();
    next(&mut s, &mut r, "watch from the compaction revision").await;
    events(&mut s, 2, &mut r).await;
    r.0
}

async fn cluster(c: &mut Client) -> Vec<String> {
    let mut r = Rec(vec![]);
    let status = c.status().await.unwrap();
    r.note(format!(
        "status leader is member: {}, has version: {}, db size > 0: {}",
        Some(status.leader()) == status.header().map(|h| h.member_id()),
        !status.version().is_empty(),
        status.db_size() > 0
    ));
    let members = c.member_list().await.unwrap();
    r.note(format!("members: {}", members.members().len()));
    r.push(
        "alarms",
        &c.alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await,
    );
    r.0
}
