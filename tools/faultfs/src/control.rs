//! Control socket: one request line in, one reply line out.
//!
//! Requests: `set VIEW [eio_read] [eio_write] [delay_ms=N] [hang]`, `clear VIEW|*`, `show`,
//! `ping`, `shutdown`. Replies: `ok`, `ok <json>` (show) or `err <message>`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::faults::{Fault, Faults};

/// Parse the arguments of `set` after the view name.
pub fn parse_fault<'a>(words: impl Iterator<Item = &'a str>) -> std::result::Result<Fault, String> {
    let mut f = Fault::default();
    for w in words {
        match w {
            "eio_read" => f.eio_read = true,
            "eio_write" => f.eio_write = true,
            "hang" => f.hang = true,
            w if w.starts_with("delay_ms=") => {
                f.delay_ms = w["delay_ms=".len()..].parse().map_err(|_| format!("bad delay_ms in {w:?}"))?
            }
            w => return Err(format!("unknown fault {w:?} (use eio_read, eio_write, delay_ms=N, hang)")),
        }
    }
    Ok(f)
}

/// Handle one request line; `on_shutdown` is called for `shutdown`.
pub fn handle_line(faults: &Faults, line: &str, on_shutdown: &dyn Fn()) -> String {
    let mut words = line.split_whitespace();
    let res = match words.next() {
        Some("ping") => Ok(None),
        Some("show") => Ok(Some(faults.show_json())),
        Some("set") => match words.next() {
            None => Err("usage: set VIEW [eio_read] [eio_write] [delay_ms=N] [hang]".to_string()),
            Some(view) => parse_fault(words).and_then(|f| faults.set(view, f)).map(|()| None),
        },
        Some("clear") => match words.next() {
            Some("*") => {
                faults.view_names().iter().try_for_each(|v| faults.set(v, Fault::default())).map(|()| None)
            }
            Some(view) => faults.set(view, Fault::default()).map(|()| None),
            None => Err("usage: clear VIEW|*".to_string()),
        },
        Some("shutdown") => {
            on_shutdown();
            Ok(None)
        }
        Some(other) => Err(format!("unknown command {other:?} (set, clear, show, ping, shutdown)")),
        None => Err("empty request".to_string()),
    };
    match res {
        Ok(None) => "ok".to_string(),
        Ok(Some(json)) => format!("ok {json}"),
        Err(e) => format!("err {e}"),
    }
}

/// Bind the control socket (replacing a stale one) and serve it on background threads.
pub fn serve(path: &Path, faults: Arc<Faults>, on_shutdown: Arc<dyn Fn() + Send + Sync>) -> Result<()> {
    let ctl_err = |source| Error::Control { path: path.to_path_buf(), source };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ctl_err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another faultfs is serving this socket; unmount it or pass a different --control",
            )));
        }
        std::fs::remove_file(path).map_err(ctl_err)?;
    }
    let listener = UnixListener::bind(path).map_err(ctl_err)?;
    thread::Builder::new()
        .name("faultfs-ctl".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let faults = faults.clone();
                let on_shutdown = on_shutdown.clone();
                // A thread per client so a slow client never blocks fault changes.
                let _ = thread::Builder::new().name("faultfs-ctl-conn".into()).spawn(move || {
                    let mut w = match conn.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { break };
                        let reply = handle_line(&faults, &line, &*on_shutdown);
                        if writeln!(w, "{reply}").is_err() {
                            break;
                        }
                    }
                });
            }
        })
        .map_err(|e| Error::Io { context: "spawning control thread".into(), source: e })?;
    Ok(())
}

/// Send one request and return the payload of an `ok` reply.
pub fn request(path: &Path, line: &str) -> Result<String> {
    let ctl_err = |source| Error::Control { path: path.to_path_buf(), source };
    let mut s = UnixStream::connect(path).map_err(ctl_err)?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(ctl_err)?;
    writeln!(s, "{line}").map_err(ctl_err)?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).map_err(ctl_err)?;
    let reply = reply.trim_end();
    if reply == "ok" {
        Ok(String::new())
    } else if let Some(rest) = reply.strip_prefix("ok ") {
        Ok(rest.to_string())
    } else if let Some(rest) = reply.strip_prefix("err ") {
        Err(Error::Refused(rest.to_string()))
    } else {
        Err(Error::Refused(format!("unexpected reply {reply:?}")))
    }
}
