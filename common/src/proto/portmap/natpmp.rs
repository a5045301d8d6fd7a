//! NAT-PMP (RFC 6886): the small binary protocol Apple's routers,
//! miniupnpd (OpenWrt, pfSense, many others) and PCP servers' fallbacks
//! answer on UDP port 5351 of the default gateway. A mapping takes two
//! requests: one for the outside address, one for the port.
//!
//! Answers are parsed strictly: exact sizes, version 0, the opcode we
//! asked, the result code checked.

use std::net::Ipv4Addr;
use std::time::Duration;

const VERSION: u8 = 0;
const OP_EXTERNAL_ADDRESS: u8 = 0;
const OP_MAP_UDP: u8 = 1;
/// An answer's opcode is the request's plus 128.
const ANSWER: u8 = 128;

/// "What is your external address?": 2 bytes.
pub fn external_address_request() -> [u8; 2] {
    [VERSION, OP_EXTERNAL_ADDRESS]
}

/// "Forward UDP `external` (a suggestion) to my `internal` port for
/// `lifetime`": 12 bytes. A lifetime of zero deletes the mapping.
pub fn map_request(internal: u16, external: u16, lifetime: Duration) -> [u8; 12] {
    let mut request = [0u8; 12];
    request[0] = VERSION;
    request[1] = OP_MAP_UDP;
    request[4..6].copy_from_slice(&internal.to_be_bytes());
    request[6..8].copy_from_slice(&external.to_be_bytes());
    let seconds = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
    request[8..12].copy_from_slice(&seconds.to_be_bytes());
    request
}

/// A gateway's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    ExternalAddress(Ipv4Addr),
    Mapped {
        internal: u16,
        /// The port the gateway forwards: not always the one suggested.
        external: u16,
        lifetime: Duration,
    },
}

/// Why an answer is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("an answer of {0} bytes is no NAT-PMP answer")]
    Size(usize),
    #[error("the gateway speaks NAT-PMP version {0}, not 0")]
    Version(u8),
    #[error("opcode {0} answers nothing we asked")]
    Opcode(u8),
    #[error("the gateway refused: {}", describe(*.0))]
    Refused(u16),
}

fn describe(code: u16) -> &'static str {
    match code {
        1 => "unsupported version",
        2 => "not authorized (port mapping is turned off on the router)",
        3 => "network failure (the router has no external address yet)",
        4 => "out of resources (no free ports or mappings)",
        5 => "unsupported opcode",
        _ => "an unknown result code",
    }
}

/// Parses a gateway's answer.
pub fn parse_answer(bytes: &[u8]) -> Result<Answer, AnswerError> {
    let [version, opcode, result_hi, result_lo, ..] = *bytes else {
        return Err(AnswerError::Size(bytes.len()));
    };
    if version != VERSION {
        return Err(AnswerError::Version(version));
    }
    let result = u16::from_be_bytes([result_hi, result_lo]);
    // A refusal may come short (a gateway that does not know the opcode).
    if result != 0 && (opcode == ANSWER | OP_EXTERNAL_ADDRESS || opcode == ANSWER | OP_MAP_UDP) {
        return Err(AnswerError::Refused(result));
    }
    let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    // Bytes 4..8 are the gateway's epoch (seconds since its mappings were
    // last lost); a caller renewing every half-life needs no more.
    match opcode {
        op if op == ANSWER | OP_EXTERNAL_ADDRESS => match bytes.len() {
            12 => Ok(Answer::ExternalAddress(Ipv4Addr::new(
                bytes[8], bytes[9], bytes[10], bytes[11],
            ))),
            other => Err(AnswerError::Size(other)),
        },
        op if op == ANSWER | OP_MAP_UDP => match bytes.len() {
            16 => Ok(Answer::Mapped {
                internal: u16_at(8),
                external: u16_at(10),
                lifetime: Duration::from_secs(u64::from(u32::from_be_bytes([
                    bytes[12], bytes[13], bytes[14], bytes[15],
                ]))),
            }),
            other => Err(AnswerError::Size(other)),
        },
        other => Err(AnswerError::Opcode(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::portmap::LIFETIME;
    use proptest::prelude::*;

    #[test]
    fn requests_are_rfc_6886_bytes() {
        assert_eq!(external_address_request(), [0, 0]);
        assert_eq!(
            map_request(4663, 4663, LIFETIME),
            [0, 1, 0, 0, 0x12, 0x37, 0x12, 0x37, 0, 0, 0x1c, 0x20]
        );
        assert_eq!(
            map_request(4663, 0, Duration::ZERO)[8..],
            [0, 0, 0, 0],
            "a deletion"
        );
    }

    #[test]
    fn answers_parse_or_say_why_not() {
        let mapped = [0, 129, 0, 0, 0, 0, 0, 9, 0x12, 0x37, 0xa0, 0x00, 0, 0, 0x1c, 0x20];
        assert_eq!(
            parse_answer(&mapped),
            Ok(Answer::Mapped {
                internal: 4663,
                external: 40960,
                lifetime: LIFETIME
            })
        );
        let address = [0, 128, 0, 0, 0, 0, 0, 9, 10, 77, 0, 11];
        assert_eq!(
            parse_answer(&address),
            Ok(Answer::ExternalAddress(Ipv4Addr::new(10, 77, 0, 11)))
        );
        assert_eq!(
            parse_answer(&[0, 129, 0, 2]).unwrap_err().to_string(),
            "the gateway refused: not authorized (port mapping is turned off on the router)"
        );
        assert_eq!(parse_answer(&[2, 129, 0, 0]), Err(AnswerError::Version(2)), "PCP");
        assert_eq!(parse_answer(&mapped[..15]), Err(AnswerError::Size(15)));
        assert_eq!(
            parse_answer(&[0, 1, 0, 0]),
            Err(AnswerError::Opcode(1)),
            "our own request echoed"
        );
        assert_eq!(parse_answer(&[0]), Err(AnswerError::Size(1)));
    }

    proptest! {
        /// Whatever a LAN host sends from the gateway's address, parsing
        /// ends in an answer or an error, never a panic; an answer comes
        /// only from a correctly sized, successful message.
        #[test]
        fn any_bytes_parse_safely(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if parse_answer(&bytes).is_ok() {
                prop_assert!(bytes.len() == 12 || bytes.len() == 16);
                prop_assert_eq!(&bytes[..4], &[0, bytes[1], 0, 0][..]);
            }
        }
    }
}
