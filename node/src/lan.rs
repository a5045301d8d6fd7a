//! Local discovery's sockets ([`canopy_common::proto::lan`]): a node that
//! starts asks its home network who is there, and a running node answers.
//! Two machines at home then find each other with no bootstrap address,
//! as Syncthing's do.
//!
//! One UDP port for every node on a machine (`SO_REUSEADDR`/`SO_REUSEPORT`),
//! the group joined on the default interface, multicast looped back so
//! nodes on one machine hear each other.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_common::proto::lan::{Announce, Message, GROUP, PORT};
use canopy_common::proto::{PeerAddr, PeerId};
use tokio::net::UdpSocket;

use crate::state::NodeState;

/// A running node answers at most one query per this long: one announce
/// reaches the whole group, so a flood of queries costs one datagram a
/// second.
const ANSWER_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Most nodes one discovery keeps (a home has a few; a busy LAN is cut).
const MAX_FOUND: usize = 16;

fn group() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(GROUP), PORT))
}

/// The discovery socket: bound to the group's port beside other nodes on
/// this machine, in the group.
fn socket() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    socket.join_multicast_v4(&Ipv4Addr::from(GROUP), &Ipv4Addr::UNSPECIFIED)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// A node found on the LAN, and whether it said it is a supernode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub peer: PeerAddr,
    pub supernode: bool,
}

/// Asks the LAN who is there and listens for `within`; every node that
/// answered but `me`, at the address its answer came from. Nothing found
/// (no LAN, no multicast, nobody home) is an empty list, not an error.
pub async fn discover(me: PeerId, within: Duration) -> Vec<Found> {
    let socket = match socket() {
        Ok(socket) => socket,
        Err(error) => {
            tracing::info!(%error, "local discovery unavailable");
            return Vec::new();
        }
    };
    if let Err(error) = socket.send_to(&Message::Query.encode(), group()).await {
        tracing::info!(%error, "cannot ask the local network who is there");
        return Vec::new();
    }
    let mut found: Vec<Found> = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = [0u8; 128];
    while let Ok(Ok((len, from))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await {
        if let Ok(Message::Announce(announce)) = Message::parse(&buffer[..len]) {
            if announce.id != me && !found.iter().any(|f| f.peer.id == announce.id) && found.len() < MAX_FOUND
            {
                let peer = PeerAddr::new(announce.id, SocketAddr::new(from.ip(), announce.port));
                tracing::info!(peer = ?peer, supernode = announce.supernode, "found on the local network");
                found.push(Found {
                    peer,
                    supernode: announce.supernode,
                });
            }
        }
    }
    found
}

/// Answers other nodes' queries for as long as the node runs (drop the
/// handle's task to stop): we listen on `port`, as a supernode if `state`
/// plays one. Announces once at start, too.
pub fn answer(me: PeerId, port: u16, state: Arc<NodeState>) -> Option<tokio::task::JoinHandle<()>> {
    let socket = match socket() {
        Ok(socket) => socket,
        Err(error) => {
            tracing::info!(%error, "local discovery unavailable; other machines here need --bootstrap");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let announce = || {
            Message::Announce(Announce {
                id: me,
                port,
                supernode: state.supernode().is_some(),
            })
            .encode()
        };
        let _ = socket.send_to(&announce(), group()).await;
        let mut last_answer: Option<Instant> = None;
        let mut buffer = [0u8; 128];
        loop {
            let Ok((len, _)) = socket.recv_from(&mut buffer).await else {
                // An ICMP error for an earlier send: nothing to read; do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if Message::parse(&buffer[..len]) != Ok(Message::Query) {
                continue;
            }
            if last_answer.is_some_and(|at| at.elapsed() < ANSWER_AT_MOST_EVERY) {
                continue;
            }
            last_answer = Some(Instant::now());
            if let Err(error) = socket.send_to(&announce(), group()).await {
                tracing::debug!(%error, "cannot answer a local discovery query");
            }
        }
    }))
}
