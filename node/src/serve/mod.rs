//! Answering peers: every request a peer opens a stream for, one dispatch.
//!
//! Each request arrives on its own QUIC stream. A stream that sends garbage,
//! asks for too much or stalls is closed with an error code and counted; the
//! connection and every other stream carry on. One match hands each request
//! family to its owner:
//!
//! * content (`content.rs`): block layers, blocks, what we hold, who else
//!   has it — found by hash in the node's shares only, never by a path
//!   from the network;
//! * the supernode side (`supernode.rs`): leaf sessions, links from
//!   neighbour supernodes, searches, pushes, status;
//! * probes ([`crate::measure`]): bandwidth and reachability measurements.

mod content;
mod supernode;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use canopy_common::net::{read_frame, remote_peer_id, write_frame, NetError};
use canopy_common::proto::{PeerAddr, Request, Response, MAX_CONTROL_FRAME};
use quinn::{RecvStream, SendStream, VarInt};

use crate::state::NodeState;

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

/// Serves every stream a connected peer opens until the connection ends.
pub async fn serve_connection(connection: quinn::Connection, state: Arc<NodeState>) {
    let peer = match remote_peer_id(&connection) {
        Ok(id) => PeerAddr::new(id, canopy_common::net::remote_addr(&connection)),
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
                // Gone: not a fellow downloader to offer any more.
                state.swarm.forget(peer.id);
                return;
            }
        };
        let state = state.clone();
        let connection = connection.clone();
        tokio::spawn(async move { serve_stream(peer, &connection, send, recv, &state).await });
    }
}

/// Reads one request and hands it to its owner.
async fn serve_stream(
    peer: PeerAddr,
    connection: &quinn::Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    state: &NodeState,
) {
    // Where the peer is now: its router may have given it a new address
    // since it connected (quinn migrates the connection). What we tell it
    // it is seen at (`Observe`), the address a dial-back tests and the one
    // a punch or push aims at are all this one.
    let peer = PeerAddr::new(peer.id, canopy_common::net::remote_addr(connection));
    let stats = &state.stats;
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
    let described = format!("{request:?}");
    let answered = match request {
        // Content: nothing more is expected from the peer on the stream.
        Request::BlockLayer { hash } => {
            let _ = recv.stop(VarInt::from_u32(0));
            content::block_layer(peer, hash, &mut send, state).await
        }
        Request::Blocks { hash, first, count } => {
            let _ = recv.stop(VarInt::from_u32(0));
            content::blocks(peer, hash, first, count, &mut send, state).await
        }
        Request::Have { hash } => {
            let _ = recv.stop(VarInt::from_u32(0));
            content::have(peer, hash, &mut send, state).await
        }
        Request::Report { hash, source } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::report(peer, hash, source, &mut send, state).await
        }
        Request::Votes { votes } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::votes(peer, votes, &mut send, state).await
        }
        Request::NotesFor { hashes } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::notes_for(hashes, &mut send, state).await
        }
        Request::SwapVotes { votes } => {
            let _ = recv.stop(VarInt::from_u32(0));
            content::swap_votes(peer, votes, &mut send, state).await
        }
        Request::AskOpinions { hashes } => {
            let _ = recv.stop(VarInt::from_u32(0));
            content::opinions(peer, hashes, &mut send, state).await
        }
        Request::Prove { hash, chunk } => {
            let _ = recv.stop(VarInt::from_u32(0));
            content::prove(hash, chunk, &mut send, state).await
        }
        Request::Sources { hash } => {
            let _ = recv.stop(VarInt::from_u32(0));
            content::sources(peer, hash, &mut send, state).await
        }
        // A leaf's session and a neighbour's link keep the stream open for
        // as long as they last.
        Request::Join(hello) => return supernode::join(peer, connection, hello, send, recv, state).await,
        Request::Link(_) => return supernode::link(peer, connection, None, send, recv, state).await,
        Request::LinkWith(offer) => {
            return supernode::link(peer, connection, Some(offer), send, recv, state).await
        }
        Request::Search(query) => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::search(peer, query, &mut send, state).await
        }
        Request::Push { leaf } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::push(peer, leaf, &mut send, state).await
        }
        Request::Punch { leaf } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::punch(peer, connection, leaf, &mut send, state).await
        }
        Request::Relay { leaf } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::relay(peer, connection, leaf, &mut send, state).await
        }
        Request::Traverse { leaf, downloader } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::traverse(peer, connection, leaf, downloader, &mut send, state).await
        }
        Request::Traits(traits) => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::traits(peer, traits, &mut send, state).await
        }
        Request::Reach { accepts_inbound } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::reach(peer, accepts_inbound, &mut send, state).await
        }
        Request::Addresses { addrs, padding } => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::addresses(peer, &addrs, padding.len(), &mut send, state).await
        }
        Request::Observe => {
            let _ = recv.stop(VarInt::from_u32(0));
            write_frame(&mut send, &Response::Observed { addr: peer.addr })
                .await
                .map_err(AnswerError::from)
        }
        Request::Status => {
            let _ = recv.stop(VarInt::from_u32(0));
            supernode::status(&mut send, state).await
        }
        // Probes read the rest of the stream themselves.
        probe @ (Request::ProbeDown { .. } | Request::ProbeUp { .. } | Request::DialBack) => {
            crate::measure::serve(
                peer,
                &probe,
                &mut send,
                &mut recv,
                &state.probes,
                state.limiter.active(),
                state.membership.get().map(|m| (*m.current()).clone()),
            )
            .await
            .map_err(AnswerError::Net)
        }
    };
    match answered {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(error) => {
            tracing::debug!(peer = ?peer, request = %described, %error, "request failed");
            let code = match error {
                AnswerError::Stalled => codes::TIMEOUT,
                _ => codes::INTERNAL,
            };
            let _ = recv.stop(VarInt::from_u32(code));
            let _ = send.reset(VarInt::from_u32(code));
        }
    }
}

fn close(send: &mut SendStream, recv: &mut RecvStream, code: u32) {
    let _ = recv.stop(VarInt::from_u32(code));
    let _ = send.reset(VarInt::from_u32(code));
}

/// Why answering a request failed; the stream is reset with a code.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("disk: {0}")]
    Disk(#[from] std::io::Error),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    #[error("the peer stopped reading for {:?}", content::WRITE_STALL)]
    Stalled,
}
