//! One source of one download: connect, learn what it holds, and keep
//! several block requests in flight until the file is complete, the source
//! fails, or it has nothing more to give.

use canopy_common::sync::Lock;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_common::net::{read_frame, write_frame, NetError};
use canopy_common::proto::birthday::Plan;
use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::relay::bind_packet;
use canopy_common::proto::{Bitfield, PeerAddr, Request, Response, MAX_CONTROL_FRAME};
use tokio::task::JoinSet;

use super::scheduler::{Assignment, Received, RequestId, SourceId};
use super::{Event, Shared, SourceFailure, SourcePath, SourceSpec, SourceState};
use crate::units::Backoff;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long fetching the block layer and last block may take.
const LAYER_TIMEOUT: Duration = Duration::from_secs(30);
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
/// How often a partial source (a fellow downloader) is asked what it has now.
const HAVE_REFRESH: Duration = Duration::from_secs(2);
/// How often sources are asked for other sources.
const EXCHANGE_INTERVAL: Duration = Duration::from_secs(15);
/// Stalls in a row after which a source is dropped.
const MAX_STRIKES: u32 = 3;
/// A request should take about this long at the source's measured rate.
const REQUEST_DURATION: f64 = 0.25;
const MAX_BLOCKS_PER_ASK: u32 = 32;

/// Runs source `id` until it ends, then tells the coordinator.
pub(super) async fn run(shared: Arc<Shared>, id: SourceId, spec: SourceSpec) {
    let mut source = Source {
        shared: shared.clone(),
        id,
        peer: spec.peer,
        via: spec.via,
        received: Arc::new(AtomicU64::new(0)),
        rate: 0.0,
    };
    let failure = source.run().await.err();
    let released = shared.with_scheduler(|s| s.remove_source(id)).unwrap_or_default();
    {
        let mut requests = shared.requests.locked();
        for request in released {
            if let Some(handle) = requests.remove(&request) {
                handle.abort();
            }
        }
    }
    shared.changed.notify_waiters();
    let _ = shared.events.send(Event::Ended { id, failure });
}

/// How one request ended badly.
#[derive(Debug)]
enum RequestError {
    /// The source asks us to come back later.
    Busy(Duration),
    /// The source no longer holds the blocks it advertised.
    Have(Bitfield),
    Corrupt(String),
    Stalled,
    NotFound,
    Protocol(String),
    Net(String),
    /// The part file cannot be written; the coordinator reports it.
    Output,
}

impl RequestError {
    fn from_net(error: NetError) -> Self {
        match error {
            NetError::Frame(error) => RequestError::Protocol(format!("bad frame: {error}")),
            other => RequestError::Net(other.to_string()),
        }
    }

    fn into_failure(self) -> Option<SourceFailure> {
        match self {
            RequestError::Corrupt(reason) => Some(SourceFailure::Banned(reason)),
            RequestError::Stalled => Some(SourceFailure::Stalled),
            RequestError::NotFound => Some(SourceFailure::NotFound),
            RequestError::Protocol(reason) => Some(SourceFailure::Protocol(reason)),
            RequestError::Net(reason) => Some(SourceFailure::Gone(reason)),
            RequestError::Busy(_) | RequestError::Have(_) | RequestError::Output => None,
        }
    }
}

struct Source {
    shared: Arc<Shared>,
    id: SourceId,
    peer: PeerAddr,
    /// For a firewalled source: the supernode that can ask it to call us.
    via: Option<PeerAddr>,
    /// Bytes received from this source, including rejected ones.
    received: Arc<AtomicU64>,
    /// Smoothed delivery rate in bytes per second.
    rate: f64,
}

impl Source {
    async fn run(&mut self) -> Result<(), SourceFailure> {
        let connection = match self.via {
            None => {
                let connection =
                    tokio::time::timeout(CONNECT_TIMEOUT, self.shared.endpoint.connect(&self.peer))
                        .await
                        .map_err(|_| {
                            SourceFailure::Unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))
                        })?
                        .map_err(|error| SourceFailure::Unreachable(error.to_string()))?;
                self.shared
                    .update_slot(self.id, |slot| slot.path = Some(SourcePath::Direct));
                connection
            }
            Some(via) => self.pushed(via).await?,
        };
        // In a private network, a change of membership that drops this
        // source closes the connection under the download.
        let endpoint = self.shared.endpoint.clone();
        let result = endpoint
            .guard(&connection, self.peer.id, self.serve_download(&connection))
            .await;
        let stats = connection.stats();
        tracing::debug!(
            source = ?self.peer,
            received = self.received.load(Ordering::Relaxed),
            udp_rx_bytes = stats.udp_rx.bytes,
            udp_rx_datagrams = stats.udp_rx.datagrams,
            lost_packets = stats.path.lost_packets,
            stream_frames = stats.frame_rx.stream,
            "source finished; QUIC counters"
        );
        connection.close(0u32.into(), b"done");
        result
    }

    /// Gets a connection from our firewalled source through its supernode
    /// `via`, trying the ways in order. A hole punch: the supernode tells
    /// us where the source's packets come from, we send a few tiny packets
    /// there from our listening port while the source dials us, so our
    /// router takes its connection for an answer. If that does not get
    /// through (or our router gives every peer a new port, so it cannot),
    /// a relay: the supernode forwards between us. A supernode from before
    /// punching gets a plain push request (the source dials us).
    async fn pushed(&mut self, via: PeerAddr) -> Result<quinn::Connection, SourceFailure> {
        let leaf = self.peer.id;
        let supernode = tokio::time::timeout(CONNECT_TIMEOUT, self.shared.endpoint.connect(&via))
            .await
            .map_err(|_| SourceFailure::Unreachable(format!("its supernode {via:?} did not answer")))?
            .map_err(|error| SourceFailure::Unreachable(format!("its supernode {via:?}: {error}")))?;
        let outcome = self.through(&supernode, via).await;
        supernode.close(0u32.into(), b"done");
        let (connection, path) = outcome?;
        tracing::debug!(source = ?leaf, ?path, "firewalled source connected");
        self.peer = PeerAddr::new(leaf, canopy_common::net::remote_addr(&connection));
        let peer = self.peer;
        self.shared.update_slot(self.id, |slot| {
            slot.peer = peer;
            slot.path = Some(path);
        });
        Ok(connection)
    }

    /// The way the source's supernode plans (a punch, a birthday punch,
    /// or the relay alone), then, if the source has not come through
    /// within a second, the relay as well, the punch still going: the
    /// first connection to arrive wins (RFC 8305's "happy eyeballs",
    /// staggered by a second: a punch that works comes through in about a
    /// round trip, and its first packet, if it met our router still closed,
    /// is resent after QUIC's first timeout).
    async fn through(
        &self,
        supernode: &quinn::Connection,
        via: PeerAddr,
    ) -> Result<(quinn::Connection, SourcePath), SourceFailure> {
        let leaf = self.peer.id;
        let ask = Ask::new(supernode, CONNECT_TIMEOUT);
        let downloader = self.shared.context.reach.locked().as_downloader();
        let symmetric = downloader.symmetric;
        let mut arrival = self.shared.context.await_push(leaf);
        // Whether our own address is what the supernode sees: then the
        // source's call is an ordinary push, not a punched one.
        let mut no_router = false;
        let mut observe = |you| {
            let seen = crate::measure::observation(supernode, &self.shared.endpoint, you);
            no_router = seen.seen == seen.local;
            self.shared.context.reach.locked().observe(seen);
        };
        // Older supernodes know Punch but not Traverse, older still only Push.
        let (plan, to) =
            match ask.send(&Request::Traverse { leaf, downloader }).await {
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
                    Err(_) => return match ask.send(&Request::Push { leaf }).await.map_err(terminal)?.0 {
                        Response::PushSent => match tokio::time::timeout(PUSH_TIMEOUT, arrival).await {
                            Ok(Ok(connection)) => Ok((connection, SourcePath::Pushed)),
                            _ => Err(SourceFailure::Unreachable(
                                "it accepts no connections and did not call back (are we unreachable too?)"
                                    .into(),
                            )),
                        },
                        other => Err(refused("a push", other)),
                    },
                },
            };
        let punched = punched(no_router);
        // Our part of the plan. Only a birthday punch's hard side dials
        // (the source's probe shows the way); the other ways end in the
        // source dialing us, an arrival.
        let endpoint = self.shared.endpoint.clone();
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
        let (port, token) = match ask.send(&Request::Relay { leaf }).await {
            Ok((Response::RelayReady { port, token }, _)) => (port, token),
            Ok((other, _)) => return Err(refused("a relay", other)),
            Err(RequestError::Stalled) => return Err(SourceFailure::Stalled),
            Err(_) => {
                // No relay here: the punch alone, for the rest of its time.
                if plan != Plan::Relay {
                    tokio::select! {
                        Ok(connection) = &mut arrival => return Ok((connection, punched)),
                        Some(connection) = &mut direct => return Ok((connection, SourcePath::Punched)),
                        _ = tokio::time::sleep(PUSH_TIMEOUT - RELAY_AFTER) => {}
                    }
                }
                return Err(SourceFailure::Unreachable(match to {
                    Some(to) if plan != Plan::Relay => format!(
                        "a hole punch towards {to} did not get through, and its supernode cannot relay \
                         (an older version)"
                    ),
                    _ => {
                        "no way through our router, and its supernode cannot relay (an older version)".into()
                    }
                }));
            }
        };
        let relay = SocketAddr::new(via.addr.ip(), port);
        let packet = bind_packet(&token);
        let endpoint = self.shared.endpoint.clone();
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

    /// A source's life once connected, as a sequence: the file's size
    /// proved (by this source or another), what it holds asked, then
    /// fetching until the download ends.
    async fn serve_download(&mut self, connection: &quinn::Connection) -> Result<(), SourceFailure> {
        let Some(hashes) = self.await_size(connection).await? else {
            return Ok(());
        };
        let partial = self.refresh_have(connection, &hashes).await?;
        self.exchange_sources(connection).await;
        self.shared
            .update_slot(self.id, |slot| slot.state = SourceState::Active);
        self.fetch(connection, hashes, partial).await
    }

    /// Waits until the file's size is proved and the part file is open;
    /// `None` if the download stopped first.
    ///
    /// One source at a time fetches the block layer and the size-proving
    /// last block; the others wait, and take over if it fails. A source
    /// that could not send the last block (busy, or a fellow downloader
    /// without it yet) tries again later itself: if it is the only source,
    /// nobody else will (issue 25: waiting on `ready` alone, such a
    /// download waited forever). Every wait here ends on an event or a
    /// timer that is armed: no polling.
    async fn await_size(
        &mut self,
        connection: &quinn::Connection,
    ) -> Result<Option<Arc<BlockHashes>>, SourceFailure> {
        let shared = self.shared.clone();
        let mut ready = shared.ready.clone();
        let mut stop = shared.stop.clone();
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            // Listening before looking: a change between the two is not lost.
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if *stop.borrow() {
                return Ok(None);
            }
            if let Some(hashes) = self.shared.hashes() {
                return Ok(Some(hashes.clone()));
            }
            let may_claim = retry_at.is_none_or(|at| tokio::time::Instant::now() >= at);
            let claimed = may_claim && {
                let mut claim = self.shared.layer_claim.locked();
                claim.is_none().then(|| *claim = Some(self.id)).is_some()
            };
            if claimed {
                let offered = tokio::time::timeout(LAYER_TIMEOUT, self.offer_layer(connection))
                    .await
                    .unwrap_or(Err(SourceFailure::Stalled));
                *self.shared.layer_claim.locked() = None;
                self.shared.changed.notify_waiters();
                match offered? {
                    // The coordinator opens the part file and says `ready`.
                    LayerOffer::Sent => retry_at = None,
                    LayerOffer::NotYet(wait) => {
                        let state = if wait == HAVE_REFRESH {
                            SourceState::Idle
                        } else {
                            SourceState::Busy
                        };
                        self.shared.update_slot(self.id, |slot| slot.state = state);
                        retry_at = Some(tokio::time::Instant::now() + wait);
                    }
                }
                continue;
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ready.changed() => {}
                _ = stop.changed() => {}
                _ = changed => {}
                _ = retry => {}
            }
        }
    }

    /// Keeps requests in flight until the download ends or this source
    /// fails. Wakes on: a request ending, a change elsewhere that may give
    /// it work (blocks released, holdings learned), the end of a busy wait,
    /// and its timers (holdings, source exchange, pace).
    async fn fetch(
        &mut self,
        connection: &quinn::Connection,
        hashes: Arc<BlockHashes>,
        partial: bool,
    ) -> Result<(), SourceFailure> {
        let shared = self.shared.clone();
        let mut requests: JoinSet<(RequestId, Result<(), RequestError>)> = JoinSet::new();
        let mut strikes = 0;
        let mut last_strike: Option<Instant> = None;
        let mut busy_until: Option<Instant> = None;
        let mut stop = self.shared.stop.clone();
        let mut have_refresh = tokio::time::interval(HAVE_REFRESH);
        let mut exchange = tokio::time::interval(EXCHANGE_INTERVAL);
        // The first sample comes one period in: an immediate one would
        // divide by almost nothing and wildly overstate the rate.
        let sample_period = Duration::from_millis(500);
        let mut rate_sample =
            tokio::time::interval_at(tokio::time::Instant::now() + sample_period, sample_period);
        let mut last_sample = (Instant::now(), self.received.load(Ordering::Relaxed));
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if busy_until.is_some_and(|until| Instant::now() >= until) {
                busy_until = None;
            }
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if busy_until.is_none() {
                self.fill(&mut requests, connection, &hashes);
            }
            self.shared.update_slot(self.id, |slot| {
                slot.state = if busy_until.is_some() {
                    SourceState::Busy
                } else if requests.is_empty() {
                    SourceState::Idle
                } else {
                    SourceState::Active
                };
            });
            let busy = async {
                match busy_until {
                    Some(until) => tokio::time::sleep_until(until.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(joined) = requests.join_next(), if !requests.is_empty() => {
                    // A cancelled request was already released by whoever cancelled it.
                    let Ok((id, result)) = joined else { continue };
                    self.shared.requests.locked().remove(&id);
                    self.shared.with_scheduler(|s| s.release(id));
                    match result {
                        Ok(()) => strikes = 0,
                        Err(RequestError::Busy(wait)) => busy_until = Some(Instant::now() + wait),
                        Err(RequestError::Have(have)) => {
                            self.shared.with_scheduler(|s| s.set_have(self.id, Some(have)));
                        }
                        // Requests that stall together (the source froze) are
                        // one strike, not one each.
                        Err(RequestError::Stalled) if last_strike.is_some_and(|at: Instant| {
                            at.elapsed() < self.shared.options.stall_timeout
                        }) => {}
                        Err(RequestError::Stalled) => {
                            last_strike = Some(Instant::now());
                            strikes += 1;
                            tracing::debug!(source = ?self.peer, strikes, "request stalled; blocks reassigned");
                            if strikes >= MAX_STRIKES {
                                return Err(SourceFailure::Stalled);
                            }
                        }
                        Err(RequestError::Output) => return Ok(()),
                        Err(other) => return Err(other.into_failure().expect("terminal request error")),
                    }
                    self.shared.changed.notify_waiters();
                }
                _ = changed => {}
                _ = busy => {}
                _ = stop.changed() => return Ok(()),
                _ = have_refresh.tick(), if partial => {
                    self.refresh_have(connection, &hashes).await?;
                }
                _ = exchange.tick() => self.exchange_sources(connection).await,
                _ = rate_sample.tick() => {
                    let now = Instant::now();
                    let total = self.received.load(Ordering::Relaxed);
                    let elapsed = now.duration_since(last_sample.0).as_secs_f64().max(0.1);
                    let sample = (total - last_sample.1) as f64 / elapsed;
                    self.rate = if self.rate == 0.0 { sample } else { 0.5 * self.rate + 0.5 * sample };
                    last_sample = (now, total);
                    let rate = self.rate;
                    self.shared.update_slot(self.id, |slot| slot.rate = rate);
                    let blocks_per_second = rate / hashes.layout().block_size() as f64;
                    let latency = connection.rtt().as_secs_f64();
                    self.shared
                        .with_scheduler(|s| s.set_pace(self.id, blocks_per_second, latency));
                }
            }
        }
    }

    /// Starts requests until this source has its share in flight.
    fn fill(
        &self,
        requests: &mut JoinSet<(RequestId, Result<(), RequestError>)>,
        connection: &quinn::Connection,
        hashes: &Arc<BlockHashes>,
    ) {
        let layout = hashes.layout();
        while requests.len() < self.shared.options.requests_per_source {
            let max_blocks = if self.rate > 0.0 {
                ((self.rate * REQUEST_DURATION) / layout.block_size() as f64)
                    .clamp(1.0, f64::from(MAX_BLOCKS_PER_ASK)) as u32
            } else {
                // Unknown pace: small requests, so a slow source cannot
                // hoard blocks before we know it is slow.
                1
            };
            let in_flight = requests.len();
            let assignment = self
                .shared
                .with_scheduler(|s| s.plan(self.id, in_flight, max_blocks));
            let Some(Some(assignment)) = assignment else {
                break;
            };
            // Patience per block: the configured floor, or four times what a
            // block should take at this source's pace when that is longer.
            let per_block = if self.rate > 0.0 {
                let expected =
                    layout.block_size() as f64 * self.shared.options.requests_per_source as f64 / self.rate;
                self.shared
                    .options
                    .stall_timeout
                    .max(Duration::from_secs_f64(4.0 * expected))
            } else {
                self.shared.options.stall_timeout.max(Duration::from_secs(5))
            };
            let fetch = RangeFetch {
                shared: self.shared.clone(),
                connection: connection.clone(),
                hashes: hashes.clone(),
                assignment,
                per_block,
                received: self.received.clone(),
                source: self.id,
            };
            let handle = requests.spawn(async move { (assignment.id, fetch.run().await) });
            self.shared.requests.locked().insert(assignment.id, handle);
        }
    }

    /// Fetches and verifies the block layer and the last block, which
    /// together prove the file's size, and offers them to the coordinator.
    async fn offer_layer(&mut self, connection: &quinn::Connection) -> Result<LayerOffer, SourceFailure> {
        let ask = Ask::new(connection, Duration::from_secs(10));
        let hash = self.shared.hash;
        let (response, mut recv) = ask.send(&Request::BlockLayer { hash }).await.map_err(terminal)?;
        let size = match response {
            Response::BlockLayer { size } => size,
            Response::NotFound { .. } => return Err(SourceFailure::NotFound),
            other => {
                return Err(SourceFailure::Protocol(format!(
                    "answered a block layer request with {other:?}"
                )))
            }
        };
        let layout = canopy_common::proto::BlockLayout::for_size(size);
        let mut layer = vec![0u8; layout.layer_len()];
        recv.read_exact(&mut layer)
            .await
            .map_err(|e| SourceFailure::Gone(e.to_string()))?;
        self.count_received(layer.len());
        let hashes =
            BlockHashes::verify(hash, size, &layer).map_err(|e| SourceFailure::Banned(e.to_string()))?;

        let last = layout.block_count() - 1;
        let (response, mut recv) = ask
            .send(&Request::Blocks {
                hash,
                first: last,
                count: 1,
            })
            .await
            .map_err(terminal)?;
        match response {
            Response::Blocks { first, count } if first == last && count == 1 => {}
            // A fellow downloader without the last block yet, or a source
            // with no free upload slot: another source may prove the size,
            // else this one tries again later.
            Response::Have { .. } => return Ok(LayerOffer::NotYet(HAVE_REFRESH)),
            Response::Busy { retry_after_ms } => {
                let wait = u64::from(retry_after_ms.clamp(100, 60_000));
                return Ok(LayerOffer::NotYet(Duration::from_millis(wait)));
            }
            other => {
                return Err(SourceFailure::Protocol(format!(
                    "asked for the last block, got {other:?}"
                )))
            }
        }
        let mut tail = vec![0u8; layout.block_len(last) as usize];
        recv.read_exact(&mut tail)
            .await
            .map_err(|e| SourceFailure::Gone(e.to_string()))?;
        self.count_received(tail.len());
        hashes.verify_block(last, &tail).map_err(|error| {
            SourceFailure::Banned(format!(
                "claimed a size of {size} bytes that its last block does not match ({error})"
            ))
        })?;
        let _ = self.shared.events.send(Event::Layer {
            hashes: Arc::new(hashes),
            tail,
            source: self.id,
        });
        Ok(LayerOffer::Sent)
    }

    fn count_received(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
        self.shared.received.fetch_add(bytes as u64, Ordering::Relaxed);
        self.shared
            .context
            .stats
            .bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Asks what the source holds; returns whether it is partial.
    async fn refresh_have(
        &self,
        connection: &quinn::Connection,
        hashes: &BlockHashes,
    ) -> Result<bool, SourceFailure> {
        let ask = Ask::new(connection, Duration::from_secs(10));
        let (response, _) = ask
            .send(&Request::Have {
                hash: self.shared.hash,
            })
            .await
            .map_err(terminal)?;
        let (have, partial) = match response {
            Response::HaveAll => (None, false),
            Response::Have { blocks } => {
                let bits = Bitfield::from_wire(&blocks, hashes.layout().block_count())
                    .ok_or_else(|| SourceFailure::Protocol("have-bitfield of the wrong length".into()))?;
                (Some(bits), true)
            }
            Response::NotFound { .. } => return Err(SourceFailure::NotFound),
            other => {
                return Err(SourceFailure::Protocol(format!(
                    "answered a have request with {other:?}"
                )))
            }
        };
        self.shared.with_scheduler(|s| s.set_have(self.id, have));
        self.shared.changed.notify_waiters();
        // Tell fellow downloaders about this source when they ask us.
        self.shared
            .context
            .swarm
            .record(self.shared.hash, self.peer, Instant::now());
        Ok(partial)
    }

    /// Asks the source for other sources (best effort).
    async fn exchange_sources(&self, connection: &quinn::Connection) {
        let ask = Ask::new(connection, Duration::from_secs(5));
        if let Ok((Response::Sources { peers }, _)) = ask
            .send(&Request::Sources {
                hash: self.shared.hash,
            })
            .await
        {
            if !peers.is_empty() {
                let _ = self.shared.events.send(Event::Learned(peers));
            }
        }
    }
}

/// What became of a source's turn at proving the file's size.
enum LayerOffer {
    /// The layer and the last block are with the coordinator.
    Sent,
    /// It could not send the last block now; try again after this long.
    NotYet(Duration),
}

fn terminal(error: RequestError) -> SourceFailure {
    error
        .into_failure()
        .unwrap_or_else(|| SourceFailure::Protocol("unexpected answer".into()))
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

/// One request/response exchange on a fresh stream.
struct Ask<'a> {
    connection: &'a quinn::Connection,
    timeout: Duration,
}

impl<'a> Ask<'a> {
    fn new(connection: &'a quinn::Connection, timeout: Duration) -> Self {
        Ask { connection, timeout }
    }

    async fn send(&self, request: &Request) -> Result<(Response, quinn::RecvStream), RequestError> {
        let exchange = async {
            let (mut send, mut recv) = self
                .connection
                .open_bi()
                .await
                .map_err(|e| RequestError::Net(e.to_string()))?;
            write_frame(&mut send, request)
                .await
                .map_err(RequestError::from_net)?;
            send.finish().map_err(|e| RequestError::Net(e.to_string()))?;
            let response = read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME)
                .await
                .map_err(RequestError::from_net)?;
            Ok((response, recv))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| RequestError::Stalled)?
    }
}

/// Fetching one assigned range: every block verified before it is written.
struct RangeFetch {
    shared: Arc<Shared>,
    connection: quinn::Connection,
    hashes: Arc<BlockHashes>,
    assignment: Assignment,
    per_block: Duration,
    received: Arc<AtomicU64>,
    source: SourceId,
}

impl RangeFetch {
    async fn run(self) -> Result<(), RequestError> {
        let Assignment { id, first, count } = self.assignment;
        let hash = self.shared.hash;
        let layout = self.hashes.layout();
        if let Some(limiter) = self.shared.context.download_limiter.active() {
            // Asking only as fast as the cap allows keeps the sources (and
            // QUIC's flow control) at the rate too.
            let bytes: u64 = (first..first + count).map(|index| layout.block_len(index)).sum();
            limiter.acquire(bytes as usize).await;
        }
        let ask = Ask::new(&self.connection, self.per_block);
        let (response, mut recv) = ask.send(&Request::Blocks { hash, first, count }).await?;
        match response {
            Response::Blocks { first: f, count: c } if f == first && c == count => {}
            Response::Busy { retry_after_ms } => {
                return Err(RequestError::Busy(Duration::from_millis(u64::from(
                    retry_after_ms.clamp(100, 60_000),
                ))))
            }
            Response::Have { blocks } => {
                let bits = Bitfield::from_wire(&blocks, self.hashes.layout().block_count())
                    .ok_or_else(|| RequestError::Protocol("have-bitfield of the wrong length".into()))?;
                return Err(RequestError::Have(bits));
            }
            Response::NotFound { .. } => return Err(RequestError::NotFound),
            other => {
                return Err(RequestError::Protocol(format!(
                    "asked for blocks {first}+{count}, got {other:?}"
                )))
            }
        }
        for index in first..first + count {
            let mut block = vec![0u8; layout.block_len(index) as usize];
            match tokio::time::timeout(self.per_block, recv.read_exact(&mut block)).await {
                Err(_) => return Err(RequestError::Stalled),
                Ok(Err(error)) => return Err(RequestError::Net(error.to_string())),
                Ok(Ok(())) => {}
            }
            let len = block.len() as u64;
            self.received.fetch_add(len, Ordering::Relaxed);
            self.shared.received.fetch_add(len, Ordering::Relaxed);
            self.shared
                .context
                .stats
                .bytes_received
                .fetch_add(len, Ordering::Relaxed);
            let already_done = self.shared.with_scheduler(|s| s.is_done(index)).unwrap_or(true);
            if !already_done {
                self.hashes
                    .verify_block(index, &block)
                    .map_err(|error| RequestError::Corrupt(error.to_string()))?;
            }
            // Marking the block done and handing it to the writer are one
            // step (see `ledger`): this task may be cancelled at any await.
            let ledger = self.shared.ledger.get().ok_or(RequestError::Output)?;
            let outcome = ledger
                .deliver(Some(id), index, block)
                .await
                .map_err(|_| RequestError::Output)?;
            if let Received::Fresh { cancel } = outcome {
                self.shared.update_slot(self.source, |slot| slot.bytes += len);
                if ledger.is_complete() {
                    let _ = self.shared.events.send(Event::Complete);
                }
                for other in cancel.into_iter().filter(|&other| other != id) {
                    self.shared.cancel_request(other);
                }
            }
        }
        Ok(())
    }
}
