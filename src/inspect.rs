//! Observing the record table from outside the cluster: two sweeps `sample` apart. Ages are
//! observed on this machine's clock, never computed from another host's clock.

use crate::disk::{Disk, DiskError, SlotView};
use crate::format::mailbox::Mailbox;
use crate::format::record::{Record, State};
use crate::io::Status;
use std::time::{Duration, Instant};

/// What was seen of a record between the two sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    /// The sequence moved: the writer is alive.
    Advancing,
    /// The generation changed: the writer restarted (or another host acquired the slot).
    Restarted,
    /// Nothing moved for at least `stale_ms_at_least`.
    Stale,
    /// Only one sweep was taken (`--sample 0`), or the record was not valid in both.
    Unknown,
}

/// One slot as the operator sees it (`inspect` table rows and JSON objects).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotReport {
    pub slot: u32,
    /// free, joining, live, leaving, self_fencing, fenced, corrupt or unreadable.
    pub state: &'static str,
    /// ok, corrupt or unreadable.
    pub status: &'static str,
    pub reason: Option<String>,
    pub host_name: Option<String>,
    pub host_uuid: Option<String>,
    pub generation: Option<u64>,
    pub sequence: Option<u64>,
    pub observed: Observed,
    pub stale_ms_at_least: Option<u64>,
    pub io_timeout_ms: Option<u32>,
    pub interval_ms: Option<u32>,
    pub monotonic_ms: Option<u64>,
    pub net_view: Vec<u32>,
    pub mailbox_ack: Option<u64>,
    /// Record flags (format 1.1) by name: watchdog_armed, fence_failed, fence_stops_vms.
    pub flags: Vec<&'static str>,
    /// The record's `extent_sequence` (format 1.2): the extent header sequence its writer says is
    /// current; 0 = nothing published.
    pub extent_sequence: Option<u64>,
    /// The slot's data-extent header, read for the slots shown (`extent_report`).
    pub extent: Option<ExtentReport>,
}

/// A slot's data extent as the operator sees it (docs/FORMAT.md §7).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtentReport {
    /// ok, corrupt (the header does not validate) or unreadable.
    pub status: &'static str,
    pub reason: Option<String>,
    pub sequence: Option<u64>,
    pub generation: Option<u64>,
    pub kind: Option<u16>,
    /// empty, host_info, or null for a kind this version does not define.
    pub kind_name: Option<&'static str>,
    pub payload_len: Option<u64>,
    /// Only when the payload was read (`--slot N`): ok, torn (checksum mismatch: being rewritten),
    /// too_large, or invalid (checksum ok, contents do not decode).
    pub payload: Option<&'static str>,
    /// Heartbeat addresses of a host_info payload that was read and decoded, primary first.
    pub heartbeat_addrs: Option<Vec<String>>,
}

/// Reads `slot`'s extent header and, with `with_payload`, its payload (tools only: allocates).
pub fn extent_report(disk: &mut Disk, slot: u32, timeout: Duration, with_payload: bool) -> ExtentReport {
    use crate::disk::{ExtentRead, EXTENT_PAYLOAD_IO_MAX};
    use crate::format::extent::{kind, Extent, Payload};
    let mut r = ExtentReport {
        status: "ok",
        reason: None,
        sequence: None,
        generation: None,
        kind: None,
        kind_name: None,
        payload_len: None,
        payload: None,
        heartbeat_addrs: None,
    };
    let fill = |r: &mut ExtentReport, h: &Extent| {
        r.sequence = Some(h.sequence);
        r.generation = Some(h.generation);
        r.kind = Some(h.kind);
        r.kind_name = kind::name(h.kind);
        r.payload_len = Some(h.payload_len);
    };
    let unreadable = |r: &mut ExtentReport, e: DiskError| {
        r.status = "unreadable";
        r.reason = Some(match e {
            DiskError::ExtentIo { status, .. } => status_reason(status),
            e => e.to_string(),
        });
    };
    if !with_payload {
        match disk.read_extent_header(slot, timeout) {
            Ok(Ok(h)) => fill(&mut r, &h),
            Ok(Err(c)) => (r.status, r.reason) = ("corrupt", Some(c.to_string())),
            Err(e) => unreadable(&mut r, e),
        }
        return r;
    }
    let mut buf = vec![0u8; EXTENT_PAYLOAD_IO_MAX];
    match disk.read_extent(slot, &mut buf, timeout) {
        Ok(ExtentRead::Payload(h)) => {
            fill(&mut r, &h);
            match Payload::decode(&h, &buf[..h.payload_len as usize]) {
                Ok(Payload::HostInfo(info)) => {
                    r.payload = Some("ok");
                    r.heartbeat_addrs = Some(info.addrs().iter().map(|a| a.to_string()).collect());
                }
                Ok(_) => r.payload = Some("ok"),
                Err(e) => (r.payload, r.reason) = (Some("invalid"), Some(e.to_string())),
            }
        }
        Ok(ExtentRead::Torn(h)) => {
            fill(&mut r, &h);
            r.payload = Some("torn");
        }
        Ok(ExtentRead::TooLarge(h)) => {
            fill(&mut r, &h);
            r.payload = Some("too_large");
        }
        Ok(ExtentRead::Corrupt(c)) => (r.status, r.reason) = ("corrupt", Some(c.to_string())),
        Err(e) => unreadable(&mut r, e),
    }
    r
}

impl SlotReport {
    /// A slot worth showing without `--all`: anything but a valid free record.
    pub fn is_used(&self) -> bool {
        self.state != State::Free.as_str()
    }
}

fn report(slot: u32, first: Option<&SlotView>, last: &SlotView, sample: Duration) -> SlotReport {
    let mut r = SlotReport {
        slot,
        state: "corrupt",
        status: "corrupt",
        reason: None,
        host_name: None,
        host_uuid: None,
        generation: None,
        sequence: None,
        observed: Observed::Unknown,
        stale_ms_at_least: None,
        io_timeout_ms: None,
        interval_ms: None,
        monotonic_ms: None,
        net_view: Vec::new(),
        mailbox_ack: None,
        flags: Vec::new(),
        extent_sequence: None,
        extent: None,
    };
    match last {
        SlotView::Corrupt(c) => r.reason = Some(c.to_string()),
        SlotView::Unreadable(s) => {
            r.state = "unreadable";
            r.status = "unreadable";
            r.reason = Some(status_reason(*s));
        }
        SlotView::Record(rec) => {
            r.state = rec.state.as_str();
            r.status = "ok";
            r.host_name = Some(rec.host_name().to_owned());
            r.host_uuid = Some(rec.host_uuid.to_string());
            r.generation = Some(rec.generation);
            r.sequence = Some(rec.sequence);
            // Free records carry no timing.
            r.io_timeout_ms = (rec.state != State::Free).then_some(rec.io_timeout_ms);
            r.interval_ms = (rec.state != State::Free).then_some(rec.interval_ms);
            r.monotonic_ms = Some(rec.monotonic_ms);
            r.net_view = rec.net_view.iter().collect();
            r.mailbox_ack = Some(rec.mailbox_ack);
            r.extent_sequence = Some(rec.extent_sequence);
            use crate::format::record::flags;
            for (bit, name) in [
                (flags::WATCHDOG_ARMED, "watchdog_armed"),
                (flags::FENCE_FAILED, "fence_failed"),
                (flags::FENCE_STOPS_VMS, "fence_stops_vms"),
            ] {
                if rec.flags & bit != 0 {
                    r.flags.push(name);
                }
            }
            if let Some(SlotView::Record(old)) = first {
                r.observed = if old.generation != rec.generation || old.host_uuid != rec.host_uuid {
                    Observed::Restarted
                } else if old.sequence != rec.sequence {
                    Observed::Advancing
                } else {
                    r.stale_ms_at_least = Some(sample.as_millis() as u64);
                    Observed::Stale
                };
            }
        }
    }
    r
}

pub fn status_reason(s: Status) -> String {
    match s {
        Status::Failed(errno) => format!("read failed: {}", nix::errno::Errno::from_raw(errno).desc()),
        Status::Short(n) => format!("short read ({n} bytes)"),
        Status::TimedOut => "read timed out".into(),
        Status::Busy => "buffer pinned by an earlier timed-out read".into(),
        Status::Done => "ok".into(),
    }
}

/// The result of an inspection.
pub struct Inspection {
    pub slots: Vec<SlotReport>,
    /// The mailbox of the slot asked for (`--slot N`), if readable.
    pub mailbox: Option<Result<Mailbox, String>>,
    pub sample: Duration,
}

/// Sweeps once, waits `sample` (if non-zero), sweeps again and reports every slot.
pub fn inspect(disk: &mut Disk, sample: Duration, io_timeout: Duration) -> Result<Inspection, DiskError> {
    disk.sweep(io_timeout)?;
    let first = (!sample.is_zero()).then(|| disk.snapshot());
    let started = Instant::now();
    if first.is_some() {
        std::thread::sleep(sample);
        disk.sweep(io_timeout)?;
    }
    let elapsed = if first.is_some() { started.elapsed() } else { Duration::ZERO };
    let last = disk.snapshot();
    let slots = last
        .iter()
        .enumerate()
        .map(|(i, v)| report(i as u32, first.as_ref().map(|f| &f[i]), v, elapsed))
        .collect();
    Ok(Inspection { slots, mailbox: None, sample: elapsed })
}

/// Reads the mailbox of `slot` from the last sweep of a disk opened with that own slot.
pub fn mailbox_of(disk: &Disk, slot: u32) -> Result<Mailbox, String> {
    let bytes = disk.mailbox_bytes().map_err(status_reason)?;
    Mailbox::decode(bytes, &disk.superblock().cluster_uuid, slot).map_err(|c| c.to_string())
}

/// The cluster keyring as the operator sees it (docs/FORMAT.md §17): key ids and times, **never
/// key bytes** (nothing here can hold them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyringReport {
    /// ok, missing (bytes 512..1024 zero: formatted before format 1.3), corrupt or unreadable.
    pub status: &'static str,
    pub reason: Option<String>,
    pub format_version: Option<String>,
    pub current_key_id: Option<u32>,
    pub current_created_unix_s: Option<u64>,
    pub previous_key_id: Option<u32>,
    pub previous_created_unix_s: Option<u64>,
    pub previous_valid_until_unix_s: Option<u64>,
    /// Whether the previous key still verifies at `now_unix_s` (this machine's wall clock).
    pub previous_in_window: Option<bool>,
    pub now_unix_s: u64,
}

/// Reads the keyring of the cluster `sb` describes from `path`.
pub fn keyring_report(path: &std::path::Path, sb: &crate::format::superblock::Superblock) -> KeyringReport {
    use crate::format::Corruption;
    let now = crate::rekey::now_unix_s();
    let mut r = KeyringReport {
        status: "ok",
        reason: None,
        format_version: None,
        current_key_id: None,
        current_created_unix_s: None,
        previous_key_id: None,
        previous_created_unix_s: None,
        previous_valid_until_unix_s: None,
        previous_in_window: None,
        now_unix_s: now,
    };
    match crate::rekey::read_keyring(path, sb) {
        Ok(Ok(k)) => {
            r.format_version = Some(format!("{}.{}", crate::format::VERSION_MAJOR, k.version_minor));
            r.current_key_id = Some(k.current.id);
            r.current_created_unix_s = Some(k.current.created_unix_s);
            r.previous_key_id = k.previous.map(|p| p.id);
            r.previous_created_unix_s = k.previous.map(|p| p.created_unix_s);
            r.previous_valid_until_unix_s = k.previous.map(|p| p.valid_until_unix_s);
            r.previous_in_window = k.previous.map(|_| k.previous_in_window(now));
        }
        Ok(Err(Corruption::Zeroed)) => {
            r.status = "missing";
            r.reason = Some("no keyring (formatted before format 1.3)".into());
        }
        Ok(Err(c)) => (r.status, r.reason) = ("corrupt", Some(c.to_string())),
        Err(e) => (r.status, r.reason) = ("unreadable", Some(e.to_string())),
    }
    r
}

/// A record is "held" when its state says a host is (or may still be) using the slot.
pub fn is_held(rec: &Record) -> bool {
    matches!(rec.state, State::Joining | State::Live | State::SelfFencing)
}
