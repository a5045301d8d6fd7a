//! Operators' caps hold: measured upload and download rates stay within
//! 10 % of what was set, and the supernode's caps on forwarded queries and
//! on its index are enforced.

use std::time::{Duration, Instant};

use canopy_common::net::{read_frame, write_frame};
use canopy_common::proto::{PeerAddr, Query, Request, Response, MAX_CONTROL_FRAME};
use canopy_node::download::DownloadOptions;
use canopy_node::state::TransferLimits;
use canopy_node::{Node, NodeConfig};
use canopy_supernode::SupernodeConfig;
use canopy_tests::{capped, patterned, start_leaf, start_sharer, start_sharer_with, uploaded, LOOPBACK};

const MIB: u64 = 1 << 20;

fn within_ten_percent(measured: f64, cap: f64) -> bool {
    measured <= cap * 1.10 && measured >= cap * 0.90
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_cap_holds_within_ten_percent() {
    let bytes = patterned(6 * MIB as usize);
    let sharer = start_sharer_with(&[("capped.bin", bytes.clone())], capped(2 * MIB)).await;
    let downloader = canopy_tests::start_downloader().await;
    let hash = blake3::hash(&bytes).into();
    let started = Instant::now();
    downloader
        .fetch(
            hash,
            vec![sharer.node.peer_addr()],
            "capped.bin",
            DownloadOptions::default(),
        )
        .await
        .unwrap();
    let rate = uploaded(&sharer.node) as f64 / started.elapsed().as_secs_f64();
    assert!(
        within_ten_percent(rate, (2 * MIB) as f64),
        "upload ran at {:.2} MiB/s for a 2 MiB/s cap",
        rate / MIB as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_cap_holds_within_ten_percent_over_several_sources() {
    let bytes = patterned(6 * MIB as usize);
    let first = start_sharer(&[("fast.bin", bytes.clone())]).await;
    let second = start_sharer(&[("fast.bin", bytes.clone())]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK);
    config.upload = TransferLimits {
        max_download_rate: Some(2 * MIB),
        ..TransferLimits::default()
    };
    let node = Node::start(config).await.unwrap();
    let started = Instant::now();
    let report = node
        .download(
            blake3::hash(&bytes).into(),
            &dir.path().join("fast.bin"),
            vec![first.node.peer_addr(), second.node.peer_addr()],
            DownloadOptions::default(),
        )
        .wait()
        .await
        .unwrap();
    let received = node
        .stats()
        .bytes_received
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(received >= bytes.len() as u64);
    let rate = received as f64 / started.elapsed().as_secs_f64();
    assert!(
        within_ten_percent(rate, (2 * MIB) as f64),
        "download ran at {:.2} MiB/s for a 2 MiB/s cap ({report:?})",
        rate / MIB as f64
    );
    assert_eq!(std::fs::read(dir.path().join("fast.bin")).unwrap(), bytes);
}

async fn supernode(settings: SupernodeConfig, bootstrap: Vec<PeerAddr>) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK);
    config.supernode = Some(settings);
    config.bootstrap = bootstrap;
    (Node::start(config).await.unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_and_index_caps_are_enforced() {
    let mut capped_settings = SupernodeConfig::for_this_machine(None);
    capped_settings.overlay.router.max_forwarded_per_second = Some(2);
    capped_settings.max_indexed_files = 4;
    let (hub, _hub_dir) = supernode(capped_settings, Vec::new()).await;
    let (edge, _edge_dir) = supernode(SupernodeConfig::for_this_machine(None), vec![hub.peer_addr()]).await;
    for _ in 0..100 {
        if hub
            .supernode()
            .is_some_and(|s| s.overlay().is_some_and(|o| !o.neighbours().is_empty()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The index budget: a leaf publishing three files fits; a second one
    // with two more would overflow it, is refused, and moves on to the
    // other supernode.
    let _fits = start_leaf(
        hub.peer_addr(),
        1,
        &[("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c")],
    )
    .await;
    let indexed = || hub.supernode().unwrap().index().len();
    for _ in 0..50 {
        if indexed() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(indexed(), 3);
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("d.txt"), b"d").unwrap();
    std::fs::write(share.join("e.txt"), b"e").unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK).sharing(share);
    config.bootstrap = vec![hub.peer_addr()];
    config.leaf_sessions = 1;
    let refused = Node::start(config).await.unwrap();
    let mut status = refused.leaf_status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| s.published(2) && s.joined.contains_key(&edge.peer_addr().id)),
    )
    .await
    .expect("the refused leaf publishes to the other supernode")
    .unwrap();
    assert_eq!(
        hub.supernode().unwrap().index().len(),
        3,
        "the hub stayed within its budget"
    );
    assert_eq!(hub.supernode().unwrap().leaf_count(), 1);

    // Twelve searches at once from leaves of the hub: every one is answered
    // locally, but only about two a second go on to the neighbour.
    let asker = canopy_tests::client();
    let connection = asker.connect(&hub.peer_addr()).await.unwrap();
    let mut searches = Vec::new();
    for i in 0..12 {
        let connection = connection.clone();
        searches.push(tokio::spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            let query = Query::words(format!("nothing{i}"));
            write_frame(&mut send, &Request::Search(query)).await.unwrap();
            let _ = send.finish();
            // Hits, if any, then the end of them (or a refusal).
            while let Ok(Response::Hits { .. }) = read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME).await {
            }
        }));
    }
    for search in searches {
        search.await.unwrap();
    }
    let overlay = hub.supernode().unwrap().overlay().unwrap().clone();
    let stats = &overlay.stats;
    let forwarded = stats.queries_forwarded.load(std::sync::atomic::Ordering::Relaxed);
    let capped_count = stats.queries_capped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(forwarded <= 4, "forwarded {forwarded} with a cap of 2 a second");
    assert!(capped_count >= 6, "capped {capped_count}");
    let received = edge
        .supernode()
        .unwrap()
        .overlay()
        .unwrap()
        .stats
        .queries_received
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(received, forwarded, "the neighbour saw only what was passed on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_neighbour_cap_holds_while_others_keep_linking() {
    let mut hub_settings = SupernodeConfig::for_this_machine(None);
    hub_settings.overlay.target_neighbours = 2;
    hub_settings.overlay.max_neighbours = 2;
    let (hub, _hub_dir) = supernode(hub_settings, Vec::new()).await;
    let mut others = Vec::new();
    for _ in 0..4 {
        let mut settings = SupernodeConfig::for_this_machine(None);
        settings.overlay.target_neighbours = 3;
        others.push(supernode(settings, vec![hub.peer_addr()]).await);
    }
    let count = |node: &Node| node.supernode().unwrap().overlay().unwrap().neighbours().len();
    // The others learn each other from the hub's referrals and link up.
    for _ in 0..200 {
        if others.iter().all(|(node, _)| count(node) >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        others.iter().all(|(node, _)| count(node) >= 2),
        "the others found each other"
    );
    for _ in 0..20 {
        assert!(count(&hub) <= 2, "the hub never holds more than its cap");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&hub), 2);
}
