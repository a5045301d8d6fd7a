//! What the process-level tests share: the `canopy` binary, run as a user
//! runs it.

#![allow(dead_code)] // each test file uses its own part of this

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const CANOPY: &str = env!("CARGO_BIN_EXE_canopy");

/// Runs `canopy ARGS` to completion.
pub fn canopy(args: &[&str]) -> Output {
    Command::new(CANOPY).args(args).output().expect("canopy runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `canopy run` process, killed when dropped.
pub struct RunningNode {
    pub child: Child,
    /// Its `PEERID@HOST:PORT`, as it printed it.
    pub address: String,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `canopy run --listen 127.0.0.1:0 ARGS --data-dir DATA` and waits
/// until it prints its address.
pub fn run_node(args: &[&str], data: &Path) -> RunningNode {
    let mut child = Command::new(CANOPY)
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("canopy run starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("canopy run printed its address").unwrap();
        if let Some(rest) = line.split("peers reach this node as ").nth(1) {
            break rest.trim_end_matches(')').to_string();
        }
    };
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    RunningNode { child, address }
}
