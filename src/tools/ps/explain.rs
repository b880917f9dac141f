//! `klab ps --flags`: each component's command line, flag by flag, with what the flag means
//! and why it matters for security, from the catalog of upstream flags.

use std::io::Write;

use serde::Serialize;

use super::catalog::{self, COMPONENTS};
use super::{Error, Process};
use crate::cli::OutputFormat;
use crate::tools::output::{wrap, write_structured, write_table};

#[derive(Debug, Serialize)]
pub struct ExplainedFlag {
    pub name: String,
    pub value: Option<String>,
    pub meaning: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Explained {
    pub component: &'static str,
    pub pid: u32,
    pub role: &'static str,
    pub flags: Vec<ExplainedFlag>,
}

fn explain_one(p: &Process) -> Option<Explained> {
    let c = p.component()?;
    let flags = p
        .flags()
        .into_iter()
        .map(|f| {
            let doc = c.flags.iter().find(|d| d.name == f.name);
            ExplainedFlag {
                meaning: doc.map(|d| d.meaning),
                security: doc.and_then(|d| d.security),
                default: doc.and_then(|d| d.default),
                name: f.name,
                value: f.value,
            }
        })
        .collect();
    Some(Explained {
        component: c.name,
        pid: p.pid,
        role: c.role,
        flags,
    })
}

pub fn explain(
    procs: &[Process],
    only: Option<&str>,
    format: Option<OutputFormat>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let wanted = match only {
        Some(name) => Some(catalog::find(name).ok_or_else(|| {
            Error::UnknownComponent {
                name: name.into(),
                known: COMPONENTS
                    .iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?),
        None => None,
    };
    let items: Vec<Explained> = procs
        .iter()
        .filter(|p| wanted.is_none_or(|w| p.component().is_some_and(|c| c.name == w.name)))
        .filter_map(explain_one)
        .filter(|e| wanted.is_some() || !e.flags.is_empty())
        .collect();
    if let Some(f) = format {
        write_structured(out, f, &items)?;
        return Ok(());
    }
    if items.is_empty() {
        let what = wanted.map(|w| w.name).unwrap_or("no cluster component");
        writeln!(out, "{what} is not running here.")?;
        return Ok(());
    }
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{} (pid {})", e.component, e.pid)?;
        writeln!(out, "{}\n", wrap(e.role, 96))?;
        if e.flags.is_empty() {
            writeln!(out, "(started without flags)")?;
            continue;
        }
        let rows: Vec<Vec<String>> = e
            .flags
            .iter()
            .map(|f| {
                let mut meaning = f
                    .meaning
                    .unwrap_or("(not in klab's catalog of this component's flags)")
                    .to_string();
                if let Some(s) = f.security {
                    meaning.push_str("\nSecurity: ");
                    meaning.push_str(s);
                }
                let value = f.value.clone().unwrap_or_else(|| "(true)".into());
                vec![
                    format!("--{}", f.name),
                    wrap(&value.replace(',', ", "), 40).replace(", ", ","),
                    wrap(&meaning, 64),
                ]
            })
            .collect();
        write_table(out, &["FLAG", "VALUE", "MEANING"], &rows)?;
    }
    Ok(())
}
