//! Keeps prose and code from drifting apart where a test can tell: what the documents and the
//! module docs *say* about the code (which format minor defines which record flag, what the
//! daemon publishes, who writes each region, which modules are pure, which commands exist), not
//! only the numbers `tests/format_doc.rs` and `src/net/doc_tests.rs` pin.
//!
//! If one of these fails, the code changed and the prose did not (or the prose is wrong): fix the
//! prose, or the code, never the test's expectations alone.

#[path = "common/markdown.rs"]
mod markdown;
use diskbeat::format::checksum;
use diskbeat::format::record::{Record, State};
use diskbeat::format::VERSION_MINOR;
use markdown::{section, table_after};
use std::path::{Path, PathBuf};

const FORMAT: &str = include_str!("../docs/FORMAT.md");
const RECORD_RS: &str = include_str!("../src/format/record.rs");
const LIB_RS: &str = include_str!("../src/lib.rs");

/// `text` with every run of white space (line breaks included) turned into one space.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// "bits 0..=2" / "bit 7" / "3..=6" / "7" -> the bit range; None for anything else.
fn bit_range(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let s = s.strip_prefix("bits ").or_else(|| s.strip_prefix("bit ")).unwrap_or(s).trim();
    match s.split_once("..=") {
        Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
        None => s.parse().ok().map(|b| (b, b)),
    }
}

fn mask(lo: u32, hi: u32) -> u16 {
    (lo..=hi).fold(0, |m, b| m | 1 << b)
}

// ---- Record flags ----

/// `(name, bit)` of every `pub const NAME: u16 = 1 << BIT;` in record.rs's `mod flags`: read from
/// the source, so a flag added there without being listed anywhere else is still seen.
fn flags_in_source() -> Vec<(String, u32)> {
    let start = RECORD_RS.find("pub mod flags {").expect("record.rs has mod flags");
    let body = &RECORD_RS[start..start + RECORD_RS[start..].find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let (name, value) = rest.split_once(": u16 = 1 << ")?;
            Some((name.to_lowercase(), value.trim_end_matches(';').parse().unwrap()))
        })
        .collect()
}

/// A record of slot 5 written as `minor` with `flags`, resealed: does it decode? A `fenced` mark,
/// except for a member's fence intent (1.8), which copies a `live` record; a fence-device proof
/// (1.8) is a mark that stops VMs.
fn decodes(minor: u16, flags: u16) -> bool {
    use diskbeat::format::record::flags::{FENCE_DEVICE, FENCE_INTENT, FENCE_STOPS_VMS};
    let cluster = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let mut r = Record::free(cluster, 5);
    r.state = if flags & FENCE_INTENT != 0 { State::Live } else { State::Fenced };
    let flags = if flags & FENCE_DEVICE != 0 { flags | FENCE_STOPS_VMS } else { flags };
    r.set_host_name("h").unwrap();
    let mut b = [0u8; 512];
    r.encode(&mut b);
    b[14..16].copy_from_slice(&minor.to_le_bytes());
    b[38..40].copy_from_slice(&flags.to_le_bytes());
    let c = checksum(&b[4..]);
    b[..4].copy_from_slice(&c.to_le_bytes());
    Record::decode(&b, &cluster, 5).is_ok()
}

/// The flag bits a record of `minor` may carry, as the decoder says.
fn known_at(minor: u16) -> u16 {
    (0..16).filter(|&b| decodes(minor, 1 << b)).fold(0, |m, b| m | 1 << b)
}

/// The minor that first defines `bit` (the decoder refuses it in every earlier minor).
fn defined_since(bit: u32) -> u16 {
    (0..=VERSION_MINOR)
        .find(|&m| known_at(m) & 1 << bit != 0)
        .unwrap_or_else(|| panic!("bit {bit} never defined"))
}

/// Every `bits A..=B <word> 1.M` / `bit A <word> 1.M` in `text` (flattened), as (lo, hi, M).
fn bit_claims(text: &str, word: &str) -> Vec<(u32, u32, u16)> {
    let text = flat(text);
    let needle = format!(" {word} 1.");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(&needle) {
        let at = from + i;
        from = at + needle.len();
        let minor: String = text[from..].chars().take_while(char::is_ascii_digit).collect();
        let before = &text[..at];
        let Some(b) = before.rfind("bit") else { continue };
        if let (Some((lo, hi)), Ok(m)) = (bit_range(&before[b..]), minor.parse()) {
            out.push((lo, hi, m));
        }
    }
    out
}

/// The claims `(lo, hi, minor)` must name every defined flag bit exactly once, each with the minor
/// that defines it in the code.
fn check_claims(what: &str, claims: &[(u32, u32, u16)]) {
    let all = known_at(VERSION_MINOR);
    let mut seen = 0u16;
    for &(lo, hi, minor) in claims {
        for bit in lo..=hi {
            assert!(all & 1 << bit != 0, "{what}: bit {bit} is not a flag the code defines");
            assert_eq!(defined_since(bit), minor, "{what}: bit {bit} said to come with 1.{minor}");
        }
        assert_eq!(seen & mask(lo, hi), 0, "{what}: a bit named twice");
        seen |= mask(lo, hi);
    }
    assert_eq!(seen, all, "{what}: every flag bit the code defines, and only those");
}

#[test]
fn record_flags_source_inspect_and_table_agree() {
    let source = flags_in_source();
    assert!(!source.is_empty());
    let table: Vec<(String, u32)> = table_after(FORMAT, "**Record flags**")
        .into_iter()
        .filter(|r| r[2] != "—")
        .map(|r| (r[2].clone(), r[0].parse().unwrap()))
        .collect();
    assert_eq!(table, source, "FORMAT.md §5 flag table vs `pub mod flags` in src/format/record.rs");
    let inspect: Vec<(String, u32)> =
        diskbeat::inspect::FLAG_NAMES.iter().map(|(b, n)| (n.to_string(), b.trailing_zeros())).collect();
    assert_eq!(inspect, source, "inspect's flag names vs record.rs");
    let all = source.iter().fold(0u16, |m, (_, b)| m | 1 << b);
    assert_eq!(all, known_at(VERSION_MINOR), "the decoder accepts exactly these bits in a current record");
}

/// "bits 0..=2 since 1.1, bits 3..=6 since 1.4, bit 7 since 1.5" (the `flags` field row) and
/// "bits 0..=2 format 1.1, ..." (the flags paragraph) say which minor defines which bit.
#[test]
fn record_flags_prose_names_the_minor_of_every_bit() {
    let record = section(FORMAT, "## 5. Record");
    let field = table_after(record, "| Offset").into_iter().find(|r| r[3] == "flags").expect("flags row");
    check_claims("§5 flags field row", &bit_claims(&field[4], "since"));
    let para = &record[record.find("**Record flags**").unwrap()..];
    let para = &para[..para.find("\n\n").unwrap()];
    check_claims("§5 'Record flags' paragraph", &bit_claims(para, "format"));
}

/// "Formats 1.2 and 1.3 define no new bits", "format 1.5 defines bit 7": every such sentence in §5
/// and §15 agrees with the decoder.
#[test]
fn record_flags_defines_sentences_are_true() {
    let text =
        flat(&format!("{}{}", section(FORMAT, "## 5. Record"), section(FORMAT, "## 15. Version history")));
    let new_bits = |m: u16| if m == 0 { known_at(0) } else { known_at(m) & !known_at(m - 1) };
    let mut checked = 0;
    for (i, _) in text.match_indices(" define") {
        // The minors just before: "1.4 defines", "Formats 1.2 and 1.3 define".
        let before: Vec<&str> = text[..i].rsplit(' ').take(4).collect();
        let minors: Vec<u16> = before
            .iter()
            .take_while(|w| w.starts_with("1.") || **w == "and")
            .filter_map(|w| w.strip_prefix("1.").and_then(|m| m.parse().ok()))
            .collect();
        if minors.is_empty() {
            continue;
        }
        let after = text[i..].trim_start_matches(" defines").trim_start_matches(" define");
        if after.starts_with(" no new bits") {
            for m in &minors {
                assert_eq!(new_bits(*m), 0, "FORMAT.md says 1.{m} defines no new bits");
            }
            checked += 1;
        } else if after.starts_with(" bit") {
            let claim: String = after.chars().take_while(|c| *c != '(' && *c != ',' && *c != ';').collect();
            let claim = claim.split(" `").next().unwrap();
            if let Some((lo, hi)) = bit_range(claim) {
                assert_eq!(minors.len(), 1, "{claim}");
                assert_eq!(new_bits(minors[0]), mask(lo, hi), "FORMAT.md: 1.{} defines {claim}", minors[0]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "the §5 sentences were found ({checked})");
    // Every minor that brought bits says so somewhere in §5.
    let record = flat(section(FORMAT, "## 5. Record"));
    for m in 1..=VERSION_MINOR {
        let (lo, hi) = match new_bits(m) {
            0 => continue,
            b => (b.trailing_zeros(), 15 - b.leading_zeros()),
        };
        let said = if lo == hi {
            format!("1.{m} defines bit {lo}")
        } else {
            format!("1.{m} defines bits {lo}..={hi}")
        };
        assert!(record.contains(&said), "FORMAT.md §5 does not say {said:?}");
    }
}

/// §10's record row lists, per minor, the flag bits a record may carry.
#[test]
fn record_validation_row_lists_the_bits_of_every_minor() {
    let rows = table_after(section(FORMAT, "## 10. Validation"), "Then, per structure");
    let row = rows.iter().find(|r| r[0] == "Record").expect("§10 Record row");
    let text = flat(&row[1]);
    let open = "defines (";
    let list = &text[text.find(open).expect("the per-minor list") + open.len()..];
    let list = &list[..list.find(')').unwrap()];
    let mut minors_seen = Vec::new();
    for part in list.split(';') {
        let part = part.trim();
        let (bits, minors) = part.split_once(" for minor").unwrap_or_else(|| panic!("{part:?}"));
        let want = if bits == "none" { 0 } else { bit_range(bits).map(|(l, h)| mask(l, h)).expect(part) };
        let minors = minors.trim_start_matches('s').replace(" and", ",");
        for m in minors.split(',').map(|m| m.trim().parse::<u16>().unwrap()) {
            assert_eq!(known_at(m), want, "§10: a record of minor {m} may carry {part:?}");
            minors_seen.push(m);
        }
    }
    minors_seen.sort();
    assert_eq!(minors_seen, (0..=VERSION_MINOR).collect::<Vec<_>>(), "§10 names every minor once");
}

// ---- What the daemon publishes, who writes what ----

/// Non-test Rust sources under `src/`, with their path relative to the crate.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") && !p.to_string_lossy().ends_with("tests.rs") {
            let text = strip_tests(&std::fs::read_to_string(&p).unwrap());
            out.push((p.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_path_buf(), text));
        }
    }
    out.sort();
    out
}

/// The source without `#[cfg(test)]` items and without comments.
fn strip_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            i += 1;
            if lines.get(i).is_some_and(|l| l.trim_end().ends_with(';')) {
                i += 1;
                continue;
            }
            let mut depth = 0i32;
            let mut opened = false;
            while i < lines.len() {
                depth += lines[i].matches('{').count() as i32 - lines[i].matches('}').count() as i32;
                opened |= lines[i].contains('{');
                i += 1;
                if opened && depth == 0 {
                    break;
                }
            }
            continue;
        }
        if !lines[i].trim_start().starts_with("//") {
            out.push(lines[i]);
        }
        i += 1;
    }
    out.join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// FORMAT.md says which payload kinds the daemon publishes: exactly the kinds the daemon passes to
/// `write_extent`.
#[test]
fn the_daemon_publishes_the_kinds_format_md_says() {
    use diskbeat::format::extent::kind;
    let daemon: String = sources(&src().join("daemon")).into_iter().map(|(_, t)| t).collect();
    let doc = flat(FORMAT);
    let mut published = Vec::new();
    for code in 0..=u16::MAX {
        let Some(name) = kind::name(code) else { continue };
        let constant = format!("kind::{}", name.to_uppercase());
        let used = daemon
            .match_indices("write_extent(")
            .any(|(i, _)| daemon[i..].chars().take(120).collect::<String>().contains(&constant));
        let said = doc.contains(&format!("daemon publishes kind {code}"));
        assert_eq!(said, used, "FORMAT.md vs the daemon: does it publish kind {code} ({name})?");
        if used {
            published.push(code);
        }
    }
    assert!(!published.is_empty(), "the daemon publishes some kind");
}

/// Every place that writes a record, a mailbox or an extent is one FORMAT.md §9 names for that
/// region. A new writer fails here until §9 (and §5/§6/§7) say who it is.
#[test]
fn every_writer_of_a_region_is_named_in_format_md() {
    // (file, call, the region's row in §9, what that row must say)
    let known = [
        ("src/daemon/mod.rs", "write_record(", "record i", "owner of slot i"),
        ("src/daemon/vms.rs", "write_extent(", "extent i", "owner of slot i"),
        ("src/fence.rs", "write_mailbox(", "mailbox i", "diskbeat fence --slot i"),
        ("src/fence.rs", "write_record(", "record i", "diskbeat fence --confirm-down i"),
    ];
    let mut found = Vec::new();
    for (path, text) in sources(&src()) {
        if path == Path::new("src/disk.rs") {
            continue; // where they are defined
        }
        for call in ["write_record(", "write_mailbox(", "write_extent("] {
            if text.contains(&format!(".{call}")) {
                found.push((path.to_string_lossy().into_owned(), call));
            }
        }
    }
    let mut want: Vec<(String, &str)> = known.iter().map(|(f, c, _, _)| (f.to_string(), *c)).collect();
    want.sort();
    found.sort();
    assert_eq!(found, want, "writers in the code vs the writers this test (and FORMAT.md §9) know");
    let rows = table_after(section(FORMAT, "## 9. Writers"), "|");
    for (file, call, region, phrase) in known {
        let row = rows
            .iter()
            .find(|r| r[0].replace('*', "") == region)
            .unwrap_or_else(|| panic!("§9 has no {region} row"));
        assert!(row[1].replace('*', "").contains(phrase), "§9 {region}: {phrase:?} ({file} {call})");
    }
}

// ---- Pure modules ----

/// What pure code never names: I/O, clocks, threads, processes, the environment, logging.
const IMPURE: [&str; 22] = [
    "std::fs",
    "Instant",
    "SystemTime",
    "libc::",
    "nix::",
    "std::thread",
    "std::process",
    "UdpSocket",
    "TcpStream",
    "std::env",
    "tokio",
    "crate::io::",
    "crate::disk",
    "crate::daemon",
    "crate::cli",
    "getrandom",
    "new_v4",
    "println!",
    "eprintln!",
    "tracing::",
    "std::io::Read",
    "File::",
];

/// The top-level modules `lib.rs` declares.
fn modules() -> Vec<String> {
    LIB_RS
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// The impure names module `m`'s non-test code uses, with the file.
fn impurities(m: &str) -> Vec<(String, &'static str)> {
    let dir = src().join(m);
    let files = if dir.is_dir() {
        sources(&dir)
    } else {
        let p = src().join(format!("{m}.rs"));
        vec![(p.clone(), strip_tests(&std::fs::read_to_string(p).unwrap()))]
    };
    let mut out = Vec::new();
    for (path, text) in files {
        for word in IMPURE {
            if text.contains(word) {
                out.push((path.display().to_string(), word));
            }
        }
    }
    out
}

/// lib.rs's "Pure code (...): [`a`], [`b`]." names modules that exist and are pure, and every
/// module that is pure by that measure is named.
#[test]
fn lib_rs_lists_exactly_the_pure_modules() {
    let doc: String = LIB_RS.lines().filter_map(|l| l.strip_prefix("//!")).collect::<Vec<_>>().join("\n");
    let start = doc.find("Pure code").expect("lib.rs names its pure modules");
    let sentence = &doc[start..];
    let sentence = &sentence[..sentence.find(".\n").expect("the sentence ends")];
    let listed: Vec<String> =
        sentence.split("[`").skip(1).map(|s| s[..s.find("`]").unwrap()].to_string()).collect();
    assert!(!listed.is_empty(), "{sentence}");
    let modules = modules();
    for m in &listed {
        assert!(modules.contains(m), "lib.rs calls `{m}` pure but declares no such module");
        let bad = impurities(m);
        assert!(bad.is_empty(), "lib.rs calls `{m}` pure, but: {bad:?}");
    }
    for m in &modules {
        if !listed.contains(m) {
            assert!(!impurities(m).is_empty(), "`{m}` is pure by this test's measure: list it in lib.rs");
        }
    }
}

// ---- Words that mean the docs are out of date ----

/// Phrases that say a thing is missing: true once, stale the day it lands. State a limit in words
/// that stay true ("X does not Y: reason"), or remove it when Y is done.
const STALE: [&str; 5] = ["not wired", "not implemented", "not written yet", "the planned ", "todo:"];

/// Every docs/*.md file, and every `//!` / `///` line under src/.
fn prose() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    for e in std::fs::read_dir(&docs).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let docs: String = std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .filter(|l| l.trim_start().starts_with("//!") || l.trim_start().starts_with("///"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.push((p.display().to_string(), docs));
            }
        }
    }
    walk(&src(), &mut out);
    out
}

#[test]
fn docs_say_nothing_is_planned_or_unwired() {
    for (path, text) in prose() {
        let lower = flat(&text).to_lowercase();
        for phrase in STALE {
            assert!(!lower.contains(phrase), "{path} says {phrase:?}: check it against the code");
        }
    }
}

// ---- README vs the command line ----

/// Every subcommand (`diskbeat vm list` included) and every long option it takes (hidden ones
/// aside) appears in a row of README.md's command table that names the subcommand; and README
/// says nothing is planned or unwired.
#[test]
fn readme_command_table_covers_every_subcommand_and_flag() {
    use clap::CommandFactory;
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|l| l.trim_start().starts_with('|')).collect();
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, Vec<String>)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{path} {}", sub.get_name());
            let flags = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "help" && *l != "version")
                .map(|l| format!("--{l}"))
                .collect();
            out.push((name.clone(), flags));
            walk(sub, name, out);
        }
    }
    let mut commands = Vec::new();
    walk(&diskbeat::cli::Cli::command(), "diskbeat".into(), &mut commands);
    assert!(commands.len() >= 9, "{commands:?}");
    let mut missing = Vec::new();
    for (name, flags) in &commands {
        let mine: Vec<&&str> = rows.iter().filter(|r| r.contains(name.as_str())).collect();
        if mine.is_empty() {
            missing.push(name.clone());
            continue;
        }
        for f in flags {
            if !mine.iter().any(|r| r.contains(f.as_str())) {
                missing.push(format!("{name} {f}"));
            }
        }
    }
    assert!(missing.is_empty(), "README.md's command table lacks: {missing:?}");
    let lower = flat(&readme).to_lowercase();
    for phrase in STALE {
        assert!(!lower.contains(phrase), "README.md says {phrase:?}");
    }
}
