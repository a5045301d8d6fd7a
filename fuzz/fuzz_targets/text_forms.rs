//! Text a user pastes or a peer hands over: peer ids, peer addresses,
//! content hashes, canopy: links, and for private networks, names, keys,
//! canopy-group: invites and allow-lists. Parsing never panics, and what
//! parses prints back to a form that parses to the same value.
#![no_main]

use canopy_common::proto::network::{parse_allow_list, Invite, NetworkKey, NetworkName};
use canopy_common::proto::{ContentHash, Link, PeerAddr, PeerId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<PeerId>() {
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
    }
    if let Ok(hash) = text.parse::<ContentHash>() {
        assert_eq!(hash.to_string().parse::<ContentHash>().unwrap(), hash);
    }
    if let Ok(addr) = text.parse::<PeerAddr>() {
        assert_eq!(addr.to_string().parse::<PeerAddr>().unwrap(), addr);
    }
    if let Ok(link) = text.parse::<Link>() {
        assert_eq!(link.to_string().parse::<Link>().unwrap(), link);
    }
    if let Ok(name) = text.parse::<NetworkName>() {
        assert_eq!(name.to_string().parse::<NetworkName>().unwrap(), name);
    }
    if let Ok(key) = NetworkKey::from_file_text(text) {
        assert_eq!(key.to_hex().parse::<NetworkKey>().unwrap(), key);
    }
    if let Ok(invite) = text.parse::<Invite>() {
        assert_eq!(invite.to_string().parse::<Invite>().unwrap(), invite);
    }
    if let Ok(ids) = parse_allow_list(text) {
        let again: String = ids.iter().map(|id| format!("{id}\n")).collect();
        assert_eq!(parse_allow_list(&again).unwrap(), ids);
    }
});
