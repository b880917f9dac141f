//! One process as `ps auxww` shows it, and what klab makes of it: which component it is and
//! which flags it was started with (parsed the way Go's pflag and flag packages read argv).

use serde::Serialize;

use super::catalog::{self, Component, Plane};

/// A row of `ps auxww`, plus the parent where it is known (live, not from a capture).
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub user: String,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    pub cpu: f32,
    pub mem: f32,
    /// Virtual size in KiB.
    pub vsz: u64,
    /// Resident set size in KiB.
    pub rss: u64,
    pub tty: String,
    pub stat: String,
    pub start: String,
    pub time: String,
    pub command: String,
    /// argv, split on whitespace for captures (quoting is lost in `ps` output).
    #[serde(skip)]
    pub argv: Vec<String>,
}

/// A flag as given on a command line: `--name=value`, `--name value` or `--name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GivenFlag {
    pub name: String,
    pub value: Option<String>,
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

impl Process {
    /// The component this process is, by argv[0]'s name or, for `klab <subcommand>`, the
    /// subcommand. Kernel threads (`[kthreadd]`) and unknown programs are `None`.
    pub fn component(&self) -> Option<&'static Component> {
        let argv0 = basename(self.argv.first()?);
        if argv0 == "klab"
            && let Some(sub) = self.argv.get(1)
        {
            return catalog::find(sub);
        }
        // klab's own pause image runs busybox's `sleep 2147483647` (no registry, no /pause binary).
        if self.argv.len() == 2 && argv0 == "sleep" && self.argv[1] == "2147483647" {
            return catalog::find("pause");
        }
        catalog::find(argv0.trim_end_matches(':'))
    }

    /// Where the component's own arguments start in argv (after `klab SUBCOMMAND`).
    fn args_start(&self) -> usize {
        let argv0 = self.argv.first().map(|a| basename(a)).unwrap_or("");
        if argv0 == "klab" && self.argv.len() > 1 {
            2
        } else {
            1
        }
    }

    /// The flags on the command line, in order.
    pub fn flags(&self) -> Vec<GivenFlag> {
        let component = self.component();
        let is_bool = |name: &str| {
            component
                .and_then(|c| c.flags.iter().find(|f| f.name == name))
                .is_some_and(|f| f.boolean)
        };
        let args = self.argv.get(self.args_start()..).unwrap_or(&[]);
        let mut out = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let Some(stripped) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                continue; // a positional argument, such as `local-path-provisioner start`
            };
            if stripped.is_empty() {
                continue;
            }
            if let Some((name, value)) = stripped.split_once('=') {
                out.push(GivenFlag {
                    name: name.into(),
                    value: Some(value.into()),
                });
            } else if !is_bool(stripped) && args.get(i).is_some_and(|next| !next.starts_with('-')) {
                out.push(GivenFlag {
                    name: stripped.into(),
                    value: Some(args[i].clone()),
                });
                i += 1;
            } else {
                out.push(GivenFlag {
                    name: stripped.into(),
                    value: None,
                });
            }
        }
        out
    }

    /// The value a flag has in effect: given, or `true` for a bare boolean, or upstream's default.
    pub fn effective(&self, name: &str) -> Effective {
        if let Some(f) = self.flags().into_iter().rev().find(|f| f.name == name) {
            return Effective::Given(f.value.unwrap_or_else(|| "true".into()));
        }
        let default = self
            .component()
            .and_then(|c| c.flags.iter().find(|f| f.name == name))
            .and_then(|f| f.default);
        match default {
            Some(d) => Effective::Default(d.to_string()),
            None => Effective::Unset,
        }
    }

    pub fn plane(&self) -> Option<Plane> {
        self.component().map(|c| c.plane)
    }
}

/// A flag's value in effect, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effective {
    Given(String),
    Default(String),
    Unset,
}

impl Effective {
    pub fn value(&self) -> Option<&str> {
        match self {
            Effective::Given(v) | Effective::Default(v) => Some(v),
            Effective::Unset => None,
        }
    }

    /// For evidence lines: `--x=v`, `not set (default v)` or `not set`.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Effective::Given(v) => format!("--{name}={v}"),
            Effective::Default(v) => format!("--{name} not set (default {v})"),
            Effective::Unset => format!("--{name} not set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(cmd: &str) -> Process {
        Process {
            user: "root".into(),
            pid: 1,
            ppid: None,
            cpu: 0.0,
            mem: 0.0,
            vsz: 0,
            rss: 0,
            tty: "?".into(),
            stat: "S".into(),
            start: "00:00".into(),
            time: "0:00".into(),
            command: cmd.into(),
            argv: cmd.split_whitespace().map(String::from).collect(),
        }
    }

    #[test]
    fn reads_pflag_and_go_flag_forms() {
        let p = proc(
            "/usr/local/bin/containerd-shim-runc-v2 -namespace k8s.io -id abc -address /run/x.sock",
        );
        assert_eq!(p.component().unwrap().name, "containerd-shim-runc-v2");
        let flags = p.flags();
        assert_eq!(
            flags[0],
            GivenFlag {
                name: "namespace".into(),
                value: Some("k8s.io".into())
            }
        );
        assert_eq!(flags.len(), 3);
        let p = proc("kube-scheduler --leader-elect --bind-address=127.0.0.1 --kubeconfig /x.conf");
        assert_eq!(p.effective("leader-elect"), Effective::Given("true".into()));
        assert_eq!(
            p.effective("kubeconfig"),
            Effective::Given("/x.conf".into())
        );
        assert_eq!(p.effective("profiling"), Effective::Default("true".into()));
    }

    #[test]
    fn klab_subcommands_are_components() {
        let p = proc("/usr/bin/klab apiserver --secure-port=6443");
        assert_eq!(p.component().unwrap().name, "kube-apiserver");
        assert_eq!(p.effective("secure-port"), Effective::Given("6443".into()));
        assert!(proc("bash").component().is_none());
        assert_eq!(proc("sleep 2147483647").component().unwrap().name, "pause");
        assert!(proc("sleep 5").component().is_none());
    }
}
