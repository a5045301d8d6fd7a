//! Proof of possession (issue 22): a supernode checks that its leaves hold
//! what they publish. A poisoning leaf (entries for files it does not
//! hold, answering checks with made-up bytes) loses its entries and is
//! dropped in seconds and kept out; an honest leaf, checked over and over,
//! is never dropped. Real QUIC on loopback, a real tantivy index.

use std::sync::atomic::Ordering;
use std::time::Duration;

use canopy_common::net::{read_frame, write_frame};
use canopy_common::proto::frame::MAX_CONTROL_FRAME;
use canopy_common::proto::{
    ContentHash, FileEntry, FileKind, LeafUpdate, PeerAddr, Query, Request, Response, SessionNotice,
};
use canopy_node::Node;
use canopy_supernode::possession::PossessionConfig;
use canopy_tests::{client, join_by_hand, search_until, start_leaf, supernode_checking, until};

/// A supernode that checks every leaf about three times a second, from
/// two seconds after it joined.
async fn checking_supernode() -> (Node, tempfile::TempDir) {
    supernode_checking(PossessionConfig {
        // Time for the test to see the decoys indexed first.
        first_after: Duration::from_secs(2),
        every: Duration::from_millis(300),
        // As in the defaults, longer than a leaf's sync (1 s): an honest
        // leaf has told its supernode of a changed file before the next.
        after_failure: Duration::from_millis(1100),
        ..PossessionConfig::default()
    })
    .await
}

/// Joins `supernode` as a poisoner would: publishes entries for files it
/// does not have, and answers every check with made-up bytes and a
/// made-up proof. Returns the session's connection and streams.
async fn poisoner(
    endpoint: &canopy_common::net::Endpoint,
    supernode: PeerAddr,
    entries: &[FileEntry],
) -> (quinn::Connection, quinn::RecvStream, quinn::SendStream) {
    let (connection, mut send, recv, welcome) = join_by_hand(endpoint, supernode).await;
    assert!(matches!(welcome, SessionNotice::Welcome { .. }), "{welcome:?}");
    write_frame(
        &mut send,
        &LeafUpdate::Add {
            files: entries.to_vec(),
        },
    )
    .await
    .unwrap();
    let answering = connection.clone();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = answering.accept_bi().await {
            if let Ok(Request::Prove { hash, chunk }) =
                read_frame::<Request>(&mut recv, MAX_CONTROL_FRAME).await
            {
                let size = entry_size(hash);
                let start = (chunk * 1024).min(size);
                let data = vec![0x5a; ((start + 1024).min(size) - start) as usize];
                let depth = 64 - (size.div_ceil(1024).max(1) - 1).leading_zeros() as usize;
                let lie = Response::Proof {
                    size,
                    data,
                    proof: vec![[7; 32]; depth],
                };
                let _ = write_frame(&mut send, &lie).await;
                let _ = send.finish();
            }
        }
    });
    (connection, recv, send)
}

/// The fake entries' size, the same for all.
fn entry_size(_: ContentHash) -> u64 {
    300_000
}

fn fake(i: u8) -> FileEntry {
    FileEntry {
        hash: ContentHash([i; 32]),
        size: entry_size(ContentHash([i; 32])),
        name: format!("Nina Simone - Feeling Good (decoy {i}).mp3"),
        kind: FileKind::Audio,
        meta: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoning_leaf_is_dropped_in_seconds_and_an_honest_one_never() {
    let (node, _dir) = checking_supernode().await;
    let address = node.peer_addr();
    let supernode = node.supernode().unwrap();
    let honest_song = canopy_tests::patterned(300_000);
    let others: Vec<Vec<u8>> = (0..3).map(|i| canopy_tests::patterned(50_000 + i)).collect();
    let honest = start_leaf(
        address,
        1,
        &[
            ("Nina Simone - Feeling Good.mp3", &honest_song),
            ("b-side one.mp3", &others[0]),
            ("b-side two.mp3", &others[1]),
            ("b-side three.mp3", &others[2]),
        ],
    )
    .await;

    let decoys: Vec<FileEntry> = (1..=20).map(fake).collect();
    let started = std::time::Instant::now();
    let endpoint = client();
    let (_connection, mut recv, _send) = poisoner(&endpoint, address, &decoys).await;
    let decoy_query = Query::words("decoy");
    search_until(address, &decoy_query, |hits| hits.len() == 20).await;

    // Three failed checks in a row (a second or so apart here; minutes
    // apart only for leaves that pass): dropped, told why, entries gone.
    let notice = tokio::time::timeout(
        Duration::from_secs(60),
        read_frame::<SessionNotice>(&mut recv, MAX_CONTROL_FRAME),
    )
    .await
    .expect("dropped within 60 s")
    .expect("told why");
    assert!(
        matches!(&notice, SessionNotice::Refused { reason } if reason.contains("proof-of-possession")),
        "{notice:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    search_until(address, &decoy_query, |hits| hits.is_empty()).await;
    let stats = supernode.possession_stats();
    assert_eq!(stats.leaves_dropped.load(Ordering::Relaxed), 1);
    assert!(stats.entries_dropped.load(Ordering::Relaxed) >= 3);

    // It cannot come straight back (under the same key; a new key is a
    // new identity, found out the same way).
    let (_, _, _, again) = join_by_hand(&endpoint, address).await;
    assert!(
        matches!(&again, SessionNotice::Refused { reason } if reason.contains("try again")),
        "{again:?}"
    );

    // Meanwhile the honest leaf was checked again and again, and stays.
    until("the honest leaf passed ten checks", || {
        stats.passed.load(Ordering::Relaxed) >= 10
    })
    .await;
    assert_eq!(supernode.leaf_count(), 1, "the honest leaf is still joined");
    assert_eq!(
        stats.failed.load(Ordering::Relaxed),
        3,
        "only the poisoner's three checks failed"
    );
    let hits = search_until(address, &Query::words("feeling good"), |hits| !hits.is_empty()).await;
    assert_eq!(hits[0].hash, ContentHash::of(&honest_song));
    assert_eq!(hits[0].sources.len() + hits[0].relayed.len(), 1);

    // Its owner retags three of its four files: until its rescan, checks
    // of them find nothing to prove. The leaf unpublishes each as soon as
    // it is asked, rescans, and publishes the new versions; it is not
    // dropped.
    let passed = stats.passed.load(Ordering::Relaxed);
    let mut retagged = Vec::new();
    for file in honest.node.shares().list() {
        if file
            .path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("b-side"))
        {
            let mut bytes = std::fs::read(&file.path).unwrap();
            bytes.extend_from_slice(b"TAG retagged");
            std::fs::write(&file.path, &bytes).unwrap();
            retagged.push(ContentHash::of(&bytes));
        }
    }
    assert_eq!(retagged.len(), 3);
    until("the honest leaf passed ten more checks", || {
        stats.passed.load(Ordering::Relaxed) >= passed + 10
    })
    .await;
    assert_eq!(supernode.leaf_count(), 1, "the honest leaf is still joined");
    assert_eq!(stats.leaves_dropped.load(Ordering::Relaxed), 1);
    let hits = search_until(address, &Query::words("b-side"), |hits| {
        hits.len() == 3 && hits.iter().all(|hit| retagged.contains(&hit.hash))
    })
    .await;
    assert_eq!(hits.len(), 3);
    drop(honest);
}

/// A downloader whose source says it does not hold a file its supernode
/// lists tells that supernode, which checks the leaf at once (no check
/// was due for an hour): the leaf admits it no longer holds the file (it
/// changed on disk) and the entry goes. A report alone condemns nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloaders_report_has_the_supernode_check_that_file_now() {
    let (node, _dir) = supernode_checking(PossessionConfig {
        first_after: Duration::from_secs(3600),
        every: Duration::from_secs(3600),
        ..PossessionConfig::default()
    })
    .await;
    let address = node.peer_addr();
    let supernode = node.supernode().unwrap();
    let song = canopy_tests::patterned(200_000);
    let hash = ContentHash::of(&song);
    let leaf = start_leaf(address, 1, &[("reported song.mp3", &song)]).await;
    let hits = search_until(address, &Query::words("reported song"), |hits| !hits.is_empty()).await;
    let listed = hits[0].sources.clone();

    // The file changes on disk before the leaf's next rescan.
    let path = leaf.node.shares().list()[0].path.clone();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, b"something else now").unwrap();

    let downloader = canopy_tests::start_downloader().await;
    let options = canopy_node::download::DownloadOptions {
        report_to: Some(address),
        ..Default::default()
    };
    let fetched = downloader.fetch(hash, listed, "song.mp3", options).await;
    assert!(fetched.is_err(), "the source no longer holds the file");
    let stats = supernode.possession_stats();
    until("the reported file was checked and its entry dropped", || {
        stats.entries_dropped.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.leaves_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(supernode.leaf_count(), 1, "one admission does not drop a leaf");
}
