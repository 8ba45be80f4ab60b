//! Printing results: aligned tables for people, JSON for scripts.
//!
//! Table output is for reading and may change; JSON output is the stable interface (see
//! [`super::json`] for its shape).

use comfy_table::{presets, Cell, Table};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts: one document per command (a stream of JSON lines when following a run).
    Json,
}

/// A list as columns under upper-case headers, `kubectl` style (no borders, so `grep` and `awk`
/// work on it).
pub fn list(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(headers.iter().map(|h| Cell::new(h.to_uppercase())));
    for row in rows {
        table.add_row(row);
    }
    trim_lines(&table.to_string())
}

/// One object as `key: value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        if value.is_empty() {
            continue;
        }
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out.trim_end().to_owned()
}

/// The preset pads every cell with a space; the padding at the ends of lines is noise.
fn trim_lines(text: &str) -> String {
    text.lines()
        .map(|l| l.trim_end().strip_prefix(' ').unwrap_or(l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn print_json(value: &Value) {
    // Serializing a Value cannot fail.
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub fn print_json_line(value: &Value) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// Prints a result in the chosen format: `json` as given, `table` through `people`.
pub fn emit(format: Format, json: Value, people: impl FnOnce() -> String) {
    match format {
        Format::Json => print_json(&json),
        Format::Table => {
            let text = people();
            if !text.is_empty() {
                println!("{text}");
            }
        }
    }
}

/// A count with thousands separators, for people.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_have_upper_case_headers_and_no_borders() {
        let text = list(
            &["id", "mode"],
            vec![
                vec!["orders".into(), "append".into()],
                vec!["u".into(), "full".into()],
            ],
        );
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "ID      MODE");
        assert_eq!(lines[1], "orders  append");
        assert_eq!(lines[2], "u       full");
    }

    #[test]
    fn fields_align_and_skip_empty_values() {
        assert_eq!(
            fields(&[
                ("id", "a".into()),
                ("schedule", "".into()),
                ("mode", "full".into())
            ]),
            "id:   a\nmode: full"
        );
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
    }
}
