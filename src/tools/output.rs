//! Output helpers shared by the tools: kubectl-style aligned tables and `-o json|yaml`.

use std::io::{self, Write};

use serde::Serialize;

use crate::cli::OutputFormat;

/// Writes rows as kubectl does: left-aligned columns, three spaces apart, no trailing spaces.
pub fn write_table<W: Write + ?Sized>(
    out: &mut W,
    header: &[&str],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<pad$}   "));
            } else {
                line.push_str(cell);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
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
}
