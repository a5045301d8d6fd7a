//! PCP, the Port Control Protocol (RFC 6887): NAT-PMP's successor on the
//! same UDP port 5351. One `MAP` request asks for a port and the answer
//! names the outside address too. A mapping is identified by a random
//! nonce: the same nonce renews it, and with a lifetime of zero deletes it,
//! so nobody else on the LAN can take over or drop our mapping without it.
//!
//! A NAT-PMP-only gateway answers a PCP request with its own "unsupported
//! version" (version 0): [`AnswerError::SpeaksNatPmp`] says to fall back.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::time::Duration;

pub const VERSION: u8 = 2;
const OP_MAP: u8 = 1;
/// The R bit: set in answers.
const RESPONSE: u8 = 0x80;
const PROTOCOL_UDP: u8 = 17;
const HEADER: usize = 24;
const MAP_PAYLOAD: usize = 36;
/// A MAP request is a header and the MAP payload, no options.
pub const MAP_LEN: usize = HEADER + MAP_PAYLOAD;
/// RFC 6887 §7: no PCP message is longer.
pub const MAX_MESSAGE: usize = 1100;

/// Identifies one mapping between renewals; random per mapping.
pub type Nonce = [u8; 12];

/// "Forward UDP to `client`'s `internal` port for `lifetime`" (zero
/// deletes), suggesting `external` if we had one before.
pub fn map_request(
    client: Ipv4Addr,
    internal: u16,
    external: Option<SocketAddrV4>,
    lifetime: Duration,
    nonce: &Nonce,
) -> [u8; MAP_LEN] {
    let mut request = [0u8; MAP_LEN];
    request[0] = VERSION;
    request[1] = OP_MAP;
    let seconds = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    request[4..8].copy_from_slice(&seconds.to_be_bytes());
    request[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    let map = &mut request[HEADER..];
    map[..12].copy_from_slice(nonce);
    map[12] = PROTOCOL_UDP;
    map[16..18].copy_from_slice(&internal.to_be_bytes());
    // No preference: port 0 and the IPv4 "any" address, ::ffff:0.0.0.0
    // (RFC 6887 §11.1).
    let suggested = external.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    map[18..20].copy_from_slice(&suggested.port().to_be_bytes());
    map[20..36].copy_from_slice(&suggested.ip().to_ipv6_mapped().octets());
    request
}

/// A successful MAP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub internal: u16,
    /// Where peers reach us: the gateway's outside address and port.
    pub external: SocketAddrV4,
    pub lifetime: Duration,
}

/// Why an answer is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the gateway speaks only NAT-PMP")]
    SpeaksNatPmp,
    #[error("an answer of {0} bytes is no PCP MAP answer")]
    Size(usize),
    #[error("the gateway speaks PCP version {0}, not 2")]
    Version(u8),
    #[error("byte 1 ({0:#04x}) is no answer to a MAP request")]
    Opcode(u8),
    /// An answer for another mapping (another program's, or a stale one):
    /// not an error of the gateway, to be ignored.
    #[error("an answer about another mapping")]
    NotOurs,
    #[error("the gateway mapped to {0}, not an IPv4 address")]
    NotIpv4(Ipv6Addr),
    #[error("the gateway refused: {}", describe(*.0))]
    Refused(u8),
}

fn describe(code: u8) -> &'static str {
    match code {
        1 => "unsupported version",
        2 => "not authorized (port mapping is turned off on the router)",
        3 => "malformed request",
        4 => "unsupported opcode",
        5 => "unsupported option",
        6 => "malformed option",
        7 => "network failure (the router has no outside address yet)",
        8 => "no resources (no free ports or mappings)",
        9 => "unsupported protocol",
        10 => "this machine has used its quota of mappings",
        11 => "cannot provide the outside port asked for",
        12 => "address mismatch (a router between us rewrites addresses)",
        13 => "too many remote peers",
        _ => "an unknown result code",
    }
}

/// Parses the gateway's answer to our MAP request with `nonce`.
pub fn parse_map_answer(bytes: &[u8], nonce: &Nonce) -> Result<Mapped, AnswerError> {
    let (&version, rest) = bytes.split_first().ok_or(AnswerError::Size(0))?;
    if version == 0 {
        return Err(AnswerError::SpeaksNatPmp);
    }
    if version != VERSION {
        return Err(AnswerError::Version(version));
    }
    if bytes.len() < HEADER || bytes.len() > MAX_MESSAGE || !bytes.len().is_multiple_of(4) {
        return Err(AnswerError::Size(bytes.len()));
    }
    if rest[0] != RESPONSE | OP_MAP {
        return Err(AnswerError::Opcode(rest[0]));
    }
    let result = bytes[3];
    // A refusal needs no payload to be understood, and a gateway that does
    // not know MAP sends none.
    if result != 0 {
        return Err(AnswerError::Refused(result));
    }
    // Options may follow the payload; we asked for none and read none.
    if bytes.len() < MAP_LEN {
        return Err(AnswerError::Size(bytes.len()));
    }
    let map = &bytes[HEADER..MAP_LEN];
    if map[..12] != nonce[..] || map[12] != PROTOCOL_UDP {
        return Err(AnswerError::NotOurs);
    }
    let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&map[20..36]).expect("16 bytes"));
    let ip = ip.to_ipv4_mapped().ok_or(AnswerError::NotIpv4(ip))?;
    let u16_at = |at: usize| u16::from_be_bytes([map[at], map[at + 1]]);
    let lifetime = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    Ok(Mapped {
        internal: u16_at(16),
        external: SocketAddrV4::new(ip, u16_at(18)),
        lifetime: Duration::from_secs(u64::from(lifetime)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::portmap::LIFETIME;
    use proptest::prelude::*;

    const NONCE: Nonce = [7; 12];
    const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    /// What miniupnpd answers a MAP request: the request's payload with
    /// the assigned port and address.
    fn answer_to(request: &[u8; MAP_LEN], result: u8, external: SocketAddrV4) -> Vec<u8> {
        let mut answer = request.to_vec();
        answer[1] = RESPONSE | OP_MAP;
        answer[2] = 0;
        answer[3] = result;
        answer[8..12].copy_from_slice(&[0, 0, 0, 42]);
        answer[12..24].fill(0);
        answer[HEADER + 18..HEADER + 20].copy_from_slice(&external.port().to_be_bytes());
        answer[HEADER + 20..].copy_from_slice(&external.ip().to_ipv6_mapped().octets());
        answer
    }

    #[test]
    fn a_map_request_is_rfc_6887_bytes() {
        let request = map_request(CLIENT, 4663, None, LIFETIME, &NONCE);
        assert_eq!(request[..8], [2, 1, 0, 0, 0, 0, 0x1c, 0x20]);
        assert_eq!(
            request[8..24],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 2]
        );
        assert_eq!(request[24..36], NONCE);
        assert_eq!(request[36..40], [17, 0, 0, 0], "UDP");
        assert_eq!(
            request[40..44],
            [0x12, 0x37, 0, 0],
            "internal 4663, no suggestion"
        );
        assert_eq!(
            request[44..60],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        let renewal = map_request(
            CLIENT,
            4663,
            Some("10.77.0.11:4663".parse().unwrap()),
            LIFETIME,
            &NONCE,
        );
        assert_eq!(renewal[42..44], [0x12, 0x37]);
        assert_eq!(renewal[56..60], [10, 77, 0, 11]);
    }

    #[test]
    fn answers_parse_or_say_why_not() {
        let request = map_request(CLIENT, 4663, None, LIFETIME, &NONCE);
        let outside: SocketAddrV4 = "10.77.0.11:40000".parse().unwrap();
        let answer = answer_to(&request, 0, outside);
        assert_eq!(
            parse_map_answer(&answer, &NONCE),
            Ok(Mapped {
                internal: 4663,
                external: outside,
                lifetime: LIFETIME
            })
        );
        assert_eq!(parse_map_answer(&answer, &[8; 12]), Err(AnswerError::NotOurs));
        assert_eq!(
            parse_map_answer(&answer_to(&request, 2, outside)[..HEADER], &NONCE)
                .unwrap_err()
                .to_string(),
            "the gateway refused: not authorized (port mapping is turned off on the router)"
        );
        assert_eq!(
            parse_map_answer(&[0, 129, 0, 1, 0, 0, 0, 0], &NONCE),
            Err(AnswerError::SpeaksNatPmp)
        );
        assert_eq!(
            parse_map_answer(&answer[..56], &NONCE),
            Err(AnswerError::Size(56))
        );
        assert_eq!(
            parse_map_answer(&request, &NONCE),
            Err(AnswerError::Opcode(1)),
            "our own request echoed"
        );
        let mut v6 = answer.clone();
        v6[HEADER + 20..].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert!(matches!(
            parse_map_answer(&v6, &NONCE),
            Err(AnswerError::NotIpv4(_))
        ));
        assert_eq!(parse_map_answer(&[], &NONCE), Err(AnswerError::Size(0)));
    }

    proptest! {
        /// Whatever a LAN host sends from the gateway's address, parsing
        /// ends without a panic, and a success needs our nonce.
        #[test]
        fn any_bytes_parse_safely(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if parse_map_answer(&bytes, &NONCE).is_ok() {
                prop_assert!(bytes.len() >= MAP_LEN);
                prop_assert_eq!(&bytes[HEADER..HEADER + 12], &NONCE[..]);
            }
        }
    }
}
