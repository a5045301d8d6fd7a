//! What the process-level tests share: the `canopy` binary, run as a user
//! runs it.

#![allow(dead_code)] // each test file uses its own part of this

pub mod app;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub const CANOPY: &str = env!("CARGO_BIN_EXE_canopy");

/// Runs `canopy ARGS` to completion.
pub fn canopy(args: &[&str]) -> Output {
    Command::new(CANOPY).args(args).output().expect("canopy runs")
}

/// Starts `canopy ARGS` with its output captured, for commands a test
/// waits on while doing something else.
pub fn spawn_canopy(args: &[&str]) -> Child {
    Command::new(CANOPY)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("canopy runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `canopy run` process, killed when dropped.
pub struct RunningNode {
    pub child: Child,
    /// Its `PEERID@HOST:PORT`, as it printed it.
    pub address: String,
    /// What it printed up to its role line (identity, address, what it shares).
    pub banner: Vec<String>,
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
    run_node_on("127.0.0.1:0", args, data)
}

/// [`run_node`] listening on `listen`.
pub fn run_node_on(listen: &str, args: &[&str], data: &Path) -> RunningNode {
    // Beside the data folder, so a node that dies early can say why.
    let name = data
        .file_name()
        .map_or("node".into(), |name| name.to_string_lossy().into_owned());
    let stderr_path = data.with_file_name(format!("{name}.stderr"));
    let mut child = Command::new(CANOPY)
        .args(["run", "--listen", listen])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("a file for the node's stderr"))
        .spawn()
        .expect("canopy run starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let mut address = None;
    while !banner.iter().any(|line: &String| line.starts_with("role:")) {
        let Some(line) = lines.next() else {
            let status = child.wait().expect("canopy run exits");
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("canopy run ended ({status}) before its banner; it printed {banner:?} and on stderr:\n{stderr}");
        };
        let line = line.unwrap();
        if let Some(rest) = line.split("peers reach this node as ").nth(1) {
            address = Some(rest.trim_end_matches(')').to_string());
        }
        banner.push(line);
    }
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    RunningNode {
        child,
        address: address.expect("canopy run printed its address"),
        banner,
    }
}
