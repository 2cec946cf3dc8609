//! The control socket: `status` / `status all` requests, one JSON document per connection;
//! `events [after=SEQ] [since=UNIX_MS] [follow]`, the event history as JSON lines, then (with
//! `follow`) new events as they come, until the client closes.
//!
//! Bounded on every side: a request line is at most `MAX_REQUEST_BYTES`, at most `MAX_CLIENTS`
//! are served at once (more are told so and closed), and accept errors (EMFILE, ENFILE, ...)
//! back off instead of spinning.

use super::journal::Query;
use super::{now_ms, status, DaemonError};
use status::Snapshot;
use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;

/// Longest request line accepted, without its newline (a request is a few bytes: "status all").
pub(super) const MAX_REQUEST_BYTES: usize = 256;
/// Clients served at once; one more is answered with an error and closed at once.
pub(super) const MAX_CLIENTS: usize = 16;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a follower's stream looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Binds the control socket at `path`, replacing only a stale socket (one nobody listens on).
pub(super) fn bind_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |reason: String| DaemonError::Socket { path: path.display().to_string(), reason };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(err(format!(
                "exists and is a {}, not a socket: refusing to replace it (remove it yourself, or pass \
                 another --socket)",
                file_kind(&meta.file_type())
            )));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(err(
                    "another daemon is listening there (one daemon per socket: use --socket)".into()
                ))
            }
            // Nobody listens: a stale socket left by a daemon that died.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                std::fs::remove_file(path)
                    .map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
            }
            Err(e) => {
                return Err(err(format!(
                    "a socket exists there and cannot be checked ({e}): refusing to replace it"
                )))
            }
        },
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| err(e.to_string()))?;
    listener.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "device node"
    } else {
        "special file"
    }
}

/// Serves `status` / `status all` requests on a thread of its own.
pub(super) fn spawn_control(
    listener: std::os::unix::net::UnixListener,
    snapshot: Arc<Mutex<Snapshot>>,
    path: PathBuf,
) {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).expect("tokio listener");
                serve(listener, Arc::new(move |request: &str| respond(&snapshot, request))).await
            });
            let _ = path;
        })
        .expect("spawn control thread");
}

/// A reply: one line, or a stream of lines (events).
pub(super) enum Reply {
    Line(String),
    /// `next` gives the lines due now (and is asked again every [`FOLLOW_POLL`] while `follow`).
    Stream {
        next: Box<dyn FnMut() -> Vec<String> + Send>,
        follow: bool,
    },
}

fn respond(snapshot: &Arc<Mutex<Snapshot>>, request: &str) -> Reply {
    match request {
        "status" | "status all" => {
            let s = snapshot.lock().unwrap_or_else(|e| e.into_inner());
            let mut report = status::render(&s, request == "status all");
            drop(s);
            report.now_ms = now_ms();
            Reply::Line(serde_json::to_string(&report).expect("a status report serializes"))
        }
        other if other.split_whitespace().next() == Some("events") => match Query::parse(other) {
            Ok(q) => events(snapshot.clone(), q),
            Err(e) => Reply::Line(error_json(&e)),
        },
        other => Reply::Line(error_json(&format!("unknown request '{other}'"))),
    }
}

/// The history `q` asks for, then (following) every new event; a reader that asks for events
/// the bounded history dropped gets an `events_missed` entry saying how many.
fn events(snapshot: Arc<Mutex<Snapshot>>, mut q: Query) -> Reply {
    let follow = q.follow;
    let next = move || {
        let s = snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let (entries, missed) = s.journal.read(&q);
        let gap = (missed > 0).then(|| s.journal.missed_entry(missed, now_ms()));
        // Next time: only what is newer than everything this read could see.
        q.after_seq = Some(s.journal.next_seq() - 1);
        drop(s);
        gap.iter().chain(&entries).map(|e| serde_json::to_string(e).expect("an event serializes")).collect()
    };
    Reply::Stream { next: Box::new(next), follow }
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Where connections come from (a seam, so tests can make accepting fail).
trait Acceptor {
    fn accept(&mut self) -> impl Future<Output = std::io::Result<UnixStream>>;
}

impl Acceptor for tokio::net::UnixListener {
    async fn accept(&mut self) -> std::io::Result<UnixStream> {
        tokio::net::UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The delays between failed accepts: 100 ms doubling to 1 s, reset by a successful accept.
#[derive(Debug, Default)]
struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    /// The delay before the next accept, and whether this failure starts a burst (to log once).
    fn next(&mut self) -> (Duration, bool) {
        let (delay, first) = match self.current {
            None => (ACCEPT_BACKOFF_MIN, true),
            Some(d) => ((d * 2).min(ACCEPT_BACKOFF_MAX), false),
        };
        self.current = Some(delay);
        (delay, first)
    }

    fn reset(&mut self) -> bool {
        self.current.take().is_some()
    }
}

type Responder = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

async fn serve(mut acceptor: impl Acceptor, respond: Responder) {
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    let mut backoff = Backoff::default();
    loop {
        let stream = match acceptor.accept().await {
            Ok(s) => {
                if backoff.reset() {
                    tracing::info!("control socket: accepting again");
                }
                s
            }
            Err(e) => {
                let (delay, first) = backoff.next();
                if first {
                    tracing::warn!(error = %e, "control socket: accept failed; retrying with backoff up to 1 s");
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let Ok(permit) = clients.clone().try_acquire_owned() else {
            // Never blocks: the reply fits in the socket buffer of a new connection.
            let reply = error_json(&format!("too many clients (at most {MAX_CLIENTS}): retry later"));
            let _ = stream.try_write(format!("{reply}\n").as_bytes());
            continue;
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            handle(stream, &*respond).await;
            drop(permit);
        });
    }
}

/// Reads one request line (at most `MAX_REQUEST_BYTES`), writes the reply, closes (a follower:
/// when it closes its end).
async fn handle(stream: UnixStream, respond: &(dyn Fn(&str) -> Reply + Send + Sync)) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (r, mut w) = stream.into_split();
    // One byte more than a request may hold, plus its newline: enough to tell "too long".
    let mut reader = BufReader::new(r).take(MAX_REQUEST_BYTES as u64 + 1);
    let mut line = Vec::with_capacity(64);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    if !matches!(read, Ok(Ok(_))) {
        return;
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    let reply = if line.len() > MAX_REQUEST_BYTES {
        Reply::Line(error_json(&format!(
            "request longer than {MAX_REQUEST_BYTES} bytes: closing the connection"
        )))
    } else {
        respond(String::from_utf8_lossy(&line).trim())
    };
    match reply {
        Reply::Line(text) => {
            let _ = w.write_all(text.as_bytes()).await;
            let _ = w.write_all(b"\n").await;
        }
        Reply::Stream { mut next, follow } => {
            let mut r = reader.into_inner();
            let mut probe = [0u8; 64];
            loop {
                let mut chunk = String::new();
                for l in next() {
                    chunk.push_str(&l);
                    chunk.push('\n');
                }
                if w.write_all(chunk.as_bytes()).await.is_err() || !follow {
                    break;
                }
                // New events every poll; a client that closes its end is gone (and its slot free).
                tokio::select! {
                    n = r.read(&mut probe) => if !matches!(n, Ok(1..)) { break },
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
        }
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn echo() -> Responder {
        Arc::new(|request: &str| Reply::Line(serde_json::json!({ "echo": request }).to_string()))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Serves `echo` on a fresh socket; returns its path (the directory lives as long as the guard).
    fn start() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(serve(listener, echo()));
        (dir, path)
    }

    async fn ask(path: &Path, request: &[u8]) -> String {
        let mut c = UnixStream::connect(path).await.unwrap();
        // The server may close before reading everything: a failed write is fine then.
        let _ = c.write_all(request).await;
        // Everything up to the close: a close with unread request bytes is a reset (ECONNRESET)
        // once the reply has been read.
        let mut reply = Vec::new();
        let mut chunk = [0; 512];
        while let Ok(n @ 1..) = c.read(&mut chunk).await {
            reply.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(reply).unwrap()
    }

    #[test]
    fn a_request_line_is_answered() {
        runtime().block_on(async {
            let (_dir, path) = start();
            assert_eq!(ask(&path, b"status all\n").await, "{\"echo\":\"status all\"}\n");
            let exact = [b'a'; MAX_REQUEST_BYTES];
            let reply = ask(&path, &[&exact[..], b"\n"].concat()).await;
            assert!(reply.contains("echo"), "{reply}");
        });
    }

    #[test]
    fn an_over_long_line_gets_an_error_and_the_connection_closed() {
        runtime().block_on(async {
            let (_dir, path) = start();
            let reply = ask(&path, &[b'x'; 1 << 20]).await;
            let v: serde_json::Value = serde_json::from_str(reply.trim()).unwrap();
            assert!(v["error"].as_str().unwrap().contains("longer than 256 bytes"), "{v}");
            let reply = ask(&path, &[[b'y'; MAX_REQUEST_BYTES + 1].as_slice(), b"\n"].concat()).await;
            assert!(reply.contains("longer than"), "{reply}");
            assert_eq!(ask(&path, b"status\n").await, "{\"echo\":\"status\"}\n");
        });
    }

    #[test]
    fn clients_beyond_the_cap_are_turned_away_and_served_later() {
        runtime().block_on(async {
            let (_dir, path) = start();
            let mut idle = Vec::new();
            for _ in 0..MAX_CLIENTS {
                idle.push(UnixStream::connect(&path).await.unwrap());
            }
            let reply = ask(&path, b"status\n").await;
            assert!(reply.contains("too many clients"), "{reply}");
            drop(idle);
            // The slots free up once the server has seen the idle clients go.
            for _ in 0..10_000 {
                let reply = ask(&path, b"status\n").await;
                if reply.contains("echo") {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!("never served again after the idle clients left");
        });
    }

    #[test]
    fn backoff_doubles_to_a_second_and_logs_once_per_burst() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..6).map(|_| b.next()).collect();
        let ms: Vec<_> = delays.iter().map(|(d, _)| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(delays.iter().filter(|(_, first)| *first).count(), 1);
        assert!(b.reset());
        assert!(!b.reset());
        assert_eq!(b.next(), (ACCEPT_BACKOFF_MIN, true));
    }

    /// Fails every accept; a second call before the backoff sleep has elapsed is a spin.
    struct Failing(Arc<AtomicUsize>);

    impl Acceptor for Failing {
        async fn accept(&mut self) -> std::io::Result<UnixStream> {
            let calls = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(calls, 1, "accept retried at once after a failure: the loop spins");
            Err(std::io::Error::from_raw_os_error(libc::EMFILE))
        }
    }

    #[test]
    fn accept_errors_back_off_instead_of_spinning() {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let rt = runtime();
        let _guard = rt.enter();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut serving = Box::pin(serve(Failing(calls.clone()), echo()));
        let waker = std::task::Waker::from(Arc::new(Noop));
        // One poll: the loop meets the error and must then wait (sleep) before accepting again.
        let polled = serving.as_mut().poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
