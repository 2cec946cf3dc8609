//! Progress bars on stderr for the tools' long waits (mkfs's writer watch, probe): drawn only when
//! stderr is a terminal and never under `--json`; the library code only reports how far it got.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// Whether to draw bars: people watching a terminal, not scripts.
pub fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A bar over a span of time (position and length in milliseconds), `prefix: message [===  ] 12/44 s`.
pub fn timed(prefix: &str, message: &str, total: Duration) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix}: {msg} [{bar:30}] {seconds}")
        .expect("a valid template")
        .with_key("seconds", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let len = s.len().unwrap_or(0);
            let _ = write!(w, "{}/{} s", s.pos() / 1000, len.div_ceil(1000));
        })
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix.to_string());
    bar.set_message(message.to_string());
    // Redraw between updates: the elapsed time moves even while a slow pass runs.
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}
