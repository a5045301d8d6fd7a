//! A download state file read back after a crash, possibly damaged or
//! another file's: it decodes to the blocks it claims for exactly this file
//! or to a typed error.
#![no_main]

use canopy_common::proto::content::BlockLayout;
use canopy_common::proto::resume::{decode_state, encode_state};
use canopy_common::proto::ContentHash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, [u8; 32], Vec<u8>)| {
    let (size, hash, bytes) = input;
    let layout = BlockLayout::for_size(size);
    if let Ok(done) = decode_state(&bytes, ContentHash(hash), &layout) {
        assert_eq!(done.len(), layout.block_count());
        let again = encode_state(ContentHash(hash), &layout, &done);
        assert_eq!(decode_state(&again, ContentHash(hash), &layout).unwrap(), done);
    }
});
