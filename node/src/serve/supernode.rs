//! What a node answers as a supernode: leaf sessions, links from
//! neighbour supernodes, searches, pushes and its status. A node that is
//! not a supernode (now) says so, and the stream ends.

use canopy_common::net::write_frame;
use canopy_common::proto::wire::LinkOffer;
use canopy_common::proto::{Hello, PeerAddr, PeerId, Query, Response};
use quinn::{RecvStream, SendStream};

use super::AnswerError;
use crate::state::NodeState;

fn not_supernode() -> Response {
    Response::NotSupernode { others: Vec::new() }
}

/// A leaf's session: the stream stays open for as long as the leaf stays.
pub(super) async fn join(
    peer: PeerAddr,
    hello: Hello,
    mut send: SendStream,
    recv: RecvStream,
    state: &NodeState,
) {
    match state.supernode() {
        Some(supernode) => supernode.serve_leaf(peer, hello, send, recv).await,
        None => {
            let _ = write_frame(&mut send, &not_supernode()).await;
            let _ = send.finish();
        }
    }
}

/// A neighbour supernode's link, open for as long as it lasts.
pub(super) async fn link(
    peer: PeerAddr,
    connection: &quinn::Connection,
    offer: Option<LinkOffer>,
    mut send: SendStream,
    recv: RecvStream,
    state: &NodeState,
) {
    match state.supernode() {
        Some(supernode) => supernode.serve_link(peer, connection, offer, send, recv).await,
        None => {
            let _ = write_frame(&mut send, &not_supernode()).await;
            let _ = send.finish();
        }
    }
}

pub(super) async fn search(
    peer: PeerAddr,
    query: Query,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    match state.supernode() {
        Some(supernode) => supernode.answer_search(peer.id, query, send).await?,
        None => write_frame(send, &not_supernode()).await?,
    }
    Ok(())
}

/// Asks our firewalled leaf `leaf` to connect to the requester, telling it
/// the address we see the requester at.
pub(super) async fn push(
    peer: PeerAddr,
    leaf: PeerId,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.supernode() {
        Some(supernode) if supernode.push(leaf, peer) => Response::PushSent,
        Some(_) => Response::UnknownLeaf,
        None => not_supernode(),
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// How full we are, for leaves deciding whether to promote themselves.
pub(super) async fn status(send: &mut SendStream, state: &NodeState) -> Result<(), AnswerError> {
    let status = match state.supernode() {
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
    Ok(())
}
