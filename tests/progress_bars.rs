//! Progress bars in a real terminal (tmux): `mkfs --force`'s writer watch and `probe` draw one on
//! stderr; under --json, or when stderr is not a terminal, nothing is drawn.

mod common;
#[path = "common/tmux.rs"]
mod tmux;
use common::*;
use std::path::Path;
use tmux::{have_tmux, Tmux};

/// Runs `line` in a fresh session and captures the screen until the line wrote its exit status;
/// returns every capture and the status. (The session then sleeps, so the last screen stays to be
/// read; the session is ended here, the server by the guard.)
fn captures(tmux: &Tmux, name: &str, line: &str, exit_file: &Path) -> (Vec<Vec<String>>, String) {
    tmux.start(name, &format!("{line}; echo $? > '{}'; sleep 600", exit_file.display()));
    let start = std::time::Instant::now();
    let mut screens = Vec::new();
    loop {
        // Read the status first: the screen captured after it is complete.
        let status = std::fs::read_to_string(exit_file).ok().filter(|s| s.ends_with('\n'));
        screens.push(tmux.screen(name));
        if let Some(s) = status {
            let _ = tmux.cmd(&["kill-session", "-t", name]);
            return (screens, s.trim().to_string());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(90), "{line} did not finish");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn bar_seen(screens: &[Vec<String>], prefix: &str) -> bool {
    screens
        .iter()
        .flatten()
        .any(|l| l.starts_with(&format!("{prefix}: ")) && l.contains(" [") && l.contains(" s"))
}

#[test]
fn mkfs_and_probe_draw_bars_on_a_terminal_and_nothing_under_json() {
    if skip_unless_root() || !have_tmux() {
        return;
    }
    let lo = formatted(512, 4, "bars");
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::new(dir.path());
    let bin = bin();
    let bin = bin.display();

    // mkfs --force over a cluster: a watch of at least 3 s, with a bar.
    let (screens, code) = captures(
        &tmux,
        "mkfs",
        &format!("'{bin}' mkfs {} --force --slots 4 --timeout 2s --observe 3s --cluster bars", lo.s()),
        &dir.path().join("mkfs.exit"),
    );
    assert_eq!(code, "0", "{:#?}", screens.last());
    assert!(bar_seen(&screens, "mkfs"), "no bar:\n{:#?}", screens);
    let last = screens.last().unwrap().join("\n");
    assert!(last.contains("Formatted") && last.contains("mkfs: looking for heartbeat records"), "{last}");
    assert!(!last.contains("mkfs: watching:"), "the periodic lines came with the bar:\n{last}");

    // Under --json (stdout to a file, stderr still the terminal): not a character on the screen.
    let (screens, code) = captures(
        &tmux,
        "mkfsjson",
        &format!(
            "'{bin}' mkfs {} --force --slots 4 --timeout 2s --observe 3s --json > '{}'",
            lo.s(),
            dir.path().join("mkfs.json").display()
        ),
        &dir.path().join("mkfsjson.exit"),
    );
    assert_eq!(code, "0");
    for s in &screens {
        assert!(s.iter().all(|l| l.trim().is_empty()), "output under --json:\n{}", s.join("\n"));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("mkfs.json")).unwrap()).unwrap();
    assert!(report["watch"]["duration_ms"].as_u64().unwrap() >= 3000, "{report}");

    // probe: a bar over its seconds.
    let (screens, code) = captures(
        &tmux,
        "probe",
        &format!("'{bin}' probe {} --seconds 3", lo.s()),
        &dir.path().join("probe.exit"),
    );
    assert_eq!(code, "0", "{:#?}", screens.last());
    assert!(bar_seen(&screens, "probe"), "no bar:\n{:#?}", screens);
    assert!(screens.last().unwrap().iter().any(|l| l.contains("Smallest base timeout")));

    let (screens, code) = captures(
        &tmux,
        "probejson",
        &format!("'{bin}' probe {} --seconds 2 --json > /dev/null", lo.s()),
        &dir.path().join("probejson.exit"),
    );
    assert_eq!(code, "0");
    for s in &screens {
        assert!(s.iter().all(|l| l.trim().is_empty()), "output under --json:\n{}", s.join("\n"));
    }
}
