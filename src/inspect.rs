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
    /// The writer's ride-through membership (format 1.7, record `members`): the slots it would
    /// need vouching packets from to stay up without the disk, ascending. Null for a record of
    /// minor 6 or older (it states none) and without a valid record; meaningful only with
    /// `net_enabled` (docs/FORMAT.md §5, "Members bitmap").
    pub members: Option<Vec<u32>>,
    pub mailbox_ack: Option<u64>,
    /// Record flags by name ([`FLAG_NAMES`]): watchdog_armed, fence_failed, fence_stops_vms
    /// (format 1.1); net_enabled, isolation_configured, isolated, riding_through (format 1.4);
    /// operator_confirmed (format 1.5).
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
    /// The writer's host uuid the header names (format 1.6; nil in mkfs's headers); null for a
    /// header of minor 5 or older, which names none.
    pub host_uuid: Option<String>,
    /// Whether the header names the incarnation the slot's record names (its host uuid and
    /// generation; the generation alone for a header of minor 5 or older): failover takes the
    /// payload as that host's state only then (docs/FAILOVER.md, "Whose extent"). Null without a
    /// valid record or header.
    pub record_incarnation: Option<bool>,
    pub kind: Option<u16>,
    /// empty, host_info, or null for a kind this version does not define.
    pub kind_name: Option<&'static str>,
    pub payload_len: Option<u64>,
    /// Only when the payload was read (`--slot N`): ok, torn (checksum mismatch: being rewritten),
    /// too_large, or invalid (checksum ok, contents do not decode).
    pub payload: Option<&'static str>,
    /// Heartbeat addresses of a host_info or host_state payload that was read and decoded,
    /// primary first.
    pub heartbeat_addrs: Option<Vec<String>>,
    /// VMs of a host_state payload (format 1.5) that was read and decoded.
    pub vm_count: Option<usize>,
    /// Only when the payload was read: the copy shown, "a" or "b" (format 1.5: two copies per
    /// extent; "a" on a device formatted before 1.5).
    pub copy: Option<&'static str>,
    /// Only when the payload was read on a two-copy device: the other copy, as `payload` says
    /// (ok, torn, too_large), "older" (valid header, older, payload not read), "corrupt", or
    /// "unreadable".
    pub other_copy: Option<&'static str>,
}

impl ExtentReport {
    /// Sets `record_incarnation` against the slot's record (its host uuid and generation).
    pub fn compare_with_record(&mut self, record: &SlotReport) {
        let (Some(generation), Some(record_generation)) = (self.generation, record.generation) else {
            return;
        };
        let same_host = match (&self.host_uuid, &record.host_uuid) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        self.record_incarnation = Some(same_host && generation == record_generation);
    }
}

/// Reads `slot`'s extent header and, with `with_payload`, its payload (tools only: allocates).
pub fn extent_report(disk: &mut Disk, slot: u32, timeout: Duration, with_payload: bool) -> ExtentReport {
    use crate::disk::{CopyView, ExtentRead, EXTENT_PAYLOAD_IO_MAX};
    use crate::format::extent::{kind, Extent, Payload};
    let mut r = ExtentReport {
        status: "ok",
        reason: None,
        sequence: None,
        generation: None,
        host_uuid: None,
        record_incarnation: None,
        kind: None,
        kind_name: None,
        payload_len: None,
        payload: None,
        heartbeat_addrs: None,
        vm_count: None,
        copy: None,
        other_copy: None,
    };
    let fill = |r: &mut ExtentReport, h: &Extent| {
        r.sequence = Some(h.sequence);
        r.generation = Some(h.generation);
        r.host_uuid = h.writer_uuid().map(|u| u.to_string());
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
    let read = disk.read_extent_copies(slot, &mut buf, timeout).map(|c| {
        if let Some(copy) = c.copy {
            r.copy = Some(copy.as_str());
            r.other_copy = match c.view(copy.other()) {
                CopyView::Absent => None,
                CopyView::Corrupt(_) => Some("corrupt"),
                CopyView::Header(_) => Some("older"),
                CopyView::Payload(_) => Some("ok"),
                CopyView::Torn(_) => Some("torn"),
                CopyView::TooLarge(_) => Some("too_large"),
            };
        }
        c.read
    });
    match read {
        Ok(ExtentRead::Payload(h)) => {
            fill(&mut r, &h);
            match Payload::decode(&h, &buf[..h.payload_len as usize]) {
                Ok(p) => {
                    r.payload = Some("ok");
                    r.heartbeat_addrs = p.hb_addrs().map(|a| a.iter().map(|a| a.to_string()).collect());
                    if let Payload::HostState(s) = &p {
                        r.vm_count = Some(s.vms.len());
                    }
                }
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

/// Every record flag this version defines (`flags::KNOWN`), by the name docs/FORMAT.md §5 gives
/// it, in bit order (`tests/doc_drift.rs` checks both).
pub const FLAG_NAMES: [(u16, &str); 10] = {
    use crate::format::record::flags;
    [
        (flags::WATCHDOG_ARMED, "watchdog_armed"),
        (flags::FENCE_FAILED, "fence_failed"),
        (flags::FENCE_STOPS_VMS, "fence_stops_vms"),
        (flags::NET_ENABLED, "net_enabled"),
        (flags::ISOLATION_CONFIGURED, "isolation_configured"),
        (flags::ISOLATED, "isolated"),
        (flags::RIDING_THROUGH, "riding_through"),
        (flags::OPERATOR_CONFIRMED, "operator_confirmed"),
        (flags::FENCE_INTENT, "fence_intent"),
        (flags::FENCE_DEVICE, "fence_device"),
    ]
};

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
        members: None,
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
            for (bit, name) in FLAG_NAMES {
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
    /// Who hears whom on the network, from the records of the last sweep.
    pub network: NetMatrix,
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
    let mut slots: Vec<SlotReport> = last
        .iter()
        .enumerate()
        .map(|(i, v)| report(i as u32, first.as_ref().map(|f| &f[i]), v, elapsed))
        .collect();
    // The typed record does not keep its minor: `members` is read from the raw record, which
    // states it only from minor 7 on.
    let cluster = disk.superblock().cluster_uuid;
    for r in slots.iter_mut().filter(|r| r.status == "ok") {
        r.members = disk
            .slot_bytes(r.slot)
            .ok()
            .and_then(|bytes| Record::validate(bytes, &cluster, r.slot).ok())
            .and_then(|raw| raw.members())
            .map(|m| m.iter().collect());
    }
    let records: Vec<Record> = last
        .iter()
        .filter_map(|v| match v {
            SlotView::Record(r) => Some(*r),
            _ => None,
        })
        .collect();
    Ok(Inspection { slots, mailbox: None, sample: elapsed, network: net_matrix(&records) })
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
    /// `current_created_unix_s` as an RFC 3339 UTC time ("2023-11-14T22:15:00Z").
    pub current_created_rfc3339: Option<String>,
    pub previous_key_id: Option<u32>,
    pub previous_created_unix_s: Option<u64>,
    pub previous_created_rfc3339: Option<String>,
    pub previous_valid_until_unix_s: Option<u64>,
    pub previous_valid_until_rfc3339: Option<String>,
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
        current_created_rfc3339: None,
        previous_key_id: None,
        previous_created_unix_s: None,
        previous_created_rfc3339: None,
        previous_valid_until_unix_s: None,
        previous_valid_until_rfc3339: None,
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
            r.current_created_rfc3339 = r.current_created_unix_s.map(rfc3339);
            r.previous_created_rfc3339 = r.previous_created_unix_s.map(rfc3339);
            r.previous_valid_until_rfc3339 = r.previous_valid_until_unix_s.map(rfc3339);
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

/// Unix seconds as an RFC 3339 UTC time, to the second: 1700000100 is "2023-11-14T22:15:00Z".
pub fn rfc3339(unix_s: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix_s)).to_string()
}

/// A record is "held" when its state says a host is (or may still be) using the slot.
pub fn is_held(rec: &Record) -> bool {
    matches!(rec.state, State::Joining | State::Live | State::SelfFencing)
}

/// A network-enabled host of the who-hears-whom matrix (`inspect` JSON `network.hosts[]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetHost {
    pub slot: u32,
    /// The host name as read (unescaped: escape it before printing to a terminal).
    pub name: String,
    /// The record's state: joining, live, leaving, self_fencing or fenced.
    pub state: &'static str,
    /// Partition weight (format 1.4; docs/PARTITIONS.md criterion 3).
    pub weight: u32,
    pub isolation_configured: bool,
    /// Reaches none of its isolation addresses (only meaningful with `isolation_configured`).
    pub isolated: bool,
    /// Lost the heartbeat disk and rode through on network evidence (written once it is back).
    pub riding_through: bool,
    /// The other listed hosts whose bit is set in this host's `net_view`, ascending. Bits for
    /// itself and for slots not listed are ignored (as the partition rule ignores them).
    pub hears: Vec<u32>,
    /// The other listed hosts whose `net_view` lacks this host's bit, ascending.
    pub not_heard_by: Vec<u32>,
}

/// A held record without `NET_ENABLED`: the host heartbeats on the disk only and is left out of
/// the matrix (the partition rule never counts it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskOnlyHost {
    pub slot: u32,
    pub name: String,
    pub state: &'static str,
}

/// Who hears whom on the network, as the records on the disk say (docs/FORMAT.md §5 `net_view`,
/// docs/PARTITIONS.md "Inputs"). Only what the writers published: a stale record shows its
/// writer's last view.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetMatrix {
    /// Every valid, non-free record with `NET_ENABLED`, in slot order.
    pub hosts: Vec<NetHost>,
    /// `[a, b]`: a hears b but b does not hear a. Sorted.
    pub one_way: Vec<[u32; 2]>,
    /// Some pair of listed hosts does not hear each other both ways.
    pub partitioned: bool,
    /// Non-free records without `NET_ENABLED` (excluded from `hosts`), in slot order.
    pub disk_only: Vec<DiskOnlyHost>,
}

impl NetMatrix {
    /// Whether the host in row `a` hears the host in row `b` (indices into `hosts`).
    pub fn hears(&self, a: usize, b: usize) -> bool {
        self.hosts[a].hears.binary_search(&self.hosts[b].slot).is_ok()
    }

    /// Pairs `[a, b]` (a < b) of listed hosts where neither hears the other.
    pub fn no_link(&self) -> Vec<[u32; 2]> {
        let n = self.hosts.len();
        let mut out = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                if !self.hears(a, b) && !self.hears(b, a) {
                    out.push([self.hosts[a].slot, self.hosts[b].slot]);
                }
            }
        }
        out
    }

    /// Listed hosts no other listed host hears (empty with fewer than two hosts).
    pub fn heard_by_none(&self) -> Vec<u32> {
        if self.hosts.len() < 2 {
            return Vec::new();
        }
        self.hosts.iter().filter(|h| h.not_heard_by.len() == self.hosts.len() - 1).map(|h| h.slot).collect()
    }
}

/// Builds the who-hears-whom matrix from decoded records (any order; free records and records
/// of any slot may be mixed in). Pure: the records are all it reads.
pub fn net_matrix(records: &[Record]) -> NetMatrix {
    use crate::format::record::flags;
    let mut held: Vec<&Record> = records.iter().filter(|r| r.state != State::Free).collect();
    held.sort_by_key(|r| r.slot);
    held.dedup_by_key(|r| r.slot);
    let (net, disk): (Vec<&Record>, Vec<&Record>) =
        held.into_iter().partition(|r| r.flags & flags::NET_ENABLED != 0);
    let slots: Vec<u32> = net.iter().map(|r| r.slot).collect();
    let hosts: Vec<NetHost> = net
        .iter()
        .map(|r| NetHost {
            slot: r.slot,
            name: r.host_name().to_owned(),
            state: r.state.as_str(),
            weight: r.weight,
            isolation_configured: r.flags & flags::ISOLATION_CONFIGURED != 0,
            isolated: r.flags & flags::ISOLATED != 0,
            riding_through: r.flags & flags::RIDING_THROUGH != 0,
            hears: slots.iter().copied().filter(|&s| s != r.slot && r.net_view.get(s)).collect(),
            not_heard_by: net
                .iter()
                .filter(|o| o.slot != r.slot && !o.net_view.get(r.slot))
                .map(|o| o.slot)
                .collect(),
        })
        .collect();
    let mut one_way = Vec::new();
    let mut partitioned = false;
    for a in &net {
        for b in &net {
            if a.slot == b.slot {
                continue;
            }
            let (ab, ba) = (a.net_view.get(b.slot), b.net_view.get(a.slot));
            partitioned |= !(ab && ba);
            if ab && !ba {
                one_way.push([a.slot, b.slot]);
            }
        }
    }
    let disk_only = disk
        .iter()
        .map(|r| DiskOnlyHost { slot: r.slot, name: r.host_name().to_owned(), state: r.state.as_str() })
        .collect();
    NetMatrix { hosts, one_way, partitioned, disk_only }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::flags;

    const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0x5eed);

    #[test]
    fn flag_names_cover_every_known_bit_once() {
        assert_eq!(FLAG_NAMES.iter().fold(0, |m, (b, _)| m | b), flags::KNOWN);
        for (i, (bit, _)) in FLAG_NAMES.iter().enumerate() {
            assert_eq!(*bit, 1 << i, "bit order");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1700000100), "2023-11-14T22:15:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    /// A live, network-enabled record for `slot` hearing `hears` (and itself, as the daemon does).
    fn rec(slot: u32, hears: &[u32]) -> Record {
        let mut r = Record::free(CLUSTER, slot);
        r.state = State::Live;
        r.set_host_name(&format!("hv-{slot}")).unwrap();
        r.flags = flags::NET_ENABLED;
        r.weight = 1;
        r.net_view.set(slot, true);
        for &s in hears {
            r.net_view.set(s, true);
        }
        r
    }

    fn slots(m: &NetMatrix) -> Vec<u32> {
        m.hosts.iter().map(|h| h.slot).collect()
    }

    #[test]
    fn everyone_hears_everyone() {
        let m = net_matrix(&[rec(0, &[1, 2]), rec(1, &[0, 2]), rec(2, &[0, 1])]);
        assert_eq!(slots(&m), [0, 1, 2]);
        assert_eq!(m.hosts[0].hears, [1, 2], "its own bit is not listed");
        assert!(m.hosts.iter().all(|h| h.not_heard_by.is_empty()));
        assert!(m.one_way.is_empty() && m.no_link().is_empty() && m.heard_by_none().is_empty());
        assert!(!m.partitioned);
        assert!(m.hears(0, 1) && m.hears(2, 0));
    }

    #[test]
    fn one_way_link() {
        // 0 hears 1; 1 does not hear 0.
        let m = net_matrix(&[rec(0, &[1]), rec(1, &[])]);
        assert_eq!(m.one_way, [[0, 1]]);
        assert!(m.partitioned);
        assert_eq!((m.hosts[0].hears.as_slice(), m.hosts[0].not_heard_by.as_slice()), (&[1][..], &[1][..]));
        assert_eq!((m.hosts[1].hears.as_slice(), m.hosts[1].not_heard_by.as_slice()), (&[][..], &[][..]));
        assert!(m.no_link().is_empty(), "one way is not 'no link'");
        assert_eq!(m.heard_by_none(), [0]);
    }

    #[test]
    fn non_transitive_views() {
        // a-b and b-c mutual, a-c neither way: b is not a bridge making a and c one part.
        let m = net_matrix(&[rec(3, &[7]), rec(7, &[3, 9]), rec(9, &[7])]);
        assert_eq!(slots(&m), [3, 7, 9]);
        assert!(m.partitioned);
        assert!(m.one_way.is_empty());
        assert_eq!(m.no_link(), [[3, 9]]);
        assert_eq!(m.hosts[0].not_heard_by, [9]);
        assert_eq!(m.hosts[1].hears, [3, 9]);
        assert!(m.hosts[1].not_heard_by.is_empty());
        assert_eq!(m.hosts[2].not_heard_by, [3]);
        assert!(m.heard_by_none().is_empty());
    }

    #[test]
    fn disk_only_free_and_unlisted_slots_are_left_out() {
        let mut disk_only = rec(2, &[0, 1]);
        disk_only.flags = flags::WATCHDOG_ARMED;
        let free = Record::free(CLUSTER, 4);
        // 0 claims to hear 2 (disk-only), 4 (free) and 5 (no record): none of it counts.
        let m = net_matrix(&[rec(1, &[0]), free, disk_only, rec(0, &[1, 2, 4, 5])]);
        assert_eq!(slots(&m), [0, 1], "sorted by slot");
        assert_eq!(m.hosts[0].hears, [1]);
        assert!(!m.partitioned && m.one_way.is_empty());
        assert_eq!(m.disk_only, [DiskOnlyHost { slot: 2, name: "hv-2".into(), state: "live" }]);
        // Leaving, fenced, joining and self-fencing records are held: listed, with their state.
        let states = [State::Joining, State::Leaving, State::SelfFencing, State::Fenced];
        let recs: Vec<Record> = (0..4)
            .map(|i| {
                let mut r = rec(i, &[0, 1, 2, 3]);
                r.state = states[i as usize];
                r
            })
            .collect();
        let m = net_matrix(&recs);
        assert_eq!(
            m.hosts.iter().map(|h| h.state).collect::<Vec<_>>(),
            ["joining", "leaving", "self_fencing", "fenced"]
        );
        assert!(!m.partitioned);
        assert_eq!(net_matrix(&[]), NetMatrix::default());
    }

    #[test]
    fn host_flags_and_weight() {
        let mut r = rec(5, &[]);
        r.flags |= flags::ISOLATION_CONFIGURED | flags::ISOLATED | flags::RIDING_THROUGH;
        r.weight = 40;
        let m = net_matrix(&[r, rec(6, &[])]);
        let h = &m.hosts[0];
        assert_eq!((h.weight, h.isolation_configured, h.isolated, h.riding_through), (40, true, true, true));
        let h = &m.hosts[1];
        assert_eq!(
            (h.weight, h.isolation_configured, h.isolated, h.riding_through),
            (1, false, false, false)
        );
        // Two hosts hearing nobody: no link, both heard by none.
        assert_eq!(m.no_link(), [[5, 6]]);
        assert_eq!(m.heard_by_none(), [5, 6]);
        // A single host is not partitioned and not "heard by none".
        let m = net_matrix(&[rec(9, &[])]);
        assert!(!m.partitioned && m.heard_by_none().is_empty());
    }

    #[test]
    fn sixty_four_hosts_in_two_halves() {
        // Slots 0..32 hear each other, 32..64 hear each other; 10 also hears 40 (one way).
        let recs: Vec<Record> = (0..64u32)
            .map(|s| {
                let half: Vec<u32> = if s < 32 { (0..32).collect() } else { (32..64).collect() };
                let mut r = rec(s, &half);
                if s == 10 {
                    r.net_view.set(40, true);
                }
                r
            })
            .collect();
        let m = net_matrix(&recs);
        assert_eq!(m.hosts.len(), 64);
        assert!(m.partitioned);
        assert_eq!(m.one_way, [[10, 40]]);
        assert_eq!(m.hosts[10].hears.len(), 32);
        assert_eq!(m.hosts[40].not_heard_by.len(), 31, "heard by 10 only of the other half");
        assert_eq!(m.no_link().len(), 32 * 32 - 1);
    }
}
