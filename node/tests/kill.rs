//! Processes killed at the worst moments: sources that die mid-transfer, a
//! downloader SIGKILLed again and again, a disk that fills up. Real
//! `canopy` processes, real signals, real files.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Instant;

use canopy_node::state::TransferLimits;
use canopy_node::{Node, NodeConfig};
use support::{run_node, RunningNode, CANOPY};

const MIB: u64 = 1 << 20;

fn patterned(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 131 % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

fn spawn_source(share: &Path, data: &Path, rate: &str) -> RunningNode {
    run_node(
        &["--max-upload-rate", rate, "--share", share.to_str().unwrap()],
        data,
    )
}

/// Starts `canopy get --json` and returns the child with its stdout lines.
fn spawn_get(
    hash: &str,
    sources: &[String],
    output: &Path,
    data: &Path,
) -> (Child, std::io::Lines<BufReader<std::process::ChildStdout>>) {
    let mut command = Command::new(CANOPY);
    command
        .args(["get", hash, "--json", "-o"])
        .arg(output)
        .arg("--data-dir")
        .arg(data);
    for source in sources {
        command.args(["--source", source]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("canopy get starts");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

fn json_field(line: &str, field: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value.get(field)?.as_u64()
}

#[test]
fn two_of_four_sources_killed_mid_transfer() {
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content = patterned(16 * MIB);
    std::fs::write(share.join("f.bin"), &content).unwrap();
    let hash = blake3::hash(&content).to_hex().to_string();

    let mut sources: Vec<RunningNode> = (0..4)
        .map(|i| spawn_source(&share, &root.path().join(format!("s{i}")), "2M"))
        .collect();
    let addresses: Vec<String> = sources.iter().map(|s| s.address.clone()).collect();
    let output = root.path().join("out.bin");
    let (mut get, lines) = spawn_get(&hash, &addresses, &output, &root.path().join("client"));

    let mut killed = false;
    let mut done = false;
    for line in lines {
        let line = line.unwrap();
        if !killed && json_field(&line, "verified").is_some_and(|v| v > 4 * MIB) {
            for mut source in sources.drain(..2) {
                source.child.kill().unwrap(); // SIGKILL: no goodbye on the wire
                source.child.wait().unwrap();
            }
            killed = true;
        }
        done |= line.contains("\"event\":\"done\"");
    }
    let status = get.wait().unwrap();
    assert!(killed, "the download finished before the kill point");
    assert!(status.success() && done, "get failed: {status}");
    assert!(std::fs::read(&output).unwrap() == content);
}

/// The downloader is SIGKILLed at three random points. Each run resumes from
/// the part file; in total the sources upload at most the file plus what
/// was in flight (requested, or received but not yet durable) at each kill.
#[test]
fn downloader_killed_three_times_resumes_to_identical_bytes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let size = 48 * MIB;
    let content = patterned(size);
    std::fs::write(share.join("f.bin"), &content).unwrap();
    let hash = blake3::hash(&content).to_hex().to_string();

    // Three in-process sources at 2 MiB/s each, so the bytes they send can
    // be counted exactly.
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let mut config =
                NodeConfig::new(root.path().join(format!("s{i}")), "127.0.0.1:0".parse().unwrap())
                    .sharing(share.clone());
            config.upload = TransferLimits {
                max_upload_rate: Some(2 * MIB),
                ..TransferLimits::default()
            };
            runtime.block_on(Node::start(config)).unwrap()
        })
        .collect();
    let addresses: Vec<String> = nodes.iter().map(|n| n.peer_addr().to_string()).collect();
    let output = root.path().join("out.bin");
    let client = root.path().join("client");

    let seed = Instant::now().elapsed().subsec_nanos() as u64 ^ std::process::id() as u64;
    let mut random = seed | 1;
    let mut next_fraction = || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        0.1 + (random % 1000) as f64 / 1000.0 * 0.25
    };
    let mut kill_at = 0.0;
    for kill in 0..3 {
        kill_at += next_fraction();
        let threshold = (kill_at * size as f64) as u64;
        let (mut get, lines) = spawn_get(&hash, &addresses, &output, &client);
        for line in lines {
            let line = line.unwrap();
            if json_field(&line, "verified").is_some_and(|v| v >= threshold) {
                get.kill().unwrap();
                break;
            }
        }
        let status = get.wait().unwrap();
        assert!(
            !status.success(),
            "kill {kill} (seed {seed}) came too late: the download had finished"
        );
        assert!(
            output.with_extension("bin.part").exists(),
            "part file kept after kill {kill}"
        );
    }
    let (mut get, lines) = spawn_get(&hash, &addresses, &output, &client);
    let last = lines.map(Result::unwrap).last().unwrap_or_default();
    let status = get.wait().unwrap();
    assert!(status.success(), "final run failed (seed {seed}): {last}");
    assert!(
        json_field(&last, "resumed").unwrap() > 0,
        "the final run resumed: {last}"
    );
    assert!(
        std::fs::read(&output).unwrap() == content,
        "bytes differ (seed {seed})"
    );

    // In flight per kill: 3 sources x 4 requests x ~8 blocks of 64 KiB at
    // this rate (6 MiB at most, ~2.5 MiB seen), plus up to 250 ms of
    // received-but-not-yet-durable data (1.5 MiB) and each run's block
    // layer and size-proving last block.
    let per_kill = 8 * MIB;
    let uploaded: u64 = nodes
        .iter()
        .map(|n| n.stats().bytes_sent.load(Ordering::Relaxed))
        .sum();
    assert!(
        uploaded <= size + 3 * per_kill,
        "sources sent {uploaded} bytes for a {size}-byte file over 3 kills (seed {seed})"
    );
    for node in nodes {
        runtime.block_on(node.shutdown());
    }
}

/// A disk that fills up mid-download: a clear error naming the cause, exit
/// code 6, no panic. Uses a 1 MiB tmpfs, so it needs root (as CI has).
#[test]
fn full_disk_is_a_clear_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content = patterned(4 * MIB);
    std::fs::write(share.join("f.bin"), &content).unwrap();
    let hash = blake3::hash(&content).to_hex().to_string();
    let node = runtime
        .block_on(Node::start(
            NodeConfig::new(root.path().join("s"), "127.0.0.1:0".parse().unwrap()).sharing(share.clone()),
        ))
        .unwrap();

    let small = root.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "this test mounts a 1 MiB tmpfs and needs root");
    let result = Command::new(CANOPY)
        .args(["get", &hash, "--source", &node.peer_addr().to_string(), "-o"])
        .arg(small.join("f.bin"))
        .arg("--data-dir")
        .arg(root.path().join("client"))
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&small).status();
    runtime.block_on(node.shutdown());

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("No space left"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
