//! Reading this machine's processes from /proc, computing each column the way procps' `ps aux`
//! does (%CPU over the process's lifetime, STAT flags, START as time or date).

use std::collections::HashMap;

use procfs::process::{Process as ProcfsProcess, all_processes};
use procfs::{Current, Meminfo};
use time::OffsetDateTime;

use super::Error;
use super::process::Process;

fn users() -> HashMap<u32, String> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

fn tty_name(tty_nr: i32) -> String {
    let (major, minor) = (
        (tty_nr >> 8) & 0xfff,
        (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00),
    );
    match (tty_nr, major) {
        (0, _) => "?".into(),
        (_, 136..=143) => format!("pts/{}", minor + (major - 136) * 256),
        (_, 4) => format!("tty{minor}"),
        _ => "?".into(),
    }
}

fn start_column(start: OffsetDateTime, now: OffsetDateTime) -> String {
    let f = if (now - start).whole_hours() < 24 {
        time::macros::format_description!("[hour]:[minute]")
    } else if start.year() == now.year() {
        time::macros::format_description!("[month repr:short][day]")
    } else {
        time::macros::format_description!("[year]")
    };
    start.format(&f).unwrap_or_default()
}

fn one(
    p: &ProcfsProcess,
    users: &HashMap<u32, String>,
    boot: i64,
    now: OffsetDateTime,
    mem_total_kib: u64,
) -> Option<Process> {
    let stat = p.stat().ok()?;
    let argv = p.cmdline().ok().unwrap_or_default();
    let command = if argv.is_empty() {
        format!("[{}]", stat.comm)
    } else {
        argv.join(" ")
    };
    let ticks = procfs::ticks_per_second() as f64;
    let page_kib = procfs::page_size() / 1024;
    let started = boot as f64 + stat.starttime as f64 / ticks;
    let cpu_secs = (stat.utime + stat.stime) as f64 / ticks;
    let elapsed = now.unix_timestamp() as f64 - started;
    let cpu = if elapsed > 0.0 {
        (cpu_secs / elapsed * 100.0) as f32
    } else {
        0.0
    };
    let rss = stat.rss * page_kib;
    let mut s = stat.state.to_string();
    if stat.nice < 0 {
        s.push('<');
    } else if stat.nice > 0 {
        s.push('N');
    }
    if stat.session == stat.pid {
        s.push('s');
    }
    if stat.num_threads > 1 {
        s.push('l');
    }
    if stat.tpgid == stat.pgrp {
        s.push('+');
    }
    let total = cpu_secs as u64;
    let start = OffsetDateTime::from_unix_timestamp(started as i64).unwrap_or(now);
    Some(Process {
        user: p
            .uid()
            .ok()
            .and_then(|u| users.get(&u).cloned())
            .unwrap_or_else(|| {
                p.uid()
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| "?".into())
            }),
        pid: stat.pid as u32,
        ppid: Some(stat.ppid as u32),
        cpu,
        mem: if mem_total_kib > 0 {
            rss as f32 * 100.0 / mem_total_kib as f32
        } else {
            0.0
        },
        vsz: stat.vsize / 1024,
        rss,
        tty: tty_name(stat.tty_nr),
        stat: s,
        start: start_column(start, now),
        time: format!("{}:{:02}", total / 60, total % 60),
        command,
        argv,
    })
}

/// Every process on this machine that can be read (others vanish between listing and reading).
pub fn processes() -> Result<Vec<Process>, Error> {
    let users = users();
    let boot = procfs::boot_time_secs().map_err(|e| Error::Proc(e.to_string()))? as i64;
    let mem = Meminfo::current().map(|m| m.mem_total / 1024).unwrap_or(0);
    let now = OffsetDateTime::now_utc();
    let all = all_processes().map_err(|e| Error::Proc(e.to_string()))?;
    Ok(all
        .filter_map(Result::ok)
        .filter_map(|p| one(&p, &users, boot, now, mem))
        .collect())
}
