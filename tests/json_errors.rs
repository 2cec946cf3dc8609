//! Under `--json` every command prints its errors as JSON (`error`, `kind`, `hint`, `exit_code`)
//! on stderr, with the same exit status as without `--json`; stdout holds nothing but the result
//! document. Every subcommand with a `--json` flag has a case here (checked against clap).

mod common;
use clap::CommandFactory;
use common::*;

/// A failing invocation of every command that takes `--json` (without the flag).
const CASES: &[(&str, &[&str])] = &[
    ("mkfs", &["mkfs", "/nonexistent/diskbeat-dev"]),
    ("inspect", &["inspect", "/nonexistent/diskbeat-dev"]),
    ("probe", &["probe", "/nonexistent/diskbeat-dev"]),
    ("status", &["status", "--socket", "/nonexistent/diskbeat.sock"]),
    ("events", &["events", "--socket", "/nonexistent/diskbeat.sock"]),
    ("fence", &["fence", "/nonexistent/diskbeat-dev", "--slot", "0"]),
    ("rekey", &["rekey", "/nonexistent/diskbeat-dev"]),
    ("plan", &["plan", "/nonexistent/pool.toml"]),
    ("vm list", &["vm", "list", "--driver", "bogus"]),
    ("vm protect", &["vm", "protect", "x", "--level", "protect", "--driver", "bogus"]),
    ("bad flag", &["inspect", "--no-such-flag", "/dev/null"]),
];

#[test]
fn every_command_with_json_prints_its_errors_as_json() {
    for (what, args) in CASES {
        let plain = run(args);
        let code = plain.status.code();
        assert_ne!(code, Some(0), "{what}: expected a failure");
        assert!(plain.stdout.is_empty(), "{what}: error went to stdout without --json");
        let mut with: Vec<&str> = args.to_vec();
        with.push("--json");
        let out = run(&with);
        assert_eq!(out.status.code(), code, "{what}: exit status differs under --json");
        assert!(out.stdout.is_empty(), "{what}: {}", String::from_utf8_lossy(&out.stdout));
        let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
            panic!("{what}: stderr is not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr))
        });
        assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{what}: {v}");
        assert!(v["kind"].is_string() && v.get("hint").is_some(), "{what}: {v}");
        assert_eq!(v["exit_code"].as_u64().map(|c| c as i32), code, "{what}: {v}");
    }
}

#[test]
fn the_cases_cover_every_command_with_a_json_flag() {
    fn walk(cmd: &clap::Command, path: String, out: &mut Vec<String>) {
        if cmd.get_arguments().any(|a| a.get_long() == Some("json")) {
            out.push(path.clone());
        }
        for sub in cmd.get_subcommands() {
            let p = if path.is_empty() {
                sub.get_name().to_string()
            } else {
                format!("{path} {}", sub.get_name())
            };
            walk(sub, p, out);
        }
    }
    let mut with_json = Vec::new();
    walk(&diskbeat::cli::Cli::command(), String::new(), &mut with_json);
    assert!(with_json.len() >= 9, "{with_json:?}");
    for c in &with_json {
        assert!(CASES.iter().any(|(what, _)| what == c), "no JSON error case for `diskbeat {c} --json`");
    }
}
