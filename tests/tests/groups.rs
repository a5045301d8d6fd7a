//! Private groups on loopback: two private networks and the public one,
//! each with a supernode and a leaf, real QUIC, real files. Nothing crosses
//! a boundary (no query, hit, publish or byte); an outsider with the name
//! but not the key fails at the handshake, and one that copies the ALPN id
//! still fails the membership proof; an invited node joins through the real
//! `canopy group new/invite/join` path and finds the group's files; a new
//! key on disk takes effect while the nodes run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use canopy_common::net::{tls, Endpoint, EndpointConfig, NetError, Network, NodeKey, NOT_A_MEMBER};
use canopy_common::proto::network::{alpn, Invite, NetworkKey};
use canopy_common::proto::{ContentHash, PeerAddr, Query};
use canopy_node::download::DownloadOptions;
use canopy_node::groups::{self as group, GroupOptions};
use canopy_node::{Node, NodeConfig};
use canopy_tests::ask;
use canopy_tests::{
    client, network, new_key_file, search_from_until, start_member, wait_published, Member, LOOPBACK,
};

/// Requests served and bytes sent by a node so far.
fn traffic(node: &Node) -> (u64, u64) {
    let stats = node.stats();
    (
        stats.requests.load(Ordering::Relaxed),
        stats.bytes_sent.load(Ordering::Relaxed),
    )
}

/// One network: a supernode and a leaf, each sharing a file named after it.
struct Net {
    name: &'static str,
    supernode: Member,
    leaf: Member,
    files: Vec<ContentHash>,
}

async fn start_net(name: &'static str, settings: Option<canopy_node::network::NetworkSettings>) -> Net {
    let supernode_file = format!("{name} notes from the supernode.txt");
    let leaf_file = format!("{name} notes from the leaf.txt");
    let supernode_bytes = format!("{name}: the supernode's notes").into_bytes();
    let leaf_bytes = format!("{name}: the leaf's notes, a little longer").into_bytes();
    let supernode = start_member(settings.clone(), None, &[(&supernode_file, &supernode_bytes)]).await;
    let leaf = start_member(
        settings,
        Some(supernode.node.peer_addr()),
        &[(&leaf_file, &leaf_bytes)],
    )
    .await;
    Net {
        name,
        supernode,
        leaf,
        files: vec![ContentHash::of(&supernode_bytes), ContentHash::of(&leaf_bytes)],
    }
}

fn notes() -> Query {
    Query::words("notes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_and_the_public_network_stay_apart() {
    let keys = tempfile::tempdir().unwrap();
    let alpha = start_net(
        "alpha",
        Some(network("alpha", &new_key_file(keys.path(), "alpha"))),
    )
    .await;
    let beta = start_net("beta", Some(network("beta", &new_key_file(keys.path(), "beta")))).await;
    let public = start_net("public", None).await;
    let nets = [&alpha, &beta, &public];

    // Inside each network, a search finds both of its files and nothing else.
    for net in nets {
        let hits = search_from_until(
            net.leaf.node.endpoint(),
            net.supernode.node.peer_addr(),
            &notes(),
            |hits| hits.len() >= 2,
        )
        .await;
        let mut found: Vec<ContentHash> = hits.iter().map(|h| h.hash).collect();
        found.sort();
        let mut own = net.files.clone();
        own.sort();
        assert_eq!(found, own, "{} sees exactly its own files", net.name);
        assert!(hits.iter().all(|h| h.name.starts_with(net.name)));
    }
    // A member downloads inside its network (the control for what follows).
    let inside = tempfile::tempdir().unwrap();
    let report = alpha
        .leaf
        .node
        .download(
            alpha.files[0],
            &inside.path().join("ok"),
            vec![alpha.supernode.node.peer_addr()],
            DownloadOptions::default(),
        )
        .wait()
        .await
        .expect("a member downloads from a member");
    assert_eq!(report.hash, alpha.files[0]);

    let before: Vec<[(u64, u64); 2]> = nets
        .iter()
        .map(|net| [traffic(&net.supernode.node), traffic(&net.leaf.node)])
        .collect();

    for from in nets {
        for to in nets {
            if std::ptr::eq(from, to) {
                continue;
            }
            // No query crosses: the other network's supernode refuses the
            // handshake, so neither the query nor any hit travels.
            let error = ask(
                from.leaf.node.endpoint(),
                &[to.supernode.node.peer_addr()],
                &notes(),
            )
            .await
            .expect_err("a search across a boundary fails");
            assert!(
                format!("{error:#}").contains("refused by"),
                "{} → {}: {error:#}",
                from.name,
                to.name
            );
            // No byte crosses: a download by hash from the other network's
            // leaf fails, whichever network asks.
            let out = tempfile::tempdir().unwrap();
            let result = from
                .leaf
                .node
                .download(
                    to.files[1],
                    &out.path().join("x"),
                    vec![to.leaf.node.peer_addr()],
                    DownloadOptions::default(),
                )
                .wait()
                .await;
            assert!(result.is_err(), "{} fetched {}'s file", from.name, to.name);
            assert!(!out.path().join("x").exists());
        }
    }

    // No publish crosses: a leaf of beta pointed at alpha's supernode is
    // never welcomed, and alpha's index still holds its one leaf.
    let stray = start_stray_leaf(
        Some(network("beta", &keys.path().join("beta.key"))),
        alpha.supernode.node.peer_addr(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(stray.node.leaf_status().borrow().joined.is_empty());
    let error = stray
        .node
        .leaf_status()
        .borrow()
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("refused by"), "{error}");
    assert_eq!(alpha.supernode.node.supernode().unwrap().leaf_count(), 1);
    // A public leaf pointed at a group supernode fares no better.
    let stray_public = start_stray_leaf(None, beta.supernode.node.peer_addr()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stray_public.node.leaf_status().borrow().joined.is_empty());
    assert_eq!(beta.supernode.node.supernode().unwrap().leaf_count(), 1);

    // And the nodes' own counters agree: not one request was served, not
    // one byte sent, across any boundary.
    let after: Vec<[(u64, u64); 2]> = nets
        .iter()
        .map(|net| [traffic(&net.supernode.node), traffic(&net.leaf.node)])
        .collect();
    assert_eq!(before, after);
    // Searches inside still work after all that.
    for net in nets {
        let (hits, _) = ask(
            net.leaf.node.endpoint(),
            &[net.supernode.node.peer_addr()],
            &notes(),
        )
        .await
        .unwrap();
        assert!(hits.iter().all(|h| net.files.contains(&h.hash)));
    }
}

/// A leaf sharing one file that tries to join `supernode`.
async fn start_stray_leaf(
    settings: Option<canopy_node::network::NetworkSettings>,
    supernode: PeerAddr,
) -> Member {
    let data = tempfile::tempdir().unwrap();
    let share = data.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("stray notes.txt"), b"should never be indexed").unwrap();
    let mut config = NodeConfig::new(data.path().join("data"), LOOPBACK).sharing(share);
    config.network = settings;
    config.bootstrap = vec![supernode];
    let node = Node::start(config).await.unwrap();
    Member::from_parts(node, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_with_the_name_but_not_the_key_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = new_key_file(keys.path(), "alpha");
    let supernode = start_member(
        Some(network("alpha", &key_file)),
        None,
        &[("alpha notes.txt", b"hi")],
    )
    .await;
    let target = supernode.node.peer_addr();

    // The right name, a wrong key: the handshake finds no common ALPN id.
    let wrong = Network {
        name: "alpha".parse().unwrap(),
        key: NetworkKey([0x55; 32]),
        allow: None,
    };
    let outsider = Endpoint::bind_in(
        NodeKey::generate().unwrap(),
        LOOPBACK,
        &EndpointConfig::default(),
        Some(wrong),
    )
    .unwrap();
    let error = outsider.connect(&target).await.expect_err("refused");
    assert!(matches!(error, NetError::NoCommonNetwork { .. }), "{error:?}");
    assert!(error.to_string().contains("refused by"), "{error}");
    // A public node cannot connect either.
    assert!(matches!(
        client().connect(&target).await,
        Err(NetError::NoCommonNetwork { .. })
    ));

    // An outsider that copied the ALPN id off the wire gets through TLS,
    // but not past the proof: it cannot compute it without the key.
    let key = NetworkKey::from_file_text(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let copied = alpn(&"alpha".parse().unwrap(), &key);
    let stranger = NodeKey::generate().unwrap();
    let tls = tls::client_config(&stranger, Some(target.id), &copied).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut raw = quinn::Endpoint::client(LOOPBACK).unwrap();
    raw.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connection = raw
        .connect(target.addr, "canopy")
        .unwrap()
        .await
        .expect("TLS passes");
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // A request frame where the proof belongs: read as a (wrong) proof.
    let mut bogus = canopy_common::proto::frame::encode(
        &canopy_common::proto::Request::Status,
        canopy_common::proto::MAX_CONTROL_FRAME,
    )
    .unwrap();
    bogus.resize(32, 0);
    send.write_all(&bogus).await.unwrap();
    let mut answer = [0u8; 32];
    let lost = recv
        .read_exact(&mut answer)
        .await
        .expect_err("no proof comes back");
    let reason = connection.closed().await;
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(NOT_A_MEMBER), "{lost}");
            assert_eq!(&close.reason[..], b"not a member of network alpha");
        }
        other => panic!("expected a NOT_A_MEMBER close, got {other}"),
    }
    assert_eq!(
        traffic(&supernode.node),
        (0, 0),
        "nothing was served to outsiders"
    );
    let refused = supernode
        .node
        .endpoint()
        .membership()
        .unwrap()
        .refused
        .load(Ordering::Relaxed);
    assert_eq!(refused, 1);
}

/// A UDP port free right now on loopback.
fn free_port() -> u16 {
    std::net::UdpSocket::bind(LOOPBACK)
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_node_joins_finds_the_files_and_a_new_key_cuts_off_the_old() {
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let name = "family".parse().unwrap();
    // Alice: `canopy group new family --port P --host 127.0.0.1`.
    let port = free_port();
    let created = group::create(
        alice_dir.path(),
        &name,
        &GroupOptions {
            port: Some(port),
            share: Vec::new(),
        },
    )
    .unwrap();
    let photo = b"a photo of the family, every byte of it".repeat(1000);
    std::fs::write(created.settings.share[0].join("family photo.jpg"), &photo).unwrap();
    let mut alice_config = created.node_config(&NodeConfig::new(alice_dir.path().into(), LOOPBACK));
    // As `group new` writes it: every interface, the chosen port.
    assert_eq!(
        alice_config.listen,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    );
    alice_config.network.as_mut().unwrap().reload_every = Duration::from_millis(100);
    let alice = Node::start(alice_config).await.unwrap();
    assert!(
        alice.supernode().is_some(),
        "the creator is the group's supernode"
    );

    // `canopy group invite family`, sent as text, then `canopy group join`.
    let invite = group::open(alice_dir.path(), &name)
        .unwrap()
        .invite(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .unwrap()
        .to_string();
    let alice_at = PeerAddr::new(
        alice.peer_addr().id,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
    );
    assert_eq!(invite.parse::<Invite>().unwrap().members, vec![alice_at]);
    let joined = group::join(bob_dir.path(), &invite.parse().unwrap(), &GroupOptions::default()).unwrap();
    let bobs = &group::list(bob_dir.path())[0];
    assert_eq!(bobs.name, joined.name);
    let mut bob_config = bobs.node_config(&NodeConfig::new(bob_dir.path().into(), LOOPBACK));
    bob_config.listen = LOOPBACK;
    bob_config.network.as_mut().unwrap().reload_every = Duration::from_millis(100);
    let bob = Node::start(bob_config).await.unwrap();
    assert!(bob.supernode().is_none(), "an invitee joins as a leaf");
    wait_published(&bob, 0).await;

    // Bob finds Alice's file through the group and fetches it, verified.
    let hits = search_from_until(bob.endpoint(), alice_at, &Query::words("photo"), |h| {
        !h.is_empty()
    })
    .await;
    assert_eq!(hits[0].hash, ContentHash::of(&photo));
    // Alice is bound to 0.0.0.0; the hit names her where Bob reached her.
    assert_eq!(hits[0].sources, vec![alice_at]);
    let out = tempfile::tempdir().unwrap();
    bob.download(
        hits[0].hash,
        &out.path().join("photo.jpg"),
        hits[0].sources.clone(),
        DownloadOptions::default(),
    )
    .wait()
    .await
    .expect("an invited member downloads");
    assert_eq!(std::fs::read(out.path().join("photo.jpg")).unwrap(), photo);
    // The public network knows nothing of it.
    assert!(client().connect(&alice_at).await.is_err());

    // Alice writes a new key (as after someone left): Bob, still on the old
    // one, is cut off within moments, without a restart on either side.
    let alices_key = created.dir.join(group::KEY_FILE);
    let fresh = NetworkKey(canopy_common::net::random_bytes());
    std::fs::write(&alices_key, fresh.to_hex()).unwrap();
    let alice_supernode = alice.supernode().unwrap();
    wait_until("Bob's session to be closed", || alice_supernode.leaf_count() == 0).await;
    let error = ask(bob.endpoint(), &[alice_at], &Query::words("photo"))
        .await
        .expect_err("the old key is refused");
    assert!(format!("{error:#}").contains("refused by"), "{error:#}");

    // Bob is handed the new key: he is back in, again without a restart.
    std::fs::write(joined.dir.join(group::KEY_FILE), fresh.to_hex()).unwrap();
    wait_until("Bob to rejoin", || alice_supernode.leaf_count() == 1).await;
    let hits = search_from_until(bob.endpoint(), alice_at, &Query::words("photo"), |h| {
        !h.is_empty()
    })
    .await;
    assert_eq!(hits[0].hash, ContentHash::of(&photo));
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..150 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A node's data folder with its key made ahead, so its peer id can go on
/// allow-lists before it starts.
fn identity(root: &std::path::Path, name: &str) -> (std::path::PathBuf, canopy_common::proto::PeerId) {
    let dir = root.join(name);
    (dir.clone(), NodeKey::load_or_create(&dir).unwrap().peer_id())
}

/// Network "crew" run on an allow-list alone (no secret key), read from `list`.
fn crew(list: &std::path::Path) -> canopy_node::network::NetworkSettings {
    let mut settings = network("crew", list);
    settings.key_file = None;
    settings.allow_file = Some(list.to_path_buf());
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_admits_only_its_peers_and_changes_live() {
    let root = tempfile::tempdir().unwrap();
    let (hub_dir, hub) = identity(root.path(), "hub");
    let (member_dir, member) = identity(root.path(), "member");
    let (stranger_dir, _) = identity(root.path(), "stranger");
    let hub_list = root.path().join("hub.allow");
    std::fs::write(&hub_list, format!("# the crew\n{member}\n{hub}\n")).unwrap();
    // Everyone else's list holds everyone: only the hub's decides here.
    let open_list = root.path().join("open.allow");
    let stranger_id = NodeKey::load_or_create(&stranger_dir).unwrap().peer_id();
    std::fs::write(&open_list, format!("{hub}\n{member}\n{stranger_id}\n")).unwrap();

    let mut config = NodeConfig::new(hub_dir.clone(), LOOPBACK);
    config.network = Some(crew(&hub_list));
    config.supernode = Some(canopy_supernode::SupernodeConfig::for_this_machine(Some(
        hub_dir.join("index"),
    )));
    let hub_node = Node::start(config).await.unwrap();
    let hub_addr = hub_node.peer_addr();

    let mut config = NodeConfig::new(member_dir, LOOPBACK);
    config.network = Some(crew(&open_list));
    config.bootstrap = vec![hub_addr];
    let member_node = Node::start(config).await.unwrap();
    wait_published(&member_node, 0).await;

    // The right name and the (public) key of a list-only network, but not
    // on the hub's list: refused after the handshake, with the reason.
    let stranger = Endpoint::bind_in(
        NodeKey::load_or_create(&stranger_dir).unwrap(),
        LOOPBACK,
        &EndpointConfig::default(),
        Some(crew(&open_list).load().unwrap()),
    )
    .unwrap();
    let error = ask(&stranger, &[hub_addr], &Query::words("anything"))
        .await
        .expect_err("not on the list");
    assert!(
        format!("{error:#}").contains("not a member of network crew"),
        "{error:#}"
    );

    // The hub drops the member from its list: the session is closed at once.
    std::fs::write(&hub_list, format!("{hub}\n")).unwrap();
    let supernode = hub_node.supernode().unwrap();
    wait_until("the member's session to be closed", || {
        supernode.leaf_count() == 0
    })
    .await;
    let status = member_node.leaf_status();
    wait_until("the member to see it", || status.borrow().joined.is_empty()).await;
}
