//! The lab file format (`labs/NN-name/lab.yaml`): klab's own, read with serde and then checked
//! field by field, so every mistake is reported with the file and the field that holds it.
//!
//! A lab is a title, a level, a time, an intro and ordered steps. A step has Markdown
//! instructions, an optional `setup` (shell or built-in actions: the fault to inject), one or
//! more `check`s (built-in assertions or a shell command), hints and a `solution` (shell).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What went wrong reading a lab file: always names the file, and the field where it can.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{}: {field}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

/// How much a learner should know before starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Beginner,
    Intermediate,
    Advanced,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Beginner => "beginner",
            Level::Intermediate => "intermediate",
            Level::Advanced => "advanced",
        }
    }
}

/// What a lab needs from the cluster, so a runner (CI, a workshop host) knows where it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Need {
    /// An API server with its store (and the store's client certificates).
    Apiserver,
    /// kube-controller-manager and kube-scheduler.
    Controllers,
    /// Nodes whose kubelets run pods (simulated or real).
    Nodes,
    /// The control plane runs as static pods from `kubernetes/manifests/` (`klab up`).
    StaticPods,
    /// The cluster's signing CA key at `kubernetes/pki/ca.key` (`klab up`, kubeadm).
    CaKey,
}

/// One lab, as written in its file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lab {
    /// The folder name (`03-the-store`): set when loaded, not written in the file.
    #[serde(skip)]
    pub name: String,
    pub title: String,
    pub level: Level,
    /// How long it takes, as `15m` (10 to 30 minutes).
    pub time: String,
    /// What the lab is about (Markdown).
    pub intro: String,
    /// What the cluster must offer.
    #[serde(default)]
    pub needs: Vec<Need>,
    /// Namespaces the lab creates; `klab lab reset` deletes them.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Extra actions for `klab lab reset` (stashed manifests are always put back).
    #[serde(default)]
    pub reset: Vec<Action>,
    pub steps: Vec<Step>,
    /// Said when the last step passes (Markdown).
    #[serde(default)]
    pub finish: Option<String>,
}

/// One step of a lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub title: String,
    /// What to do (Markdown).
    pub instructions: String,
    /// Run when the step begins: preparation and faults.
    #[serde(default)]
    pub setup: Vec<Action>,
    /// All must pass for the step to be done.
    pub check: Vec<CheckSpec>,
    /// Revealed one at a time by `klab lab hint`.
    #[serde(default)]
    pub hints: Vec<String>,
    /// A shell script that does the step (`klab lab solve`, CI).
    pub solution: String,
    /// How long `klab lab solve` waits for the checks after the solution (default 120 s).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A setup or reset action, written as a map with one key (`shell:`, `stop:`, `set-flag:`,
/// `wait:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ActionSpec", into = "ActionSpec")]
pub enum Action {
    /// A shell script (`sh -eu`), run in the lab's work folder with the lab's environment.
    Shell(String),
    /// Stop a static-pod component by moving its manifest out of the manifests folder (into
    /// the lab's stash), as `mv kube-scheduler.yaml /tmp` does on a kubeadm node.
    Stop(String),
    /// Give a flag in a component's static pod manifest a new value (the original is kept
    /// in the stash). `{old}` in the value is the old value.
    SetFlag(SetFlag),
    /// Wait (up to `seconds`, default 120) until a check passes.
    Wait(Box<WaitFor>),
}

/// An action as written: exactly one of its fields is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ActionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_flag: Option<SetFlag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitFor>,
}

impl TryFrom<ActionSpec> for Action {
    type Error = String;

    fn try_from(a: ActionSpec) -> Result<Action, String> {
        let n = [
            a.shell.is_some(),
            a.stop.is_some(),
            a.set_flag.is_some(),
            a.wait.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        match (a.shell, a.stop, a.set_flag, a.wait) {
            (Some(s), None, None, None) => Ok(Action::Shell(s)),
            (None, Some(s), None, None) => Ok(Action::Stop(s)),
            (None, None, Some(f), None) => Ok(Action::SetFlag(f)),
            (None, None, None, Some(w)) => Ok(Action::Wait(Box::new(w))),
            _ => Err(format!(
                "an action has exactly one of shell, stop, set-flag, wait (this one has {n})"
            )),
        }
    }
}

impl From<Action> for ActionSpec {
    fn from(a: Action) -> ActionSpec {
        let mut s = ActionSpec::default();
        match a {
            Action::Shell(x) => s.shell = Some(x),
            Action::Stop(x) => s.stop = Some(x),
            Action::SetFlag(x) => s.set_flag = Some(x),
            Action::Wait(x) => s.wait = Some(*x),
        }
        s
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFlag {
    pub manifest: String,
    pub flag: String,
    pub value: String,
}

/// `deny_unknown_fields` lives on the flattened [`CheckSpec`] (serde cannot have it on both).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitFor {
    #[serde(default)]
    pub seconds: Option<u64>,
    #[serde(flatten)]
    pub check: CheckSpec,
}

/// A check as written: exactly one subject (`pod`, `node`, …) and the modifiers it takes.
/// [`CheckSpec::to_check`] turns it into a [`Check`] or says which field is wrong.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// `NAMESPACE/NAME` of a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// A node's name (`{cluster}` is the cluster's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `NAMESPACE/NAME` of a Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// `NAMESPACE/NAME` of a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A certificate file (relative to the lab's work folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A static pod manifest, by component name (`kube-apiserver`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// `ready`: the API server answers /readyz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// A shell command that must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,

    /// pod: the phase it must be in (default Running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// pod: at least this many container restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i32>,
    /// node: Ready (true, the default) or NotReady (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// node: whether it is cordoned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<bool>,
    /// node: a taint key it must not carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untainted: Option<String>,
    /// deployment: at least this many available replicas (default: its spec.replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i32>,
    /// service: it has at least one ready endpoint (true, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<bool>,
    /// file: `cluster-ca` or a path: the certificate must be signed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains_to: Option<String>,
    /// file: the certificate must be valid now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unexpired: Option<bool>,
    /// manifest: text that must appear in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// manifest: text that must not appear in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacks: Option<String>,
    /// Plain words said when the check fails (a shell check needs them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<String>,
}

/// `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A check, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Pod {
        pod: ObjectRef,
        phase: String,
        restarts: Option<i32>,
    },
    Node {
        node: String,
        ready: Option<bool>,
        unschedulable: Option<bool>,
        untainted: Option<String>,
    },
    Deployment {
        deployment: ObjectRef,
        available: Option<i32>,
    },
    Service {
        service: ObjectRef,
        endpoints: bool,
    },
    File {
        file: String,
        chains_to: Option<String>,
        unexpired: bool,
    },
    Manifest {
        component: String,
        contains: Option<String>,
        lacks: Option<String>,
    },
    ApiReady,
    Shell {
        command: String,
    },
}

const PHASES: &[&str] = &["Pending", "Running", "Succeeded", "Failed", "Unknown"];

impl CheckSpec {
    fn subjects(&self) -> Vec<&'static str> {
        let mut s = vec![];
        let pairs: [(&'static str, bool); 8] = [
            ("pod", self.pod.is_some()),
            ("node", self.node.is_some()),
            ("deployment", self.deployment.is_some()),
            ("service", self.service.is_some()),
            ("file", self.file.is_some()),
            ("manifest", self.manifest.is_some()),
            ("api", self.api.is_some()),
            ("shell", self.shell.is_some()),
        ];
        for (name, set) in pairs {
            if set {
                s.push(name);
            }
        }
        s
    }

    fn modifiers(&self) -> Vec<&'static str> {
        let pairs: [(&'static str, bool); 11] = [
            ("phase", self.phase.is_some()),
            ("restarts", self.restarts.is_some()),
            ("ready", self.ready.is_some()),
            ("unschedulable", self.unschedulable.is_some()),
            ("untainted", self.untainted.is_some()),
            ("available", self.available.is_some()),
            ("endpoints", self.endpoints.is_some()),
            ("chains_to", self.chains_to.is_some()),
            ("unexpired", self.unexpired.is_some()),
            ("contains", self.contains.is_some()),
            ("lacks", self.lacks.is_some()),
        ];
        pairs.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect()
    }

    /// The validated check, or a sentence saying what is wrong with it.
    pub fn to_check(&self) -> Result<Check, String> {
        let subjects = self.subjects();
        let subject = match subjects.as_slice() {
            [one] => *one,
            [] => {
                return Err("names no subject: give one of pod, node, deployment, service, file, manifest, api, shell".into());
            }
            many => {
                return Err(format!(
                    "names {} subjects ({}): give exactly one",
                    many.len(),
                    many.join(", ")
                ));
            }
        };
        let allowed: &[&str] = match subject {
            "pod" => &["phase", "restarts"],
            "node" => &["ready", "unschedulable", "untainted"],
            "deployment" => &["available"],
            "service" => &["endpoints"],
            "file" => &["chains_to", "unexpired"],
            "manifest" => &["contains", "lacks"],
            _ => &[],
        };
        if let Some(bad) = self.modifiers().into_iter().find(|m| !allowed.contains(m)) {
            return Err(format!(
                "`{bad}` does not apply to a {subject} check{}",
                if allowed.is_empty() {
                    String::new()
                } else {
                    format!(" (it takes {})", allowed.join(", "))
                }
            ));
        }
        let object = |what: &str, v: &str| -> Result<ObjectRef, String> {
            match v.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok(ObjectRef {
                        namespace: ns.into(),
                        name: name.into(),
                    })
                }
                _ => Err(format!("{what}: \"{v}\" is not NAMESPACE/NAME")),
            }
        };
        Ok(match subject {
            "pod" => {
                let phase = self.phase.clone().unwrap_or_else(|| "Running".into());
                if !PHASES.contains(&phase.as_str()) {
                    return Err(format!(
                        "phase: \"{phase}\" is not a pod phase ({})",
                        PHASES.join(", ")
                    ));
                }
                Check::Pod {
                    pod: object("pod", self.pod.as_deref().unwrap_or_default())?,
                    phase,
                    restarts: self.restarts,
                }
            }
            "node" => {
                if self.ready.is_none() && self.unschedulable.is_none() && self.untainted.is_none()
                {
                    return Err("a node check needs ready, unschedulable or untainted".into());
                }
                Check::Node {
                    node: self.node.clone().unwrap_or_default(),
                    ready: self.ready,
                    unschedulable: self.unschedulable,
                    untainted: self.untainted.clone(),
                }
            }
            "deployment" => Check::Deployment {
                deployment: object("deployment", self.deployment.as_deref().unwrap_or_default())?,
                available: self.available,
            },
            "service" => Check::Service {
                service: object("service", self.service.as_deref().unwrap_or_default())?,
                endpoints: self.endpoints.unwrap_or(true),
            },
            "file" => {
                if self.chains_to.is_none() && self.unexpired.is_none() {
                    return Err("a file check needs chains_to or unexpired".into());
                }
                Check::File {
                    file: self.file.clone().unwrap_or_default(),
                    chains_to: self.chains_to.clone(),
                    unexpired: self.unexpired.unwrap_or(false),
                }
            }
            "manifest" => {
                if self.contains.is_none() && self.lacks.is_none() {
                    return Err("a manifest check needs contains or lacks".into());
                }
                Check::Manifest {
                    component: self.manifest.clone().unwrap_or_default(),
                    contains: self.contains.clone(),
                    lacks: self.lacks.clone(),
                }
            }
            "api" => {
                if self.api.as_deref() != Some("ready") {
                    return Err(format!(
                        "api: \"{}\" is not known (the only api check is `api: ready`)",
                        self.api.as_deref().unwrap_or_default()
                    ));
                }
                Check::ApiReady
            }
            _ => {
                let command = self.shell.clone().unwrap_or_default();
                if command.trim().is_empty() {
                    return Err("shell: the command is empty".into());
                }
                if self.explain.is_none() {
                    return Err(
                        "a shell check needs `explain`: the plain words said when it fails".into(),
                    );
                }
                Check::Shell { command }
            }
        })
    }
}

impl Lab {
    /// Reads and validates `dir/lab.yaml`; the lab's name is the folder's name.
    pub fn load(dir: &Path) -> Result<Lab, SpecError> {
        let path = dir.join("lab.yaml");
        let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Lab::parse(&name, &path, &text)
    }

    /// Parses and validates a lab's text; `path` names it in errors.
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Lab, SpecError> {
        let mut lab: Lab = serde_yaml::from_str(text).map_err(|source| SpecError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        lab.name = name.to_owned();
        lab.validate()
            .map_err(|(field, problem)| SpecError::Invalid {
                path: path.to_path_buf(),
                field,
                problem,
            })?;
        Ok(lab)
    }

    /// Every rule serde cannot express, as (field, problem).
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, p: &str| Err((f.to_owned(), p.to_owned()));
        if !valid_name(&self.name) {
            return err(
                "(folder name)",
                "a lab folder is named NN-words (two digits, a dash, lowercase words)",
            );
        }
        if self.title.trim().is_empty() {
            return err("title", "is empty");
        }
        match minutes(&self.time) {
            Some(m) if (10..=30).contains(&m) => {}
            Some(m) => return err("time", &format!("{m}m: a lab takes 10 to 30 minutes")),
            None => return err("time", "write the time as minutes, like `15m`"),
        }
        if self.intro.trim().is_empty() {
            return err("intro", "is empty");
        }
        if self.steps.is_empty() {
            return err("steps", "a lab has at least one step");
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if ["default", "kube-system", "kube-public", "kube-node-lease"].contains(&ns.as_str()) {
                return err(
                    &format!("namespaces[{i}]"),
                    &format!("\"{ns}\" belongs to the cluster: reset would delete it"),
                );
            }
        }
        for (i, a) in self.reset.iter().enumerate() {
            a.validate()
                .map_err(|p| (format!("reset[{i}]"), p.to_string()))?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            let at = |f: &str| format!("steps[{i}].{f}");
            if s.title.trim().is_empty() {
                return err(&at("title"), "is empty");
            }
            if s.instructions.trim().is_empty() {
                return err(&at("instructions"), "is empty");
            }
            if s.solution.trim().is_empty() {
                return err(
                    &at("solution"),
                    "is empty: every step has a solution CI runs",
                );
            }
            if s.check.is_empty() {
                return err(&at("check"), "a step has at least one check");
            }
            for (j, c) in s.check.iter().enumerate() {
                c.to_check()
                    .map_err(|p| (format!("steps[{i}].check[{j}]"), p))?;
            }
            for (j, a) in s.setup.iter().enumerate() {
                a.validate()
                    .map_err(|p| (format!("steps[{i}].setup[{j}]"), p))?;
            }
        }
        Ok(())
    }

    /// The lab's minutes, from `time`.
    pub fn minutes(&self) -> u32 {
        minutes(&self.time).unwrap_or(0)
    }
}

impl Action {
    fn validate(&self) -> Result<(), String> {
        match self {
            Action::Shell(s) if s.trim().is_empty() => Err("shell: the script is empty".into()),
            Action::Stop(c) if c.trim().is_empty() || c.contains('/') => {
                Err(format!("stop: \"{c}\" is not a component name"))
            }
            Action::SetFlag(f) if !f.flag.starts_with("--") => {
                Err(format!("set-flag: flag \"{}\" must start with --", f.flag))
            }
            Action::Wait(w) => w.check.to_check().map(|_| ()),
            _ => Ok(()),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 3
        && b[0].is_ascii_digit()
        && b[1].is_ascii_digit()
        && b[2] == b'-'
        && name[3..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn minutes(time: &str) -> Option<u32> {
    time.strip_suffix('m')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Lab, String> {
        Lab::parse("01-x", Path::new("labs/01-x/lab.yaml"), text).map_err(|e| {
            // As the CLI prints it: the error, then each cause.
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                s.push_str(&format!(": {c}"));
                src = c.source();
            }
            s
        })
    }

    const GOOD: &str = "title: T\nlevel: beginner\ntime: 15m\nintro: I\nsteps:\n- title: S\n  instructions: do\n  check:\n  - pod: default/web\n  solution: 'true'\n";

    #[test]
    fn a_good_lab_parses() {
        let lab = parse(GOOD).unwrap();
        assert_eq!(
            lab.steps[0].check[0].to_check().unwrap(),
            Check::Pod {
                pod: ObjectRef {
                    namespace: "default".into(),
                    name: "web".into()
                },
                phase: "Running".into(),
                restarts: None
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let e = parse(&GOOD.replace("pod: default/web", "pod: web")).unwrap_err();
        assert_eq!(
            e,
            "labs/01-x/lab.yaml: steps[0].check[0]: pod: \"web\" is not NAMESPACE/NAME"
        );
        let e = parse(&GOOD.replace("pod: default/web", "pod: a/b\n    node: n")).unwrap_err();
        assert!(e.contains("names 2 subjects (pod, node)"), "{e}");
        let e = parse(&GOOD.replace("time: 15m", "time: 45m")).unwrap_err();
        assert!(
            e.ends_with("time: 45m: a lab takes 10 to 30 minutes"),
            "{e}"
        );
        let e = parse(&GOOD.replace("level: beginner", "level: expert")).unwrap_err();
        assert!(e.starts_with("labs/01-x/lab.yaml: "), "{e}");
        assert!(e.contains("unknown variant `expert`"), "{e}");
        let e = parse(&GOOD.replace("  - pod: default/web", "  - shell: 'true'")).unwrap_err();
        assert!(e.contains("a shell check needs `explain`"), "{e}");
        let e = parse(&GOOD.replace("intro: I", "intro: I\ncolour: red")).unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
    }
}
