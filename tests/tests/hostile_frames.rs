//! Garbage from a peer closes that stream, is counted, and harms no one else.

use std::sync::atomic::Ordering;

use canopy_common::net::{read_frame, write_frame};
use canopy_common::proto::{ContentHash, Request, Response, MAX_CONTROL_FRAME};
use canopy_node::download::DownloadOptions;
use canopy_node::serve::codes;
use canopy_tests::{client, patterned, start_downloader, start_sharer};
use quinn::{ReadError, VarInt};

async fn send_raw(connection: &quinn::Connection, bytes: &[u8]) -> ReadError {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let mut buffer = [0u8; 64];
    match recv.read(&mut buffer).await {
        Err(error) => error,
        Ok(read) => panic!("expected the stream to be reset, read {read:?}"),
    }
}

#[tokio::test]
async fn garbage_frames_close_the_stream_and_the_node_keeps_serving() {
    let data = patterned(300_000);
    let hash = ContentHash::of(&data);
    let sharer = start_sharer(&[("a.bin", data.clone())]).await;
    let attacker = client();
    let connection = attacker.connect(&sharer.node.peer_addr()).await.unwrap();

    let oversize = (MAX_CONTROL_FRAME as u32 + 1).to_be_bytes();
    let malformed = [0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff];
    let mut trailing = canopy_common::proto::frame::encode(&Request::BlockLayer { hash }, 1024).unwrap();
    trailing.push(7);
    trailing[3] += 1;
    for garbage in [&oversize[..], &malformed[..], &trailing[..]] {
        let error = send_raw(&connection, garbage).await;
        assert_eq!(
            error,
            ReadError::Reset(VarInt::from_u32(codes::BAD_FRAME)),
            "{garbage:?}"
        );
    }
    assert_eq!(sharer.node.stats().bad_frames.load(Ordering::Relaxed), 3);

    // The same connection still answers a well-formed request...
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    write_frame(&mut send, &Request::BlockLayer { hash })
        .await
        .unwrap();
    send.finish().unwrap();
    let response: Response = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
    assert_eq!(
        response,
        Response::BlockLayer {
            size: data.len() as u64
        }
    );

    // ...and so does the node for a second, honest client.
    let honest = start_downloader().await;
    honest
        .fetch(
            hash,
            vec![sharer.node.peer_addr()],
            "a.bin",
            DownloadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(honest.path("a.bin")).unwrap(), data);
}

#[tokio::test]
async fn out_of_range_requests_get_a_reason_not_a_crash() {
    let data = patterned(200_000);
    let hash = ContentHash::of(&data);
    let sharer = start_sharer(&[("a.bin", data)]).await;
    let connection = client().connect(&sharer.node.peer_addr()).await.unwrap();
    for (first, count) in [(0, 0), (3, 2), (u32::MAX, u32::MAX), (0, 100_000)] {
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        write_frame(&mut send, &Request::Blocks { hash, first, count })
            .await
            .unwrap();
        send.finish().unwrap();
        let response: Response = read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
        assert!(
            matches!(response, Response::BadRequest { .. }),
            "{first}+{count}: {response:?}"
        );
    }
}
