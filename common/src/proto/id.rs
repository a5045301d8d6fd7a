//! Identifiers: who a peer is ([`PeerId`]), what a file is ([`ContentHash`]) and
//! where a peer can be reached ([`PeerAddr`], written `PEERID@HOST:PORT`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a textual id or address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("peer id must be 52 base32 characters (a-z, 2-7), got {0} characters")]
    PeerIdLength(usize),
    #[error("peer id contains {0:?}, which is not a base32 character (a-z, 2-7)")]
    PeerIdChar(char),
    #[error("content hash must be 64 hex characters (as b3sum prints), got {0:?}")]
    ContentHash(String),
    #[error("peer address must look like PEERID@HOST:PORT, got {0:?}")]
    AddrShape(String),
    #[error("bad socket address {0:?} in peer address (expected IP:PORT or [IPv6]:PORT)")]
    SocketAddr(String),
}

/// A node's identity: the 32 bytes of its long-term Ed25519 public key.
///
/// Because the id *is* the key, an address that names a peer id pins that
/// peer: the TLS handshake fails unless the other side proves it holds the
/// matching private key. Its text form is 52 lower-case base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first characters of the text form, enough to tell peers apart in
    /// logs and tables without drowning them.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(10);
        text
    }
}

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 4648 base32, lower case, no padding: 256 bits -> 52 characters.
        let mut buffer: u32 = 0;
        let mut bits = 0;
        for &byte in &self.0 {
            buffer = (buffer << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                let index = (buffer >> bits) & 0x1f;
                write!(f, "{}", BASE32_ALPHABET[index as usize] as char)?;
            }
        }
        if bits > 0 {
            let index = (buffer << (5 - bits)) & 0x1f;
            write!(f, "{}", BASE32_ALPHABET[index as usize] as char)?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 52 {
            return Err(IdError::PeerIdLength(text.chars().count()));
        }
        let mut out = [0u8; 32];
        let mut buffer: u32 = 0;
        let mut bits = 0;
        let mut written = 0;
        for c in text.chars() {
            let value = match c {
                'a'..='z' => c as u32 - 'a' as u32,
                'A'..='Z' => c as u32 - 'A' as u32,
                '2'..='7' => c as u32 - '2' as u32 + 26,
                other => return Err(IdError::PeerIdChar(other)),
            };
            buffer = (buffer << 5) | value;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out[written] = (buffer >> bits) as u8;
                written += 1;
                buffer &= (1 << bits) - 1;
            }
        }
        // 52 * 5 = 260 bits: the last 4 must be zero padding, or two texts
        // would name the same key.
        if buffer != 0 {
            return Err(IdError::PeerIdChar(text.chars().last().unwrap_or('?')));
        }
        Ok(PeerId(out))
    }
}

/// A file's identity: the BLAKE3 hash of its bytes, the same value `b3sum`
/// prints. Text form: 64 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first characters of the hex form, for logs.
    pub fn short(&self) -> String {
        let mut text = self.to_hex();
        text.truncate(12);
        text
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(hash: blake3::Hash) -> Self {
        ContentHash(*hash.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

impl FromStr for ContentHash {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 64 {
            return Err(IdError::ContentHash(text.to_owned()));
        }
        blake3::Hash::from_hex(text.to_ascii_lowercase())
            .map(ContentHash::from)
            .map_err(|_| IdError::ContentHash(text.to_owned()))
    }
}

/// Where to reach a specific peer: `PEERID@HOST:PORT`.
///
/// The `FromStr` form accepts only IP literals so that `proto` never touches a
/// resolver; the CLI resolves host names before building one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAddr {
    pub id: PeerId,
    pub addr: SocketAddr,
}

impl PeerAddr {
    pub fn new(id: PeerId, addr: SocketAddr) -> Self {
        PeerAddr { id, addr }
    }

    /// Splits `PEERID@REST` into the parsed id and the unparsed `REST`, for
    /// callers that resolve host names themselves.
    pub fn split(text: &str) -> Result<(PeerId, &str), IdError> {
        let (id, rest) = text
            .split_once('@')
            .ok_or_else(|| IdError::AddrShape(text.to_owned()))?;
        if rest.is_empty() {
            return Err(IdError::AddrShape(text.to_owned()));
        }
        Ok((id.parse()?, rest))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.addr)
    }
}

impl FromStr for PeerAddr {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, rest) = PeerAddr::split(text)?;
        let addr = rest.parse().map_err(|_| IdError::SocketAddr(rest.to_owned()))?;
        Ok(PeerAddr { id, addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn peer_id_text_round_trips(bytes in any::<[u8; 32]>()) {
            let id = PeerId(bytes);
            let text = id.to_string();
            prop_assert_eq!(text.len(), 52);
            prop_assert_eq!(text.parse::<PeerId>().unwrap(), id);
            prop_assert_eq!(text.to_uppercase().parse::<PeerId>().unwrap(), id);
        }

        #[test]
        fn content_hash_text_round_trips(bytes in any::<[u8; 32]>()) {
            let hash = ContentHash(bytes);
            prop_assert_eq!(hash.to_hex().parse::<ContentHash>().unwrap(), hash);
        }

        #[test]
        fn peer_id_parser_never_panics(text in "\\PC{0,80}") {
            let _ = text.parse::<PeerId>();
            let _ = text.parse::<PeerAddr>();
        }
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 section 10: BASE32("foobar") = "MZXW6YTBOI======".
        // Our ids are 32 bytes, so check the encoder on a prefix-equal id.
        let mut bytes = [0u8; 32];
        bytes[..6].copy_from_slice(b"foobar");
        assert!(PeerId(bytes).to_string().starts_with("mzxw6ytboi"));
    }

    #[test]
    fn non_canonical_peer_id_is_rejected() {
        let text = PeerId([0xff; 32]).to_string();
        assert!(text.ends_with('q'), "last char carries 1 bit + 4 padding bits");
        let mut altered = text.clone();
        altered.pop();
        altered.push('7');
        assert!(altered.parse::<PeerId>().is_err());
    }

    #[test]
    fn peer_addr_parses_ipv4_and_ipv6() {
        let id = PeerId([7; 32]);
        let v4: PeerAddr = format!("{id}@127.0.0.1:4000").parse().unwrap();
        assert_eq!(v4.addr, "127.0.0.1:4000".parse().unwrap());
        let v6: PeerAddr = format!("{id}@[::1]:4000").parse().unwrap();
        assert_eq!(v6.id, id);
        assert_eq!(v6.to_string(), format!("{id}@[::1]:4000"));
        assert!(matches!(
            "127.0.0.1:4000".parse::<PeerAddr>(),
            Err(IdError::AddrShape(_))
        ));
        assert!(matches!(
            format!("{id}@localhost:4000").parse::<PeerAddr>(),
            Err(IdError::SocketAddr(_))
        ));
    }

    #[test]
    fn content_hash_matches_b3sum_text() {
        // b3sum of the empty input.
        let empty = ContentHash::of(b"");
        assert_eq!(
            empty.to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
