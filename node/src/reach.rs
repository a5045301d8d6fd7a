//! How other peers reach this node, as far as it knows: the election's
//! dial-back test, and what peers told it of its address (`Observe`, and
//! the `you` of every `PunchReady`). One verdict, said the same way in the
//! banner, `canopy probe`, `canopy status` and the app.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    /// What the latest re-check found ([`recheck`]): whether our leaf
    /// sessions offer this node as a direct source. `None`: no re-check
    /// yet, the node offers itself as it started.
    pub rechecked: Option<Rechecked>,
}

/// The outcome of one [`recheck`].
#[derive(Debug, Clone, Copy)]
pub struct Rechecked {
    pub at: Instant,
    /// Offered to downloaders as a direct source.
    pub direct: bool,
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

    /// Whether our leaf sessions offer this node as a direct source:
    /// `at_start` (what the election found, or the settings) until a
    /// re-check says otherwise.
    pub fn offered_direct(&self, at_start: bool) -> bool {
        self.rechecked.map_or(at_start, |rechecked| rechecked.direct)
    }

    /// Whether the periodic re-check is due: the last one (or the start)
    /// is [`RECHECK_EVERY`] old.
    fn recheck_due(&self, started: Instant) -> bool {
        self.rechecked.map_or(started, |rechecked| rechecked.at).elapsed() >= RECHECK_EVERY
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
///
/// Returns the address the peer sees, if it said.
pub async fn observe_through(
    endpoint: &Endpoint,
    context: &NodeState,
    connection: &quinn::Connection,
) -> Option<SocketAddr> {
    let asked = tokio::time::timeout(OBSERVE_WITHIN, ask(connection, &Request::Observe)).await;
    let Ok(Ok(Response::Observed { addr: seen })) = asked else {
        return None;
    };
    let observation = crate::measure::observation(connection, endpoint, seen);
    context.reach.locked().observe(observation);
    Some(seen)
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

/// Any global IPv6 address: asking the kernel which source address it
/// would use towards it (a UDP socket connected, nothing sent) gives this
/// machine's preferred global IPv6 address, if it has a route to the IPv6
/// internet.
const SOME_GLOBAL_V6: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888,
    )),
    443,
);

/// Where peers of the other IP family could dial this node: its global
/// IPv6 address at our port, when the session (at `session`) runs over
/// IPv4 and our socket takes both families. Tested by the supernode
/// before anyone is told (`Request::Addresses`).
pub fn other_family_address(endpoint: &Endpoint, session: SocketAddr) -> Option<SocketAddr> {
    let bound = endpoint.local_addr();
    let dual_stack = bound.is_ipv6() && bound.ip().is_unspecified();
    if !dual_stack || session.is_ipv6() {
        return None;
    }
    let ip = crate::measure::source_ip_towards(SOME_GLOBAL_V6)?;
    nat::is_global(ip).then(|| SocketAddr::new(ip, bound.port()))
}

/// Offers `addr` (our address of the other family) to the supernode at the
/// other end of `connection`, which dials it back and lists it if that
/// worked. Whether the supernode answered (it may have been busy).
pub async fn offer_other_address(connection: &quinn::Connection, addr: SocketAddr) -> bool {
    let offer = Request::Addresses {
        addrs: vec![addr],
        padding: vec![0; nat::PADDING_PER_ADDRESS],
    };
    match tokio::time::timeout(RECHECK_WITHIN, ask(connection, &offer)).await {
        Ok(Ok(Response::AddressesTested { reachable })) => {
            match reachable.contains(&addr) {
                true => tracing::info!(%addr, "peers can dial this node at its IPv6 address; listed"),
                false => tracing::info!(%addr, "a stranger could not dial this node at its IPv6 address"),
            }
            true
        }
        Ok(Ok(Response::Busy { .. })) => false,
        Ok(Ok(other)) => {
            tracing::debug!(%addr, answer = ?other, "supernode did not test our IPv6 address");
            true
        }
        // An older supernode resets the stream: not asked again until
        // the address changes.
        Ok(Err(error)) => {
            tracing::debug!(%addr, %error, "supernode did not test our IPv6 address");
            true
        }
        Err(_) => false,
    }
}

/// The dial-back runs again this often even when no peer saw our address
/// change: a port forwarded or closed by hand, a firewall rule, a router
/// replaced by one with the same address. libp2p's AutoNAT re-checks every
/// 15 minutes; ten keeps a stale verdict shorter for about one handshake
/// per leaf per ten minutes at its supernode.
pub const RECHECK_EVERY: Duration = Duration::from_secs(600);
/// How long a re-check's dial-back may take (the dialer gives up at 3 s).
const RECHECK_WITHIN: Duration = Duration::from_secs(8);

/// Why a leaf session tests its reachability again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecheckCause {
    /// Our supernode sees us at another address than before: a new line,
    /// a restarted router, a mapping that expired.
    AddressChanged { was: SocketAddr, now: SocketAddr },
    /// [`RECHECK_EVERY`] passed.
    Due,
}

/// What a leaf session's periodic look at its outside address calls for,
/// given what its supernode saw last (`was`) and sees now.
pub fn recheck_cause(
    reach: &Reachability,
    started: Instant,
    was: Option<SocketAddr>,
    now: Option<SocketAddr>,
) -> Option<RecheckCause> {
    match (was, now) {
        (Some(was), Some(now)) if was != now => Some(RecheckCause::AddressChanged { was, now }),
        _ if reach.recheck_due(started) => Some(RecheckCause::Due),
        _ => None,
    }
}

/// Asks the peer at the other end of `connection` (our supernode) to dial
/// us back from a fresh port, as a stranger would, and records what this
/// node now offers: a direct source if the dial-back reached us and we
/// accept connections at all (`may_accept`), else a source reached
/// through the supernode. A peer that is busy (it dials each peer back at
/// most once per [`crate::measure::PROBE_COOLDOWN`]: the election may have
/// just asked) or silent changes nothing, and `false` says to ask again.
pub async fn recheck(
    connection: &quinn::Connection,
    context: &NodeState,
    may_accept: bool,
    cause: RecheckCause,
) -> bool {
    let asked = tokio::time::timeout(RECHECK_WITHIN, ask(connection, &Request::DialBack)).await;
    let reachable = match asked {
        Ok(Ok(Response::DialBack { reachable })) => reachable,
        Ok(Ok(Response::Busy { .. })) => {
            tracing::debug!(
                ?cause,
                "reachability re-check: the supernode dialed us back moments ago; later"
            );
            return false;
        }
        _ => {
            tracing::debug!(?cause, "reachability re-check: no answer");
            return false;
        }
    };
    let direct = may_accept && reachable;
    let mut reach = context.reach.locked();
    let was = reach.rechecked.map(|rechecked| rechecked.direct);
    reach.dial_back = Some(reachable);
    reach.rechecked = Some(Rechecked {
        at: Instant::now(),
        direct,
    });
    if was != Some(direct) {
        tracing::info!(?cause, reachable, now = %reach.describe(), "reachability re-checked");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([198, 51, 100, 7], port)))
    }

    #[test]
    fn a_changed_address_calls_for_a_recheck_and_a_steady_one_waits_its_turn() {
        let fresh = Reachability::default();
        let now = Instant::now();
        assert_eq!(
            recheck_cause(&fresh, now, at(4663), at(4700)),
            Some(RecheckCause::AddressChanged {
                was: at(4663).unwrap(),
                now: at(4700).unwrap()
            })
        );
        assert_eq!(recheck_cause(&fresh, now, at(4663), at(4663)), None);
        // A supernode that did not say, or a first look, is no change.
        assert_eq!(recheck_cause(&fresh, now, at(4663), None), None);
        assert_eq!(recheck_cause(&fresh, now, None, at(4663)), None);

        let long_ago = now - RECHECK_EVERY - Duration::from_secs(1);
        assert_eq!(
            recheck_cause(&fresh, long_ago, at(4663), at(4663)),
            Some(RecheckCause::Due)
        );
        let rechecked = Reachability {
            rechecked: Some(Rechecked {
                at: now,
                direct: true,
            }),
            ..Default::default()
        };
        assert_eq!(recheck_cause(&rechecked, long_ago, at(4663), at(4663)), None);
    }

    #[test]
    fn what_is_offered_follows_the_latest_recheck() {
        let mut reach = Reachability::default();
        assert!(reach.offered_direct(true));
        assert!(!reach.offered_direct(false));
        reach.rechecked = Some(Rechecked {
            at: Instant::now(),
            direct: false,
        });
        assert!(!reach.offered_direct(true));
    }
}
