//! The way to a firewalled source, through its supernode: a hole punch
//! (plain or birthday) or its relay, the first connection to arrive
//! winning; and, for a source that came through the relay, the tries for
//! a direct path while the download goes on ([`direct_later`]): routers
//! change, and a punch that failed once may work a minute later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use canopy_common::proto::birthday::Plan;
use canopy_common::proto::relay::bind_packet;
use canopy_common::proto::{PeerAddr, PeerId, Request, Response};
use canopy_common::sync::Lock;

use super::source::{terminal, Ask, RequestError, CONNECT_TIMEOUT};
use super::{Shared, SourceFailure, SourcePath};
use crate::units::Backoff;

/// How long a firewalled source may take to call back after a push request.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Hole-punching packets go out at once, then after 10, 20, 40 … ms, then
/// every 200 ms until the source's connection arrives: the first ones meet
/// a quick peer, the later ones keep the router's door open (a UDP mapping
/// lives for 30 s on Linux) for a slow one, at most ~55 packets.
const PUNCH_FIRST_GAP: Duration = Duration::from_millis(10);
const PUNCH_MAX_GAP: Duration = Duration::from_millis(200);
/// How long a punched source has alone before we ask for a relay as well.
const RELAY_AFTER: Duration = Duration::from_secs(1);
/// Bind packets to a relay: at once, then 50 ms, 100 ms, then every 200 ms.
const RELAY_BIND_GAP: Duration = Duration::from_millis(50);
/// A relayed source's first try for a direct path comes this long after it
/// connected, and later ones at doubling gaps up to [`DIRECT_RETRY_MAX`]:
/// each costs one request to its supernode and a few dozen tiny packets
/// (iroh, too, keeps trying to punch while it relays).
const DIRECT_RETRY_FIRST: Duration = Duration::from_secs(5);
const DIRECT_RETRY_MAX: Duration = Duration::from_secs(300);

/// Gets a connection from our firewalled source `leaf` through its
/// supernode `via`, trying the ways in order (see [`through`]).
pub(super) async fn connect(
    shared: &Shared,
    leaf: PeerId,
    via: PeerAddr,
    relay: bool,
) -> Result<(quinn::Connection, SourcePath), SourceFailure> {
    let supernode = tokio::time::timeout(CONNECT_TIMEOUT, shared.endpoint.connect(&via))
        .await
        .map_err(|_| SourceFailure::Unreachable(format!("its supernode {via:?} did not answer")))?
        .map_err(|error| SourceFailure::Unreachable(format!("its supernode {via:?}: {error}")))?;
    let outcome = through(shared, leaf, &supernode, via, relay).await;
    supernode.close(0u32.into(), b"done");
    outcome
}

/// For a source that came through its supernode's relay: asks the
/// supernode again, now and then, for a way without the relay, and returns
/// the first direct connection that comes through (never, if none does).
/// The download moves to it; the relayed one finishes what it carries.
pub(super) async fn direct_later(shared: Arc<Shared>, leaf: PeerId, via: PeerAddr) -> quinn::Connection {
    let mut gaps = Backoff::new(DIRECT_RETRY_FIRST, DIRECT_RETRY_MAX);
    loop {
        tokio::time::sleep(gaps.take()).await;
        match connect(&shared, leaf, via, false).await {
            Ok((connection, _)) => return connection,
            Err(why) => tracing::debug!(source = ?leaf, %why, "still relayed: no direct path yet"),
        }
    }
}

/// The way the source's supernode plans (a punch, a birthday punch,
/// or the relay alone), then, if the source has not come through
/// within a second, the relay as well, the punch still going: the
/// first connection to arrive wins (RFC 8305's "happy eyeballs",
/// staggered by a second: a punch that works comes through in about a
/// round trip, and its first packet, if it met our router still closed,
/// is resent after QUIC's first timeout).
///
/// With `relay` false (a relayed source trying for a direct path), a plan
/// that leaves only the relay is an error, and so is a punch that does
/// not get through.
async fn through(
    shared: &Shared,
    leaf: PeerId,
    supernode: &quinn::Connection,
    via: PeerAddr,
    relay: bool,
) -> Result<(quinn::Connection, SourcePath), SourceFailure> {
    let ask = Ask::new(supernode, CONNECT_TIMEOUT);
    let downloader = shared.context.reach.locked().as_downloader();
    let symmetric = downloader.symmetric;
    let mut arrival = shared.context.await_push(leaf);
    // Whether our own address is what the supernode sees: then the
    // source's call is an ordinary push, not a punched one.
    let mut no_router = false;
    let mut observe = |you| {
        let seen = crate::measure::observation(supernode, &shared.endpoint, you);
        no_router = seen.seen == seen.local;
        shared.context.reach.locked().observe(seen);
    };
    // Older supernodes know Punch but not Traverse, older still only Push.
    let (plan, to) = match ask.send(&Request::Traverse { leaf, downloader }).await {
        Err(RequestError::Stalled) => return Err(SourceFailure::Stalled),
        Ok((Response::TraversePlan { leaf: to, you, plan }, _)) => {
            observe(you);
            (plan, Some(to))
        }
        Ok((other, _)) => return Err(refused("a punch", other)),
        Err(_) if symmetric => (Plan::Relay, None),
        Err(_) => match ask.send(&Request::Punch { leaf }).await {
            Err(RequestError::Stalled) => return Err(SourceFailure::Stalled),
            Ok((Response::PunchReady { leaf: to, you }, _)) => {
                observe(you);
                (Plan::Punch, Some(to))
            }
            Ok((other, _)) => return Err(refused("a punch", other)),
            Err(_) => {
                return match ask.send(&Request::Push { leaf }).await.map_err(terminal)?.0 {
                    Response::PushSent => match tokio::time::timeout(PUSH_TIMEOUT, arrival).await {
                        Ok(Ok(connection)) => Ok((connection, SourcePath::Pushed)),
                        _ => Err(SourceFailure::Unreachable(
                            "it accepts no connections and did not call back (are we unreachable too?)"
                                .into(),
                        )),
                    },
                    other => Err(refused("a push", other)),
                }
            }
        },
    };
    let punched = punched(no_router);
    // Our part of the plan. Only a birthday punch's hard side dials
    // (the source's probe shows the way); the other ways end in the
    // source dialing us, an arrival.
    let endpoint = shared.endpoint.clone();
    let direct: std::pin::Pin<Box<dyn std::future::Future<Output = Option<quinn::Connection>> + Send>> =
        match (plan, to) {
            (Plan::Punch, Some(to)) => {
                Box::pin(async move { match paced(move || endpoint.punch(to), PUNCH_FIRST_GAP).await {} })
            }
            (Plan::Spray, Some(to)) => Box::pin(async move {
                crate::birthday::spray(&endpoint, to.ip()).await;
                std::future::pending().await
            }),
            (Plan::Open, Some(to)) => Box::pin(async move {
                match crate::birthday::open_and_dial(&endpoint, PeerAddr::new(leaf, to)).await {
                    Some(connection) => Some(connection),
                    None => std::future::pending().await,
                }
            }),
            _ => Box::pin(std::future::pending()),
        };
    tokio::pin!(direct);
    if plan != Plan::Relay {
        tokio::select! {
            Ok(connection) = &mut arrival => return Ok((connection, punched)),
            Some(connection) = &mut direct => return Ok((connection, SourcePath::Punched)),
            _ = tokio::time::sleep(RELAY_AFTER) => {}
        }
    }
    let offer = match relay {
        false => None,
        true => match ask.send(&Request::Relay { leaf }).await {
            Ok((Response::RelayReady { port, token }, _)) => Some((port, token)),
            Ok((other, _)) => return Err(refused("a relay", other)),
            Err(RequestError::Stalled) => return Err(SourceFailure::Stalled),
            // An older supernode: no relay there.
            Err(_) => None,
        },
    };
    let Some((port, token)) = offer else {
        // No relay: the punch alone, for the rest of its time.
        if plan != Plan::Relay {
            tokio::select! {
                Ok(connection) = &mut arrival => return Ok((connection, punched)),
                Some(connection) = &mut direct => return Ok((connection, SourcePath::Punched)),
                _ = tokio::time::sleep(PUSH_TIMEOUT - RELAY_AFTER) => {}
            }
        }
        let why_no_relay = match relay {
            true => "its supernode cannot relay (an older version)",
            false => "no relay was asked",
        };
        return Err(SourceFailure::Unreachable(match to {
            Some(to) if plan != Plan::Relay => {
                format!("a hole punch towards {to} did not get through, and {why_no_relay}")
            }
            _ => format!("no way through our router, and {why_no_relay}"),
        }));
    };
    let relay = SocketAddr::new(via.addr.ip(), port);
    let packet = bind_packet(&token);
    let endpoint = shared.endpoint.clone();
    let binding = paced(move || endpoint.bind_relay(relay, &packet), RELAY_BIND_GAP);
    tokio::select! {
        Ok(connection) = &mut arrival => match canopy_common::net::remote_addr(&connection) == relay {
            true => Ok((connection, SourcePath::Relayed)),
            false => Ok((connection, punched)),
        },
        Some(connection) = &mut direct => Ok((connection, SourcePath::Punched)),
        never = binding => match never {},
        _ = tokio::time::sleep(PUSH_TIMEOUT) => Err(SourceFailure::Unreachable(format!(
            "it came through neither a hole punch nor its supernode's relay at {relay}"
        ))),
    }
}

/// How a source that dialed us after a punch came: with no router on our
/// side, as an ordinary push.
fn punched(no_router: bool) -> SourcePath {
    match no_router {
        true => SourcePath::Pushed,
        false => SourcePath::Punched,
    }
}

/// Why a supernode did not arrange a punch or a relay, for the user.
fn refused(what: &str, answer: Response) -> SourceFailure {
    match answer {
        Response::UnknownLeaf => SourceFailure::Unreachable("its supernode no longer has it".into()),
        Response::Busy { .. } => {
            SourceFailure::Unreachable("its supernode is busy with our earlier requests".into())
        }
        Response::BadRequest { reason } => {
            SourceFailure::Unreachable(format!("its supernode refused {what}: {reason}"))
        }
        Response::NotSupernode { .. } => SourceFailure::Unreachable("its supernode is no longer one".into()),
        other => SourceFailure::Protocol(format!("asked for {what}, got {other:?}")),
    }
}

/// Sends with `send` at once, then after `first`, twice that, … up to
/// every 200 ms, forever: for racing against an arrival. A send that fails
/// is logged and the pace kept.
async fn paced(send: impl Fn() -> std::io::Result<()>, first: Duration) -> std::convert::Infallible {
    let mut gaps = Backoff::new(first, PUNCH_MAX_GAP);
    loop {
        if let Err(error) = send() {
            tracing::debug!(%error, "punching or bind packet not sent");
        }
        tokio::time::sleep(gaps.take()).await;
    }
}
