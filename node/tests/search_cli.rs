//! Search and fetch as a user does it: `canopy run` processes, `canopy
//! search`, `canopy get` with the link it printed; and a leaf killed with
//! SIGKILL vanishing from results within the idle timeout.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use canopy_common::net::EndpointConfig;
use canopy_node::{Node, NodeConfig};
use canopy_supernode::SupernodeConfig;
use support::{run_node, run_node_on, CANOPY};

mod support;

fn canopy_in(args: &[&str], data: &Path) -> Output {
    Command::new(CANOPY)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

/// Runs `canopy search` until its JSON output satisfies `accept`.
fn search_until(
    words: &str,
    supernode: &str,
    data: &Path,
    accept: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = canopy_in(&["search", words, "--json", "--bootstrap", supernode], data);
        let hits: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if accept(&hits) {
            return hits;
        }
        assert!(
            Instant::now() < deadline,
            "search for {words:?} never satisfied the test: {hits:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn search_then_get_the_printed_link() {
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 249) as u8).collect();
    std::fs::write(share.join("Field Recording – Rain.flac"), &content).unwrap();

    let supernode = run_node(&["--role", "supernode"], &root.path().join("sn"));
    let _leaf = run_node(
        &[
            "--share",
            share.to_str().unwrap(),
            "--bootstrap",
            &supernode.address,
        ],
        &root.path().join("leaf"),
    );
    let client = root.path().join("client");
    let hits = search_until("rain recording", &supernode.address, &client, |hits| {
        !hits.is_empty()
    });
    assert_eq!(hits[0]["type"], "audio");
    assert_eq!(hits[0]["sources"], 1);
    let link = hits[0]["link"].as_str().unwrap().to_string();

    let table = canopy_in(&["search", "rain", "--bootstrap", &supernode.address], &client);
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("Field Recording"));
    let none = canopy_in(
        &["search", "nonexistentword", "--bootstrap", &supernode.address],
        &client,
    );
    assert_eq!(none.status.code(), Some(1));

    let out = root.path().join("rain.flac");
    let get = Command::new(CANOPY)
        .args(["get", &link, "-o"])
        .arg(&out)
        .arg("--data-dir")
        .arg(&client)
        .output()
        .unwrap();
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), content);

    // The supernode was remembered: a bare hash finds its sources through it.
    let hash = blake3::hash(&content).to_hex().to_string();
    let again = root.path().join("again.flac");
    let get = Command::new(CANOPY)
        .args(["get", &hash, "-o"])
        .arg(&again)
        .arg("--data-dir")
        .arg(&client)
        .output()
        .unwrap();
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(std::fs::read(&again).unwrap(), content);

    // One-shot commands ask and fetch without joining: the supernode saw
    // one leaf, the one that shares.
    let log = std::fs::read_to_string(root.path().join("sn.stderr")).unwrap();
    assert_eq!(log.matches("leaf joined").count(), 1, "{log}");
}

#[test]
fn a_killed_leaf_vanishes_within_the_idle_timeout() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir().unwrap();
    let idle = Duration::from_secs(2);
    let mut config = NodeConfig::new(root.path().join("sn"), "127.0.0.1:0".parse().unwrap());
    config.endpoint = EndpointConfig {
        idle_timeout: idle,
        keep_alive: Duration::from_millis(500),
        ..EndpointConfig::default()
    };
    config.supernode = Some(SupernodeConfig::for_this_machine(None));
    let supernode = runtime.block_on(Node::start(config)).unwrap();
    let address = supernode.peer_addr().to_string();

    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("ephemeral notes.txt"), b"here today").unwrap();
    let mut leaf = run_node(
        &["--share", share.to_str().unwrap(), "--bootstrap", &address],
        &root.path().join("leaf"),
    );
    let client = root.path().join("client");
    search_until("ephemeral", &address, &client, |hits| hits.len() == 1);

    // Healthy but quiet for longer than the idle timeout: still listed.
    std::thread::sleep(idle * 2);
    search_until("ephemeral", &address, &client, |hits| hits.len() == 1);

    leaf.child.kill().unwrap(); // SIGKILL: no goodbye
    leaf.child.wait().unwrap();
    let killed = Instant::now();
    search_until("ephemeral", &address, &client, |hits| hits.is_empty());
    let gone_after = killed.elapsed();
    assert!(
        gone_after < idle + Duration::from_secs(3),
        "still listed {gone_after:?} after the kill"
    );
    runtime.block_on(supernode.shutdown());
}

/// A supernode listening on `[::]` (the default) serves IPv4 and IPv6
/// peers at once: a leaf that joined over IPv6 and one that joined over
/// IPv4 are both found by one search, each listed at the address it came
/// from — the IPv4 one as plain IPv4, not the IPv4-mapped IPv6 form a
/// dual-stack socket shows it as — and `get` (also dual-stack) fetches
/// from each over its own family.
#[test]
fn a_dual_stack_supernode_serves_ipv4_and_ipv6_peers_together() {
    let root = tempfile::tempdir().unwrap();
    let supernode = run_node_on("[::]:0", &["--role", "supernode"], &root.path().join("sn"));
    let (id, port) = {
        let (id, addr) = supernode.address.split_once('@').unwrap();
        (id.to_string(), addr.rsplit(':').next().unwrap().to_string())
    };
    let over_v4 = format!("{id}@127.0.0.1:{port}");
    let over_v6 = format!("{id}@[::1]:{port}");
    let mut leaves = Vec::new();
    let mut files = Vec::new();
    for (family, listen, bootstrap, len) in [
        ("four", "127.0.0.1:0", &over_v4, 300_001u32),
        ("six", "[::1]:0", &over_v6, 300_002),
    ] {
        let share = root.path().join(format!("share-{family}"));
        std::fs::create_dir_all(&share).unwrap();
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ len as u8).collect();
        std::fs::write(share.join(format!("family {family}.bin")), &content).unwrap();
        leaves.push(run_node_on(
            listen,
            &["--share", share.to_str().unwrap(), "--bootstrap", bootstrap],
            &root.path().join(format!("leaf-{family}")),
        ));
        files.push((family, content));
    }
    let client = root.path().join("client");
    let hits = search_until("family", &over_v4, &client, |hits| hits.len() == 2);
    for (family, content) in &files {
        let hash = canopy_common::proto::ContentHash::of(content);
        assert!(
            hits.iter().any(|hit| hit["hash"] == hash.to_hex()),
            "{family}: {hits:?}"
        );
        let output = root.path().join(format!("got-{family}"));
        let got = canopy_in(
            &[
                "get",
                &hash.to_hex(),
                "--json",
                "--bootstrap",
                &over_v6,
                "-o",
                output.to_str().unwrap(),
            ],
            &root.path().join(format!("get-{family}")),
        );
        let stdout = String::from_utf8_lossy(&got.stdout);
        assert!(
            got.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(
            std::fs::read(&output).unwrap() == *content,
            "{family}: bytes differ"
        );
        let expected = match *family {
            "four" => "@127.0.0.1:",
            _ => "@[::1]:",
        };
        let done = stdout.lines().last().unwrap_or_default();
        assert!(done.contains(expected), "{family}: {done}");
        assert!(!done.contains("::ffff:"), "{family}: {done}");
    }
}

/// `canopy search --ranked` waits for the search and ranks for the user:
/// a file the user voted down (`canopy vote HASH down`) comes last and
/// says so, in the table and in JSON.
#[test]
fn a_ranked_search_puts_what_you_called_fake_last() {
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("Storm Sounds one.flac"), vec![1u8; 300_000]).unwrap();
    std::fs::write(share.join("Storm Sounds two.flac"), vec![2u8; 300_000]).unwrap();
    let supernode = run_node(&["--role", "supernode"], &root.path().join("sn"));
    let _leaf = run_node(
        &[
            "--share",
            share.to_str().unwrap(),
            "--bootstrap",
            &supernode.address,
        ],
        &root.path().join("leaf"),
    );
    let client = root.path().join("client");
    let hits = search_until("storm sounds", &supernode.address, &client, |hits| {
        hits.len() == 2
    });
    // Vote down whichever came first, so the ranking must move it.
    let fake = hits[0]["hash"].as_str().unwrap().to_string();
    let voted = canopy_in(&["vote", &fake, "down"], &client);
    assert!(
        voted.status.success(),
        "{}",
        String::from_utf8_lossy(&voted.stderr)
    );

    let output = canopy_in(
        &[
            "search",
            "storm sounds",
            "--ranked",
            "--json",
            "--bootstrap",
            &supernode.address,
        ],
        &client,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ranked: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(ranked.len(), 2, "{ranked:?}");
    assert_eq!(ranked[1]["hash"], fake.as_str(), "{ranked:?}");
    assert_eq!(ranked[1]["own"], "down");
    assert_eq!(ranked[1]["score"], -1.0);
    assert_eq!(ranked[0]["own"], serde_json::Value::Null);

    let table = canopy_in(
        &[
            "search",
            "storm sounds",
            "--ranked",
            "--bootstrap",
            &supernode.address,
        ],
        &client,
    );
    let text = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("RATING"), "{text}");
    assert!(
        lines[2].contains("you: fake") && !lines[1].contains("you: fake"),
        "{text}"
    );
}
