//! How labs are shown (klab's own): the `klab lab list` table, a step on the terminal, and a
//! whole lab as Markdown — the book's lab chapters and Killercoda's step pages are made by
//! these functions, so they cannot drift from `labs/`.

use std::io::{self, Write};

use super::cluster::expand;
use super::spec::{Action, Check, Lab};

/// The cluster the book and Killercoda show: `klab up`'s default.
pub const BOOK_CLUSTER: (&str, &str) = ("klab", "~/.klab/klab");

/// `klab lab list`.
pub fn list(labs: &[Lab], out: &mut dyn Write) -> io::Result<()> {
    let rows: Vec<Vec<String>> = labs
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.level.as_str().to_owned(),
                l.time.clone(),
                l.steps.len().to_string(),
                l.title.clone(),
            ]
        })
        .collect();
    crate::tools::output::write_table(out, &["NAME", "LEVEL", "TIME", "STEPS", "TITLE"], &rows)?;
    writeln!(out)?;
    writeln!(out, "Start one with `klab lab start NAME`.")
}

/// One row of `klab lab list -o json|yaml`.
#[derive(Debug, serde::Serialize)]
pub struct Summary<'a> {
    pub name: &'a str,
    pub title: &'a str,
    pub level: &'a str,
    pub minutes: u32,
    pub steps: usize,
    pub needs: &'a [super::spec::Need],
}

/// `klab lab list -o json|yaml`.
pub fn list_structured(
    labs: &[Lab],
    format: crate::cli::OutputFormat,
    out: &mut dyn Write,
) -> io::Result<()> {
    let rows: Vec<Summary> = labs
        .iter()
        .map(|l| Summary {
            name: &l.name,
            title: &l.title,
            level: l.level.as_str(),
            minutes: l.minutes(),
            steps: l.steps.len(),
            needs: &l.needs,
        })
        .collect();
    crate::tools::output::write_structured(out, format, &rows)
}

/// One step on the terminal: where you are, then the instructions.
pub fn step(
    lab: &Lab,
    index: usize,
    cluster: &str,
    cluster_dir: &str,
    work_dir: &str,
    out: &mut dyn Write,
) -> io::Result<()> {
    let Some(s) = lab.steps.get(index) else {
        return Ok(());
    };
    writeln!(
        out,
        "== {} — step {} of {}: {}",
        lab.title,
        index + 1,
        lab.steps.len(),
        s.title
    )?;
    writeln!(
        out,
        "(lab {}, cluster {cluster}, work folder {work_dir})",
        lab.name
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{}",
        expand(&s.instructions, cluster, cluster_dir).trim_end()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "When you are done: `klab lab check`. Stuck? `klab lab hint` ({} hint{}).",
        s.hints.len(),
        if s.hints.len() == 1 { "" } else { "s" }
    )
}

/// A setup action in words, for the book.
pub fn describe_action(action: &Action) -> String {
    match action {
        Action::Shell(script) => {
            format!("runs:\n\n  ```sh\n{}\n  ```\n", indent(script.trim(), "  "))
        }
        Action::Stop(c) => {
            format!("stops {c}: moves `{c}.yaml` out of the manifests folder into the lab's stash")
        }
        Action::SetFlag(f) => format!(
            "sets `{}={}` in `{}.yaml` (`{{old}}` is the old value; the original is stashed)",
            f.flag, f.value, f.manifest
        ),
        Action::Wait(w) => match w.check.to_check() {
            Ok(c) => format!(
                "waits up to {} s until {}",
                w.seconds.unwrap_or(120),
                describe(&c)
            ),
            Err(e) => e,
        },
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{by}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A check in words, for the book and for `klab lab check`'s list.
pub fn describe(check: &Check) -> String {
    match check {
        Check::Pod {
            pod,
            phase,
            restarts,
        } => match restarts {
            Some(n) => format!("pod `{pod}` is {phase} and has restarted at least {n} time(s)"),
            None => format!("pod `{pod}` is {phase}"),
        },
        Check::Node {
            node,
            ready,
            unschedulable,
            untainted,
        } => {
            let mut parts = vec![];
            if let Some(r) = ready {
                parts.push(if *r { "Ready" } else { "NotReady" }.to_owned());
            }
            if let Some(u) = unschedulable {
                parts.push(if *u { "cordoned" } else { "not cordoned" }.to_owned());
            }
            if let Some(t) = untainted {
                parts.push(format!("free of the taint `{t}`"));
            }
            format!("node `{node}` is {}", parts.join(" and "))
        }
        Check::Deployment {
            deployment,
            available,
        } => match available {
            Some(n) => format!("deployment `{deployment}` has at least {n} available replicas"),
            None => format!("deployment `{deployment}` has all its replicas available"),
        },
        Check::Service { service, endpoints } => {
            if *endpoints {
                format!("service `{service}` has ready endpoints")
            } else {
                format!("service `{service}` has no ready endpoints")
            }
        }
        Check::File {
            file,
            chains_to,
            unexpired,
        } => {
            let mut parts = vec![];
            if let Some(ca) = chains_to {
                parts.push(if ca == "cluster-ca" {
                    "is signed by the cluster CA".to_owned()
                } else {
                    format!("is signed by `{ca}`")
                });
            }
            if *unexpired {
                parts.push("is valid now".to_owned());
            }
            format!("the certificate in `{file}` {}", parts.join(" and "))
        }
        Check::Manifest {
            component,
            contains,
            lacks,
        } => {
            let mut parts = vec![];
            if let Some(c) = contains {
                parts.push(format!("contains `{c}`"));
            }
            if let Some(l) = lacks {
                parts.push(format!("no longer contains `{l}`"));
            }
            format!(
                "the static pod manifest `{component}.yaml` {}",
                parts.join(" and ")
            )
        }
        Check::ApiReady => "the API server answers `/readyz`".to_owned(),
        Check::Shell { command } => {
            let one: Vec<&str> = command.trim().lines().collect();
            if one.len() == 1 {
                format!("`{}` succeeds", one[0])
            } else {
                "a shell script succeeds".to_owned()
            }
        }
    }
}

/// What a shell check means, for the book: its `explain` turned from a complaint into a goal
/// is not possible mechanically, so the book shows the command and the complaint.
fn check_line(spec: &super::spec::CheckSpec) -> String {
    let Ok(check) = spec.to_check() else {
        return String::new();
    };
    let mut line = describe(&check);
    if let (Check::Shell { .. }, Some(e)) = (&check, &spec.explain) {
        line.push_str(&format!(" (otherwise: “{}”)", e.trim()));
    }
    line
}

/// A whole lab as Markdown: a book chapter. `heading` is the chapter's first line.
pub fn markdown(lab: &Lab) -> String {
    let (name, dir) = BOOK_CLUSTER;
    let x = |t: &str| expand(t.trim(), name, dir);
    let mut s = String::new();
    s.push_str(&format!("# Lab {}: {}\n\n", &lab.name[..2], lab.title));
    s.push_str(&format!(
        "*{} · about {} minutes · {} steps · `klab lab start {}`*\n\n",
        lab.level.as_str(),
        lab.minutes(),
        lab.steps.len(),
        lab.name
    ));
    s.push_str(
        "<!-- Generated from labs/ by `klab lab export --markdown`; tests/it/lab.rs fails when it drifts. -->\n\n",
    );
    s.push_str(&x(&lab.intro));
    s.push_str("\n\n");
    for (i, step) in lab.steps.iter().enumerate() {
        s.push_str(&format!("## Step {}: {}\n\n", i + 1, step.title));
        s.push_str(&x(&step.instructions));
        s.push_str("\n\n");
        if !step.setup.is_empty() {
            s.push_str(
                "<details><summary>What the setup does (the fault, for instructors)</summary>\n\n",
            );
            for a in &step.setup {
                s.push_str(&format!("- {}\n", x(&describe_action(a))));
            }
            s.push_str("\n</details>\n\n");
        }
        s.push_str("`klab lab check` passes when:\n\n");
        for c in &step.check {
            s.push_str(&format!("- {}\n", check_line(c)));
        }
        s.push('\n');
        for (j, h) in step.hints.iter().enumerate() {
            s.push_str(&format!(
                "<details><summary>Hint {}</summary>\n\n{}\n\n</details>\n\n",
                j + 1,
                x(h)
            ));
        }
        s.push_str(&format!(
            "<details><summary>Solution (what `klab lab solve {}` runs)</summary>\n\n```sh\n{}\n```\n\n</details>\n\n",
            i + 1,
            x(&step.solution)
        ));
    }
    if let Some(f) = &lab.finish {
        s.push_str("## Done\n\n");
        s.push_str(&x(f));
        s.push('\n');
    }
    s
}
