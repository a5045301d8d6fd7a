//! Serving content to peers.
//!
//! Each request arrives on its own QUIC stream. A stream that sends garbage,
//! asks for too much or stalls is closed with an error code and counted; the
//! connection and every other stream carry on. Content is found by hash in
//! [`Shares`] only: no path from the network is ever opened.
//!
//! Uploads share a node-wide rate cap fairly (see [`RateLimiter`]) and a
//! fixed number of upload slots; a request that finds every slot taken is
//! told [`Response::Busy`] rather than queued without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use canopy_common::net::{read_frame, remote_peer_id, write_frame, NetError};
use canopy_common::proto::wire::MAX_BLOCKS_PER_REQUEST;
use canopy_common::proto::{PeerAddr, Request, Response, MAX_CONTROL_FRAME};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::Semaphore;

use crate::fileio::read_exact_at;
use crate::ratelimit::RateLimiter;
use crate::share::{Content, Shares};
use crate::swarm::SwarmDirectory;
use canopy_common::proto::PeerId;
use canopy_supernode::Supernode;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

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
/// How long one chunk of an answer may wait for the peer to read. A peer
/// that asks and never reads would otherwise hold an upload slot forever.
const WRITE_STALL: Duration = Duration::from_secs(15);
/// Block requests one peer may have served at once, so a single peer
/// cannot take every upload slot.
pub const SLOTS_PER_PEER: usize = 8;
/// Bytes read from disk per write to the stream when no cap applies.
const READ_CHUNK: usize = 1 << 20;
/// What a busy node suggests as a retry delay.
const BUSY_RETRY_MS: u32 = 1000;

/// Upload policy.
#[derive(Debug, Clone)]
pub struct TransferLimits {
    /// Total upload rate in bytes per second (`None`: unlimited).
    pub max_upload_rate: Option<u64>,
    /// Block requests served at once; more get [`Response::Busy`].
    pub upload_slots: usize,
    /// Total download rate in bytes per second, over all of the node's
    /// downloads (`None`: unlimited).
    pub max_download_rate: Option<u64>,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            max_upload_rate: None,
            upload_slots: 64,
            max_download_rate: None,
        }
    }
}

/// Counters an operator (and a test) can read.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub requests: AtomicU64,
    pub bad_frames: AtomicU64,
    pub busy: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Bytes received by this node's downloads: content (duplicates
    /// included) and block layers.
    pub bytes_received: AtomicU64,
}

/// Everything the upload side needs, shared by all connections.
#[derive(Debug)]
pub struct ServeContext {
    pub shares: Arc<Shares>,
    pub stats: Arc<ServeStats>,
    pub swarm: SwarmDirectory,
    /// Set while this node is a supernode (from the start, or from a
    /// promotion until a demotion).
    supernode: std::sync::RwLock<Option<Arc<Supernode>>>,
    /// Admission for bandwidth and reachability probes we serve.
    pub probes: crate::probe::ProbeGate,
    /// Downloads waiting for a firewalled source to connect to us.
    awaited_pushes: Mutex<HashMap<PeerId, Vec<oneshot::Sender<quinn::Connection>>>>,
    pub(crate) limiter: RateLimiter,
    /// Shared by every download of this node.
    pub(crate) download_limiter: RateLimiter,
    slots: Semaphore,
    /// Upload slots in use per peer.
    peer_slots: Arc<Mutex<HashMap<PeerId, usize>>>,
    /// The private network this node is in (unset: the public network).
    pub membership: std::sync::OnceLock<Arc<canopy_common::net::Membership>>,
}

impl ServeContext {
    pub fn new(shares: Arc<Shares>, limits: &TransferLimits, supernode: Option<Arc<Supernode>>) -> Self {
        ServeContext {
            supernode: std::sync::RwLock::new(supernode),
            awaited_pushes: Mutex::default(),
            probes: Default::default(),
            shares,
            stats: Arc::default(),
            swarm: SwarmDirectory::default(),
            limiter: RateLimiter::optional(limits.max_upload_rate),
            download_limiter: RateLimiter::optional(limits.max_download_rate),
            slots: Semaphore::new(limits.upload_slots.max(1)),
            peer_slots: Arc::default(),
            membership: Default::default(),
        }
    }

    /// One of `peer`'s [`SLOTS_PER_PEER`] upload slots, released when dropped.
    fn peer_slot(&self, peer: PeerId) -> Option<PeerSlot> {
        let mut slots = self.peer_slots.lock().expect("peer slots lock");
        let used = slots.entry(peer).or_insert(0);
        if *used >= SLOTS_PER_PEER {
            return None;
        }
        *used += 1;
        Some(PeerSlot {
            peer,
            slots: self.peer_slots.clone(),
        })
    }

    /// Changes the upload and download caps (`None`: unlimited) from now on.
    pub fn set_rates(&self, upload: Option<u64>, download: Option<u64>) {
        self.limiter.set_rate(upload);
        self.download_limiter.set_rate(download);
    }

    /// The caps in force (`None`: unlimited).
    pub fn rates(&self) -> (Option<u64>, Option<u64>) {
        let cap = |limiter: &RateLimiter| limiter.active().map(RateLimiter::bytes_per_second);
        (cap(&self.limiter), cap(&self.download_limiter))
    }

    /// The supernode role this node plays now, if any.
    pub fn supernode(&self) -> Option<Arc<Supernode>> {
        self.supernode.read().expect("supernode lock").clone()
    }

    /// Takes up (`Some`) or leaves (`None`) the supernode role; returns the
    /// one it replaces.
    pub fn set_supernode(&self, supernode: Option<Arc<Supernode>>) -> Option<Arc<Supernode>> {
        std::mem::replace(&mut *self.supernode.write().expect("supernode lock"), supernode)
    }
}

impl ServeContext {
    /// Resolves when `peer` connects to us (after we asked for a push).
    pub fn await_push(&self, peer: PeerId) -> oneshot::Receiver<quinn::Connection> {
        let (sender, receiver) = oneshot::channel();
        let mut awaited = self.awaited_pushes.lock().expect("pushes lock");
        // Forget waiters that gave up.
        awaited.retain(|_, waiting| {
            waiting.retain(|w| !w.is_closed());
            !waiting.is_empty()
        });
        awaited.entry(peer).or_default().push(sender);
        receiver
    }

    /// Hands an incoming connection to downloads waiting for that peer.
    pub fn deliver_push(&self, peer: PeerId, connection: &quinn::Connection) {
        let waiting = self.awaited_pushes.lock().expect("pushes lock").remove(&peer);
        for waiter in waiting.into_iter().flatten() {
            let _ = waiter.send(connection.clone());
        }
    }
}

/// Serves every stream a connected peer opens until the connection ends.
pub async fn serve_connection(connection: quinn::Connection, context: Arc<ServeContext>) {
    let peer = match remote_peer_id(&connection) {
        Ok(id) => PeerAddr::new(id, connection.remote_address()),
        Err(error) => {
            tracing::warn!(%error, "closing connection without identity");
            return;
        }
    };
    tracing::debug!(peer = ?peer, "peer connected");
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(peer = ?peer, %error, "peer gone");
                return;
            }
        };
        let context = context.clone();
        let connection = connection.clone();
        tokio::spawn(async move { serve_stream(peer, &connection, send, recv, &context).await });
    }
}

async fn serve_stream(
    peer: PeerAddr,
    connection: &quinn::Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    context: &ServeContext,
) {
    let stats = &context.stats;
    let request = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_frame::<Request>(&mut recv, MAX_CONTROL_FRAME),
    )
    .await
    {
        Ok(Ok(request)) => request,
        Ok(Err(NetError::Frame(error))) => {
            stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = ?peer, %error, "closing stream: bad request frame");
            close(&mut send, &mut recv, codes::BAD_FRAME);
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(peer = ?peer, %error, "request stream ended early");
            close(&mut send, &mut recv, codes::BAD_FRAME);
            return;
        }
        Err(_) => {
            tracing::debug!(peer = ?peer, "closing stream: no request within {REQUEST_TIMEOUT:?}");
            close(&mut send, &mut recv, codes::TIMEOUT);
            return;
        }
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let request = match request {
        // A leaf's session keeps this stream open for as long as it stays.
        Request::Join(hello) => {
            match context.supernode() {
                Some(supernode) => supernode.serve_leaf(peer, hello, send, recv).await,
                None => {
                    let _ = write_frame(&mut send, &Response::NotSupernode { others: Vec::new() }).await;
                    let _ = send.finish();
                }
            }
            return;
        }
        // So does a neighbouring supernode's link.
        Request::Link(_) | Request::LinkWith(_) => {
            let offer = match request {
                Request::LinkWith(offer) => Some(offer),
                _ => None,
            };
            match context.supernode() {
                Some(supernode) => supernode.serve_link(peer, connection, offer, send, recv).await,
                None => {
                    let _ = write_frame(&mut send, &Response::NotSupernode { others: Vec::new() }).await;
                    let _ = send.finish();
                }
            }
            return;
        }
        // Probes read the rest of the stream themselves.
        probe @ (Request::ProbeDown { .. } | Request::ProbeUp { .. } | Request::DialBack) => {
            match crate::probe::serve(
                peer,
                &probe,
                &mut send,
                &mut recv,
                &context.probes,
                context.limiter.active(),
                context.membership.get().map(|m| (*m.current()).clone()),
            )
            .await
            {
                Ok(()) => {
                    let _ = send.finish();
                }
                Err(error) => {
                    tracing::debug!(peer = ?peer, %error, "probe failed");
                    close(&mut send, &mut recv, codes::INTERNAL);
                }
            }
            return;
        }
        other => other,
    };
    // Nothing more is expected from the peer on this stream.
    let _ = recv.stop(VarInt::from_u32(0));

    match answer(peer, &request, &mut send, context).await {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(error) => {
            tracing::debug!(peer = ?peer, ?request, %error, "request failed");
            let code = match error {
                AnswerError::Stalled => codes::TIMEOUT,
                _ => codes::INTERNAL,
            };
            let _ = send.reset(VarInt::from_u32(code));
        }
    }
}

/// A peer's hold on one upload slot.
struct PeerSlot {
    peer: PeerId,
    slots: Arc<Mutex<HashMap<PeerId, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().expect("peer slots lock");
        if let Some(used) = slots.get_mut(&self.peer) {
            *used -= 1;
            if *used == 0 {
                slots.remove(&self.peer);
            }
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
    #[error("the peer stopped reading for {WRITE_STALL:?}")]
    Stalled,
}

async fn answer(
    peer: PeerAddr,
    request: &Request,
    send: &mut SendStream,
    context: &ServeContext,
) -> Result<(), AnswerError> {
    let hash = match request {
        Request::BlockLayer { hash }
        | Request::Blocks { hash, .. }
        | Request::Have { hash }
        | Request::Sources { hash } => *hash,
        Request::Push { leaf } => {
            let response = match context.supernode() {
                // The leaf is told the address we see the requester at.
                Some(supernode) if supernode.push(*leaf, peer) => Response::PushSent,
                Some(_) => Response::UnknownLeaf,
                None => Response::NotSupernode { others: Vec::new() },
            };
            write_frame(send, &response).await?;
            return Ok(());
        }
        Request::Search(query) => {
            match context.supernode() {
                Some(supernode) => supernode.answer_search(peer.id, query.clone(), send).await?,
                None => write_frame(send, &Response::NotSupernode { others: Vec::new() }).await?,
            }
            return Ok(());
        }
        Request::Status => {
            let status = match context.supernode() {
                Some(supernode) => Response::Status {
                    supernode: true,
                    leaves: supernode.leaf_count() as u32,
                    max_leaves: supernode.max_leaves() as u32,
                    neighbours: supernode.overlay().map_or(0, |o| o.neighbours().len() as u32),
                },
                None => Response::Status {
                    supernode: false,
                    leaves: 0,
                    max_leaves: 0,
                    neighbours: 0,
                },
            };
            write_frame(send, &status).await?;
            return Ok(());
        }
        Request::Join(_)
        | Request::Link(_)
        | Request::LinkWith(_)
        | Request::ProbeDown { .. }
        | Request::ProbeUp { .. }
        | Request::DialBack => {
            unreachable!("sessions, links and probes are served by serve_stream")
        }
    };
    if let Request::Sources { .. } = request {
        let peers = context.swarm.peers(&hash, peer.id, Instant::now());
        write_frame(send, &Response::Sources { peers }).await?;
        return Ok(());
    }
    let Some(content) = context.shares.content(&hash) else {
        write_frame(send, &Response::NotFound { hash }).await?;
        return Ok(());
    };
    match *request {
        Request::BlockLayer { .. } => {
            context.swarm.record(hash, peer, Instant::now());
            let hashes = content.hashes();
            write_frame(
                send,
                &Response::BlockLayer {
                    size: hashes.layout().size(),
                },
            )
            .await?;
            send.write_all(&hashes.layer_bytes()).await?;
        }
        Request::Have { .. } => {
            context.swarm.record(hash, peer, Instant::now());
            let response = match &content {
                Content::Complete(_) => Response::HaveAll,
                Content::Partial(file) => Response::Have {
                    blocks: file.have.read().expect("have lock").to_wire(),
                },
            };
            write_frame(send, &response).await?;
        }
        Request::Blocks { first, count, .. } => {
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
                let blocks = file.have.read().expect("have lock").to_wire();
                write_frame(send, &Response::Have { blocks }).await?;
                return Ok(());
            }
            // A slot of the peer's own share, then one of the node's.
            let slots = context
                .peer_slot(peer.id)
                .and_then(|peer_slot| Some((peer_slot, context.slots.try_acquire().ok()?)));
            let Some(_slots) = slots else {
                context.stats.busy.fetch_add(1, Ordering::Relaxed);
                write_frame(
                    send,
                    &Response::Busy {
                        retry_after_ms: BUSY_RETRY_MS,
                    },
                )
                .await?;
                return Ok(());
            };
            write_frame(send, &Response::Blocks { first, count }).await?;
            let range = layout.blocks_range(first, count);
            send_file_range(send, &content, range.start, range.end, context).await?;
        }
        Request::Sources { .. }
        | Request::Search(_)
        | Request::Join(_)
        | Request::Link(_)
        | Request::LinkWith(_)
        | Request::Push { .. }
        | Request::Status
        | Request::ProbeDown { .. }
        | Request::ProbeUp { .. }
        | Request::DialBack => {
            unreachable!("answered above")
        }
    }
    Ok(())
}

/// Streams bytes `start..end` of a file, reading the next chunk from disk
/// while the current one is being sent, within the upload rate cap.
async fn send_file_range(
    send: &mut SendStream,
    content: &Content,
    start: u64,
    end: u64,
    context: &ServeContext,
) -> Result<(), AnswerError> {
    let chunk_size = context.limiter.active().map_or(READ_CHUNK, RateLimiter::chunk);
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
        if let Some(limiter) = context.limiter.active() {
            limiter.acquire(chunk.len()).await;
        }
        match tokio::time::timeout(WRITE_STALL, send.write_chunk(chunk)).await {
            Ok(written) => written?,
            Err(_) => return Err(AnswerError::Stalled),
        }
        context.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
    }
    drop(chunks_rx);
    let _ = reader.await;
    Ok(())
}
