//! Play while downloading (`/api/play/HASH`, [`canopy_node::web::play`]):
//! a file not downloaded yet is fetched where the player reads first, and
//! every byte it is sent is verified. Real `canopy run` processes on
//! loopback; the player is Debian's Chromium (see `support::app`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::app::{
    blake3_of, browser_tests, call, chromium, random_file, sharing_leaf, start_app, wav_tone, Process,
};

/// The last megabyte of a 12 MB file, asked for before the download even
/// starts, arrives while most of the file is still missing: the download
/// fetched it first. The bytes are the file's.
#[test]
fn a_range_far_ahead_is_fetched_first_and_served_verified() {
    let temp = tempfile::tempdir().unwrap();
    let (shared, downloads) = (temp.path().join("shared"), temp.path().join("downloads"));
    std::fs::create_dir_all(&shared).unwrap();
    let size = 12_000_000u64;
    let hash = random_file(&shared.join("film.bin"), size as usize, 9);
    let original = std::fs::read(shared.join("film.bin")).unwrap();

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    // 1 MiB/s: the whole file takes about 12 s, its last megabyte one.
    let _sharer = sharing_leaf(
        &bootstrap,
        &shared,
        &["--max-upload-rate", "1M"],
        &temp.path().join("sharer"),
    );
    let app = start_app(&bootstrap, &downloads, &temp.path().join("app"));

    let tail = size - 1_000_000;
    let started = Instant::now();
    let (status, head, body) = get(
        &app.addr,
        &format!("/api/play/{hash}?key={}&name=film.bin", app.key),
        &format!("bytes={tail}-"),
    );
    let took = started.elapsed();
    let (_, list) = call(&app.addr, &app.key, "GET", "/api/downloads", "");
    let download = &list[0];
    println!("the tail took {took:?}; the download then: {download}");

    assert_eq!(status, 206, "{head}");
    assert!(
        head.contains(&format!("Content-Range: bytes {tail}-{}/{size}", size - 1)),
        "{head}"
    );
    assert!(
        body == original[tail as usize..],
        "the bytes served are the file's"
    );
    assert_eq!(download["state"], "running", "the player added the download");
    let verified = download["verified"].as_u64().unwrap();
    assert!(
        verified < size / 2,
        "the tail came first: only {verified} of {size} bytes were verified when it had all arrived"
    );

    app.wait_done(Duration::from_secs(60));
    assert_eq!(blake3_of(&downloads.join("film.bin")), hash);
}

/// GETs `path` from `addr` with a `Range`; the status, the head and the body.
fn get(addr: &str, path: &str, range: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nRange: {range}\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, head, answer[split..].to_vec())
}

/// An `<audio>` element in Chromium plays a song the node has not
/// downloaded yet, and a seek far ahead lands and plays on while the
/// download still runs; the finished file is the song.
#[test]
fn a_song_plays_and_seeks_in_a_browser_while_it_downloads() {
    let web = browser_tests();
    let temp = tempfile::tempdir().unwrap();
    let (shared, downloads) = (temp.path().join("shared"), temp.path().join("downloads"));
    std::fs::create_dir_all(&shared).unwrap();
    // 40 s at 48 kB/s (1.9 MB), sent at 128 KiB/s: about 15 s to download,
    // played at 48 kB/s, so playing keeps up and a seek runs ahead of it.
    let hash = wav_tone(&shared.join("song.wav"), 40, 48_000);

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    let _sharer = sharing_leaf(
        &bootstrap,
        &shared,
        &["--max-upload-rate", "128K"],
        &temp.path().join("sharer"),
    );
    let app = start_app(&bootstrap, &downloads, &temp.path().join("app"));

    let output = Command::new("node")
        .arg("play.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_APP", format!("http://{}/", app.addr))
        .env("CANOPY_KEY", &app.key)
        .env("CANOPY_HASH", &hash)
        .env("CHROMIUM", chromium())
        .output()
        .expect("node runs the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    println!("{stdout}");
    let seeked: serde_json::Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|step| step["step"] == "seeked")
        .unwrap_or_else(|| panic!("no seeked step in\n{stdout}"));
    // The seek landed before the download got there in order: it was
    // fetched out of turn.
    let fraction = seeked["fraction"].as_f64().unwrap();
    assert!(
        fraction < 0.8,
        "the seek to 35 s played while only {fraction} of the song was here"
    );

    app.wait_done(Duration::from_secs(60));
    assert_eq!(blake3_of(&downloads.join("song.wav")), hash);
}
