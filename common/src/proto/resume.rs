//! The download state file (`PATH.part.state`): which blocks of a part file
//! are durable and verified. It is read back after a crash, so it is input
//! like any other: a damaged or foreign file must decode to a clear error,
//! never to a wrong claim.

use serde::{Deserialize, Serialize};

use super::bitfield::{Bitfield, WireBitfield};
use super::content::BlockLayout;
use super::id::ContentHash;

/// Format version written into every state file.
pub const STATE_VERSION: u8 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct PartState {
    version: u8,
    hash: ContentHash,
    size: u64,
    done: WireBitfield,
}

/// Why a state file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("damaged state file: {0}")]
    Damaged(String),
    #[error("state file of format version {0}, not {STATE_VERSION}")]
    Version(u8),
    #[error("state file belongs to another file")]
    OtherFile,
}

/// Encodes the blocks `done` of the file `hash` with `layout`.
pub fn encode_state(hash: ContentHash, layout: &BlockLayout, done: &Bitfield) -> Vec<u8> {
    let state = PartState {
        version: STATE_VERSION,
        hash,
        size: layout.size(),
        done: done.to_wire(),
    };
    postcard::to_allocvec(&state).expect("a state record always encodes")
}

/// Decodes a state file written for `hash` with `layout`: the blocks it
/// claims (each still to be verified from disk before it is trusted).
pub fn decode_state(bytes: &[u8], hash: ContentHash, layout: &BlockLayout) -> Result<Bitfield, StateError> {
    let state: PartState = postcard::from_bytes(bytes).map_err(|e| StateError::Damaged(e.to_string()))?;
    if state.version != STATE_VERSION {
        return Err(StateError::Version(state.version));
    }
    if state.hash != hash || state.size != layout.size() {
        return Err(StateError::OtherFile);
    }
    Bitfield::from_wire(&state.done, layout.block_count())
        .ok_or_else(|| StateError::Damaged("block list of the wrong length".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_foreign_or_damaged_files() {
        let layout = BlockLayout::for_size(10 << 20);
        let hash = ContentHash([7; 32]);
        let mut done = Bitfield::new(layout.block_count());
        done.set(0);
        done.set(layout.block_count() - 1);
        let bytes = encode_state(hash, &layout, &done);
        assert_eq!(decode_state(&bytes, hash, &layout).unwrap(), done);
        assert_eq!(
            decode_state(&bytes, ContentHash([8; 32]), &layout),
            Err(StateError::OtherFile)
        );
        assert_eq!(
            decode_state(&bytes, hash, &BlockLayout::for_size(11 << 20)),
            Err(StateError::OtherFile)
        );
        assert!(matches!(
            decode_state(&bytes[..bytes.len() - 1], hash, &layout),
            Err(StateError::Damaged(_))
        ));
        let mut newer = bytes.clone();
        newer[0] = 9;
        assert_eq!(decode_state(&newer, hash, &layout), Err(StateError::Version(9)));
    }
}
