//! The `canopy` binary as a user runs it: real processes, real files, exit
//! codes as documented in `canopy get --help`.

mod support;

use std::time::Duration;

use support::{canopy, run_node, text};

#[test]
fn id_is_stable_and_the_key_private() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let first = canopy(&["id", "--data-dir", dir]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let id = text(&first.stdout).trim().to_string();
    assert_eq!(id.len(), 52, "{id}");
    assert_eq!(text(&canopy(&["id", "--data-dir", dir]).stdout).trim(), id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn get_fetches_from_a_running_node_and_reports_failures_by_exit_code() {
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(share.join("song.ogg"), &content).unwrap();
    let hash = blake3::hash(&content).to_hex().to_string();

    let node = run_node(&["--share", share.to_str().unwrap()], &root.path().join("node"));
    let client_data = root.path().join("client");
    let client_data = client_data.to_str().unwrap();
    let output = root.path().join("fetched.ogg");
    let output_arg = output.to_str().unwrap();

    let ok = canopy(&[
        "get",
        &hash,
        "--from",
        &node.address,
        "-o",
        output_arg,
        "--data-dir",
        client_data,
    ]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(std::fs::read(&output).unwrap(), content);
    assert!(text(&ok.stdout).contains(&hash));

    // Fetching again onto the same finished file is fine; onto another
    // file it is refused unless --force says so.
    let args = [
        "get",
        &hash,
        "--from",
        &node.address,
        "-o",
        output_arg,
        "--data-dir",
        client_data,
    ];
    let again = canopy(&args);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("already complete"),
        "{}",
        text(&again.stdout)
    );
    // Even with its only source gone: the file is verified on disk, nothing
    // is fetched (a port nobody listens on stands for the departed source).
    let (id, _) = node.address.split_once('@').unwrap();
    let departed = format!("{id}@127.0.0.1:9");
    let offline = canopy(&[
        "get",
        &hash,
        "--from",
        &departed,
        "-o",
        output_arg,
        "--data-dir",
        client_data,
        "--json",
    ]);
    assert!(offline.status.success(), "{}", text(&offline.stderr));
    let last: serde_json::Value =
        serde_json::from_str(text(&offline.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["already_complete"], true);
    assert_eq!(last["received"], 0);
    let precious = root.path().join("precious.txt");
    std::fs::write(&precious, b"my own words").unwrap();
    let over = [
        "get",
        &hash,
        "--from",
        &node.address,
        "-o",
        precious.to_str().unwrap(),
        "--data-dir",
        client_data,
    ];
    let refused = canopy(&over);
    assert_eq!(refused.status.code(), Some(6), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--force"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read(&precious).unwrap(), b"my own words");
    let mut forced = over.to_vec();
    forced.push("--force");
    assert!(canopy(&forced).status.success());
    assert_eq!(std::fs::read(&precious).unwrap(), content);

    let unknown = blake3::hash(b"nobody has this").to_hex().to_string();
    let missing_output = root.path().join("missing.ogg");
    let missing_args = [
        "get",
        &unknown,
        "--from",
        &node.address,
        "-o",
        missing_output.to_str().unwrap(),
        "--data-dir",
        client_data,
    ];
    let missing = canopy(&missing_args);
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("does not share"));
    // With --json the last line says the same, with the exit code the
    // process ends with; so does an error before any download starts.
    let missing_json = canopy(&[&missing_args[..], &["--json"]].concat());
    std::fs::write(root.path().join("mine.txt"), b"not the song").unwrap();
    let precious_json = canopy(&[
        "get",
        &hash,
        "--from",
        &node.address,
        "-o",
        root.path().join("mine.txt").to_str().unwrap(),
        "--data-dir",
        client_data,
        "--json",
    ]);
    for (run, code) in [(&missing_json, 3), (&precious_json, 6)] {
        assert_eq!(run.status.code(), Some(code), "{}", text(&run.stderr));
        let last: serde_json::Value =
            serde_json::from_str(text(&run.stdout).lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "error", "{}", text(&run.stdout));
        assert_eq!(last["exit_code"], code, "{}", text(&run.stdout));
    }
    assert_eq!(
        text(&missing.stderr).lines().count(),
        1,
        "one-line error: {}",
        text(&missing.stderr)
    );

    let (_, addr) = node.address.split_once('@').unwrap();
    let stranger_data = root.path().join("stranger");
    let other_id = text(&canopy(&["id", "--data-dir", stranger_data.to_str().unwrap()]).stdout)
        .trim()
        .to_string();
    let impostor = format!("{other_id}@{addr}");
    let wrong = canopy(&[
        "get",
        &hash,
        "--from",
        &impostor,
        "-o",
        root.path().join("wrong.ogg").to_str().unwrap(),
        "--data-dir",
        client_data,
    ]);
    assert_eq!(wrong.status.code(), Some(4), "{}", text(&wrong.stderr));

    let unwritable = root.path().join("no/such/folder/out");
    let local = canopy(&[
        "get",
        &hash,
        "--from",
        &node.address,
        "-o",
        unwritable.to_str().unwrap(),
        "--data-dir",
        client_data,
    ]);
    assert_eq!(local.status.code(), Some(6), "{}", text(&local.stderr));
    assert!(
        text(&local.stderr).contains("cannot write"),
        "{}",
        text(&local.stderr)
    );
}

#[test]
fn unreachable_peer_and_bad_arguments_fail_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let other = data.path().join("other");
    let id = text(&canopy(&["id", "--data-dir", other.to_str().unwrap()]).stdout)
        .trim()
        .to_string();
    // Nothing answers on this port: the connect timeout ends the attempt.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("{id}@{}", silent.local_addr().unwrap());
    let hash = blake3::hash(b"x").to_hex().to_string();
    let started = std::time::Instant::now();
    let unreachable = canopy(&[
        "get",
        &hash,
        "--from",
        &target,
        "--data-dir",
        dir,
        "-o",
        data.path().join("never.bin").to_str().unwrap(),
    ]);
    assert_eq!(
        unreachable.status.code(),
        Some(4),
        "{}",
        text(&unreachable.stderr)
    );
    assert!(
        text(&unreachable.stderr).contains("unreachable"),
        "{}",
        text(&unreachable.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    // Naming this very node as the source is explained, not attempted.
    let me = text(&canopy(&["id", "--data-dir", dir]).stdout)
        .trim()
        .to_string();
    let myself = format!("{me}@{}", silent.local_addr().unwrap());
    let own = canopy(&[
        "get",
        &hash,
        "--source",
        &myself,
        "--data-dir",
        dir,
        "-o",
        data.path().join("mine.bin").to_str().unwrap(),
    ]);
    assert_eq!(own.status.code(), Some(4));
    assert!(
        text(&own.stderr).contains("this node itself"),
        "{}",
        text(&own.stderr)
    );

    let bad_hash = canopy(&["get", "abc", "--from", &target]);
    assert_eq!(bad_hash.status.code(), Some(2));
    assert!(
        text(&bad_hash.stderr).contains("64 hex"),
        "{}",
        text(&bad_hash.stderr)
    );
    let bad_peer = canopy(&["get", &hash, "--from", "127.0.0.1:4000"]);
    assert_eq!(bad_peer.status.code(), Some(2));
    assert!(
        text(&bad_peer.stderr).contains("PEERID@HOST:PORT"),
        "{}",
        text(&bad_peer.stderr)
    );
}

#[test]
fn help_documents_exit_codes() {
    let help = canopy(&["get", "--help"]);
    let help = text(&help.stdout);
    for code in [
        "3  no source shares",
        "4  network",
        "5  every source sent data",
        "6  local",
    ] {
        assert!(help.contains(code), "missing {code:?} in:\n{help}");
    }
}

#[test]
fn demo_shares_fetches_and_verifies() {
    let demo = canopy(&["demo", "--size", "3000000"]);
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    let out = text(&demo.stdout);
    assert!(out.contains("verified yes"), "{out}");
}

/// Supernodes remembered from earlier runs that are gone (their packets
/// vanish) must not hold up a download from a source given by hand: it
/// starts at once, and the supernodes are asked meanwhile (issue 20).
#[test]
fn dead_remembered_supernodes_do_not_delay_a_download_from_a_given_source() {
    let data = tempfile::tempdir().unwrap();
    let share = data.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(share.join("f.bin"), &content).unwrap();
    let node = run_node(&["--share", share.to_str().unwrap()], &data.path().join("sharer"));
    let hash = canopy_common::proto::ContentHash::of(&content).to_hex();

    // Four supernodes that never answer: sockets that read nothing.
    let client = data.path().join("client");
    let black_holes: Vec<std::net::UdpSocket> = (0..4)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for (n, hole) in black_holes.iter().enumerate() {
        let id = canopy_common::proto::PeerId([n as u8 + 1; 32]);
        let gone = canopy_common::proto::PeerAddr::new(id, hole.local_addr().unwrap());
        canopy_node::hostcache::remember(&client, gone);
    }
    let started = std::time::Instant::now();
    let fetched = canopy(&[
        "get",
        &hash,
        "--source",
        &node.address,
        "-o",
        data.path().join("out.bin").to_str().unwrap(),
        "--data-dir",
        client.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    eprintln!("fetched in {took:?} with 4 dead supernodes remembered");
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    assert!(std::fs::read(data.path().join("out.bin")).unwrap() == content);
    // Before, each dead supernode was waited out in turn (~20 s in all).
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

/// The exit codes of a `get` with nothing to fetch from, one by one.
#[test]
fn a_get_with_no_source_says_why_by_its_exit_code() {
    let data = tempfile::tempdir().unwrap();
    let hash = canopy_common::proto::ContentHash::of(b"nowhere").to_hex();
    let dir = |name: &str| data.path().join(name).to_string_lossy().into_owned();

    // No --source and no supernode known: a usage error.
    let alone = canopy(&["get", &hash, "--data-dir", &dir("alone")]);
    assert_eq!(alone.status.code(), Some(2), "{}", text(&alone.stderr));
    assert!(
        text(&alone.stderr).contains("--bootstrap"),
        "{}",
        text(&alone.stderr)
    );
    // The same for search.
    let lost = canopy(&["search", "anything", "--data-dir", &dir("alone")]);
    assert_eq!(lost.status.code(), Some(2), "{}", text(&lost.stderr));
    assert!(
        text(&lost.stderr).contains("--bootstrap"),
        "{}",
        text(&lost.stderr)
    );

    // The only supernode is gone: a network failure, not "nobody has it".
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let gone = format!(
        "{}@{}",
        canopy_common::proto::PeerId([9; 32]),
        hole.local_addr().unwrap()
    );
    let down = canopy(&["get", &hash, "--bootstrap", &gone, "--data-dir", &dir("down")]);
    assert_eq!(down.status.code(), Some(4), "{}", text(&down.stderr));
    assert!(
        text(&down.stderr).contains("no supernode ran the search"),
        "{}",
        text(&down.stderr)
    );

    // A supernode answers that nobody has it.
    let supernode = run_node(&["--role", "supernode"], &data.path().join("sn"));
    let missing = canopy(&[
        "get",
        &hash,
        "--bootstrap",
        &supernode.address,
        "--data-dir",
        &dir("asker"),
    ]);
    assert_eq!(missing.status.code(), Some(3), "{}", text(&missing.stderr));
}

/// Two nodes on one data folder would share an identity and undo each
/// other's files: the second is refused, told which process has it.
#[test]
fn a_second_node_on_a_data_folder_is_refused_naming_the_first() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("node");
    let first = run_node(&[], &folder);
    let second = canopy(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--no-ui",
        "--data-dir",
        folder.to_str().unwrap(),
    ]);
    assert!(!second.status.success());
    let said = text(&second.stderr);
    assert!(said.contains(&format!("process {}", first.child.id())), "{said}");
    assert!(said.contains("--data-dir"), "{said}");
    // The first keeps running, and its files are still there.
    assert!(folder.join("control.addr").exists());
}

/// `get --json` ends with a JSON error line even when the command line
/// itself is refused.
#[test]
fn a_bad_argument_to_get_json_still_ends_with_a_json_error_line() {
    let bad = canopy(&["get", "zzz", "--json"]);
    assert_eq!(bad.status.code(), Some(2));
    let last = text(&bad.stdout).lines().last().unwrap_or_default().to_string();
    let line: serde_json::Value = serde_json::from_str(&last).expect("a JSON line");
    assert_eq!(line["event"], "error");
    assert_eq!(line["exit_code"], 2);
    assert!(line["message"].as_str().unwrap().contains("64 hex"), "{line}");
}

/// `get --wait` keeps asking while the network knows no source: a sharer
/// that comes online a few seconds later is found, and the file arrives.
/// Without `--wait` the same get gives up at once with exit code 3.
#[test]
fn get_wait_keeps_asking_until_a_source_appears() {
    let data = tempfile::tempdir().unwrap();
    let dir = |name: &str| data.path().join(name);
    let content = b"worth waiting for, a file that comes online late".repeat(2000);
    let hash = canopy_common::proto::ContentHash::of(&content).to_hex();
    let supernode = run_node(&["--role", "supernode", "--no-ui"], &dir("sn"));
    let output = dir("late.bin");
    let impatient = canopy(&[
        "get",
        &hash,
        "--bootstrap",
        &supernode.address,
        "-o",
        output.to_str().unwrap(),
        "--data-dir",
        dir("impatient").to_str().unwrap(),
    ]);
    assert_eq!(impatient.status.code(), Some(3), "{}", text(&impatient.stderr));

    let waiting = support::spawn_canopy(&[
        "get",
        &hash,
        "--bootstrap",
        &supernode.address,
        "--wait",
        "60s",
        "--json",
        "-o",
        output.to_str().unwrap(),
        "--data-dir",
        dir("patient").to_str().unwrap(),
    ]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let share = dir("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("late.bin"), &content).unwrap();
    let _sharer = run_node(
        &[
            "--role",
            "leaf",
            "--no-ui",
            "--bootstrap",
            &supernode.address,
            "--share",
            share.to_str().unwrap(),
        ],
        &dir("sharer"),
    );
    let done = waiting.wait_with_output().unwrap();
    let events = text(&done.stdout);
    assert!(done.status.success(), "{events}\n{}", text(&done.stderr));
    assert!(
        events.contains("\"event\":\"waiting\""),
        "it said it was waiting: {events}"
    );
    assert_eq!(std::fs::read(&output).unwrap(), content);
}

/// A running download keeps looking while it is short of sources: a
/// sharer that comes online after the download started joins it and
/// delivers part of the file (here the first source is slow on purpose).
#[test]
fn a_source_that_appears_after_the_start_joins_the_download() {
    let data = tempfile::tempdir().unwrap();
    let dir = |name: &str| data.path().join(name);
    let content: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hash = canopy_common::proto::ContentHash::of(&content).to_hex();
    for folder in ["slow-share", "late-share"] {
        std::fs::create_dir_all(dir(folder)).unwrap();
        std::fs::write(dir(folder).join("joined.bin"), &content).unwrap();
    }
    let supernode = run_node(&["--role", "supernode", "--no-ui"], &dir("sn"));
    // Known only by the command line, and capped at 100 KiB/s: alone, it
    // would take half a minute.
    let slow = run_node(
        &[
            "--role",
            "leaf",
            "--no-ui",
            "--max-upload-rate",
            "100K",
            "--share",
            dir("slow-share").to_str().unwrap(),
        ],
        &dir("slow"),
    );
    let output = dir("joined.bin");
    let get = support::spawn_canopy(&[
        "get",
        &hash,
        "--source",
        &slow.address,
        "--bootstrap",
        &supernode.address,
        "--json",
        "-o",
        output.to_str().unwrap(),
        "--data-dir",
        dir("getter").to_str().unwrap(),
    ]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let late = run_node(
        &[
            "--role",
            "leaf",
            "--no-ui",
            "--bootstrap",
            &supernode.address,
            "--share",
            dir("late-share").to_str().unwrap(),
        ],
        &dir("late"),
    );
    let done = get.wait_with_output().unwrap();
    let events = text(&done.stdout);
    assert!(done.status.success(), "{events}\n{}", text(&done.stderr));
    assert_eq!(std::fs::read(&output).unwrap(), content);
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    let late_id = late.address.split('@').next().unwrap();
    let delivered = last["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|source| source["peer"].as_str().unwrap_or_default().starts_with(late_id))
        .and_then(|source| source["bytes"].as_u64())
        .unwrap_or(0);
    assert!(delivered > 0, "the late sharer delivered nothing: {last}");
}

/// Ctrl-C during a download: exit code 130, the verified part kept, and
/// the same command run again resumes it and finishes.
#[test]
fn an_interrupted_get_exits_130_and_resumes() {
    let data = tempfile::tempdir().unwrap();
    let dir = |name: &str| data.path().join(name);
    let content: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    let hash = canopy_common::proto::ContentHash::of(&content).to_hex();
    std::fs::create_dir_all(dir("share")).unwrap();
    std::fs::write(dir("share").join("cut.bin"), &content).unwrap();
    // Slow enough to interrupt mid-way.
    let source = run_node(
        &[
            "--role",
            "leaf",
            "--no-ui",
            "--max-upload-rate",
            "300K",
            "--share",
            dir("share").to_str().unwrap(),
        ],
        &dir("source"),
    );
    let output = dir("cut.bin");
    let args = |json: bool| {
        let mut command = std::process::Command::new(support::CANOPY);
        command
            .args(["get", &hash, "--source", &source.address, "-o"])
            .arg(&output)
            .arg("--data-dir")
            .arg(dir("getter"));
        if json {
            command.arg("--json");
        }
        command
    };
    let first = args(false)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let part = dir("cut.bin.part");
    let started = std::time::Instant::now();
    while !part.exists() && started.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let interrupted = first.wait_with_output().unwrap();
    assert_eq!(
        interrupted.status.code(),
        Some(130),
        "{}",
        text(&interrupted.stderr)
    );
    assert!(
        text(&interrupted.stderr).contains("resume"),
        "{}",
        text(&interrupted.stderr)
    );
    assert!(part.exists(), "the verified part is kept");

    let again = args(true).output().unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    let last: serde_json::Value = serde_json::from_str(text(&again.stdout).lines().last().unwrap()).unwrap();
    assert!(last["resumed"].as_u64().unwrap_or(0) > 0, "it resumed: {last}");
    assert_eq!(std::fs::read(&output).unwrap(), content);
}

/// `canopy vote` and `canopy trust` with no node running: the vote is
/// signed and kept in the data folder, a publisher trusted is listed, and
/// a bad hash or verdict is a clear error.
#[test]
fn votes_and_trusted_publishers_are_kept_in_the_data_folder() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let hash = "ab".repeat(32);
    let voted = canopy(&["vote", &hash, "down", "--data-dir", dir]);
    assert!(voted.status.success(), "{}", text(&voted.stderr));
    assert!(
        text(&voted.stdout).contains("voted down (a fake)"),
        "{}",
        text(&voted.stdout)
    );
    assert!(data.path().join("votes.bin").exists());
    // As a link too, and the later vote replaces the earlier.
    let link = format!("canopy:{hash}?name=song.mp3");
    let again = canopy(&["vote", &link, "up", "--data-dir", dir]);
    assert!(again.status.success(), "{}", text(&again.stderr));

    let bad = canopy(&["vote", "not-a-hash", "up", "--data-dir", dir]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("neither a content hash"),
        "{}",
        text(&bad.stderr)
    );
    let bad = canopy(&["vote", &hash, "maybe", "--data-dir", dir]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("is no verdict"),
        "{}",
        text(&bad.stderr)
    );

    let other = tempfile::tempdir().unwrap();
    let publisher = text(&canopy(&["id", "--data-dir", other.path().to_str().unwrap()]).stdout)
        .trim()
        .to_string();
    assert!(canopy(&["trust", &publisher, "--data-dir", dir]).status.success());
    let listed = canopy(&["trust", "--data-dir", dir]);
    assert!(
        text(&listed.stdout).contains(&publisher),
        "{}",
        text(&listed.stdout)
    );
    assert!(canopy(&["trust", "--remove", &publisher, "--data-dir", dir])
        .status
        .success());
    let listed = canopy(&["trust", "--data-dir", dir]);
    assert!(
        text(&listed.stdout).contains("no publisher is trusted"),
        "{}",
        text(&listed.stdout)
    );
}

/// `canopy run --open` on a data folder a node already runs with (a menu
/// entry clicked again) opens that node's page and exits 0.
#[test]
fn run_open_again_opens_the_running_apps_page() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("node");
    let _first = run_node(&["--ui-listen", "127.0.0.1:0"], &folder);
    let served = std::fs::read_to_string(folder.join("ui.addr")).unwrap();
    // A stand-in for the desktop's opener, writing down what it was given.
    let bin = data.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let opened = data.path().join("opened.txt");
    let opener = bin.join("xdg-open");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\necho \"$1\" > '{}'\n", opened.display()),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let again = std::process::Command::new(support::CANOPY)
        .args(["run", "--open", "--data-dir", folder.to_str().unwrap()])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    let url = format!("http://{}/", served.trim());
    assert!(text(&again.stdout).contains(&url), "{}", text(&again.stdout));
    for _ in 0..50 {
        if opened.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&opened).unwrap().trim(), url);
}
