//! `klab lab`: guided labs that check themselves (klab's own; in the spirit of Killercoda and
//! CKA practice scenarios). A lab is `labs/NN-name/lab.yaml` ([`spec`]); the engine
//! ([`engine`]) starts it on a cluster made by `klab up` ([`cluster`]), injects its faults,
//! runs its checks ([`check`]) and keeps the learner's place ([`progress`]); [`render`] shows
//! it on the terminal and as the book's chapters; [`killercoda`] exports it.
//!
//! The labs are compiled into the binary ([`catalog`]), so `klab lab` works from any folder;
//! `--labs-dir` reads them from a folder instead (while writing a lab).

pub mod catalog;
pub mod check;
pub mod cluster;
pub mod engine;
pub mod killercoda;
pub mod progress;
pub mod render;
pub mod spec;

use std::io::Write;

use crate::cli::{LabArgs, LabCommand};

pub use cluster::Cluster;
pub use engine::Engine;
pub use spec::Lab;

/// `klab lab validate`: every lab parses and is valid; prints one line per lab.
pub fn validate(labs: &[Lab], out: &mut dyn Write) -> std::io::Result<()> {
    for l in labs {
        let checks: usize = l.steps.iter().map(|s| s.check.len()).sum();
        writeln!(
            out,
            "ok   {:<24} {} steps, {} checks, {} hints",
            l.name,
            l.steps.len(),
            checks,
            l.steps.iter().map(|s| s.hints.len()).sum::<usize>()
        )?;
    }
    writeln!(out, "{} labs are valid.", labs.len())
}

/// `klab lab check` found something still wrong (it said what): exit non-zero.
#[derive(Debug, thiserror::Error)]
#[error("the step is not done yet (see the FAIL lines above)")]
pub struct NotYet;

/// Runs a `klab lab` command line.
pub fn run(args: LabArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let labs = catalog::load(args.labs_dir.as_deref())?;
    let cluster = Cluster::new(&args.cluster, args.cluster_dir.clone());
    let engine = Engine {
        labs: &labs,
        cluster,
        now: time::OffsetDateTime::now_utc(),
    };
    match args.command {
        LabCommand::List { output: None } => render::list(&labs, out)?,
        LabCommand::List {
            output: Some(format),
        } => render::list_structured(&labs, format, out)?,
        LabCommand::Validate => validate(&labs, out)?,
        LabCommand::Start { name } => engine.start(&name, out)?,
        LabCommand::Status => engine.status(out)?,
        LabCommand::Check { step } => {
            if !engine.check(step, out)? {
                // Killercoda's verify scripts and shell users read the exit code.
                return Err(NotYet.into());
            }
        }
        LabCommand::Hint => engine.hint(out)?,
        LabCommand::Reset { name } => engine.reset(name.as_deref(), out)?,
        LabCommand::Solve { step } => engine.solve(step, out)?,
        LabCommand::Export {
            killercoda,
            markdown,
            name,
        } => {
            let lab = engine.lab(&name)?;
            if let Some(dir) = killercoda {
                let files = killercoda::export(lab, &dir)?;
                writeln!(
                    out,
                    "wrote {} files of a Killercoda scenario to {}",
                    files.len(),
                    dir.display()
                )?;
            }
            if markdown {
                write!(out, "{}", render::markdown(lab))?;
            }
        }
    }
    Ok(())
}
