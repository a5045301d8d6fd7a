//! Signed votes against decoys (issue 22 item 2): a decoy shared by many
//! identities outnumbers the real file in sources, and its sharers vote
//! for it; a friend whose past votes agreed with the user's says it is a
//! fake. Ranked for the user, the real file comes first. Real QUIC on
//! loopback, a real tantivy index, real signatures.

use canopy_common::proto::credence::Verdict;
use canopy_common::proto::{ContentHash, Hit, PeerAddr, Query};
use canopy_node::{Node, NodeConfig};
use canopy_supernode::SupernodeConfig;
use canopy_tests::{patterned, search_until, start_leaf, until, Peer, LOOPBACK};

async fn supernode() -> (Node, tempfile::TempDir) {
    supernode_with(vec![]).await
}

/// Files the user and the friend both voted on before: half good, half
/// fakes, so their agreement is measurable (Credence's correlation needs
/// both kinds of verdict).
fn history() -> Vec<(ContentHash, Verdict)> {
    (0..8u8)
        .map(|i| {
            let verdict = if i % 2 == 0 {
                Verdict::Authentic
            } else {
                Verdict::Fake
            };
            (ContentHash([100 + i; 32]), verdict)
        })
        .collect()
}

fn position(hits: &[Hit], hash: ContentHash) -> usize {
    hits.iter()
        .position(|hit| hit.hash == hash)
        .expect("the file is among the hits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_voter_outweighs_a_crowd_of_sybils_for_a_decoy() {
    let (supernode, _dir) = supernode().await;
    let address: PeerAddr = supernode.peer_addr();
    let real = patterned(300_000);
    let mut decoy = real.clone();
    decoy[0] ^= 0xff; // another file, with its own hash: noise under the same name
    let (real_hash, decoy_hash) = (ContentHash::of(&real), ContentHash::of(&decoy));
    let name = "Nina Simone - Feeling Good.mp3";

    let _honest = start_leaf(address, 1, &[(name, &real)]).await;
    // The polluter's identities: each shares the decoy and votes for it,
    // and against the real file.
    let mut sybils: Vec<Peer> = Vec::new();
    for _ in 0..5 {
        let sybil = start_leaf(address, 1, &[(name, &decoy)]).await;
        sybil.node.votes().cast(decoy_hash, Verdict::Authentic);
        sybil.node.votes().cast(real_hash, Verdict::Fake);
        sybils.push(sybil);
    }
    // A friend: agreed with the user before, downloaded both, tells them apart.
    let friend = start_leaf(address, 1, &[]).await;
    let user = start_leaf(address, 1, &[]).await;
    for (file, verdict) in history() {
        friend.node.votes().cast(file, verdict);
        user.node.votes().cast(file, verdict);
    }
    friend.node.votes().cast(decoy_hash, Verdict::Fake);
    friend.node.votes().cast(real_hash, Verdict::Authentic);

    // Every leaf hands its votes to the supernode as it casts them.
    let cache = supernode.context().supernode().expect("a supernode").clone();
    until("the supernode holds everyone's votes on the decoy", || {
        cache.votes_for(&[decoy_hash]).len() == 6
    })
    .await;

    let query = Query::words("feeling good");
    let mut hits = search_until(address, &query, |hits| hits.len() == 2).await;
    // By sources alone, the decoy (six sharers) beats the real file (one).
    assert_eq!(position(&hits, decoy_hash), 0, "{hits:?}");

    let learned = user
        .node
        .searcher()
        .gather_notes(user.node.votes(), &[real_hash, decoy_hash])
        .await
        .learned;
    assert!(learned >= 12, "the user learned {learned} votes: 6 on each file");
    let scores = user.node.votes().rank(&mut hits);
    println!(
        "ranked for the user: {:?}",
        hits.iter()
            .zip(&scores)
            .map(|(h, s)| (h.hash, s))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        position(&hits, real_hash),
        0,
        "the real file comes first for the user"
    );
    let (real_score, decoy_score) = (
        user.node.votes().score(&real_hash),
        user.node.votes().score(&decoy_hash),
    );
    assert!(real_score.value > 0.5, "{real_score:?}");
    assert!(decoy_score.value < -0.5, "{decoy_score:?}");

    // Someone with no history with the friend is not helped: the Sybils'
    // crowd and the friend are all strangers to a fresh user, whose ranking
    // stays by sources.
    let stranger = start_leaf(address, 1, &[]).await;
    stranger
        .node
        .searcher()
        .gather_notes(stranger.node.votes(), &[real_hash, decoy_hash])
        .await;
    let score = stranger.node.votes().score(&decoy_hash);
    assert!(
        score.value.abs() <= 1.0 && score.weight < 0.1,
        "strangers weigh little: {score:?}"
    );
}

/// Votes travel with hits across the overlay: the voters are leaves of a
/// far supernode, the user a leaf of a near one. Searching, the user
/// learns who agreed with its past votes (on files found before) and then
/// what they say of a decoy; the decoy's crowd of sharers does not win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_come_back_with_hits_from_a_far_supernode() {
    let (far, _far_dir) = supernode_with(vec![]).await;
    let (near, _near_dir) = supernode_with(vec![far.peer_addr()]).await;
    let overlay = near.context().supernode().unwrap().overlay().unwrap().clone();
    until("the two supernodes link", || overlay.neighbours().len() == 1).await;

    // Tagged: the far supernode gives its tags with the hits.
    let real = canopy_tests::tagged_mp3("Nina Simone");
    let mut decoy = real.clone();
    decoy[1] ^= 0xff;
    let (real_hash, decoy_hash) = (ContentHash::of(&real), ContentHash::of(&decoy));
    let name = "Nina Simone - Feeling Good.mp3";
    let _honest = start_leaf(far.peer_addr(), 1, &[(name, &real)]).await;
    let mut sybils = Vec::new();
    for _ in 0..3 {
        let sybil = start_leaf(far.peer_addr(), 1, &[(name, &decoy)]).await;
        sybil.node.votes().cast(decoy_hash, Verdict::Authentic);
        sybils.push(sybil);
    }
    // The friend shares what it voted on before, so searches find it.
    let history: Vec<(String, Vec<u8>, Verdict)> = (0..8u8)
        .map(|i| {
            let verdict = if i % 2 == 0 {
                Verdict::Authentic
            } else {
                Verdict::Fake
            };
            (
                format!("history {i}.ogg"),
                patterned(10_000 + usize::from(i)),
                verdict,
            )
        })
        .collect();
    let shared: Vec<(&str, &[u8])> = history
        .iter()
        .map(|(n, c, _)| (n.as_str(), c.as_slice()))
        .collect();
    let friend = start_leaf(far.peer_addr(), 1, &shared).await;
    let user = start_leaf(near.peer_addr(), 1, &[]).await;
    for (_, content, verdict) in &history {
        friend.node.votes().cast(ContentHash::of(content), *verdict);
        user.node.votes().cast(ContentHash::of(content), *verdict);
    }
    friend.node.votes().cast(decoy_hash, Verdict::Fake);
    friend.node.votes().cast(real_hash, Verdict::Authentic);
    let far_cache = far.context().supernode().unwrap().clone();
    until("the far supernode holds the votes", || {
        far_cache.votes_for(&[decoy_hash]).len() == 4 && far_cache.votes_for(&[real_hash]).len() == 1
    })
    .await;

    let searcher = user.node.searcher();
    let search = |text: &'static str| async move {
        let mut hits = Vec::new();
        for _ in 0..50 {
            hits = searcher
                .search(&Query::words(text), &mut |_| {})
                .await
                .unwrap()
                .hits;
            if hits.len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        hits
    };
    let found = search("history").await;
    assert_eq!(found.len(), 8, "{found:?}");
    let files: Vec<ContentHash> = found.iter().map(|hit| hit.hash).collect();
    let learned = searcher.gather_notes(user.node.votes(), &files).await.learned;
    assert!(learned >= 8, "the friend's 8 votes came with the hits: {learned}");

    let mut hits = search("feeling good").await;
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(
        position(&hits, decoy_hash),
        0,
        "by sources the decoy leads: {hits:?}"
    );
    let notes = searcher
        .gather_notes(user.node.votes(), &[real_hash, decoy_hash])
        .await;
    user.node.votes().rank(&mut hits);
    // The far supernode's tags of the files came with the hits too.
    let tags = notes
        .tags
        .iter()
        .find(|file| file.hash == real_hash)
        .expect("the real file's tags");
    assert_eq!(
        tags.tags,
        vec![
            ("artist".to_string(), "Nina Simone".to_string()),
            ("title".to_string(), "Track 1".to_string())
        ]
    );
    assert_eq!(
        position(&hits, real_hash),
        0,
        "the friend's word puts the real file first"
    );
    assert!(user.node.votes().score(&decoy_hash).value < -0.5);
    let relayed = overlay
        .stats
        .votes_relayed_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(relayed >= 12, "votes kept at the near supernode: {relayed}");
}

async fn supernode_with(bootstrap: Vec<PeerAddr>) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK);
    config.supernode = Some(SupernodeConfig::for_this_machine(None));
    config.bootstrap = bootstrap;
    (Node::start(config).await.unwrap(), dir)
}

/// A publisher signs what it shares; a user who trusts it sees its file
/// marked and first, though a decoy has more sources and voters for it.
/// A user who trusts nobody is shown who vouched, and ranks by the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_publishers_file_is_marked_and_ranked_first() {
    let (supernode, _dir) = supernode().await;
    let address = supernode.peer_addr();
    let real = patterned(150_000);
    let mut decoy = real.clone();
    decoy[2] ^= 0xff;
    let (real_hash, decoy_hash) = (ContentHash::of(&real), ContentHash::of(&decoy));
    let name = "Label - New Single.flac";

    let publisher_dir = tempfile::tempdir().unwrap();
    let folder = publisher_dir.path().join("share");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(name), &real).unwrap();
    let mut config = NodeConfig::new(publisher_dir.path().join("data"), LOOPBACK).sharing(folder);
    config.bootstrap = vec![address];
    config.leaf_sessions = 1;
    config.sign_shares = true;
    let publisher = Node::start(config).await.unwrap();
    let mut sybils = Vec::new();
    for _ in 0..3 {
        let sybil = start_leaf(address, 1, &[(name, &decoy)]).await;
        sybil.node.votes().cast(decoy_hash, Verdict::Authentic);
        sybils.push(sybil);
    }
    let cache = supernode.context().supernode().unwrap().clone();
    until("the publisher's signature reaches the supernode", || {
        cache.votes_for(&[real_hash]).len() == 1 && cache.votes_for(&[decoy_hash]).len() == 3
    })
    .await;

    let user = start_leaf(address, 1, &[]).await;
    let mut hits = search_until(address, &Query::words("new single"), |hits| hits.len() == 2).await;
    let searcher = user.node.searcher();
    searcher
        .gather_notes(user.node.votes(), &[real_hash, decoy_hash])
        .await;
    let real_hit = hits.iter().find(|hit| hit.hash == real_hash).unwrap().clone();
    let (vouched, trusted) = user.node.votes().publishers(&real_hit);
    assert_eq!(vouched, vec![publisher.peer_addr().id], "the publisher is shown");
    assert!(!trusted, "nobody is trusted yet");

    user.node.votes().trust(publisher.peer_addr().id, true).unwrap();
    assert!(user.node.votes().publishers(&real_hit).1);
    user.node.votes().rank(&mut hits);
    assert_eq!(
        position(&hits, real_hash),
        0,
        "the trusted publisher's file comes first"
    );
    // Trust is kept in the data folder, one id a line.
    let user_data = user.node.data_dir().join(canopy_node::votes::TRUSTED_FILE);
    let text = std::fs::read_to_string(user_data).unwrap();
    assert!(text.contains(&publisher.peer_addr().id.to_string()), "{text}");
    drop(publisher);
}

/// What a hostile peer can do with votes, and what it gets: a stranger
/// (not a joined leaf) is refused; a leaf's votes in someone else's name,
/// forged or replayed count for nothing; an oversize list is refused with
/// a reason; a flood is told to wait. The supernode keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_oversize_and_flooded_votes_are_refused() {
    use canopy_common::net::{ask, NodeKey};
    use canopy_common::proto::credence::SignedVote;
    use canopy_common::proto::wire::MAX_VOTES_PER_MESSAGE;
    use canopy_common::proto::{Request, Response};

    let (supernode, _dir) = supernode().await;
    let address = supernode.peer_addr();
    let endpoint = canopy_tests::client();
    let me = endpoint.peer_id();
    let key = endpoint.key().clone();
    let now = canopy_node::votes::unix_now();
    let vote = |key: &NodeKey, file: u8, issued: u64| {
        SignedVote::sign(
            key.peer_id(),
            ContentHash([file; 32]),
            Verdict::Fake,
            issued,
            |m| key.sign(m),
        )
    };
    let hand_in = |votes: Vec<SignedVote>| {
        let endpoint = endpoint.clone();
        async move {
            let connection = endpoint.connect(&address).await.unwrap();
            ask::<_, Response>(&connection, &Request::Votes { votes })
                .await
                .unwrap()
        }
    };

    // Not joined here: refused.
    assert_eq!(hand_in(vec![vote(&key, 1, now)]).await, Response::UnknownLeaf);

    let (_session, _send, _recv, _welcome) = canopy_tests::join_by_hand(&endpoint, address).await;
    let stranger = NodeKey::generate().unwrap();
    let mut forged = vote(&key, 2, now);
    forged.content = ContentHash([3; 32]);
    let future = vote(&key, 4, now + 3600);
    let good = vote(&key, 5, now);
    let answer = hand_in(vec![vote(&stranger, 1, now), forged, future, good.clone()]).await;
    assert_eq!(
        answer,
        Response::VotesNoted { accepted: 1 },
        "only its own, well-signed, dated vote"
    );
    // Replayed: nothing new.
    assert_eq!(
        hand_in(vec![good.clone()]).await,
        Response::VotesNoted { accepted: 0 }
    );
    // Over the cap: refused with a reason.
    let many: Vec<SignedVote> = (0..=MAX_VOTES_PER_MESSAGE as u8)
        .map(|i| vote(&key, i, now))
        .collect();
    match hand_in(many).await {
        Response::BadRequest { reason } => assert!(reason.contains("votes in one message"), "{reason}"),
        other => panic!("an oversize list was answered {other:?}"),
    }
    // A flood: the budget (bursts of 5, then one a second) says wait.
    let mut busy = 0;
    for i in 0..12u8 {
        if matches!(
            hand_in(vec![vote(&key, 100 + i, now)]).await,
            Response::Busy { .. }
        ) {
            busy += 1;
        }
    }
    assert!(
        busy >= 5,
        "a flood of hand-ins was told to wait {busy} times of 12"
    );
    // The supernode still serves, and kept the one good vote on file 5.
    let kept = supernode
        .context()
        .supernode()
        .unwrap()
        .votes_for(&[ContentHash([5; 32])]);
    assert_eq!(kept, vec![good]);
    assert_eq!(kept[0].voter, me);
}

/// A download is a meeting: the downloader and its source swap their own
/// votes (`Request::SwapVotes`), so each learns at once how far the other
/// agrees with it — here completely, over eight files — and the other's
/// word on a file it has not voted on itself counts for it. Then the
/// source's side under hostile swaps: votes by someone else, too many at
/// once, and a flood are refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_swaps_votes_with_its_source() {
    use canopy_common::net::{ask, NodeKey};
    use canopy_common::proto::credence::{SignedVote, MAX_VOTES_PER_EXCHANGE};
    use canopy_common::proto::{Request, Response};
    use canopy_node::download::DownloadOptions;

    let song = patterned(200_000);
    let hash = ContentHash::of(&song);
    let source = canopy_tests::start_sharer(&[("song.mp3", song.clone())]).await;
    let downloader = canopy_tests::start_downloader().await;
    for (file, verdict) in history() {
        source.node.votes().cast(file, verdict);
        downloader.node.votes().cast(file, verdict);
    }
    // Each knows a decoy the other has not met.
    let (seen_by_source, seen_by_downloader) = (ContentHash([201; 32]), ContentHash([202; 32]));
    source.node.votes().cast(seen_by_source, Verdict::Fake);
    downloader.node.votes().cast(seen_by_downloader, Verdict::Fake);
    assert_eq!(downloader.node.votes().score(&seen_by_source).weight, 0.0);

    let report = downloader
        .fetch(
            hash,
            vec![source.node.peer_addr()],
            "song.mp3",
            DownloadOptions::default(),
        )
        .await
        .expect("the download finishes");
    assert_eq!(std::fs::read(&report.path).unwrap(), song);
    until("both sides learned from the swap", || {
        downloader.node.votes().score(&seen_by_source).weight > 0.0
            && source.node.votes().score(&seen_by_downloader).weight > 0.0
    })
    .await;
    let (told_downloader, told_source) = (
        downloader.node.votes().score(&seen_by_source),
        source.node.votes().score(&seen_by_downloader),
    );
    assert!(told_downloader.value < -0.5, "{told_downloader:?}");
    assert!(told_source.value < -0.5, "{told_source:?}");

    // The source's side, spoken to by hand.
    let endpoint = canopy_tests::client();
    let key = endpoint.key().clone();
    let connection = endpoint.connect(&source.node.peer_addr()).await.unwrap();
    let now = canopy_node::votes::unix_now();
    let vote = |key: &NodeKey, file: u8| {
        SignedVote::sign(key.peer_id(), ContentHash([file; 32]), Verdict::Fake, now, |m| {
            key.sign(m)
        })
    };
    let swap = |votes: Vec<SignedVote>| {
        let connection = connection.clone();
        async move {
            ask::<_, Response>(&connection, &Request::SwapVotes { votes })
                .await
                .unwrap()
        }
    };
    let stranger = NodeKey::generate().unwrap();
    match swap(vec![vote(&key, 1), vote(&stranger, 2)]).await {
        Response::BadRequest { reason } => assert!(reason.contains("own votes"), "{reason}"),
        other => panic!("someone else's vote in a swap was answered {other:?}"),
    }
    let many: Vec<SignedVote> = (0..=MAX_VOTES_PER_EXCHANGE as u8)
        .map(|i| vote(&key, i))
        .collect();
    match swap(many).await {
        Response::BadRequest { reason } => assert!(reason.contains("votes in one swap"), "{reason}"),
        other => panic!("an oversize swap was answered {other:?}"),
    }
    // A good swap is answered with the source's own votes, those on the
    // files asked about first.
    match swap(vec![vote(&key, 201)]).await {
        Response::SwappedVotes { votes } => {
            assert_eq!(votes[0].content, seen_by_source, "{votes:?}");
            assert!(votes.iter().all(|v| v.voter == source.node.peer_addr().id));
            assert!(votes.len() <= MAX_VOTES_PER_EXCHANGE);
        }
        other => panic!("a good swap was answered {other:?}"),
    }
    // A flood: bursts of 4 a peer, then one every 10 s.
    let mut busy = 0;
    for i in 0..8u8 {
        if matches!(swap(vec![vote(&key, 50 + i)]).await, Response::Busy { .. }) {
            busy += 1;
        }
    }
    assert!(busy >= 4, "a flood of swaps was told to wait {busy} times of 8");
}

/// Credence's step past the peers one meets: a search asks the voters its
/// user agrees with most, among the peers met over downloads, what they
/// think of the results (`Request::AskOpinions`). A friend answers with
/// its own vote on one file and, on another it never voted on, its
/// opinion — formed from a voter the user never met. Both count for the
/// user. Then the asked side under a flood and an oversize ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_asks_the_voters_met_and_agreed_with() {
    use canopy_common::net::ask;
    use canopy_common::proto::wire::MAX_HASHES_PER_NOTES_ASK;
    use canopy_common::proto::{Request, Response};
    use canopy_node::download::DownloadOptions;

    let (g_file, f_file) = (patterned(100_000), patterned(150_000));
    let far = canopy_tests::start_sharer(&[("far.bin", g_file.clone())]).await;
    let friend = canopy_tests::start_sharer(&[("friend.bin", f_file.clone())]).await;
    let user = canopy_tests::start_downloader().await;
    for (file, verdict) in history() {
        far.node.votes().cast(file, verdict);
        friend.node.votes().cast(file, verdict);
        user.node.votes().cast(file, verdict);
    }
    let (heard_of, voted_on) = (ContentHash([211; 32]), ContentHash([212; 32]));
    far.node.votes().cast(heard_of, Verdict::Fake);

    // The friend meets the far voter over a download, and learns its vote.
    let output = friend.share_dir.join("far.bin");
    friend
        .node
        .download(
            ContentHash::of(&g_file),
            &output,
            vec![far.node.peer_addr()],
            DownloadOptions::default(),
        )
        .wait()
        .await
        .expect("the friend's download finishes");
    until("the friend learned the far voter's vote", || {
        friend.node.votes().score(&heard_of).weight > 0.0
    })
    .await;
    // The user meets the friend; the friend votes on another file later.
    let report = user
        .fetch(
            ContentHash::of(&f_file),
            vec![friend.node.peer_addr()],
            "friend.bin",
            DownloadOptions::default(),
        )
        .await
        .expect("the user's download finishes");
    assert_eq!(std::fs::read(&report.path).unwrap(), f_file);
    until("the user and the friend swapped", || {
        user.node.votes().score(&ContentHash([100; 32])).voters > 1
    })
    .await;
    friend.node.votes().cast(voted_on, Verdict::Fake);
    for file in [heard_of, voted_on] {
        assert_eq!(
            user.node.votes().score(&file).weight,
            0.0,
            "the user knows nothing of it yet"
        );
    }

    let counted = user
        .node
        .searcher()
        .ask_met_voters(user.node.votes(), &[heard_of, voted_on])
        .await;
    assert_eq!(counted, 2, "the friend's vote and its opinion");
    for file in [heard_of, voted_on] {
        let score = user.node.votes().score(&file);
        assert!(score.weight > 0.0 && score.value < -0.5, "{file}: {score:?}");
    }

    // The asked side, spoken to by hand.
    let endpoint = canopy_tests::client();
    let connection = endpoint.connect(&friend.node.peer_addr()).await.unwrap();
    let asking = |hashes: Vec<ContentHash>| {
        let connection = connection.clone();
        async move {
            ask::<_, Response>(&connection, &Request::AskOpinions { hashes })
                .await
                .unwrap()
        }
    };
    let too_many: Vec<ContentHash> = (0..=MAX_HASHES_PER_NOTES_ASK as u8)
        .map(|i| ContentHash([i; 32]))
        .collect();
    match asking(too_many).await {
        Response::BadRequest { reason } => assert!(reason.contains("files asked at once"), "{reason}"),
        other => panic!("an oversize ask was answered {other:?}"),
    }
    // A stranger may ask (votes are public), within a budget.
    match asking(vec![voted_on, heard_of]).await {
        Response::Opinions { votes, opinions } => {
            assert_eq!(votes.len(), 1);
            assert_eq!((votes[0].content, votes[0].verdict), (voted_on, Verdict::Fake));
            assert_eq!(opinions.len(), 1);
            assert_eq!(opinions[0].content, heard_of);
            assert!(opinions[0].percent < 0, "{opinions:?}");
        }
        other => panic!("an ask was answered {other:?}"),
    }
    let mut busy = 0;
    for _ in 0..16 {
        if matches!(asking(vec![voted_on]).await, Response::Busy { .. }) {
            busy += 1;
        }
    }
    assert!(busy >= 6, "a flood of asks was told to wait {busy} times of 16");
}
