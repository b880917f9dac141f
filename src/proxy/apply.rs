//! Programming the kernel: kube-proxy's rules applied with one `iptables-restore --noflush`,
//! stale service chains deleted, the jumps from built-in chains kept first, and `--cleanup`.
//!
//! Mirrors upstream's `pkg/util/iptables` (save/restore with `--noflush`, `EnsureRule` with
//! prepend) and the proxier's `CleanupLeftovers`. Only KUBE-* chains are flushed or deleted,
//! never the user's. Leaves out the iptables lock file (nft-backed iptables needs none) and
//! the partial syncs upstream does between full ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use super::rules::{JUMPS, Jump, Rules, Stale};

/// Why talking to iptables failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("starting {program} (is iptables installed? Debian: apt-get install iptables)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the rules to iptables-restore")]
    Feed(#[source] std::io::Error),
    #[error("iptables-save failed ({status}): {stderr}")]
    Save { status: String, stderr: String },
    #[error("iptables-restore refused the rules ({status}): {stderr}")]
    Restore { status: String, stderr: String },
}

/// The tables kube-proxy writes.
const TABLES: [&str; 2] = ["filter", "nat"];

/// The service chains a sync owns and so may delete when they are no longer needed
/// (upstream's `isServiceChainName`).
const SERVICE_CHAIN_PREFIXES: [&str; 3] = ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-"];

/// iptables on this host, or inside a named network namespace (`ip netns exec`).
#[derive(Debug, Clone, Default)]
pub struct Iptables {
    pub netns: Option<String>,
}

/// What `iptables-save` shows of one table.
#[derive(Debug, Default, Clone)]
pub struct SavedTable {
    pub name: String,
    pub chains: Vec<String>,
    /// `-A CHAIN …` lines as iptables-save prints them.
    pub rules: Vec<String>,
}

/// Parses iptables-save output into its tables.
pub fn parse_save(text: &str) -> Vec<SavedTable> {
    let mut tables: Vec<SavedTable> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            tables.push(SavedTable {
                name: name.to_owned(),
                ..SavedTable::default()
            });
        } else if let Some(t) = tables.last_mut() {
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(chain) = decl.split_whitespace().next() {
                    t.chains.push(chain.to_owned());
                }
            } else if line.starts_with("-A ") {
                t.rules.push(line.to_owned());
            }
        }
    }
    tables
}

/// The chain a rule line appends to and the chain it jumps to, if any.
fn chain_and_target(rule: &str) -> Option<(&str, Option<&str>)> {
    let mut words = rule.split_whitespace();
    words.next()?;
    let chain = words.next()?;
    let target = rule
        .rsplit_once(" -j ")
        .and_then(|(_, t)| t.split_whitespace().next());
    Some((chain, target))
}

/// The jumps of [`JUMPS`] that `saved` lacks.
pub fn missing_jumps(saved: &[SavedTable]) -> Vec<Jump> {
    JUMPS
        .iter()
        .filter(|j| {
            !saved.iter().filter(|t| t.name == j.table).any(|t| {
                t.rules.iter().any(|r| {
                    chain_and_target(r) == Some((j.chain, Some(j.target))) && r.contains(j.comment)
                })
            })
        })
        .copied()
        .collect()
}

/// Service chains present in `saved` that `rules` no longer needs.
pub fn stale_chains(saved: &[SavedTable], rules: &Rules) -> Vec<Stale> {
    let owned = rules.owned();
    let mut out = Vec::new();
    for t in saved.iter().filter(|t| TABLES.contains(&t.name.as_str())) {
        for c in &t.chains {
            if SERVICE_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p))
                && !owned.iter().any(|(tn, oc)| *tn == t.name && *oc == c)
            {
                out.push(Stale {
                    table: t.name.clone(),
                    chain: c.clone(),
                });
            }
        }
    }
    out
}

/// The restore text that removes every KUBE-* chain in the filter and nat tables and every
/// rule elsewhere that jumps into one; `None` when there is nothing to remove.
pub fn cleanup_text(saved: &[SavedTable]) -> Option<String> {
    let mut out = String::new();
    for t in saved.iter().filter(|t| TABLES.contains(&t.name.as_str())) {
        let kube: Vec<&String> = t.chains.iter().filter(|c| c.starts_with("KUBE-")).collect();
        let jumps: Vec<&String> = t
            .rules
            .iter()
            .filter(|r| {
                chain_and_target(r).is_some_and(|(c, target)| {
                    !c.starts_with("KUBE-") && target.is_some_and(|t| t.starts_with("KUBE-"))
                })
            })
            .collect();
        if kube.is_empty() && jumps.is_empty() {
            continue;
        }
        out.push_str(&format!("*{}\n", t.name));
        for c in &kube {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for r in &jumps {
            out.push_str(&format!("-D {}\n", &r[3..]));
        }
        for c in &kube {
            out.push_str(&format!("-X {c}\n"));
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub jumps_added: usize,
    pub stale_deleted: usize,
}

/// Keeps what the last sync wrote, so the next one writes only the chains that changed.
#[derive(Debug)]
pub struct Syncer {
    pub iptables: Iptables,
    /// (table, chain) → rules, as last written; `None` until a full sync succeeds.
    last: Option<BTreeMap<(String, String), Vec<String>>>,
}

impl Syncer {
    pub fn new(iptables: Iptables) -> Self {
        Self {
            iptables,
            last: None,
        }
    }

    /// A full sync (`full`, or when nothing is known yet): reads iptables-save, restores every
    /// chain, adds missing jumps, deletes stale chains. Otherwise a partial one: restores only
    /// the chains whose rules changed since the last sync and deletes the ones gone.
    pub fn sync(&mut self, rules: &Rules, full: bool) -> Result<Synced, ApplyError> {
        let now = rules.by_chain();
        let result = match (&self.last, full) {
            (Some(last), false) => {
                let stale: Vec<Stale> = last
                    .keys()
                    .filter(|k| !now.contains_key(*k))
                    .map(|(table, chain)| Stale {
                        table: table.clone(),
                        chain: chain.clone(),
                    })
                    .collect();
                let changed = |t: &str, c: &str| {
                    let key = (t.to_owned(), c.to_owned());
                    last.get(&key) != now.get(&key)
                };
                let text = rules.restore_text_of(&[], &stale, &changed);
                self.iptables.restore(&text).map(|()| Synced {
                    jumps_added: 0,
                    stale_deleted: stale.len(),
                })
            }
            _ => self.iptables.sync(rules),
        };
        // After a failure nothing is known about the tables: the next sync is a full one.
        self.last = result.is_ok().then_some(now);
        result
    }
}

impl Iptables {
    pub fn new(netns: Option<String>) -> Self {
        Self { netns }
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// `iptables-save` of every table.
    pub fn save(&self) -> Result<String, ApplyError> {
        let out = self
            .command("iptables-save")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ApplyError::Spawn {
                program: "iptables-save".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(ApplyError::Save {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iptables-restore --noflush` of `text`: all of it applies, or none of it.
    pub fn restore(&self, text: &str) -> Result<(), ApplyError> {
        let mut child = self
            .command("iptables-restore")
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ApplyError::Spawn {
                program: "iptables-restore".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).map_err(ApplyError::Feed)?;
        }
        let out = child.wait_with_output().map_err(ApplyError::Feed)?;
        if !out.status.success() {
            return Err(ApplyError::Restore {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// One full sync: read what is there, then write `rules`, the missing jumps and the
    /// deletion of stale service chains in one transaction.
    pub fn sync(&self, rules: &Rules) -> Result<Synced, ApplyError> {
        let saved = parse_save(&self.save()?);
        let jumps = missing_jumps(&saved);
        let stale = stale_chains(&saved, rules);
        self.restore(&rules.restore_text(&jumps, &stale))?;
        Ok(Synced {
            jumps_added: jumps.len(),
            stale_deleted: stale.len(),
        })
    }

    /// `kube-proxy --cleanup`: removes every KUBE-* chain in filter and nat, and the jumps
    /// into them. Returns how many chains were removed.
    pub fn cleanup(&self) -> Result<usize, ApplyError> {
        let saved = parse_save(&self.save()?);
        let Some(text) = cleanup_text(&saved) else {
            return Ok(0);
        };
        self.restore(&text)?;
        Ok(saved
            .iter()
            .filter(|t| TABLES.contains(&t.name.as_str()))
            .flat_map(|t| &t.chains)
            .filter(|c| c.starts_with("KUBE-"))
            .count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD - [0:0]\n:MINE - [0:0]\n\
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A MINE -j ACCEPT\nCOMMIT\n";

    #[test]
    fn reads_chains_rules_and_jumps() {
        let saved = parse_save(SAVED);
        assert_eq!(saved[0].chains.len(), 4);
        let missing = missing_jumps(&saved);
        assert!(
            !missing
                .iter()
                .any(|j| j.table == "nat" && j.chain == "PREROUTING")
        );
        assert!(missing.iter().any(|j| j.chain == "POSTROUTING"));
    }

    #[test]
    fn cleanup_touches_only_kube_chains() {
        let text = cleanup_text(&parse_save(SAVED)).unwrap();
        assert!(text.contains("-X KUBE-SVC-OLD"));
        assert!(text.contains(
            "-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ));
        assert!(!text.contains("MINE"));
    }
}
