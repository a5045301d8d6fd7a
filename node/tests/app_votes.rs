//! Votes, trusted publishers and Play in the desktop app, in a real
//! browser against real `canopy run` processes (see
//! node/tests/web/votes.spec.mjs for the steps).

mod support;

use std::process::Command;

use support::app::{browser_tests, chromium, sharing_leaf, start_app, wav_tone, Process};

#[test]
fn a_trusted_publisher_and_votes_in_the_app() {
    let web = browser_tests();
    let temp = tempfile::tempdir().unwrap();
    let folder = |name: &str| {
        let path = temp.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let (published, decoys, downloads) = (folder("published"), folder("decoys"), folder("downloads"));
    let real = wav_tone(&published.join("Feeling Good.wav"), 4, 8000);
    let decoy = wav_tone(&decoys.join("Feeling Good.wav"), 4, 8100);
    std::fs::write(
        published.join("Sinnerman.mp3"),
        tagged_mp3("Nina Simone", "Sinnerman"),
    )
    .unwrap();

    let mut supernode = Process::start(&["--role", "supernode", "--no-ui"], &temp.path().join("sn"));
    let bootstrap = supernode.peer_address();
    let publisher_data = temp.path().join("publisher");
    let _publisher = sharing_leaf(&bootstrap, &published, &["--sign-shares"], &publisher_data);
    let publisher_id =
        support::text(&support::canopy(&["id", "--data-dir", publisher_data.to_str().unwrap()]).stdout)
            .trim()
            .to_string();
    let _decoy_one = sharing_leaf(&bootstrap, &decoys, &[], &temp.path().join("decoy-1"));
    let _decoy_two = sharing_leaf(&bootstrap, &decoys, &[], &temp.path().join("decoy-2"));
    let app = start_app(&bootstrap, &downloads, &temp.path().join("app"));

    let shots = std::env::var("CANOPY_SCREENSHOTS").unwrap_or_default();
    let output = Command::new("node")
        .arg("votes.spec.mjs")
        .current_dir(&web)
        .env("CANOPY_UI_URL", format!("http://{}/", app.addr))
        .env("CANOPY_REAL", &real)
        .env("CANOPY_DECOY", &decoy)
        .env("CANOPY_PUBLISHER", &publisher_id)
        .env("CANOPY_SCREENSHOTS", shots)
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
    for step in ["ranked", "tags", "trusted", "voted", "narrow"] {
        assert!(
            stdout.contains(&format!("{{\"step\":\"{step}\"")),
            "step {step} missing:\n{stdout}"
        );
    }
    // The app's trust is the node's: kept in its data folder.
    let trusted = std::fs::read_to_string(temp.path().join("app").join("trusted-publishers.txt")).unwrap();
    assert!(trusted.contains(&publisher_id), "{trusted}");
}

/// A minimal MP3: frames of 0xff and an ID3v1 tag with a title and artist.
fn tagged_mp3(artist: &str, title: &str) -> Vec<u8> {
    let mut bytes = vec![0xffu8; 2000];
    let mut tag = vec![0u8; 128];
    tag[..3].copy_from_slice(b"TAG");
    tag[3..3 + title.len()].copy_from_slice(title.as_bytes());
    tag[33..33 + artist.len()].copy_from_slice(artist.as_bytes());
    bytes.extend(tag);
    bytes
}
