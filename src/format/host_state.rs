//! Payload kind 2 (format 1.5), "host state": what a host publishes in its data extent for the
//! pool's failover: heartbeat addresses (as kind 1), capacity, every VM it holds with its protection
//! settings, claim and definition, and (on the coordinator) the restart plan. docs/FORMAT.md §7.
//!
//! Encoded as a sequence of typed entries (little-endian): `type u16, reserved u16 (0), len u32`,
//! then `len` bytes, then zero padding to 8 bytes. Unknown entry types of a newer minor are skipped.

use std::net::SocketAddr;

/// A VM's state in its holder's inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Running here (as the driver last reported).
    Running,
    /// Defined here, not running.
    Stopped,
    /// A restart here was claimed durably (intent written); the start may be under way.
    Starting,
    /// A restart here failed (the reason is in `failure`); this host never retries it.
    Failed,
    /// Ran here in a previous incarnation of this host and does not run now (the host rebooted or
    /// its daemon restarted after a fence): the pool restarts it, like a gone host's VM.
    Lost,
}

impl VmState {
    /// Running or about to be: a holder in this state that is not proven gone blocks every
    /// other host from starting the VM.
    pub fn holds(self) -> bool {
        matches!(self, VmState::Running | VmState::Starting)
    }
}

/// One VM in a host's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    pub uuid: uuid::Uuid,
    /// At most 255 bytes of UTF-8.
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub state: VmState,
    pub protection: crate::planner::Protection,
    pub order: Option<i64>,
    /// At most 255 bytes of UTF-8.
    pub anti_affinity: Option<String>,
    /// Claim number: each restart of the VM elsewhere takes the previous highest claim + 1, so the
    /// newest holder is the one with the highest claim (docs/FAILOVER.md).
    pub claim: u64,
    /// Restart attempt this claim belongs to (0: started locally, not by failover).
    pub attempt: u8,
    /// Why the start failed (state `Failed`), at most 255 bytes.
    pub failure: Option<String>,
    /// What a survivor needs to start it (libvirt domain XML; exec hook's string).
    pub definition: Vec<u8>,
}

/// Identifies one published plan: who made it, in which incarnation, and its number (plan numbers
/// only grow across coordinators: a new coordinator continues from the highest it read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    pub number: u64,
    pub coordinator_slot: u32,
    pub coordinator_generation: u64,
}

/// One VM assigned to one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    pub uuid: uuid::Uuid,
    /// Where the definition is read from (the gone holder with the highest claim).
    pub source_slot: u32,
    pub source_generation: u64,
    pub target_slot: u32,
    /// The claim the target takes (source's claim + 1).
    pub claim: u64,
    /// 1 for the first attempt, 2 for the retry elsewhere.
    pub attempt: u8,
    /// Start wave: targets start wave w only when every earlier wave's VM runs or failed.
    pub wave: u32,
}

/// A VM of a gone host the plan does not restart, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unplaced {
    pub uuid: uuid::Uuid,
    pub source_slot: u32,
    /// `UnplacedCode` as u8.
    pub reason: UnplacedCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnplacedCode {
    /// Protection `none`.
    NotProtected = 1,
    /// No survivor has room.
    NoCapacity = 2,
    /// Its starts failed on two hosts.
    StartFailed = 3,
}

/// The coordinator's restart plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub epoch: Epoch,
    pub assignments: Vec<Assignment>,
    pub unplaced: Vec<Unplaced>,
}

/// What the host offers to VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostCapacity {
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Accepts restarted VMs (false: maintenance).
    pub accepts_restarts: bool,
}

/// The whole payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState {
    /// Heartbeat addresses, at most 2 (as host info, kind 1).
    pub hb_addrs: Vec<SocketAddr>,
    /// `None` when the host runs no VM driver (its VMs are unknown to the pool).
    pub capacity: Option<HostCapacity>,
    pub vms: Vec<VmEntry>,
    pub plan: Option<Plan>,
}

// ---- Encoding (docs/FORMAT.md §7, "Payload kind 2: host_state") ----

use super::extent::host_info::{HB_ADDR_V4_LEN, HB_ADDR_V6_LEN, MAX_HB_ADDRS};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Format minor that defines payload kind 2 and its entry types 1..=7.
pub const SINCE_MINOR: u16 = 5;
/// Entries start, and end, on multiples of this many payload bytes.
pub const ENTRY_ALIGN: usize = 8;
/// Bytes of an entry header.
pub const ENTRY_HEADER_LEN: usize = 8;

/// Entry types (`type` of an entry header). 0 is never assigned.
pub mod entry {
    /// A heartbeat address, IPv4: value as kind 1's `hb_addr_v4` (6 bytes).
    pub const HB_ADDR_V4: u16 = 1;
    /// A heartbeat address, IPv6: value as kind 1's `hb_addr_v6` (18 bytes).
    pub const HB_ADDR_V6: u16 = 2;
    /// The host's capacity ([`super::CapacityRaw`], 16 bytes).
    pub const CAPACITY: u16 = 3;
    /// One VM ([`super::VmFixedRaw`], 56 bytes, then name, group, failure, definition).
    pub const VM: u16 = 4;
    /// The restart plan's header ([`super::PlanHeaderRaw`], 32 bytes).
    pub const PLAN_HEADER: u16 = 5;
    /// One assignment of the plan ([`super::AssignmentRaw`], 48 bytes).
    pub const ASSIGNMENT: u16 = 6;
    /// One VM the plan does not restart ([`super::UnplacedRaw`], 24 bytes).
    pub const UNPLACED: u16 = 7;
    /// The name of an entry type, `None` for types this version does not define.
    pub fn name(t: u16) -> Option<&'static str> {
        Some(match t {
            HB_ADDR_V4 => "hb_addr_v4",
            HB_ADDR_V6 => "hb_addr_v6",
            CAPACITY => "capacity",
            VM => "vm",
            PLAN_HEADER => "plan_header",
            ASSIGNMENT => "assignment",
            UNPLACED => "unplaced",
            _ => return None,
        })
    }
}

/// Header of every entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EntryHeaderRaw {
    pub entry_type: U16, // 0
    pub reserved: U16,   // 2
    pub len: U32,        // 4
}
const _: () = assert!(core::mem::size_of::<EntryHeaderRaw>() == ENTRY_HEADER_LEN);

/// Value of a `CAPACITY` entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CapacityRaw {
    pub memory_mib: U64, // 0
    pub vcpus: U32,      // 8
    pub flags: U32,      // 12: bit 0 accepts_restarts
}
const _: () = assert!(core::mem::size_of::<CapacityRaw>() == 16);
/// `CapacityRaw::flags` bit 0.
pub const CAPACITY_ACCEPTS_RESTARTS: u32 = 1;

/// Fixed part of a `VM` entry's value; the strings and the definition follow it, in this order.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct VmFixedRaw {
    pub uuid: [u8; 16],      // 0
    pub memory_mib: U64,     // 16
    pub vcpus: U32,          // 24
    pub state: u8,           // 28
    pub protection: u8,      // 29
    pub attempt: u8,         // 30
    pub flags: u8,           // 31: bit 0 has_order
    pub order: I64,          // 32
    pub claim: U64,          // 40
    pub name_len: u8,        // 48
    pub group_len: u8,       // 49: 0 = no anti-affinity group
    pub failure_len: u8,     // 50: 0 = no failure
    pub pad: u8,             // 51
    pub definition_len: U32, // 52
}
const _: () = assert!(core::mem::size_of::<VmFixedRaw>() == 56);
/// `VmFixedRaw::flags` bit 0: `order` is meaningful.
pub const VM_HAS_ORDER: u8 = 1;

/// Value of a `PLAN_HEADER` entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PlanHeaderRaw {
    pub number: U64,                 // 0
    pub coordinator_slot: U32,       // 8
    pub pad: U32,                    // 12
    pub coordinator_generation: U64, // 16
    pub assignment_count: U32,       // 24
    pub unplaced_count: U32,         // 28
}
const _: () = assert!(core::mem::size_of::<PlanHeaderRaw>() == 32);

/// Value of an `ASSIGNMENT` entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct AssignmentRaw {
    pub uuid: [u8; 16],         // 0
    pub source_slot: U32,       // 16
    pub target_slot: U32,       // 20
    pub source_generation: U64, // 24
    pub claim: U64,             // 32
    pub wave: U32,              // 40
    pub attempt: u8,            // 44
    pub pad: [u8; 3],           // 45
}
const _: () = assert!(core::mem::size_of::<AssignmentRaw>() == 48);

/// Value of an `UNPLACED` entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct UnplacedRaw {
    pub uuid: [u8; 16],   // 0
    pub source_slot: U32, // 16
    pub reason: u8,       // 20
    pub pad: [u8; 3],     // 21
}
const _: () = assert!(core::mem::size_of::<UnplacedRaw>() == 24);

/// Why a host state payload was not encoded or not decoded. Offsets are payload offsets of the
/// entry (its header) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostStateError {
    #[error("entry at payload offset {offset} runs past the end of the payload")]
    Truncated { offset: usize },
    #[error("unknown entry type {entry_type} at payload offset {offset}")]
    UnknownEntry { offset: usize, entry_type: u16 },
    #[error("entry type {entry_type} at payload offset {offset} has length {len}")]
    BadLength { offset: usize, entry_type: u16, len: u32 },
    #[error("reserved, pad or padding bytes, or undefined flag bits, not zero in the entry at payload offset {offset}")]
    ReservedNotZero { offset: usize },
    #[error("invalid {field} in the entry at payload offset {offset}")]
    BadValue { offset: usize, field: &'static str },
    #[error("more than {MAX_HB_ADDRS} heartbeat addresses (entry at payload offset {offset})")]
    TooManyAddrs { offset: usize },
    #[error("heartbeat address at payload offset {offset} has port 0 or an unspecified address")]
    BadAddr { offset: usize },
    #[error("second {what} entry at payload offset {offset}")]
    Duplicate { offset: usize, what: &'static str },
    #[error("VM {uuid} listed twice (second entry at payload offset {offset})")]
    DuplicateVm { offset: usize, uuid: uuid::Uuid },
    #[error("plan entry at payload offset {offset} without a plan header before it, or past its counts")]
    PlanEntryOutsidePlan { offset: usize },
    #[error("the plan header announces {announced} {what} entries, the payload has {found}")]
    PlanCount { what: &'static str, announced: u32, found: u32 },
    #[error(
        "heartbeat address {0} cannot be published: port 0, an unspecified address, or an IPv6 \
         scope id / flow label (not carried)"
    )]
    Unrepresentable(SocketAddr),
    #[error("VM {uuid}: {field} is {len} bytes; it must be at most {max} bytes (names, groups and failures: 1 to 255, or absent)")]
    BadString { uuid: uuid::Uuid, field: &'static str, len: usize, max: usize },
    #[error("{field} {value} is above {COUNTER_MAX} (2^63 - 1), the largest a claim or plan number may be")]
    CounterTooLarge { field: &'static str, value: u64 },
    #[error("VM {uuid}: {field} contains a control character (names and groups may not)")]
    ControlChar { uuid: uuid::Uuid, field: &'static str },
    #[error("the plan has {0} entries of one kind, more than a u32 counts")]
    PlanTooLarge(usize),
}

fn state_code(s: VmState) -> u8 {
    match s {
        VmState::Running => 1,
        VmState::Stopped => 2,
        VmState::Starting => 3,
        VmState::Failed => 4,
        VmState::Lost => 5,
    }
}
fn state_from(code: u8) -> Option<VmState> {
    Some(match code {
        1 => VmState::Running,
        2 => VmState::Stopped,
        3 => VmState::Starting,
        4 => VmState::Failed,
        5 => VmState::Lost,
        _ => return None,
    })
}
fn protection_code(p: crate::planner::Protection) -> u8 {
    use crate::planner::Protection as P;
    match p {
        P::Protect => 1,
        P::BestEffort => 2,
        P::None => 3,
    }
}
fn protection_from(code: u8) -> Option<crate::planner::Protection> {
    use crate::planner::Protection as P;
    Some(match code {
        1 => P::Protect,
        2 => P::BestEffort,
        3 => P::None,
        _ => return None,
    })
}
fn unplaced_from(code: u8) -> Option<UnplacedCode> {
    Some(match code {
        1 => UnplacedCode::NotProtected,
        2 => UnplacedCode::NoCapacity,
        3 => UnplacedCode::StartFailed,
        _ => return None,
    })
}

/// Whether `a` can be published (as kind 1): a real port and address; IPv6 without scope id or
/// flow label.
fn representable(a: &SocketAddr) -> bool {
    let ok = a.port() != 0 && !a.ip().is_unspecified();
    match a {
        SocketAddr::V4(_) => ok,
        SocketAddr::V6(v6) => ok && v6.scope_id() == 0 && v6.flowinfo() == 0,
    }
}

/// Appends one entry: header, `value`, zero padding to [`ENTRY_ALIGN`].
fn put_entry(out: &mut Vec<u8>, entry_type: u16, value: &[&[u8]]) {
    let len: usize = value.iter().map(|v| v.len()).sum();
    let head = EntryHeaderRaw {
        entry_type: U16::new(entry_type),
        reserved: U16::new(0),
        len: U32::new(u32::try_from(len).expect("entry lengths are checked before encoding")),
    };
    let start = out.len();
    debug_assert_eq!(start % ENTRY_ALIGN, 0, "entries start aligned");
    out.extend_from_slice(head.as_bytes());
    for v in value {
        out.extend_from_slice(v);
    }
    out.resize(start + ENTRY_HEADER_LEN + len.next_multiple_of(ENTRY_ALIGN), 0);
}

/// Largest claim (a VM's, an assignment's) and plan number on the disk: 2^63 - 1. They grow by
/// one per restart or plan, so no pool reaches it; a larger value is garbage, refused (as
/// `BadValue`) so that the `+ 1` every reader does on them (the next claim, the next plan
/// number) cannot overflow.
pub const COUNTER_MAX: u64 = i64::MAX as u64;

/// Longest VM name, anti-affinity group or failure text on the disk, in bytes.
pub const VM_STRING_MAX: usize = 255;

/// Whether `s` may be a VM's name or anti-affinity group on the disk (docs/FORMAT.md §7): 1 to
/// 255 bytes with no control character (`char::is_control`: U+0000..U+001F and U+007F..U+009F, a
/// set Unicode never changes, so every build agrees on it). Anything else printable or not
/// (spaces, quotes, bidi and zero-width characters) is allowed, and escaped by the tools that
/// print it. Failure texts are free text: any UTF-8.
pub fn valid_vm_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= VM_STRING_MAX && !s.chars().any(char::is_control)
}

/// A claim or plan number the format can carry ([`COUNTER_MAX`]).
fn counter(field: &'static str, value: u64) -> Result<u64, HostStateError> {
    if value > COUNTER_MAX {
        return Err(HostStateError::CounterTooLarge { field, value });
    }
    Ok(value)
}

/// A string field of a VM entry: `None` or 1..=255 bytes.
fn string_len(uuid: uuid::Uuid, field: &'static str, s: Option<&str>) -> Result<u8, HostStateError> {
    match s {
        None => Ok(0),
        Some(s) => match u8::try_from(s.len()) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(HostStateError::BadString { uuid, field, len: s.len(), max: 255 }),
        },
    }
}

impl HostState {
    /// Encodes the payload into `out` (cleared first), in the order addresses, capacity, VMs, plan
    /// header, assignments, unplaced. Refuses what `decode` would refuse: more than two or
    /// unpublishable addresses, an empty or longer than 255 bytes name (group and failure: `Some`
    /// must be 1..=255 bytes), a control character in a name or group ([`valid_vm_name`]), a
    /// definition over `u32::MAX` bytes, a VM UUID listed twice.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), HostStateError> {
        out.clear();
        if self.hb_addrs.len() > MAX_HB_ADDRS {
            return Err(HostStateError::TooManyAddrs { offset: 0 });
        }
        for a in &self.hb_addrs {
            if !representable(a) {
                return Err(HostStateError::Unrepresentable(*a));
            }
            let port = a.port().to_le_bytes();
            match a.ip() {
                IpAddr::V4(ip) => put_entry(out, entry::HB_ADDR_V4, &[&ip.octets(), &port]),
                IpAddr::V6(ip) => put_entry(out, entry::HB_ADDR_V6, &[&ip.octets(), &port]),
            }
        }
        if let Some(c) = self.capacity {
            let raw = CapacityRaw {
                memory_mib: U64::new(c.memory_mib),
                vcpus: U32::new(c.vcpus),
                flags: U32::new(if c.accepts_restarts { CAPACITY_ACCEPTS_RESTARTS } else { 0 }),
            };
            put_entry(out, entry::CAPACITY, &[raw.as_bytes()]);
        }
        let mut seen = std::collections::HashSet::with_capacity(self.vms.len());
        for vm in &self.vms {
            let offset = out.len();
            if !seen.insert(vm.uuid) {
                return Err(HostStateError::DuplicateVm { offset, uuid: vm.uuid });
            }
            let name_len = string_len(vm.uuid, "name", Some(&vm.name))?;
            let group_len = string_len(vm.uuid, "anti_affinity", vm.anti_affinity.as_deref())?;
            let failure_len = string_len(vm.uuid, "failure", vm.failure.as_deref())?;
            for (field, text) in
                [("name", Some(&vm.name[..])), ("anti_affinity", vm.anti_affinity.as_deref())]
            {
                if text.is_some_and(|t| t.chars().any(char::is_control)) {
                    return Err(HostStateError::ControlChar { uuid: vm.uuid, field });
                }
            }
            // The whole value's length is a u32: room for the fixed part and three full strings.
            let max = u32::MAX as usize - VM_FIXED_LEN - 3 * 255;
            if vm.definition.len() > max {
                let len = vm.definition.len();
                return Err(HostStateError::BadString { uuid: vm.uuid, field: "definition", len, max });
            }
            let definition_len = vm.definition.len() as u32;
            counter("claim", vm.claim)?;
            let raw = VmFixedRaw {
                uuid: vm.uuid.into_bytes(),
                memory_mib: U64::new(vm.memory_mib),
                vcpus: U32::new(vm.vcpus),
                state: state_code(vm.state),
                protection: protection_code(vm.protection),
                attempt: vm.attempt,
                flags: if vm.order.is_some() { VM_HAS_ORDER } else { 0 },
                order: I64::new(vm.order.unwrap_or(0)),
                claim: U64::new(vm.claim),
                name_len,
                group_len,
                failure_len,
                pad: 0,
                definition_len: U32::new(definition_len),
            };
            put_entry(
                out,
                entry::VM,
                &[
                    raw.as_bytes(),
                    vm.name.as_bytes(),
                    vm.anti_affinity.as_deref().unwrap_or("").as_bytes(),
                    vm.failure.as_deref().unwrap_or("").as_bytes(),
                    &vm.definition,
                ],
            );
        }
        if let Some(plan) = &self.plan {
            counter("plan number", plan.epoch.number)?;
            for a in &plan.assignments {
                counter("assignment claim", a.claim)?;
            }
            let count = |n: usize| u32::try_from(n).map_err(|_| HostStateError::PlanTooLarge(n));
            let raw = PlanHeaderRaw {
                number: U64::new(plan.epoch.number),
                coordinator_slot: U32::new(plan.epoch.coordinator_slot),
                pad: U32::new(0),
                coordinator_generation: U64::new(plan.epoch.coordinator_generation),
                assignment_count: U32::new(count(plan.assignments.len())?),
                unplaced_count: U32::new(count(plan.unplaced.len())?),
            };
            put_entry(out, entry::PLAN_HEADER, &[raw.as_bytes()]);
            for a in &plan.assignments {
                let raw = AssignmentRaw {
                    uuid: a.uuid.into_bytes(),
                    source_slot: U32::new(a.source_slot),
                    target_slot: U32::new(a.target_slot),
                    source_generation: U64::new(a.source_generation),
                    claim: U64::new(a.claim),
                    wave: U32::new(a.wave),
                    attempt: a.attempt,
                    pad: [0; 3],
                };
                put_entry(out, entry::ASSIGNMENT, &[raw.as_bytes()]);
            }
            for u in &plan.unplaced {
                let raw = UnplacedRaw {
                    uuid: u.uuid.into_bytes(),
                    source_slot: U32::new(u.source_slot),
                    reason: u.reason as u8,
                    pad: [0; 3],
                };
                put_entry(out, entry::UNPLACED, &[raw.as_bytes()]);
            }
        }
        debug_assert_eq!(out.len() % ENTRY_ALIGN, 0);
        Ok(())
    }

    /// Decodes a host state payload (the `payload_len` bytes whose crc32c matched) from an extent
    /// header of format minor `header_minor`. Validates every entry (see [`HostStateError`]);
    /// entry types this build does not define are refused in a header of a minor it knows and
    /// skipped, whole, in a newer minor's. Total: never panics, whatever the bytes.
    pub fn decode(payload: &[u8], header_minor: u16) -> Result<HostState, HostStateError> {
        let mut h = HostState::default();
        let mut seen = std::collections::HashSet::new();
        // (announced assignments, announced unplaced) once a plan header was read.
        let mut announced: Option<(u32, u32)> = None;
        let mut pos = 0;
        while pos < payload.len() {
            let offset = pos;
            let Some(head) = payload.get(pos..pos + ENTRY_HEADER_LEN) else {
                return Err(HostStateError::Truncated { offset });
            };
            let head = EntryHeaderRaw::ref_from_bytes(head).expect("size checked");
            let (entry_type, len) = (head.entry_type.get(), head.len.get());
            let start = pos + ENTRY_HEADER_LEN;
            let padded = usize::try_from(len).ok().and_then(|l| l.checked_next_multiple_of(ENTRY_ALIGN));
            let end = padded.and_then(|p| start.checked_add(p)).filter(|&e| e <= payload.len());
            let Some(end) = end else {
                return Err(HostStateError::Truncated { offset });
            };
            let value = &payload[start..start + len as usize];
            pos = end;
            let known = super::known_minor(header_minor);
            if entry::name(entry_type).is_none() {
                if known {
                    return Err(HostStateError::UnknownEntry { offset, entry_type });
                }
                continue;
            }
            if known && (head.reserved.get() != 0 || !super::all_zero(&payload[start + len as usize..end])) {
                return Err(HostStateError::ReservedNotZero { offset });
            }
            let bad_len = HostStateError::BadLength { offset, entry_type, len };
            let bad = |field| HostStateError::BadValue { offset, field };
            match entry_type {
                entry::HB_ADDR_V4 | entry::HB_ADDR_V6 => {
                    let want = if entry_type == entry::HB_ADDR_V4 { HB_ADDR_V4_LEN } else { HB_ADDR_V6_LEN };
                    if value.len() != want {
                        return Err(bad_len);
                    }
                    let port = u16::from_le_bytes([value[want - 2], value[want - 1]]);
                    let addr = if let Ok(ip) = <[u8; 4]>::try_from(&value[..want - 2]) {
                        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
                    } else {
                        let ip: [u8; 16] = value[..16].try_into().map_err(|_| bad_len.clone())?;
                        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
                    };
                    if !representable(&addr) {
                        return Err(HostStateError::BadAddr { offset });
                    }
                    if h.hb_addrs.len() == MAX_HB_ADDRS {
                        return Err(HostStateError::TooManyAddrs { offset });
                    }
                    h.hb_addrs.push(addr);
                }
                entry::CAPACITY => {
                    let raw = CapacityRaw::ref_from_bytes(value).map_err(|_| bad_len)?;
                    if known && raw.flags.get() & !CAPACITY_ACCEPTS_RESTARTS != 0 {
                        return Err(HostStateError::ReservedNotZero { offset });
                    }
                    if h.capacity.is_some() {
                        return Err(HostStateError::Duplicate { offset, what: "capacity" });
                    }
                    h.capacity = Some(HostCapacity {
                        memory_mib: raw.memory_mib.get(),
                        vcpus: raw.vcpus.get(),
                        accepts_restarts: raw.flags.get() & CAPACITY_ACCEPTS_RESTARTS != 0,
                    });
                }
                entry::VM => {
                    let Some((raw, rest)) = value
                        .split_at_checked(VM_FIXED_LEN)
                        .and_then(|(f, r)| Some((VmFixedRaw::ref_from_bytes(f).ok()?, r)))
                    else {
                        return Err(bad_len);
                    };
                    let lens = [
                        u64::from(raw.name_len),
                        u64::from(raw.group_len),
                        u64::from(raw.failure_len),
                        u64::from(raw.definition_len.get()),
                    ];
                    // In u64: 3 x 255 + u32::MAX overflows a 32-bit usize.
                    if lens.iter().sum::<u64>() != rest.len() as u64 {
                        return Err(bad_len);
                    }
                    // Each fits `rest` (their sum does), so each fits a usize.
                    let lens = lens.map(|l| l as usize);
                    if known && (raw.pad != 0 || raw.flags & !VM_HAS_ORDER != 0) {
                        return Err(HostStateError::ReservedNotZero { offset });
                    }
                    if known && raw.flags & VM_HAS_ORDER == 0 && raw.order.get() != 0 {
                        return Err(HostStateError::ReservedNotZero { offset });
                    }
                    let (name, rest) = rest.split_at(lens[0]);
                    let (group, rest) = rest.split_at(lens[1]);
                    let (failure, definition) = rest.split_at(lens[2]);
                    let text =
                        |b: &[u8], field| std::str::from_utf8(b).map(str::to_owned).map_err(|_| bad(field));
                    // Names and groups reach hooks, logs and terminals: no control characters.
                    let name_text = |b: &[u8], field| {
                        text(b, field).and_then(|t| if valid_vm_name(&t) { Ok(t) } else { Err(bad(field)) })
                    };
                    let vm = VmEntry {
                        uuid: uuid::Uuid::from_bytes(raw.uuid),
                        name: name_text(name, "name")?,
                        memory_mib: raw.memory_mib.get(),
                        vcpus: raw.vcpus.get(),
                        state: state_from(raw.state).ok_or(bad("state"))?,
                        protection: protection_from(raw.protection).ok_or(bad("protection"))?,
                        order: (raw.flags & VM_HAS_ORDER != 0).then(|| raw.order.get()),
                        anti_affinity: if group.is_empty() {
                            None
                        } else {
                            Some(name_text(group, "anti_affinity")?)
                        },
                        claim: counter("claim", raw.claim.get()).map_err(|_| bad("claim"))?,
                        attempt: raw.attempt,
                        failure: if failure.is_empty() { None } else { Some(text(failure, "failure")?) },
                        definition: definition.to_vec(),
                    };
                    if !seen.insert(vm.uuid) {
                        return Err(HostStateError::DuplicateVm { offset, uuid: vm.uuid });
                    }
                    h.vms.push(vm);
                }
                entry::PLAN_HEADER => {
                    let raw = PlanHeaderRaw::ref_from_bytes(value).map_err(|_| bad_len)?;
                    if known && raw.pad.get() != 0 {
                        return Err(HostStateError::ReservedNotZero { offset });
                    }
                    if h.plan.is_some() {
                        return Err(HostStateError::Duplicate { offset, what: "plan_header" });
                    }
                    let number = counter("plan number", raw.number.get()).map_err(|_| bad("number"))?;
                    announced = Some((raw.assignment_count.get(), raw.unplaced_count.get()));
                    // Reserve for what fits the payload at most: the counts are not trusted.
                    let room = payload.len() / (ENTRY_HEADER_LEN + ASSIGNMENT_LEN.min(UNPLACED_LEN));
                    h.plan = Some(Plan {
                        epoch: Epoch {
                            number,
                            coordinator_slot: raw.coordinator_slot.get(),
                            coordinator_generation: raw.coordinator_generation.get(),
                        },
                        assignments: Vec::with_capacity((raw.assignment_count.get() as usize).min(room)),
                        unplaced: Vec::with_capacity((raw.unplaced_count.get() as usize).min(room)),
                    });
                }
                entry::ASSIGNMENT => {
                    let raw = AssignmentRaw::ref_from_bytes(value).map_err(|_| bad_len)?;
                    if known && raw.pad != [0; 3] {
                        return Err(HostStateError::ReservedNotZero { offset });
                    }
                    match (&mut h.plan, announced) {
                        (Some(plan), Some((n, _))) if (plan.assignments.len() as u64) < u64::from(n) => {
                            plan.assignments.push(Assignment {
                                uuid: uuid::Uuid::from_bytes(raw.uuid),
                                source_slot: raw.source_slot.get(),
                                source_generation: raw.source_generation.get(),
                                target_slot: raw.target_slot.get(),
                                claim: counter("claim", raw.claim.get()).map_err(|_| bad("claim"))?,
                                attempt: raw.attempt,
                                wave: raw.wave.get(),
                            })
                        }
                        _ => return Err(HostStateError::PlanEntryOutsidePlan { offset }),
                    }
                }
                entry::UNPLACED => {
                    let raw = UnplacedRaw::ref_from_bytes(value).map_err(|_| bad_len)?;
                    if known && raw.pad != [0; 3] {
                        return Err(HostStateError::ReservedNotZero { offset });
                    }
                    let reason = unplaced_from(raw.reason).ok_or(bad("reason"))?;
                    match (&mut h.plan, announced) {
                        (Some(plan), Some((_, n))) if (plan.unplaced.len() as u64) < u64::from(n) => {
                            plan.unplaced.push(Unplaced {
                                uuid: uuid::Uuid::from_bytes(raw.uuid),
                                source_slot: raw.source_slot.get(),
                                reason,
                            })
                        }
                        _ => return Err(HostStateError::PlanEntryOutsidePlan { offset }),
                    }
                }
                _ => unreachable!("entry::name covers every defined type"),
            }
        }
        if let (Some(plan), Some((a, u))) = (&h.plan, announced) {
            for (what, announced, found) in
                [("assignment", a, plan.assignments.len()), ("unplaced", u, plan.unplaced.len())]
            {
                if found as u64 != u64::from(announced) {
                    return Err(HostStateError::PlanCount { what, announced, found: found as u32 });
                }
            }
        }
        Ok(h)
    }
}

/// Bytes of a `VM` entry's fixed part.
pub const VM_FIXED_LEN: usize = core::mem::size_of::<VmFixedRaw>();
/// Bytes of an `ASSIGNMENT` value.
pub const ASSIGNMENT_LEN: usize = core::mem::size_of::<AssignmentRaw>();
/// Bytes of an `UNPLACED` value.
pub const UNPLACED_LEN: usize = core::mem::size_of::<UnplacedRaw>();

/// Payload bytes one VM entry takes: header, fixed part, strings and definition, padding.
pub fn vm_entry_len(name_len: usize, group_len: usize, failure_len: usize, definition_len: usize) -> usize {
    ENTRY_HEADER_LEN
        + (VM_FIXED_LEN + name_len + group_len + failure_len + definition_len).next_multiple_of(ENTRY_ALIGN)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::planner::Protection;

    pub(crate) fn sample() -> HostState {
        HostState {
            hb_addrs: vec!["192.0.2.10:7400".parse().unwrap()],
            capacity: Some(HostCapacity { memory_mib: 0x1_0000, vcpus: 32, accepts_restarts: true }),
            vms: vec![VmEntry {
                uuid: uuid::Uuid::from_u128(0x1111),
                name: "web".into(),
                memory_mib: 4096,
                vcpus: 2,
                state: VmState::Running,
                protection: Protection::Protect,
                order: Some(-2),
                anti_affinity: Some("g".into()),
                claim: 7,
                attempt: 1,
                failure: None,
                definition: b"<d/>".to_vec(),
            }],
            plan: Some(Plan {
                epoch: Epoch { number: 9, coordinator_slot: 3, coordinator_generation: 4 },
                assignments: vec![Assignment {
                    uuid: uuid::Uuid::from_u128(0x2222),
                    source_slot: 1,
                    source_generation: 5,
                    target_slot: 2,
                    claim: 8,
                    attempt: 1,
                    wave: 0,
                }],
                unplaced: vec![Unplaced {
                    uuid: uuid::Uuid::from_u128(0x3333),
                    source_slot: 1,
                    reason: UnplacedCode::NoCapacity,
                }],
            }),
        }
    }

    fn encoded(h: &HostState) -> Vec<u8> {
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        out
    }

    /// Pins the entry layout of docs/FORMAT.md §7, "Payload kind 2", byte for byte.
    #[test]
    fn golden_layout() {
        let b = encoded(&sample());
        // hb_addr_v4: header (type 1, reserved 0, len 6), value, 2 bytes of padding.
        assert_eq!(&b[0..8], &[1, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(&b[8..16], &[192, 0, 2, 10, 0xE8, 0x1C, 0, 0]);
        // capacity at 16: len 16.
        assert_eq!(&b[16..24], &[3, 0, 0, 0, 16, 0, 0, 0]);
        assert_eq!(&b[24..40], &[0, 0, 1, 0, 0, 0, 0, 0, 32, 0, 0, 0, 1, 0, 0, 0]);
        // vm at 40: len 56 + 3 + 1 + 0 + 4 = 64.
        assert_eq!(&b[40..48], &[4, 0, 0, 0, 64, 0, 0, 0]);
        let v = &b[48..48 + 64];
        assert_eq!(&v[0..16], uuid::Uuid::from_u128(0x1111).as_bytes());
        assert_eq!(&v[16..24], &4096u64.to_le_bytes());
        assert_eq!(&v[24..28], &2u32.to_le_bytes());
        assert_eq!(&v[28..32], &[1, 1, 1, 1], "state running, protect, attempt 1, has_order");
        assert_eq!(&v[32..40], &(-2i64).to_le_bytes());
        assert_eq!(&v[40..48], &7u64.to_le_bytes());
        assert_eq!(&v[48..56], &[3, 1, 0, 0, 4, 0, 0, 0]);
        assert_eq!(&v[56..], b"webg<d/>");
        // plan header at 112: len 32.
        assert_eq!(&b[112..120], &[5, 0, 0, 0, 32, 0, 0, 0]);
        let p = &b[120..152];
        assert_eq!(
            (&p[0..8], &p[8..12], &p[12..16]),
            (&9u64.to_le_bytes()[..], &[3, 0, 0, 0][..], &[0; 4][..])
        );
        assert_eq!(
            (&p[16..24], &p[24..28], &p[28..32]),
            (&4u64.to_le_bytes()[..], &[1, 0, 0, 0][..], &[1, 0, 0, 0][..])
        );
        // assignment at 152: len 48.
        assert_eq!(&b[152..160], &[6, 0, 0, 0, 48, 0, 0, 0]);
        let a = &b[160..208];
        assert_eq!(&a[16..24], &[1, 0, 0, 0, 2, 0, 0, 0], "source_slot, target_slot");
        assert_eq!(&a[24..32], &5u64.to_le_bytes());
        assert_eq!(&a[32..40], &8u64.to_le_bytes());
        assert_eq!(&a[40..48], &[0, 0, 0, 0, 1, 0, 0, 0], "wave, attempt, pad");
        // unplaced at 208: len 24.
        assert_eq!(&b[208..216], &[7, 0, 0, 0, 24, 0, 0, 0]);
        assert_eq!(&b[216 + 16..240], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(b.len(), 240);
        assert_eq!(HostState::decode(&b, SINCE_MINOR), Ok(sample()));
        assert_eq!(vm_entry_len(3, 1, 0, 4), 72);
        // The empty host state is the empty payload.
        assert_eq!(encoded(&HostState::default()), Vec::<u8>::new());
        assert_eq!(HostState::decode(&[], SINCE_MINOR), Ok(HostState::default()));
    }

    fn err(b: &[u8]) -> HostStateError {
        HostState::decode(b, SINCE_MINOR).unwrap_err()
    }

    #[test]
    fn decoder_refusals() {
        let good = encoded(&sample());
        let patch = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            b
        };
        assert_eq!(err(&good[..7]), HostStateError::Truncated { offset: 0 });
        assert_eq!(err(&good[..14]), HostStateError::Truncated { offset: 0 }, "padding must be there");
        assert_eq!(err(&patch(2, 1)), HostStateError::ReservedNotZero { offset: 0 });
        assert_eq!(err(&patch(15, 1)), HostStateError::ReservedNotZero { offset: 0 }, "padding");
        assert_eq!(err(&patch(4, 7)), HostStateError::BadLength { offset: 0, entry_type: 1, len: 7 });
        let mut b = good.clone();
        b[12..14].fill(0);
        assert_eq!(err(&b), HostStateError::BadAddr { offset: 0 }, "port 0");
        assert_eq!(err(&patch(36, 2)), HostStateError::ReservedNotZero { offset: 16 }, "capacity flag bit 1");
        assert_eq!(err(&patch(48 + 28, 9)), HostStateError::BadValue { offset: 40, field: "state" });
        assert_eq!(err(&patch(48 + 29, 0)), HostStateError::BadValue { offset: 40, field: "protection" });
        assert_eq!(err(&patch(48 + 31, 3)), HostStateError::ReservedNotZero { offset: 40 });
        assert_eq!(
            err(&patch(48 + 31, 0)),
            HostStateError::ReservedNotZero { offset: 40 },
            "order without has_order"
        );
        assert_eq!(err(&patch(48 + 51, 1)), HostStateError::ReservedNotZero { offset: 40 });
        assert_eq!(err(&patch(48 + 56, 0xFF)), HostStateError::BadValue { offset: 40, field: "name" });
        // Control characters: in a name or a group, refused; in a failure text, kept.
        assert_eq!(err(&patch(48 + 56, 0x1B)), HostStateError::BadValue { offset: 40, field: "name" });
        assert_eq!(err(&patch(48 + 57, b'\n')), HostStateError::BadValue { offset: 40, field: "name" });
        assert_eq!(err(&patch(48 + 58, 0x7F)), HostStateError::BadValue { offset: 40, field: "name" });
        assert_eq!(err(&patch(48 + 59, 0)), HostStateError::BadValue { offset: 40, field: "anti_affinity" });
        let mut h = sample();
        h.vms[0].failure = Some("exit 1:\n\u{1b}[2J".into());
        h.vms[0].name = "we b \u{202e}\u{200b}'\"$(x)".into();
        assert_eq!(HostState::decode(&encoded(&h), SINCE_MINOR), Ok(h));
        assert_eq!(err(&patch(48 + 48, 4)), HostStateError::BadLength { offset: 40, entry_type: 4, len: 64 });
        // Claims and plan numbers above 2^63 - 1: refused, so `+ 1` on them never overflows.
        let put = |at: usize, v: u64| {
            let mut b = good.clone();
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            b
        };
        for v in [COUNTER_MAX + 1, u64::MAX] {
            assert_eq!(err(&put(48 + 40, v)), HostStateError::BadValue { offset: 40, field: "claim" });
            assert_eq!(err(&put(120, v)), HostStateError::BadValue { offset: 112, field: "number" });
            assert_eq!(err(&put(160 + 32, v)), HostStateError::BadValue { offset: 152, field: "claim" });
        }
        let top = HostState::decode(&put(48 + 40, COUNTER_MAX), SINCE_MINOR).unwrap();
        assert_eq!(top.vms[0].claim.checked_add(1), Some(COUNTER_MAX + 1));
        assert!(HostState::decode(&put(120, COUNTER_MAX), SINCE_MINOR).is_ok());
        assert_eq!(err(&patch(132, 1)), HostStateError::ReservedNotZero { offset: 112 }, "plan pad");
        assert_eq!(
            err(&patch(144, 2)),
            HostStateError::PlanCount { what: "assignment", announced: 2, found: 1 }
        );
        assert_eq!(err(&patch(148, 0)), HostStateError::PlanEntryOutsidePlan { offset: 208 });
        assert_eq!(err(&patch(216 + 20, 4)), HostStateError::BadValue { offset: 208, field: "reason" });
        assert_eq!(err(&patch(160 + 45, 1)), HostStateError::ReservedNotZero { offset: 152 });
        // Plan entries before a plan header.
        let mut b = good[..112].to_vec();
        b.extend_from_slice(&good[152..208]);
        assert_eq!(err(&b), HostStateError::PlanEntryOutsidePlan { offset: 112 });
        // A VM twice; a capacity twice; a third address.
        let mut b = good[..112].to_vec();
        b.extend_from_slice(&good[40..112]);
        assert_eq!(err(&b), HostStateError::DuplicateVm { offset: 112, uuid: uuid::Uuid::from_u128(0x1111) });
        let mut b = good[..40].to_vec();
        b.extend_from_slice(&good[16..40]);
        assert_eq!(err(&b), HostStateError::Duplicate { offset: 40, what: "capacity" });
        let b: Vec<u8> = [&good[..16], &good[..16], &good[..16]].concat();
        assert_eq!(err(&b), HostStateError::TooManyAddrs { offset: 32 });
        // Unknown entry types: refused in a minor this build knows, skipped (whole) in a newer one.
        let mut b = vec![8, 0, 0, 0, 3, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0, 0, 0, 0, 0];
        b.extend_from_slice(&good);
        assert_eq!(err(&b), HostStateError::UnknownEntry { offset: 0, entry_type: 8 });
        assert_eq!(err(&[0; 8]), HostStateError::UnknownEntry { offset: 0, entry_type: 0 });
        let newer = crate::format::VERSION_MINOR + 1;
        assert_eq!(HostState::decode(&b, newer), Ok(sample()));
        assert_eq!(HostState::decode(&b[..12], newer), Err(HostStateError::Truncated { offset: 0 }));
    }

    #[test]
    fn writer_refusals() {
        let mut out = Vec::new();
        let mut h = sample();
        h.vms.push(h.vms[0].clone());
        assert!(matches!(h.encode(&mut out), Err(HostStateError::DuplicateVm { .. })));
        let mut h = sample();
        h.vms[0].name = String::new();
        assert!(matches!(h.encode(&mut out), Err(HostStateError::BadString { field: "name", .. })));
        h.vms[0].name = "x".repeat(256);
        assert!(matches!(h.encode(&mut out), Err(HostStateError::BadString { field: "name", len: 256, .. })));
        for bad in ["\u{1b}[2J", "a\nb", "\u{0}", "\u{85}"] {
            let mut h = sample();
            h.vms[0].name = bad.into();
            assert!(matches!(h.encode(&mut out), Err(HostStateError::ControlChar { field: "name", .. })));
            h.vms[0].name = "ok".into();
            h.vms[0].anti_affinity = Some(bad.into());
            assert!(matches!(
                h.encode(&mut out),
                Err(HostStateError::ControlChar { field: "anti_affinity", .. })
            ));
        }
        assert!(valid_vm_name(&"é".repeat(127)) && !valid_vm_name(&"é".repeat(128)));
        let mut h = sample();
        h.vms[0].anti_affinity = Some(String::new());
        assert!(matches!(h.encode(&mut out), Err(HostStateError::BadString { field: "anti_affinity", .. })));
        let mut h = sample();
        h.vms[0].claim = COUNTER_MAX + 1;
        assert!(matches!(h.encode(&mut out), Err(HostStateError::CounterTooLarge { field: "claim", .. })));
        let mut h = sample();
        h.plan.as_mut().unwrap().epoch.number = u64::MAX;
        assert!(matches!(
            h.encode(&mut out),
            Err(HostStateError::CounterTooLarge { field: "plan number", .. })
        ));
        let mut h = sample();
        h.plan.as_mut().unwrap().assignments[0].claim = u64::MAX;
        assert!(matches!(h.encode(&mut out), Err(HostStateError::CounterTooLarge { .. })));
        let mut h = sample();
        h.hb_addrs = vec!["10.0.0.1:0".parse().unwrap()];
        assert!(matches!(h.encode(&mut out), Err(HostStateError::Unrepresentable(_))));
        h.hb_addrs = vec!["10.0.0.1:1".parse().unwrap(); 3];
        assert!(matches!(h.encode(&mut out), Err(HostStateError::TooManyAddrs { .. })));
    }
}
