//! A block layer and blocks from an untrusted peer: verification must say
//! yes or no, never panic or allocate from the claimed size.
#![no_main]

use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::ContentHash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, [u8; 32], Vec<u8>, u32, Vec<u8>)| {
    let (size, root, layer, index, block) = input;
    if let Ok(hashes) = BlockHashes::verify(ContentHash(root), size, &layer) {
        let _ = hashes.verify_block(index, &block);
    }
});
