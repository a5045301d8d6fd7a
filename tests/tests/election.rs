//! Run-time elections on loopback: a qualified leaf (a simulated profile)
//! watches the network and becomes a supernode when every supernode is
//! full; a supernode with too few leaves hands them on and becomes a leaf.

use std::time::Duration;

use canopy_common::proto::election::{ElectionConfig, Profile};
use canopy_common::proto::Query;
use canopy_node::node::ElectionSettings;
use canopy_node::{Node, NodeConfig};
use canopy_supernode::SupernodeConfig;
use canopy_tests::{search_until, start_leaf, until, LOOPBACK};

fn qualified() -> Profile {
    Profile {
        cores: 4,
        memory_total: 8 << 30,
        memory_available: 4 << 30,
        uptime: Duration::from_secs(3600),
        os: "test".into(),
        upload: Some(50_000_000 / 8),
        download: Some(50_000_000 / 8),
        reachable: Some(true),
    }
}

fn quick_rules() -> ElectionConfig {
    ElectionConfig {
        min_tenure: Duration::ZERO,
        shortage_for: Duration::from_millis(500),
        ..ElectionConfig::default()
    }
}

async fn candidate(
    dir: &tempfile::TempDir,
    name: &str,
    bootstrap: canopy_common::proto::PeerAddr,
    profile: Profile,
) -> Node {
    let mut config = NodeConfig::new(dir.path().join(name), LOOPBACK);
    config.bootstrap = vec![bootstrap];
    config.election = Some(ElectionSettings {
        profile,
        rules: quick_rules(),
        observe_every: Duration::from_millis(200),
        supernode: None,
    });
    Node::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qualified_leaf_promotes_when_every_supernode_is_full_and_a_slow_one_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("full"), LOOPBACK);
    let mut settings = SupernodeConfig::for_this_machine(None);
    settings.max_leaves = 1;
    config.supernode = Some(settings);
    let full = Node::start(config).await.unwrap();
    let _occupant = start_leaf(full.peer_addr(), 1, &[("occupant.txt", b"here first")]).await;

    let mut slow_profile = qualified();
    slow_profile.upload = Some(100_000 / 8);
    let slow = candidate(&dir, "slow", full.peer_addr(), slow_profile).await;
    let fast = candidate(&dir, "fast", full.peer_addr(), qualified()).await;

    for _ in 0..100 {
        if fast.supernode().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = fast.supernode().expect("the qualified leaf promoted itself");
    // It joins the overlay, and new leaves can join it.
    for _ in 0..100 {
        if promoted.overlay().is_some_and(|o| !o.neighbours().is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        promoted.overlay().unwrap().neighbours()[0].id,
        full.peer_addr().id
    );
    let newcomer = start_leaf(fast.peer_addr(), 1, &[("newcomer.txt", b"hello")]).await;
    assert_eq!(promoted.leaf_count(), 1);
    assert!(slow.supernode().is_none(), "a slow machine stays a leaf");
    newcomer.node.shutdown().await;
}

async fn supernode(
    dir: &tempfile::TempDir,
    name: &str,
    bootstrap: Vec<canopy_common::proto::PeerAddr>,
) -> Node {
    let mut config = NodeConfig::new(dir.path().join(name), LOOPBACK);
    config.supernode = Some(SupernodeConfig::for_this_machine(None));
    config.bootstrap = bootstrap;
    Node::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_supernode_hands_its_leaves_on_and_becomes_a_leaf_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let first = supernode(&dir, "first", Vec::new()).await;
    let second = supernode(&dir, "second", vec![first.peer_addr()]).await;

    // An elected supernode that shares a file, with quick rules: fewer than
    // two leaves for a second while two neighbours could take them.
    let share = dir.path().join("idle-share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("idle supernode notes.txt"), b"kept by the idle one").unwrap();
    let mut config = NodeConfig::new(dir.path().join("idle"), LOOPBACK).sharing(share);
    config.supernode = Some(SupernodeConfig::for_this_machine(None));
    config.bootstrap = vec![first.peer_addr(), second.peer_addr()];
    config.election = Some(ElectionSettings {
        profile: qualified(),
        rules: ElectionConfig {
            min_tenure: Duration::from_secs(2),
            few_leaves: 2,
            idle_for: Duration::from_secs(1),
            enough_neighbours: 2,
            ..ElectionConfig::default()
        },
        observe_every: Duration::from_millis(200),
        supernode: None,
    });
    let idle = Node::start(config).await.unwrap();
    // Its one leaf knows no other supernode.
    let leaf = start_leaf(idle.peer_addr(), 1, &[("leaf song.mp3", b"la la la")]).await;
    assert!(leaf
        .node
        .leaf_status()
        .borrow()
        .joined
        .contains_key(&idle.peer_addr().id));

    until("the idle supernode to step down", || idle.supernode().is_none()).await;
    let others = [first.peer_addr().id, second.peer_addr().id];
    let leaf_status = leaf.node.leaf_status();
    until("the leaf to re-home to a neighbour", || {
        leaf_status.borrow().joined.keys().any(|id| others.contains(id))
    })
    .await;
    let idle_status = idle.leaf_status();
    until("the demoted node to join as a leaf", || {
        idle_status.borrow().joined.keys().any(|id| others.contains(id))
    })
    .await;
    // The overlay no longer counts it as a supernode.
    until("the neighbours to drop the link", || {
        [&first, &second].iter().all(|s| {
            s.supernode().is_some_and(|s| {
                s.overlay()
                    .is_some_and(|o| o.neighbours().iter().all(|n| n.id != idle.peer_addr().id))
            })
        })
    })
    .await;

    // Both the leaf's files and the demoted node's are found through the
    // remaining supernodes.
    for words in ["leaf song", "idle supernode notes"] {
        search_until(first.peer_addr(), &Query::words(words), |hits| hits.len() == 1).await;
    }
    // No flapping: the other supernodes have room, so it stays a leaf.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(idle.supernode().is_none(), "the demoted node stayed a leaf");
    let status = canopy_tests::client();
    let answer = canopy_node::measure::status(&status, &idle.peer_addr()).await;
    assert_eq!(answer, None, "a leaf reports no supernode room");
}
