//! Keyword routing on the wire: twelve supernodes over real QUIC on
//! loopback, with real tantivy indexes, in a sparse overlay (a ring with
//! two chords, degree 2–3). The same searches run with keyword routing off
//! (plain TTL-4 flooding) and on (horizon tables + dynamic querying); both
//! find the same files, and with routing on far fewer query messages cross
//! the overlay.
//!
//! The figures it prints are recorded in docs/BENCHMARKS.md ("Keyword
//! routing on the wire"); run with `-- --nocapture` to see them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use canopy_common::proto::dynamic::Reach;
use canopy_common::proto::{Hit, PeerAddr, Query};
use canopy_node::{Node, NodeConfig};
use canopy_supernode::overlay::OverlayStats;
use canopy_supernode::{OverlayConfig, SupernodeConfig};
use canopy_tests::ask;
use canopy_tests::{client, search_until, start_leaf, until, LOOPBACK};

const SUPERNODES: usize = 12;
/// The ring 0–1–…–11–0 and two chords.
const CHORDS: [(usize, usize); 2] = [(8, 2), (10, 5)];
/// Where the rare file's leaf is joined: 4 hops from the searcher at 0.
const RARE_AT: usize = 6;
/// Supernodes with a leaf sharing the popular file (every supernode also
/// shares it itself).
const POPULAR_LEAVES_AT: [usize; 3] = [3, 7, 9];
const RARE: &str = "zanzibar field recording.ogg";
const POPULAR: &str = "anthem of the network.txt";

struct Running {
    node: Node,
    _dir: tempfile::TempDir,
}

fn edges() -> Vec<(usize, usize)> {
    let mut edges: Vec<(usize, usize)> = (1..SUPERNODES).map(|i| (i, i - 1)).collect();
    edges.push((SUPERNODES - 1, 0));
    edges.extend(CHORDS);
    edges
}

/// Hops from `from` to every supernode.
fn distances(from: usize) -> Vec<usize> {
    let mut distance = vec![usize::MAX; SUPERNODES];
    distance[from] = 0;
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        for &(a, b) in &edges() {
            for (x, y) in [(a, b), (b, a)] {
                if x == at && distance[y] == usize::MAX {
                    distance[y] = distance[at] + 1;
                    queue.push_back(y);
                }
            }
        }
    }
    distance
}

async fn supernode(bootstrap: Vec<PeerAddr>, keyword_routing: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join(POPULAR), b"everyone has this one").unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK).sharing(share);
    let mut settings = SupernodeConfig::for_this_machine(None);
    let mut overlay = OverlayConfig {
        // Exactly the links asked for: each dials its bootstrap list only.
        target_neighbours: bootstrap.len(),
        max_neighbours: 4,
        search_window: Duration::from_millis(1500),
        keyword_routing,
        table_interval: Duration::from_millis(200),
        ..OverlayConfig::default()
    };
    // Loopback answers in microseconds; the rest is the defaults.
    overlay.dynamic.wait_per_hop = Duration::from_millis(300);
    overlay.dynamic.target_results = 5;
    settings.overlay = overlay;
    config.supernode = Some(settings);
    config.bootstrap = bootstrap;
    Running {
        node: Node::start(config).await.unwrap(),
        _dir: dir,
    }
}

fn total(net: &[Running], counter: impl Fn(&OverlayStats) -> u64) -> u64 {
    net.iter()
        .map(|sn| counter(&sn.node.supernode().unwrap().overlay().unwrap().stats))
        .sum()
}

fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn degree(sn: &Running) -> usize {
    sn.node.supernode().unwrap().overlay().unwrap().neighbours().len()
}

/// Every neighbour of `sn` has sent it every level of its tables.
fn holds_every_level(sn: &Running) -> bool {
    let supernode = sn.node.supernode().unwrap();
    let neighbours = supernode.overlay().unwrap().neighbours();
    let horizon = supernode.index().horizon().lock().unwrap();
    neighbours
        .iter()
        .all(|n| horizon.levels_from(&n.id) == horizon.config().levels)
}

struct Network {
    supernodes: Vec<Running>,
    _leaves: Vec<canopy_tests::Peer>,
}

async fn network(keyword_routing: bool) -> Network {
    let mut supernodes: Vec<Running> = Vec::new();
    for i in 0..SUPERNODES {
        let bootstrap: Vec<PeerAddr> = edges()
            .iter()
            .filter(|&&(from, _)| from == i)
            .map(|&(_, to)| supernodes[to].node.peer_addr())
            .collect();
        supernodes.push(supernode(bootstrap, keyword_routing).await);
    }
    let mut expected = [0usize; SUPERNODES];
    for (a, b) in edges() {
        expected[a] += 1;
        expected[b] += 1;
    }
    until("the overlay to form", || {
        supernodes
            .iter()
            .zip(expected)
            .all(|(sn, want)| degree(sn) == want)
    })
    .await;
    let mut leaves = Vec::new();
    let rare_content = b"heard once, far away".as_slice();
    leaves.push(start_leaf(supernodes[RARE_AT].node.peer_addr(), 1, &[(RARE, rare_content)]).await);
    for &at in &POPULAR_LEAVES_AT {
        let popular = b"everyone has this one".as_slice();
        leaves.push(start_leaf(supernodes[at].node.peer_addr(), 1, &[(POPULAR, popular)]).await);
    }
    // Every index has what it should: the rare file where it lives, the
    // popular one at every supernode.
    search_until(
        supernodes[RARE_AT].node.peer_addr(),
        &scoped("zanzibar", 0),
        |hits| hits.len() == 1,
    )
    .await;
    for sn in &supernodes {
        search_until(sn.node.peer_addr(), &scoped("anthem", 0), |hits| hits.len() == 1).await;
    }
    Network {
        supernodes,
        _leaves: leaves,
    }
}

/// A search that stays within `ttl` hops (a flood, whatever the mode).
fn scoped(text: &str, ttl: u8) -> Query {
    Query {
        ttl: Some(ttl),
        ..Query::words(text)
    }
}

/// What one search cost and found.
#[derive(Debug)]
struct Measured {
    messages: u64,
    names: BTreeSet<String>,
    sources: usize,
    seconds: f64,
}

async fn measure(net: &[Running], text: &str) -> Measured {
    let asker = client();
    let received = |net: &[Running]| total(net, |s| load(&s.queries_received));
    let before = received(net);
    let started = std::time::Instant::now();
    let (hits, _) = ask(&asker, &[net[0].node.peer_addr()], &Query::words(text))
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    // Let copies still on their way land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Measured {
        messages: received(net) - before,
        names: hits.iter().map(|hit: &Hit| hit.name.clone()).collect(),
        sources: hits.iter().map(|hit| hit.source_count as usize).sum(),
        seconds,
    }
}

const QUERIES: [&str; 3] = ["zanzibar", "anthem", "nowhere"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyword_routing_finds_the_same_files_with_far_fewer_messages() {
    let started = std::time::Instant::now();
    assert_eq!(
        distances(0)[RARE_AT],
        4,
        "the rare file is at the edge of a TTL-4 flood"
    );
    assert!(distances(0).iter().all(|&d| d <= 4));

    // Keyword routing off: TTL-4 floods.
    let off = network(false).await;
    let mut flooded = Vec::new();
    for text in QUERIES {
        flooded.push(measure(&off.supernodes, text).await);
    }
    assert_eq!(total(&off.supernodes, |s| load(&s.table_bytes_sent)), 0);
    drop(off);

    // Keyword routing on.
    let on = network(true).await;
    let net = &on.supernodes;
    // Tables converge: every link has every level, and searcher 0 sees the
    // rare file 3 hops past neighbour 11 (11–10–5–6).
    until("every link to hold every level", || {
        net.iter().all(holds_every_level)
    })
    .await;
    let eleven = net[11].node.peer_addr().id;
    until("the rare file's words to reach the searcher's tables", || {
        let supernode = net[0].node.supernode().unwrap();
        let horizon = supernode.index().horizon().lock().unwrap();
        horizon.reach(&eleven, &Query::words("zanzibar")) == Reach::Within(3)
    })
    .await;
    // And settle: no table bytes move for a while.
    let sent = || total(net, |s| load(&s.table_bytes_sent));
    let mut last = sent();
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = sent();
        if now == last {
            break;
        }
        last = now;
    }
    let table_bytes = sent();
    let mut routed = Vec::new();
    for text in QUERIES {
        routed.push(measure(net, text).await);
    }
    let copies = (
        total(net, |s| load(&s.copies_routed)),
        total(net, |s| load(&s.copies_pruned)),
        total(net, |s| load(&s.copies_broadcast)),
        total(net, |s| load(&s.probes_sent)),
    );

    println!("keyword routing on the wire: {SUPERNODES} supernodes, ring + chords {CHORDS:?}");
    for ((text, off), on) in QUERIES.iter().zip(&flooded).zip(&routed) {
        println!(
            "{text:>9}: off {:>3} messages, {} files, {} sources, {:.1} s | on {:>3} messages, {} files, {} sources, {:.1} s",
            off.messages,
            off.names.len(),
            off.sources,
            off.seconds,
            on.messages,
            on.names.len(),
            on.sources,
            on.seconds
        );
    }
    println!(
        "table update bytes sent, all links: {table_bytes} ({} per link direction)",
        table_bytes / (2 * edges().len() as u64)
    );
    println!(
        "copies routed / pruned / broadcast by relays: {} / {} / {}; dynamic probes: {}",
        copies.0, copies.1, copies.2, copies.3
    );
    println!("whole test: {:.1} s", started.elapsed().as_secs_f64());

    // Same files found: the rare one (4 hops away) and the popular one.
    let (rare_off, rare_on) = (&flooded[0], &routed[0]);
    assert_eq!(rare_off.names, BTreeSet::from([RARE.to_string()]));
    assert_eq!(rare_on.names, rare_off.names);
    assert_eq!(routed[1].names, flooded[1].names);
    assert_eq!(flooded[1].names, BTreeSet::from([POPULAR.to_string()]));
    assert!(flooded[2].names.is_empty() && routed[2].names.is_empty());
    // Fewer query messages for every search, far fewer in all. Measured
    // (a flood's count varies with which copy of it arrives first):
    // rare 13–14 → 9, popular 12–14 → 4, nowhere 13–14 → 2, all 39–42 → 15.
    // Asserted with margin.
    let fewer = |index: usize, factor: u64| {
        let (off, on) = (flooded[index].messages, routed[index].messages);
        assert!(
            on * factor <= off && on < off,
            "{}: {on} messages with routing, {off} without",
            QUERIES[index]
        );
    };
    fewer(0, 1);
    fewer(1, 2);
    fewer(2, 4);
    let all_off: u64 = flooded.iter().map(|m| m.messages).sum();
    let all_on: u64 = routed.iter().map(|m| m.messages).sum();
    assert!(
        all_on * 2 <= all_off,
        "{all_on} messages with routing, {all_off} without"
    );
    assert_eq!(total(net, |s| load(&s.table_updates_refused)), 0);
    assert_eq!(total(net, |s| load(&s.bad_messages)), 0);
}

/// A supernode from before keyword tables: it resets a `LinkWith` stream as
/// a bad request. The new supernode links again the old way, and never
/// sends it a message it would not understand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_supernode_still_links_and_never_hears_of_tables() {
    use canopy_common::net::{read_frame, write_frame};
    use canopy_common::proto::wire::{LinkNotice, OverlayMessage};
    use canopy_common::proto::{Request, MAX_CONTROL_FRAME};

    let old = client();
    let new = supernode(vec![old.peer_addr()], true).await;
    let connection = tokio::time::timeout(Duration::from_secs(10), async {
        old.accept().await.unwrap().await.unwrap()
    })
    .await
    .expect("the new supernode dials the old one");
    // First it offers features, which an old node cannot read.
    let (mut send, mut recv) = connection.accept_bi().await.unwrap();
    let offer: Request = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
    assert!(matches!(offer, Request::LinkWith(_)), "{offer:?}");
    send.reset(1u32.into()).unwrap();
    let _ = recv.stop(1u32.into());
    // Then it asks the old way, on the same connection.
    let (mut send, mut recv) = connection.accept_bi().await.unwrap();
    let hello: Request = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
    assert!(matches!(hello, Request::Link(_)), "{hello:?}");
    write_frame(&mut send, &LinkNotice::Accepted).await.unwrap();
    until("the link to come up", || degree(&new) == 1).await;
    // Give its table timer (every 200 ms) a few rounds: nothing but the
    // messages of version 0 arrives.
    let mut seen = 0;
    let listen = async {
        while let Ok(message) = read_frame::<OverlayMessage>(&mut recv, MAX_CONTROL_FRAME).await {
            assert!(
                matches!(message, OverlayMessage::Supernodes { .. }),
                "an old peer got {message:?}"
            );
            seen += 1;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), listen).await;
    assert!(seen >= 1, "the host list arrives as before");
    assert_eq!(degree(&new), 1, "the link is still up");
    let supernode = new.node.supernode().unwrap();
    assert_eq!(supernode.index().horizon().lock().unwrap().links(), 0);
    // A search from the new supernode still reaches the old one, flooded.
    let asker = client();
    let search = tokio::spawn(async move {
        ask(&asker, &[new.node.peer_addr()], &Query::words("anything"))
            .await
            .map(|_| new)
    });
    let query = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let OverlayMessage::Query(query) = read_frame::<OverlayMessage>(&mut recv, MAX_CONTROL_FRAME)
                .await
                .unwrap()
            {
                return query;
            }
        }
    })
    .await
    .expect("the query is sent to the old neighbour");
    assert_eq!(query.query.text, "anything");
    let _new = search.await.unwrap().unwrap();
}

/// A broken or greedy neighbour: refused table updates cost it its tables
/// (never the link, never a result); past the byte budget it loses the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_sending_bad_or_too_many_tables_is_refused_then_cut_off() {
    use canopy_common::net::{read_frame, write_frame};
    use canopy_common::proto::qrp::{KeywordTable, TableUpdate, WordRun};
    use canopy_common::proto::wire::{
        LinkNotice, LinkOffer, OverlayMessage, FEATURE_KEYWORD_TABLES, FEATURE_NOTES,
    };
    use canopy_common::proto::{Request, MAX_CONTROL_FRAME};

    let victim = supernode(Vec::new(), true).await;
    let rogue = client();
    let connection = rogue.connect(&victim.node.peer_addr()).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let offer = LinkOffer {
        listen: rogue.local_addr(),
        features: FEATURE_KEYWORD_TABLES | 0xff00,
        degree: 60_000,
    };
    write_frame(&mut send, &Request::LinkWith(offer)).await.unwrap();
    let notice: LinkNotice = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
    // The answerer states its own features (the rogue's unknown bits are
    // not echoed back).
    assert!(
        matches!(
            notice,
            LinkNotice::AcceptedWith { features, .. }
                if features == FEATURE_KEYWORD_TABLES | FEATURE_NOTES
        ),
        "{notice:?}"
    );
    until("the link to come up", || degree(&victim) == 1).await;
    let refused = || total(std::slice::from_ref(&victim), |s| load(&s.table_updates_refused));
    let reset = KeywordTable::new(10).unwrap().updates_since(None).remove(0);
    // A level past the maximum, then a patch of a table it never reset.
    let bad = [
        OverlayMessage::KeywordTable {
            level: 8,
            update: reset.clone(),
            more: false,
        },
        OverlayMessage::KeywordTable {
            level: 0,
            update: TableUpdate {
                log2_bits: 10,
                reset: false,
                runs: vec![WordRun {
                    start: 1,
                    xor_le: vec![1, 0, 0, 0, 0, 0, 0, 0],
                }],
            },
            more: false,
        },
    ];
    for message in &bad {
        write_frame(&mut send, message).await.unwrap();
    }
    until("both updates to be refused", || refused() == 2).await;
    assert_eq!(degree(&victim), 1, "a refused update costs tables, not the link");
    // A valid table, then far more table bytes than any table needs.
    write_frame(
        &mut send,
        &OverlayMessage::KeywordTable {
            level: 0,
            update: reset,
            more: false,
        },
    )
    .await
    .unwrap();
    let dense = TableUpdate {
        log2_bits: 20,
        reset: true,
        runs: vec![WordRun {
            start: 0,
            xor_le: vec![0xff; 48 * 1024 - 8],
        }],
    };
    let greedy = OverlayMessage::KeywordTable {
        level: 1,
        update: dense,
        more: false,
    };
    for _ in 0..80 {
        if write_frame(&mut send, &greedy).await.is_err() {
            break;
        }
    }
    until("the greedy neighbour to lose its link", || degree(&victim) == 0).await;
    assert_eq!(total(std::slice::from_ref(&victim), |s| load(&s.bad_messages)), 1);
    assert_eq!(refused(), 2);
}
