//! Fitting the ecosystem: shell completions and man pages generated from the command line, and
//! tools/install.sh staged into a temporary directory.

mod common;
use clap::CommandFactory;
use common::*;
use std::path::Path;
use std::process::Command;

/// Every subcommand as its path of names: ["mkfs"], ["vm", "list"], ...
fn subcommands() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help" && !s.is_hide_set()) {
            let mut p = path.to_vec();
            p.push(sub.get_name().to_string());
            out.push(p.clone());
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&diskbeat::cli::Cli::command(), &[], &mut out);
    assert!(out.len() >= 11, "{out:?}");
    out
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), stderr(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn completions_cover_every_subcommand() {
    let bash = stdout(&run(&["completions", "bash"]));
    for path in subcommands() {
        let name = path.last().unwrap();
        assert!(bash.contains(name.as_str()), "the bash completion never mentions {path:?}");
    }
    // Options too: a flag added later shows up without anyone touching the script.
    for flag in ["--watch", "--interval", "--force", "--confirm-down"] {
        assert!(bash.contains(flag), "the bash completion lacks {flag}");
    }
    // It is a script bash accepts.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("diskbeat.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", stderr(&check));

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let text = stdout(&run(&["completions", shell]));
        assert!(text.contains("status") && text.contains("mkfs"), "{shell}: {text}");
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error: {}", stderr(&out));
}

/// Renders `page` with `man -l` at 80 columns when `man` is installed: it must succeed and say
/// nothing on stderr (no troff warnings).
fn man_renders(page: &Path) -> Option<String> {
    let have_man = Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_man {
        return None;
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l {}: {}", page.display(), stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("warning") && !err.contains("error"), "man -l {}: {err}", page.display());
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn man_pages_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let listed = stdout(&run(&["man", "--dir", dir.path().to_str().unwrap()]));
    let mut expected = vec!["diskbeat.1".to_string()];
    expected.extend(subcommands().iter().map(|p| format!("diskbeat-{}.1", p.join("-"))));
    let mut found: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    found.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(found, want, "pages written");
    for name in &expected {
        let path = dir.path().join(name);
        assert!(listed.lines().any(|l| Path::new(l) == path), "{name} is not listed: {listed}");
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(page.lines().any(|l| l.starts_with(".TH ")), "{name} has no .TH line");
        if let Some(text) = man_renders(&path) {
            assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{name} rendered: {text}");
        }
    }
    // The status page carries the new options and the examples.
    let status = std::fs::read_to_string(dir.path().join("diskbeat-status.1")).unwrap();
    assert!(status.contains("watch") && status.contains("interval"), "{status}");
    if let Some(text) = man_renders(&dir.path().join("diskbeat-status.1")) {
        assert!(text.contains("diskbeat status --watch"), "{text}");
    }

    // Without --dir: the top page on stdout.
    let top = stdout(&run(&["man"]));
    assert!(top.lines().any(|l| l.starts_with(".TH ")), "{top}");
    assert_eq!(top, std::fs::read_to_string(dir.path().join("diskbeat.1")).unwrap());
}

#[test]
fn install_sh_stages_everything_and_keeps_an_edited_config() {
    let dest = tempfile::tempdir().unwrap();
    let install = |extra: &[&str]| {
        let out = Command::new(repo().join("tools/install.sh"))
            .args(["--binary", bin().to_str().unwrap(), "--destdir", dest.path().to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install.sh {extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let d = dest.path();
    install(&[]);
    let files = [
        "usr/local/bin/diskbeat",
        "etc/systemd/system/diskbeat.service",
        "etc/diskbeat/diskbeat.toml",
        "usr/local/share/man/man1/diskbeat.1",
        "usr/local/share/man/man1/diskbeat-status.1",
        "usr/local/share/man/man1/diskbeat-vm-protect.1",
        "usr/share/bash-completion/completions/diskbeat",
        "usr/local/share/zsh/site-functions/_diskbeat",
        "usr/share/fish/vendor_completions.d/diskbeat.fish",
    ];
    for f in files {
        let meta = std::fs::metadata(d.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    assert_eq!(std::fs::read(d.join(files[0])).unwrap(), std::fs::read(bin()).unwrap());
    // The fence agent: a symlink where Pacemaker looks (/usr/sbin), naming the installed binary.
    let agent = d.join("usr/sbin/fence_diskbeat");
    assert_eq!(std::fs::read_link(&agent).unwrap(), Path::new("/usr/local/bin/diskbeat"));
    let pages = std::fs::read_dir(d.join("usr/local/share/man/man1")).unwrap().count();
    assert_eq!(pages, 1 + subcommands().len(), "man pages");
    let unit = std::fs::read_to_string(d.join(files[1])).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/diskbeat daemon --config /etc/diskbeat/diskbeat.toml"),
        "{unit}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join(files[2])).unwrap(),
        std::fs::read_to_string(repo().join("tools/diskbeat.toml.example")).unwrap()
    );

    // The operator edits the config; a second run (an upgrade) keeps it and says so.
    let mine = "# mine\ndevice = \"/dev/mapper/hb\"\n";
    std::fs::write(d.join(files[2]), mine).unwrap();
    let again = install(&[]);
    assert!(again.contains("kept"), "{again}");
    assert_eq!(std::fs::read_to_string(d.join(files[2])).unwrap(), mine);
    for f in files {
        assert!(d.join(f).exists(), "{f} after the second run");
    }

    // Another prefix: the unit starts the binary where it went.
    let opt = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("tools/install.sh"))
        .args(["--binary", bin().to_str().unwrap(), "--destdir", opt.path().to_str().unwrap()])
        .args(["--prefix", "/opt/diskbeat"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opt.path().join("opt/diskbeat/bin/diskbeat").exists());
    let unit = std::fs::read_to_string(opt.path().join("etc/systemd/system/diskbeat.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/diskbeat/bin/diskbeat daemon"), "{unit}");
    let link = std::fs::read_link(opt.path().join("usr/sbin/fence_diskbeat")).unwrap();
    assert_eq!(link, Path::new("/opt/diskbeat/bin/diskbeat"));
    // --agent-dir puts the link elsewhere; a file of that name that is not a symlink is never
    // replaced (refused before anything is installed).
    let other = tempfile::tempdir().unwrap();
    let staged = |extra: &[&str]| {
        Command::new(repo().join("tools/install.sh"))
            .args(["--binary", bin().to_str().unwrap(), "--destdir", other.path().to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = staged(&["--agent-dir", "/usr/lib/stonith"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let link = std::fs::read_link(other.path().join("usr/lib/stonith/fence_diskbeat")).unwrap();
    assert_eq!(link, Path::new("/usr/local/bin/diskbeat"));
    assert!(!other.path().join("usr/sbin/fence_diskbeat").exists());
    let theirs = other.path().join("usr/sbin/fence_diskbeat");
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    std::fs::write(&theirs, "#!/bin/sh\n").unwrap();
    let out = staged(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a symlink"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "#!/bin/sh\n");
    let out = staged(&["--uninstall"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(theirs.exists(), "--uninstall removed a fence_diskbeat that is not its symlink");

    // Uninstall removes everything but the config.
    install(&["--uninstall"]);
    for f in files.iter().filter(|f| !f.ends_with(".toml")) {
        assert!(!d.join(f).exists(), "{f} survived --uninstall");
    }
    assert!(std::fs::symlink_metadata(&agent).is_err(), "fence_diskbeat survived --uninstall");
    assert_eq!(std::fs::read_to_string(d.join(files[2])).unwrap(), mine);
    let pages = std::fs::read_dir(d.join("usr/local/share/man/man1")).unwrap().count();
    assert_eq!(pages, 0, "man pages after --uninstall");

    // Bad usage is exit 2.
    let out = Command::new(repo().join("tools/install.sh")).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
