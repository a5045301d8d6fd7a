//! What a leaf and its supernode say on a session stream: notices one way,
//! file lists the other. Any bytes decode to a message or a typed error;
//! a decoded message re-encodes to the same frame, and the publish checks
//! a supernode runs on every entry never panic.
#![no_main]

use canopy_common::proto::frame::{decode, encode, MAX_CONTROL_FRAME};
use canopy_common::proto::{LeafUpdate, SessionNotice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((notice, used))) = decode::<SessionNotice>(data, MAX_CONTROL_FRAME) {
        assert_eq!(encode(&notice, MAX_CONTROL_FRAME).unwrap(), &data[..used]);
    }
    if let Ok(Some((update, used))) = decode::<LeafUpdate>(data, MAX_CONTROL_FRAME) {
        assert_eq!(encode(&update, MAX_CONTROL_FRAME).unwrap(), &data[..used]);
        if let LeafUpdate::Add { files } = update {
            for file in &files {
                let _ = file.check();
            }
        }
    }
});
