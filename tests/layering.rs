//! The layer rule holds: every `crate::<layer>` path in a module under `src/` names its own
//! layer or one its row of the table in ARCHITECTURE.md ("## Layers") lists. The rule is read
//! from that file, so the document and the code cannot drift apart; there is no exception list.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer -> the layers it may depend on, from ARCHITECTURE.md's table.
fn rule() -> BTreeMap<String, BTreeSet<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("ARCHITECTURE.md has a Layers section");
    let mut rule = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let deps = cells[cells.len() - 2];
        let allowed: BTreeSet<String> = if deps == "nothing" {
            BTreeSet::new()
        } else {
            deps.split(',')
                .map(|d| d.trim().trim_matches('`').to_string())
                .collect()
        };
        rule.insert(name, allowed);
    }
    assert!(
        rule.len() >= 9,
        "the layer table lists every layer: {rule:?}"
    );
    rule
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The names after each `crate::` in `code` (`crate::a::…` and `crate::{a, b::…}`).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let prev = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if prev.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn modules_import_only_what_the_layer_rule_allows() {
    let rule = rule();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let layer = first.trim_end_matches(".rs").to_string();
        if layer == "bin" || layer == "lib" {
            continue;
        }
        let allowed = rule
            .get(&layer)
            .unwrap_or_else(|| panic!("{} is in no layer of ARCHITECTURE.md", rel.display()));
        seen.insert(layer.clone());
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for name in crate_paths(code) {
                if name != layer && rule.contains_key(&name) && !allowed.contains(&name) {
                    violations.push(format!(
                        "{}:{}: layer `{layer}` uses `{name}`: {}",
                        rel.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layer rule broken:\n{}",
        violations.join("\n")
    );
    assert_eq!(
        seen,
        rule.keys().cloned().collect(),
        "every layer of the table exists under src/"
    );
}

#[test]
fn the_path_scanner_sees_what_it_must() {
    assert_eq!(crate_paths("use crate::ledger::Ledger;"), vec!["ledger"]);
    assert_eq!(
        crate_paths("use crate::{fs, wire::Reason}; let x = crate::server::status::ledger(e);"),
        vec!["fs", "wire", "server"]
    );
    assert!(crate_paths("use mycrate::ledger;").is_empty());
}
