//! One node shares, another fetches by content hash over real QUIC on
//! loopback, and what arrives is exactly what b3sum would name.

use std::fs::{self, OpenOptions};
use std::io::Write;

use canopy_common::proto::content::MIN_BLOCK_SIZE;
use canopy_common::proto::{ContentHash, PeerAddr, PeerId};
use canopy_node::fetch::{fetch, part_path, FetchError, FetchOptions};
use canopy_tests::{client, file_names, patterned, start_sharer};

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
    let client = client();
    let out = tempfile::tempdir().unwrap();

    for (name, bytes) in &files {
        let hash = ContentHash::from(blake3::hash(bytes));
        let output = out.path().join(name);
        let report = fetch(
            &client,
            sharer.node.peer_addr(),
            hash,
            &output,
            &FetchOptions::default(),
        )
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(report.size, bytes.len() as u64);
        let received = fs::read(&output).unwrap();
        assert!(received == *bytes, "{name}: bytes differ");
        assert!(
            !part_path(&output).exists(),
            "{name}: part file left behind"
        );
    }
    client.shutdown().await;
    sharer.node.shutdown().await;
}

#[tokio::test]
async fn a_wrong_peer_id_is_refused_at_the_handshake() {
    let sharer = start_sharer(&[("a.bin", patterned(1000))]).await;
    let client = client();
    let impostor = PeerAddr::new(PeerId([9; 32]), sharer.node.peer_addr().addr);
    let out = tempfile::tempdir().unwrap();
    let error = fetch(
        &client,
        impostor,
        ContentHash::of(&patterned(1000)),
        &out.path().join("a.bin"),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, FetchError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("handshake"), "{error}");
    assert!(file_names(out.path()).is_empty(), "nothing written");
}

#[tokio::test]
async fn an_unknown_hash_is_a_clear_error() {
    let sharer = start_sharer(&[("a.bin", patterned(1000))]).await;
    let client = client();
    let out = tempfile::tempdir().unwrap();
    let unknown = ContentHash::of(b"nobody shares this");
    let error = fetch(
        &client,
        sharer.node.peer_addr(),
        unknown,
        &out.path().join("x"),
        &FetchOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, FetchError::NotFound { .. }), "{error}");
    assert!(error.to_string().contains(&unknown.to_hex()));
    assert_eq!(error.exit_code(), 3);
}

/// A source whose file changed on disk behind its back (same size, same
/// mtime) serves altered bytes: the fetcher must notice, and must not have
/// written the bad block anywhere.
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

    let client = client();
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("a.bin");
    // One block per request, so the good blocks are written before the bad
    // one is refused and we can check exactly what reached the disk.
    let options = FetchOptions {
        request_bytes: MIN_BLOCK_SIZE,
        requests_in_flight: 1,
        ..FetchOptions::default()
    };
    let error = fetch(
        &client,
        sharer.node.peer_addr(),
        ContentHash::of(&original),
        &output,
        &options,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, FetchError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("block 5"), "{error}");
    assert_eq!(error.exit_code(), 5);
    assert!(!output.exists(), "no final file from a corrupt source");

    let part = fs::read(part_path(&output)).unwrap();
    let bad_range = bad_block * BLOCK..(bad_block + 1) * BLOCK;
    assert!(
        part[bad_range.clone()].iter().all(|&b| b == 0),
        "bad block never written"
    );
    assert_eq!(
        part[..bad_range.start],
        original[..bad_range.start],
        "verified blocks kept"
    );
}
