//! One supernode, twenty leaves, real QUIC on loopback: leaves publish,
//! the supernode indexes with tantivy, searches find files by the words in
//! their names and tags, with every source.

use canopy_common::net::{read_frame, write_frame};
use canopy_common::proto::frame::MAX_CONTROL_FRAME;
use canopy_common::proto::{ContentHash, FileEntry, FileKind, LeafUpdate, PeerAddr, Query, SessionNotice};
use canopy_node::download::DownloadOptions;
use canopy_node::{Node, NodeConfig};
use canopy_supernode::SupernodeConfig;
use canopy_tests::ask;
use canopy_tests::{client, join_by_hand, search_until, start_downloader, start_leaf, LOOPBACK};

async fn start_supernode(max_leaves: usize, max_files: usize) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK);
    let mut settings = SupernodeConfig::for_this_machine(Some(dir.path().join("index")));
    settings.max_leaves = max_leaves;
    settings.max_files_per_leaf = max_files;
    config.supernode = Some(settings);
    (Node::start(config).await.unwrap(), dir)
}

fn query(text: &str) -> Query {
    Query::words(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_leaves_publish_and_searches_find_them() {
    let (supernode, _dir) = start_supernode(100, 1000).await;
    let address = supernode.peer_addr();
    let halo = vec![7u8; 300_000];
    let mut leaves = Vec::new();
    for i in 0..20 {
        let mut files: Vec<(String, Vec<u8>)> =
            vec![(format!("leaf{i} unique recording.ogg"), vec![i as u8; 1000 + i])];
        if i < 6 {
            files.push(("Beyoncé - Halo.mp3".into(), halo.clone()));
        }
        if i == 7 {
            files.push(("track01.mp3".into(), canopy_tests::tagged_mp3("Nina Simone")));
        }
        let named: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        leaves.push(start_leaf(address, 2, &named).await);
    }
    assert_eq!(supernode.supernode().unwrap().leaf_count(), 20);

    // Words in names, any case, accents folded; grouped by content with every source.
    let hits = search_until(address, &query("BEYONCE halo"), |hits| {
        hits.first().is_some_and(|h| h.source_count == 6)
    })
    .await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].hash, ContentHash::of(&halo));
    assert_eq!(hits[0].sources.len(), 6);
    assert_eq!(hits[0].kind, FileKind::Audio);
    let leaf_ids: Vec<_> = leaves[..6].iter().map(|l| l.node.peer_addr().id).collect();
    assert!(hits[0].sources.iter().all(|s| leaf_ids.contains(&s.id)));

    // Words in tags.
    let hits = search_until(address, &query("nina simone"), |hits| !hits.is_empty()).await;
    assert_eq!(hits[0].name, "track01.mp3");

    // One leaf's own file, and filters.
    let hits = search_until(address, &query("leaf13 recording"), |hits| !hits.is_empty()).await;
    assert_eq!((hits.len(), hits[0].source_count), (1, 1));
    let mut videos = query("recording");
    videos.kind = Some(FileKind::Video);
    assert!(search_until(address, &videos, |_| true).await.is_empty());
    let mut large = query("recording");
    large.min_size = Some(1010);
    let hits = search_until(address, &large, |hits| hits.len() == 10).await;
    assert!(hits.iter().all(|hit| hit.size >= 1010));

    // A leaf that leaves is gone from the results.
    let gone = leaves.remove(0);
    gone.node.shutdown().await;
    let hits = search_until(address, &query("halo"), |hits| {
        hits.first().is_some_and(|h| h.source_count == 5)
    })
    .await;
    assert!(hits[0].sources.iter().all(|s| s.id != leaf_ids[0]));

    // Search, then fetch from the sources it found.
    let downloader = start_downloader().await;
    downloader
        .fetch(
            hits[0].hash,
            hits[0].sources.clone(),
            "halo.mp3",
            DownloadOptions::default(),
        )
        .await
        .expect("download from search results");
    assert_eq!(std::fs::read(downloader.path("halo.mp3")).unwrap(), halo);
}

fn entry(name: &str, seed: u8) -> FileEntry {
    FileEntry {
        hash: ContentHash([seed; 32]),
        size: 10,
        name: name.into(),
        kind: FileKind::Other,
        meta: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_publishes_are_refused_and_the_supernode_keeps_serving() {
    let (supernode, _dir) = start_supernode(100, 50).await;
    let address = supernode.peer_addr();

    let (_c, mut send, mut recv, welcome) = join_by_hand(&client(), address).await;
    assert_eq!(welcome, SessionNotice::Welcome { max_files: 50 });
    let long_name = entry(&"x".repeat(300), 1);
    write_frame(
        &mut send,
        &LeafUpdate::Add {
            files: vec![long_name],
        },
    )
    .await
    .unwrap();
    let refusal = read_frame::<SessionNotice>(&mut recv, MAX_CONTROL_FRAME)
        .await
        .unwrap();
    assert!(
        matches!(&refusal, SessionNotice::Refused { reason } if reason.contains("255")),
        "{refusal:?}"
    );

    let (_c, mut send, mut recv, _) = join_by_hand(&client(), address).await;
    let too_many: Vec<FileEntry> = (0..51).map(|i| entry(&format!("file {i}"), i as u8)).collect();
    write_frame(&mut send, &LeafUpdate::Add { files: too_many })
        .await
        .unwrap();
    let refusal = read_frame::<SessionNotice>(&mut recv, MAX_CONTROL_FRAME)
        .await
        .unwrap();
    assert!(
        matches!(&refusal, SessionNotice::Refused { reason } if reason.contains("limit of 50")),
        "{refusal:?}"
    );

    // Nothing of theirs was indexed, and an honest leaf is served as usual.
    let honest = start_leaf(address, 2, &[("honest file.txt", b"hello")]).await;
    let hits = search_until(address, &query("file"), |hits| !hits.is_empty()).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].sources[0].id, honest.node.peer_addr().id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_supernode_turns_leaves_away_with_referrals() {
    let (supernode, _dir) = start_supernode(1, 100).await;
    let address = supernode.peer_addr();
    let other = PeerAddr::new(
        canopy_common::proto::PeerId([5; 32]),
        "127.0.0.1:9".parse().unwrap(),
    );
    supernode.supernode().unwrap().set_referrals(vec![other]);
    let (_first, _s, _r, welcome) = join_by_hand(&client(), address).await;
    assert!(matches!(welcome, SessionNotice::Welcome { .. }));
    let (_second, _s, _r, full) = join_by_hand(&client(), address).await;
    assert_eq!(full, SessionNotice::Full { others: vec![other] });
}

#[tokio::test]
async fn a_leaf_is_no_supernode() {
    let (supernode, _dir) = start_supernode(10, 10).await;
    let leaf = start_leaf(supernode.peer_addr(), 2, &[("a.txt", b"a")]).await;
    let error = ask(&client(), &[leaf.node.peer_addr()], &query("a"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a supernode"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_joins_the_nearest_of_the_supernodes_it_knows() {
    let (near, _near_dir) = start_supernode(10, 100).await;
    let (far, _far_dir) = start_supernode(10, 100).await;
    let far_address =
        canopy_tests::slow_path_to(far.peer_addr().addr, std::time::Duration::from_millis(150)).await;
    let far_via_slow_path = PeerAddr::new(far.peer_addr().id, far_address);

    // The far one comes first in the leaf's list; one session only.
    let data = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(data.path().join("data"), LOOPBACK);
    config.bootstrap = vec![far_via_slow_path, near.peer_addr()];
    config.leaf_sessions = 1;
    let leaf = Node::start(config).await.unwrap();
    let mut status = leaf.leaf_status();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        status.wait_for(|s| !s.joined.is_empty()),
    )
    .await
    .expect("joined in time")
    .unwrap();
    let joined: Vec<_> = leaf.leaf_status().borrow().joined.keys().copied().collect();
    assert_eq!(joined, vec![near.peer_addr().id], "joined the far supernode");
}
