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

mod link;
mod search;
mod tables;

use canopy_common::sync::Lock;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use canopy_common::net::{random_bytes, read_frame, write_frame, Endpoint, NetError};
use canopy_common::proto::budget::TokenBucket;
use canopy_common::proto::dynamic::{self, DynamicConfig, DynamicQuery, Step};
use canopy_common::proto::frame::{batches, encode, MAX_CONTROL_FRAME};
use canopy_common::proto::nearest::sizing_up;
use canopy_common::proto::qrp::horizon::MAX_LEVELS;
use canopy_common::proto::qrp::MAX_NEIGHBOUR_TABLES;
use canopy_common::proto::routing::{
    Action, Dropped, FloodQuery, Forward, Forwarding, Origin, QueryId, Router, RouterConfig,
};
use canopy_common::proto::search::{HitError, QueryError, MAX_HITS};
use canopy_common::proto::wire::{
    LinkHello, LinkNotice, LinkOffer, OverlayMessage, FEATURE_KEYWORD_TABLES, FEATURE_NOTES,
    MAX_HASHES_PER_NOTES_ASK, MAX_HOSTS_PER_MESSAGE, MAX_VOTES_PER_HIT_NOTES,
};
use canopy_common::proto::{Hit, PeerAddr, PeerId, Query, Request, Response};
use quinn::{RecvStream, SendStream};
use tokio::sync::{mpsc, watch};

use crate::hosts::HostCache;
use crate::index::FileIndex;
use crate::tags::TagCache;
use crate::votes::VoteCache;
use link::LinkChanges;

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
    /// Both sides send notes (votes, tags) with hits on this link.
    notes: bool,
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
    /// Votes that came with hits for our leaves' searches and were kept.
    pub votes_relayed_in: AtomicU64,
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
    #[error("{0} votes in one message, over {MAX_VOTES_PER_HIT_NOTES}")]
    TooManyVotes(usize),
    #[error("{0} files' tags in one message, over {MAX_HASHES_PER_NOTES_ASK}")]
    TooManyTags(usize),
}

/// A supernode's overlay: its links, its router and its host cache.
///
/// Locks: everything that changes lives in `State`, behind one lock that
/// is taken alone and never held across an `.await`. The keyword horizon
/// cannot join it: it is the index's, which changes it under its own
/// catalogue lock as leaves publish. It is taken alone too, so a link's up
/// and down reach it through `LinkChanges`, in the order the neighbours
/// map saw them, applied by one task at a time (`horizon_turn`, an async
/// lock held while the state's and the horizon's are each taken alone).
pub struct Overlay {
    config: OverlayConfig,
    endpoint: Endpoint,
    index: Arc<FileIndex>,
    /// Votes on files, the supernode's: sent with our hits, kept when they
    /// come with hits for our leaves.
    votes: Arc<Mutex<VoteCache>>,
    /// Tags of files from afar, kept when they come with hits for our leaves.
    tags: Arc<Mutex<TagCache>>,
    started: Instant,
    state: Mutex<State>,
    /// Whose turn it is to apply queued link changes to the horizon.
    horizon_turn: tokio::sync::Mutex<()>,
    next_search: AtomicU64,
    next_link: AtomicU64,
    /// Set by [`Overlay::stop`]: links close, no new ones are made.
    stopping: watch::Sender<bool>,
    pub stats: OverlayStats,
}

/// What the overlay changes as it runs, behind its one lock.
struct State {
    router: Router,
    neighbours: HashMap<PeerId, Neighbour>,
    /// Supernodes being dialled or asked for a link.
    connecting: HashSet<PeerId>,
    /// Supernodes we failed to link to, and when.
    failures: HashMap<PeerId, Instant>,
    hosts: HostCache,
    /// Our leaves' searches in progress, by handle: where their hits go.
    searches: HashMap<u64, mpsc::Sender<Vec<Hit>>>,
    link_changes: LinkChanges,
}

impl State {
    /// Our number of supernode neighbours, as neighbours are told it.
    fn degree(&self) -> u16 {
        u16::try_from(self.neighbours.len()).unwrap_or(u16::MAX)
    }
}

impl Overlay {
    /// Starts keeping neighbours, beginning with `bootstrap` and the
    /// persisted host cache. Call inside a tokio runtime.
    pub fn start(
        config: OverlayConfig,
        endpoint: Endpoint,
        index: Arc<FileIndex>,
        (votes, tags): (Arc<Mutex<VoteCache>>, Arc<Mutex<TagCache>>),
        bootstrap: &[PeerAddr],
    ) -> Arc<Overlay> {
        let mut hosts = HostCache::open(config.hosts_path.clone());
        for &addr in bootstrap {
            hosts.saw(addr, 0);
        }
        index.horizon().locked().set_levels(config.table_levels);
        let state = State {
            router: Router::new(config.router.clone()),
            neighbours: HashMap::new(),
            connecting: HashSet::new(),
            failures: HashMap::new(),
            hosts,
            searches: HashMap::new(),
            link_changes: LinkChanges::default(),
        };
        let overlay = Arc::new(Overlay {
            config,
            endpoint,
            index,
            votes,
            tags,
            started: Instant::now(),
            state: Mutex::new(state),
            horizon_turn: tokio::sync::Mutex::new(()),
            next_search: AtomicU64::new(1),
            next_link: AtomicU64::new(1),
            stopping: watch::channel(false).0,
            stats: OverlayStats::default(),
        });
        tokio::spawn(maintain(Arc::downgrade(&overlay)));
        overlay
    }

    /// The overlay's state, locked: take it alone, and drop it before an `.await`.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
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
        while !self.state().neighbours.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.state().hosts.save();
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Current neighbours.
    pub fn neighbours(&self) -> Vec<PeerAddr> {
        self.state().neighbours.values().map(|n| n.addr).collect()
    }

    fn neighbour_ids(&self) -> Vec<PeerId> {
        self.state().neighbours.keys().copied().collect()
    }

    /// Other supernodes a leaf could fall back on: neighbours first.
    pub fn referrals(&self, count: usize) -> Vec<PeerAddr> {
        let me = self.me().id;
        let state = self.state();
        let mut others: Vec<PeerAddr> = state.neighbours.values().map(|n| n.addr).collect();
        for addr in state.hosts.freshest() {
            if others.len() >= count {
                break;
            }
            if addr.id != me && !others.iter().any(|o| o.id == addr.id) {
                others.push(addr);
            }
        }
        others.truncate(count);
        others
    }

    /// The overlay features we speak.
    fn features(&self) -> u32 {
        let tables = if self.config.keyword_routing {
            FEATURE_KEYWORD_TABLES
        } else {
            0
        };
        tables | FEATURE_NOTES
    }

    fn degree(&self) -> u16 {
        self.state().degree()
    }

    fn candidates(&self, wanted: usize) -> Vec<PeerAddr> {
        let me = self.me().id;
        let mut state = self.state();
        state.failures.retain(|_, when| when.elapsed() < RETRY_AFTER);
        let state = &*state;
        state
            .hosts
            .freshest()
            .into_iter()
            .filter(|addr| {
                addr.id != me
                    && !state.neighbours.contains_key(&addr.id)
                    && !state.connecting.contains(&addr.id)
                    && !state.failures.contains_key(&addr.id)
            })
            .take(wanted)
            .collect()
    }
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
        let have = {
            let state = overlay.state();
            state.neighbours.len() + state.connecting.len()
        };
        if have < overlay.config.target_neighbours {
            // Size up several supernodes per link wanted and keep the
            // nearest: a query's first hit is a few supernode hops away,
            // and each hop costs a round trip.
            let (wanted, sized_up) = sizing_up(overlay.config.target_neighbours - have);
            let candidates = overlay.candidates(sized_up);
            if !candidates.is_empty() {
                let ids = candidates.iter().map(|addr| addr.id);
                overlay.state().connecting.extend(ids);
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
            overlay.state().hosts.save();
        }
    }
}
