//! Peers that attack a limit: each test floods one, and checks that the node
//! holds it and still serves honest peers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use canopy_common::net::{read_frame, write_frame, Endpoint, EndpointConfig, NodeKey};
use canopy_common::proto::routing::{FloodQuery, QueryId};
use canopy_common::proto::wire::{LinkHello, LinkNotice, OverlayMessage};
use canopy_common::proto::{
    ContentHash, FileKind, Hit, PeerAddr, Query, Request, Response, MAX_CONTROL_FRAME,
};
use canopy_node::admission::ConnectionLimits;
use canopy_node::download::DownloadOptions;
use canopy_node::{Node, NodeConfig};
use canopy_supernode::SupernodeConfig;
use canopy_tests::{
    client, patterned, search_until, start_downloader, start_leaf, start_sharer, until, LOOPBACK,
};
use quinn::{RecvStream, SendStream};

/// An endpoint with a fresh key bound to another loopback address, so its
/// connections count against that address, not against honest peers'.
fn stranger(ip: [u8; 4]) -> Endpoint {
    let addr = SocketAddr::from((ip, 0));
    Endpoint::bind(NodeKey::generate().unwrap(), addr, &EndpointConfig::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_cannot_take_every_upload_slot() {
    let data = patterned(24 << 20);
    let hash = ContentHash::of(&data);
    let sharer = start_sharer(&[("big.bin", data.clone())]).await;
    // One attacker connection asks for the whole file on 40 streams and
    // reads none of it (with small receive windows, so the node's writes
    // block at once).
    let small_windows = EndpointConfig {
        stream_receive_window: 16 << 10,
        ..EndpointConfig::default()
    };
    let attacker = Endpoint::bind(NodeKey::generate().unwrap(), LOOPBACK, &small_windows).unwrap();
    let connection = attacker.connect(&sharer.node.peer_addr()).await.unwrap();
    let mut held = Vec::new();
    let mut busy = 0;
    for _ in 0..40 {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        write_frame(
            &mut send,
            &Request::Blocks {
                hash,
                first: 0,
                count: 64,
            },
        )
        .await
        .unwrap();
        send.finish().unwrap();
        match read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME)
            .await
            .unwrap()
        {
            Response::Blocks { .. } => held.push(recv),
            Response::Busy { .. } => busy += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        held.len(),
        canopy_node::state::SLOTS_PER_PEER,
        "one peer gets its share of slots"
    );
    assert_eq!(busy, 40 - canopy_node::state::SLOTS_PER_PEER);

    // An honest downloader is served in full meanwhile.
    let honest = start_downloader().await;
    tokio::time::timeout(
        Duration::from_secs(30),
        honest.fetch(
            hash,
            vec![sharer.node.peer_addr()],
            "big.bin",
            DownloadOptions::default(),
        ),
    )
    .await
    .expect("the honest download is not starved")
    .unwrap();
    assert_eq!(std::fs::read(honest.path("big.bin")).unwrap(), data);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_capped_per_address_and_per_peer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("share")).unwrap();
    std::fs::write(dir.path().join("share/file.txt"), b"still served").unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK).sharing(dir.path().join("share"));
    config.connection_limits = ConnectionLimits {
        per_address: 8,
        per_peer: 2,
    };
    let node = Node::start(config).await.unwrap();
    let target = node.peer_addr();

    // Twelve keys from one address: eight get in, the rest are refused.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        let endpoint = stranger([127, 0, 0, 2]);
        // A refused connection fails at once; the wait is for a handshake
        // on a loaded machine (one that timed out here would still hold
        // its slot at the node until its own handshake gave up).
        match tokio::time::timeout(Duration::from_secs(15), endpoint.connect(&target)).await {
            Ok(Ok(connection)) => flood.push((endpoint, connection)),
            _ => refused += 1,
        }
    }
    assert_eq!(flood.len(), 8);
    assert_eq!(refused, 4);

    // One key from another address: of three connections, one is closed at
    // once. (Which one is the node's race: each is counted once its
    // handshake is done on the node's side, not in the order they were made.)
    let one_key = stranger([127, 0, 0, 3]);
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(one_key.connect(&target).await.unwrap());
    }
    let closed = || kept.iter().filter(|c| c.close_reason().is_some()).count();
    until("a connection over the per-peer cap to be closed", || closed() > 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(closed(), 1, "only the connection over the cap is closed");

    // An honest peer from its own address is served.
    let honest = stranger([127, 0, 0, 1]);
    let connection = honest.connect(&target).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let hash = ContentHash::of(b"still served");
    write_frame(&mut send, &Request::BlockLayer { hash })
        .await
        .unwrap();
    send.finish().unwrap();
    let answer: Response = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
    assert_eq!(answer, Response::BlockLayer { size: 12 });
    drop(kept);
}

/// A raw overlay link to `supernode`, as a misbehaving supernode would open it.
async fn rogue_link(
    endpoint: &Endpoint,
    supernode: &PeerAddr,
) -> (quinn::Connection, SendStream, RecvStream) {
    let connection = endpoint.connect(supernode).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let hello = LinkHello {
        listen: endpoint.local_addr(),
    };
    write_frame(&mut send, &Request::Link(hello)).await.unwrap();
    let notice: LinkNotice = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
    assert_eq!(notice, LinkNotice::Accepted);
    (connection, send, recv)
}

/// The next query the victim forwards on `recv` (skipping host lists).
async fn next_query(recv: &mut RecvStream) -> Option<FloodQuery> {
    let wait = async {
        loop {
            match read_frame::<OverlayMessage>(recv, MAX_CONTROL_FRAME).await {
                Ok(OverlayMessage::Query(query)) => return Some(query),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .ok()
        .flatten()
}

fn flood(text: &str, ttl: u8, id: u8) -> OverlayMessage {
    OverlayMessage::Query(FloodQuery {
        id: QueryId([id; 16]),
        ttl,
        hops: 0,
        query: Query::words(text),
    })
}

fn fake_hit(n: u32) -> Hit {
    Hit {
        hash: ContentHash([n as u8; 32]),
        size: 1,
        name: format!("fake {n}"),
        kind: FileKind::Other,
        sources: Vec::new(),
        source_count: 0,
        relayed: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_supernode_cannot_inflate_ttls_inject_hits_or_oversize_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("victim"), LOOPBACK);
    config.supernode = Some(SupernodeConfig::for_this_machine(None));
    let victim = Node::start(config).await.unwrap();
    let _leaf = start_leaf(victim.peer_addr(), 1, &[("honest song.mp3", b"la la")]).await;
    let (rogue, watcher) = (client(), client());
    let (_c1, mut rogue_send, mut rogue_recv) = rogue_link(&rogue, &victim.peer_addr()).await;
    let (_c2, _watch_send, mut watch_recv) = rogue_link(&watcher, &victim.peer_addr()).await;
    // The victim answers a link before it lists the neighbour; a query
    // that came in between would not be passed to it.
    let overlay = victim.supernode().unwrap().overlay().unwrap().clone();
    until("both links to be listed", || overlay.neighbours().len() == 2).await;

    // TTL inflation: a query claiming 255 hops to go leaves with at most 6.
    write_frame(&mut rogue_send, &flood("anything", 255, 1))
        .await
        .unwrap();
    let forwarded = next_query(&mut watch_recv).await.expect("the query is passed on");
    assert_eq!(forwarded.ttl, 6, "capped at 7 on arrival, one hop spent");
    assert_eq!(forwarded.hops, 1);

    // Hits for a query id the victim never saw go nowhere.
    let unknown = OverlayMessage::Hits {
        id: QueryId([99; 16]),
        hits: vec![fake_hit(1)],
    };
    write_frame(&mut rogue_send, &unknown).await.unwrap();
    let leaked = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Ok(OverlayMessage::Hits { .. }) =
                read_frame::<OverlayMessage>(&mut watch_recv, MAX_CONTROL_FRAME).await
            {
                return;
            }
        }
    })
    .await;
    assert!(leaked.is_err(), "hits for an unknown query are dropped");

    // A query over the text cap closes the link; so do 201 hits at once.
    write_frame(&mut rogue_send, &flood(&"x".repeat(1000), 2, 2))
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while read_frame::<OverlayMessage>(&mut rogue_recv, MAX_CONTROL_FRAME)
            .await
            .is_ok()
        {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the link to a supernode breaking the caps is closed"
    );
    let (_c3, mut rogue_send, mut rogue_recv) = rogue_link(&rogue, &victim.peer_addr()).await;
    let too_many = OverlayMessage::Hits {
        id: QueryId([1; 16]),
        hits: (0..201).map(fake_hit).collect(),
    };
    // 201 small hits fit one frame: this is the hits-per-reply cap.
    write_frame(&mut rogue_send, &too_many).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while read_frame::<OverlayMessage>(&mut rogue_recv, MAX_CONTROL_FRAME)
            .await
            .is_ok()
        {}
    })
    .await;
    assert!(ended.is_ok(), "201 hits in one reply close the link");
    let overlay = victim.supernode().unwrap().overlay().unwrap().clone();
    assert_eq!(overlay.stats.bad_messages.load(Ordering::Relaxed), 2);

    // Honest searches are still answered.
    search_until(victim.peer_addr(), &Query::words("honest song"), |hits| {
        hits.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshared_content_reveals_nothing_and_probes_are_rationed() {
    let sharer = start_sharer(&[("shared.txt", b"public".to_vec())]).await;
    let asker = client();
    let connection = asker.connect(&sharer.node.peer_addr()).await.unwrap();
    let secret = ContentHash::of(b"not shared");
    for request in [
        Request::BlockLayer { hash: secret },
        Request::Blocks {
            hash: secret,
            first: 0,
            count: 1,
        },
        Request::Have { hash: secret },
    ] {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        write_frame(&mut send, &request).await.unwrap();
        send.finish().unwrap();
        let answer: Response = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
        assert_eq!(answer, Response::NotFound { hash: secret }, "{request:?}");
    }

    // Probes: one at a time, and a prober must wait before asking again.
    let ask_probe = |connection: quinn::Connection| async move {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        write_frame(&mut send, &Request::ProbeDown { bytes: 1 << 20 })
            .await
            .unwrap();
        send.finish().unwrap();
        read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME)
            .await
            .unwrap()
    };
    assert_eq!(ask_probe(connection.clone()).await, Response::ProbeData);
    assert!(
        matches!(ask_probe(connection.clone()).await, Response::Busy { .. }),
        "a second probe at once is refused"
    );
}
