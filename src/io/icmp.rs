//! ICMP echo for isolation addresses (IPv4): a raw socket (root or CAP_NET_RAW), one echo request
//! per address per round, replies matched by identifier and sequence.

use nix::sys::socket::{
    recvfrom, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub struct Pinger {
    fd: OwnedFd,
    ident: u16,
}

/// RFC 1071 checksum.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `ident` and `seq` (8-byte header, 8 bytes of payload).
pub fn echo_request(ident: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8; // echo request
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"diskbeat");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether `datagram` (as a raw IPv4 socket delivers it: IP header first) is an echo reply to
/// `ident`/`seq`.
pub fn is_reply(datagram: &[u8], ident: u16, seq: u16) -> bool {
    let Some(&first) = datagram.first() else { return false };
    let ihl = usize::from(first & 0x0f) * 4;
    let icmp = match datagram.get(ihl..) {
        Some(i) if i.len() >= 8 => i,
        _ => return false,
    };
    icmp[0] == 0 && icmp[4..6] == ident.to_be_bytes() && icmp[6..8] == seq.to_be_bytes()
}

impl Pinger {
    pub fn new() -> nix::Result<Pinger> {
        let fd = socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp)?;
        // Distinct per process: replies to other pingers on the host are ignored.
        let ident = (std::process::id() & 0xffff) as u16;
        Ok(Pinger { fd, ident })
    }

    pub fn send(&mut self, to: Ipv4Addr, seq: u16) -> nix::Result<()> {
        let p = echo_request(self.ident, seq);
        let addr = SockaddrIn::from(SocketAddrV4::new(to, 0));
        sendto(self.fd.as_raw_fd(), &p, &addr, MsgFlags::empty()).map(|_| ())
    }

    /// Waits up to `timeout` for a reply to round `seq`; Ok(Some(from)) on one.
    pub fn recv_reply(&mut self, seq: u16, timeout: Duration) -> nix::Result<Option<Ipv4Addr>> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let until = Instant::now() + timeout;
        let mut buf = [0u8; 256];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = left.as_millis().clamp(1, u128::from(u16::MAX)) as u16;
            let ready = poll(&mut [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)], PollTimeout::from(ms))?;
            if ready == 0 {
                return Ok(None);
            }
            let (n, from) = recvfrom::<SockaddrIn>(self.fd.as_raw_fd(), &mut buf)?;
            if is_reply(&buf[..n], self.ident, seq) {
                return Ok(from.map(|a| a.ip()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checksum_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!((p[0], &p[4..8]), (8, &[0x12, 0x34, 0, 7][..]));
    }

    #[test]
    fn replies_match_ident_and_seq_only() {
        let mut d = [0u8; 28];
        d[0] = 0x45; // IPv4, 20-byte header
        d[20] = 0; // echo reply
        d[24..26].copy_from_slice(&0x1234u16.to_be_bytes());
        d[26..28].copy_from_slice(&7u16.to_be_bytes());
        assert!(is_reply(&d, 0x1234, 7));
        assert!(!is_reply(&d, 0x1234, 8));
        assert!(!is_reply(&d, 0x1235, 7));
        d[20] = 8;
        assert!(!is_reply(&d, 0x1234, 7), "our own request looped back is not a reply");
        assert!(!is_reply(&d[..22], 0x1234, 7));
        assert!(!is_reply(&[], 0x1234, 7));
    }
}
