//! One node shares, another fetches by content hash over real QUIC on
//! loopback, and what arrives is exactly what b3sum would name.

use std::fs::{self, OpenOptions};
use std::io::Write;

use canopy_common::proto::content::MIN_BLOCK_SIZE;
use canopy_common::proto::{ContentHash, PeerAddr, PeerId};
use canopy_node::download::{part_path, DownloadError, DownloadOptions, SourceFailure};
use canopy_tests::{file_names, patterned, start_downloader, start_sharer};

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
