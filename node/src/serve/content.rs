//! Content by hash: the block layer, blocks, what we hold of a file, and
//! who else has it. Uploads share a node-wide rate cap fairly (see
//! [`RateLimiter`]) and a fixed number of upload slots; a request that
//! finds every slot taken is told [`Response::Busy`] rather than queued
//! without bound.

use canopy_common::sync::ReadWrite;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use canopy_common::net::write_frame;
use canopy_common::proto::wire::MAX_BLOCKS_PER_REQUEST;
use canopy_common::proto::{ContentHash, PeerAddr, Response};
use quinn::SendStream;

use super::AnswerError;
use crate::fileio::read_exact_at;
use crate::ratelimit::RateLimiter;
use crate::share::Content;
use crate::state::NodeState;
use crate::votes::Refused;

/// How long one chunk of an answer may wait for the peer to read. A peer
/// that asks and never reads would otherwise hold an upload slot forever.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(15);
/// Bytes read from disk per write to the stream when no cap applies.
const READ_CHUNK: usize = 1 << 20;
/// What a busy node suggests as a retry delay.
const BUSY_RETRY_MS: u32 = 1000;

/// The file's content, or `NotFound` already answered.
async fn find(
    hash: ContentHash,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<Option<Content>, AnswerError> {
    let content = state.shares.content(&hash);
    if content.is_none() {
        write_frame(send, &Response::NotFound { hash }).await?;
    }
    Ok(content)
}

/// Like [`find`], for a peer starting to fetch the file: it is recorded as
/// a fellow downloader, to be offered to others by source exchange.
async fn find_for(
    peer: PeerAddr,
    hash: ContentHash,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<Option<Content>, AnswerError> {
    let content = find(hash, send, state).await?;
    if content.is_some() {
        state.swarm.record(hash, peer, Instant::now());
    }
    Ok(content)
}

/// The block layer: the size, then every block's chaining value.
pub(super) async fn block_layer(
    peer: PeerAddr,
    hash: ContentHash,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let Some(content) = find_for(peer, hash, send, state).await? else {
        return Ok(());
    };
    let hashes = content.hashes();
    let size = hashes.layout().size();
    write_frame(send, &Response::BlockLayer { size }).await?;
    send.write_all(&hashes.layer_bytes()).await?;
    Ok(())
}

/// Which blocks we hold: all, or (while we are still downloading) a bitfield.
pub(super) async fn have(
    peer: PeerAddr,
    hash: ContentHash,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let Some(content) = find_for(peer, hash, send, state).await? else {
        return Ok(());
    };
    let response = match &content {
        Content::Complete(_) => Response::HaveAll,
        Content::Partial(file) => Response::Have {
            blocks: file.have.read_locked().to_wire(),
        },
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// Other peers fetching or holding the file (source exchange).
pub(super) async fn sources(
    peer: PeerAddr,
    hash: ContentHash,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let peers = state.swarm.peers(&hash, peer.id, Instant::now());
    write_frame(send, &Response::Sources { peers }).await?;
    Ok(())
}

/// Blocks `first..first + count`, within an upload slot of the peer's own
/// share and one of the node's.
pub(super) async fn blocks(
    peer: PeerAddr,
    hash: ContentHash,
    first: u32,
    count: u32,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let Some(content) = find_for(peer, hash, send, state).await? else {
        return Ok(());
    };
    let layout = content.hashes().layout();
    let end = u64::from(first) + u64::from(count);
    if count == 0 || count > MAX_BLOCKS_PER_REQUEST || end > u64::from(layout.block_count()) {
        let reason = format!(
            "blocks {first}..{end} not in 0..{} (at most {MAX_BLOCKS_PER_REQUEST} per request)",
            layout.block_count()
        );
        write_frame(send, &Response::bad_request(reason)).await?;
        return Ok(());
    }
    if let (false, Content::Partial(file)) = (content.has_blocks(first, count), &content) {
        // Still downloading those: answer with what we do have.
        let blocks = file.have.read_locked().to_wire();
        write_frame(send, &Response::Have { blocks }).await?;
        return Ok(());
    }
    let slots = state
        .peer_slot(peer.id)
        .and_then(|peer_slot| Some((peer_slot, state.slots.try_acquire().ok()?)));
    let Some(_slots) = slots else {
        state.stats.busy.fetch_add(1, Ordering::Relaxed);
        let busy = Response::Busy {
            retry_after_ms: BUSY_RETRY_MS,
        };
        write_frame(send, &busy).await?;
        return Ok(());
    };
    write_frame(send, &Response::Blocks { first, count }).await?;
    let range = layout.blocks_range(first, count);
    send_file_range(send, &content, range.start, range.end, state).await
}

/// Streams bytes `start..end` of a file, reading the next chunk from disk
/// while the current one is being sent, within the upload rate cap.
async fn send_file_range(
    send: &mut SendStream,
    content: &Content,
    start: u64,
    end: u64,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let chunk_size = state.limiter.active().map_or(READ_CHUNK, RateLimiter::chunk);
    let path = content.path().to_path_buf();
    let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let reader = tokio::task::spawn_blocking(move || {
        let result = (|| -> std::io::Result<()> {
            let file = std::fs::File::open(&path)?;
            let mut offset = start;
            while offset < end {
                let len = ((end - offset) as usize).min(chunk_size);
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
        if let Some(limiter) = state.limiter.active() {
            limiter.acquire(chunk.len()).await;
        }
        match tokio::time::timeout(WRITE_STALL, send.write_chunk(chunk)).await {
            Ok(written) => written?,
            Err(_) => return Err(AnswerError::Stalled),
        }
        state.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
    }
    drop(chunks_rx);
    let _ = reader.await;
    Ok(())
}

/// Proof of possession: chunk `chunk` of a file we hold whole, with the
/// chaining values that link it to the hash (`proto::possession`). Read
/// from disk as it is now: a file changed since it was hashed fails the
/// check, as it should.
/// A downloader swaps votes with us, a source of its file
/// ([`crate::votes::Votes::swap_answer`]).
pub(super) async fn swap_votes(
    peer: PeerAddr,
    votes: Vec<canopy_common::proto::credence::SignedVote>,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.votes.get().map(|book| book.swap_answer(peer, &votes)) {
        Some(Ok(votes)) => Response::SwappedVotes { votes },
        Some(Err(refused)) => refusal(peer, refused, 10_000),
        None => refusal(peer, Refused::Busy, 10_000),
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// A peer that agrees with us asks what we think of some files
/// ([`crate::votes::Votes::opinions_answer`]).
pub(super) async fn opinions(
    peer: PeerAddr,
    hashes: Vec<ContentHash>,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state
        .votes
        .get()
        .map(|book| book.opinions_answer(peer.id, &hashes))
    {
        Some(Ok((votes, opinions))) => Response::Opinions { votes, opinions },
        Some(Err(refused)) => refusal(peer, refused, 1_000),
        None => refusal(peer, Refused::Busy, 1_000),
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// `Busy` (over budget, or no votes kept here) or `BadRequest` with the reason.
fn refusal(peer: PeerAddr, refused: Refused, retry_after_ms: u32) -> Response {
    match refused {
        Refused::Busy => Response::Busy { retry_after_ms },
        refused => {
            tracing::debug!(peer = ?peer, %refused, "refused a peer's votes request");
            Response::bad_request(refused.to_string())
        }
    }
}

pub(super) async fn prove(
    hash: ContentHash,
    chunk: u64,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    use canopy_common::proto::possession::{self, chunk_count, chunk_range, CHUNK_LEN};
    // Asked for a file we published that changed on disk since: stop
    // offering it (the supernode is told within a second), and say so.
    state.shares.forget_if_changed(&hash);
    let Some(content) = find(hash, send, state).await? else {
        return Ok(());
    };
    let hashes = content.hashes().clone();
    let layout = hashes.layout();
    let count = chunk_count(layout.size());
    let block = (chunk.saturating_mul(CHUNK_LEN) / layout.block_size()) as u32;
    if chunk >= count || !content.has_blocks(block, 1) {
        let reason = format!("chunk {chunk} not held (the file has {count} chunks)");
        write_frame(send, &Response::bad_request(reason)).await?;
        return Ok(());
    }
    let path = content.path().to_path_buf();
    let range = layout.block_range(block);
    let block_bytes = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let mut bytes = vec![0u8; (range.end - range.start) as usize];
        read_exact_at(&file, &mut bytes, range.start)?;
        Ok::<_, std::io::Error>(bytes)
    })
    .await
    .map_err(std::io::Error::other)??;
    let proof = possession::prove(&hashes, chunk, &block_bytes).map_err(std::io::Error::other)?;
    let within = chunk_range(layout.size(), chunk);
    let start = (within.start - range.start) as usize;
    let data = block_bytes[start..start + (within.end - within.start) as usize].to_vec();
    write_frame(
        send,
        &Response::Proof {
            size: layout.size(),
            data,
            proof,
        },
    )
    .await?;
    Ok(())
}
