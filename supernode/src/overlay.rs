//! The supernode overlay: links to neighbour supernodes, query flooding
//! over them, and the host cache that lets the network start and heal
//! without any central server.
//!
//! Every link is one QUIC stream opened with [`Request::LinkWith`] (or, to
//! an older supernode, [`Request::Link`]); both ends then send
//! [`OverlayMessage`]s on it. Routing decisions are the sans-IO
//! [`Router`]'s; this module only carries its actions out.
//!
//! With keyword routing on (the default), neighbours that both speak
//! [`FEATURE_KEYWORD_TABLES`] exchange horizon tables
//! ([`canopy_common::proto::qrp::horizon`]) every [`OverlayConfig::table_interval`]:
//! a copy of a query goes only to neighbours whose tables say a match may
//! lie within its reach, and our own leaves' searches run as a
//! [`DynamicQuery`] that widens only as far as the results require.

use canopy_common::sync::Lock;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canopy_common::net::{random_bytes, read_frame, write_frame, Endpoint, NetError};
use canopy_common::proto::budget::TokenBucket;
use canopy_common::proto::dynamic::{self, DynamicConfig, DynamicQuery, Step};
use canopy_common::proto::frame::{batches, encode, MAX_CONTROL_FRAME};
use canopy_common::proto::nearest::sizing_up;
use canopy_common::proto::qrp::horizon::MAX_LEVELS;
use canopy_common::proto::qrp::MAX_NEIGHBOUR_TABLES;
use canopy_common::proto::routing::{
    Action, Dropped, FloodQuery, Forwarding, Origin, QueryId, Router, RouterConfig,
};
use canopy_common::proto::search::{HitError, QueryError, MAX_HITS};
use canopy_common::proto::wire::{
    LinkHello, LinkNotice, LinkOffer, OverlayMessage, FEATURE_KEYWORD_TABLES, MAX_HOSTS_PER_MESSAGE,
};
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
    /// Exchange keyword tables with neighbours that speak them, route
    /// query copies by them, and run our leaves' searches as dynamic
    /// queries. Off: plain flooding, as before.
    pub keyword_routing: bool,
    /// Levels of keyword tables (1 to 8): copies arriving with a TTL below
    /// this are routed by tables, others broadcast.
    pub table_levels: u8,
    /// How often changed tables are sent to neighbours.
    pub table_interval: Duration,
    /// How our leaves' searches widen (its `target_results` is
    /// `--search-target`). Used only with `keyword_routing` and for
    /// queries that do not set a TTL themselves.
    pub dynamic: DynamicConfig,
}

/// How our leaves' searches widen by default. The time limit stays under
/// the 10 s a reference client waits for a supernode; a hop out and back
/// is given 500 ms (the simulator's 1.2 s models a slower internet).
pub fn default_dynamic() -> DynamicConfig {
    DynamicConfig {
        target_results: 150,
        time_limit: Duration::from_secs(8),
        probe_fanout: 3,
        probe_ttl: 1,
        // As far as a supernode lets a copy go: past what the tables
        // cover only while nothing is found (`broadcast_past_tables`).
        max_ttl: RouterConfig::default().max_ttl,
        wait_per_hop: Duration::from_millis(500),
        assumed_degree: 4,
        max_widening_ttl: 2,
        broadcast_past_tables: 1,
    }
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            target_neighbours: 4,
            max_neighbours: 8,
            router: RouterConfig::default(),
            search_window: Duration::from_secs(2),
            hosts_path: None,
            keyword_routing: true,
            table_levels: canopy_common::proto::qrp::horizon::DEFAULT_LEVELS,
            table_interval: Duration::from_secs(2),
            dynamic: default_dynamic(),
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
/// Table update bytes (by [`canopy_common::proto::qrp::TableUpdate::cost`])
/// a neighbour may send in a burst: every level of a 2^20-bit table
/// from scratch, twice over.
const TABLE_BURST: f64 = (2 * MAX_LEVELS as usize * (128 << 10)) as f64;
/// ... and per second after that. A neighbour over it loses its link.
const TABLE_BYTES_PER_SECOND: f64 = (256 << 10) as f64;
/// Largest degree we believe a neighbour has.
const MAX_DEGREE: u16 = MAX_NEIGHBOUR_TABLES as u16;

struct Neighbour {
    addr: PeerAddr,
    /// The link's connection, for its round trip time.
    connection: quinn::Connection,
    outbox: mpsc::Sender<OverlayMessage>,
    /// Which link this is, so a superseded link's end does not remove its
    /// successor.
    link: u64,
    /// Who opened it.
    initiator: PeerId,
    /// Both sides speak keyword tables on this link.
    tables: bool,
    /// Its number of supernode neighbours, as it last told us (0: unknown).
    degree: u16,
    /// Our degree as we last told it.
    degree_sent: u16,
    /// Table bytes it may still send now, and when that was worked out.
    table_budget: TokenBucket,
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
    /// Queries passed on (once each, however many neighbours got them;
    /// a leaf's dynamic search once it sends its first copy).
    pub queries_forwarded: AtomicU64,
    /// Queries not passed on because of the router's `max_forwarded_per_second`.
    pub queries_capped: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    /// Hits our index produced.
    pub hits_found: AtomicU64,
    /// Messages from neighbours that broke the caps (each closed its link).
    pub bad_messages: AtomicU64,
    /// Query copies sent to neighbours without a table check.
    pub copies_broadcast: AtomicU64,
    /// Query copies sent because a neighbour's table may match in reach.
    pub copies_routed: AtomicU64,
    /// Query copies not sent: the neighbour's table ruled them out.
    pub copies_pruned: AtomicU64,
    /// Copies our leaves' dynamic searches sent (probes, not counted above).
    pub probes_sent: AtomicU64,
    /// Keyword table messages sent and received, in encoded bytes.
    pub table_bytes_sent: AtomicU64,
    pub table_bytes_received: AtomicU64,
    /// Table updates refused (the sender's tables were forgotten).
    pub table_updates_refused: AtomicU64,
}

/// What a neighbour sent that breaks the caps; its link is closed.
#[derive(Debug, thiserror::Error)]
pub enum Misbehaviour {
    #[error("bad query: {0}")]
    Query(#[from] QueryError),
    #[error("{0} hits in one message, over {MAX_HITS}")]
    TooManyHits(usize),
    #[error("bad hit: {0}")]
    Hit(#[from] HitError),
    #[error("{0} on a link without keyword tables")]
    NoTablesAgreed(&'static str),
    #[error("keyword tables over {TABLE_BYTES_PER_SECOND} bytes a second")]
    TablesTooFast,
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
        index.horizon().locked().set_levels(config.table_levels);
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
        while !self.neighbours.locked().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.hosts.locked().save();
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Current neighbours.
    pub fn neighbours(&self) -> Vec<PeerAddr> {
        self.neighbours.locked().values().map(|n| n.addr).collect()
    }

    fn neighbour_ids(&self) -> Vec<PeerId> {
        self.neighbours.locked().keys().copied().collect()
    }

    /// Other supernodes a leaf could fall back on: neighbours first.
    pub fn referrals(&self, count: usize) -> Vec<PeerAddr> {
        let mut others = self.neighbours();
        for addr in self.hosts.locked().freshest() {
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

    /// The overlay features we speak.
    fn features(&self) -> u32 {
        if self.config.keyword_routing {
            FEATURE_KEYWORD_TABLES
        } else {
            0
        }
    }

    fn degree(&self) -> u16 {
        let count = self.neighbours.locked().len();
        u16::try_from(count).unwrap_or(u16::MAX)
    }

    /// Answers another supernode's [`Request::Link`] (`offer` is `None`)
    /// or [`Request::LinkWith`].
    pub async fn accept_link(
        self: &Arc<Self>,
        peer: PeerAddr,
        connection: &quinn::Connection,
        offer: Option<LinkOffer>,
        mut send: SendStream,
        recv: RecvStream,
    ) {
        let full = {
            let neighbours = self.neighbours.locked();
            neighbours.len() >= self.config.max_neighbours && !neighbours.contains_key(&peer.id)
        };
        if full || self.is_stopping() {
            let others = self.referrals(8);
            let _ = write_frame(&mut send, &LinkNotice::Full { others }).await;
            let _ = send.finish();
            return;
        }
        let (notice, features, degree) = match offer {
            None => (LinkNotice::Accepted, 0, 0),
            Some(offer) => (
                LinkNotice::AcceptedWith {
                    features: self.features(),
                    degree: self.degree(),
                },
                offer.features & self.features(),
                offer.degree,
            ),
        };
        if write_frame(&mut send, &notice).await.is_ok() {
            self.run_link(peer, connection, peer.id, (send, recv), features, degree)
                .await;
        }
    }

    /// Dials every candidate at once and links to the `wanted` with the
    /// shortest round trips; the others are hung up on. Every candidate
    /// must be in `connecting`; each leaves it here or in [`Self::link_over`].
    async fn link_nearest(self: Arc<Self>, candidates: Vec<PeerAddr>, wanted: usize) {
        let found = self
            .endpoint
            .connect_nearest(&candidates, wanted, Duration::from_secs(5))
            .await;
        for (addr, reason) in &found.failed {
            tracing::debug!(peer = ?addr, %reason, "no link");
            self.failures.locked().insert(addr.id, Instant::now());
        }
        let mut connecting = self.connecting.locked();
        for addr in found.failed.iter().map(|(addr, _)| addr).chain(&found.farther) {
            connecting.remove(&addr.id);
        }
        drop(connecting);
        for (addr, connection) in found.kept {
            tracing::debug!(peer = ?addr, rtt = ?connection.rtt(), "linking to a near supernode");
            tokio::spawn(self.clone().link_over(addr, connection));
        }
    }

    /// Asks for a link over a connection already up, and carries it.
    async fn link_over(self: Arc<Self>, addr: PeerAddr, connection: quinn::Connection) {
        let outcome = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            let offer = LinkOffer {
                listen: self.me().addr,
                features: self.features(),
                degree: self.degree(),
            };
            write_frame(&mut send, &Request::LinkWith(offer))
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = read_frame::<LinkNotice>(&mut recv, MAX_CONTROL_FRAME).await;
            if answer.is_err() {
                // A supernode from before `LinkWith` resets that stream as
                // a bad request; ask again the old way on a new stream.
                (send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
                let hello = LinkHello {
                    listen: self.me().addr,
                };
                write_frame(&mut send, &Request::Link(hello))
                    .await
                    .map_err(|e| e.to_string())?;
                answer = read_frame::<LinkNotice>(&mut recv, MAX_CONTROL_FRAME).await;
            }
            match answer {
                Ok(LinkNotice::Accepted) => Ok((connection, send, recv, 0, 0)),
                Ok(LinkNotice::AcceptedWith { features, degree }) => {
                    Ok((connection, send, recv, features & self.features(), degree))
                }
                Ok(LinkNotice::Full { others }) => {
                    let mut hosts = self.hosts.locked();
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
        self.connecting.locked().remove(&addr.id);
        match outcome {
            // In a private network, a change of membership that drops
            // this neighbour closes the link's connection.
            Ok((connection, send, recv, features, degree)) => {
                let link = self.run_link(addr, &connection, self.me().id, (send, recv), features, degree);
                self.endpoint.guard(&connection, addr.id, link).await
            }
            Err(reason) => {
                tracing::debug!(peer = ?addr, %reason, "no link");
                self.failures.locked().insert(addr.id, Instant::now());
            }
        }
    }

    /// Carries one link, opened by `initiator`, until either side drops it.
    async fn run_link(
        self: &Arc<Self>,
        peer: PeerAddr,
        connection: &quinn::Connection,
        initiator: PeerId,
        (mut send, mut recv): (SendStream, RecvStream),
        features: u32,
        degree: u16,
    ) {
        let (outbox, mut queued) = mpsc::channel::<OverlayMessage>(OUTBOX);
        let tables = features & FEATURE_KEYWORD_TABLES != 0;
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        {
            let mut neighbours = self.neighbours.locked();
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
                    connection: connection.clone(),
                    outbox: outbox.clone(),
                    link,
                    initiator,
                    tables,
                    degree: degree.min(MAX_DEGREE),
                    degree_sent: 0,
                    table_budget: TokenBucket::full(TABLE_BYTES_PER_SECOND, TABLE_BURST, self.now()),
                },
            );
            // Under the neighbours lock, so link ups and downs of one peer
            // reach the horizon in the order the links replace each other.
            let mut horizon = self.index.horizon().locked();
            if tables {
                if let Err(error) = horizon.link_up(peer.id) {
                    tracing::debug!(neighbour = ?peer, %error, "no keyword tables on this link");
                }
            } else {
                horizon.link_down(&peer.id);
            }
        }
        self.hosts.locked().saw(peer, 0);
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
                        if let Err(reason) = self.on_message(peer, link, message) {
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
            let mut neighbours = self.neighbours.locked();
            if neighbours.get(&peer.id).is_some_and(|n| n.link == link) {
                neighbours.remove(&peer.id);
                self.index.horizon().locked().link_down(&peer.id);
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
        let mut entries = self.hosts.locked().message(me);
        if me.addr.ip().is_unspecified() {
            // Neighbours know us by the address our link came from.
            entries.retain(|entry| entry.addr.id != me.id);
        }
        entries
    }

    /// Handles one message from neighbour `from`; an error (a message
    /// breaking the caps) ends the link.
    fn on_message(
        self: &Arc<Self>,
        from: PeerAddr,
        link: u64,
        message: OverlayMessage,
    ) -> Result<(), Misbehaviour> {
        let now = self.now();
        match message {
            OverlayMessage::Query(query) => {
                self.stats.queries_received.fetch_add(1, Ordering::Relaxed);
                query.query.check()?;
                let actions = self.route_query(Origin::Neighbour(from.id), query, now);
                if actions.is_empty() {
                    self.stats.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                }
                self.execute(actions);
            }
            OverlayMessage::Hits { id, hits } => {
                if hits.len() > usize::from(MAX_HITS) {
                    return Err(Misbehaviour::TooManyHits(hits.len()));
                }
                for hit in &hits {
                    hit.check()?;
                }
                let actions = self.router.locked().on_hits(from.id, id, hits, now);
                self.execute(actions);
            }
            OverlayMessage::Supernodes { entries } => {
                let me = self.me().id;
                let mut hosts = self.hosts.locked();
                for entry in entries.into_iter().take(MAX_HOSTS_PER_MESSAGE) {
                    if entry.addr.id != me && !entry.addr.addr.ip().is_unspecified() {
                        hosts.saw(entry.addr, u64::from(entry.age_secs));
                    }
                }
            }
            OverlayMessage::KeywordTable { level, update, more } => {
                self.spend_table_budget(from.id, link, update.cost())?;
                // The frame: the update's own, plus the variant, level and more bytes.
                let bytes = encoded_len(&update) + 3;
                self.stats
                    .table_bytes_received
                    .fetch_add(bytes, Ordering::Relaxed);
                let mut horizon = self.index.horizon().locked();
                if let Err(error) = horizon.on_update(from.id, level, &update, more) {
                    // Its tables are forgotten: it is flooded, never pruned.
                    tracing::debug!(neighbour = ?from, %error, "refused a keyword table update");
                    self.stats.table_updates_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            OverlayMessage::Degree { neighbours } => {
                let mut all = self.neighbours.locked();
                match all.get_mut(&from.id) {
                    Some(neighbour) if neighbour.link == link && neighbour.tables => {
                        neighbour.degree = neighbours.min(MAX_DEGREE);
                    }
                    Some(neighbour) if neighbour.link == link => {
                        return Err(Misbehaviour::NoTablesAgreed("a degree"));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Charges a neighbour's table bytes to its budget; over budget, or
    /// tables on a link that did not agree to them, is an error (the link
    /// closes). Updates from a superseded link of the same peer are not
    /// charged here and are refused by the horizon if they do not fit.
    fn spend_table_budget(&self, from: PeerId, link: u64, cost: usize) -> Result<(), Misbehaviour> {
        let mut all = self.neighbours.locked();
        let Some(neighbour) = all.get_mut(&from).filter(|n| n.link == link) else {
            return Ok(());
        };
        if !neighbour.tables {
            return Err(Misbehaviour::NoTablesAgreed("a keyword table"));
        }
        if !neighbour.table_budget.take(cost as f64, self.now()) {
            return Err(Misbehaviour::TablesTooFast);
        }
        Ok(())
    }

    /// Hands a query to the router, with the keyword tables' say on each
    /// copy when keyword routing is on.
    fn route_query(&self, from: Origin, query: FloodQuery, now: Duration) -> Vec<Action> {
        let neighbours = self.neighbour_ids();
        let mut router = self.router.locked();
        let actions = if self.config.keyword_routing {
            let horizon = self.index.horizon().locked();
            let decide = |to: PeerId, query: &Query, ttl: u8| horizon.decide(to, query, ttl);
            router.on_query_with(from, query, &neighbours, Some(&decide), now)
        } else {
            router.on_query(from, query, &neighbours, now)
        };
        self.stats
            .queries_capped
            .store(router.dropped(Dropped::Capped), Ordering::Relaxed);
        let Forwarding {
            broadcast,
            routed,
            pruned,
        } = router.forwarding();
        self.stats.copies_broadcast.store(broadcast, Ordering::Relaxed);
        self.stats.copies_routed.store(routed, Ordering::Relaxed);
        self.stats.copies_pruned.store(pruned, Ordering::Relaxed);
        actions
    }

    /// Router counts of query copies by how they were chosen.
    pub fn forwarding(&self) -> Forwarding {
        self.router.locked().forwarding()
    }

    /// Sends neighbours what changed in our tables, and our degree if it
    /// changed. An update that cannot be queued makes that link start
    /// over with resets, so a neighbour never holds a table we did not send.
    fn send_tables(&self) {
        if !self.config.keyword_routing {
            return;
        }
        let updates = self.index.horizon().locked().updates_to_send();
        let mut lost = HashSet::new();
        for (to, level, update, more) in updates {
            if lost.contains(&to) {
                continue;
            }
            let message = OverlayMessage::KeywordTable { level, update, more };
            let bytes = encoded_len(&message);
            if self.send_to(to, message) {
                self.stats.table_bytes_sent.fetch_add(bytes, Ordering::Relaxed);
            } else {
                lost.insert(to);
            }
        }
        if !lost.is_empty() {
            let mut horizon = self.index.horizon().locked();
            for peer in &lost {
                horizon.resend(peer);
            }
        }
        let degree = self.degree();
        let mut neighbours = self.neighbours.locked();
        for neighbour in neighbours.values_mut() {
            if neighbour.tables
                && neighbour.degree_sent != degree
                && neighbour
                    .outbox
                    .try_send(OverlayMessage::Degree { neighbours: degree })
                    .is_ok()
            {
                neighbour.degree_sent = degree;
            }
        }
    }

    /// Whether one more query may be passed on now (the router's cap).
    fn may_forward(&self) -> bool {
        let mut router = self.router.locked();
        let may = router.may_forward(self.now());
        self.stats
            .queries_capped
            .store(router.dropped(Dropped::Capped), Ordering::Relaxed);
        may
    }

    /// Carries out the router's decisions (the forwarding cap already
    /// applied by the router).
    fn execute(self: &Arc<Self>, actions: Vec<Action>) {
        if actions.iter().any(|a| matches!(a, Action::Forward { .. })) {
            self.stats.queries_forwarded.fetch_add(1, Ordering::Relaxed);
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
                        let actions = overlay.router.locked().on_local_hits(id, hits, overlay.now());
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
                    let search = self.searches.locked().get(&handle).cloned();
                    if let Some(search) = search {
                        let _ = search.try_send(hits);
                    }
                }
            }
        }
    }

    /// Queues a message for a neighbour; false if it could not be (no
    /// such neighbour, or its outbox is full).
    fn send_to(&self, peer: PeerId, message: OverlayMessage) -> bool {
        let outbox = self.neighbours.locked().get(&peer).map(|n| n.outbox.clone());
        // A neighbour that cannot keep up loses messages, not our memory.
        outbox.is_some_and(|outbox| outbox.try_send(message).is_ok())
    }

    /// Runs one of our leaves' searches across the overlay, writing hits to
    /// `send` as they arrive, then [`Response::EndOfHits`]. With keyword
    /// routing on and no TTL set by the searcher, it is a dynamic query;
    /// otherwise one flood with the query's TTL.
    pub async fn search(self: &Arc<Self>, query: Query, send: &mut SendStream) -> Result<(), NetError> {
        self.stats.searches.fetch_add(1, Ordering::Relaxed);
        let handle = self.next_search.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        self.searches.locked().insert(handle, tx);
        let result = if self.config.keyword_routing && query.ttl.is_none() {
            self.dynamic_search(handle, query, rx, send).await
        } else {
            self.flood_search(handle, query, rx, send).await
        };
        self.searches.locked().remove(&handle);
        result
    }

    /// One flood at the query's TTL, collecting hits for the search window.
    async fn flood_search(
        self: &Arc<Self>,
        handle: u64,
        query: Query,
        mut rx: mpsc::Receiver<Vec<Hit>>,
        send: &mut SendStream,
    ) -> Result<(), NetError> {
        let max_hits = usize::from(query.max_hits.clamp(1, MAX_HITS));
        let router = self.config.router.clone();
        let flood = FloodQuery {
            id: QueryId(random_bytes()),
            ttl: query.ttl.unwrap_or(router.default_ttl).min(router.max_ttl),
            hops: 0,
            query,
        };
        // Alone in the network, or with TTL 0, our own answer is all there is.
        let alone = self.neighbour_ids().is_empty() || flood.ttl == 0;
        let actions = self.route_query(Origin::Local(handle), flood, self.now());
        self.execute(actions);
        let deadline = tokio::time::Instant::now() + self.config.search_window;
        let mut sent = 0;
        loop {
            tokio::select! {
                hits = rx.recv() => {
                    let Some(hits) = hits else { break };
                    if pass_hits(send, hits, &mut sent, max_hits).await? || alone {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        write_frame(send, &Response::EndOfHits).await
    }

    /// A dynamic query: our own index answers (the router holds the
    /// query's id with no neighbours, so every hit for it comes back
    /// here), then [`DynamicQuery`] says which neighbour to ask next and
    /// how far, from the distinct files found so far and each neighbour's
    /// keyword tables and degree.
    async fn dynamic_search(
        self: &Arc<Self>,
        handle: u64,
        query: Query,
        mut rx: mpsc::Receiver<Vec<Hit>>,
        send: &mut SendStream,
    ) -> Result<(), NetError> {
        let max_hits = usize::from(query.max_hits.clamp(1, MAX_HITS));
        let id = QueryId(random_bytes());
        let started = tokio::time::Instant::now();
        let now = self.now();
        let actions = self.router.locked().on_local_query(
            handle,
            id,
            Query {
                ttl: None,
                ..query.clone()
            },
            &[],
            now,
        );
        self.execute(actions);
        let neighbours = self.dynamic_neighbours(&query);
        let alone = neighbours.is_empty();
        let mut config = self.config.dynamic.clone();
        config.max_ttl = config.max_ttl.min(self.config.router.max_ttl);
        let (mut search, steps) = DynamicQuery::start(config, neighbours, now);
        // Alone in the network, our own answer is all there is.
        // Whether this search may pass the query on at all: decided, under
        // `max_forwarded_per_second` like a flood, at its first copy.
        let mut allowed = None;
        let mut done = self.probe(id, &query, steps, &mut allowed) || alone;
        let mut seen: HashSet<ResultKey> = HashSet::new();
        let mut sent = 0;
        // Our own index's answer is waited for even if there is nobody to ask.
        let mut own_answer = false;
        while !(done && own_answer) {
            let wakeup = search
                .next_wakeup()
                .map_or(started + self.config.dynamic.time_limit, |at| {
                    started + at.saturating_sub(now)
                });
            tokio::select! {
                hits = rx.recv() => {
                    let Some(hits) = hits else { break };
                    own_answer = true;
                    let fresh = hits
                        .iter()
                        .flat_map(result_keys)
                        .filter(|key| seen.insert(*key))
                        .count();
                    if pass_hits(send, hits, &mut sent, max_hits).await? {
                        break;
                    }
                    let steps = search.on_results(fresh as u32, self.now());
                    done |= self.probe(id, &query, steps, &mut allowed);
                }
                _ = tokio::time::sleep_until(wakeup) => {
                    own_answer = true;
                    let steps = search.on_tick(self.now());
                    done |= self.probe(id, &query, steps, &mut allowed);
                }
            }
        }
        write_frame(send, &Response::EndOfHits).await
    }

    /// Our neighbours as a dynamic query sees them, nearest round trip
    /// first: among neighbours whose tables put a match equally near, the
    /// query asks them in this order.
    fn dynamic_neighbours(&self, query: &Query) -> Vec<dynamic::Neighbour> {
        let mut linked: Vec<(PeerId, u16, Duration)> = self
            .neighbours
            .locked()
            .iter()
            .map(|(id, n)| (*id, n.degree, n.connection.rtt()))
            .collect();
        linked.sort_by_key(|&(_, _, rtt)| rtt);
        let horizon = self.index.horizon().locked();
        linked
            .into_iter()
            .map(|(peer, degree, _)| dynamic::Neighbour {
                peer,
                degree: u32::from(degree),
                reach: horizon.reach(&peer, query),
            })
            .collect()
    }

    /// Sends a dynamic query's probes; true once it has finished. The
    /// first probe of a search takes one token of the forwarding cap
    /// (`allowed` remembers the answer): a search over the cap is
    /// answered from our index only, as a flood over it would be.
    fn probe(&self, id: QueryId, query: &Query, steps: Vec<Step>, allowed: &mut Option<bool>) -> bool {
        let mut finished = false;
        for step in steps {
            match step {
                Step::Probe { to, ttl } => {
                    let may = *allowed.get_or_insert_with(|| {
                        let may = self.may_forward();
                        if may {
                            self.stats.queries_forwarded.fetch_add(1, Ordering::Relaxed);
                        }
                        may
                    });
                    if !may {
                        // Local only: nothing more to wait for.
                        finished = true;
                        continue;
                    }
                    let copy = FloodQuery {
                        id,
                        ttl,
                        hops: 1,
                        query: Query {
                            ttl: None,
                            ..query.clone()
                        },
                    };
                    if self.send_to(to, OverlayMessage::Query(copy)) {
                        self.stats.probes_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Step::Finish(_) => finished = true,
            }
        }
        finished
    }

    fn candidates(&self, wanted: usize) -> Vec<PeerAddr> {
        let me = self.me().id;
        let neighbours = self.neighbour_ids();
        let connecting = self.connecting.locked().clone();
        let mut failures = self.failures.locked();
        failures.retain(|_, when| when.elapsed() < RETRY_AFTER);
        self.hosts
            .locked()
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

/// One result of a search, as dynamic querying counts them: a file at one
/// source (Gnutella counted a file once per host that has it, so a popular
/// file's many copies end a search early and a rare file's one does not).
type ResultKey = (canopy_common::proto::ContentHash, Option<PeerId>);

fn result_keys(hit: &Hit) -> Vec<ResultKey> {
    let mut keys: Vec<ResultKey> = hit
        .sources
        .iter()
        .map(|source| (hit.hash, Some(source.id)))
        .chain(hit.relayed.iter().map(|relayed| (hit.hash, Some(relayed.leaf))))
        .collect();
    if keys.is_empty() {
        keys.push((hit.hash, None));
    }
    keys
}

/// Passes hits on to the searcher, up to `max_hits` in all (`sent` so
/// far); true once that many were sent. One answer can hold up to 200
/// hits: more than a frame.
async fn pass_hits(
    send: &mut SendStream,
    mut hits: Vec<Hit>,
    sent: &mut usize,
    max_hits: usize,
) -> Result<bool, NetError> {
    hits.truncate(max_hits - *sent);
    *sent += hits.len();
    for hits in batches(&hits, MAX_CONTROL_FRAME) {
        write_frame(send, &Response::Hits { hits }).await?;
    }
    Ok(*sent >= max_hits)
}

/// A message's size on the wire, frame length prefix included.
fn encoded_len<T: serde::Serialize>(message: &T) -> u64 {
    encode(message, usize::MAX).map_or(0, |frame| frame.len() as u64)
}

/// Keeps the neighbour count up, shares host caches and keyword tables,
/// until the overlay is dropped.
async fn maintain(overlay: std::sync::Weak<Overlay>) {
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    let mut last_exchange = Instant::now();
    let mut last_tables: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(overlay) = overlay.upgrade() else { return };
        if overlay.is_stopping() {
            return;
        }
        let have = overlay.neighbours.locked().len() + overlay.connecting.locked().len();
        if have < overlay.config.target_neighbours {
            // Size up several supernodes per link wanted and keep the
            // nearest: a query's first hit is a few supernode hops away,
            // and each hop costs a round trip.
            let (wanted, sized_up) = sizing_up(overlay.config.target_neighbours - have);
            let candidates = overlay.candidates(sized_up);
            if !candidates.is_empty() {
                let mut connecting = overlay.connecting.locked();
                connecting.extend(candidates.iter().map(|addr| addr.id));
                drop(connecting);
                tokio::spawn(overlay.clone().link_nearest(candidates, wanted));
            }
        }
        if last_tables.is_none_or(|at| at.elapsed() >= overlay.config.table_interval) {
            last_tables = Some(Instant::now());
            overlay.send_tables();
        }
        if last_exchange.elapsed() >= EXCHANGE_EVERY {
            last_exchange = Instant::now();
            let message = OverlayMessage::Supernodes {
                entries: overlay.host_message(),
            };
            for id in overlay.neighbour_ids() {
                overlay.send_to(id, message.clone());
            }
            overlay.hosts.locked().save();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::dynamic::Reach;

    fn neighbour(n: u8, reach: Reach) -> dynamic::Neighbour {
        dynamic::Neighbour {
            peer: PeerId([n; 32]),
            degree: 3,
            reach,
        }
    }

    fn probes(config: DynamicConfig, neighbours: Vec<dynamic::Neighbour>) -> Vec<(u8, u8)> {
        let (_, steps) = DynamicQuery::start(config, neighbours, Duration::ZERO);
        steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Probe { to, ttl } => Some((to.0[0], ttl)),
                Step::Finish(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_first_probe_goes_as_deep_as_the_nearest_match_and_no_further_out() {
        // DynamicQuery's own rules, with the supernode's settings.
        let config = default_dynamic();
        // A rare file 3 hops past neighbour 2; nothing within 4 past 1.
        let rare = vec![neighbour(1, Reach::Beyond(4)), neighbour(2, Reach::Within(3))];
        assert_eq!(probes(config.clone(), rare), [(2, 3)]);
        // A popular one right behind everyone: the usual narrow probe.
        let popular = (1..=5).map(|n| neighbour(n, Reach::Within(0))).collect();
        assert_eq!(probes(config.clone(), popular), [(1, 1), (2, 1), (3, 1)]);
        // No tables: as configured.
        let unknown = (1..=2).map(|n| neighbour(n, Reach::Unknown)).collect();
        assert_eq!(probes(config, unknown), [(1, 1), (2, 1)]);
    }

    #[test]
    fn a_result_is_a_file_at_one_source() {
        let hit = |hash: u8, sources: &[u8]| Hit {
            hash: canopy_common::proto::ContentHash([hash; 32]),
            size: 1,
            name: "x".into(),
            kind: canopy_common::proto::FileKind::Other,
            sources: sources
                .iter()
                .map(|&n| PeerAddr::new(PeerId([n; 32]), ([127, 0, 0, 1], 1).into()))
                .collect(),
            source_count: sources.len() as u32,
            relayed: vec![],
        };
        let mut seen = HashSet::new();
        let count = |seen: &mut HashSet<ResultKey>, hits: &[Hit]| {
            hits.iter()
                .flat_map(result_keys)
                .filter(|key| seen.insert(*key))
                .count()
        };
        assert_eq!(count(&mut seen, &[hit(1, &[1, 2]), hit(2, &[])]), 3);
        assert_eq!(count(&mut seen, &[hit(1, &[2, 3])]), 1);
    }
}
