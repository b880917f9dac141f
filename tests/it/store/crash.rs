//! The crash test: writers hammer klab-store, it is SIGKILLed at random moments, and after every
//! restart each acknowledged write is there, revisions never go back, and a watch resumed from
//! its last seen revision sees every later event exactly once. Every other round compacts
//! while the writers run, so kills also land during snapshots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use rand::Rng;

use super::procs::Proc;

const KILLS: usize = 12;
const WRITERS: usize = 8;

/// Keys acknowledged by a put, with the revision the put answered.
type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

async fn connect(endpoint: &str) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    Client::connect([endpoint], Some(opts)).await.unwrap()
}

async fn writer(endpoint: String, round: usize, w: usize, acked: Acked) {
    let Ok(mut c) = Client::connect([&endpoint], None).await else {
        return;
    };
    for seq in 0.. {
        let key = format!("c/{round:02}/{w}/{seq:06}");
        match c.put(key.clone(), seq.to_string(), None).await {
            Ok(resp) => {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                acked.lock().unwrap().insert(key, rev);
            }
            Err(_) => return,
        }
    }
}

/// Follows the `c/` prefix from `from`; records each event's key and revision, and fails on a
/// duplicate or a revision going back.
async fn watcher(endpoint: String, from: i64, seen: Acked, last: Arc<Mutex<i64>>) {
    let Ok(mut c) = Client::connect([&endpoint], None).await else {
        return;
    };
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let Ok(mut s) = c.watch("c/", Some(opts)).await else {
        return;
    };
    while let Ok(Some(resp)) = s.message().await {
        for e in resp.events() {
            let kv = e.kv().unwrap();
            let key = String::from_utf8(kv.key().to_vec()).unwrap();
            let mut l = last.lock().unwrap();
            assert!(
                kv.mod_revision() > *l,
                "watch went back: {} after {}",
                kv.mod_revision(),
                *l
            );
            *l = kv.mod_revision();
            let dup = seen.lock().unwrap().insert(key.clone(), kv.mod_revision());
            assert!(dup.is_none(), "event for {key} delivered twice");
        }
    }
}

pub async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Acked = Arc::default();
    let seen: Acked = Arc::default();
    let last_seen = Arc::new(Mutex::new(0i64));
    let mut max_rev = 0;
    let mut rng = rand::rng();
    for round in 0..=KILLS {
        let mut proc = Proc::klab(Some(dir.path()));
        let mut c = connect(&proc.endpoint).await;
        let all = c
            .get("c/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let rev = all.header().unwrap().revision();
        assert!(
            rev >= max_rev,
            "revision went back from {max_rev} to {rev} after a crash"
        );
        let stored: BTreeMap<String, i64> = all
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_owned(), kv.mod_revision()))
            .collect();
        for (key, rev) in acked.lock().unwrap().iter() {
            assert_eq!(
                stored.get(key),
                Some(rev),
                "acknowledged write {key}@{rev} lost"
            );
        }
        max_rev = rev;
        let from = *last_seen.lock().unwrap() + 1;
        let watch = tokio::spawn(watcher(
            proc.endpoint.clone(),
            from,
            seen.clone(),
            last_seen.clone(),
        ));
        if round == KILLS {
            // Last round: no writers; the resumed watch must catch up to exactly the store.
            for _ in 0..200 {
                if seen.lock().unwrap().len() >= stored.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                *seen.lock().unwrap(),
                stored,
                "the resumed watch saw a different history"
            );
            watch.abort();
            break;
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(proc.endpoint.clone(), round, w, acked.clone())))
            .collect();
        let pause = Duration::from_millis(rng.random_range(50..400));
        if round % 2 == 1 {
            // Compact (which writes a snapshot and empties the log) while the writers run, up to
            // what the watch has already seen, so the kill may land in the middle of it.
            tokio::time::sleep(pause / 2).await;
            let seen_up_to = *last_seen.lock().unwrap();
            let _ = c.compact(seen_up_to, None).await;
            tokio::time::sleep(pause / 2).await;
        } else {
            tokio::time::sleep(pause).await;
        }
        proc.kill();
        for w in writers {
            w.await.unwrap();
        }
        // A watcher that panicked (duplicate, reorder) fails the test here.
        if let Err(e) = watch.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    assert!(
        acked.lock().unwrap().len() > KILLS,
        "the writers barely wrote anything"
    );
}
