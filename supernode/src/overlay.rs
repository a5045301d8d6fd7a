//! The supernode overlay: links to neighbour supernodes, query flooding
//! over them, and the host cache that lets the network start and heal
//! without any central server.
//!
//! Every link is one QUIC stream opened with [`Request::Link`]; both ends
//! then send [`OverlayMessage`]s on it. Routing decisions are the sans-IO
//! [`Router`]'s; this module only carries its actions out.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canopy_common::net::{random_bytes, read_frame, write_frame, Endpoint, NetError};
use canopy_common::proto::frame::{batches, MAX_CONTROL_FRAME};
use canopy_common::proto::routing::{Action, Origin, QueryId, Router, RouterConfig};
use canopy_common::proto::search::MAX_HITS;
use canopy_common::proto::wire::{LinkHello, LinkNotice, OverlayMessage, MAX_HOSTS_PER_MESSAGE};
use canopy_common::proto::{Hit, PeerAddr, PeerId, Query, Request, Response};
use quinn::{RecvStream, SendStream};
use tokio::sync::{mpsc, watch};

use crate::hosts::HostCache;
use crate::index::FileIndex;

/// How the overlay behaves.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// Neighbours we try to keep.
    pub target_neighbours: usize,
    /// Neighbours we accept at most (others link to us too).
    pub max_neighbours: usize,
    pub router: RouterConfig,
    /// How long a leaf's search collects hits from the rest of the network.
    pub search_window: Duration,
    /// Where the host cache is kept (`None`: memory only).
    pub hosts_path: Option<PathBuf>,
    /// Queries passed on to neighbours per second at most (bursts of a
    /// second's worth); beyond it a query is answered from our index only.
    pub max_forwarded_per_second: u32,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            target_neighbours: 4,
            max_neighbours: 8,
            router: RouterConfig::default(),
            search_window: Duration::from_secs(2),
            hosts_path: None,
            max_forwarded_per_second: 200,
        }
    }
}

/// How often neighbours are topped up and host caches exchanged.
const MAINTAIN_EVERY: Duration = Duration::from_millis(500);
const EXCHANGE_EVERY: Duration = Duration::from_secs(20);
/// A supernode we failed to link to is left alone this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Messages queued per neighbour before we drop rather than wait.
const OUTBOX: usize = 256;

struct Neighbour {
    addr: PeerAddr,
    outbox: mpsc::Sender<OverlayMessage>,
    /// Which link this is, so a superseded link's end does not remove its
    /// successor.
    link: u64,
    /// Who opened it.
    initiator: PeerId,
}

/// Counters for operators and tests.
#[derive(Debug, Default)]
pub struct OverlayStats {
    /// Searches our own leaves started.
    pub searches: AtomicU64,
    /// Queries that arrived from neighbours (duplicates included).
    pub queries_received: AtomicU64,
    /// Queries answered from our index (local and from neighbours).
    pub queries_answered: AtomicU64,
    /// Queries passed on (once each, however many neighbours got them).
    pub queries_forwarded: AtomicU64,
    /// Queries not passed on because of `max_forwarded_per_second`.
    pub queries_capped: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    /// Hits our index produced.
    pub hits_found: AtomicU64,
    /// Messages from neighbours that broke the caps (each closed its link).
    pub bad_messages: AtomicU64,
}

pub struct Overlay {
    config: OverlayConfig,
    endpoint: Endpoint,
    index: Arc<FileIndex>,
    router: Mutex<Router>,
    started: Instant,
    neighbours: Mutex<HashMap<PeerId, Neighbour>>,
    connecting: Mutex<HashSet<PeerId>>,
    failures: Mutex<HashMap<PeerId, Instant>>,
    hosts: Mutex<HostCache>,
    searches: Mutex<HashMap<u64, mpsc::Sender<Vec<Hit>>>>,
    next_search: AtomicU64,
    next_link: AtomicU64,
    /// Set by [`Overlay::stop`]: links close, no new ones are made.
    stopping: watch::Sender<bool>,
    /// Tokens for forwarding queries: (tokens, last refill).
    forwarding: Mutex<(f64, Instant)>,
    pub stats: OverlayStats,
}

impl Overlay {
    /// Starts keeping neighbours, beginning with `bootstrap` and the
    /// persisted host cache. Call inside a tokio runtime.
    pub fn start(
        config: OverlayConfig,
        endpoint: Endpoint,
        index: Arc<FileIndex>,
        bootstrap: &[PeerAddr],
    ) -> Arc<Overlay> {
        let mut hosts = HostCache::open(config.hosts_path.clone());
        for &addr in bootstrap {
            hosts.saw(addr, 0);
        }
        let burst = f64::from(config.max_forwarded_per_second.max(1));
        let overlay = Arc::new(Overlay {
            router: Mutex::new(Router::new(config.router.clone())),
            config,
            endpoint,
            index,
            started: Instant::now(),
            neighbours: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashMap::new()),
            hosts: Mutex::new(hosts),
            searches: Mutex::new(HashMap::new()),
            next_search: AtomicU64::new(1),
            next_link: AtomicU64::new(1),
            stopping: watch::channel(false).0,
            forwarding: Mutex::new((burst, Instant::now())),
            stats: OverlayStats::default(),
        });
        tokio::spawn(maintain(Arc::downgrade(&overlay)));
        overlay
    }

    fn me(&self) -> PeerAddr {
        self.endpoint.peer_addr()
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Leaves the overlay: every link is finished (neighbours see it end
    /// at once and replace it), no new links are made or accepted, and the
    /// host cache is saved for next time.
    pub async fn stop(&self) {
        self.stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.neighbours.lock().expect("neighbours lock").is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.hosts.lock().expect("hosts lock").save();
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Current neighbours.
    pub fn neighbours(&self) -> Vec<PeerAddr> {
        self.neighbours
            .lock()
            .expect("neighbours lock")
            .values()
            .map(|n| n.addr)
            .collect()
    }

    fn neighbour_ids(&self) -> Vec<PeerId> {
        self.neighbours
            .lock()
            .expect("neighbours lock")
            .keys()
            .copied()
            .collect()
    }

    /// Other supernodes a leaf could fall back on: neighbours first.
    pub fn referrals(&self, count: usize) -> Vec<PeerAddr> {
        let mut others = self.neighbours();
        for addr in self.hosts.lock().expect("hosts lock").freshest() {
            if others.len() >= count {
                break;
            }
            if addr.id != self.me().id && !others.iter().any(|o| o.id == addr.id) {
                others.push(addr);
            }
        }
        others.truncate(count);
        others
    }

    /// Answers another supernode's [`Request::Link`].
    pub async fn accept_link(
        self: &Arc<Self>,
        peer: PeerAddr,
        _hello: LinkHello,
        mut send: SendStream,
        recv: RecvStream,
    ) {
        let full = {
            let neighbours = self.neighbours.lock().expect("neighbours lock");
            neighbours.len() >= self.config.max_neighbours && !neighbours.contains_key(&peer.id)
        };
        if full || self.is_stopping() {
            let others = self.referrals(8);
            let _ = write_frame(&mut send, &LinkNotice::Full { others }).await;
            let _ = send.finish();
            return;
        }
        if write_frame(&mut send, &LinkNotice::Accepted).await.is_ok() {
            self.run_link(peer, peer.id, send, recv).await;
        }
    }

    async fn connect(self: Arc<Self>, addr: PeerAddr) {
        let outcome = async {
            let connection = tokio::time::timeout(Duration::from_secs(5), self.endpoint.connect(&addr))
                .await
                .map_err(|_| "no answer".to_string())?
                .map_err(|e| e.to_string())?;
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            let hello = LinkHello {
                listen: self.me().addr,
            };
            write_frame(&mut send, &Request::Link(hello))
                .await
                .map_err(|e| e.to_string())?;
            match read_frame::<LinkNotice>(&mut recv, MAX_CONTROL_FRAME).await {
                Ok(LinkNotice::Accepted) => Ok((connection, send, recv)),
                Ok(LinkNotice::Full { others }) => {
                    let mut hosts = self.hosts.lock().expect("hosts lock");
                    for other in others.into_iter().take(MAX_HOSTS_PER_MESSAGE) {
                        if other.id != self.me().id {
                            hosts.saw(other, 60);
                        }
                    }
                    Err("full".to_string())
                }
                Err(error) => Err(format!("did not accept a link ({error})")),
            }
        }
        .await;
        self.connecting.lock().expect("connecting lock").remove(&addr.id);
        match outcome {
            // In a private network, a change of membership that drops
            // this neighbour closes the link's connection.
            Ok((connection, send, recv)) => {
                let link = self.run_link(addr, self.me().id, send, recv);
                self.endpoint.guard(&connection, addr.id, link).await
            }
            Err(reason) => {
                tracing::debug!(peer = ?addr, %reason, "no link");
                self.failures
                    .lock()
                    .expect("failures lock")
                    .insert(addr.id, Instant::now());
            }
        }
    }

    /// Carries one link, opened by `initiator`, until either side drops it.
    async fn run_link(
        self: &Arc<Self>,
        peer: PeerAddr,
        initiator: PeerId,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let (outbox, mut queued) = mpsc::channel::<OverlayMessage>(OUTBOX);
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        {
            let mut neighbours = self.neighbours.lock().expect("neighbours lock");
            if let Some(existing) = neighbours.get(&peer.id) {
                // Both sides linked at once. Each end keeps the link opened
                // by the smaller peer id, so both keep the same one.
                let preferred = self.me().id.min(peer.id);
                if initiator != preferred || existing.initiator == preferred {
                    return;
                }
            }
            neighbours.insert(
                peer.id,
                Neighbour {
                    addr: peer,
                    outbox: outbox.clone(),
                    link,
                    initiator,
                },
            );
        }
        self.hosts.lock().expect("hosts lock").saw(peer, 0);
        tracing::info!(neighbour = ?peer, "linked to supernode");
        let _ = outbox.try_send(OverlayMessage::Supernodes {
            entries: self.host_message(),
        });
        let mut writer = tokio::spawn(async move {
            while let Some(message) = queued.recv().await {
                if write_frame(&mut send, &message).await.is_err() {
                    break;
                }
            }
            let _ = send.finish();
        });
        let mut stopping = self.stopping.subscribe();
        let stopped = loop {
            // One read per frame, kept across the stop signal: dropping a
            // half-finished read would lose bytes of the stream.
            let read = read_frame::<OverlayMessage>(&mut recv, MAX_CONTROL_FRAME);
            tokio::pin!(read);
            tokio::select! {
                message = &mut read => match message {
                    Ok(message) => {
                        if let Err(reason) = self.on_message(peer, message) {
                            tracing::warn!(neighbour = ?peer, %reason, "closing the link to a misbehaving supernode");
                            self.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
                            break false;
                        }
                    }
                    Err(error) => {
                        if !matches!(error, NetError::Truncated) {
                            tracing::debug!(neighbour = ?peer, %error, "link ended");
                        }
                        break false;
                    }
                },
                _ = crate::stepped_down(&mut stopping) => break true,
            }
        };
        {
            let mut neighbours = self.neighbours.lock().expect("neighbours lock");
            if neighbours.get(&peer.id).is_some_and(|n| n.link == link) {
                neighbours.remove(&peer.id);
                tracing::info!(neighbour = ?peer, "unlinked from supernode");
            }
        }
        if stopped {
            // Let what is queued and the end of the stream reach the
            // neighbour, so it replaces this link at once.
            drop(outbox);
            if tokio::time::timeout(Duration::from_secs(1), &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        } else {
            writer.abort();
        }
    }

    fn host_message(&self) -> Vec<canopy_common::proto::wire::HostEntry> {
        let me = self.me();
        let mut entries = self.hosts.lock().expect("hosts lock").message(me);
        if me.addr.ip().is_unspecified() {
            // Neighbours know us by the address our link came from.
            entries.retain(|entry| entry.addr.id != me.id);
        }
        entries
    }

    /// Handles one message from neighbour `from`; an error (a message
    /// breaking the caps) ends the link.
    fn on_message(self: &Arc<Self>, from: PeerAddr, message: OverlayMessage) -> Result<(), String> {
        let now = self.now();
        match message {
            OverlayMessage::Query(query) => {
                self.stats.queries_received.fetch_add(1, Ordering::Relaxed);
                query
                    .query
                    .check()
                    .map_err(|reason| format!("bad query: {reason}"))?;
                let neighbours = self.neighbour_ids();
                let actions = self.router.lock().expect("router lock").on_query(
                    Origin::Neighbour(from.id),
                    query,
                    &neighbours,
                    now,
                );
                if actions.is_empty() {
                    self.stats.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                }
                self.execute(actions);
            }
            OverlayMessage::Hits { id, hits } => {
                if hits.len() > usize::from(MAX_HITS) {
                    return Err(format!("{} hits in one message, over {MAX_HITS}", hits.len()));
                }
                for hit in &hits {
                    hit.check().map_err(|reason| format!("bad hit: {reason}"))?;
                }
                let actions = self
                    .router
                    .lock()
                    .expect("router lock")
                    .on_hits(from.id, id, hits, now);
                self.execute(actions);
            }
            OverlayMessage::Supernodes { entries } => {
                let me = self.me().id;
                let mut hosts = self.hosts.lock().expect("hosts lock");
                for entry in entries.into_iter().take(MAX_HOSTS_PER_MESSAGE) {
                    if entry.addr.id != me && !entry.addr.addr.ip().is_unspecified() {
                        hosts.saw(entry.addr, u64::from(entry.age_secs));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether one more query may be passed on now.
    fn may_forward(&self) -> bool {
        let rate = f64::from(self.config.max_forwarded_per_second.max(1));
        let mut bucket = self.forwarding.lock().expect("forwarding lock");
        let (tokens, refilled) = &mut *bucket;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*refilled).as_secs_f64() * rate).min(rate);
        *refilled = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Carries out the router's decisions.
    fn execute(self: &Arc<Self>, mut actions: Vec<Action>) {
        if actions.iter().any(|a| matches!(a, Action::Forward { .. })) {
            if self.may_forward() {
                self.stats.queries_forwarded.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.queries_capped.fetch_add(1, Ordering::Relaxed);
                actions.retain(|a| !matches!(a, Action::Forward { .. }));
            }
        }
        for action in actions {
            match action {
                Action::AnswerLocally { id, query } => {
                    self.stats.queries_answered.fetch_add(1, Ordering::Relaxed);
                    let overlay = self.clone();
                    tokio::spawn(async move {
                        let index = overlay.index.clone();
                        let hits = tokio::task::spawn_blocking(move || index.search(&query))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or_default();
                        overlay
                            .stats
                            .hits_found
                            .fetch_add(hits.len() as u64, Ordering::Relaxed);
                        let actions = overlay.router.lock().expect("router lock").on_local_hits(
                            id,
                            hits,
                            overlay.now(),
                        );
                        overlay.execute(actions);
                    });
                }
                Action::Forward { to, query } => {
                    self.send_to(to, OverlayMessage::Query(query));
                }
                Action::Deliver {
                    to: Origin::Neighbour(peer),
                    id,
                    hits,
                } => {
                    for hits in batches(&hits, MAX_CONTROL_FRAME) {
                        self.send_to(peer, OverlayMessage::Hits { id, hits });
                    }
                }
                Action::Deliver {
                    to: Origin::Local(handle),
                    hits,
                    ..
                } => {
                    let search = self.searches.lock().expect("searches lock").get(&handle).cloned();
                    if let Some(search) = search {
                        let _ = search.try_send(hits);
                    }
                }
            }
        }
    }

    fn send_to(&self, peer: PeerId, message: OverlayMessage) {
        let outbox = self
            .neighbours
            .lock()
            .expect("neighbours lock")
            .get(&peer)
            .map(|n| n.outbox.clone());
        if let Some(outbox) = outbox {
            // A neighbour that cannot keep up loses messages, not our memory.
            let _ = outbox.try_send(message);
        }
    }

    /// Runs one of our leaves' searches across the overlay, writing hits to
    /// `send` as they arrive, then [`Response::EndOfHits`].
    pub async fn search(self: &Arc<Self>, query: Query, send: &mut SendStream) -> Result<(), NetError> {
        self.stats.searches.fetch_add(1, Ordering::Relaxed);
        let handle = self.next_search.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(64);
        self.searches.lock().expect("searches lock").insert(handle, tx);
        let neighbours = self.neighbour_ids();
        let max_hits = usize::from(query.max_hits.clamp(1, MAX_HITS));
        let id = QueryId(random_bytes());
        let actions = self.router.lock().expect("router lock").on_local_query(
            handle,
            id,
            query,
            &neighbours,
            self.now(),
        );
        self.execute(actions);
        let deadline = tokio::time::Instant::now() + self.config.search_window;
        let mut sent = 0;
        let result = async {
            loop {
                tokio::select! {
                    hits = rx.recv() => {
                        let Some(mut hits) = hits else { break };
                        hits.truncate(max_hits - sent);
                        sent += hits.len();
                        // One answer can hold up to 200 hits: more than a frame.
                        for hits in batches(&hits, MAX_CONTROL_FRAME) {
                            write_frame(send, &Response::Hits { hits }).await?;
                        }
                        // Alone in the network, our own answer is all there is.
                        if sent >= max_hits || neighbours.is_empty() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            write_frame(send, &Response::EndOfHits).await
        }
        .await;
        self.searches.lock().expect("searches lock").remove(&handle);
        result
    }

    fn candidates(&self, wanted: usize) -> Vec<PeerAddr> {
        let me = self.me().id;
        let neighbours = self.neighbour_ids();
        let connecting = self.connecting.lock().expect("connecting lock").clone();
        let mut failures = self.failures.lock().expect("failures lock");
        failures.retain(|_, when| when.elapsed() < RETRY_AFTER);
        self.hosts
            .lock()
            .expect("hosts lock")
            .freshest()
            .into_iter()
            .filter(|addr| {
                addr.id != me
                    && !neighbours.contains(&addr.id)
                    && !connecting.contains(&addr.id)
                    && !failures.contains_key(&addr.id)
            })
            .take(wanted)
            .collect()
    }
}

/// Keeps the neighbour count up and shares host caches, until the overlay
/// is dropped.
async fn maintain(overlay: std::sync::Weak<Overlay>) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    let mut last_exchange = Instant::now();
    loop {
        tick.tick().await;
        let Some(overlay) = overlay.upgrade() else { return };
        if overlay.is_stopping() {
            return;
        }
        let have = overlay.neighbours.lock().expect("neighbours lock").len()
            + overlay.connecting.lock().expect("connecting lock").len();
        if have < overlay.config.target_neighbours {
            for addr in overlay.candidates(overlay.config.target_neighbours - have) {
                overlay
                    .connecting
                    .lock()
                    .expect("connecting lock")
                    .insert(addr.id);
                tokio::spawn(overlay.clone().connect(addr));
            }
        }
        if last_exchange.elapsed() >= EXCHANGE_EVERY {
            last_exchange = Instant::now();
            let message = OverlayMessage::Supernodes {
                entries: overlay.host_message(),
            };
            for id in overlay.neighbour_ids() {
                overlay.send_to(id, message.clone());
            }
            overlay.hosts.lock().expect("hosts lock").save();
        }
    }
}
