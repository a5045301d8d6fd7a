//! Any bytes a peer can send must decode to a message or a typed error,
//! never a panic, and a decoded message must re-encode to the same frame.
#![no_main]

use canopy_common::proto::frame::{decode, encode, MAX_CONTROL_FRAME};
use canopy_common::proto::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, used))) = decode::<Request>(data, MAX_CONTROL_FRAME) {
        assert_eq!(encode(&request, MAX_CONTROL_FRAME).unwrap(), &data[..used]);
    }
    if let Ok(Some((response, used))) = decode::<Response>(data, MAX_CONTROL_FRAME) {
        assert_eq!(encode(&response, MAX_CONTROL_FRAME).unwrap(), &data[..used]);
    }
});
