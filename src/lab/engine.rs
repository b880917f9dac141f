//! The lab engine (klab's own): start, status, check, hint, solve and reset, with progress on
//! disk. Setups inject real faults (a manifest moved away, a flag changed) and remember what
//! they changed in the lab's stash, so reset can put it back.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::check::{Checker, Outcome};
use super::cluster::Cluster;
use super::progress::{Progress, ProgressError, write_atomic};
use super::render;
use super::spec::{Action, Lab};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Progress(#[from] ProgressError),
    #[error("no lab named \"{name}\" (see `klab lab list`)")]
    UnknownLab { name: String },
    #[error("no lab is in progress on cluster {cluster}: start one with `klab lab start NAME`")]
    NotStarted { cluster: String },
    #[error("lab {lab} has steps 1 to {steps}; there is no step {step}")]
    NoSuchStep {
        lab: String,
        steps: usize,
        step: usize,
    },
    #[error("step {step} is not reached yet: you are on step {current} of lab {lab}")]
    NotReached {
        lab: String,
        step: usize,
        current: usize,
    },
    #[error("the cluster {name} is not up ({} is missing) and `klab up` failed: {reason}", dir.join("cluster.json").display())]
    Up {
        name: String,
        dir: PathBuf,
        reason: String,
    },
    #[error("{what}: {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("step {step}'s setup failed ({what}): {detail}")]
    Setup {
        step: usize,
        what: String,
        detail: String,
    },
    #[error("reset of lab {lab} failed ({what}): {detail}")]
    Reset {
        lab: String,
        what: String,
        detail: String,
    },
    #[error("step {step}'s solution failed: {detail}")]
    Solution { step: usize, detail: String },
    #[error("after step {step}'s solution the checks still fail: {detail}")]
    StillFailing { step: usize, detail: String },
    #[error("{} says step {step}, but the lab has steps 1 to {steps}: run `klab lab reset`", path.display())]
    BadProgress {
        path: PathBuf,
        step: usize,
        steps: usize,
    },
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::Io { what, path, source }
}

const SHELL_TIMEOUT: Duration = Duration::from_secs(300);

/// The labs and one cluster.
pub struct Engine<'a> {
    pub labs: &'a [Lab],
    pub cluster: Cluster,
    /// The clock certificate checks use.
    pub now: OffsetDateTime,
}

impl<'a> Engine<'a> {
    pub fn lab(&self, name: &str) -> Result<&'a Lab, EngineError> {
        let labs: &'a [Lab] = self.labs;
        labs.iter()
            .find(|l| {
                l.name == name || l.name.get(3..) == Some(name) || l.name.get(..2) == Some(name)
            })
            .ok_or_else(|| EngineError::UnknownLab {
                name: name.to_owned(),
            })
    }

    fn current(&self) -> Result<(Progress, &'a Lab), EngineError> {
        let p = Progress::load(&self.cluster.dir)?.ok_or_else(|| EngineError::NotStarted {
            cluster: self.cluster.name.clone(),
        })?;
        let lab = self.lab(&p.lab)?;
        if p.step == 0 || p.step > lab.steps.len() + 1 {
            return Err(EngineError::BadProgress {
                path: Progress::path(&self.cluster.dir),
                step: p.step,
                steps: lab.steps.len(),
            });
        }
        Ok((p, lab))
    }

    fn show(&self, lab: &Lab, index: usize, out: &mut dyn Write) -> Result<(), EngineError> {
        let work = self.cluster.work_dir(&lab.name);
        render::step(
            lab,
            index,
            &self.cluster.name,
            &self.cluster.dir.display().to_string(),
            &work.display().to_string(),
            out,
        )?;
        Ok(())
    }

    /// `klab lab start NAME`: brings the cluster up if needed, runs step 1's setup, shows it.
    pub fn start(&self, name: &str, out: &mut dyn Write) -> Result<(), EngineError> {
        let lab = self.lab(name)?;
        if let Some(p) = Progress::load(&self.cluster.dir)? {
            if p.lab == lab.name {
                writeln!(
                    out,
                    "Lab {} is already in progress (step {}); `klab lab reset` starts it over.\n",
                    lab.name, p.step
                )?;
                return self.status(out);
            }
            writeln!(out, "Resetting lab {} first.", p.lab)?;
            self.reset(Some(&p.lab), out)?;
        }
        self.ensure_up(out)?;
        let work = self.cluster.work_dir(&lab.name);
        std::fs::create_dir_all(&work).map_err(io("creating the lab's work folder", &work))?;
        let mut p = Progress {
            lab: lab.name.clone(),
            step: 1,
            hints_shown: 0,
            started: self
                .now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            setup_done: false,
        };
        p.save(&self.cluster.dir)?;
        writeln!(out, "{}\n", self.cluster.expand(lab.intro.trim()))?;
        self.enter(lab, &mut p, out)
    }

    /// Runs `klab up` when the cluster folder has no `cluster.json`.
    fn ensure_up(&self, out: &mut dyn Write) -> Result<(), EngineError> {
        if self.cluster.is_up() {
            return Ok(());
        }
        writeln!(
            out,
            "The cluster {} is not up: running `klab up --name {}`.",
            self.cluster.name, self.cluster.name
        )?;
        out.flush()?;
        let up_err = |reason: String| EngineError::Up {
            name: self.cluster.name.clone(),
            dir: self.cluster.dir.clone(),
            reason,
        };
        let exe = std::env::current_exe().map_err(|e| up_err(e.to_string()))?;
        let status = std::process::Command::new(exe)
            .args(["up", "--name", &self.cluster.name, "--dir"])
            .arg(&self.cluster.dir)
            .status()
            .map_err(|e| up_err(e.to_string()))?;
        if !status.success() || !self.cluster.is_up() {
            return Err(up_err(format!("it exited with {status}")));
        }
        Ok(())
    }

    /// Runs the current step's setup if it has not run, then shows the step.
    fn enter(&self, lab: &Lab, p: &mut Progress, out: &mut dyn Write) -> Result<(), EngineError> {
        if p.step > lab.steps.len() {
            writeln!(out, "Lab {} is complete.", lab.name)?;
            if let Some(f) = &lab.finish {
                writeln!(out, "\n{}", self.cluster.expand(f.trim()))?;
            }
            return Ok(());
        }
        if !p.setup_done {
            let step = &lab.steps[p.step - 1];
            for (i, action) in step.setup.iter().enumerate() {
                self.act(lab, action)
                    .map_err(|(what, detail)| EngineError::Setup {
                        step: p.step,
                        what: format!("setup[{i}]: {what}"),
                        detail,
                    })?;
            }
            p.setup_done = true;
            p.save(&self.cluster.dir)?;
        }
        self.show(lab, p.step - 1, out)
    }

    /// Runs one setup or reset action; an error is (what, detail).
    fn act(&self, lab: &Lab, action: &Action) -> Result<(), (String, String)> {
        let stash = self.cluster.stash(&lab.name).join("manifests");
        match action {
            Action::Shell(script) => {
                let got = self
                    .cluster
                    .shell(&lab.name, script, SHELL_TIMEOUT)
                    .map_err(|e| ("shell".to_owned(), e.to_string()))?;
                if !got.success() {
                    return Err(("shell".into(), got.tail(5)));
                }
            }
            Action::Stop(component) => {
                let from = self.cluster.manifest(component);
                let to = stash.join(format!("{component}.yaml"));
                if !from.exists() {
                    return Err((
                        format!("stop {component}"),
                        format!("{} does not exist", from.display()),
                    ));
                }
                std::fs::create_dir_all(&stash)
                    .and_then(|_| std::fs::rename(&from, &to))
                    .map_err(|e| (format!("stop {component}"), e.to_string()))?;
            }
            Action::SetFlag(f) => {
                let what = format!("set-flag {} {}", f.manifest, f.flag);
                let path = self.cluster.manifest(&f.manifest);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| (what.clone(), format!("{}: {e}", path.display())))?;
                let backup = stash.join(format!("{}.yaml", f.manifest));
                if !backup.exists() {
                    std::fs::create_dir_all(&stash)
                        .and_then(|_| write_atomic(&backup, text.as_bytes()))
                        .map_err(|e| (what.clone(), e.to_string()))?;
                }
                let changed =
                    set_flag(&text, &f.flag, &self.cluster.expand(&f.value)).ok_or_else(|| {
                        (
                            what.clone(),
                            format!("{} has no {} flag", path.display(), f.flag),
                        )
                    })?;
                write_atomic(&path, changed.as_bytes()).map_err(|e| (what, e.to_string()))?;
            }
            Action::Wait(w) => {
                let check = w.check.to_check().map_err(|e| ("wait".to_owned(), e))?;
                let secs = w.seconds.unwrap_or(120);
                let got = self.wait_for(&lab.name, &[(check, w.check.explain.clone())], secs);
                if let Some(o) = got.iter().find(|o| !o.passed) {
                    return Err((format!("waited {secs} s"), o.message.clone()));
                }
            }
        }
        Ok(())
    }

    /// Runs checks until all pass or `secs` pass; returns the last outcomes.
    fn wait_for(
        &self,
        lab: &str,
        checks: &[(super::spec::Check, Option<String>)],
        secs: u64,
    ) -> Vec<Outcome> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let outcomes = self.run_checks(lab, checks);
            if outcomes.iter().all(|o| o.passed) || Instant::now() >= deadline {
                return outcomes;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn run_checks(
        &self,
        lab: &str,
        checks: &[(super::spec::Check, Option<String>)],
    ) -> Vec<Outcome> {
        let mut checker = match Checker::new(&self.cluster, lab, self.now) {
            Ok(c) => c,
            Err(e) => {
                return vec![Outcome {
                    passed: false,
                    message: format!("could not start the checker: {e}"),
                }];
            }
        };
        checks
            .iter()
            .map(|(c, explain)| checker.run(c, explain.as_deref()))
            .collect()
    }

    fn step_checks(lab: &Lab, index: usize) -> Vec<(super::spec::Check, Option<String>)> {
        lab.steps[index]
            .check
            .iter()
            .filter_map(|c| c.to_check().ok().map(|k| (k, c.explain.clone())))
            .collect()
    }

    /// `klab lab status`.
    pub fn status(&self, out: &mut dyn Write) -> Result<(), EngineError> {
        let (p, lab) = self.current()?;
        writeln!(out, "lab:      {} ({})", lab.name, lab.title)?;
        writeln!(
            out,
            "cluster:  {} ({})",
            self.cluster.name,
            self.cluster.dir.display()
        )?;
        writeln!(out, "started:  {}", p.started)?;
        if p.step > lab.steps.len() {
            writeln!(
                out,
                "progress: complete ({} of {} steps)",
                lab.steps.len(),
                lab.steps.len()
            )?;
            return Ok(());
        }
        let step = &lab.steps[p.step - 1];
        writeln!(
            out,
            "progress: step {} of {} ({}), {} of {} hints shown",
            p.step,
            lab.steps.len(),
            step.title,
            p.hints_shown.min(step.hints.len()),
            step.hints.len()
        )?;
        writeln!(out)?;
        self.show(lab, p.step - 1, out)
    }

    /// `klab lab check`: runs the current step's checks (or those of `step`), says what is
    /// still wrong, and moves on when they pass. Returns whether they passed.
    pub fn check(&self, step: Option<usize>, out: &mut dyn Write) -> Result<bool, EngineError> {
        let (mut p, lab) = self.current()?;
        if p.step > lab.steps.len() && step.is_none() {
            writeln!(out, "Lab {} is complete: every step passed.", lab.name)?;
            return Ok(true);
        }
        let n = step.unwrap_or(p.step);
        if n == 0 || n > lab.steps.len() {
            return Err(EngineError::NoSuchStep {
                lab: lab.name.clone(),
                steps: lab.steps.len(),
                step: n,
            });
        }
        if n == p.step && !p.setup_done {
            // The setup failed or was interrupted last time: run it again first.
            self.enter(lab, &mut p, &mut std::io::sink())?;
        }
        let outcomes = self.run_checks(&lab.name, &Self::step_checks(lab, n - 1));
        writeln!(
            out,
            "Step {} of {}: {}",
            n,
            lab.steps.len(),
            lab.steps[n - 1].title
        )?;
        for o in &outcomes {
            writeln!(
                out,
                "  {} {}",
                if o.passed { "ok  " } else { "FAIL" },
                o.message
            )?;
        }
        let failing = outcomes.iter().filter(|o| !o.passed).count();
        if failing > 0 {
            writeln!(
                out,
                "\nNot yet: {failing} of {} checks still fail. Fix what FAIL says and run `klab lab check` again (`klab lab hint` helps).",
                outcomes.len()
            )?;
            return Ok(false);
        }
        if n != p.step {
            writeln!(out, "\nStep {n} passes.")?;
            return Ok(true);
        }
        self.advance(lab, &mut p, out)?;
        Ok(true)
    }

    fn advance(&self, lab: &Lab, p: &mut Progress, out: &mut dyn Write) -> Result<(), EngineError> {
        writeln!(out, "\nStep {} done.", p.step)?;
        p.step += 1;
        p.hints_shown = 0;
        p.setup_done = false;
        p.save(&self.cluster.dir)?;
        writeln!(out)?;
        self.enter(lab, p, out)
    }

    /// `klab lab hint`: the next hint of the current step.
    pub fn hint(&self, out: &mut dyn Write) -> Result<(), EngineError> {
        let (mut p, lab) = self.current()?;
        let Some(step) = lab.steps.get(p.step.wrapping_sub(1)) else {
            writeln!(out, "Lab {} is complete: no hints needed.", lab.name)?;
            return Ok(());
        };
        if p.hints_shown >= step.hints.len() {
            writeln!(
                out,
                "No more hints for step {}. `klab lab solve {}` shows and runs the solution.",
                p.step, p.step
            )?;
            return Ok(());
        }
        p.hints_shown += 1;
        p.save(&self.cluster.dir)?;
        writeln!(
            out,
            "Hint {} of {} for step {}:\n\n{}",
            p.hints_shown,
            step.hints.len(),
            p.step,
            self.cluster.expand(step.hints[p.hints_shown - 1].trim())
        )?;
        Ok(())
    }

    /// `klab lab solve STEP`: shows and runs a step's solution, waits for its checks, and moves
    /// on when it was the current step.
    pub fn solve(&self, step: usize, out: &mut dyn Write) -> Result<(), EngineError> {
        let (mut p, lab) = self.current()?;
        if step == 0 || step > lab.steps.len() {
            return Err(EngineError::NoSuchStep {
                lab: lab.name.clone(),
                steps: lab.steps.len(),
                step,
            });
        }
        if step > p.step {
            return Err(EngineError::NotReached {
                lab: lab.name.clone(),
                step,
                current: p.step,
            });
        }
        if step == p.step && !p.setup_done {
            self.enter(lab, &mut p, &mut std::io::sink())?;
        }
        let s = &lab.steps[step - 1];
        writeln!(out, "Solution of step {step} ({}):\n", s.title)?;
        for line in s.solution.trim().lines() {
            writeln!(out, "    {line}")?;
        }
        writeln!(out)?;
        out.flush()?;
        let got = self
            .cluster
            .shell(&lab.name, &s.solution, SHELL_TIMEOUT)
            .map_err(|e| EngineError::Solution {
                step,
                detail: e.to_string(),
            })?;
        if !got.output.trim().is_empty() {
            writeln!(out, "{}", got.output.trim_end())?;
        }
        if !got.success() {
            return Err(EngineError::Solution {
                step,
                detail: got.tail(5),
            });
        }
        let outcomes = self.wait_for(
            &lab.name,
            &Self::step_checks(lab, step - 1),
            s.timeout.unwrap_or(120),
        );
        if let Some(o) = outcomes.iter().find(|o| !o.passed) {
            return Err(EngineError::StillFailing {
                step,
                detail: o.message.clone(),
            });
        }
        for o in &outcomes {
            writeln!(out, "  ok   {}", o.message)?;
        }
        if step == p.step {
            self.advance(lab, &mut p, out)?;
        }
        Ok(())
    }

    /// `klab lab reset [NAME]`: puts back what the lab changed (stashed manifests, its reset
    /// actions, its namespaces), removes its work folder and forgets the progress.
    pub fn reset(&self, name: Option<&str>, out: &mut dyn Write) -> Result<(), EngineError> {
        let progress = Progress::load(&self.cluster.dir)?;
        let lab = match (name, &progress) {
            (Some(n), _) => self.lab(n)?,
            (None, Some(p)) => self.lab(&p.lab)?,
            (None, None) => {
                return Err(EngineError::NotStarted {
                    cluster: self.cluster.name.clone(),
                });
            }
        };
        let reset_err = |what: &str, detail: String| EngineError::Reset {
            lab: lab.name.clone(),
            what: what.to_owned(),
            detail,
        };
        let stash = self.cluster.stash(&lab.name).join("manifests");
        if let Ok(entries) = std::fs::read_dir(&stash) {
            for e in entries.flatten() {
                let to = self.cluster.manifests().join(e.file_name());
                let text = std::fs::read(e.path())
                    .map_err(|er| reset_err("reading the stash", er.to_string()))?;
                write_atomic(&to, &text)
                    .map_err(|er| reset_err("restoring a manifest", er.to_string()))?;
                std::fs::remove_file(e.path())
                    .map_err(|er| reset_err("emptying the stash", er.to_string()))?;
                writeln!(out, "restored {}", to.display())?;
            }
        }
        for (i, action) in lab.reset.iter().enumerate() {
            self.act(lab, action)
                .map_err(|(what, detail)| reset_err(&format!("reset[{i}]: {what}"), detail))?;
        }
        if !lab.namespaces.is_empty() && self.cluster.kubeconfig().exists() {
            let script = format!(
                "kubectl delete namespace --ignore-not-found --wait=true --timeout=120s {}",
                lab.namespaces.join(" ")
            );
            let got = self
                .cluster
                .shell(&lab.name, &script, SHELL_TIMEOUT)
                .map_err(|e| reset_err("deleting namespaces", e.to_string()))?;
            if !got.success() {
                return Err(reset_err("deleting namespaces", got.tail(3)));
            }
            writeln!(out, "deleted namespaces {}", lab.namespaces.join(", "))?;
        }
        let work = self.cluster.work_dir(&lab.name);
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .map_err(|e| reset_err("removing the work folder", e.to_string()))?;
        }
        let _ = std::fs::remove_dir_all(self.cluster.stash(&lab.name));
        if progress.as_ref().is_some_and(|p| p.lab == lab.name) {
            Progress::remove(&self.cluster.dir)?;
        }
        writeln!(out, "Lab {} is reset.", lab.name)?;
        Ok(())
    }
}

/// Replaces the value of `--flag=…` in a manifest's text; `{old}` in `value` is the old value.
/// `None` when the flag is not there.
pub fn set_flag(text: &str, flag: &str, value: &str) -> Option<String> {
    let prefix = format!("{flag}=");
    let mut found = false;
    let mut lines: Vec<String> = vec![];
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let (dash, rest) = match trimmed.strip_prefix("- ") {
            Some(r) => ("- ", r.trim_start()),
            None => ("", trimmed),
        };
        let (quote, inner) = match rest.strip_prefix('"') {
            Some(r) => ("\"", r.strip_suffix('"').unwrap_or(r)),
            None => ("", rest),
        };
        if !found && let Some(old) = inner.strip_prefix(&prefix) {
            found = true;
            let new = value.replace("{old}", old);
            lines.push(format!("{indent}{dash}{quote}{prefix}{new}{quote}"));
        } else {
            lines.push(line.to_owned());
        }
    }
    found.then(|| {
        let mut s = lines.join("\n");
        if text.ends_with('\n') {
            s.push('\n');
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_flag_changes_one_flag_and_keeps_the_rest() {
        let text = "spec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --etcd-servers=https://127.0.0.1:2379\n    - \"--secure-port=6443\"\n";
        let got = set_flag(text, "--etcd-servers", "https://127.0.0.1:12379").unwrap();
        assert_eq!(got, text.replace(":2379", ":12379"));
        let got = set_flag(text, "--secure-port", "{old}0").unwrap();
        assert!(got.contains("    - \"--secure-port=64430\"\n"), "{got}");
        assert_eq!(set_flag(text, "--nope", "x"), None);
    }
}
