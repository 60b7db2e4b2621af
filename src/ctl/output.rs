//! `-w simple|json|table`: how results are printed on stdout.
//!
//! - simple: etcdctl's, one line per thing, fields separated by `, `;
//! - json: one JSON document per command (`watch`: one per line and event);
//! - table: an ASCII table (comfy-table), every line the same width. Commands with a single
//!   result (get, put, ...) print it as in simple.
//!
//! Writes never panic: a closed stdout (`| head`) is an error sentence like any other.

use std::io::Write;

use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::Table;

use crate::ctl::error::{failed, Result};

/// `-w`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Lines, etcdctl style.
    Simple,
    /// One JSON document.
    Json,
    /// An ASCII table.
    Table,
}

/// Writes `bytes` to stdout and flushes.
///
/// # Errors
/// `Failed` when stdout is closed or full.
pub fn write(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| failed(format!("cannot write to stdout: {e}")))
}

/// Writes `text` and a newline.
///
/// # Errors
/// As [`write`].
pub fn line(text: &str) -> Result<()> {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    write(&bytes)
}

/// Writes `value` as pretty JSON and a newline.
///
/// # Errors
/// As [`write`].
pub fn json(value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| failed(format!("cannot render JSON: {e}")))?;
    line(&text)
}

/// An ASCII table of `rows` under `header`, every line the same width, without a final
/// newline.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_preset(ASCII_FULL_CONDENSED);
    table.set_header(header.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(|cell| one_line(cell)));
    }
    table.to_string()
}

/// A cell on one line (a newline would break the table's rows apart).
fn one_line(cell: &str) -> String {
    cell.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_have_one_width() {
        // Intent: a table with cells of different widths (and a newline in a cell) lines up.
        let text = table(
            &["ENDPOINT", "ID", "ERRORS"],
            &[
                vec!["http://127.0.0.1:1".into(), "1".into(), "".into()],
                vec!["http://h:2".into(), "22".into(), "cannot\nconnect".into()],
            ],
        );
        let widths: Vec<usize> = text.lines().map(|l| l.chars().count()).collect();
        assert!(widths.len() >= 5, "{text}");
        assert!(widths.iter().all(|w| *w == widths[0]), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
    }
}
