//! How other peers reach this node, as far as it knows: the election's
//! dial-back test, and what peers told it of its address (`Observe`, and
//! the `you` of every `PunchReady`). One verdict, said the same way in the
//! banner, `canopy probe`, `canopy status` and the app.

use std::net::SocketAddr;
use std::time::Duration;

use canopy_common::net::{ask, Endpoint};
use canopy_common::proto::birthday::Downloader;
use canopy_common::proto::nat::{self, NatKind, Observation, Observations, Reach};
use canopy_common::proto::portmap::Protocol;
use canopy_common::proto::{PeerAddr, Request, Response};
use canopy_common::sync::Lock;

use crate::state::NodeState;

/// What this node has learned about how it is reached.
#[derive(Debug, Clone, Default)]
pub struct Reachability {
    /// `Some(true)`: a stranger's fresh port connected to us.
    pub dial_back: Option<bool>,
    pub observations: Observations,
    /// The port our router forwards to us, if we asked for one and got it.
    pub mapped: Option<Forwarded>,
}

/// A port the router forwards to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub external: SocketAddr,
    pub protocol: Protocol,
}

impl Reachability {
    /// Records one peer's view of our address; whether our outside address
    /// is new.
    pub fn observe(&mut self, observation: Observation) -> bool {
        let new = self.observations.add(observation);
        if new && self.observations.observers() > 1 {
            tracing::info!(seen = %observation.seen, by = %observation.observer, "a peer sees this node at a new address");
        }
        new
    }

    pub fn kind(&self) -> NatKind {
        self.observations.kind()
    }

    /// Whether our router gives every peer a new port, as far as we know.
    pub fn symmetric(&self) -> bool {
        self.kind() == NatKind::EndpointDependent
    }

    /// What we say of ourselves when we ask a supernode for a way to one
    /// of its leaves (`Request::Traverse`).
    pub fn as_downloader(&self) -> Downloader {
        Downloader {
            symmetric: self.symmetric(),
            accepts: matches!(self.reach(), Reach::Direct | Reach::Mapped),
        }
    }

    pub fn reach(&self) -> Reach {
        match nat::reach(self.dial_back, self.kind()) {
            Reach::Direct if self.mapped.is_some() && self.dial_back == Some(true) => Reach::Mapped,
            reach => reach,
        }
    }

    /// Our outside addresses as peers see them, newest first.
    pub fn outside(&self) -> Vec<SocketAddr> {
        self.observations.outside()
    }

    /// One line for people: how peers reach this node, and why.
    pub fn describe(&self) -> String {
        let mapped;
        let how = match self.reach() {
            Reach::Unknown => "not known yet (no peer to ask)",
            Reach::Direct if self.dial_back.is_none() => {
                "directly, it seems (no router rewrites its address; no peer could test)"
            }
            Reach::Direct => "directly (a stranger's fresh port connected back)",
            Reach::Mapped => {
                let by = self.mapped.map_or("", |forwarded| forwarded.protocol.label());
                mapped = format!(
                    "directly, on the port its router forwards ({by}; a stranger's fresh port connected back)"
                );
                &mapped
            }
            Reach::Punch if self.dial_back.is_none() => {
                "by hole punching, arranged by its supernode (no peer could test a direct connection)"
            }
            Reach::Punch => "by hole punching, arranged by its supernode (a stranger could not connect back)",
            Reach::PushOnly => {
                "by peers that accept connections, by birthday punching from peers behind one-port \
                 routers, and through its supernode's relay from the rest (its router gives each \
                 peer another port)"
            }
        };
        let router = match self.kind() {
            NatKind::Unknown if self.observations.observers() == 0 => {
                "no peer has said where it sees this node".to_string()
            }
            NatKind::Unknown => "router kind unknown (it takes two peers to tell)".to_string(),
            NatKind::Translated => "behind a router (its kind takes two peers to tell)".to_string(),
            NatKind::None => "no router rewrites its address".to_string(),
            NatKind::EndpointIndependent => {
                "behind a router that keeps one port towards every peer (cone NAT)".into()
            }
            NatKind::EndpointDependent => "behind a router with a new port per peer (symmetric NAT)".into(),
        };
        let outside = self.outside();
        let seen = match outside.as_slice() {
            [] => String::new(),
            [one] => format!(
                "; seen as {one} by {} peer{}",
                self.observations.observers(),
                plural(self.observations.observers())
            ),
            [newest, ..] => format!(
                "; seen as {newest} and {} other address{} by {} peers",
                outside.len() - 1,
                if outside.len() == 2 { "" } else { "es" },
                self.observations.observers()
            ),
        };
        format!("{how}; {router}{seen}")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Asks the peer at the other end of `connection` where it sees us, and
/// records it; a new outside address is logged (our router or network
/// changed). A peer from before `Observe` resets the stream, which costs
/// nothing.
pub async fn observe_through(endpoint: &Endpoint, context: &NodeState, connection: &quinn::Connection) {
    let asked = tokio::time::timeout(OBSERVE_WITHIN, ask(connection, &Request::Observe)).await;
    if let Ok(Ok(Response::Observed { addr: seen })) = asked {
        let observation = crate::measure::observation(connection, endpoint, seen);
        context.reach.locked().observe(observation);
    }
}

/// How long one peer has to say where it sees us.
const OBSERVE_WITHIN: Duration = Duration::from_secs(5);
/// Peers asked by [`learn`]: two tell a cone router from a symmetric one,
/// a third breaks a tie when one is slow.
const LEARN_FROM: usize = 3;

/// For a node that runs no election (`canopy get`): asks up to three of
/// `peers` at once where they see us, so that our router's kind is known
/// before a download plans a punch. Connections are closed after.
pub async fn learn(endpoint: &Endpoint, context: &std::sync::Arc<NodeState>, peers: &[PeerAddr]) {
    let mut asks = tokio::task::JoinSet::new();
    for &peer in peers.iter().take(LEARN_FROM) {
        let (endpoint, context) = (endpoint.clone(), context.clone());
        asks.spawn(async move {
            if let Ok(Ok(connection)) = tokio::time::timeout(OBSERVE_WITHIN, endpoint.connect(&peer)).await {
                observe_through(&endpoint, &context, &connection).await;
                connection.close(0u32.into(), b"observed");
            }
        });
    }
    while asks.join_next().await.is_some() {}
}
