//! Heartbeat records: slot i of the record table holds host i's record. Host i writes it; the
//! other writers are `diskbeat fence --confirm-down i`, which marks a record that stayed unchanged
//! for the host-dead timeout `fenced` with [`flags::OPERATOR_CONFIRMED`], and (format 1.8) the
//! pool member that powers host i off through its fence device: its intent
//! ([`flags::FENCE_INTENT`]) and its proof ([`flags::FENCE_DEVICE`]) (docs/FORMAT.md §5, §9).

use super::{decode_name, encode_name, validate, Corruption, Header, NameError, OnDisk};
use super::{MAX_SLOTS, NAME_LEN, NET_VIEW_BYTES};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: [u8; 8] = *b"DBRECORD";

/// Size of the `members` bitmap (format 1.7): one bit for each of the slots 0..[`MEMBER_SLOTS`].
pub const MEMBER_BYTES: usize = 64;
/// Slots a `members` bitmap can name. Pools with more slots never ride through a whole-LUN loss
/// (docs/SAFETY.md, "Whole-LUN loss"): a member's bit must be writable.
pub const MEMBER_SLOTS: u32 = (MEMBER_BYTES * 8) as u32;

/// The writer's ride-through membership (format 1.7, bytes 444..508): the slots it would need
/// vouching packets from to stay up without the disk. A reader whose slot is not in it never
/// declares the (network-enabled) writer dead on disk silence: the writer may be riding through
/// an outage without knowing the reader exists (docs/SAFETY.md, "Whole-LUN loss").
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Members(pub [u8; MEMBER_BYTES]);

impl Members {
    pub const EMPTY: Members = Members([0; MEMBER_BYTES]);
    /// Sets `slot`'s bit; slots from [`MEMBER_SLOTS`] on cannot be named (ignored).
    pub fn set(&mut self, slot: u32) {
        if slot < MEMBER_SLOTS {
            self.0[(slot / 8) as usize] |= 1 << (slot % 8);
        }
    }
    pub fn get(&self, slot: u32) -> bool {
        slot < MEMBER_SLOTS && self.0[(slot / 8) as usize] & (1 << (slot % 8)) != 0
    }
    /// Slots whose bit is set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..MEMBER_SLOTS).filter(|&s| self.get(s))
    }
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// On-disk mirror of a heartbeat record (docs/FORMAT.md, "Record").
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordRaw {
    pub header: Header,                 // 0..32
    pub slot: U32,                      // 32
    pub state: U16,                     // 36
    pub flags: U16,                     // 38
    pub host_uuid: [u8; 16],            // 40
    pub generation: U64,                // 56
    pub sequence: U64,                  // 64
    pub monotonic_ms: U64,              // 72
    pub io_timeout_ms: U32,             // 80
    pub interval_ms: U32,               // 84
    pub host_name: [u8; NAME_LEN],      // 88..152
    pub net_view: [u8; NET_VIEW_BYTES], // 152..408
    pub mailbox_ack: U64,               // 408
    pub extent_sequence: U64,           // 416 (format 1.2)
    pub weight: U32,                    // 424 (format 1.4)
    pub boot_id: [u8; 16],              // 428..444 (format 1.5)
    pub members: [u8; MEMBER_BYTES],    // 444..508 (format 1.7)
    pub fencer_slot: U32,               // 508..512 (format 1.8)
}
const _: () = assert!(core::mem::size_of::<RecordRaw>() == super::STRUCT_SIZE);

impl OnDisk for RecordRaw {
    const MAGIC: [u8; 8] = MAGIC;
    fn header(&self) -> &Header {
        &self.header
    }
}

/// Record `flags` bits (format 1.1; docs/FORMAT.md §5, "Record flags", pinned by
/// `tests/format_doc.rs`). Zero means "absent", the 1.0 behaviour and the conservative reading.
/// Bits the record's own minor does not define are `ReservedNotZero` when that minor is known;
/// a newer minor's bits are passed through undecoded (mask with [`flags::KNOWN`]).
pub mod flags {
    /// The writer has a hardware watchdog armed (timeout: one io timeout, whole seconds), fed only
    /// after successful cycles: if its daemon stops (crash, freeze, hang) the host is reset
    /// (docs/SAFETY.md, "The argument", step 3).
    pub const WATCHDOG_ARMED: u16 = 1 << 0;
    /// A fence action of this host failed; it keeps retrying (record state `self_fencing`).
    pub const FENCE_FAILED: u16 = 1 << 1;
    /// The configured fence action stops this host's VMs when it succeeds (`reboot`, `exec:`).
    /// Clear for `log-only`: its `fenced` mark proves nothing about VMs.
    pub const FENCE_STOPS_VMS: u16 = 1 << 2;
    /// Every bit defined by formats 1.1 to 1.3.
    pub const KNOWN_1_1: u16 = WATCHDOG_ARMED | FENCE_FAILED | FENCE_STOPS_VMS;
    /// The writer sends and receives network heartbeats (format 1.4): its `net_view` and `weight`
    /// are meaningful and it takes part in partition decisions (docs/PARTITIONS.md). Clear: a
    /// disk-only host, never counted by the partition rule.
    pub const NET_ENABLED: u16 = 1 << 3;
    /// The writer has isolation addresses configured (format 1.4).
    pub const ISOLATION_CONFIGURED: u16 = 1 << 4;
    /// The writer reaches none of its isolation addresses (format 1.4; only with
    /// `ISOLATION_CONFIGURED`).
    pub const ISOLATED: u16 = 1 << 5;
    /// The writer lost the heartbeat disk and rides through on network evidence that every member
    /// lost it too (format 1.4; informational: written only if the disk comes back).
    pub const RIDING_THROUGH: u16 = 1 << 6;
    /// Every bit defined by format 1.4.
    pub const KNOWN_1_4: u16 = KNOWN_1_1 | NET_ENABLED | ISOLATION_CONFIGURED | ISOLATED | RIDING_THROUGH;
    /// `fenced` was written by `diskbeat fence --confirm-down`: an operator vouched that the host
    /// is off (format 1.5). Always with `FENCE_STOPS_VMS`; never written by the host itself.
    pub const OPERATOR_CONFIRMED: u16 = 1 << 7;
    /// Every bit defined by formats 1.5 to 1.7.
    pub const KNOWN_1_5: u16 = KNOWN_1_4 | OPERATOR_CONFIRMED;
    /// A pool member (slot `fencer_slot`) means to power this host off through its fence device
    /// (format 1.8): a copy of the host's last record, sequence unchanged, written into its slot
    /// by that member before it calls the device. Its durable intent: one caller per incarnation;
    /// and a host that reads it in its own slot is not alone in it and fences itself.
    pub const FENCE_INTENT: u16 = 1 << 8;
    /// `fenced` was written by pool member `fencer_slot` after this host's fence device confirmed
    /// it powered off (format 1.8). Always with `FENCE_STOPS_VMS`; never written by the host.
    pub const FENCE_DEVICE: u16 = 1 << 9;
    /// Every bit defined by format 1.8.
    pub const KNOWN: u16 = KNOWN_1_5 | FENCE_INTENT | FENCE_DEVICE;
}

/// Whether a record of format minor `minor` may carry a non-zero `weight` (1.4).
fn weight_known(minor: u16) -> bool {
    minor >= 4
}

/// Whether a record of format minor `minor` may carry a non-zero `extent_sequence` (1.2).
fn extent_sequence_known(minor: u16) -> bool {
    minor >= 2
}

/// Flag bits a record of format minor `minor` may carry.
fn flags_known(minor: u16) -> u16 {
    if minor >= 8 {
        flags::KNOWN
    } else if minor >= 5 {
        flags::KNOWN_1_5
    } else if minor >= 4 {
        flags::KNOWN_1_4
    } else if minor >= 1 {
        flags::KNOWN_1_1
    } else {
        0
    }
}

/// What the writer of a record says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u16)]
pub enum State {
    /// Never acquired since mkfs.
    Free = 0,
    /// Acquiring the slot: written once, then verified after 2 x io timeout.
    Joining = 1,
    /// Heartbeating.
    Live = 2,
    /// Left cleanly: peers may treat it as gone at once.
    Leaving = 3,
    /// Decided to fence itself; the fence action is under way.
    SelfFencing = 4,
    /// Fenced itself and survived (log-only or exec actions).
    Fenced = 5,
}

impl State {
    pub fn from_code(code: u16) -> Option<State> {
        Some(match code {
            0 => State::Free,
            1 => State::Joining,
            2 => State::Live,
            3 => State::Leaving,
            4 => State::SelfFencing,
            5 => State::Fenced,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Joining => "joining",
            State::Live => "live",
            State::Leaving => "leaving",
            State::SelfFencing => "self_fencing",
            State::Fenced => "fenced",
        }
    }
}

/// A host's view of which slots it hears on the network: one bit per slot, bit i of byte i/8.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NetView(pub [u8; NET_VIEW_BYTES]);

impl NetView {
    pub const EMPTY: NetView = NetView([0; NET_VIEW_BYTES]);
    pub fn set(&mut self, slot: u32, on: bool) {
        assert!(slot < MAX_SLOTS);
        let (byte, bit) = ((slot / 8) as usize, slot % 8);
        if on {
            self.0[byte] |= 1 << bit
        } else {
            self.0[byte] &= !(1 << bit)
        }
    }
    pub fn get(&self, slot: u32) -> bool {
        slot < MAX_SLOTS && self.0[(slot / 8) as usize] & (1 << (slot % 8)) != 0
    }
    pub fn count(&self) -> u32 {
        self.0.iter().map(|b| b.count_ones()).sum()
    }
    /// Slots whose bit is set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..MAX_SLOTS).filter(|&s| self.get(s))
    }
}

impl std::fmt::Debug for NetView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A typed record. Fixed-size fields only: building and encoding one never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub cluster_uuid: uuid::Uuid,
    pub slot: u32,
    pub state: State,
    pub host_uuid: uuid::Uuid,
    /// Bumped every time a host acquires the slot: a restart is visible.
    pub generation: u64,
    /// Bumped on every write: the only thing that proves liveness.
    pub sequence: u64,
    /// The writer's monotonic clock; informational only, never compared across hosts.
    pub monotonic_ms: u64,
    pub io_timeout_ms: u32,
    pub interval_ms: u32,
    pub host_name: [u8; NAME_LEN],
    pub net_view: NetView,
    /// Request id of the last mailbox request this host acted on (0: none).
    pub mailbox_ack: u64,
    /// [`flags`] bits (format 1.1).
    pub flags: u16,
    /// Sequence of the writer's current data-extent header (format 1.2): readers re-read this
    /// host's extent only when it changed. 0 = no payload published (the 1.0/1.1 meaning).
    pub extent_sequence: u64,
    /// Partition weight (format 1.4; docs/PARTITIONS.md criterion 3), with `NET_ENABLED`.
    pub weight: u32,
    /// The writer's kernel boot id (format 1.5; nil: unknown): a daemon restarted on the same
    /// boot finds its predecessor's record and keeps its watchdog promise (docs/SAFETY.md).
    pub boot_id: uuid::Uuid,
    /// The writer's ride-through membership (format 1.7): meaningful only with `NET_ENABLED`.
    pub members: Members,
    /// The pool member that wrote a `FENCE_INTENT` or `FENCE_DEVICE` record into this slot
    /// (format 1.8); 0 otherwise.
    pub fencer_slot: u32,
}

impl Record {
    /// The record mkfs writes into every slot.
    pub fn free(cluster_uuid: uuid::Uuid, slot: u32) -> Record {
        Record {
            cluster_uuid,
            slot,
            state: State::Free,
            host_uuid: uuid::Uuid::nil(),
            generation: 0,
            sequence: 0,
            monotonic_ms: 0,
            io_timeout_ms: 0,
            interval_ms: 0,
            host_name: [0; NAME_LEN],
            net_view: NetView::EMPTY,
            mailbox_ack: 0,
            flags: 0,
            extent_sequence: 0,
            weight: 0,
            boot_id: uuid::Uuid::nil(),
            members: Members::EMPTY,
            fencer_slot: 0,
        }
    }

    pub fn set_host_name(&mut self, name: &str) -> Result<(), NameError> {
        self.host_name = encode_name(name)?;
        Ok(())
    }

    /// The host name ("" for a free slot; "?" cannot happen for a validated record).
    pub fn host_name(&self) -> &str {
        decode_name(&self.host_name).unwrap_or("?")
    }

    fn to_raw(self) -> RecordRaw {
        RecordRaw {
            header: Header::new(MAGIC, self.cluster_uuid),
            slot: U32::new(self.slot),
            state: U16::new(self.state as u16),
            flags: U16::new(self.flags),
            host_uuid: self.host_uuid.into_bytes(),
            generation: U64::new(self.generation),
            sequence: U64::new(self.sequence),
            monotonic_ms: U64::new(self.monotonic_ms),
            io_timeout_ms: U32::new(self.io_timeout_ms),
            interval_ms: U32::new(self.interval_ms),
            host_name: self.host_name,
            net_view: self.net_view.0,
            mailbox_ack: U64::new(self.mailbox_ack),
            extent_sequence: U64::new(self.extent_sequence),
            weight: U32::new(self.weight),
            boot_id: self.boot_id.into_bytes(),
            members: self.members.0,
            fencer_slot: U32::new(self.fencer_slot),
        }
    }

    /// Encodes into the first 512 bytes of `out`. The caller zeroes the rest of the slot once.
    pub fn encode(&self, out: &mut [u8]) {
        assert!(self.slot < MAX_SLOTS, "slot {} out of range", self.slot);
        super::seal(&self.to_raw(), out);
    }

    /// Validates `bytes` as the record of `slot` in `cluster`, without copying it.
    pub fn validate<'a>(
        bytes: &'a [u8],
        cluster: &uuid::Uuid,
        slot: u32,
    ) -> Result<&'a RecordRaw, Corruption> {
        let raw: &RecordRaw = validate(bytes, Some(cluster))?;
        if raw.slot.get() != slot {
            return Err(Corruption::WrongSlot { expected: slot, found: raw.slot.get() });
        }
        let state = State::from_code(raw.state.get()).ok_or(Corruption::BadState(raw.state.get()))?;
        let minor = raw.header.version_minor.get();
        if super::known_minor(minor)
            && (raw.flags.get() & !flags_known(minor) != 0
                || (!extent_sequence_known(minor) && raw.extent_sequence.get() != 0)
                || (!weight_known(minor) && raw.weight.get() != 0)
                || (minor < 5 && !super::all_zero(&raw.boot_id))
                || (minor < 7 && !super::all_zero(&raw.members))
                || (raw.flags.get() & (flags::FENCE_INTENT | flags::FENCE_DEVICE) == 0
                    && raw.fencer_slot.get() != 0))
        {
            return Err(Corruption::ReservedNotZero);
        }
        // A member's fence intent or device proof: only on a held slot, never both, never from
        // the slot itself; the proof only as a `fenced` mark that stops VMs.
        let f = raw.flags.get();
        if f & (flags::FENCE_INTENT | flags::FENCE_DEVICE) != 0 {
            let fencer = raw.fencer_slot.get();
            let ok = fencer != slot
                && fencer < MAX_SLOTS
                && if f & flags::FENCE_DEVICE != 0 {
                    f & flags::FENCE_INTENT == 0 && state == State::Fenced && f & flags::FENCE_STOPS_VMS != 0
                } else {
                    matches!(state, State::Live | State::SelfFencing)
                };
            if !ok {
                return Err(Corruption::BadField("fencer_slot"));
            }
        }
        match decode_name(&raw.host_name) {
            None => return Err(Corruption::BadField("host_name")),
            Some("") if state != State::Free => return Err(Corruption::BadField("host_name")),
            _ => {}
        }
        Ok(raw)
    }

    /// Validates and copies out the record of `slot` in `cluster`.
    pub fn decode(bytes: &[u8], cluster: &uuid::Uuid, slot: u32) -> Result<Record, Corruption> {
        Record::validate(bytes, cluster, slot).map(Record::from_raw)
    }

    /// Copies a validated raw record into a typed one.
    pub fn from_raw(raw: &RecordRaw) -> Record {
        Record {
            cluster_uuid: uuid::Uuid::from_bytes(raw.header.cluster_uuid),
            slot: raw.slot.get(),
            state: State::from_code(raw.state.get()).expect("validated"),
            host_uuid: uuid::Uuid::from_bytes(raw.host_uuid),
            generation: raw.generation.get(),
            sequence: raw.sequence.get(),
            monotonic_ms: raw.monotonic_ms.get(),
            io_timeout_ms: raw.io_timeout_ms.get(),
            interval_ms: raw.interval_ms.get(),
            host_name: raw.host_name,
            net_view: NetView(raw.net_view),
            mailbox_ack: raw.mailbox_ack.get(),
            flags: raw.flags.get(),
            extent_sequence: raw.extent_sequence.get(),
            weight: raw.weight.get(),
            boot_id: uuid::Uuid::from_bytes(raw.boot_id),
            members: Members(raw.members),
            fencer_slot: raw.fencer_slot.get(),
        }
    }
}

impl RecordRaw {
    /// The writer's ride-through membership, if its format says (1.7); `None` for an older
    /// writer, which caps its rides instead (docs/SAFETY.md, "Whole-LUN loss").
    pub fn members(&self) -> Option<Members> {
        (self.header.version_minor.get() >= 7).then_some(Members(self.members))
    }

    /// The state of a validated record.
    pub fn state(&self) -> State {
        State::from_code(self.state.get()).expect("validated records have a known state")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Record {
        let mut r = Record::free(uuid::Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888), 5);
        r.state = State::Live;
        r.host_uuid = uuid::Uuid::from_u128(0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111);
        r.generation = 3;
        r.sequence = 0x0102_0304_0506_0708;
        r.monotonic_ms = 123_456_789;
        r.io_timeout_ms = 10_000;
        r.interval_ms = 2_000;
        r.set_host_name("hv-05").unwrap();
        r.net_view.set(0, true);
        r.net_view.set(5, true);
        r.net_view.set(2047, true);
        r.mailbox_ack = 42;
        r
    }

    #[test]
    fn round_trip_and_checks() {
        let r = sample();
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        assert_eq!(Record::decode(&buf, &r.cluster_uuid, 5), Ok(r));
        assert_eq!(
            Record::decode(&buf, &r.cluster_uuid, 6),
            Err(Corruption::WrongSlot { expected: 6, found: 5 })
        );
        assert_eq!(Record::decode(&buf, &uuid::Uuid::nil(), 5), Err(Corruption::WrongCluster));
        assert_eq!(Record::decode(&[0u8; 512], &r.cluster_uuid, 5), Err(Corruption::Zeroed));
    }

    /// Pins the byte layout: if this fails, the format changed and the version must be bumped.
    #[test]
    fn golden_bytes() {
        let mut buf = [0u8; 512];
        sample().encode(&mut buf);
        assert_eq!(&buf[4..12], b"DBRECORD");
        // version_major = 1, version_minor = 7 (format 1.7), both u16 LE.
        assert_eq!(&buf[12..16], &[1, 0, 8, 0]);
        assert_eq!(&buf[32..36], &5u32.to_le_bytes());
        assert_eq!(&buf[36..38], &2u16.to_le_bytes());
        assert_eq!(&buf[38..40], &[0, 0], "no flags");
        assert_eq!(&buf[56..64], &3u64.to_le_bytes());
        assert_eq!(&buf[64..72], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&buf[88..93], b"hv-05");
        assert_eq!(buf[152], 0b0010_0001);
        assert_eq!(buf[152 + 255], 0b1000_0000);
        assert_eq!(&buf[408..416], &42u64.to_le_bytes());
        assert!(
            buf[416..].iter().all(|&b| b == 0),
            "extent_sequence 0, weight 0, members empty, reserved zero"
        );
        let crc = u32::from_le_bytes(buf[0..4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[4..]));
        assert_eq!(crc, GOLDEN_CRC, "record checksum changed: {crc:#010x}");
    }
    /// Format 1.8 changed this (`version_minor` 8); it was 0xa67a_4ead in 1.7, 0xee99_8794 in 1.6, 0x37bd_dcdf in 1.5,
    /// 0x7f5e_15e6 in 1.4, 0x8019_1cb8 in 1.3, 0xc8fa_d581 in 1.2, 0x11de_8eca in 1.1, 0x593d_47f3
    /// in 1.0.
    const GOLDEN_CRC: u32 = 0x15fb_e3d9;

    /// Pins `extent_sequence` (format 1.2): u64 LE at 416; weight and reserved (424..512) stay zero.
    #[test]
    fn golden_bytes_with_extent_sequence() {
        let mut r = sample();
        r.extent_sequence = 0x1122_3344_5566_7788;
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        assert_eq!(&buf[416..424], &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        assert!(buf[424..].iter().all(|&b| b == 0));
        let crc = u32::from_le_bytes(buf[0..4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[4..]));
        assert_eq!(crc, GOLDEN_CRC_EXTENT_SEQ, "record checksum changed: {crc:#010x}");
        assert_eq!(Record::decode(&buf, &r.cluster_uuid, 5), Ok(r));
        assert_eq!(Record::free(r.cluster_uuid, 5).extent_sequence, 0);
    }
    /// New in format 1.2 (0xbbc0_085e); 1.3 changed it (0xf323_c167), 1.4 (0x0c64_c839), 1.5
    /// (0x4487_0100), 1.6 (0x9da3_5a4b), 1.7 (0xd540_9372), and 1.8 (`version_minor` 8).
    const GOLDEN_CRC_EXTENT_SEQ: u32 = 0x66c1_3e06;

    /// Pins the 1.1 `flags` bits: u16 LE at 38, bit 0 watchdog_armed, bit 1 fence_failed, bit 2
    /// fence_stops_vms.
    #[test]
    fn golden_bytes_with_flags() {
        assert_eq!((flags::WATCHDOG_ARMED, flags::FENCE_FAILED, flags::FENCE_STOPS_VMS), (1, 2, 4));
        assert_eq!(flags::KNOWN_1_1, 0b111);
        let mut r = sample();
        r.state = State::SelfFencing;
        r.flags = flags::WATCHDOG_ARMED | flags::FENCE_FAILED | flags::FENCE_STOPS_VMS;
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        assert_eq!(&buf[12..16], &[1, 0, 8, 0]);
        assert_eq!(&buf[36..38], &4u16.to_le_bytes());
        assert_eq!(&buf[38..40], &[0b0000_0111, 0]);
        assert!(buf[416..].iter().all(|&b| b == 0));
        let crc = u32::from_le_bytes(buf[0..4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[4..]));
        assert_eq!(crc, GOLDEN_CRC_FLAGS, "record checksum changed: {crc:#010x}");
        assert_eq!(Record::decode(&buf, &r.cluster_uuid, 5), Ok(r));
    }
    /// New in format 1.1 (0x8c0b_f361); 1.2 changed it (0x552f_a82a), 1.3 (0x1dcc_6113), 1.4
    /// (0xe28b_684d), 1.5 (0xaa68_a174), 1.6 (0x734c_fa3f), 1.7 (0x3baf_3306), and 1.8 (`version_minor` 8).
    const GOLDEN_CRC_FLAGS: u32 = 0x882e_9e72;

    /// Pins format 1.4's record fields: flag bits 3 net_enabled, 4 isolation_configured, 5
    /// isolated, 6 riding_through, and `weight`, u32 LE at 424; bytes 428..512 stay zero.
    #[test]
    fn golden_bytes_with_net_flags_and_weight() {
        assert_eq!(
            (flags::NET_ENABLED, flags::ISOLATION_CONFIGURED, flags::ISOLATED, flags::RIDING_THROUGH),
            (0x08, 0x10, 0x20, 0x40)
        );
        assert_eq!(flags::KNOWN_1_4, 0x7F);
        let mut r = sample();
        r.flags = flags::KNOWN_1_4;
        r.weight = 0x0A0B_0C0D;
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        assert_eq!(&buf[12..16], &[1, 0, 8, 0]);
        assert_eq!(&buf[38..40], &[0x7F, 0]);
        assert!(buf[416..424].iter().all(|&b| b == 0), "extent_sequence 0");
        assert_eq!(&buf[424..428], &[0x0D, 0x0C, 0x0B, 0x0A]);
        assert!(buf[428..].iter().all(|&b| b == 0), "boot_id, members, reserved");
        let crc = u32::from_le_bytes(buf[0..4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[4..]));
        assert_eq!(crc, GOLDEN_CRC_NET, "record checksum changed: {crc:#010x}");
        assert_eq!(Record::decode(&buf, &r.cluster_uuid, 5), Ok(r));
        assert_eq!(Record::free(r.cluster_uuid, 5).weight, 0);
        // One bit at a time lands on its own bit of byte 38 and round-trips.
        let all = [
            flags::WATCHDOG_ARMED,
            flags::FENCE_FAILED,
            flags::FENCE_STOPS_VMS,
            flags::NET_ENABLED,
            flags::ISOLATION_CONFIGURED,
            flags::ISOLATED,
            flags::RIDING_THROUGH,
            flags::OPERATOR_CONFIRMED,
        ];
        assert_eq!(all.iter().fold(0, |m, f| m | f), flags::KNOWN_1_5);
        for (bit, f) in all.into_iter().enumerate() {
            r.flags = f;
            r.encode(&mut buf);
            assert_eq!(&buf[38..40], &[1 << bit, 0]);
            assert_eq!(Record::decode(&buf, &r.cluster_uuid, 5), Ok(r));
        }
    }
    /// New in format 1.4 (0xfeb8_e1b4); 1.5 changed it (0xb65b_288d), 1.6 (0x6f7f_73c6), 1.7
    /// (0x279c_baff), and 1.8 (`version_minor` 8). The 1.7 record CRCs here were recomputed
    /// independently of this crate (a plain bitwise CRC-32C over bytes built from the table in
    /// docs/FORMAT.md §5).
    const GOLDEN_CRC_NET: u32 = 0x941d_178b;

    /// `sample()` encoded with `flags` and `version_minor` patched in, resealed.
    fn with_minor_and_flags(minor: u16, flags: u16) -> [u8; 512] {
        let mut buf = [0u8; 512];
        sample().encode(&mut buf);
        buf[14..16].copy_from_slice(&minor.to_le_bytes());
        buf[38..40].copy_from_slice(&flags.to_le_bytes());
        let crc = crate::format::checksum(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    #[test]
    fn flags_validation_keys_on_the_record_minor() {
        let cluster = sample().cluster_uuid;
        let decode = |minor, flags| Record::decode(&with_minor_and_flags(minor, flags), &cluster, 5);
        // 1.0 defines no flags: every bit is reserved.
        assert_eq!(decode(0, 0).map(|r| r.flags), Ok(0));
        for bit in 0..16 {
            assert_eq!(decode(0, 1 << bit), Err(Corruption::ReservedNotZero), "1.0 record, bit {bit}");
        }
        // 1.1 defines bits 0..=2; bits 3..=15 are reserved (1.4's bits 3..=6 included).
        assert_eq!(decode(1, flags::KNOWN_1_1).map(|r| r.flags), Ok(flags::KNOWN_1_1));
        assert_eq!(decode(1, 1 << 8), Err(Corruption::ReservedNotZero));
        assert_eq!(decode(1, flags::KNOWN_1_1 | 1 << 8), Err(Corruption::ReservedNotZero));
        assert_eq!(decode(1, flags::KNOWN), Err(Corruption::ReservedNotZero));
        for bit in 3..16 {
            assert_eq!(decode(1, 1 << bit), Err(Corruption::ReservedNotZero), "1.1 record, bit {bit}");
        }
        // 1.2 and 1.3 define the same bits as 1.1: 1.4's bits are reserved there.
        for minor in [2, 3] {
            assert_eq!(decode(minor, flags::KNOWN_1_1).map(|r| r.flags), Ok(flags::KNOWN_1_1));
            assert_eq!(decode(minor, flags::KNOWN), Err(Corruption::ReservedNotZero));
            for bit in 3..16 {
                assert_eq!(decode(minor, 1 << bit), Err(Corruption::ReservedNotZero), "1.{minor}, bit {bit}");
            }
        }
        // 1.4 defines bits 0..=6; bits 7..=15 are reserved.
        assert_eq!(decode(4, flags::KNOWN_1_4).map(|r| r.flags), Ok(flags::KNOWN_1_4));
        for bit in 3..=6 {
            assert_eq!(decode(4, 1 << bit).map(|r| r.flags), Ok(1 << bit), "1.4 record, bit {bit}");
        }
        for bit in 7..16 {
            assert_eq!(decode(4, 1 << bit), Err(Corruption::ReservedNotZero), "1.4 record, bit {bit}");
        }
        assert_eq!(decode(4, flags::KNOWN_1_4 | 1 << 7), Err(Corruption::ReservedNotZero));
        // 1.5 adds bit 7, operator_confirmed; bits 8..=15 are reserved.
        assert_eq!(flags::OPERATOR_CONFIRMED, 0x80);
        assert_eq!(decode(5, flags::KNOWN_1_5).map(|r| r.flags), Ok(flags::KNOWN_1_5));
        assert_eq!(decode(5, 1 << 7).map(|r| r.flags), Ok(1 << 7));
        for bit in 8..16 {
            assert_eq!(decode(5, 1 << bit), Err(Corruption::ReservedNotZero), "1.5 record, bit {bit}");
        }
        // 1.6 and 1.7 define no new bits.
        for minor in [5, 6, 7] {
            assert_eq!(decode(minor, flags::KNOWN_1_5).map(|r| r.flags), Ok(flags::KNOWN_1_5));
            for bit in 8..16 {
                assert_eq!(decode(minor, 1 << bit), Err(Corruption::ReservedNotZero), "1.{minor}, bit {bit}");
            }
        }
        // 1.8 adds bits 8 (fence_intent: a copy of a live record) and 9 (fence_device: on a
        // `fenced` mark only); bits 10..=15 are reserved.
        assert_eq!((flags::FENCE_INTENT, flags::FENCE_DEVICE), (0x100, 0x200));
        assert_eq!(decode(8, flags::FENCE_INTENT).map(|r| r.flags), Ok(flags::FENCE_INTENT));
        assert_eq!(decode(8, flags::FENCE_DEVICE), Err(Corruption::BadField("fencer_slot")), "a live record");
        for bit in 10..16 {
            assert_eq!(decode(8, 1 << bit), Err(Corruption::ReservedNotZero), "1.8 record, bit {bit}");
        }
        // A newer minor may define more bits: accepted, and the bits are passed through as read.
        assert_eq!(decode(9, 0xFC80).map(|r| r.flags), Ok(0xFC80));
        assert_eq!(decode(9, 0xFFFF), Err(Corruption::BadField("fencer_slot")), "intent and proof at once");
        assert_eq!(decode(u16::MAX, 1 << 10).map(|r| r.flags), Ok(1 << 10));
    }

    /// `sample()` with `extent_sequence` (bytes 416..424), `weight` (424..428) and byte 510
    /// (reserved up to 1.7; part of `fencer_slot` in 1.8, zero without a fence flag) patched in,
    /// written as `minor`, resealed.
    fn with_minor_and_tail(minor: u16, extent_sequence: u64, weight: u32, reserved: u8) -> [u8; 512] {
        let mut buf = with_minor_and_flags(minor, 0);
        buf[416..424].copy_from_slice(&extent_sequence.to_le_bytes());
        buf[424..428].copy_from_slice(&weight.to_le_bytes());
        buf[510] = reserved;
        let crc = crate::format::checksum(&buf[4..]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    #[test]
    fn extent_sequence_validation_keys_on_the_record_minor() {
        let cluster = sample().cluster_uuid;
        let decode = |minor, seq, res| Record::decode(&with_minor_and_tail(minor, seq, 0, res), &cluster, 5);
        for minor in [0, 1] {
            // Bytes 416..424 are reserved in 1.0 and 1.1: any non-zero byte is refused.
            assert_eq!(decode(minor, 0, 0).map(|r| r.extent_sequence), Ok(0));
            for byte in 0..8 {
                let seq = 1u64 << (8 * byte);
                assert_eq!(decode(minor, seq, 0), Err(Corruption::ReservedNotZero), "1.{minor}, {seq:#x}");
            }
        }
        // 1.2 defines the field; the reserved bytes stay reserved. Same up to 1.8.
        for minor in [2, 3, 4, 5, 6, 7, 8] {
            assert_eq!(decode(minor, 7, 0).map(|r| r.extent_sequence), Ok(7));
            assert_eq!(decode(minor, u64::MAX, 0).map(|r| r.extent_sequence), Ok(u64::MAX));
            assert_eq!(decode(minor, 7, 1), Err(Corruption::ReservedNotZero), "1.{minor}");
        }
        // A newer minor: the field is passed through, reserved bytes ignored.
        assert_eq!(decode(9, 9, 1).map(|r| r.extent_sequence), Ok(9));
    }

    #[test]
    fn weight_validation_keys_on_the_record_minor() {
        let cluster = sample().cluster_uuid;
        let decode =
            |minor, weight, res| Record::decode(&with_minor_and_tail(minor, 0, weight, res), &cluster, 5);
        for minor in 0..4 {
            // Bytes 424..428 are reserved before 1.4: any non-zero byte is refused.
            assert_eq!(decode(minor, 0, 0).map(|r| r.weight), Ok(0));
            for byte in 0..4 {
                let w = 1u32 << (8 * byte);
                assert_eq!(decode(minor, w, 0), Err(Corruption::ReservedNotZero), "1.{minor}, {w:#x}");
            }
        }
        // 1.4 defines the field; bytes 428..512 stay reserved.
        assert_eq!(decode(4, 1, 0).map(|r| r.weight), Ok(1));
        assert_eq!(decode(4, u32::MAX, 0).map(|r| r.weight), Ok(u32::MAX));
        assert_eq!(decode(4, 1, 1), Err(Corruption::ReservedNotZero));
        // 1.5 to 1.8 keep the bytes zero (1.8: `fencer_slot` without a fence flag).
        for minor in [5, 6, 7, 8] {
            assert_eq!(decode(minor, 1, 1), Err(Corruption::ReservedNotZero), "1.{minor}");
        }
        // A newer minor: the field is passed through, reserved bytes ignored.
        assert_eq!(decode(9, 9, 1).map(|r| r.weight), Ok(9));
    }

    /// `sample()` with `net_enabled` and members {0, 5, 511}.
    fn with_members() -> Record {
        let mut r = sample();
        r.flags = flags::NET_ENABLED;
        for s in [0, 5, 511] {
            r.members.set(s);
        }
        r
    }

    /// Pins format 1.7's `members` bitmap: bytes 444..508, slot s is bit s % 8 of byte s / 8 (LSB
    /// first, like `net_view`); bytes 508..512 stay reserved.
    #[test]
    fn golden_bytes_with_members() {
        assert_eq!((MEMBER_BYTES, MEMBER_SLOTS), (64, 512));
        let r = with_members();
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        assert_eq!(&buf[12..16], &[1, 0, 8, 0]);
        assert_eq!(&buf[38..40], &[0x08, 0]);
        assert!(buf[416..444].iter().all(|&b| b == 0), "extent_sequence, weight, boot_id");
        let mut want = [0u8; MEMBER_BYTES];
        (want[0], want[63]) = (0x21, 0x80);
        assert_eq!(&buf[444..508], &want, "slots 0 and 5 in byte 0, slot 511 in byte 63");
        assert!(buf[508..].iter().all(|&b| b == 0), "reserved");
        let crc = u32::from_le_bytes(buf[0..4].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&buf[4..]));
        assert_eq!(crc, GOLDEN_CRC_MEMBERS, "record checksum changed: {crc:#010x}");
        let got = Record::decode(&buf, &r.cluster_uuid, 5).unwrap();
        assert_eq!(got, r);
        assert_eq!(got.members.iter().collect::<Vec<_>>(), [0, 5, 511]);
        let raw = Record::validate(&buf, &r.cluster_uuid, 5).unwrap();
        assert_eq!(raw.members(), Some(r.members));
        assert_eq!(format!("{:?}", r.members), "{0, 5, 511}");
    }
    /// New in format 1.7 (0x356e_eac5; 1.8: `version_minor` 8). The 1.7 value was recomputed independently of this crate (bitwise CRC-32C over the bytes
    /// built from docs/FORMAT.md §5).
    const GOLDEN_CRC_MEMBERS: u32 = 0x86ef_47b1;

    #[test]
    fn members_set_get() {
        let mut m = Members::EMPTY;
        assert_eq!(m.iter().count(), 0);
        for s in [0, 5, 511] {
            m.set(s);
        }
        assert!(m.get(0) && m.get(5) && m.get(511));
        assert!(!m.get(1) && !m.get(510) && !m.get(512) && !m.get(u32::MAX));
        assert_eq!((m.0[0], m.0[63]), (0x21, 0x80));
        // Slots from MEMBER_SLOTS on cannot be named: ignored, no panic.
        let before = m;
        m.set(MEMBER_SLOTS);
        m.set(2047);
        m.set(u32::MAX);
        assert_eq!(m, before);
        assert!(!m.get(512));
        m.set(0);
        assert_eq!(m, before, "setting a set bit again changes nothing");
    }

    /// Bytes 444..508 are `members` in a record of minor 7 or later, reserved before.
    #[test]
    fn members_key_on_the_record_minor() {
        let r = with_members();
        let cluster = r.cluster_uuid;
        let mut buf = [0u8; 512];
        r.encode(&mut buf);
        let with_minor = |minor: u16, b: &[u8; 512]| {
            let mut b = *b;
            b[14..16].copy_from_slice(&minor.to_le_bytes());
            let crc = crate::format::checksum(&b[4..]);
            b[..4].copy_from_slice(&crc.to_le_bytes());
            b
        };
        // Minor 7: decoded; the raw record states its members.
        let b7 = with_minor(7, &buf);
        assert_eq!(Record::decode(&b7, &cluster, 5).map(|r| r.members), Ok(r.members));
        assert_eq!(Record::validate(&b7, &cluster, 5).unwrap().members(), Some(r.members));
        // An empty bitmap of minor 7 is stated (Some), not unknown.
        let mut empty = [0u8; 512];
        sample().encode(&mut empty);
        assert_eq!(Record::validate(&empty, &cluster, 5).unwrap().members(), Some(Members::EMPTY));
        // Minor 6 and older: any non-zero byte of 444..508 is reserved, not zero.
        for minor in [4, 5, 6] {
            assert_eq!(
                Record::decode(&with_minor(minor, &buf), &cluster, 5),
                Err(Corruption::ReservedNotZero)
            );
        }
        for at in [444, 470, 507] {
            let mut b = [0u8; 512];
            sample().encode(&mut b);
            b[at] = 1;
            let b6 = with_minor(6, &b);
            assert_eq!(Record::decode(&b6, &cluster, 5), Err(Corruption::ReservedNotZero), "byte {at}");
            let got = Record::decode(&with_minor(7, &b), &cluster, 5).unwrap();
            assert_eq!(got.members.iter().collect::<Vec<_>>(), [(at as u32 - 444) * 8], "byte {at}");
        }
        // A minor-6 record (members zero) decodes, and states no membership.
        let b6 = with_minor(6, &empty);
        assert_eq!(Record::decode(&b6, &cluster, 5).map(|r| r.members), Ok(Members::EMPTY));
        assert_eq!(Record::validate(&b6, &cluster, 5).unwrap().members(), None);
        // Bytes 508..512 stay zero in 1.7 (and in 1.8 without a fence flag); a newer minor may
        // use them, and keeps the field.
        let mut b = buf;
        b[509] = 1;
        assert_eq!(Record::decode(&with_minor(7, &b), &cluster, 5), Err(Corruption::ReservedNotZero));
        assert_eq!(Record::decode(&with_minor(8, &b), &cluster, 5), Err(Corruption::ReservedNotZero));
        let b9 = with_minor(9, &b);
        assert_eq!(Record::validate(&b9, &cluster, 5).unwrap().members(), Some(r.members));
    }
}
