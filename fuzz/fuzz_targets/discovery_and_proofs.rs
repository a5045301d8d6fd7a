//! Three inputs from anyone: a datagram on the local-discovery group, a
//! leaf's answer to a proof-of-possession check, and a list of signed
//! votes. Each is judged without panicking, whatever its bytes, and what
//! parses survives a round trip.
#![no_main]

use canopy_common::proto::credence::{decode_votes, encode_votes, MAX_VOTES_PER_HIT};
use canopy_common::proto::lan::Message;
use canopy_common::proto::possession::{chunk_count, verify};
use canopy_common::proto::ContentHash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 3 == 2 {
        // Votes: bounded, canonical, and checked without a panic.
        if let Ok(votes) = decode_votes(rest) {
            assert!(votes.len() <= MAX_VOTES_PER_HIT);
            assert_eq!(encode_votes(&votes), rest);
            for vote in &votes {
                let _ = vote.verify(1_800_000_000);
            }
        }
        return;
    }
    if pick % 3 == 0 {
        // Unknown flag bits are ignored (later versions may set them), so
        // what parses must survive a round trip, not keep every bit.
        if let Ok(message) = Message::parse(rest) {
            assert_eq!(Message::parse(&message.encode()), Ok(message));
        }
        return;
    }
    // A claimed size and chunk (any u64s), a root, then the chunk's bytes
    // and the proof's CVs, split at a byte of the input.
    if rest.len() < 8 + 8 + 32 + 1 {
        return;
    }
    let size = u64::from_le_bytes(rest[..8].try_into().unwrap());
    let chunk = u64::from_le_bytes(rest[8..16].try_into().unwrap());
    let root = ContentHash(rest[16..48].try_into().unwrap());
    let split = usize::from(rest[48]).min(rest.len() - 49);
    let (chunk_bytes, proof_bytes) = rest[49..].split_at(split);
    let proof: Vec<[u8; 32]> = proof_bytes
        .chunks_exact(32)
        .map(|cv| cv.try_into().unwrap())
        .collect();
    let _ = chunk_count(size);
    let _ = verify(root, size, chunk, chunk_bytes, &proof);
});
