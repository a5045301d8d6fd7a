//! Downloads from many sources at once over real QUIC on loopback: sources
//! come and go, differ in speed, lie, or vanish, and the file still arrives
//! exactly.

use std::time::Duration;

use canopy_common::proto::{ContentHash, PeerAddr};
use canopy_node::download::{
    part_path, state_path, DownloadError, DownloadOptions, SourceFailure, SourceState,
};
use canopy_tests::{capped, cuttable_path_to, patterned, start_downloader, start_peers, uploaded, Library};

const MIB: usize = 1 << 20;

/// Waits until `condition` holds, checking every 20 ms, for at most 30 s.
async fn until(mut condition: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached in 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sources_joining_and_leaving() {
    let data = patterned(24 * MIB);
    let hash = ContentHash::of(&data);
    let library = Library::with_file("big.bin", &data);
    let mut peers = start_peers(&library, 50, capped(300_000)).await;
    let downloader = start_downloader().await;
    let output = downloader.path("big.bin");

    // 30 sources at first; 20 more join once bytes are flowing; 10 of the
    // first leave mid-transfer.
    let initial = peers[..30].iter().map(|p| p.node.peer_addr()).collect();
    let options = DownloadOptions {
        max_sources: 50,
        ..DownloadOptions::default()
    };
    let download = downloader.node.download(hash, &output, initial, options);
    until(|| download.progress().verified > MIB as u64).await;
    for peer in &peers[30..] {
        download.add_source(peer.node.peer_addr());
    }
    until(|| download.progress().verified > 8 * MIB as u64).await;
    for peer in peers.drain(..10) {
        peer.node.shutdown().await;
    }
    let report = download.wait().await.expect("download completes");

    assert!(std::fs::read(&output).unwrap() == data, "bytes differ");
    let contributors = report.sources.iter().filter(|s| s.bytes > 0).count();
    assert!(
        contributors >= 45,
        "only {contributors} of 50 sources delivered blocks: {:#?}",
        report.sources
    );
    let late: u64 = peers[20..].iter().map(|p| uploaded(&p.node)).sum();
    assert!(late > 0, "sources that joined mid-transfer served nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_queued_sources_take_over() {
    let data = patterned(4 * MIB);
    let hash = ContentHash::of(&data);
    let library = Library::with_file("f.bin", &data);
    let peers = start_peers(&library, 5, capped(1_000_000)).await;
    let downloader = start_downloader().await;
    let options = DownloadOptions {
        max_sources: 2,
        ..DownloadOptions::default()
    };
    let sources = peers.iter().map(|p| p.node.peer_addr()).collect();
    let download = downloader
        .node
        .download(hash, &downloader.path("f.bin"), sources, options);
    let mut most_active = 0;
    let mut peers = peers;
    let mut left = false;
    loop {
        let progress = download.progress();
        let connected = progress
            .sources
            .iter()
            // Queued: waiting for room, or to be tried again after failing.
            .filter(|s| {
                !matches!(
                    s.state,
                    SourceState::Done | SourceState::Failed | SourceState::Queued
                )
            })
            .count();
        most_active = most_active.max(connected);
        if !left && progress.verified > MIB as u64 {
            // Two sources leave: the queued ones must take over.
            for peer in peers.drain(..2) {
                peer.node.shutdown().await;
            }
            left = true;
        }
        if progress.size.is_some() && progress.verified == progress.size.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    download.wait().await.expect("download completes");
    assert!(most_active <= 2, "{most_active} sources connected at once");
    assert!(
        peers.iter().any(|p| uploaded(&p.node) > 0),
        "queued sources took over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faster_sources_serve_more() {
    let data = patterned(10 * MIB);
    let hash = ContentHash::of(&data);
    let library = Library::with_file("f.bin", &data);
    let mut peers = Vec::new();
    for rate in [400_000, 800_000, 1_600_000, 3_200_000] {
        peers.extend(start_peers(&library, 1, capped(rate)).await);
    }
    let downloader = start_downloader().await;
    let sources = peers.iter().map(|p| p.node.peer_addr()).collect();
    downloader
        .fetch(hash, sources, "f.bin", DownloadOptions::default())
        .await
        .expect("download completes");
    assert!(std::fs::read(downloader.path("f.bin")).unwrap() == data);

    let served: Vec<u64> = peers.iter().map(|p| uploaded(&p.node)).collect();
    assert!(
        served.iter().all(|&bytes| bytes > 0),
        "every source helped: {served:?}"
    );
    assert!(
        served[3] > 3 * served[0],
        "the 8x faster source served more: {served:?}"
    );
    assert!(served[2] > served[0] && served[3] > served[1], "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_source_is_banned_and_the_rest_finish_the_file() {
    let data = patterned(6 * MIB);
    let hash = ContentHash::of(&data);
    let honest_library = Library::with_file("f.bin", &data);
    let honest = start_peers(&honest_library, 2, capped(1_000_000)).await;

    // The liar hashed the real file, then its copy changed on disk behind
    // its back (same size and mtime): it serves wrong bytes from block 3 on.
    let liar_library = Library::with_file("f.bin", &data);
    let liar = start_peers(&liar_library, 1, capped(4_000_000)).await;
    let path = liar_library.path().join("f.bin");
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut corrupt = data.clone();
    for byte in &mut corrupt[3 * 65536..] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, &corrupt).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();

    let downloader = start_downloader().await;
    let mut sources: Vec<_> = honest.iter().map(|p| p.node.peer_addr()).collect();
    sources.insert(0, liar[0].node.peer_addr());
    let report = downloader
        .fetch(hash, sources, "f.bin", DownloadOptions::default())
        .await
        .expect("honest sources finish the file");
    assert!(
        std::fs::read(downloader.path("f.bin")).unwrap() == data,
        "bytes differ"
    );
    let liar_id = liar[0].node.peer_addr().to_string();
    let liar_report = report.sources.iter().find(|s| s.peer == liar_id).unwrap();
    let failure = liar_report.failure.as_deref().unwrap_or_default();
    assert!(
        failure.starts_with("banned") && failure.contains("failed verification"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_gone_keeps_the_part_file_and_a_later_run_resumes() {
    let data = patterned(8 * MIB);
    let hash = ContentHash::of(&data);
    let library = Library::with_file("f.bin", &data);
    let mut peers = start_peers(&library, 2, capped(1_000_000)).await;
    let downloader = start_downloader().await;
    let output = downloader.path("f.bin");
    let sources: Vec<_> = peers.iter().map(|p| p.node.peer_addr()).collect();
    // Gone for good: no second try of a source that served us.
    let options = DownloadOptions {
        source_tries: 1,
        ..DownloadOptions::default()
    };
    let download = downloader.node.download(hash, &output, sources, options);
    until(|| download.progress().verified > 2 * MIB as u64).await;
    for peer in peers.drain(..) {
        peer.node.shutdown().await;
    }
    let error = download.wait().await.unwrap_err();
    assert!(
        matches!(error, DownloadError::NoSources { part: Some(_), .. }),
        "{error}"
    );
    assert_eq!(canopy_node::cli::exit::of_download(&error), 4);
    assert!(error.to_string().contains("verified data is kept"), "{error}");
    assert_eq!(error.kept_part(), Some(part_path(&output).as_path()));
    assert!(part_path(&output).exists() && state_path(&output).exists());

    let fresh = start_peers(&library, 1, Default::default()).await;
    let report = downloader
        .fetch(
            hash,
            vec![fresh[0].node.peer_addr()],
            "f.bin",
            DownloadOptions::default(),
        )
        .await
        .expect("resumed download completes");
    assert!(
        report.resumed_bytes >= 2 * MIB as u64,
        "resumed only {} bytes",
        report.resumed_bytes
    );
    assert!(uploaded(&fresh[0].node) <= (data.len() as u64 - report.resumed_bytes) + MIB as u64);
    assert!(std::fs::read(&output).unwrap() == data);
    assert!(!part_path(&output).exists() && !state_path(&output).exists());
}

/// Downloaders of the same file help each other: the second one is told
/// only about the first (still downloading), learns the original source
/// from it, and fetches from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaders_swarm() {
    let data = patterned(8 * MIB);
    let hash = ContentHash::of(&data);
    let library = Library::with_file("f.bin", &data);
    let seed = start_peers(&library, 1, capped(2_000_000)).await;
    let first = start_downloader().await;
    let first_download = first.node.download(
        hash,
        &first.path("f.bin"),
        vec![seed[0].node.peer_addr()],
        DownloadOptions::default(),
    );
    until(|| first_download.progress().verified > MIB as u64).await;

    let second = start_downloader().await;
    let report = second
        .fetch(
            hash,
            vec![first.node.peer_addr()],
            "f.bin",
            DownloadOptions::default(),
        )
        .await
        .expect("second downloader completes");
    first_download.wait().await.expect("first downloader completes");

    assert!(std::fs::read(second.path("f.bin")).unwrap() == data);
    assert!(
        uploaded(&first.node) > 0,
        "the first downloader served verified blocks"
    );
    let seed_id = seed[0].node.peer_addr().to_string();
    assert!(
        report.sources.iter().any(|s| s.peer == seed_id && s.bytes > 0),
        "the seed was learned by source exchange: {:?}",
        report.sources
    );
}

#[tokio::test]
async fn a_source_without_the_file_is_reported_as_such() {
    let library = Library::with_file("other.bin", b"something else");
    let peers = start_peers(&library, 1, Default::default()).await;
    let downloader = start_downloader().await;
    let error = downloader
        .fetch(
            ContentHash::of(b"absent"),
            vec![peers[0].node.peer_addr()],
            "x",
            DownloadOptions::default(),
        )
        .await
        .unwrap_err();
    let DownloadError::NoSources { failures, part, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(failures[0].1, SourceFailure::NotFound);
    assert!(part.is_none(), "nothing was written, so nothing is claimed kept");
}

/// A source whose link goes dead without a word: once no verified byte has
/// arrived for a while the download says it is stalled and why, instead of
/// showing a frozen bar (issue 25).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_whose_source_goes_silent_is_shown_stalled_with_the_reason() {
    let data = patterned(8 * MIB);
    let hash = ContentHash::of(&data);
    let library = Library::with_file("f.bin", &data);
    let peers = start_peers(&library, 1, capped(1_000_000)).await;
    let (path, open) = cuttable_path_to(peers[0].node.peer_addr().addr).await;
    let source = PeerAddr::new(peers[0].node.peer_addr().id, path);
    let downloader = start_downloader().await;
    // One try: a source is not retried here, so the reason is fixed.
    let options = DownloadOptions {
        wait_for_sources: Duration::from_secs(60),
        source_tries: 1,
        ..DownloadOptions::default()
    };
    let download = downloader
        .node
        .download(hash, &downloader.path("f.bin"), vec![source], options);
    until(|| download.progress().verified > MIB as u64).await;
    assert!(download.progress().stalled.is_none());
    open.store(false, std::sync::atomic::Ordering::Relaxed);
    until(|| download.progress().stalled.is_some()).await;
    let progress = download.progress();
    let stall = progress.stalled.expect("stalled");
    assert!(stall.seconds >= 10, "{stall:?}");
    assert_eq!(stall.reason, "the only source failed; looking for more");
    download.pause();
    assert!(matches!(download.finished().await, Err(DownloadError::Paused)));
}
