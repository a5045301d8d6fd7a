//! What a supernode volunteer relies on, tested on real `canopy run`
//! processes: config files with errors a person can fix, the metrics
//! endpoint and `canopy status`, and a SIGTERM that re-homes the leaves.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{canopy, run_node, text};

/// Reads the metrics of the node with data folder `data` through `canopy status --json`.
fn metrics(data: &Path) -> Option<BTreeMap<String, f64>> {
    let output = canopy(&["status", "--json", "--data-dir", data.to_str().unwrap()]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("status --json prints JSON"))
}

fn wait_for_metric(
    data: &Path,
    what: &str,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(values) = metrics(data) {
            if check(&values) {
                return values;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn value(values: &BTreeMap<String, f64>, series: &str) -> f64 {
    values
        .get(series)
        .copied()
        .unwrap_or_else(|| panic!("no series {series} in {values:?}"))
}

#[test]
fn a_bad_config_file_names_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canopy.toml");
    std::fs::write(
        &config,
        "# a volunteer's settings\nmax-leaves = 200\nmax-upload-rates = \"2M\"\n",
    )
    .unwrap();
    let output = canopy(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let error = text(&output.stderr);
    assert!(error.contains("line 3"), "{error}");
    assert!(error.contains("max-upload-rates"), "{error}");
    assert!(error.contains("canopy.toml"), "{error}");

    std::fs::write(&config, "max-leaves = -5\n").unwrap();
    let output = canopy(&["run", "--config", config.to_str().unwrap()]);
    let error = text(&output.stderr);
    assert!(
        error.contains("line 1") && error.contains("max-leaves"),
        "{error}"
    );
}

#[test]
fn settings_come_from_the_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("supernode.toml");
    std::fs::write(
        &config,
        format!(
            "role = \"supernode\"\nmax-leaves = 7\nlisten = \"127.0.0.1:0\"\ndata-dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let node = run_node(
        &["--config", config.to_str().unwrap(), "--max-leaves", "9"],
        &data,
    );
    let values = wait_for_metric(&data, "the supernode's metrics", |_| true);
    assert_eq!(value(&values, "canopy_role{role=\"supernode\"}"), 1.0);
    assert_eq!(
        value(&values, "canopy_max_leaves"),
        9.0,
        "the flag wins over the file"
    );
    drop(node);
}

#[test]
fn metrics_move_with_traffic_and_sigterm_rehomes_the_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (first_data, second_data, leaf_data) = (
        dir.path().join("first"),
        dir.path().join("second"),
        dir.path().join("leaf"),
    );
    let first = run_node(&["--role", "supernode"], &first_data);
    let second = run_node(
        &["--role", "supernode", "--bootstrap", &first.address],
        &second_data,
    );
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(share.join("volunteer demo.bin"), &bytes).unwrap();
    // The leaf knows only the second supernode.
    let leaf = run_node(
        &[
            "--role",
            "leaf",
            "--supernodes",
            "1",
            "--share",
            share.to_str().unwrap(),
            "--bootstrap",
            &second.address,
        ],
        &leaf_data,
    );
    wait_for_metric(&second_data, "the leaf to join and publish", |m| {
        m.get("canopy_leaves") == Some(&1.0) && m.get("canopy_index_documents") == Some(&1.0)
    });
    wait_for_metric(&first_data, "the supernodes to link", |m| {
        m.get("canopy_neighbours") == Some(&1.0)
    });
    let before = metrics(&leaf_data).unwrap();
    assert_eq!(value(&before, "canopy_shared_files"), 1.0);
    assert_eq!(value(&before, "canopy_supernodes_joined"), 1.0);

    // A search through the first supernode crosses the overlay; a download
    // moves bytes out of the leaf.
    // (The index commits every 250 ms: a file is counted before it is searchable.)
    let found = (0..20).any(|_| {
        let search = canopy(&["search", "volunteer", "--json", "--bootstrap", &first.address]);
        search.status.success() || {
            std::thread::sleep(Duration::from_millis(250));
            false
        }
    });
    assert!(found, "the leaf's file is found across the overlay");
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let output = dir.path().join("fetched.bin");
    let get = canopy(&[
        "get",
        &hash,
        "--bootstrap",
        &first.address,
        "-o",
        output.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(std::fs::read(&output).unwrap(), bytes);
    let after = metrics(&leaf_data).unwrap();
    let uploaded =
        value(&after, "canopy_uploaded_bytes_total") - value(&before, "canopy_uploaded_bytes_total");
    assert!(uploaded >= bytes.len() as f64, "uploaded {uploaded}");
    assert!(value(&after, "canopy_requests_total") > value(&before, "canopy_requests_total"));
    let first_values = metrics(&first_data).unwrap();
    assert!(value(&first_values, "canopy_searches_total") >= 1.0);
    assert!(value(&first_values, "canopy_queries_forwarded_total") >= 1.0);
    let second_values = metrics(&second_data).unwrap();
    assert!(value(&second_values, "canopy_queries_received_total") >= 1.0);
    assert!(value(&second_values, "canopy_hits_total") >= 1.0);
    assert!(value(&second_values, "canopy_memory_resident_bytes") > 1e6);

    // SIGTERM to the leaf's supernode: it hands the leaf on before it exits.
    let started = Instant::now();
    let pid = second.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut second = second;
    let status = second.child.wait().unwrap();
    assert!(
        status.success(),
        "a SIGTERMed supernode exits cleanly: {status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "it exits promptly");
    assert!(
        !second_data.join("control.addr").exists(),
        "the address record is removed"
    );
    wait_for_metric(&first_data, "the leaf to re-home to the first supernode", |m| {
        m.get("canopy_leaves") == Some(&1.0) && m.get("canopy_index_documents") == Some(&1.0)
    });
    // Told where to go, the leaf moved within a few seconds, not an idle timeout later.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "re-homed in {:?}",
        started.elapsed()
    );
    drop(leaf);
    drop(first);
}

fn terminate(mut node: support::RunningNode) {
    let pid = node.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = node.child.wait().unwrap();
    assert!(status.success(), "exits cleanly on SIGTERM: {status:?}");
}

#[test]
fn a_restart_keeps_identity_and_caches_even_with_a_damaged_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (supernode_data, leaf_data) = (dir.path().join("supernode"), dir.path().join("leaf"));
    let supernode = run_node(&["--role", "supernode"], &supernode_data);
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("kept.txt"), b"hashed once").unwrap();
    let share = share.to_str().unwrap();
    let leaf = run_node(
        &[
            "--role",
            "leaf",
            "--share",
            share,
            "--bootstrap",
            &supernode.address,
        ],
        &leaf_data,
    );
    let first_address = leaf.address.clone();
    assert!(
        leaf.banner
            .iter()
            .any(|l| l.contains("1 hashed now, 0 from cache")),
        "{:?}",
        leaf.banner
    );
    wait_for_metric(&supernode_data, "the leaf to join", |m| {
        m.get("canopy_leaves") == Some(&1.0)
    });
    terminate(leaf);
    wait_for_metric(&supernode_data, "the leaf to leave", |m| {
        m.get("canopy_leaves") == Some(&0.0)
    });

    // Damage the supernode cache: the good line is kept, the rest reported and skipped.
    let cache = std::fs::read_dir(&leaf_data)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| std::fs::read_to_string(path).is_ok_and(|text| text.contains(&supernode.address)))
        .expect("the leaf remembered its supernode");
    let mut text = std::fs::read_to_string(&cache).unwrap();
    text.push_str("garbage that is no address\n\u{0}\u{1}\n");
    std::fs::write(&cache, text).unwrap();

    // No --bootstrap: it finds its supernode again from its cache.
    let again = run_node(&["--role", "leaf", "--share", share], &leaf_data);
    let id = |address: &str| address.split('@').next().unwrap().to_string();
    assert_eq!(id(&again.address), id(&first_address), "same identity");
    assert!(
        again
            .banner
            .iter()
            .any(|l| l.contains("0 hashed now, 1 from cache")),
        "{:?}",
        again.banner
    );
    wait_for_metric(&supernode_data, "the leaf to rejoin from its cache", |m| {
        m.get("canopy_leaves") == Some(&1.0)
    });
    drop(again);
    drop(supernode);
}
