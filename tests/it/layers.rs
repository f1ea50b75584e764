//! The crate's layers, checked from its source: each top-level module of
//! `src/` imports only the layers beneath it, as the map in `src/lib.rs`
//! draws them (edge → domain ← backends; domain → upstream; `app` wires
//! everything). A new import against the arrows fails here, naming the
//! file and what it takes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// What each layer may import (besides itself); `app` may import anything.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("pb", &[]),
    ("upstream", &["pb"]),
    ("domain", &["upstream", "pb"]),
    ("backends", &["domain", "upstream", "pb"]),
    ("telemetry", &["backends", "domain", "upstream", "pb"]),
    ("security", &["telemetry", "domain", "upstream", "pb"]),
    ("events", &["security", "domain", "upstream", "pb"]),
    (
        "edge",
        &["security", "telemetry", "domain", "upstream", "pb"],
    ),
    ("cli", &["domain", "upstream", "pb"]),
    ("simulator", &["pb"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a file as compiled outside its tests, without comments.
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]").map_or(text, |at| &text[..at]);
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path in `code`, use trees
/// included (`crate::{a::x, b::{y, z}}` names `a` and `b`).
fn crate_roots(code: &str) -> BTreeSet<String> {
    let mut roots = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(tree) = rest.strip_prefix('{') {
            // The items of the top level of the tree, split at its commas.
            let mut depth = 1;
            let mut items = vec![String::new()];
            for c in tree.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        items.push(String::new());
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                items.last_mut().unwrap().push(c);
            }
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    roots.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            roots.insert(name);
        }
    }
    roots
}

/// Every top-level module's imports of other top-level modules, with the
/// files that make them.
fn arrows() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut arrows = BTreeMap::<(String, String), BTreeSet<String>>::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.iter().next().unwrap().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_owned();
        if matches!(top.as_str(), "bin" | "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for root in crate_roots(&code(&text)) {
            if root != top {
                arrows
                    .entry((top.clone(), root))
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    arrows
}

#[test]
fn every_layer_imports_only_the_layers_beneath_it() {
    let allowed: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
    let arrows = arrows();
    assert!(
        arrows.contains_key(&("edge".into(), "domain".into())),
        "the check sees the imports: {arrows:?}"
    );
    let mut against = Vec::new();
    for ((from, to), files) in &arrows {
        if from == "app" {
            continue;
        }
        match allowed.get(from.as_str()) {
            Some(may) if may.contains(&to.as_str()) => {}
            Some(_) => against.push(format!("{from} -> {to} (in {files:?})")),
            None => against.push(format!(
                "{from} is a layer the map does not know (in {files:?}): add it to MAY_IMPORT \
                 and to the map in src/lib.rs"
            )),
        }
    }
    assert!(
        against.is_empty(),
        "imports against the layers of src/lib.rs:\n{}",
        against.join("\n")
    );
}

#[test]
fn the_check_reads_use_trees() {
    let code = "use crate::{domain::{Jobs, error::X}, pb};\nlet _ = crate::upstream::JobQuery::all_about(x);";
    assert_eq!(
        crate_roots(code),
        ["domain", "pb", "upstream"].map(String::from).into()
    );
}
