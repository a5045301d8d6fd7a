//! Serving content to peers.
//!
//! Each request arrives on its own QUIC stream. A stream that sends garbage,
//! asks for too much or stalls is closed with an error code and counted; the
//! connection and every other stream carry on. Content is found by hash in
//! [`Shares`] only: no path from the network is ever opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use canopy_common::net::{read_frame, remote_peer_id, write_frame, NetError};
use canopy_common::proto::wire::MAX_BLOCKS_PER_REQUEST;
use canopy_common::proto::{PeerId, Request, Response, MAX_CONTROL_FRAME};
use quinn::{RecvStream, SendStream, VarInt};

use crate::fileio::read_exact_at;
use crate::share::{SharedFile, Shares};

/// Stream error codes a peer may see.
pub mod codes {
    /// The request frame was oversize or malformed.
    pub const BAD_FRAME: u32 = 1;
    /// The request did not arrive in time.
    pub const TIMEOUT: u32 = 2;
    /// We failed while answering (disk error, file vanished).
    pub const INTERNAL: u32 = 3;
}

/// How long a peer may take to send its request after opening a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from disk per write to the stream.
const READ_CHUNK: usize = 1 << 20;

/// Counters an operator (and a test) can read.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub requests: AtomicU64,
    pub bad_frames: AtomicU64,
    pub bytes_sent: AtomicU64,
}

/// Serves every stream a connected peer opens until the connection ends.
pub async fn serve_connection(
    connection: quinn::Connection,
    shares: Arc<Shares>,
    stats: Arc<ServeStats>,
) {
    let peer = match remote_peer_id(&connection) {
        Ok(peer) => peer,
        Err(error) => {
            tracing::warn!(%error, "closing connection without identity");
            return;
        }
    };
    tracing::debug!(peer = %peer.short(), remote = %connection.remote_address(), "peer connected");
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(peer = %peer.short(), %error, "peer gone");
                return;
            }
        };
        let shares = shares.clone();
        let stats = stats.clone();
        tokio::spawn(async move { serve_stream(peer, send, recv, &shares, &stats).await });
    }
}

async fn serve_stream(
    peer: PeerId,
    mut send: SendStream,
    mut recv: RecvStream,
    shares: &Shares,
    stats: &ServeStats,
) {
    let request = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame::<Request>(&mut recv, MAX_CONTROL_FRAME),
    )
    .await
    {
        Ok(Ok(request)) => request,
        Ok(Err(NetError::Frame(error))) => {
            stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %peer.short(), %error, "closing stream: bad request frame");
            close(&mut send, &mut recv, codes::BAD_FRAME);
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(peer = %peer.short(), %error, "request stream ended early");
            close(&mut send, &mut recv, codes::BAD_FRAME);
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer.short(), "closing stream: no request within {REQUEST_TIMEOUT:?}");
            close(&mut send, &mut recv, codes::TIMEOUT);
            return;
        }
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    // Nothing more is expected from the peer on this stream.
    let _ = recv.stop(VarInt::from_u32(0));

    let outcome = answer(&request, &mut send, shares, stats).await;
    match outcome {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(error) => {
            tracing::debug!(peer = %peer.short(), ?request, %error, "request failed");
            let _ = send.reset(VarInt::from_u32(codes::INTERNAL));
        }
    }
}

fn close(send: &mut SendStream, recv: &mut RecvStream, code: u32) {
    let _ = recv.stop(VarInt::from_u32(code));
    let _ = send.reset(VarInt::from_u32(code));
}

#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("disk: {0}")]
    Disk(#[from] std::io::Error),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
}

async fn answer(
    request: &Request,
    send: &mut SendStream,
    shares: &Shares,
    stats: &ServeStats,
) -> Result<(), AnswerError> {
    let hash = match request {
        Request::BlockLayer { hash } | Request::Blocks { hash, .. } => *hash,
    };
    let Some(file) = shares.get(&hash).filter(SharedFile::unchanged_on_disk) else {
        write_frame(send, &Response::NotFound { hash }).await?;
        return Ok(());
    };
    match *request {
        Request::BlockLayer { .. } => {
            write_frame(send, &Response::BlockLayer { size: file.size }).await?;
            let layer = file.hashes.layer_bytes();
            send.write_all(&layer).await?;
            stats
                .bytes_sent
                .fetch_add(layer.len() as u64, Ordering::Relaxed);
        }
        Request::Blocks { first, count, .. } => {
            let layout = file.hashes.layout();
            let end = u64::from(first) + u64::from(count);
            if count == 0 || count > MAX_BLOCKS_PER_REQUEST || end > u64::from(layout.block_count())
            {
                let reason = format!(
                    "blocks {first}..{end} not in 0..{} (at most {MAX_BLOCKS_PER_REQUEST} per request)",
                    layout.block_count()
                );
                write_frame(send, &Response::bad_request(reason)).await?;
                return Ok(());
            }
            write_frame(send, &Response::Blocks { first, count }).await?;
            let range = layout.blocks_range(first, count);
            send_file_range(send, &file, range.start, range.end, stats).await?;
        }
    }
    Ok(())
}

/// Streams bytes `start..end` of a shared file, reading the next chunk from
/// disk while the current one is being sent.
async fn send_file_range(
    send: &mut SendStream,
    file: &SharedFile,
    start: u64,
    end: u64,
    stats: &ServeStats,
) -> Result<(), AnswerError> {
    let path = file.path.clone();
    let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let result = (|| -> std::io::Result<()> {
            let file = std::fs::File::open(&path)?;
            let mut offset = start;
            while offset < end {
                let len = ((end - offset) as usize).min(READ_CHUNK);
                let mut buffer = vec![0u8; len];
                read_exact_at(&file, &mut buffer, offset)?;
                offset += len as u64;
                if chunks_tx.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                    return Ok(()); // the sender gave up; nothing to report
                }
            }
            Ok(())
        })();
        if let Err(error) = result {
            let _ = chunks_tx.blocking_send(Err(error));
        }
    });
    while let Some(chunk) = chunks_rx.recv().await {
        let chunk = chunk?;
        let len = chunk.len() as u64;
        send.write_chunk(chunk).await?;
        stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
    }
    drop(chunks_rx);
    let _ = reader.await;
    Ok(())
}
