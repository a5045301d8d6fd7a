//! The desktop app's download queue, details view, sortable tables and
//! settings in their units, against real `canopy run` processes on
//! loopback: first over the JSON API, then in Debian's Chromium
//! (node/tests/web/queue.spec.mjs), at 1280 and 400 px.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::app::{browser_tests, call, chromium, random_file, sharing_leaf, Process};

/// An app node (a leaf of `bootstrap`) with `extra` flags; its address and key.
fn app_with(bootstrap: &str, downloads: &Path, data: &Path, extra: &[&str]) -> (Process, String, String) {
    let mut args = vec![
        "--role",
        "leaf",
        "--bootstrap",
        bootstrap,
        "--ui-listen",
        "127.0.0.1:0",
        "--download-dir",
        downloads.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut process = Process::start(&args, data);
    let addr = process.app_address();
    let key = std::fs::read_to_string(data.join("api-key")).unwrap();
    (process, addr, key)
}

/// The list's states by name, in the list's (the queue's) order.
fn states(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls the download list until `done` holds for it; the list then.
fn wait_for_list(addr: &str, key: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = call(addr, key, "GET", "/api/downloads", "");
        if done(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: never happened; last {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn state_of<'a>(list: &'a Value, name: &str) -> &'a str {
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .and_then(|d| d["state"].as_str())
        .unwrap_or("missing")
}

/// With a limit of one, a second download waits `queued` until the first
/// pauses; moving one to the top makes it the next to start; a resumed
/// download queues when the limit is full; raising the limit starts the
/// queue and lowering it sends the lowest back, keeping their data; the
/// details give a block map that matches the bytes verified; caps are read
/// with their units. The queue survives a restart.
#[test]
fn the_queue_keeps_its_limit_and_order_over_the_api() {
    let temp = tempfile::tempdir().unwrap();
    let (shared, downloads) = (temp.path().join("shared"), temp.path().join("downloads"));
    std::fs::create_dir_all(&shared).unwrap();
    let one = random_file(&shared.join("one.bin"), 6_000_000, 31);
    let two = random_file(&shared.join("two.bin"), 6_000_000, 32);
    let three = random_file(&shared.join("three.bin"), 6_000_000, 33);

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    // Slow enough that nothing finishes during the test: 6 MB at 256 KiB/s.
    let sharer = sharing_leaf(
        &bootstrap,
        &shared,
        &["--max-upload-rate", "256K"],
        &temp.path().join("sharer"),
    );
    let data = temp.path().join("app");
    let (app, addr, key) = app_with(&bootstrap, &downloads, &data, &["--max-active-downloads", "1"]);
    let api = |method: &str, path: &str, body: &str| call(&addr, &key, method, path, body);
    let (_, settings) = api("GET", "/api/settings", "");
    assert_eq!(settings["in_force"]["max-active-downloads"], 1, "{settings}");

    for (hash, name) in [(&one, "one.bin"), (&two, "two.bin"), (&three, "three.bin")] {
        let body = format!("{{\"hash\": \"{hash}\", \"name\": \"{name}\"}}");
        let (status, answer) = api("POST", "/api/downloads", &body);
        assert_eq!(status, 201, "{answer}");
    }
    // The limit holds: one runs, two wait, in the order they came.
    let list = wait_for_list(&addr, &key, "one under way", |list| {
        list[0]["verified"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(
        states(&list),
        [
            ("one.bin".into(), "running".into()),
            ("two.bin".into(), "queued".into()),
            ("three.bin".into(), "queued".into())
        ],
        "{list}"
    );
    // Moves: three to the top, then down one; two to the bottom and back.
    let moved = |hash: &str, to: &str| {
        let (status, answer) = api("POST", &format!("/api/downloads/{hash}/{to}"), "");
        assert_eq!(status, 200, "{to}: {answer}");
        let (_, list) = api("GET", "/api/downloads", "");
        states(&list)
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    assert_eq!(moved(&three, "top"), ["three.bin", "one.bin", "two.bin"]);
    assert_eq!(moved(&three, "down"), ["one.bin", "three.bin", "two.bin"]);
    assert_eq!(moved(&two, "up"), ["one.bin", "two.bin", "three.bin"]);
    assert_eq!(moved(&three, "top"), ["three.bin", "one.bin", "two.bin"]);
    assert_eq!(moved(&one, "bottom"), ["three.bin", "two.bin", "one.bin"]);
    assert_eq!(api("POST", &format!("/api/downloads/{one}/sideways"), "").0, 404);
    // A move does not stop what runs: one still runs, at the bottom.
    let (_, list) = api("GET", "/api/downloads", "");
    assert_eq!(state_of(&list, "one.bin"), "running", "{list}");

    // Pausing it frees the place: the top of the queue (three) starts,
    // not two, which came first.
    assert_eq!(api("POST", &format!("/api/downloads/{one}/pause"), "").0, 200);
    let list = wait_for_list(&addr, &key, "three starts after one pauses", |list| {
        state_of(list, "one.bin") == "paused" && state_of(list, "three.bin") == "running"
    });
    assert_eq!(state_of(&list, "two.bin"), "queued", "{list}");
    // The paused one's block map matches what it verified.
    let (status, details) = api("GET", &format!("/api/downloads/{one}/details"), "");
    assert_eq!(status, 200, "{details}");
    let blocks = &details["blocks"];
    let verified = details["verified"].as_u64().unwrap();
    assert!(verified > 0, "{details}");
    assert_eq!(blocks["verified_bytes"].as_u64(), Some(verified), "{details}");
    assert_eq!(
        blocks["count"].as_u64(),
        Some(6_000_000u64.div_ceil(65_536)),
        "{details}"
    );
    // Base64 of one bit a block: 92 blocks are 12 bytes, 16 characters.
    assert_eq!(blocks["have"].as_str().map(str::len), Some(16), "{details}");
    // The running one's details list its source, connected directly.
    let deadline = Instant::now() + Duration::from_secs(20);
    let details = loop {
        let (_, d) = api("GET", &format!("/api/downloads/{three}/details"), "");
        if d["sources"].as_array().is_some_and(|s| !s.is_empty()) && d["blocks"].is_object() {
            break d;
        }
        assert!(Instant::now() < deadline, "three's source never listed: {d}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let source = &details["sources"][0];
    assert!(
        source["state"].is_string() && source["bytes"].is_u64(),
        "{details}"
    );
    assert!(details["hash"] == three.as_str(), "{details}");
    // Resume while the limit is full: queued, not running.
    let (status, answer) = api("POST", &format!("/api/downloads/{one}/resume"), "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "queued", "{answer}");
    // Pausing a queued one takes it out of the queue; resume puts it back.
    assert_eq!(api("POST", &format!("/api/downloads/{two}/pause"), "").0, 200);
    let (_, list) = api("GET", "/api/downloads", "");
    assert_eq!(state_of(&list, "two.bin"), "paused", "{list}");
    assert_eq!(api("POST", &format!("/api/downloads/{two}/resume"), "").0, 200);
    let (status, answer) = api("POST", &format!("/api/downloads/{three}/resume"), "");
    assert_eq!(status, 409, "a running download cannot be resumed: {answer}");

    // Settings: the caps in their units, the limit at once.
    let (status, answer) = api(
        "PUT",
        "/api/settings",
        "{\"max-download-rate\": \"2 MiB/s\", \"max-upload-rate\": \"500 KiB/s\", \"max-active-downloads\": 3}",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["in_force"]["max-download-rate"], 2_097_152, "{answer}");
    assert_eq!(answer["in_force"]["max-upload-rate"], 512_000, "{answer}");
    assert_eq!(answer["restart_needed"], serde_json::json!([]), "{answer}");
    let saved = std::fs::read_to_string(data.join("ui-settings.toml")).unwrap();
    assert!(saved.contains("max-download-rate = 2097152"), "{saved}");
    assert!(saved.contains("max-active-downloads = 3"), "{saved}");
    let (status, answer) = api("PUT", "/api/settings", "{\"max-download-rate\": \"quick\"}");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("max-download-rate"),
        "{answer}"
    );
    assert_eq!(
        api("PUT", "/api/settings", "{\"max-active-downloads\": 0}").0,
        400
    );
    // From its first report, the resumed one shows what it had verified
    // (it used to show 0 until a source had proved the size again).
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let (_, list) = api("GET", "/api/downloads", "");
        let one = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "one.bin")
            .unwrap()
            .clone();
        let shown = one["verified"].as_u64().unwrap();
        assert!(
            shown >= verified,
            "resumed, one shows {shown} of the {verified} verified: {one}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_list(&addr, &key, "all three run under a limit of 3", |list| {
        states(list).iter().all(|(_, state)| state == "running")
    });
    // Lowered to 1: the top one keeps running, the others go back to the
    // queue with what they verified.
    let (status, _) = api("PUT", "/api/settings", "{\"max-active-downloads\": 1}");
    assert_eq!(status, 200);
    let list = wait_for_list(&addr, &key, "back to one running", |list| {
        states(list).iter().filter(|(_, s)| s == "running").count() == 1
            && states(list).iter().filter(|(_, s)| s == "queued").count() == 2
    });
    assert_eq!(
        state_of(&list, "three.bin"),
        "running",
        "the top one runs: {list}"
    );
    // The queue is saved: a restarted app shows the same order and states
    // (what was running resumes first).
    let saved = std::fs::read_to_string(data.join("downloads.json")).unwrap();
    assert!(saved.contains("\"queued\""), "{saved}");
    drop(app);
    let (_app, addr, key) = app_with(&bootstrap, &downloads, &data, &[]);
    let list = wait_for_list(&addr, &key, "the queue after a restart", |list| {
        list.as_array().is_some_and(|l| l.len() == 3) && state_of(list, "three.bin") == "running"
    });
    let names: Vec<String> = states(&list).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["three.bin", "two.bin", "one.bin"], "{list}");
    let (_, settings) = call(&addr, &key, "GET", "/api/settings", "");
    assert_eq!(settings["in_force"]["max-active-downloads"], 1, "{settings}");
    drop((supernode, sharer));
}

/// The queue, the details view, sorting and filtering, the settings'
/// units and a narrow window, in Chromium (node/tests/web/queue.spec.mjs).
/// Screenshots go to $CANOPY_SCREENSHOTS when it is set.
#[test]
fn queue_details_and_sorting_in_a_browser() {
    let web = browser_tests();
    let temp = tempfile::tempdir().unwrap();
    let (shared, downloads) = (temp.path().join("shared"), temp.path().join("downloads"));
    std::fs::create_dir_all(&shared).unwrap();
    // Three sizes, so sorting by size has an order to find.
    let alpha = random_file(&shared.join("queue-alpha.bin"), 9_000_000, 41);
    let bravo = random_file(&shared.join("queue-bravo.bin"), 7_000_000, 42);
    let charlie = random_file(&shared.join("queue-charlie.bin"), 5_000_000, 43);

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    let sharer = sharing_leaf(
        &bootstrap,
        &shared,
        &["--max-upload-rate", "300K"],
        &temp.path().join("sharer"),
    );
    let data = temp.path().join("app");
    let (_app, addr, _key) = app_with(&bootstrap, &downloads, &data, &["--max-active-downloads", "1"]);
    let started = Instant::now();
    let output = Command::new("node")
        .arg("queue.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_UI_URL", format!("http://{addr}/"))
        .env("CANOPY_ALPHA", &alpha)
        .env("CANOPY_BRAVO", &bravo)
        .env("CANOPY_CHARLIE", &charlie)
        .env(
            "CANOPY_SCREENSHOTS",
            std::env::var("CANOPY_SCREENSHOTS").unwrap_or_default(),
        )
        .env("CHROMIUM", chromium())
        .output()
        .expect("node runs the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n(the script took {:?})", started.elapsed());
    assert!(
        output.status.success(),
        "the browser script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for step in [
        "loaded",
        "results-sorted",
        "queued",
        "moved",
        "next-started",
        "details",
        "resume-queues",
        "settings",
        "downloads-sorted",
        "narrow",
    ] {
        assert!(
            stdout.contains(&format!("{{\"step\":\"{step}\"")),
            "step {step} missing:\n{stdout}"
        );
    }
    // The settings page stored the cap in bytes per second.
    let saved = std::fs::read_to_string(data.join("ui-settings.toml")).unwrap();
    assert!(saved.contains("max-download-rate = 2097152"), "{saved}");
    assert!(saved.contains("max-active-downloads = 2"), "{saved}");
    drop((supernode, sharer));
}

/// Groups in the app (node/tests/web/groups.spec.mjs): made, listed with
/// the restart they need, their invite shown and copied, and joined from
/// an invite made by `canopy group new` elsewhere; bad names and invites
/// are refused. The API lists them; the files are those `canopy run` reads.
#[test]
fn groups_are_made_and_joined_in_the_app() {
    let web = browser_tests();
    let temp = tempfile::tempdir().unwrap();
    // An invite from another machine's data folder.
    let made = Command::new(support::CANOPY)
        .args(["group", "new", "friends", "--host", "192.0.2.7", "--data-dir"])
        .arg(temp.path().join("elsewhere"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let printed = String::from_utf8_lossy(&made.stdout).into_owned();
    let invite = printed
        .lines()
        .find(|line| line.starts_with("canopy-group:friends?"))
        .unwrap_or_else(|| panic!("no invite in {printed}"))
        .to_string();

    // The app runs on a supernode with one leaf, whose Status must count
    // that leaf among its connections.
    let data = temp.path().join("app");
    let mut app = Process::start(
        &[
            "--role",
            "supernode",
            "--ui-listen",
            "127.0.0.1:0",
            "--download-dir",
            temp.path().join("downloads").to_str().unwrap(),
        ],
        &data,
    );
    let app_peer = app.peer_address();
    let addr = app.app_address();
    let key = std::fs::read_to_string(data.join("api-key")).unwrap();
    let shared = temp.path().join("leaf-files");
    std::fs::create_dir_all(&shared).unwrap();
    let leaf = sharing_leaf(&app_peer, &shared, &[], &temp.path().join("leaf"));
    let output = Command::new("node")
        .arg("groups.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_UI_URL", format!("http://{addr}/"))
        .env("CANOPY_INVITE", &invite)
        .env(
            "CANOPY_SCREENSHOTS",
            std::env::var("CANOPY_SCREENSHOTS").unwrap_or_default(),
        )
        .env("CHROMIUM", chromium())
        .output()
        .expect("node runs the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for step in [
        "connections",
        "empty",
        "bad-name",
        "created",
        "bad-invite",
        "joined",
        "narrow",
    ] {
        assert!(
            stdout.contains(&format!("{{\"step\":\"{step}\"")),
            "step {step} missing:\n{stdout}"
        );
    }
    let (status, listed) = call(&addr, &key, "GET", "/api/groups", "");
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["family", "friends"], "{listed}");
    assert!(
        listed["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["restart_needed"] == true),
        "{listed}"
    );
    // What `canopy run` reads at its next start: the group's settings, with
    // the member from the invite to join through, and its key.
    let friends = std::fs::read_to_string(data.join("networks/friends/group.toml")).unwrap();
    assert!(friends.contains("@192.0.2.7:"), "{friends}");
    assert!(data.join("networks/family/network.key").exists());
    // The API refuses what the page must not send.
    assert_eq!(
        call(&addr, &key, "POST", "/api/groups", "{\"name\": \"family\"}").0,
        409
    );
    assert_eq!(
        call(&addr, &key, "POST", "/api/groups", "{\"name\": \"a/b\"}").0,
        400
    );
    let long = format!("{{\"invite\": \"canopy-group:x?key={}\"}}", "a".repeat(5000));
    assert_eq!(call(&addr, &key, "POST", "/api/groups/join", &long).0, 400);
    assert_eq!(call(&addr, &key, "GET", "/api/groups/nobody/invite", "").0, 404);
    drop((app, leaf));
}
