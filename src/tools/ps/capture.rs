//! Reading a captured `ps auxww` text (what a learner copies out of `docker exec … ps -auxww`
//! in a kind node), so klab ps explains a real node it cannot reach.

use super::Error;
use super::process::Process;

const COLUMNS: &str = "USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND";

fn is_header(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.first() == Some(&"USER") && words.contains(&"PID") && words.last() == Some(&"COMMAND")
}

/// A shell prompt line around the pasted output: `#`, `$`, `# ps -auxww`.
fn is_prompt(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t == "#" || t == "$" || t.starts_with("# ") || t.starts_with("$ ")
}

/// Splits off the first `n` whitespace-separated fields; the rest of the line stays intact.
fn fields(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut rest = line.trim_start();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        out.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then_some((out, rest))
}

/// Parses the text of `ps auxww`; `what` names the source in errors.
pub fn parse(what: &str, text: &str) -> Result<Vec<Process>, Error> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(header) = lines.iter().position(|l| is_header(l)) else {
        return Err(Error::NotACapture {
            what: what.into(),
            reason: format!("no header line ({COLUMNS}) found; capture it with `ps auxww`"),
        });
    };
    let mut procs = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(header + 1) {
        if is_prompt(line) {
            continue;
        }
        let bad = |reason: String| Error::BadLine {
            what: what.into(),
            line: i + 1,
            reason,
        };
        let Some((f, command)) = fields(line, 10) else {
            let found = line.split_whitespace().count();
            return Err(bad(format!(
                "expected 11 columns ({COLUMNS}), found {found}"
            )));
        };
        let num = |idx: usize, name: &str| -> Result<f64, Error> {
            f[idx]
                .parse::<f64>()
                .map_err(|_| bad(format!("{name} is \"{}\", not a number", f[idx])))
        };
        let pid = f[1]
            .parse::<u32>()
            .map_err(|_| bad(format!("PID is \"{}\", not a number", f[1])))?;
        procs.push(Process {
            user: f[0].into(),
            pid,
            ppid: None,
            cpu: num(2, "%CPU")? as f32,
            mem: num(3, "%MEM")? as f32,
            vsz: num(4, "VSZ")? as u64,
            rss: num(5, "RSS")? as u64,
            tty: f[6].into(),
            stat: f[7].into(),
            start: f[8].into(),
            time: f[9].into(),
            command: command.into(),
            argv: command.split_whitespace().map(String::from).collect(),
        });
    }
    Ok(procs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_command_intact_and_skips_prompts() {
        let text = "# ps -auxww\nUSER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND\n\
                    root 1 0.0 0.0 22268 12780 ? Ss 04:38 0:01 /sbin/init  splash\n#\n";
        let p = parse("x", text).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].command, "/sbin/init  splash");
        assert_eq!(p[0].argv, ["/sbin/init", "splash"]);
    }

    #[test]
    fn names_the_line_that_is_wrong() {
        let text =
            "USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND\nroot x 0 0 1 1 ? S 0 0 a\n";
        let e = parse("cap.txt", text).unwrap_err().to_string();
        assert_eq!(
            e,
            "cap.txt:2: not a `ps auxww` line: PID is \"x\", not a number"
        );
    }
}
