//! A config file a person wrote (or a disk mangled): any text parses to
//! settings or to an error naming what is wrong, never a panic.
#![no_main]

use std::path::Path;

use canopy_node::cli::config::FileSettings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(error) = FileSettings::parse(text, Path::new("fuzz.toml")) {
            assert!(!error.to_string().is_empty());
        }
    }
});
