//! Private networks ("groups"): the byte-level rules, with no I/O.
//!
//! A private network is a name plus a 32-byte secret key (or, for a network
//! run on an allow-list of peer ids, a key derived from the name alone).
//! Members recognise each other twice over:
//!
//! 1. **In the handshake**, by an ALPN id derived from the key and the name
//!    ([`alpn`]): a node without the key cannot even name the protocol, so
//!    its handshake fails with `no_application_protocol` and it learns
//!    nothing about what members share.
//! 2. **Right after it**, by a proof bound to that very TLS session
//!    ([`client_proof`], [`server_proof`]): a keyed BLAKE3 MAC over the TLS
//!    exporter value. ALPN travels in clear, so copying it is not enough;
//!    the exporter differs for every connection, so a proof seen once
//!    cannot be replayed.
//!
//! An allow-list, when the network has one, is checked against the peer id
//! the handshake proved. [`Invite`] is the text a member hands a newcomer:
//! name, key and a few members to join through.
//!
//! `docs/PROTOCOL.md` section 15 specifies all of this for other
//! implementations; `docs/vectors/network.json` holds its test vectors.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::id::{PeerAddr, PeerId};

/// Longest network name, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Prefix of every private network's ALPN id.
pub const ALPN_PREFIX: &[u8] = b"canopy/0/g/";
/// Bytes of the keyed hash that go (base32-encoded) into the ALPN id.
pub const ALPN_TAG_LEN: usize = 10;
/// TLS exporter label (RFC 8446 section 7.5) for the membership proof.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-canopy/0 network proof";
/// Bytes of exporter output the proofs are computed over.
pub const EXPORTER_LEN: usize = 32;
/// Bytes of a proof on the wire.
pub const PROOF_LEN: usize = 32;
/// Context string for the key of a network that has no secret key.
pub const OPEN_KEY_CONTEXT: &str = "canopy/0 open network key";
/// Scheme of an invite.
pub const INVITE_SCHEME: &str = "canopy-group:";
/// Longest invite accepted.
pub const MAX_INVITE_LEN: usize = 2048;
/// Most members an invite may name.
pub const MAX_INVITE_MEMBERS: usize = 16;
/// Most peer ids an allow-list may hold.
pub const MAX_ALLOWED: usize = 10_000;

/// Why a network name, key, allow-list or invite was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "network name {0:?} is not allowed: use 1 to {MAX_NAME_LEN} characters a-z, 0-9 and '-', \
         starting with a letter or digit"
    )]
    Name(String),
    #[error("a network key is 64 hex characters (32 bytes); this one is not")]
    Key,
    #[error("line {line} of the allow-list: {reason}")]
    AllowList { line: usize, reason: String },
    #[error("an invite starts with {INVITE_SCHEME}")]
    InviteScheme,
    #[error("the invite is longer than {MAX_INVITE_LEN} characters")]
    InviteTooLong,
    #[error("bad {key} in the invite: {reason}")]
    InviteParam { key: &'static str, reason: String },
    #[error("the invite carries no key")]
    InviteNoKey,
}

/// A network's name: 1–32 of `a-z 0-9 -`, not starting with `-`. Names are
/// also folder names (`DATA_DIR/networks/NAME`), which this keeps safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkName(String);

impl NetworkName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NetworkName {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = !text.is_empty()
            && text.len() <= MAX_NAME_LEN
            && !text.starts_with('-')
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(NetworkName(text.to_string()))
        } else {
            Err(NetworkError::Name(text.chars().take(64).collect()))
        }
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A network's 32-byte secret. Text form (key files, invites): 64
/// lower-case hex characters. `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey(pub [u8; 32]);

impl NetworkKey {
    /// The key of a network that has none of its own (membership by
    /// allow-list only): public, derived from the name, so that such a
    /// network still has its own ALPN id and cannot be mixed up with
    /// another.
    pub fn open(name: &NetworkName) -> NetworkKey {
        NetworkKey(blake3::derive_key(OPEN_KEY_CONTEXT, name.as_str().as_bytes()))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads a key file's text: the first line that is neither blank nor a
    /// `#` comment holds the 64 hex characters.
    pub fn from_file_text(text: &str) -> Result<NetworkKey, NetworkError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or(NetworkError::Key)?;
        line.parse()
    }
}

impl FromStr for NetworkKey {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return Err(NetworkError::Key);
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| NetworkError::Key)?;
        }
        Ok(NetworkKey(key))
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(…)")
    }
}

/// RFC 4648 base32, lower case, no padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 0x1f) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 0x1f) as usize] as char);
    }
    out
}

/// The ALPN id of network `name` with `key`:
/// `canopy/0/g/` + base32(first 10 bytes of keyed_hash(key, "alpn" || name)),
/// 27 bytes in all.
pub fn alpn(name: &NetworkName, key: &NetworkKey) -> Vec<u8> {
    let mut message = b"alpn".to_vec();
    message.extend_from_slice(name.as_str().as_bytes());
    let tag = blake3::keyed_hash(&key.0, &message);
    let mut id = ALPN_PREFIX.to_vec();
    id.extend_from_slice(base32(&tag.as_bytes()[..ALPN_TAG_LEN]).as_bytes());
    id
}

fn proof(key: &NetworkKey, label: &[u8], exporter: &[u8; EXPORTER_LEN]) -> [u8; PROOF_LEN] {
    let mut message = label.to_vec();
    message.extend_from_slice(exporter);
    *blake3::keyed_hash(&key.0, &message).as_bytes()
}

/// What the dialing side sends: keyed_hash(key, "client proof" || exporter).
pub fn client_proof(key: &NetworkKey, exporter: &[u8; EXPORTER_LEN]) -> [u8; PROOF_LEN] {
    proof(key, b"client proof", exporter)
}

/// What the accepting side answers: keyed_hash(key, "server proof" || exporter).
pub fn server_proof(key: &NetworkKey, exporter: &[u8; EXPORTER_LEN]) -> [u8; PROOF_LEN] {
    proof(key, b"server proof", exporter)
}

/// Compares a received proof with the expected one in constant time.
pub fn proofs_match(expected: &[u8; PROOF_LEN], received: &[u8; PROOF_LEN]) -> bool {
    blake3::Hash::from_bytes(*expected) == blake3::Hash::from_bytes(*received)
}

/// Parses an allow-list: peer ids separated by newlines, commas or spaces;
/// `#` starts a comment that runs to the end of the line.
pub fn parse_allow_list(text: &str) -> Result<BTreeSet<PeerId>, NetworkError> {
    let mut ids = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        for word in line.split(|c: char| c == ',' || c.is_whitespace()) {
            if word.is_empty() {
                continue;
            }
            let id = word.parse::<PeerId>().map_err(|error| NetworkError::AllowList {
                line: number + 1,
                reason: error.to_string(),
            })?;
            ids.insert(id);
            if ids.len() > MAX_ALLOWED {
                return Err(NetworkError::AllowList {
                    line: number + 1,
                    reason: format!("more than {MAX_ALLOWED} peer ids"),
                });
            }
        }
    }
    Ok(ids)
}

/// What a member hands a newcomer:
///
/// ```text
/// canopy-group:<name>?key=<64 hex>&peer=<PEERID@IP:PORT>&peer=…
/// ```
///
/// Anyone holding an invite holds the key: pass it on only to people who
/// should be members, over a channel you trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub name: NetworkName,
    pub key: NetworkKey,
    /// Members to join through (at most [`MAX_INVITE_MEMBERS`]).
    pub members: Vec<PeerAddr>,
}

impl fmt::Display for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{INVITE_SCHEME}{}?key={}", self.name, self.key.to_hex())?;
        for member in self.members.iter().take(MAX_INVITE_MEMBERS) {
            write!(f, "&peer={member}")?;
        }
        Ok(())
    }
}

impl FromStr for Invite {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.len() > MAX_INVITE_LEN {
            return Err(NetworkError::InviteTooLong);
        }
        let rest = text
            .strip_prefix(INVITE_SCHEME)
            .ok_or(NetworkError::InviteScheme)?;
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let name: NetworkName = name.parse()?;
        let mut key = None;
        let mut members = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (param, value) = pair.split_once('=').unwrap_or((pair, ""));
            match param {
                "key" => {
                    key = Some(
                        value
                            .parse()
                            .map_err(|e: NetworkError| NetworkError::InviteParam {
                                key: "key",
                                reason: e.to_string(),
                            })?,
                    )
                }
                "peer" => {
                    if members.len() == MAX_INVITE_MEMBERS {
                        return Err(NetworkError::InviteParam {
                            key: "peer",
                            reason: format!("more than {MAX_INVITE_MEMBERS} members"),
                        });
                    }
                    members.push(
                        value
                            .parse()
                            .map_err(|e: super::IdError| NetworkError::InviteParam {
                                key: "peer",
                                reason: e.to_string(),
                            })?,
                    );
                }
                // Later versions may add parameters.
                _ => {}
            }
        }
        Ok(Invite {
            name,
            key: key.ok_or(NetworkError::InviteNoKey)?,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> NetworkName {
        text.parse().unwrap()
    }

    #[test]
    fn names_are_safe_folder_names() {
        for good in ["a", "family", "work-2026", "0x"] {
            assert!(good.parse::<NetworkName>().is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "-a", "A", "a b", "a/b", "..", "é", long.as_str()] {
            assert!(bad.parse::<NetworkName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alpn_depends_on_key_and_name() {
        let key = NetworkKey([7; 32]);
        let a = alpn(&name("a"), &key);
        assert!(a.starts_with(ALPN_PREFIX));
        assert_eq!(a.len(), ALPN_PREFIX.len() + 16);
        assert_ne!(a, alpn(&name("b"), &key));
        assert_ne!(a, alpn(&name("a"), &NetworkKey([8; 32])));
        assert_ne!(alpn(&name("a"), &NetworkKey::open(&name("a"))), a);
    }

    #[test]
    fn proofs_differ_by_side_session_and_key() {
        let key = NetworkKey([1; 32]);
        let exporter = [2; EXPORTER_LEN];
        let client = client_proof(&key, &exporter);
        assert_ne!(client, server_proof(&key, &exporter));
        assert_ne!(client, client_proof(&key, &[3; EXPORTER_LEN]));
        assert_ne!(client, client_proof(&NetworkKey([4; 32]), &exporter));
        assert!(proofs_match(&client, &client_proof(&key, &exporter)));
        assert!(!proofs_match(&client, &[0; PROOF_LEN]));
    }

    #[test]
    fn keys_read_from_files_and_refuse_junk() {
        let key = NetworkKey([0xab; 32]);
        let text = format!("# canopy network key\n\n{}\n", key.to_hex());
        assert_eq!(NetworkKey::from_file_text(&text).unwrap(), key);
        assert_eq!(NetworkKey::from_file_text(""), Err(NetworkError::Key));
        assert!("zz".repeat(32).parse::<NetworkKey>().is_err());
        assert!("é".repeat(32).parse::<NetworkKey>().is_err());
        assert!(!format!("{key:?}").contains("ab"));
    }

    #[test]
    fn allow_lists_parse_with_comments_and_name_bad_lines() {
        let a = PeerId([1; 32]);
        let b = PeerId([2; 32]);
        let text = format!("# members\n{a}  # alice\n{b}, {a}\n");
        assert_eq!(parse_allow_list(&text).unwrap(), BTreeSet::from([a, b]));
        let error = parse_allow_list(&format!("{a}\nnobody\n")).unwrap_err();
        assert!(
            matches!(error, NetworkError::AllowList { line: 2, .. }),
            "{error}"
        );
    }

    #[test]
    fn invites_round_trip_and_are_bounded() {
        let invite = Invite {
            name: name("family"),
            key: NetworkKey([9; 32]),
            members: vec![PeerAddr::new(PeerId([5; 32]), "192.0.2.1:4665".parse().unwrap())],
        };
        let text = invite.to_string();
        assert!(text.starts_with("canopy-group:family?key=0909"));
        assert_eq!(text.parse::<Invite>().unwrap(), invite);
        assert_eq!("canopy:abc".parse::<Invite>(), Err(NetworkError::InviteScheme));
        assert_eq!("canopy-group:x".parse::<Invite>(), Err(NetworkError::InviteNoKey));
        assert!("canopy-group:x?key=00".parse::<Invite>().is_err());
        assert!("canopy-group:x?peer=nobody".parse::<Invite>().is_err());
        let huge = format!("{text}{}", "&x=y".repeat(600));
        assert_eq!(huge.parse::<Invite>(), Err(NetworkError::InviteTooLong));
    }
}
