//! Private groups in the desktop app: searching and downloading within a
//! group this node runs, in a real browser against real `canopy run`
//! processes (see node/tests/web/group_search.spec.mjs).

mod support;

use std::process::Command;

use support::app::{blake3_of, browser_tests, chromium, random_file, Process};
use support::{canopy, text};

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_group_is_searched_and_downloaded_from_in_the_app() {
    let web = browser_tests();
    let temp = tempfile::tempdir().unwrap();
    let (owner, member, downloads) = (
        temp.path().join("owner"),
        temp.path().join("member"),
        temp.path().join("downloads"),
    );

    // The owner makes the group and shares a file in it only.
    let made = canopy(&[
        "group",
        "new",
        "band",
        "--host",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--data-dir",
        owner.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let invite = text(&made.stdout)
        .lines()
        .find(|line| line.starts_with("canopy-group:band?"))
        .expect("an invite")
        .to_string();
    let hash = random_file(&owner.join("networks/band/shared/demo tape.ogg"), 300_000, 7);
    let _owner = {
        let mut node = Process::start(&["--role", "leaf", "--no-ui"], &owner);
        node.wait_for("group band:");
        node
    };

    // The member joins and runs the app.
    let joined = canopy(&[
        "group",
        "join",
        &invite,
        "--port",
        &free_port().to_string(),
        "--data-dir",
        member.to_str().unwrap(),
    ]);
    assert!(joined.status.success(), "{}", text(&joined.stderr));
    let mut app = Process::start(
        &[
            "--role",
            "leaf",
            "--ui-listen",
            "127.0.0.1:0",
            "--download-dir",
            downloads.to_str().unwrap(),
        ],
        &member,
    );
    let addr = app.app_address();
    app.wait_for("group band:");

    let output = Command::new("node")
        .arg("group_search.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_UI_URL", format!("http://{addr}/"))
        .env("CANOPY_HASH", &hash)
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
    for step in ["offered", "found", "downloaded", "public"] {
        assert!(
            stdout.contains(&format!("{{\"step\":\"{step}\"")),
            "step {step} missing:\n{stdout}"
        );
    }
    assert_eq!(
        blake3_of(&downloads.join("demo tape.ogg")),
        hash,
        "the group's file, every byte"
    );
}
