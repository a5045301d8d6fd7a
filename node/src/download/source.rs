//! One source of one download: connect, learn what it holds, and keep
//! several block requests in flight until the file is complete, the source
//! fails, or it has nothing more to give.

use canopy_common::sync::Lock;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_common::net::{read_frame, write_frame, NetError};
use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::{Bitfield, PeerAddr, Request, Response, MAX_CONTROL_FRAME};
use tokio::task::JoinSet;

use super::scheduler::{Assignment, Received, RequestId, SourceId};
use super::{traverse, Event, Shared, SourceFailure, SourcePath, SourceSpec, SourceState};

/// How long connecting may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long fetching the block layer and last block may take.
const LAYER_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 8305's recommended Connection Attempt Delay: the second address of
/// a source is dialed this long after the first, unless that failed.
const HAPPY_EYEBALLS_DELAY: Duration = Duration::from_millis(250);
/// How long a firewalled source's other address (its IPv6 one) has before
/// we go through its supernode instead: a handshake takes a round trip or
/// two, and a firewall that drops the packets never answers.
const FIRST_ALONE: Duration = Duration::from_secs(2);
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
        first: spec.first,
        received: Arc::new(AtomicU64::new(0)),
        rate: 0.0,
        relayed_via: None,
        moved: None,
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
pub(super) enum RequestError {
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
    /// Another address to dial it at first ([`SourceSpec::first`]).
    first: Option<SocketAddr>,
    /// Bytes received from this source, including rejected ones.
    received: Arc<AtomicU64>,
    /// Smoothed delivery rate in bytes per second.
    rate: f64,
    /// Came through this supernode's relay: try for a direct path.
    relayed_via: Option<PeerAddr>,
    /// The direct connection a relayed source moved to, if it did.
    moved: Option<quinn::Connection>,
}

impl Source {
    async fn run(&mut self) -> Result<(), SourceFailure> {
        let connection = match (self.via, self.first) {
            (None, _) => self.dial().await?,
            (Some(via), None) => self.pushed(via).await?,
            // Dialable at another address (its IPv6 one): that first, its
            // supernode's ways if it does not answer.
            (Some(via), Some(first)) => match self.dial_at(first, FIRST_ALONE).await {
                Ok(connection) => connection,
                Err(why) => {
                    tracing::debug!(source = ?self.peer.id, %first, %why, "not dialable there; through its supernode");
                    self.pushed(via).await?
                }
            },
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
        if let Some(moved) = self.moved.take() {
            moved.close(0u32.into(), b"done");
        }
        result
    }

    /// Dials the source at its address, and at [`Source::first`] if it has
    /// one: that one first and, 250 ms later or as soon as it fails, the
    /// other too; the first connection wins (RFC 8305's happy eyeballs,
    /// its recommended Connection Attempt Delay).
    async fn dial(&mut self) -> Result<quinn::Connection, SourceFailure> {
        let Some(first) = self.first else {
            return self.dial_at(self.peer.addr, CONNECT_TIMEOUT).await;
        };
        let endpoint = self.shared.endpoint.clone();
        let (id, other) = (self.peer.id, self.peer.addr);
        let (at_first, at_other) = (PeerAddr::new(id, first), PeerAddr::new(id, other));
        let preferred = endpoint.connect(&at_first);
        let fallback = endpoint.connect(&at_other);
        tokio::pin!(preferred, fallback);
        let stagger = tokio::time::sleep(HAPPY_EYEBALLS_DELAY);
        let deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(stagger, deadline);
        let (mut started, mut preferred_failed) = (false, false);
        let mut last_error = None;
        let (connection, at) = loop {
            tokio::select! {
                dialed = &mut preferred, if !preferred_failed => match dialed {
                    Ok(connection) => break (connection, first),
                    Err(error) => {
                        tracing::debug!(source = ?id, %first, %error, "not reached there");
                        (preferred_failed, started) = (true, true);
                        last_error = Some(error);
                    }
                },
                dialed = &mut fallback, if started => match dialed {
                    Ok(connection) => break (connection, other),
                    Err(error) => return Err(SourceFailure::Unreachable(error.to_string())),
                },
                _ = &mut stagger, if !started => started = true,
                _ = &mut deadline => {
                    return Err(SourceFailure::Unreachable(match last_error {
                        Some(error) => format!("{error}; and no answer at {other} within {CONNECT_TIMEOUT:?}"),
                        None => format!("no answer within {CONNECT_TIMEOUT:?}"),
                    }))
                }
            }
        };
        tracing::debug!(source = ?id, %at, "dialed");
        self.moved_to(&connection, SourcePath::Direct);
        Ok(connection)
    }

    /// Dials the source at `addr`, waiting at most `patience`.
    async fn dial_at(
        &mut self,
        addr: SocketAddr,
        patience: Duration,
    ) -> Result<quinn::Connection, SourceFailure> {
        let peer = PeerAddr::new(self.peer.id, addr);
        let connection = tokio::time::timeout(patience, self.shared.endpoint.connect(&peer))
            .await
            .map_err(|_| SourceFailure::Unreachable(format!("no answer within {patience:?}")))?
            .map_err(|error| SourceFailure::Unreachable(error.to_string()))?;
        self.moved_to(&connection, SourcePath::Direct);
        Ok(connection)
    }

    /// Gets a connection from our firewalled source through its supernode
    /// `via` ([`traverse::connect`]): a hole punch, or the supernode's
    /// relay; a supernode from before punching gets a plain push request
    /// (the source dials us). A relayed source keeps trying for a direct
    /// path while it serves ([`Source::fetch`]).
    async fn pushed(&mut self, via: PeerAddr) -> Result<quinn::Connection, SourceFailure> {
        let (connection, path) = traverse::connect(&self.shared, self.peer.id, via, true).await?;
        tracing::debug!(source = ?self.peer.id, ?path, "firewalled source connected");
        self.moved_to(&connection, path);
        if path == SourcePath::Relayed {
            self.relayed_via = Some(via);
        }
        Ok(connection)
    }

    /// Records that this source is now reached over `connection`, by `path`.
    fn moved_to(&mut self, connection: &quinn::Connection, path: SourcePath) {
        self.peer = PeerAddr::new(self.peer.id, canopy_common::net::remote_addr(connection));
        let peer = self.peer;
        self.shared.update_slot(self.id, |slot| {
            slot.peer = peer;
            slot.path = Some(path);
        });
    }

    /// A source's life once connected, as a sequence: the file's size
    /// proved (by this source or another), what it holds asked, then
    /// fetching until the download ends.
    async fn serve_download(&mut self, connection: &quinn::Connection) -> Result<(), SourceFailure> {
        let Some(hashes) = self.await_size(connection).await? else {
            return Ok(());
        };
        let partial = self.refresh_have(connection, &hashes).await?;
        // Both answered in one round trip, before the transfer: a swap
        // beside it would be cut off when a small file is done first.
        tokio::join!(self.exchange_sources(connection), self.swap_votes(connection));
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
    /// its timers (holdings, source exchange, pace), and, for a relayed
    /// source, a direct path coming through.
    ///
    /// On a direct path, new requests go there, and the ones in flight
    /// finish on the relay, which is closed after the last: every block is
    /// verified on arrival whichever way it came, so nothing is lost, and
    /// one that fails on the relay only goes back to the scheduler.
    async fn fetch(
        &mut self,
        connection: &quinn::Connection,
        hashes: Arc<BlockHashes>,
        partial: bool,
    ) -> Result<(), SourceFailure> {
        let shared = self.shared.clone();
        let mut connection = connection.clone();
        let mut upgrade: std::pin::Pin<Box<dyn std::future::Future<Output = quinn::Connection> + Send>> =
            match self.relayed_via.take() {
                Some(via) => Box::pin(traverse::direct_later(shared.clone(), self.peer.id, via)),
                None => Box::pin(std::future::pending()),
            };
        // The relayed connection while requests still run on it.
        let mut relay: Option<(quinn::Connection, usize)> = None;
        let mut requests: JoinSet<(RequestId, Generation, Result<(), RequestError>)> = JoinSet::new();
        let mut generation: Generation = 0;
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
                self.fill(&mut requests, &connection, generation, &hashes);
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
                    let Ok((id, on, result)) = joined else { continue };
                    self.shared.requests.locked().remove(&id);
                    self.shared.with_scheduler(|s| s.release(id));
                    if on != generation {
                        // One that ran on the relay: whatever it brought is
                        // written; what it did not goes back for the new path.
                        if let Some((_, running)) = relay.as_mut() {
                            *running -= 1;
                            if *running == 0 {
                                let (closing, _) = relay.take().expect("just seen");
                                closing.close(0u32.into(), b"moved to a direct path");
                            }
                        }
                        self.shared.changed.notify_waiters();
                        continue;
                    }
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
                direct = &mut upgrade => {
                    upgrade = Box::pin(std::future::pending());
                    tracing::info!(source = ?self.peer, "a relayed source came through directly; moving to that path");
                    let relayed = std::mem::replace(&mut connection, direct.clone());
                    self.moved_to(&direct, SourcePath::Punched);
                    self.moved = Some(direct);
                    generation += 1;
                    match requests.len() {
                        0 => relayed.close(0u32.into(), b"moved to a direct path"),
                        running => relay = Some((relayed, running)),
                    }
                }
                _ = changed => {}
                _ = busy => {}
                _ = stop.changed() => return Ok(()),
                _ = have_refresh.tick(), if partial => {
                    self.refresh_have(&connection, &hashes).await?;
                }
                _ = exchange.tick() => self.exchange_sources(&connection).await,
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
        requests: &mut JoinSet<(RequestId, Generation, Result<(), RequestError>)>,
        connection: &quinn::Connection,
        generation: Generation,
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
            let assignment = self.shared.with_scheduler(|s| {
                s.set_focus(self.shared.focus.current());
                s.plan(self.id, in_flight, max_blocks)
            });
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
            let handle = requests.spawn(async move { (assignment.id, generation, fetch.run().await) });
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

impl Source {
    /// Swaps votes with the source, once per source per few minutes
    /// ([`crate::votes::Votes::swap_due`]): meeting over a file is how two
    /// users learn whether they agree (docs/TRUST.md). Best effort: an
    /// older or busy source simply swaps nothing.
    async fn swap_votes(&self, connection: &quinn::Connection) {
        let Some(votes) = self.shared.context.votes.get() else {
            return;
        };
        let source = self.peer.id;
        if !votes.swap_due(self.peer) {
            return;
        }
        let offer = Request::SwapVotes {
            votes: votes.swap_offer(),
        };
        match Ask::new(connection, Duration::from_secs(5)).send(&offer).await {
            Ok((Response::SwappedVotes { votes: theirs }, _)) => {
                let learned = votes.take_swapped(source, &theirs);
                tracing::debug!(source = ?source, given = theirs.len(), learned, "swapped votes");
            }
            Ok((other, _)) => tracing::debug!(source = ?source, answer = ?other, "no vote swap"),
            Err(error) => tracing::debug!(source = ?source, ?error, "no vote swap"),
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

pub(super) fn terminal(error: RequestError) -> SourceFailure {
    error
        .into_failure()
        .unwrap_or_else(|| SourceFailure::Protocol("unexpected answer".into()))
}

/// Which of a source's connections a request ran on: 0 the first, 1 the
/// direct one a relayed source moved to.
type Generation = u32;

/// One request/response exchange on a fresh stream.
pub(super) struct Ask<'a> {
    connection: &'a quinn::Connection,
    timeout: Duration,
}

impl<'a> Ask<'a> {
    pub(super) fn new(connection: &'a quinn::Connection, timeout: Duration) -> Self {
        Ask { connection, timeout }
    }

    pub(super) async fn send(
        &self,
        request: &Request,
    ) -> Result<(Response, quinn::RecvStream), RequestError> {
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
