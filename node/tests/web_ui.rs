//! The desktop app in a real browser, and the HTTP gateway with real
//! clients, against real `canopy run` processes on loopback.
//!
//! Needs `node` + `npm` (playwright-core is installed from
//! node/tests/web/package-lock.json when missing), Debian's `chromium`
//! (or `CHROMIUM=/path`), `curl` and `aria2c`. A missing tool fails the
//! test with the command that installs it: CI installs them all.

mod support;

use std::process::Command;
use std::time::Duration;

use support::app::{
    ask, blake3_of, browser_tests, call, chromium, random_file, require, sharing_leaf, start_app, wav_file,
    Process,
};
use support::CANOPY;

#[test]
fn search_download_pause_resume_and_share_in_a_browser() {
    let web = browser_tests();

    let temp = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let path = temp.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let (shared, later, downloads) = (dir("shared"), dir("later"), dir("downloads"));
    let quick = random_file(&shared.join("quick-fox.bin"), 1_500_000, 1);
    let slow = random_file(&shared.join("slow-river.bin"), 8_000_000, 2);
    std::fs::write(later.join("late-comet.txt"), b"a file shared from the app\n").unwrap();

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &dir("supernode"));
    let bootstrap = supernode.peer_address();
    // The upload cap keeps the second download slow enough to pause.
    let mut leaf = Process::start(
        &[
            "--role",
            "leaf",
            "--no-ui",
            "--bootstrap",
            &bootstrap,
            "--share",
            shared.to_str().unwrap(),
            "--max-upload-rate",
            "1M",
        ],
        &dir("leaf"),
    );
    leaf.wait_for("role:");
    let mut app = Process::start(
        &[
            "--role",
            "leaf",
            "--bootstrap",
            &bootstrap,
            "--ui-listen",
            "127.0.0.1:0",
            "--download-dir",
            downloads.to_str().unwrap(),
        ],
        &dir("app"),
    );
    let page = app.wait_for("desktop app: open ");
    let url = page.split_whitespace().next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let output = Command::new("node")
        .arg("ui.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_UI_URL", &url)
        .env("CANOPY_NEW_SHARE", &later)
        .env("CHROMIUM", chromium())
        .output()
        .expect("node runs the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for step in [
        "loaded",
        "downloaded",
        "paused",
        "resumed",
        "shared",
        "searchable",
        "waiting",
        "settings",
    ] {
        assert!(
            stdout.contains(&format!("{{\"step\":\"{step}\"")),
            "step {step} missing:\n{stdout}"
        );
    }
    assert_eq!(blake3_of(&downloads.join("quick-fox.bin")), quick);
    assert_eq!(blake3_of(&downloads.join("slow-river.bin")), slow);
    assert!(!downloads.join("slow-river.bin.part").exists());
    // The app keeps its choices: the new folder is in the saved list.
    let saved = std::fs::read_to_string(temp.path().join("app/shared-folders.json")).unwrap();
    assert!(saved.contains("later"), "{saved}");
    // Saving the download cap saved that alone: no port or role pinned.
    let settings = std::fs::read_to_string(temp.path().join("app/ui-settings.toml")).unwrap();
    assert!(settings.contains("max-download-rate = 50000000"), "{settings}");
    for pinned in ["listen", "role"] {
        assert!(!settings.contains(pinned), "{pinned} was saved too:\n{settings}");
    }
    drop((supernode, leaf, app));
}

/// Links in and out, clicks that land and a Cancel that asks, in a real
/// browser (node/tests/web/app.spec.mjs): a pasted link and hash start
/// downloads; ten human-speed clicks on Pause/Resume while the list is
/// refreshed all land; Cancel keeps everything until confirmed, then
/// deletes the part file; a copied link, pasted, downloads the right bytes.
#[test]
fn links_clicks_and_cancel_in_a_browser() {
    let web = browser_tests();

    let temp = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let path = temp.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let (slow, fast, downloads) = (dir("slow"), dir("fast"), dir("downloads"));
    // Two big files from a capped sharer keep running through the clicks.
    let background_size = 30_000_000;
    let background = random_file(&slow.join("background-source.bin"), background_size, 21);
    let clicky = random_file(&slow.join("clicky.bin"), 30_000_000, 22);
    let linked = random_file(&fast.join("linked-cedar.bin"), 2_500_000, 23);

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &dir("supernode"));
    let bootstrap = supernode.peer_address();
    let slow_leaf = sharing_leaf(&bootstrap, &slow, &["--max-upload-rate", "1M"], &dir("slow-leaf"));
    let fast_leaf = sharing_leaf(&bootstrap, &fast, &[], &dir("fast-leaf"));
    let mut app = Process::start(
        &[
            "--role",
            "leaf",
            "--bootstrap",
            &bootstrap,
            "--ui-listen",
            "127.0.0.1:0",
            "--download-dir",
            downloads.to_str().unwrap(),
        ],
        &dir("app"),
    );
    let page = app.wait_for("desktop app: open ");
    let url = page.split_whitespace().next().unwrap().to_string();

    let output = Command::new("node")
        .arg("app.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_UI_URL", &url)
        .env(
            "CANOPY_BACKGROUND_LINK",
            format!("canopy:{background}?size={background_size}&name=background.bin"),
        )
        .env("CANOPY_BACKGROUND_HASH", &background)
        .env("CANOPY_CLICKY_HASH", &clicky)
        .env("CANOPY_LINKED_HASH", &linked)
        .env(
            "CANOPY_SCREENSHOTS",
            std::env::var("CANOPY_SCREENSHOTS").unwrap_or_default(),
        )
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
    for step in [
        "loaded",
        "pasted",
        "clicks",
        "kept",
        "cancelled",
        "copied",
        "linked",
        "dropped",
        "links-out",
        "narrow",
    ] {
        assert!(
            stdout.contains(&format!("{{\"step\":\"{step}\"")),
            "step {step} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("\"landed\":10"), "{stdout}");
    // The pasted link downloaded the right bytes under its name.
    assert_eq!(blake3_of(&downloads.join("linked-cedar.bin")), linked);
    // The cancelled download left nothing behind; the other one is there.
    let left: Vec<String> = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|name| name.starts_with(&clicky)),
        "the cancelled download left {left:?}"
    );
    assert!(
        left.iter().any(|name| name.starts_with("background.bin")),
        "{left:?}"
    );
    drop((supernode, slow_leaf, fast_leaf, app));
}

/// Sends `METHOD path` to the host of `url` by hand; returns all it answered.
fn raw_request(url: &str, method: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "{method} /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    answer
}

/// Runs curl; returns (response head, body).
fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let output = Command::new("curl")
        .args(["-s", "-S", "-D", "-", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = output.stdout;
    let split = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    (
        String::from_utf8_lossy(&text[..split]).into_owned(),
        text[split..].to_vec(),
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn the_gateway_serves_ranges_to_curl_and_whole_files_to_aria2c() {
    require("curl", "apt-get install curl");
    require("aria2c", "apt-get install aria2");
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let size = 3_000_001;
    let hash = random_file(&shared.join("big file é.bin"), size, 7);
    let content = std::fs::read(shared.join("big file é.bin")).unwrap();
    let tune = wav_file(&shared.join("tune.WAV"), 2);
    let page_hash = {
        let html = b"<script>alert(1)</script>";
        std::fs::write(shared.join("page.html"), html).unwrap();
        blake3::hash(html).to_hex().to_string()
    };

    let mut node = Process::start(
        &[
            "--role",
            "leaf",
            "--no-ui",
            "--share",
            shared.to_str().unwrap(),
            "--gateway",
            "127.0.0.1:0",
        ],
        &temp.path().join("data"),
    );
    let base = node.wait_for("HTTP gateway: shared files at ");
    let url = base.replace("HASH", &hash);

    // A middle range: 206, the exact bytes, Content-Range and the headers.
    let (head, body) = curl(&["-H", "Range: bytes=1000-1999", &url]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, &content[1000..2000]);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes 1000-1999/{size}").as_str())
    );
    assert_eq!(header(&head, "content-length"), Some("1000"));
    assert_eq!(header(&head, "content-type"), Some("application/octet-stream"));
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert_eq!(header(&head, "etag"), Some(format!("\"{hash}\"").as_str()));
    let disposition = header(&head, "content-disposition").unwrap();
    assert!(
        disposition.contains("filename*=UTF-8''big%20file%20%C3%A9.bin"),
        "{disposition}"
    );

    // A suffix range and an open-ended one.
    let (head, body) = curl(&["-H", "Range: bytes=-10", &url]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, &content[size - 10..]);
    let (_, body) = curl(&["-H", &format!("Range: bytes={}-", size - 5), &url]);
    assert_eq!(body, &content[size - 5..]);

    // Past the end: 416 with the size.
    let (head, _) = curl(&["-H", &format!("Range: bytes={size}-"), &url]);
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes */{size}").as_str())
    );

    // HEAD: the length, and not a byte of body (asked by hand: curl -I
    // would not read one anyway).
    let (head, _) = curl(&["-I", "-o", "/dev/null", &url]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-length"), Some(size.to_string().as_str()));
    let raw = raw_request(&url, "HEAD");
    assert!(raw.ends_with(b"\r\n\r\n"), "HEAD sent a body");
    assert_eq!(raw.windows(4).filter(|w| w == b"\r\n\r\n").count(), 1);
    // Unknown content, a path in place of a hash, other methods.
    assert!(String::from_utf8_lossy(&raw_request(&url, "POST")).starts_with("HTTP/1.1 405"));
    let unknown = url.replace(&hash, blake3::hash(b"nobody").to_hex().as_str());
    assert!(curl(&[&unknown]).0.starts_with("HTTP/1.1 404"));
    let traversal = url.replace(&hash, "..%2F..%2Fetc%2Fpasswd");
    assert!(curl(&["--path-as-is", &traversal]).0.starts_with("HTTP/1.1 404"));

    // Media are served inline with their type, so a browser plays them;
    // nothing that could run script is.
    let (head, body) = curl(&[&base.replace("HASH", &tune)]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("audio/wav"));
    let disposition = header(&head, "content-disposition").unwrap();
    assert!(
        disposition.starts_with("inline; filename=\"tune.WAV\""),
        "{disposition}"
    );
    assert_eq!(blake3::hash(&body).to_hex().as_str(), tune);
    let (head, _) = curl(&["-H", "Range: bytes=0-99", &base.replace("HASH", &tune)]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("audio/wav"));
    let (head, _) = curl(&[&base.replace("HASH", &page_hash)]);
    assert_eq!(header(&head, "content-type"), Some("application/octet-stream"));
    assert!(header(&head, "content-disposition")
        .unwrap()
        .starts_with("attachment;"));

    // aria2c with four connections (ranges under the hood): the right file.
    let fetched = temp.path().join("fetched");
    let status = Command::new("aria2c")
        .args(["-q", "-x4", "-s4", "-k1M", "--allow-overwrite=true", "-d"])
        .arg(&fetched)
        .args(["-o", "out.bin", &url])
        .status()
        .expect("aria2c runs");
    assert!(status.success(), "aria2c failed");
    assert_eq!(blake3_of(&fetched.join("out.bin")), hash);
    drop(node);
}

/// A song shared through the gateway plays in a real browser: opened by its
/// address it shows a player instead of downloading, and an `<audio>`
/// element pointed at it plays and seeks (node/tests/web/media.spec.mjs).
#[test]
fn the_gateway_plays_media_in_a_browser() {
    let web = browser_tests();
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let tune = wav_file(&shared.join("tune.wav"), 2);
    let other = random_file(&shared.join("data.bin"), 10_000, 5);
    let mut node = Process::start(
        &[
            "--role",
            "leaf",
            "--no-ui",
            "--share",
            shared.to_str().unwrap(),
            "--gateway",
            "127.0.0.1:0",
        ],
        &temp.path().join("data"),
    );
    let base = node.wait_for("HTTP gateway: shared files at ");
    let output = Command::new("node")
        .arg("media.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_MEDIA_URL", base.replace("HASH", &tune))
        .env("CANOPY_OTHER_URL", base.replace("HASH", &other))
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
    for step in ["opened", "other-downloads", "played"] {
        assert!(
            stdout.contains(&format!("{{\"step\":\"{step}\"")),
            "step {step} missing:\n{stdout}"
        );
    }
    drop(node);
}

#[test]
fn the_api_needs_the_key_and_refuses_other_sites() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let downloads = temp.path().join("downloads");
    let shared = temp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let have = b"a file this node already shares".to_vec();
    std::fs::write(shared.join("have.txt"), &have).unwrap();
    let mut node = Process::start(
        &[
            "--role",
            "leaf",
            "--ui-listen",
            "127.0.0.1:0",
            "--download-dir",
            downloads.to_str().unwrap(),
            "--share",
            shared.to_str().unwrap(),
        ],
        &data,
    );
    let addr = node.app_address();
    let key = std::fs::read_to_string(data.join("api-key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("api-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key file is readable by others");
    }
    let get = |path: &str, headers: &str| ask(&addr, &format!("GET {path} HTTP/1.1\r\n{headers}\r\n"));

    // The page carries the key; no CORS header is ever sent.
    let (status, page) = get("/", &format!("Host: {addr}\r\n"));
    assert_eq!(status, 200);
    assert!(page.contains(&format!("content=\"{key}\"")));
    assert!(!page.to_ascii_lowercase().contains("access-control-allow"));
    // DNS rebinding: a page from another name reaching our port is refused.
    let (status, page) = get("/", "Host: evil.example:4664\r\n");
    assert_eq!(status, 403);
    assert!(!page.contains(&key));
    let (status, _) = get(
        "/api/status",
        &format!("Host: evil.example\r\nX-API-Key: {key}\r\n"),
    );
    assert_eq!(status, 403);
    // The API: the key or nothing.
    assert_eq!(get("/api/status", "Host: localhost\r\n").0, 403);
    assert_eq!(
        get("/api/status", "Host: localhost\r\nX-API-Key: wrong\r\n").0,
        403
    );
    let (status, body) = get("/api/status", &format!("Host: localhost\r\nX-API-Key: {key}\r\n"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"role\":\"leaf\""), "{body}");
    // A leaf with no supernode is not connected, and the page says so.
    assert!(
        body.contains("\"alone\":true") && body.contains("Not connected"),
        "{body}"
    );
    // The key in the query is accepted on the event stream only.
    assert_eq!(
        get(&format!("/api/status?key={key}"), "Host: localhost\r\n").0,
        403
    );
    let (status, events) = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            stream,
            "GET /api/events?key={key} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut text = String::new();
        while !text.contains("event: shares") {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => text.push_str(&String::from_utf8_lossy(&buffer[..read])),
            }
        }
        (
            text.get(9..12).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0),
            text,
        )
    };
    assert_eq!(status, 200, "{events}");
    assert!(
        events.contains("text/event-stream") && events.contains("event: status"),
        "{events}"
    );

    // Bad input gets a clear error, not a crash.
    let post = |path: &str, body: &str| {
        ask(
            &addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    assert_eq!(post("/api/downloads", "{\"hash\": \"zz\"}").0, 400);
    assert_eq!(post("/api/downloads", "not json").0, 400);
    // What the node already has is not fetched again: it says where it is.
    let hash = canopy_common::proto::ContentHash::of(&have).to_hex();
    let (status, body) = post("/api/downloads", &format!("{{\"hash\": \"{hash}\"}}"));
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("you already have this file") && body.contains("have.txt"),
        "{body}"
    );
    // Links: bounded, and each bad item refused with why (the file we
    // have is pointed at, not fetched).
    assert_eq!(post("/api/links", "{\"text\": \" \\n \"}").0, 400);
    let many = vec!["ab".repeat(32); 101].join(" ");
    let (status, body) = post("/api/links", &format!("{{\"text\": \"{many}\"}}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 100"), "{body}");
    let (status, body) = post(
        "/api/links",
        &format!("{{\"text\": \"canopy:zz\\ncanopy:{hash}?name=again.txt\"}}"),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"added\":[]"), "{body}");
    assert!(body.contains("bad content hash in link"), "{body}");
    assert!(body.contains("you already have this file"), "{body}");
    assert_eq!(post("/api/shares", "{\"path\": \"relative/dir\"}").0, 400);
    assert_eq!(
        post("/api/search", &format!("{{\"text\": \"{}\"}}", "x".repeat(5000))).0,
        400
    );
    let (status, _) = ask(
        &addr,
        &format!("POST /api/search HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nContent-Length: 999999\r\n\r\n"),
    );
    assert_eq!(status, 413);
    let (status, _) = get(
        "/api/status",
        &format!("Host: localhost\r\nX-Big: {}\r\n", "a".repeat(10_000)),
    );
    assert_eq!(status, 431);
    // Settings: a cap takes effect at once, a role change at the next start.
    let put = |body: &str| {
        ask(
            &addr,
            &format!(
                "PUT /api/settings HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let (status, answer) = put("{\"max-upload-rate\": 1048576, \"role\": \"supernode\"}");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"restart_needed\":[\"role\"]"), "{answer}");
    let (_, settings) = get(
        "/api/settings",
        &format!("Host: localhost\r\nX-API-Key: {key}\r\n"),
    );
    assert!(settings.contains("\"max-upload-rate\":1048576"), "{settings}");
    let saved = std::fs::read_to_string(data.join("ui-settings.toml")).unwrap();
    assert!(
        saved.contains("max-upload-rate = 1048576") && saved.contains("role = \"supernode\""),
        "{saved}"
    );
    assert_eq!(put("{\"role\": \"king\"}").0, 400);
    // A bad value is refused naming its field, so the form can say which.
    for (body, field) in [
        (
            "{\"max-download-rate\": 1000, \"listen\": \"not an address\"}",
            "listen:",
        ),
        ("{\"max-upload-rate\": 0}", "max-upload-rate:"),
    ] {
        let (status, answer) = put(body);
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains(field), "{body} -> {answer}");
    }
    // Still serving after all that.
    assert_eq!(
        get("/api/status", &format!("Host: localhost\r\nX-API-Key: {key}\r\n")).0,
        200
    );
    drop(node);
}

#[test]
fn remote_access_needs_a_password() {
    let temp = tempfile::tempdir().unwrap();
    let downloads = temp.path().join("downloads");
    let refused = Command::new(CANOPY)
        .args([
            "run",
            "--role",
            "leaf",
            "--listen",
            "127.0.0.1:0",
            "--ui-listen",
            "0.0.0.0:0",
        ])
        .arg("--download-dir")
        .arg(&downloads)
        .arg("--data-dir")
        .arg(temp.path().join("refused"))
        .output()
        .expect("canopy runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--ui-password"), "{stderr}");

    let mut node = Process::start(
        &[
            "--role",
            "leaf",
            "--ui-listen",
            "0.0.0.0:0",
            "--ui-password",
            "s3cret",
            "--download-dir",
            downloads.to_str().unwrap(),
        ],
        &temp.path().join("data"),
    );
    let addr = node.app_address();
    let get = |headers: &str| ask(&addr, &format!("GET / HTTP/1.1\r\n{headers}\r\n"));
    let (status, answer) = get("Host: canopy.example.net\r\n");
    assert_eq!(status, 401);
    assert!(answer.contains("WWW-Authenticate: Basic"), "{answer}");
    // "anyone:wrong" and "anyone:s3cret"
    assert_eq!(
        get("Host: canopy.example.net\r\nAuthorization: Basic YW55b25lOndyb25n\r\n").0,
        401
    );
    assert_eq!(
        get("Host: canopy.example.net\r\nAuthorization: Basic YW55b25lOnMzY3JldA==\r\n").0,
        200
    );
    // On loopback the page needs no password.
    assert_eq!(get("Host: localhost\r\n").0, 200);
    drop(node);
}

/// Polls the app's download list until `done` says so.
fn wait_for_download(
    addr: &str,
    key: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = call(addr, key, "GET", "/api/downloads", "");
        if let Some(download) = list.as_array().and_then(|l| l.first()) {
            if done(download) {
                return download.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: never happened; last {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_app_resumes_its_downloads_after_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("shared");
    let downloads = temp.path().join("downloads");
    std::fs::create_dir_all(&shared).unwrap();
    let hash = random_file(&shared.join("restart-me.bin"), 6_000_000, 3);

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    let leaf = sharing_leaf(
        &bootstrap,
        &shared,
        &["--max-upload-rate", "1M"],
        &temp.path().join("leaf"),
    );
    let app_data = temp.path().join("app");
    let app = start_app(&bootstrap, &downloads, &app_data);
    app.download(&hash, "restart-me.bin");
    wait_for_download(&app.addr, &app.key, "a quarter downloaded", |d| {
        d["verified"].as_u64().unwrap_or(0) > 1_500_000
    });
    // Killed outright: no chance to tidy up.
    drop(app);
    std::thread::sleep(Duration::from_millis(300));
    assert!(downloads.join("restart-me.bin.part").exists());

    let app = start_app(&bootstrap, &downloads, &app_data);
    let download = wait_for_download(&app.addr, &app.key, "resumed", |d| {
        d["resumed"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(download["state"], "running");
    wait_for_download(&app.addr, &app.key, "finished", |d| d["state"] == "done");
    assert_eq!(blake3_of(&downloads.join("restart-me.bin")), hash);
    drop((supernode, leaf));
}

/// The app never gives up on a download by itself: with no source
/// anywhere it waits, says so and when it looks again, well past the
/// 20 s after which it used to fail; a sharer that turns up is found and
/// the download finishes with no click.
#[test]
fn an_app_download_with_no_source_waits_and_finishes_when_one_appears() {
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("shared");
    let downloads = temp.path().join("downloads");
    std::fs::create_dir_all(&shared).unwrap();
    let staged = temp.path().join("staged.bin");
    let hash = random_file(&staged, 500_000, 7);
    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    let app = start_app(&bootstrap, &downloads, &temp.path().join("app"));
    app.download(&hash, "patience.bin");
    wait_for_download(&app.addr, &app.key, "waiting with a next look", |d| {
        d["waiting"]["next_look_seconds"].as_u64().is_some()
    });
    std::thread::sleep(Duration::from_secs(22));
    let still = wait_for_download(&app.addr, &app.key, "still waiting", |d| d["waiting"].is_object());
    assert_eq!(still["state"], "running", "{still}");

    // A sharer comes online: the next look finds it (at most a minute).
    std::fs::rename(&staged, shared.join("patience.bin")).unwrap();
    let sharer = sharing_leaf(&bootstrap, &shared, &[], &temp.path().join("sharer"));
    app.wait_done(Duration::from_secs(90));
    assert_eq!(blake3_of(&downloads.join("patience.bin")), hash);
    drop((supernode, sharer));
}

/// A source that freezes for longer than a connection lives (SIGSTOP for
/// 25 s: its connections time out) and then comes back: the app keeps the
/// download, tries the source again, and finishes with no click.
#[test]
fn an_app_download_survives_its_only_source_freezing() {
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("shared");
    let downloads = temp.path().join("downloads");
    std::fs::create_dir_all(&shared).unwrap();
    let hash = random_file(&shared.join("frozen.bin"), 4_000_000, 11);
    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    let sharer = sharing_leaf(
        &bootstrap,
        &shared,
        &["--max-upload-rate", "500K"],
        &temp.path().join("sharer"),
    );
    let app = start_app(&bootstrap, &downloads, &temp.path().join("app"));
    app.download(&hash, "frozen.bin");
    wait_for_download(&app.addr, &app.key, "under way", |d| {
        d["verified"].as_u64().unwrap_or(0) > 500_000
    });
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &sharer.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_secs(25));
    let frozen = wait_for_download(&app.addr, &app.key, "kept", |_| true);
    assert_eq!(frozen["state"], "running", "the app gave up: {frozen}");
    assert!(frozen["size"].as_u64().is_some(), "the size is kept: {frozen}");
    signal("-CONT");
    app.wait_done(Duration::from_secs(120));
    assert_eq!(blake3_of(&downloads.join("frozen.bin")), hash);
    drop((supernode, sharer));
}

/// A `canopy:` link clicked in a browser runs `canopy open LINK` (the URL
/// handler, deploy/canopy-link.desktop): the running app gets the link and
/// downloads the file. A bad link is named, and nothing running is an
/// error that says what to start.
#[test]
fn canopy_open_hands_a_link_to_the_running_app() {
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("shared");
    let downloads = temp.path().join("downloads");
    std::fs::create_dir_all(&shared).unwrap();
    let hash = random_file(&shared.join("clicked.bin"), 300_000, 11);
    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    let sharer = sharing_leaf(&bootstrap, &shared, &[], &temp.path().join("sharer"));
    let data = temp.path().join("app");
    let app = start_app(&bootstrap, &downloads, &data);

    let link = format!("canopy:{hash}?size=300000&name=clicked.bin");
    let open = |args: &[&str]| {
        Command::new(CANOPY)
            .arg("open")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    let opened = open(&[&link]);
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert!(
        String::from_utf8_lossy(&opened.stdout).contains("downloading clicked.bin"),
        "{}",
        String::from_utf8_lossy(&opened.stdout)
    );
    app.wait_done(Duration::from_secs(60));
    assert_eq!(blake3_of(&downloads.join("clicked.bin")), hash);

    let refused = open(&["canopy:not-a-hash"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not opened: canopy:not-a-hash"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let nobody = Command::new(CANOPY)
        .args(["open", &link, "--data-dir"])
        .arg(temp.path().join("nothing here"))
        .output()
        .unwrap();
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("start `canopy run`"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    drop((supernode, sharer));
}
