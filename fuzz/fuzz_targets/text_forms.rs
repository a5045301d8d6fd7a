//! Text a user pastes or a peer hands over: peer ids, peer addresses,
//! content hashes and canopy: links. Parsing never panics, and what parses
//! prints back to a form that parses to the same value.
#![no_main]

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
});
