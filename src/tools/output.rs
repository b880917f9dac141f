//! Output helpers shared by the tools: kubectl-style aligned tables and `-o json|yaml`.

use std::io::{self, Write};

use serde::Serialize;

use crate::cli::OutputFormat;

/// Writes rows as kubectl does: left-aligned columns, three spaces apart, no trailing spaces.
/// A cell may hold several lines (see [`wrap`]); its row then grows downwards.
pub fn write_table<W: Write + ?Sized>(
    out: &mut W,
    header: &[&str],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut widths: Vec<usize> = vec![0; header.len()];
    for row in std::iter::once(&header).chain(rows) {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            let w = cell.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            widths[i] = widths[i].max(w);
        }
    }
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(0).max(1);
        for n in 0..height {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let text = cell.get(n).copied().unwrap_or("");
                if i + 1 < cells.len() {
                    let pad = widths.get(i).copied().unwrap_or(0);
                    line.push_str(&format!("{text:<pad$}   "));
                } else {
                    line.push_str(text);
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    Ok(())
}

/// Word-wraps `text` to lines of at most `width` characters (longer words stay whole).
pub fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines.join("\n")
}

/// Serializes `value` as `-o json` or `-o yaml` asked, with a final newline.
pub fn write_structured<W: Write + ?Sized, T: Serialize>(
    out: &mut W,
    format: OutputFormat,
    value: &T,
) -> io::Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
            writeln!(out)
        }
        OutputFormat::Yaml => {
            let text = serde_yaml::to_string(value).map_err(io::Error::other)?;
            out.write_all(text.as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_three_spaces_apart() {
        let mut out = Vec::new();
        let rows = vec![
            vec![
                "gf1".to_string(),
                "Ready".to_string(),
                "v1.32.3".to_string(),
            ],
            vec![
                "worker-long".to_string(),
                "NotReady".to_string(),
                "".to_string(),
            ],
        ];
        write_table(&mut out, &["NAME", "STATUS", "VERSION"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME          STATUS     VERSION\n\
             gf1           Ready      v1.32.3\n\
             worker-long   NotReady\n"
        );
    }

    #[test]
    fn multi_line_cells_grow_their_row() {
        let mut out = Vec::new();
        let rows = vec![vec![
            "--a".to_string(),
            wrap("one two three", 7),
            "x".to_string(),
        ]];
        write_table(&mut out, &["FLAG", "MEANING", "Z"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "FLAG   MEANING   Z\n--a    one two   x\n       three\n"
        );
    }
}
