//! The start-up election as a user sees it: `canopy probe` and
//! `canopy run --role auto`, on loopback, with upload caps standing in for
//! slow links.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{run_node, text, CANOPY};

fn probe(args: &[&str], data: &std::path::Path) -> String {
    let output = Command::new(CANOPY)
        .arg("probe")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn the_first_node_of_a_network_becomes_a_supernode() {
    let root = tempfile::tempdir().unwrap();
    let report = probe(&[], &root.path().join("alone"));
    assert!(
        report.contains("would be a supernode because no supernode is known"),
        "{report}"
    );
}

#[test]
fn fast_nodes_stay_leaves_while_supernodes_have_room_and_slow_ones_always_do() {
    let root = tempfile::tempdir().unwrap();
    let supernode = run_node(&["--role", "supernode"], &root.path().join("sn"));

    let fast = probe(&["--bootstrap", &supernode.address], &root.path().join("fast"));
    assert!(fast.contains("reachable yes"), "{fast}");
    assert!(fast.contains("would be a leaf because it qualifies"), "{fast}");
    assert!(fast.contains("have room"), "{fast}");

    let slow = probe(
        &["--bootstrap", &supernode.address, "--max-upload-rate", "100K"],
        &root.path().join("slow"),
    );
    assert!(slow.contains("would be a leaf because upload 0."), "{slow}");
    assert!(slow.contains("< 5.0 Mbit/s"), "{slow}");

    let metered = probe(&["--never-supernode"], &root.path().join("metered"));
    assert!(
        metered.contains("would be a leaf because set never to become a supernode"),
        "{metered}"
    );
}

#[test]
fn run_auto_takes_the_elected_role() {
    let root = tempfile::tempdir().unwrap();
    let role_of = |args: &[&str], dir: &str| -> String {
        let mut child = Command::new(CANOPY)
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data-dir")
            .arg(root.path().join(dir))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let role = lines
            .map(Result::unwrap)
            .find(|line| line.starts_with("role: "))
            .expect("canopy run printed its role");
        let _ = child.kill();
        let _ = child.wait();
        role
    };
    assert!(role_of(&[], "first").starts_with("role: supernode"));
    let supernode = run_node(&["--role", "supernode"], &root.path().join("sn"));
    let joined = role_of(&["--bootstrap", &supernode.address], "second");
    assert!(joined.starts_with("role: leaf"), "{joined}");
}

/// On real shaped links (network namespaces and tbf, which need root): a
/// node behind 50 Mbit/s qualifies, one behind 1 Mbit/s is a leaf for its
/// upload. Skipped, saying so, when not run as root.
#[test]
fn shaped_links_elect_by_their_own_probes() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        eprintln!("skipped: shaped_links_elect_by_their_own_probes needs root for network namespaces and tc");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/election.sh");
    let output = Command::new("bash").arg(script).arg(CANOPY).output().unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(
        text(&output.stdout).contains("would be a leaf because upload 0."),
        "{}",
        text(&output.stdout)
    );
}
