//! Run-time promotion on loopback: a qualified leaf (a simulated profile)
//! watches the network, and when every supernode is full it becomes one.

use std::time::Duration;

use canopy_common::proto::election::{ElectionConfig, Profile};
use canopy_node::node::ElectionSettings;
use canopy_node::{Node, NodeConfig};
use canopy_supernode::SupernodeConfig;
use canopy_tests::{start_leaf, LOOPBACK};

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
