//! Local discovery: nodes on one home network find each other with no
//! bootstrap address, as Syncthing's local discovery and BitTorrent's
//! local peer discovery (BEP 14) do, by UDP multicast.
//!
//! Two messages, fixed-size, in one datagram each:
//!
//! - a **query**, `CNPY 1 0`, sent by a node that is starting: "who is
//!   here?";
//! - an **announce**, `CNPY 1 1` + peer id (32 bytes) + port (u16, big
//!   endian) + flags (bit 0: it is a supernode; other bits are ignored,
//!   for later versions), sent in answer to a query and at start.
//!
//! An announce only says where to try: the QUIC handshake proves the id, as
//! for any address. Only public-network nodes take part (a private group's
//! members are named in its allow-list).

use super::id::PeerId;

/// The multicast group and port (an organisation-local address, RFC 2365).
pub const GROUP: [u8; 4] = [239, 255, 77, 77];
pub const PORT: u16 = 4664;

const MAGIC: &[u8; 4] = b"CNPY";
const VERSION: u8 = 1;
const QUERY: u8 = 0;
const ANNOUNCE: u8 = 1;
/// Flag bit: the announcer is a supernode.
const SUPERNODE: u8 = 1;

/// What a datagram says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Query,
    Announce(Announce),
}

/// A node telling the LAN where it listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub id: PeerId,
    /// Its QUIC port, at the address the datagram came from.
    pub port: u16,
    pub supernode: bool,
}

/// Why a datagram is not a Canopy discovery message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LanError {
    #[error("not a Canopy discovery message")]
    Foreign,
    #[error("discovery version {0}, this node speaks 1")]
    Version(u8),
    #[error("a malformed discovery message ({0} bytes)")]
    Malformed(usize),
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        match self {
            Message::Query => bytes.push(QUERY),
            Message::Announce(announce) => {
                bytes.push(ANNOUNCE);
                bytes.extend_from_slice(&announce.id.0);
                bytes.extend_from_slice(&announce.port.to_be_bytes());
                bytes.push(if announce.supernode { SUPERNODE } else { 0 });
            }
        }
        bytes
    }

    /// Reads one datagram; anything else on the group is refused.
    pub fn parse(bytes: &[u8]) -> Result<Message, LanError> {
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err(LanError::Foreign);
        };
        match rest {
            [VERSION, QUERY] => Ok(Message::Query),
            [VERSION, ANNOUNCE, body @ ..] if body.len() == 35 => {
                let id = PeerId(body[..32].try_into().expect("32 bytes"));
                let port = u16::from_be_bytes([body[32], body[33]]);
                if port == 0 {
                    return Err(LanError::Malformed(bytes.len()));
                }
                Ok(Message::Announce(Announce {
                    id,
                    port,
                    supernode: body[34] & SUPERNODE != 0,
                }))
            }
            [version, ..] if *version != VERSION => Err(LanError::Version(*version)),
            _ => Err(LanError::Malformed(bytes.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip_and_have_their_fixed_sizes() {
        assert_eq!(Message::Query.encode(), b"CNPY\x01\x00");
        let announce = Message::Announce(Announce {
            id: PeerId([9; 32]),
            port: 4663,
            supernode: true,
        });
        let bytes = announce.encode();
        assert_eq!(bytes.len(), 41);
        assert_eq!(Message::parse(&bytes), Ok(announce));
        assert_eq!(Message::parse(&Message::Query.encode()), Ok(Message::Query));
    }

    #[test]
    fn foreign_or_malformed_datagrams_are_refused() {
        assert_eq!(Message::parse(b"M-SEARCH * HTTP/1.1"), Err(LanError::Foreign));
        assert_eq!(Message::parse(b"CNPY\x02\x00"), Err(LanError::Version(2)));
        assert_eq!(Message::parse(b"CNPY\x01\x01\x00"), Err(LanError::Malformed(7)));
        let mut zero_port = Message::Announce(Announce {
            id: PeerId([1; 32]),
            port: 1,
            supernode: false,
        })
        .encode();
        zero_port[38] = 0;
        zero_port[39] = 0;
        assert_eq!(Message::parse(&zero_port), Err(LanError::Malformed(41)));
        let mut longer = Message::Query.encode();
        longer.push(0);
        assert_eq!(Message::parse(&longer), Err(LanError::Malformed(7)));
    }

    proptest! {
        #[test]
        fn any_datagram_parses_or_is_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Message::parse(&bytes);
        }

        #[test]
        fn any_announce_round_trips(id in any::<[u8; 32]>(), port in 1u16.., supernode in any::<bool>()) {
            let announce = Message::Announce(Announce { id: PeerId(id), port, supernode });
            prop_assert_eq!(Message::parse(&announce.encode()), Ok(announce));
        }
    }
}
