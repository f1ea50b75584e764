//! The documentation a user follows, checked: every relative link in
//! README.md and docs/ reaches a file that exists and, with an anchor, a
//! heading that GitHub gives that anchor; and the configuration reference
//! has a row for every flag `serve --help` shows, and no row for a flag it
//! does not.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).expect("docs/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    assert!(
        pages.len() > 5,
        "docs/ holds the reference pages: {pages:?}"
    );
    pages
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// `line` without its inline code spans (a link inside backticks is code).
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The anchor GitHub gives a heading: lower case, spaces as hyphens, and
/// only letters, digits, hyphens and underscores kept.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a page, a repeated heading's with GitHub's `-1`, `-2`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeMap::<String, usize>::new();
    let mut anchors = BTreeSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let count = seen.entry(base.clone()).or_default();
        anchors.insert(match *count {
            0 => base.clone(),
            n => format!("{base}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// The targets of the inline links `[text](target)` of a page.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    targets
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(repo()).unwrap().display().to_string();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{name}: ({target}): no file {}", file.display()));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            let Ok(target_text) = std::fs::read_to_string(&file) else {
                broken.push(format!(
                    "{name}: ({target}): an anchor into a non-text file"
                ));
                continue;
            };
            if !anchors(&target_text).contains(anchor) {
                broken.push(format!("{name}: ({target}): no heading has that anchor"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The long flags `serve --help` lists (its option lines, not the prose).
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_iot-jobs-gateway"))
        .args(["serve", "--help"])
        .output()
        .expect("the gateway binary runs");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        let option = line.trim_start();
        // Option lines start at column 2 ("-h, --help") or 6 ("--listen"),
        // their descriptions further in.
        let option = option.split_once(", ").map_or(option, |(short, long)| {
            if short.len() == 2 && short.starts_with('-') {
                long
            } else {
                option
            }
        });
        if indent <= 6 && option.starts_with("--") {
            let name: String = option
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            flags.insert(name);
        }
    }
    flags.remove("--help");
    assert!(flags.len() > 30, "serve --help lists its flags: {help}");
    flags
}

/// The flags the configuration reference has a row for.
fn documented_flags() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    prose(&text)
        .filter_map(|line| line.strip_prefix("| `--"))
        .map(|rest| format!("--{}", &rest[..rest.find('`').expect("a closed code span")]))
        .collect()
}

#[test]
fn the_configuration_reference_has_a_row_for_every_serve_flag_and_no_other() {
    let shown = serve_flags();
    let documented = documented_flags();
    let missing: Vec<_> = shown.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&shown).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md lacks rows for {missing:?} and has rows for flags \
         `serve --help` does not show: {unknown:?}"
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // A heading's anchor as GitHub makes it, and a link inside code that is
    // not a link.
    assert_eq!(
        slug(" The `serve` flags, and more! "),
        "the-serve-flags-and-more"
    );
    assert_eq!(
        anchors("# A\n## A\n```\n# not a heading\n```\n## B c"),
        ["a", "a-1", "b-c"].map(String::from).into()
    );
    assert_eq!(
        links("see [x](a.md#b) and `[y](c.md)`\n```\n[z](d.md)\n```"),
        ["a.md#b"]
    );
}
