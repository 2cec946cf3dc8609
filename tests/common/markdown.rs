//! Reading the Markdown specs in docs/ from tests (tests/doc_drift.rs, src/net/doc_tests.rs).
#![allow(dead_code)]

/// The text of the section of `doc` that starts at `heading`, up to the next `## `.
pub fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc.find(heading).unwrap_or_else(|| panic!("no {heading:?}"));
    let body = &doc[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// Body rows of the first Markdown table after `marker`, as trimmed cells, backticks removed.
pub fn table_after(text: &str, marker: &str) -> Vec<Vec<String>> {
    let start = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"));
    let mut lines = text[start..].lines().skip_while(|l| !l.starts_with('|'));
    let _header = lines.next().unwrap_or_else(|| panic!("no table after {marker:?}"));
    assert!(lines.next().unwrap().starts_with("|---"), "table after {marker:?} has no separator");
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().replace('`', "")).collect())
        .collect()
}
