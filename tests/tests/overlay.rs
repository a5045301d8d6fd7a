//! Supernodes linked into an overlay over real QUIC on loopback: queries
//! flood with a TTL, each supernode answers once, hits come back along the
//! path, leaves re-home when their supernode dies, and a searching storm
//! is held back without starving anyone else.

use std::time::Duration;

use canopy_common::net::{read_frame, write_frame};
use canopy_common::proto::{Hit, PeerAddr, Query, Request, Response, MAX_CONTROL_FRAME};
use canopy_node::download::SourceSpec;
use canopy_node::leaf::LeafStatus;
use canopy_node::{Node, NodeConfig};
use canopy_supernode::{OverlayConfig, SupernodeConfig};
use canopy_tests::ask;
use canopy_tests::{client, search_until, start_leaf as leaf, until, LOOPBACK};

struct Running {
    node: Node,
    _dir: tempfile::TempDir,
}

async fn supernode(bootstrap: Vec<PeerAddr>, target: usize, max: usize) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK);
    let mut settings = SupernodeConfig::for_this_machine(None);
    settings.overlay = OverlayConfig {
        target_neighbours: target,
        max_neighbours: max,
        search_window: Duration::from_millis(1500),
        ..OverlayConfig::default()
    };
    config.supernode = Some(settings);
    config.bootstrap = bootstrap;
    Running {
        node: Node::start(config).await.unwrap(),
        _dir: dir,
    }
}

fn neighbours(node: &Running) -> usize {
    node.node
        .supernode()
        .unwrap()
        .overlay()
        .unwrap()
        .neighbours()
        .len()
}

fn query(text: &str, ttl: Option<u8>) -> Query {
    Query {
        max_hits: 100,
        ttl,
        ..Query::words(text)
    }
}

fn names(hits: &[Hit]) -> Vec<String> {
    let mut names: Vec<String> = hits.iter().map(|hit| hit.name.clone()).collect();
    names.sort();
    names
}

/// Eight supernodes in a line, five leaves each (one session, so every file
/// sits at a known distance), files named after their supernode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reaches_exactly_ttl_hops_along_a_line() {
    let mut line: Vec<Running> = Vec::new();
    for i in 0..8 {
        let bootstrap = line
            .last()
            .map(|prev| vec![prev.node.peer_addr()])
            .unwrap_or_default();
        line.push(supernode(bootstrap, 1, 2).await);
        if i > 0 {
            let (a, b) = (&line[i - 1], &line[i]);
            until("the line to link", || neighbours(b) == 1 && neighbours(a) >= 1).await;
        }
    }
    let mut leaves = Vec::new();
    for (i, sn) in line.iter().enumerate() {
        for j in 0..5 {
            let name = format!("hop{i} rare sample {j}.txt");
            let content = format!("supernode {i} leaf {j}");
            leaves.push(leaf(sn.node.peer_addr(), 1, &[(name.as_str(), content.as_bytes())]).await);
        }
    }
    assert_eq!(leaves.len(), 40);
    let start = line[0].node.peer_addr();
    // Wait until the farthest files are indexed where they live.
    search_until(line[7].node.peer_addr(), &query("hop7 rare", Some(0)), |hits| {
        hits.len() == 5
    })
    .await;

    for ttl in [0u8, 2, 5] {
        let hits = search_until(start, &query("rare sample", Some(ttl)), |hits| {
            hits.len() == 5 * (usize::from(ttl) + 1)
        })
        .await;
        let reached: std::collections::BTreeSet<String> = hits
            .iter()
            .map(|hit| hit.name.split_whitespace().next().unwrap().to_string())
            .collect();
        let expected: std::collections::BTreeSet<String> = (0..=ttl).map(|i| format!("hop{i}")).collect();
        assert_eq!(reached, expected, "ttl {ttl}");
    }
    // The rare file exactly t hops away is found with TTL t, not t - 1.
    let at_three = query("hop3 rare", Some(3));
    assert_eq!(
        search_until(start, &at_three, |hits| hits.len() == 5).await.len(),
        5
    );
    let (hits, _) = ask(&client(), &[start], &query("hop3 rare", Some(2)))
        .await
        .unwrap();
    assert!(hits.is_empty(), "{:?}", names(&hits));
}

/// In a ring every query arrives at some supernodes twice; each answers once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_supernode_answers_a_query_twice_in_a_ring() {
    let mut ring: Vec<Running> = Vec::new();
    for i in 0..8 {
        let mut bootstrap: Vec<PeerAddr> = ring
            .last()
            .map(|prev| vec![prev.node.peer_addr()])
            .unwrap_or_default();
        let mut target = 1;
        if i == 7 {
            bootstrap.push(ring[0].node.peer_addr());
            target = 2;
        }
        ring.push(supernode(bootstrap, target, 2).await);
    }
    until("the ring to close", || ring.iter().all(|sn| neighbours(sn) == 2)).await;
    // Forty leaves around the ring; one holds the file opposite the asker.
    let mut leaves = Vec::new();
    for i in 0..39 {
        let name = format!("ordinary {i}.txt");
        leaves.push(
            leaf(
                ring[i % 8].node.peer_addr(),
                1,
                &[(name.as_str(), name.as_bytes())],
            )
            .await,
        );
    }
    let holder = leaf(ring[4].node.peer_addr(), 1, &[("opposite side.txt", b"far away")]).await;
    let hits = search_until(ring[0].node.peer_addr(), &query("opposite", Some(7)), |hits| {
        !hits.is_empty()
    })
    .await;
    assert_eq!(hits[0].sources[0].id, holder.node.peer_addr().id);

    let answered = |sn: &Running| {
        sn.node
            .supernode()
            .unwrap()
            .overlay()
            .unwrap()
            .stats
            .queries_answered
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before: Vec<u64> = ring.iter().map(answered).collect();
    let (hits, _) = ask(
        &client(),
        &[ring[0].node.peer_addr()],
        &query("opposite", Some(7)),
    )
    .await
    .unwrap();
    assert_eq!(hits.len(), 1, "one hit, however many paths led to it");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<u64> = ring.iter().map(answered).collect();
    let per_supernode: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(per_supernode, vec![1; 8], "each supernode answered exactly once");
    let dropped: u64 = ring
        .iter()
        .map(|sn| {
            sn.node
                .supernode()
                .unwrap()
                .overlay()
                .unwrap()
                .stats
                .duplicates_dropped
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert!(dropped > 0, "the ring delivered duplicates that were dropped");
}

/// A random overlay of eight supernodes: a file anywhere is found from anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_overlay_finds_files_anywhere() {
    let mut nodes: Vec<Running> = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..8 {
        let mut bootstrap = Vec::new();
        for _ in 0..2.min(i) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bootstrap.push(nodes[(state % i as u64) as usize].node.peer_addr());
        }
        nodes.push(supernode(bootstrap, 2, 8).await);
    }
    until("every supernode to link", || {
        nodes.iter().all(|sn| neighbours(sn) >= 1)
    })
    .await;
    // Forty leaves, five per supernode, each with its own file.
    let mut leaves = Vec::new();
    for i in 0..40 {
        let name = format!("island{} treasure {i}.txt", i % 8);
        leaves.push(
            leaf(
                nodes[i % 8].node.peer_addr(),
                1,
                &[(name.as_str(), name.as_bytes())],
            )
            .await,
        );
    }
    for from in [0, 5] {
        let hits = search_until(
            nodes[from].node.peer_addr(),
            &query("treasure", Some(7)),
            |hits| hits.len() == 40,
        )
        .await;
        assert_eq!(hits.len(), 40);
    }
}

/// Kill a supernode: its leaves, already joined to a second one, stay
/// findable, and they re-home to keep two sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_re_home_when_their_supernode_dies() {
    let first = supernode(vec![], 3, 8).await;
    let second = supernode(vec![first.node.peer_addr()], 3, 8).await;
    let third = supernode(vec![first.node.peer_addr(), second.node.peer_addr()], 3, 8).await;
    until("a full mesh", || {
        [&first, &second, &third].iter().all(|sn| neighbours(sn) == 2)
    })
    .await;

    let orphan = leaf(
        first.node.peer_addr(),
        2,
        &[("orphaned diary.txt", b"dear diary")],
    )
    .await;
    let mut status = orphan.node.leaf_status();
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.joined.len() == 2))
        .await
        .expect("the leaf took a second supernode")
        .unwrap();

    let killed = first.node.peer_addr();
    first.node.shutdown().await;
    let started = std::time::Instant::now();
    let survivor = if status.borrow().joined.contains_key(&second.node.peer_addr().id) {
        &third
    } else {
        &second
    };
    let hits = search_until(
        survivor.node.peer_addr(),
        &query("orphaned diary", Some(2)),
        |hits| hits.len() == 1,
    )
    .await;
    assert_eq!(hits[0].sources[0].id, orphan.node.peer_addr().id);
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.joined.len() == 2 && !s.joined.contains_key(&killed.id)),
    )
    .await
    .expect("re-homed to two live supernodes within 10 s")
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// One leaf floods searches; it is held to its budget, others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_storm_is_rate_limited_without_starving_others() {
    let sn = supernode(vec![], 1, 8).await;
    let _holder = leaf(sn.node.peer_addr(), 1, &[("calm water.txt", b"calm")]).await;
    let address = sn.node.peer_addr();
    search_until(address, &query("calm", None), |hits| hits.len() == 1).await;

    // The storm, by hand (the searcher would wait as told): one
    // connection, 40 searches as fast as they go.
    let stormer = client();
    let connection = stormer.connect(&address).await.unwrap();
    let mut told_to_wait = 0;
    for _ in 0..40 {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        write_frame(&mut send, &Request::Search(query("calm", None)))
            .await
            .unwrap();
        let _ = send.finish();
        if let Response::Busy { retry_after_ms } = read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME)
            .await
            .unwrap()
        {
            assert_eq!(retry_after_ms, 200, "a fifth of a second: the budget's refill");
            told_to_wait += 1;
        }
    }
    assert!(
        told_to_wait >= 25,
        "only {told_to_wait} of 40 storm searches were held back"
    );
    let (hits, _) = ask(&client(), &[address], &query("calm", None))
        .await
        .expect("a calm leaf is served");
    assert_eq!(hits.len(), 1);
}

/// A searcher over its budget is told to wait, not refused: it waits as
/// asked and is served, every time (the CLI and the app search this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_searcher_over_its_budget_waits_and_is_served() {
    let sn = supernode(vec![], 1, 8).await;
    let _holder = leaf(sn.node.peer_addr(), 1, &[("patient reader.txt", b"patience")]).await;
    let address = sn.node.peer_addr();
    search_until(address, &query("patient", None), |hits| hits.len() == 1).await;

    let searcher = canopy_node::searcher::Searcher::one_shot(client(), vec![address]);
    for round in 0..25 {
        let answer = searcher
            .search(&query("patient", None), &mut |_| {})
            .await
            .unwrap_or_else(|error| panic!("search {round} failed: {error}"));
        assert_eq!(answer.hits.len(), 1, "search {round}");
    }
}

/// A leaf of `supernode` that accepts no connections, sharing `content`
/// as `name`, once it has published it.
async fn firewalled_leaf(supernode: PeerAddr, name: &str, content: &[u8]) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join(name), content).unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK).sharing(share);
    config.bootstrap = vec![supernode];
    config.accept_inbound = false;
    let hidden = Node::start(config).await.unwrap();
    let mut status = hidden.leaf_status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s: &LeafStatus| s.published(1)),
    )
    .await
    .unwrap()
    .unwrap();
    (hidden, dir)
}

/// A leaf that accepts no connections is listed as a relayed source; a
/// downloader asks its supernode for a push and the leaf calls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewalled_leaf_is_downloadable_through_a_push() {
    let sn = supernode(vec![], 1, 8).await;
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let (hidden, _dir) = firewalled_leaf(sn.node.peer_addr(), "behind the wall.bin", &content).await;

    let hits = search_until(sn.node.peer_addr(), &query("behind wall", None), |hits| {
        !hits.is_empty()
    })
    .await;
    assert!(
        hits[0].sources.is_empty(),
        "a firewalled leaf is not offered for direct connection"
    );
    assert_eq!(hits[0].relayed.len(), 1);
    assert_eq!(hits[0].relayed[0].leaf, hidden.peer_addr().id);

    // Direct connections really are refused...
    let direct = canopy_tests::start_downloader().await;
    let error = direct
        .fetch(
            hits[0].hash,
            vec![hidden.peer_addr()],
            "direct.bin",
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(canopy_node::cli::exit::of_download(&error), 4, "{error}");

    // ...but a push gets the file.
    let downloader = canopy_tests::start_downloader().await;
    let output = downloader.path("pushed.bin");
    let relayed = SourceSpec::relayed(hits[0].relayed[0].leaf, hits[0].relayed[0].via);
    let download = downloader
        .node
        .download_from(hits[0].hash, &output, vec![relayed], Default::default());
    let report = download.wait().await.expect("download through a push");
    assert_eq!(std::fs::read(&output).unwrap(), content);
    assert!(report
        .sources
        .iter()
        .any(|s| s.bytes > 0 && s.peer.starts_with(&hidden.peer_addr().id.to_string())));
}

/// The desktop app finds a firewalled leaf's file by its hash alone (no
/// search result to start from) and fetches it through a push: the app and
/// `canopy get` share one way of finding sources, relayed ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desktop_app_downloads_from_a_firewalled_leaf() {
    let sn = supernode(vec![], 1, 8).await;
    let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 249) as u8).collect();
    let (_hidden, _dir) = firewalled_leaf(sn.node.peer_addr(), "hidden.bin", &content).await;
    let hash = canopy_common::proto::ContentHash::of(&content);
    search_until(sn.node.peer_addr(), &Query::for_hash(hash), |hits| {
        hits.first().is_some_and(|hit| hit.relayed.len() == 1)
    })
    .await;

    let app_dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(app_dir.path().join("data"), LOOPBACK);
    config.bootstrap = vec![sn.node.peer_addr()];
    let app = Node::start(config).await.unwrap();
    let services = canopy_node::web::ServicesConfig {
        downloads: Some(app_dir.path().join("Downloads")),
        ..Default::default()
    };
    let services = canopy_node::web::Services::attach(&app, services).await.unwrap();
    let downloads = services.downloads().expect("the app's downloads");
    downloads.add(hash, Some("hidden.bin"), None).unwrap();
    until("the app's download to finish", || {
        downloads.get(&hash).is_some_and(|d| d["state"] == "done")
    })
    .await;
    let path = app_dir.path().join("Downloads").join("hidden.bin");
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supernode_links_to_the_nearest_of_those_it_knows() {
    // Two supernodes that dial nobody, one of them behind a slow path.
    let near = supernode(vec![], 0, 8).await;
    let far = supernode(vec![], 0, 8).await;
    let far_path = canopy_tests::slow_path_to(far.node.peer_addr().addr, Duration::from_millis(150)).await;
    let far_via_slow_path = PeerAddr::new(far.node.peer_addr().id, far_path);
    // One wanted link; the far one is listed first.
    let me = supernode(vec![far_via_slow_path, near.node.peer_addr()], 1, 8).await;
    until("a link", || neighbours(&me) == 1).await;
    let linked = me.node.supernode().unwrap().overlay().unwrap().neighbours();
    assert_eq!(
        linked[0].id,
        near.node.peer_addr().id,
        "linked to the far supernode"
    );
}
