//! The tests that keep `docs/configuration.md` complete and true: every key the config
//! accepts has a row there, every row names a key that exists, every `KREPLY_*` variable
//! the code reads is listed, and every JSON example is a valid config.
//!
//! The keys come from the code, not from a list: a config with every optional part filled
//! in is serialized and its object paths walked, so a field added to any config struct
//! fails these tests until the reference describes it. That the serialized keys are the
//! ones the file accepts is tested here too: the serialization reads back unchanged.

use super::Config;
use super::security::MASK;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The reference, read at test time so that editing it needs no rebuild.
const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

/// The one key that is printed but never read: the password, as `***`.
const PRINTED_ONLY: &str = "sasl.password";

/// A config with every optional part present: `"tls"`, `"sasl"` (with the keys it must
/// have) and one flow. Every other key serializes from its default.
const EVERY_PART: &str = r#"{
    "tls": {},
    "sasl": {"mechanism": "PLAIN", "username": "u", "password_env": "PW"},
    "flows": [{"operations": ["approve"], "request_topic": "payment_request"}]
}"#;

fn every_part() -> Value {
    let config = Config::parse(Path::new("k.json"), EVERY_PART).unwrap();
    serde_json::to_value(&config).unwrap()
}

/// Every key of the config, dotted (`http.head_timeout_ms`); a list of objects (`flows`)
/// is a key, and its entries' keys are `flows[].request_topic`.
fn every_key() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    collect(&every_part(), "", &mut keys);
    keys
}

fn collect(value: &Value, prefix: &str, keys: &mut BTreeSet<String>) {
    for (name, inner) in value.as_object().into_iter().flatten() {
        let path = format!("{prefix}{name}");
        match inner {
            Value::Object(_) => collect(inner, &format!("{path}."), keys),
            Value::Array(items) if items.first().is_some_and(Value::is_object) => {
                collect(&items[0], &format!("{path}[]."), keys);
                keys.insert(path);
            }
            _ => {
                keys.insert(path);
            }
        }
    }
}

fn reference() -> String {
    std::fs::read_to_string(REFERENCE).unwrap_or_else(|e| panic!("cannot read {REFERENCE}: {e}"))
}

/// The first cell of every row of the tables whose header's first cell is `header`: each
/// must be one code span, whose text is returned.
fn first_cells(markdown: &str, header: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut table: Option<String> = None;
    for line in markdown.lines().map(str::trim) {
        let Some(row) = line.strip_prefix('|') else {
            table = None;
            continue;
        };
        let first = row.split('|').next().unwrap_or_default().trim();
        match &table {
            None => table = Some(first.to_string()),
            Some(_) if first.starts_with("---") => {}
            Some(name) if name == header => {
                let span = first.strip_prefix('`').and_then(|c| c.strip_suffix('`'));
                let span = span.filter(|s| !s.contains('`'));
                cells.push(
                    span.unwrap_or_else(|| panic!("a row's first cell is not one `key`: {line}"))
                        .to_string(),
                );
            }
            Some(_) => {}
        }
    }
    cells
}

#[test]
fn every_key_of_the_config_has_a_row_in_the_reference() {
    let rows: BTreeSet<String> = first_cells(&reference(), "key").into_iter().collect();
    let missing: Vec<String> = every_key().difference(&rows).cloned().collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md has no row for {missing:?}; add one to its table (default, unit, role, meaning)"
    );
}

#[test]
fn every_row_of_the_reference_names_a_key_once() {
    let rows = first_cells(&reference(), "key");
    let keys = every_key();
    let unknown: Vec<&String> = rows.iter().filter(|row| !keys.contains(*row)).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md has rows for {unknown:?}, which no config has; remove or rename them"
    );
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = rows.iter().filter(|row| !seen.insert(*row)).collect();
    assert!(
        twice.is_empty(),
        "docs/configuration.md lists {twice:?} twice"
    );
}

/// The serialized keys are the keys the file accepts: the serialization, less the printed
/// password, reads back as the same config (unknown keys are refused, so an extra one
/// would fail), and the password reads as the mask.
#[test]
fn the_serialized_config_reads_back_unchanged() {
    let mut printed = every_part();
    assert_eq!(printed["sasl"]["password"], MASK);
    printed["sasl"].as_object_mut().unwrap().remove("password");
    let again = Config::parse(Path::new("k.json"), &printed.to_string()).unwrap();
    let mut reprinted = serde_json::to_value(&again).unwrap();
    reprinted["sasl"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    assert_eq!(reprinted, printed);
    assert!(every_key().contains(PRINTED_ONLY));
}

/// The `KREPLY_*` names in `src/` (the config overrides and `KREPLY_CONFIG`).
fn variables_in_the_code() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut folders = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.extend(variables_in(&std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    found
}

fn variables_in(text: &str) -> Vec<String> {
    const PREFIX: &str = "KREPLY_";
    let mut names = Vec::new();
    for (at, _) in text.match_indices(PREFIX) {
        let rest = &text[at + PREFIX.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            names.push(format!("{PREFIX}{}", &rest[..end]));
        }
    }
    names
}

#[test]
fn every_variable_the_code_reads_has_a_row_and_every_row_is_read() {
    let rows: BTreeSet<String> = first_cells(&reference(), "variable").into_iter().collect();
    let code = variables_in_the_code();
    assert!(code.contains("KREPLY_BROKERS"), "{code:?}");
    let missing: Vec<&String> = code.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md's environment table has no row for {missing:?}"
    );
    let stale: Vec<&String> = rows
        .iter()
        .filter(|row| row.starts_with("KREPLY_") && !code.contains(*row))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/configuration.md lists {stale:?}, which nothing in src/ reads"
    );
}

/// The text of every ```json block of `markdown`.
fn json_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in markdown.lines() {
        match (&mut open, line.trim()) {
            (None, "```json") => open = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                open = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_json_example_in_the_reference_is_a_valid_config() {
    let blocks = json_blocks(&reference());
    assert!(
        blocks.len() >= 2,
        "the minimal configs are gone: {blocks:?}"
    );
    for block in blocks {
        let config = Config::parse(Path::new("/etc/kreply/kreply.json"), &block)
            .unwrap_or_else(|e| panic!("{e}:\n{block}"));
        if let Err(e) = config.validate(Path::new("example")) {
            panic!("{e}:\n{block}");
        }
    }
}

#[test]
fn the_walk_names_nested_keys_and_list_entries_and_the_table_reader_reads_only_key_tables() {
    let mut keys = BTreeSet::new();
    let value = serde_json::json!({"a": 1, "b": {"c": null}, "f": [{"g": []}], "l": ["x"]});
    collect(&value, "", &mut keys);
    let expected = ["a", "b.c", "f", "f[].g", "l"].map(String::from);
    assert_eq!(keys, BTreeSet::from(expected));
    let markdown =
        "| key | x |\n|---|---|\n| `a.b` | y |\n\n| variable | x |\n|---|---|\n| `V` | z |\n";
    assert_eq!(first_cells(markdown, "key"), ["a.b"]);
    assert_eq!(first_cells(markdown, "variable"), ["V"]);
    // Spelt in pieces, so that the scan of src/ does not take them for variables.
    let text = format!("x {p}A_B, {p}\"c", p = "KREPLY_");
    assert_eq!(variables_in(&text), [format!("{}A_B", "KREPLY_")]);
}
