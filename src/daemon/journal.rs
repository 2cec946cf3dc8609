//! The daemon's event history: every decision of the heartbeat node and the failover core, with
//! its reason, in the words the log uses (each entry is logged as it is recorded, from the same
//! text). Bounded: the oldest entries go first; a client that asks for entries already gone is
//! told how many it missed. `diskbeat events` reads it from the control socket.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Entries kept: at one event a second (a busy failover) about an hour of history.
pub const HISTORY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One event, as `diskbeat events --json` prints it (one JSON object per line). The field names
/// are the contract scripts rely on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEntry {
    /// Increases by one per event of this daemon (a gap: events dropped from the history).
    pub seq: u64,
    /// Wall clock, RFC 3339 UTC.
    pub time: String,
    pub unix_ms: u64,
    /// The daemon's monotonic clock (the clock of `status`'s `*_ms` instants).
    pub at_ms: u64,
    pub level: Level,
    /// What happened, one stable word: `peer_state`, `self_fence`, `partition`, `plan`,
    /// `vm_restarted`, ... (`diskbeat events --help`).
    pub kind: String,
    /// The reporting host: its name and slot.
    pub host: String,
    pub host_slot: u32,
    /// The slot the event is about, and its host's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The sentence the log prints.
    pub text: String,
    /// The facts behind it, by name (kind-specific).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// An event before it is numbered and stamped.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub level: Level,
    pub kind: &'static str,
    pub slot: Option<u32>,
    pub peer: Option<String>,
    pub vm: Option<String>,
    pub text: String,
    pub data: serde_json::Value,
}

impl NewEvent {
    pub fn new(level: Level, kind: &'static str, text: String) -> NewEvent {
        NewEvent { level, kind, slot: None, peer: None, vm: None, text, data: serde_json::Value::Null }
    }
    pub fn slot(mut self, slot: u32, peer: impl Into<String>) -> NewEvent {
        self.slot = Some(slot);
        self.peer = Some(peer.into());
        self
    }
    pub fn vm(mut self, vm: impl Into<String>) -> NewEvent {
        self.vm = Some(vm.into());
        self
    }
    pub fn data(mut self, data: serde_json::Value) -> NewEvent {
        self.data = data;
        self
    }
}

/// Which entries a client asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Query {
    /// Entries with a greater `seq`.
    pub after_seq: Option<u64>,
    /// Entries at or after this wall-clock time.
    pub since_unix_ms: Option<u64>,
    /// Keep the connection open and stream new entries.
    pub follow: bool,
}

impl Query {
    /// `events [after=SEQ] [since=UNIX_MS] [follow]`.
    pub fn parse(request: &str) -> Result<Query, String> {
        let mut words = request.split_whitespace();
        if words.next() != Some("events") {
            return Err("not an events request".into());
        }
        let mut q = Query::default();
        for w in words {
            let number = |v: &str| v.parse::<u64>().map_err(|_| format!("'{w}': not a number"));
            match w.split_once('=') {
                Some(("after", v)) => q.after_seq = Some(number(v)?),
                Some(("since", v)) => q.since_unix_ms = Some(number(v)?),
                None if w == "follow" => q.follow = true,
                _ => return Err(format!("unknown events option '{w}' (after=SEQ, since=UNIX_MS, follow)")),
            }
        }
        Ok(q)
    }

    pub fn request(&self) -> String {
        let mut r = "events".to_string();
        if let Some(s) = self.after_seq {
            r += &format!(" after={s}");
        }
        if let Some(t) = self.since_unix_ms {
            r += &format!(" since={t}");
        }
        if self.follow {
            r += " follow";
        }
        r
    }

    fn wants(&self, e: &EventEntry) -> bool {
        self.after_seq.is_none_or(|s| e.seq > s) && self.since_unix_ms.is_none_or(|t| e.unix_ms >= t)
    }
}

pub struct Journal {
    entries: VecDeque<EventEntry>,
    next_seq: u64,
    host: String,
    host_slot: u32,
}

impl Journal {
    pub fn new(host: String, host_slot: u32) -> Journal {
        Journal { entries: VecDeque::with_capacity(HISTORY), next_seq: 1, host, host_slot }
    }

    /// Logs `e` and keeps it. A ride-through reports itself every cycle: consecutive reports
    /// replace each other in the history (each is still logged and streamed to followers).
    pub fn record(&mut self, at_ms: u64, e: NewEvent) {
        log(&e);
        let coalesce = e.kind == "lun_lost" && self.entries.back().is_some_and(|b| b.kind == e.kind);
        if coalesce || self.entries.len() == HISTORY {
            if coalesce {
                self.entries.pop_back();
            } else {
                self.entries.pop_front();
            }
        }
        let now = std::time::SystemTime::now();
        let unix_ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.entries.push_back(EventEntry {
            seq: self.next_seq,
            time: humantime::format_rfc3339_millis(now).to_string(),
            unix_ms,
            at_ms,
            level: e.level,
            kind: e.kind.to_string(),
            host: self.host.clone(),
            host_slot: self.host_slot,
            slot: e.slot,
            peer: e.peer,
            vm: e.vm,
            text: e.text,
            data: e.data,
        });
        self.next_seq += 1;
    }

    /// The entries `q` asks for, oldest first, and how many it asked for that are gone already.
    pub fn read(&self, q: &Query) -> (Vec<EventEntry>, u64) {
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let missed = q.after_seq.map_or(0, |s| first.saturating_sub(s + 1));
        // Coalesced entries leave gaps in `seq` that are no loss: only the front counts.
        let out = self.entries.iter().filter(|e| q.wants(e)).cloned().collect();
        (out, missed)
    }

    /// The entry that tells a reader `missed` events it asked for are gone from the history.
    pub fn missed_entry(&self, missed: u64, at_ms: u64) -> EventEntry {
        let now = std::time::SystemTime::now();
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        EventEntry {
            seq: first.saturating_sub(1),
            time: humantime::format_rfc3339_millis(now).to_string(),
            unix_ms: now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            at_ms,
            level: Level::Warn,
            kind: "events_missed".into(),
            host: self.host.clone(),
            host_slot: self.host_slot,
            slot: None,
            peer: None,
            vm: None,
            text: format!(
                "{missed} events are gone from this daemon's history (it keeps the newest {HISTORY}) \
                 before this reader got them; the log has every one"
            ),
            data: serde_json::json!({ "missed": missed }),
        }
    }

    /// The newest `n` entries, oldest first.
    pub fn last(&self, n: usize) -> impl Iterator<Item = &EventEntry> {
        self.entries.iter().skip(self.entries.len().saturating_sub(n))
    }

    /// The seq the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// The log line of an event: its text, with its kind (and slot, VM) as fields.
fn log(e: &NewEvent) {
    let text = &e.text;
    let kind = e.kind;
    match e.level {
        Level::Error => tracing::error!(event = kind, "{text}"),
        Level::Warn => tracing::warn!(event = kind, "{text}"),
        Level::Info => tracing::info!(event = kind, "{text}"),
        Level::Debug => tracing::debug!(event = kind, "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_of(n: usize) -> Journal {
        let mut j = Journal::new("h1".into(), 0);
        for i in 0..n {
            j.record(i as u64, NewEvent::new(Level::Info, "test", format!("event {i}")));
        }
        j
    }

    #[test]
    fn the_history_is_bounded_and_a_late_reader_is_told_what_it_missed() {
        let j = journal_of(HISTORY + 10);
        let (all, missed) = j.read(&Query::default());
        assert_eq!((all.len(), missed), (HISTORY, 0));
        assert_eq!(all[0].seq, 11, "the oldest went first");
        let (rest, missed) = j.read(&Query { after_seq: Some(3), ..Query::default() });
        assert_eq!((rest.len(), missed), (HISTORY, 7), "seqs 4..=10 are gone");
        let (rest, missed) = j.read(&Query { after_seq: Some(HISTORY as u64 + 8), ..Query::default() });
        assert_eq!((rest.len(), missed), (2, 0));
    }

    #[test]
    fn ride_through_reports_replace_each_other_but_other_events_stay() {
        let mut j = journal_of(1);
        for _ in 0..5 {
            j.record(1, NewEvent::new(Level::Error, "lun_lost", "riding".into()));
        }
        j.record(2, NewEvent::new(Level::Info, "peer_state", "x".into()));
        j.record(3, NewEvent::new(Level::Error, "lun_lost", "riding".into()));
        let kinds: Vec<String> = j.read(&Query::default()).0.into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["test", "lun_lost", "peer_state", "lun_lost"]);
        assert_eq!(j.read(&Query::default()).1, 0);
    }

    #[test]
    fn queries_round_trip_and_bad_ones_are_refused() {
        let q = Query { after_seq: Some(5), since_unix_ms: Some(1_700_000_000_000), follow: true };
        assert_eq!(Query::parse(&q.request()), Ok(q));
        assert_eq!(Query::parse("events"), Ok(Query::default()));
        assert!(Query::parse("events after=x").unwrap_err().contains("not a number"));
        assert!(Query::parse("events tail").unwrap_err().contains("unknown events option"));
    }
}
