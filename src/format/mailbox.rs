//! Mailboxes: one sector per slot that senders other than its owner write, never the owner: the
//! format allows other hosts and operator tools; in this version only `diskbeat fence` writes
//! them. A mailbox never shares a sector with a record.

use super::{decode_name, encode_name, validate, Corruption, Header, NameError, OnDisk, NAME_LEN};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

pub const MAGIC: [u8; 8] = *b"DBMAILBX";
/// `sender_slot` of a request written by an operator tool rather than a cluster member.
pub const SENDER_TOOL: u32 = u32::MAX;

/// On-disk mirror of a mailbox sector (docs/FORMAT.md, "Mailbox").
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct MailboxRaw {
    pub header: Header,              // 0..32
    pub target_slot: U32,            // 32
    pub sender_slot: U32,            // 36
    pub command: U16,                // 40
    pub flags: U16,                  // 42
    pub reserved0: [u8; 4],          // 44
    pub request_id: U64,             // 48
    pub sender_uuid: [u8; 16],       // 56
    pub sender_name: [u8; NAME_LEN], // 72..136
    pub reserved: [u8; 376],         // 136..512
}
const _: () = assert!(core::mem::size_of::<MailboxRaw>() == super::STRUCT_SIZE);

impl OnDisk for MailboxRaw {
    const MAGIC: [u8; 8] = MAGIC;
    fn header(&self) -> &Header {
        &self.header
    }
}

/// What a mailbox asks of its slot's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u16)]
pub enum Command {
    /// Empty mailbox.
    None = 0,
    /// Fence yourself now.
    Fence = 1,
    /// Acknowledge without acting (tests the path end to end, like SBD's `test`).
    Test = 2,
}

impl Command {
    pub fn from_code(code: u16) -> Option<Command> {
        Some(match code {
            0 => Command::None,
            1 => Command::Fence,
            2 => Command::Test,
            _ => return None,
        })
    }
}

/// A typed mailbox message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mailbox {
    pub cluster_uuid: uuid::Uuid,
    pub target_slot: u32,
    pub sender_slot: u32,
    pub command: Command,
    /// Unique per request (never 0 for a real request); the target acks it in its record.
    pub request_id: u64,
    pub sender_uuid: uuid::Uuid,
    pub sender_name: [u8; NAME_LEN],
}

impl Mailbox {
    /// The empty mailbox mkfs writes.
    pub fn empty(cluster_uuid: uuid::Uuid, target_slot: u32) -> Mailbox {
        Mailbox {
            cluster_uuid,
            target_slot,
            sender_slot: SENDER_TOOL,
            command: Command::None,
            request_id: 0,
            sender_uuid: uuid::Uuid::nil(),
            sender_name: [0; NAME_LEN],
        }
    }

    pub fn set_sender_name(&mut self, name: &str) -> Result<(), NameError> {
        self.sender_name = encode_name(name)?;
        Ok(())
    }

    pub fn sender_name(&self) -> &str {
        decode_name(&self.sender_name).unwrap_or("?")
    }

    pub fn encode(&self, out: &mut [u8]) {
        let raw = MailboxRaw {
            header: Header::new(MAGIC, self.cluster_uuid),
            target_slot: U32::new(self.target_slot),
            sender_slot: U32::new(self.sender_slot),
            command: U16::new(self.command as u16),
            flags: U16::new(0),
            reserved0: [0; 4],
            request_id: U64::new(self.request_id),
            sender_uuid: self.sender_uuid.into_bytes(),
            sender_name: self.sender_name,
            reserved: [0; 376],
        };
        super::seal(&raw, out);
    }

    /// Validates and decodes the mailbox of `slot` in `cluster`.
    pub fn decode(bytes: &[u8], cluster: &uuid::Uuid, slot: u32) -> Result<Mailbox, Corruption> {
        let raw: &MailboxRaw = validate(bytes, Some(cluster))?;
        if raw.target_slot.get() != slot {
            return Err(Corruption::WrongSlot { expected: slot, found: raw.target_slot.get() });
        }
        let command = Command::from_code(raw.command.get()).ok_or(Corruption::BadField("command"))?;
        if super::known_minor(raw.header.version_minor.get())
            && (raw.flags.get() != 0 || !super::all_zero(&raw.reserved) || !super::all_zero(&raw.reserved0))
        {
            return Err(Corruption::ReservedNotZero);
        }
        if decode_name(&raw.sender_name).is_none() {
            return Err(Corruption::BadField("sender_name"));
        }
        Ok(Mailbox {
            cluster_uuid: *cluster,
            target_slot: slot,
            sender_slot: raw.sender_slot.get(),
            command,
            request_id: raw.request_id.get(),
            sender_uuid: uuid::Uuid::from_bytes(raw.sender_uuid),
            sender_name: raw.sender_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = uuid::Uuid::from_u128(7);
        let mut m = Mailbox::empty(c, 9);
        m.command = Command::Fence;
        m.request_id = 0xdead_beef;
        m.sender_slot = 2;
        m.set_sender_name("hv-02").unwrap();
        let mut buf = [0u8; 512];
        m.encode(&mut buf);
        assert_eq!(Mailbox::decode(&buf, &c, 9), Ok(m));
        assert_eq!(Mailbox::decode(&buf, &c, 8), Err(Corruption::WrongSlot { expected: 8, found: 9 }));
        // A record is never mistaken for a mailbox.
        crate::format::record::tests::sample().encode(&mut buf);
        assert_eq!(Mailbox::decode(&buf, &c, 9), Err(Corruption::BadMagic));
    }
}
