//! One node shares, another fetches by content hash over real QUIC on
//! loopback, and what arrives is exactly what b3sum would name.

use std::fs::{self, OpenOptions};
use std::io::Write;

use canopy_common::proto::content::MIN_BLOCK_SIZE;
use canopy_common::proto::{ContentHash, PeerAddr, PeerId};
use canopy_node::download::{part_path, DownloadError, DownloadOptions, SourceFailure};
use canopy_node::{Node, NodeConfig};
use canopy_tests::{file_names, patterned, start_downloader, start_sharer, LOOPBACK};

const BLOCK: usize = MIN_BLOCK_SIZE as usize;

#[tokio::test]
async fn files_of_every_shape_arrive_intact() {
    let sizes = [
        0,
        1,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        3 * BLOCK,
        5 * BLOCK + 17,
        100_000_000,
    ];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .map(|&size| (format!("file-{size}.bin"), patterned(size)))
        .collect();
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let sharer = start_sharer(&named).await;
    let downloader = start_downloader().await;

    for (name, bytes) in &files {
        let hash = ContentHash::from(blake3::hash(bytes));
        let report = downloader
            .fetch(
                hash,
                vec![sharer.node.peer_addr()],
                name,
                DownloadOptions::default(),
            )
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(report.size, bytes.len() as u64);
        let output = downloader.path(name);
        assert!(fs::read(&output).unwrap() == *bytes, "{name}: bytes differ");
        assert!(!part_path(&output).exists(), "{name}: part file left behind");
    }
    downloader.node.shutdown().await;
    sharer.node.shutdown().await;
}

#[tokio::test]
async fn a_wrong_peer_id_is_refused_at_the_handshake() {
    let sharer = start_sharer(&[("a.bin", patterned(1000))]).await;
    let downloader = start_downloader().await;
    let impostor = PeerAddr::new(PeerId([9; 32]), sharer.node.peer_addr().addr);
    let error = downloader
        .fetch(
            ContentHash::of(&patterned(1000)),
            vec![impostor],
            "a.bin",
            DownloadOptions::default(),
        )
        .await
        .unwrap_err();
    let DownloadError::NoSources { failures, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        matches!(&failures[0].1, SourceFailure::Unreachable(reason) if reason.contains("handshake")),
        "{error}"
    );
    assert_eq!(canopy_node::cli::exit::of_download(&error), 4);
    assert!(
        !file_names(downloader.dir.path())
            .iter()
            .any(|n| n.starts_with("a.bin")),
        "nothing written"
    );
}

#[tokio::test]
async fn an_unknown_hash_is_a_clear_error() {
    let sharer = start_sharer(&[("a.bin", patterned(1000))]).await;
    let downloader = start_downloader().await;
    let unknown = ContentHash::of(b"nobody shares this");
    let error = downloader
        .fetch(
            unknown,
            vec![sharer.node.peer_addr()],
            "x",
            DownloadOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&unknown.to_hex()), "{error}");
    assert!(error.to_string().contains("does not share"), "{error}");
    assert_eq!(canopy_node::cli::exit::of_download(&error), 3);
}

/// A source whose file changed on disk behind its back (same size, same
/// mtime) serves altered bytes: the fetcher must notice, ban it, and must
/// not have written the bad block anywhere.
#[tokio::test]
async fn altered_bytes_are_caught_and_never_written() {
    let original = patterned(8 * BLOCK);
    let sharer = start_sharer(&[("a.bin", original.clone())]).await;
    let path = sharer.share_dir.join("a.bin");
    let modified = fs::metadata(&path).unwrap().modified().unwrap();
    let bad_block = 5;
    {
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start((bad_block * BLOCK + 100) as u64))
            .unwrap();
        file.write_all(&[original[bad_block * BLOCK + 100] ^ 0xff])
            .unwrap();
        file.set_modified(modified).unwrap();
    }

    let downloader = start_downloader().await;
    let error = downloader
        .fetch(
            ContentHash::of(&original),
            vec![sharer.node.peer_addr()],
            "a.bin",
            DownloadOptions::default(),
        )
        .await
        .unwrap_err();
    let DownloadError::NoSources { failures, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        matches!(&failures[0].1, SourceFailure::Banned(reason) if reason.contains("block 5")),
        "{error}"
    );
    assert_eq!(canopy_node::cli::exit::of_download(&error), 5);
    assert!(error.to_string().contains("banned"), "{error}");
    let output = downloader.path("a.bin");
    assert!(!output.exists(), "no final file from a corrupt source");

    // The part file holds zeros where the bad block would be, and only
    // verified bytes elsewhere.
    let part = fs::read(part_path(&output)).unwrap();
    let bad_range = bad_block * BLOCK..(bad_block + 1) * BLOCK;
    assert!(
        part[bad_range.clone()].iter().all(|&b| b == 0),
        "bad block never written"
    );
    for (index, chunk) in part.chunks(BLOCK).enumerate() {
        let expected = &original[index * BLOCK..(index * BLOCK + chunk.len())];
        assert!(
            chunk.iter().all(|&b| b == 0) || chunk == expected,
            "block {index} is neither empty nor verified"
        );
    }
}

/// What a node downloaded stays shared when it starts again (as eMule and
/// BitTorrent clients do), for a node whose shares are its own to keep
/// (`canopy run`, the app); a file changed since is not shared as the
/// downloaded one.
#[tokio::test]
async fn downloads_stay_shared_across_a_restart() {
    let (kept, touched) = (patterned(300_000), patterned(70_000));
    let sharer = start_sharer(&[("kept.bin", kept.clone()), ("touched.bin", touched.clone())]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = NodeConfig::new(dir.path().join("data"), LOOPBACK);
        config.editable_folders = true;
        config
    };
    let node = Node::start(config()).await.unwrap();
    for (name, bytes) in [("kept.bin", &kept), ("touched.bin", &touched)] {
        let output = dir.path().join(name);
        node.download(
            ContentHash::of(bytes),
            &output,
            vec![sharer.node.peer_addr()],
            Default::default(),
        )
        .wait()
        .await
        .expect("downloaded");
    }
    assert_eq!(node.shares().len(), 2, "shared once downloaded");
    node.shutdown().await;
    // One file changes while the node is down.
    std::fs::write(dir.path().join("touched.bin"), b"something else now").unwrap();

    let node = Node::start(config()).await.unwrap();
    let shared: Vec<ContentHash> = node.shares().list().iter().map(|f| f.hash()).collect();
    assert_eq!(
        shared,
        vec![ContentHash::of(&kept)],
        "the unchanged download is shared again"
    );
    // And it is served: another node fetches it from the restarted one.
    let other = start_downloader().await;
    let report = other
        .fetch(
            ContentHash::of(&kept),
            vec![node.peer_addr()],
            "again.bin",
            Default::default(),
        )
        .await
        .expect("served after the restart");
    assert_eq!(report.size, kept.len() as u64);
    assert_eq!(std::fs::read(other.path("again.bin")).unwrap(), kept);
}
