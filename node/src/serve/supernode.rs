//! What a node answers as a supernode: leaf sessions, links from
//! neighbour supernodes, searches, pushes, hole punches and its status. A node that is
//! not a supernode (now) says so, and the stream ends.

use std::time::Duration;

use canopy_common::net::write_frame;
use canopy_common::proto::birthday::{self, Downloader, LeafOrder, Traits};
use canopy_common::proto::budget::PUNCHES_PER_SECOND;
use canopy_common::proto::credence::SignedVote;
use canopy_common::proto::wire::{LinkOffer, MAX_HASHES_PER_NOTES_ASK, MAX_VOTES_PER_MESSAGE};
use canopy_common::proto::{Hello, PeerAddr, PeerId, Query, Response, SessionNotice};
use quinn::{RecvStream, SendStream};

use super::AnswerError;
use crate::state::NodeState;

fn not_supernode() -> Response {
    Response::NotSupernode { others: Vec::new() }
}

/// A leaf's session: the stream stays open for as long as the leaf stays.
pub(super) async fn join(
    peer: PeerAddr,
    connection: &quinn::Connection,
    hello: Hello,
    mut send: SendStream,
    recv: RecvStream,
    state: &NodeState,
) {
    match state.supernode() {
        Some(supernode) => supernode.serve_leaf(peer, connection, hello, send, recv).await,
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

/// What a push, punch or relay for `leaf` asked by `peer` needs: this
/// node a supernode, the asker within its budget, the leaf joined here.
/// Else the answer that says which is not so.
struct Route {
    supernode: std::sync::Arc<canopy_supernode::Supernode>,
    /// Where the leaf's packets come from, as we see them.
    leaf_addr: std::net::SocketAddr,
    /// Our address as the leaf reached it, if known.
    leaf_reached_us_at: Option<std::net::IpAddr>,
}

fn route(state: &NodeState, peer: PeerAddr, leaf: PeerId) -> Result<Route, Response> {
    let supernode = state.supernode().ok_or_else(not_supernode)?;
    if !supernode.may_push(peer.id) {
        return Err(busy());
    }
    let (leaf_addr, leaf_reached_us_at) = supernode.leaf_route(leaf).ok_or(Response::UnknownLeaf)?;
    Ok(Route {
        supernode,
        leaf_addr,
        leaf_reached_us_at,
    })
}

/// Asks our firewalled leaf `leaf` to connect to the requester, telling it
/// the address we see the requester at.
pub(super) async fn push(
    peer: PeerAddr,
    leaf: PeerId,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match route(state, peer, leaf) {
        Ok(route) if route.supernode.push(leaf, peer) => Response::PushSent,
        // Joined, but its queue of pushes is full.
        Ok(_) => Response::UnknownLeaf,
        Err(refusal) => refusal,
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// Arranges a hole punch between the asker and our firewalled leaf `leaf`:
/// each learns the other's address as we see it (the asker now, the leaf
/// in the push notice), the asker starts sending to the leaf's, and the
/// leaf dials the asker's. We pair only addresses we observed ourselves.
///
/// The push waits half the asker's round trip (plus a little): about when
/// the answer reaches the asker and its first punching packet leaves. A
/// leaf's packet that reached the asker's router before that one would be
/// dropped there, and QUIC would resend it only after a timeout.
pub(super) async fn punch(
    peer: PeerAddr,
    connection: &quinn::Connection,
    leaf: PeerId,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let route = match route(state, peer, leaf) {
        Ok(route) => route,
        Err(refusal) => return Ok(write_frame(send, &refusal).await?),
    };
    let ready = Response::PunchReady {
        leaf: route.leaf_addr,
        you: peer.addr,
    };
    write_frame(send, &ready).await?;
    let _ = send.finish();
    tokio::time::sleep(connection.rtt().min(PUNCH_WAIT_CAP) / 2 + PUNCH_MARGIN).await;
    route.supernode.push(leaf, peer);
    Ok(())
}

/// Relays between the asker and our firewalled leaf `leaf`, when nothing
/// else can connect them: we open a UDP port for the pair and answer with
/// it and a token; once the asker's bind packet arrives (it now knows its
/// way through its router to us), we have the leaf dial that port as if it
/// were the asker. The relay forwards their datagrams; the QUIC connection
/// and its keys stay theirs.
pub(super) async fn relay(
    peer: PeerAddr,
    connection: &quinn::Connection,
    leaf: PeerId,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let Route {
        supernode,
        leaf_addr,
        leaf_reached_us_at,
    } = match route(state, peer, leaf) {
        Ok(route) => route,
        Err(refusal) => return Ok(write_frame(send, &refusal).await?),
    };
    // The leaf must dial an address of ours it can reach: the one its
    // session came to.
    let Some(our_ip) = leaf_reached_us_at.or(canopy_common::net::local_ip(connection)) else {
        write_frame(
            send,
            &Response::bad_request("cannot relay: our own address is unknown"),
        )
        .await?;
        return Ok(());
    };
    let any: std::net::IpAddr = match our_ip {
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let allocation = match supernode.relay().open(any, peer.addr.ip(), leaf_addr.ip()).await {
        Ok(allocation) => allocation,
        Err(refusal) => {
            tracing::info!(asker = ?peer, leaf = ?leaf, %refusal, "relay refused");
            write_frame(send, &Response::bad_request(refusal.to_string())).await?;
            return Ok(());
        }
    };
    let port = allocation.port;
    write_frame(
        send,
        &Response::RelayReady {
            port,
            token: allocation.token,
        },
    )
    .await?;
    let _ = send.finish();
    if let Ok(Ok(())) = tokio::time::timeout(RELAY_BIND_WAIT, allocation.bound).await {
        let via_relay = PeerAddr::new(peer.id, std::net::SocketAddr::new(our_ip, port));
        supernode.push(leaf, via_relay);
    }
    Ok(())
}

/// How long the asker has to send its first bind packet.
const RELAY_BIND_WAIT: Duration = Duration::from_secs(5);

/// The most a punch's push waits for the asker's first packet; a longer
/// round trip is a bad estimate (QUIC's first guess is 333 ms).
const PUNCH_WAIT_CAP: Duration = Duration::from_secs(1);
/// Slack for the asker's scheduling before its first punching packet.
const PUNCH_MARGIN: Duration = Duration::from_millis(10);

fn busy() -> Response {
    Response::Busy {
        retry_after_ms: (1000.0 / PUNCHES_PER_SECOND) as u32,
    }
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

/// How long the hard side of a birthday punch gets to open its ports
/// before the easy side's probes leave: the order's way to it, and 256
/// sockets opened and sent from (a few milliseconds).
const BIRTHDAY_HEAD_START: Duration = Duration::from_millis(100);

/// Plans the way between the asker and our firewalled leaf `leaf` from
/// both routers' kinds (`canopy_common::proto::birthday::plan`), answers
/// the asker its part and orders the leaf its own: a plain punch, a
/// birthday punch (the symmetric side opening ports first, the cone side
/// spraying probes at it), or, when both are symmetric, nothing but the
/// relay the asker will ask for. As for punches, we pair only addresses
/// we observed ourselves, within the asker's budget.
pub(super) async fn traverse(
    peer: PeerAddr,
    connection: &quinn::Connection,
    leaf: PeerId,
    downloader: Downloader,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let route = match route(state, peer, leaf) {
        Ok(route) => route,
        Err(refusal) => return Ok(write_frame(send, &refusal).await?),
    };
    let (plan, order) = birthday::plan(downloader, route.supernode.leaf_traits(leaf));
    let answer = Response::TraversePlan {
        leaf: route.leaf_addr,
        you: peer.addr,
        plan,
    };
    let half_rtt = connection.rtt().min(PUNCH_WAIT_CAP) / 2;
    let birthday = |spray| SessionNotice::Birthday {
        requester: peer,
        spray,
    };
    if order == LeafOrder::Open {
        // The leaf is the hard side: its ports open before the asker's
        // probes leave.
        route.supernode.order(leaf, birthday(false));
        tokio::time::sleep(BIRTHDAY_HEAD_START.saturating_sub(half_rtt)).await;
    }
    write_frame(send, &answer).await?;
    let _ = send.finish();
    match order {
        LeafOrder::Push => {
            tokio::time::sleep(half_rtt + PUNCH_MARGIN).await;
            route.supernode.push(leaf, peer);
        }
        LeafOrder::Spray => {
            // The asker is the hard side: the leaf sprays once the asker's
            // ports are open.
            tokio::time::sleep(half_rtt + BIRTHDAY_HEAD_START).await;
            route.supernode.order(leaf, birthday(true));
        }
        LeafOrder::Open | LeafOrder::Nothing => {}
    }
    Ok(())
}

/// A joined leaf tells us about its router and what it speaks.
pub(super) async fn traits(
    peer: PeerAddr,
    traits: Traits,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.supernode() {
        Some(supernode) if supernode.note_traits(peer.id, traits) => Response::TraitsNoted {
            features: birthday::FEATURE_BIRTHDAY,
        },
        Some(_) => Response::UnknownLeaf,
        None => not_supernode(),
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// A joined leaf tells us whether peers can connect to it now.
pub(super) async fn reach(
    peer: PeerAddr,
    accepts_inbound: bool,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.supernode() {
        Some(supernode) if supernode.note_reach(peer.id, accepts_inbound) => Response::ReachNoted,
        Some(_) => Response::UnknownLeaf,
        None => not_supernode(),
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// A joined leaf offers addresses of its other family: each is dialed
/// back from a fresh port, as a stranger would, pinning the leaf's key, and
/// those that answer are listed beside its session's address. Checked
/// first (`nat::check_offer`): few, global, paid for with padding, and at
/// most once a minute per leaf, so nobody makes us dial at a third party.
pub(super) async fn addresses(
    peer: PeerAddr,
    addrs: &[std::net::SocketAddr],
    padding: usize,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.supernode() {
        None => not_supernode(),
        Some(supernode) => match supernode.may_test_addresses(peer.id) {
            None => Response::UnknownLeaf,
            Some(false) => Response::Busy {
                retry_after_ms: canopy_supernode::ADDRESS_TESTS_EVERY.as_millis() as u32,
            },
            Some(true) => match canopy_common::proto::nat::check_offer(addrs, padding, peer.addr) {
                Err(why) => Response::bad_request(why.to_string()),
                Ok(offered) => {
                    let network = state.membership.get().map(|m| (*m.current()).clone());
                    let mut reachable = Vec::new();
                    for addr in offered {
                        if crate::measure::dial_back(PeerAddr::new(peer.id, addr), network.clone()).await {
                            reachable.push(addr);
                        }
                    }
                    match supernode.list_also(peer.id, reachable.clone()) {
                        true => Response::AddressesTested { reachable },
                        false => Response::UnknownLeaf,
                    }
                }
            },
        },
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// A downloader says our leaf `source` did not serve `hash`: checked next
/// if it is ours and publishes it (the supernode believes no one).
pub(super) async fn report(
    peer: PeerAddr,
    hash: canopy_common::proto::ContentHash,
    source: PeerId,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.supernode() {
        None => not_supernode(),
        Some(supernode) => match supernode.report(peer.id, hash, source) {
            Some(checking) => Response::ReportNoted { checking },
            None => busy(),
        },
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// A leaf hands in its own votes on files, kept for searchers.
pub(super) async fn votes(
    peer: PeerAddr,
    votes: Vec<SignedVote>,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.supernode() {
        None => not_supernode(),
        Some(_) if votes.len() > MAX_VOTES_PER_MESSAGE => Response::bad_request(format!(
            "{} votes in one message, over {MAX_VOTES_PER_MESSAGE}",
            votes.len()
        )),
        Some(supernode) => match supernode.hand_in_votes(peer.id, &votes, crate::votes::unix_now()) {
            Some(Some(accepted)) => Response::VotesNoted { accepted },
            Some(None) => busy(),
            None => Response::UnknownLeaf,
        },
    };
    write_frame(send, &response).await?;
    Ok(())
}

/// A searcher asks what is known of the files it found: votes on them
/// and their tags.
pub(super) async fn notes_for(
    hashes: Vec<canopy_common::proto::ContentHash>,
    send: &mut SendStream,
    state: &NodeState,
) -> Result<(), AnswerError> {
    let response = match state.supernode() {
        None => not_supernode(),
        Some(_) if hashes.len() > MAX_HASHES_PER_NOTES_ASK => Response::bad_request(format!(
            "notes on {} files asked at once, over {MAX_HASHES_PER_NOTES_ASK}",
            hashes.len()
        )),
        Some(supernode) => Response::Notes {
            votes: supernode.votes_for(&hashes),
            tags: supernode.tags_for(&hashes),
        },
    };
    write_frame(send, &response).await?;
    Ok(())
}
