//! The supernode role. A node that the election (or `--role supernode`)
//! makes a supernode runs this in-process: it keeps a session with each of
//! its leaves, indexes what they share with tantivy, and answers searches.
//!
//! * [`index`] — the tantivy index and the in-memory catalog behind hits.
//! * [`Supernode`] — admission, leaf sessions, search, the commit timer.

pub mod hosts;
pub mod index;
pub mod overlay;
pub mod possession;
pub mod relay;
pub mod tags;
pub mod votes;

use canopy_common::sync::{Lock, ReadWrite};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use canopy_common::net::{read_frame, write_frame, NetError};
use canopy_common::proto::birthday::Traits;
use canopy_common::proto::budget::{
    Budgets, MAX_PUNCHERS, MAX_SEARCHERS, PUNCHES_PER_SECOND, PUNCH_BURST, SEARCHES_PER_SECOND, SEARCH_BURST,
};
use canopy_common::proto::credence::SignedVote;
use canopy_common::proto::frame::batches;
use canopy_common::proto::search::FileTags;
use canopy_common::proto::search::{PublishError, MAX_HITS};
use canopy_common::proto::wire::{LinkNotice, LinkOffer};
use canopy_common::proto::{
    ContentHash, Hello, Hit, LeafUpdate, PeerAddr, PeerId, Query, Response, SessionNotice, MAX_CONTROL_FRAME,
};
use quinn::{RecvStream, SendStream};
use tokio::sync::{mpsc, watch};

pub use index::{FileIndex, IndexError, LeafId};
pub use overlay::{Overlay, OverlayConfig};

/// Most supernodes offered to a leaf we turn away.
const MAX_REFERRALS: usize = 8;
/// How often leaves hear of other supernodes they could fall back on.
const TELL_LEAVES_EVERY: Duration = Duration::from_secs(2);

/// How a supernode runs.
#[derive(Debug, Clone)]
pub struct SupernodeConfig {
    /// Leaves served at once; more are turned away with referrals.
    pub max_leaves: usize,
    /// Files one leaf may publish.
    pub max_files_per_leaf: usize,
    /// Files the index holds at most, over all leaves (the operator's
    /// memory and disk budget); publishes beyond it are refused.
    pub max_indexed_files: usize,
    /// Where the index lives (`None`: in memory).
    pub index_dir: Option<PathBuf>,
    /// Memory for tantivy's indexing buffers, in bytes.
    pub writer_memory: usize,
    /// How often pending index changes are committed. A new file is
    /// searchable within about this long.
    pub commit_interval: Duration,
    /// Links to other supernodes and query flooding.
    pub overlay: OverlayConfig,
    /// Forwarding for pairs of peers that cannot reach each other.
    pub relay: relay::RelayConfig,
    /// Searches one peer may start per second (bursts of twice as many);
    /// more are answered `Busy`. A person types a few a minute; a
    /// benchmark's single asker, or a gateway searching for many users,
    /// needs more.
    pub searches_per_peer: f64,
    /// Checks that leaves hold what they publish.
    pub possession: possession::PossessionConfig,
}

impl SupernodeConfig {
    /// Settings sized for this machine: about 100 leaves per GiB of memory
    /// (each leaf's thousand files cost well under 1 MB indexed), between 50
    /// and 5,000.
    pub fn for_this_machine(index_dir: Option<PathBuf>) -> Self {
        // Unknown memory (sysinfo cannot read it here): assume a modest 2 GiB.
        let gib = match sysinfo::System::new() {
            Ok(mut system) => {
                system.refresh_memory();
                system.total_memory() as f64 / (1u64 << 30) as f64
            }
            Err(_) => 2.0,
        };
        SupernodeConfig {
            max_leaves: ((gib * 100.0) as usize).clamp(50, 5000),
            max_files_per_leaf: 10_000,
            max_indexed_files: 2_000_000,
            index_dir,
            writer_memory: 64 << 20,
            commit_interval: Duration::from_millis(250),
            overlay: OverlayConfig::default(),
            relay: relay::RelayConfig::default(),
            searches_per_peer: SEARCHES_PER_SECOND,
            possession: possession::PossessionConfig::default(),
        }
    }
}

/// Why a supernode could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupernodeError {
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Why a leaf's session ended, other than the leaf leaving.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("handed on: this supernode is stepping down")]
    SteppingDown,
    #[error("publish refused: {0}")]
    Refused(PublishError),
    #[error("dropped: proof-of-possession checks failed in a row (the last: {last})")]
    FailedChecks { last: possession::CheckError },
}

/// A running supernode.
pub struct Supernode {
    config: SupernodeConfig,
    index: Arc<FileIndex>,
    sessions: Mutex<HashMap<PeerId, Session>>,
    next_leaf: AtomicU32,
    /// Other supernodes we know, offered to leaves we cannot take.
    referrals: RwLock<Vec<PeerAddr>>,
    overlay: OnceLock<Arc<Overlay>>,
    /// Searches per leaf, so one leaf's storm cannot starve the others.
    search_budgets: Mutex<Budgets<PeerId>>,
    /// Pushes and punches per asker: each one makes a leaf dial out.
    punch_budgets: Mutex<Budgets<PeerId>>,
    /// Reports per downloader: each one may cost a leaf a check.
    report_budgets: Mutex<Budgets<PeerId>>,
    /// The clock the budgets run on.
    started: Instant,
    relay: relay::Relay,
    committer: tokio::task::JoinHandle<()>,
    /// Set when the supernode steps down: sessions hand their leaves on
    /// and end, links close.
    stepping_down: watch::Sender<bool>,
    /// Leaves dropped for failing proof-of-possession checks, until when.
    banned: Mutex<HashMap<PeerId, Instant>>,
    /// Checks running at once, over all leaves.
    checking: tokio::sync::Semaphore,
    possession_stats: possession::PossessionStats,
    /// Leaves' votes on files, for searchers.
    votes: Arc<Mutex<votes::VoteCache>>,
    /// Tags of files from afar, for searchers.
    tags: Arc<Mutex<tags::TagCache>>,
    /// Vote hand-ins per leaf: each costs signature checks.
    vote_budgets: Mutex<Budgets<PeerId>>,
}

/// One joined leaf, and how to ask it to push.
struct Session {
    leaf: LeafId,
    /// Where the leaf's packets come from, as we see them: behind a router,
    /// the router's address and the port it gave the leaf towards us.
    addr: SocketAddr,
    /// Our address as the leaf reached it (`None`: the socket cannot
    /// tell): where a relayed peer's address must point for the leaf.
    local_ip: Option<IpAddr>,
    /// Orders for the leaf (push, birthday punches), written on its
    /// session stream.
    orders: mpsc::Sender<SessionNotice>,
    /// What the leaf said of its router and features, if it did.
    traits: Option<Traits>,
    /// When we last dialed back the addresses it offered.
    addresses_tested: Option<Instant>,
    /// Files downloaders reported it did not serve: checked next.
    reported: mpsc::Sender<ContentHash>,
}

/// Reported files waiting for their check, per leaf; more are dropped
/// (the leaf is being checked anyway).
const REPORTS_QUEUED: usize = 4;

/// Proof-of-possession checks running at once, over all leaves: each holds
/// a stream and a little memory until its leaf answers or times out.
const MAX_CHECKS_AT_ONCE: usize = 32;

/// A leaf's offered addresses are dialed back at most this often.
pub const ADDRESS_TESTS_EVERY: Duration = Duration::from_secs(60);

impl std::fmt::Debug for Supernode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supernode")
            .field("leaves", &self.leaf_count())
            .field("documents", &self.index.len())
            .finish()
    }
}

impl Drop for Supernode {
    fn drop(&mut self) {
        self.committer.abort();
    }
}

impl Supernode {
    /// Creates the index and starts the commit timer. Call inside a tokio runtime.
    pub fn start(config: SupernodeConfig) -> Result<Arc<Supernode>, SupernodeError> {
        let index = Arc::new(match &config.index_dir {
            Some(dir) => FileIndex::create(dir, config.writer_memory)?,
            None => FileIndex::in_memory(config.writer_memory)?,
        });
        let committer = tokio::spawn(commit_loop(index.clone(), config.commit_interval));
        let search_budgets = Mutex::new(Budgets::new(
            config.searches_per_peer,
            config.searches_per_peer * SEARCH_BURST / SEARCHES_PER_SECOND,
            MAX_SEARCHERS,
        ));
        Ok(Arc::new(Supernode {
            relay: relay::Relay::new(config.relay.clone()),
            config,
            index,
            sessions: Mutex::new(HashMap::new()),
            next_leaf: AtomicU32::new(1),
            referrals: RwLock::new(Vec::new()),
            overlay: OnceLock::new(),
            search_budgets,
            punch_budgets: Mutex::new(Budgets::new(PUNCHES_PER_SECOND, PUNCH_BURST, MAX_PUNCHERS)),
            report_budgets: Mutex::new(Budgets::new(2.0, 10.0, MAX_PUNCHERS)),
            votes: Arc::default(),
            tags: Arc::default(),
            // One hand-in a second, bursts of five: a leaf hands in what it
            // voted since the last, a few votes a day for a person.
            vote_budgets: Mutex::new(Budgets::new(1.0, 5.0, MAX_PUNCHERS)),
            started: Instant::now(),
            committer,
            stepping_down: watch::channel(false).0,
            banned: Mutex::new(HashMap::new()),
            checking: tokio::sync::Semaphore::new(MAX_CHECKS_AT_ONCE),
            possession_stats: possession::PossessionStats::default(),
        }))
    }

    pub fn index(&self) -> &FileIndex {
        &self.index
    }

    /// Leaves this supernode takes at most.
    pub fn max_leaves(&self) -> usize {
        self.config.max_leaves
    }

    pub fn leaf_count(&self) -> usize {
        self.sessions.locked().len()
    }

    /// Sets the supernodes offered to leaves when we are full.
    pub fn set_referrals(&self, others: Vec<PeerAddr>) {
        *self.referrals.write_locked() = others;
    }

    fn referrals(&self) -> Vec<PeerAddr> {
        let mut others = self.referrals.read_locked().clone();
        if let Some(overlay) = self.overlay.get() {
            for other in overlay.referrals(MAX_REFERRALS) {
                if !others.iter().any(|o| o.id == other.id) {
                    others.push(other);
                }
            }
        }
        others.truncate(MAX_REFERRALS);
        others
    }

    /// Joins the supernode overlay through `endpoint`, starting from
    /// `bootstrap` and the persisted host cache.
    pub fn start_overlay(
        &self,
        config: OverlayConfig,
        endpoint: canopy_common::net::Endpoint,
        bootstrap: &[PeerAddr],
    ) -> Arc<Overlay> {
        self.overlay
            .get_or_init(|| {
                let notes = (self.votes.clone(), self.tags.clone());
                Overlay::start(config, endpoint, self.index.clone(), notes, bootstrap)
            })
            .clone()
    }

    pub fn overlay(&self) -> Option<&Arc<Overlay>> {
        self.overlay.get()
    }

    /// Whether [`Supernode::step_down`] was called.
    pub fn is_stepping_down(&self) -> bool {
        *self.stepping_down.borrow()
    }

    /// Stops being a supernode, handing the leaves on first: each session
    /// is told which other supernodes can take its leaf
    /// ([`SessionNotice::Leaving`]) and ends; then the overlay links close.
    /// Waits up to `grace` for the sessions to end. Leaves that try to join
    /// meanwhile are referred elsewhere.
    pub async fn step_down(&self, grace: Duration) {
        self.stepping_down.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.leaf_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(overlay) = self.overlay.get() {
            overlay.stop().await;
        }
        self.committer.abort();
    }

    /// Answers another supernode's request to link.
    /// Answers a [`canopy_common::proto::Request::Link`] (`offer` is
    /// `None`) or [`canopy_common::proto::Request::LinkWith`].
    pub async fn serve_link(
        &self,
        peer: PeerAddr,
        connection: &quinn::Connection,
        offer: Option<LinkOffer>,
        mut send: SendStream,
        recv: RecvStream,
    ) {
        match self.overlay.get() {
            Some(overlay) => overlay.accept_link(peer, connection, offer, send, recv).await,
            None => {
                let _ = write_frame(&mut send, &LinkNotice::Full { others: Vec::new() }).await;
                let _ = send.finish();
            }
        }
    }

    /// Whether `asker` may search now (5 a second, bursts of 10).
    fn may_search(&self, asker: PeerId) -> bool {
        self.search_budgets
            .locked()
            .take(asker, 1.0, self.started.elapsed())
    }

    /// Runs one leaf's session until the leaf leaves, breaks a limit or
    /// goes silent (the connection's idle timeout). Its files are dropped
    /// from hits the moment the session ends.
    ///
    /// `connection` is the leaf's: where it comes from may change while
    /// it stays (its router rebinds, quinn migrates the connection).
    pub async fn serve_leaf(
        &self,
        peer: PeerAddr,
        connection: &quinn::Connection,
        hello: Hello,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let local_ip = canopy_common::net::local_ip(connection);
        if let Some(until) = self.banned_until(peer.id) {
            let reason = format!(
                "dropped for failing proof-of-possession checks; try again in {} s",
                until.saturating_duration_since(Instant::now()).as_secs()
            );
            tracing::info!(leaf = ?peer, "turning away a leaf that failed its checks");
            let _ = write_frame(&mut send, &SessionNotice::Refused { reason }).await;
            let _ = send.finish();
            return;
        }
        let (orders, mut order_queue) = mpsc::channel::<SessionNotice>(16);
        let (reported, mut reports) = mpsc::channel::<ContentHash>(REPORTS_QUEUED);
        let admitted = {
            let mut sessions = self.sessions.locked();
            let full = (sessions.len() >= self.config.max_leaves
                || self.index.len() >= self.config.max_indexed_files)
                && !sessions.contains_key(&peer.id);
            if full || self.is_stepping_down() {
                None
            } else {
                let leaf = self.next_leaf.fetch_add(1, Ordering::Relaxed);
                // A reconnecting leaf replaces its old session.
                if let Some(old) = sessions.insert(
                    peer.id,
                    Session {
                        leaf,
                        addr: peer.addr,
                        local_ip,
                        orders,
                        traits: None,
                        addresses_tested: None,
                        reported,
                    },
                ) {
                    self.index.remove_leaf(old.leaf);
                }
                Some(leaf)
            }
        };
        let Some(leaf) = admitted else {
            let others = self.referrals();
            let notice = if self.is_stepping_down() {
                tracing::info!(leaf = ?peer, "referring a leaf elsewhere: stepping down");
                SessionNotice::Leaving { others }
            } else {
                tracing::info!(leaf = ?peer, "turning a leaf away: all {} slots taken", self.config.max_leaves);
                SessionNotice::Full { others }
            };
            let _ = write_frame(&mut send, &notice).await;
            let _ = send.finish();
            return;
        };
        self.index.add_leaf_with(leaf, peer, !hello.accepts_inbound);
        tracing::info!(leaf = ?peer, agent = %hello.agent, firewalled = !hello.accepts_inbound, "leaf joined");
        let outcome = tokio::select! {
            outcome = self.run_session(leaf, peer, connection, &mut send, &mut recv, &mut order_queue) => outcome,
            dropped = self.check_possession(leaf, peer, connection, &mut reports) => Err(dropped),
        };
        match &outcome {
            Ok(()) => tracing::info!(leaf = ?peer, "leaf left"),
            Err(reason @ SessionEnd::FailedChecks { .. }) => {
                tracing::info!(leaf = ?peer, %reason, "leaf dropped");
                let reason = reason.to_string();
                let _ = write_frame(&mut send, &SessionNotice::Refused { reason }).await;
                let _ = send.finish();
            }
            Err(reason) => tracing::info!(leaf = ?peer, %reason, "leaf session ended"),
        }
        self.remove_session(peer.id, leaf);
        self.off_the_runtime(move |index| index.remove_leaf(leaf)).await;
    }

    /// Forgets session `leaf` of `id`, unless a newer one replaced it.
    fn remove_session(&self, id: PeerId, leaf: LeafId) {
        let mut sessions = self.sessions.locked();
        if sessions.get(&id).is_some_and(|session| session.leaf == leaf) {
            sessions.remove(&id);
        }
    }

    /// Until when `id` is kept out for failing its checks, if it is.
    fn banned_until(&self, id: PeerId) -> Option<Instant> {
        let mut banned = self.banned.locked();
        let now = Instant::now();
        banned.retain(|_, until| *until > now);
        banned.get(&id).copied()
    }

    /// Checks, now and then, that leaf `leaf` holds what it publishes
    /// ([`possession`]), and at once a file downloaders `reports` it did
    /// not serve; a failed check takes that file out of the index.
    /// Returns only to drop the leaf, after failed checks in a row (it is
    /// then kept out for a while); never if checks are off.
    async fn check_possession(
        &self,
        leaf: LeafId,
        peer: PeerAddr,
        connection: &quinn::Connection,
        reports: &mut mpsc::Receiver<ContentHash>,
    ) -> SessionEnd {
        let config = &self.config.possession;
        if !config.enabled {
            return std::future::pending().await;
        }
        let mut strikes = possession::Strikes::default();
        let mut wait = config.first_after;
        loop {
            let reported = tokio::select! {
                _ = tokio::time::sleep(wait) => None,
                Some(hash) = reports.recv() => Some(hash),
            };
            wait = config.every;
            let file = match reported {
                Some(hash) => self.index.leaf_file(leaf, &hash).map(|size| (hash, size)),
                None => self
                    .index
                    .some_file(leaf, u64::from_le_bytes(canopy_common::net::random_bytes())),
            };
            let Some((hash, size)) = file else {
                continue;
            };
            let Ok(_turn) = self.checking.acquire().await else {
                return std::future::pending().await;
            };
            let outcome = possession::check(connection, hash, size).await;
            possession::count(&self.possession_stats, outcome.is_ok());
            if let Err(why) = &outcome {
                tracing::info!(leaf = ?peer, %hash, %why, "a leaf failed a proof-of-possession check; its entry is dropped");
                self.possession_stats
                    .entries_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.off_the_runtime(move |index| index.remove_files(leaf, &[hash]))
                    .await;
            }
            let drop_it = strikes.record(&outcome, config);
            wait = strikes.next_after(config);
            if let (true, Err(last)) = (drop_it, outcome) {
                self.possession_stats
                    .leaves_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.banned.locked().insert(peer.id, Instant::now() + config.ban);
                return SessionEnd::FailedChecks { last };
            }
        }
    }

    /// A downloader (`reporter`) says our leaf `source` did not serve
    /// `hash`. Nobody is believed: the file is checked next, if `source` is
    /// joined here and publishes it (`Some(true)`). `None`: the reporter is
    /// over its budget (2 a second, bursts of 10).
    pub fn report(&self, reporter: PeerId, hash: ContentHash, source: PeerId) -> Option<bool> {
        if !self
            .report_budgets
            .locked()
            .take(reporter, 1.0, self.started.elapsed())
        {
            return None;
        }
        let sessions = self.sessions.locked();
        let Some(session) = sessions.get(&source) else {
            return Some(false);
        };
        if self.index.leaf_file(session.leaf, &hash).is_none() {
            return Some(false);
        }
        tracing::info!(leaf = ?source, %hash, by = ?reporter, "a downloader reports a leaf did not serve a file; checking it");
        Some(session.reported.try_send(hash).is_ok())
    }

    /// Keeps the votes joined leaf `leaf` hands in on files (its own, well
    /// signed: see [`votes::VoteCache::hand_in`]): how many were kept, or
    /// `Some(None)` when it is over its budget. `None` if it is not joined
    /// here.
    pub fn hand_in_votes(&self, leaf: PeerId, votes: &[SignedVote], now_unix: u64) -> Option<Option<u32>> {
        if !self.sessions.locked().contains_key(&leaf) {
            return None;
        }
        if !self.vote_budgets.locked().take(leaf, 1.0, self.started.elapsed()) {
            return Some(None);
        }
        Some(Some(self.votes.locked().hand_in(leaf, votes, now_unix)))
    }

    /// Votes kept on `files`, at most a few per file, for a searcher.
    pub fn votes_for(&self, files: &[ContentHash]) -> Vec<SignedVote> {
        self.votes.locked().votes_for(files)
    }

    /// The tags of those of `files` that have some: from the index for
    /// files indexed here, else as they came with hits from afar.
    pub fn tags_for(&self, files: &[ContentHash]) -> Vec<FileTags> {
        let mut tags = self.index.tags_for(files);
        let missing: Vec<ContentHash> = (files.iter())
            .filter(|hash| !tags.iter().any(|known| known.hash == **hash))
            .copied()
            .collect();
        tags.extend(self.tags.locked().tags_for(&missing));
        tags
    }

    /// What the proof-of-possession checks found so far.
    pub fn possession_stats(&self) -> &possession::PossessionStats {
        &self.possession_stats
    }

    /// Keeps up with a leaf whose router gave it a new outside address
    /// mid-session (a line reconnect, a mapping that expired): quinn
    /// migrates the connection, and we move the address that punches,
    /// relays and hits aim at, which would otherwise point at the old one.
    fn follow_rebinding(&self, leaf: LeafId, id: PeerId, connection: &quinn::Connection) {
        let now = canopy_common::net::remote_addr(connection);
        let mut sessions = self.sessions.locked();
        let Some(session) = sessions.get_mut(&id).filter(|session| session.leaf == leaf) else {
            return;
        };
        if session.addr != now {
            tracing::info!(leaf = ?id, was = %session.addr, now = %now, "a leaf's router gave it a new address");
            session.addr = now;
            self.index.move_leaf(leaf, PeerAddr::new(id, now));
        }
    }

    /// Runs index work (tantivy's writer may block while it flushes a
    /// segment) on a blocking thread, so a supernode busy indexing
    /// thousands of leaves' files still answers QUIC in time: on two cores,
    /// two workers stuck in the writer would let every connection idle out.
    async fn off_the_runtime(&self, work: impl FnOnce(&FileIndex) + Send + 'static) {
        let index = self.index.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || work(&index)).await {
            tracing::warn!(%error, "index update failed");
        }
    }

    /// Asks our leaf `leaf` to connect out to `requester`, which cannot
    /// connect to it. `false` if no such leaf is joined here.
    pub fn push(&self, leaf: PeerId, requester: PeerAddr) -> bool {
        self.order(leaf, SessionNotice::Push { requester })
    }

    /// Sends our leaf `leaf` an order on its session. `false` if no such
    /// leaf is joined here (or its queue is full).
    pub fn order(&self, leaf: PeerId, notice: SessionNotice) -> bool {
        let sessions = self.sessions.locked();
        match sessions.get(&leaf) {
            Some(session) => session.orders.try_send(notice).is_ok(),
            None => false,
        }
    }

    /// Records that joined leaf `leaf` does (not) accept inbound
    /// connections now, as it tested again. `false` if it is not joined
    /// here.
    pub fn note_reach(&self, leaf: PeerId, accepts_inbound: bool) -> bool {
        let Some(joined) = self.sessions.locked().get(&leaf).map(|session| session.leaf) else {
            return false;
        };
        tracing::info!(leaf = ?leaf, firewalled = !accepts_inbound, "a leaf's reachability changed");
        self.index.set_firewalled(joined, !accepts_inbound);
        true
    }

    /// Whether joined leaf `leaf` may have offered addresses tested now:
    /// once per [`ADDRESS_TESTS_EVERY`], as each test dials out. `None` if
    /// it is not joined here.
    pub fn may_test_addresses(&self, leaf: PeerId) -> Option<bool> {
        let mut sessions = self.sessions.locked();
        let session = sessions.get_mut(&leaf)?;
        let now = Instant::now();
        let may = session
            .addresses_tested
            .is_none_or(|at| now.duration_since(at) >= ADDRESS_TESTS_EVERY);
        if may {
            session.addresses_tested = Some(now);
        }
        Some(may)
    }

    /// Lists joined leaf `leaf` at `also` too (addresses of its other
    /// family a stranger reached). `false` if it is not joined here.
    pub fn list_also(&self, leaf: PeerId, also: Vec<SocketAddr>) -> bool {
        let Some(joined) = self.sessions.locked().get(&leaf).map(|session| session.leaf) else {
            return false;
        };
        tracing::info!(leaf = ?leaf, ?also, "a leaf's other addresses were tested");
        self.index.set_also(joined, also);
        true
    }

    /// Records what joined leaf `leaf` says of itself. `false` if it is not
    /// joined here.
    pub fn note_traits(&self, leaf: PeerId, traits: Traits) -> bool {
        match self.sessions.locked().get_mut(&leaf) {
            Some(session) => {
                session.traits = Some(traits);
                true
            }
            None => false,
        }
    }

    /// What joined leaf `leaf` said of itself, if anything.
    pub fn leaf_traits(&self, leaf: PeerId) -> Option<Traits> {
        self.sessions
            .locked()
            .get(&leaf)
            .and_then(|session| session.traits)
    }

    /// Whether `asker` may have a leaf pushed or punched now (2 a second,
    /// bursts of 5).
    pub fn may_push(&self, asker: PeerId) -> bool {
        self.punch_budgets
            .locked()
            .take(asker, 1.0, self.started.elapsed())
    }

    /// Where leaf `leaf`'s packets come from as we see them, and our IP as
    /// it reached us, if it is joined here: the only address a hole punch
    /// or a relay is ever aimed at, so a peer cannot make others send
    /// packets to a third party.
    pub fn leaf_route(&self, leaf: PeerId) -> Option<(SocketAddr, Option<IpAddr>)> {
        self.sessions
            .locked()
            .get(&leaf)
            .map(|session| (session.addr, session.local_ip))
    }

    /// The relay for leaves that nothing else reaches.
    pub fn relay(&self) -> &relay::Relay {
        &self.relay
    }

    async fn run_session(
        &self,
        leaf: LeafId,
        peer: PeerAddr,
        connection: &quinn::Connection,
        send: &mut SendStream,
        recv: &mut RecvStream,
        order_queue: &mut mpsc::Receiver<SessionNotice>,
    ) -> Result<(), SessionEnd> {
        let max_files = self.config.max_files_per_leaf;
        write_frame(
            send,
            &SessionNotice::Welcome {
                max_files: max_files as u32,
            },
        )
        .await?;
        let mut tell_others = tokio::time::interval(TELL_LEAVES_EVERY);
        let mut told: Vec<PeerAddr> = Vec::new();
        let mut stepping_down = self.stepping_down.subscribe();
        loop {
            // One read per frame, kept across the other events: dropping a
            // half-finished read would lose bytes of the stream.
            let read = read_frame::<LeafUpdate>(recv, MAX_CONTROL_FRAME);
            tokio::pin!(read);
            let update = loop {
                tokio::select! {
                    update = &mut read => break update,
                    _ = tell_others.tick() => {
                        self.follow_rebinding(leaf, peer.id, connection);
                        // Leaves keep a second supernode and a fallback list.
                        let others = self.referrals();
                        if !others.is_empty() && others != told {
                            write_frame(send, &SessionNotice::Supernodes { others: others.clone() }).await?;
                            told = others;
                        }
                    }
                    Some(order) = order_queue.recv() => {
                        write_frame(send, &order).await?;
                    }
                    _ = stepped_down(&mut stepping_down) => {
                        let others = self.referrals();
                        let _ = write_frame(send, &SessionNotice::Leaving { others }).await;
                        let _ = send.finish();
                        return Err(SessionEnd::SteppingDown);
                    }
                }
            };
            let update = match update {
                Ok(update) => update,
                Err(NetError::Truncated) => return Ok(()),
                Err(error) => return Err(SessionEnd::Net(error)),
            };
            match update {
                LeafUpdate::Add { files } => {
                    let total = self.index.leaf_files(leaf) + files.len();
                    let indexed = self.index.len() + files.len();
                    let refusal = if total > max_files {
                        Some(PublishError::TooManyFiles {
                            count: total,
                            max: max_files,
                        })
                    } else if indexed > self.config.max_indexed_files {
                        Some(PublishError::IndexFull(self.config.max_indexed_files))
                    } else {
                        files.iter().find_map(|file| file.check().err())
                    };
                    if let Some(refusal) = refusal {
                        let reason = refusal.to_string();
                        let _ = write_frame(send, &SessionNotice::Refused { reason }).await;
                        let _ = send.finish();
                        return Err(SessionEnd::Refused(refusal));
                    }
                    self.off_the_runtime(move |index| index.add_files(leaf, &files))
                        .await;
                }
                LeafUpdate::Remove { hashes } => {
                    self.off_the_runtime(move |index| index.remove_files(leaf, &hashes))
                        .await
                }
            }
        }
    }

    /// Answers a search on `send`: hits in frames, then [`Response::EndOfHits`].
    pub async fn answer_search(
        &self,
        asker: PeerId,
        query: Query,
        send: &mut SendStream,
    ) -> Result<(), NetError> {
        if let Err(refusal) = query.check() {
            write_frame(send, &Response::bad_request(refusal.to_string())).await?;
            return Ok(());
        }
        if !self.may_search(asker) {
            // Busy, not refused: the asker waits a budget's refill and asks again.
            let retry_after_ms = (1000.0 / self.config.searches_per_peer).ceil() as u32;
            write_frame(send, &Response::Busy { retry_after_ms }).await?;
            return Ok(());
        }
        if let Some(overlay) = self.overlay.get() {
            return overlay.search(query, send).await;
        }
        let hits = self.search(query).await;
        for hits in batches(&hits, MAX_CONTROL_FRAME) {
            write_frame(send, &Response::Hits { hits }).await?;
        }
        write_frame(send, &Response::EndOfHits).await
    }

    /// Searches the index (on a blocking thread: a query may take milliseconds).
    pub async fn search(&self, mut query: Query) -> Vec<Hit> {
        query.max_hits = query.max_hits.clamp(1, MAX_HITS);
        let index = self.index.clone();
        let result = tokio::task::spawn_blocking(move || index.search(&query)).await;
        match result {
            Ok(Ok(hits)) => hits,
            Ok(Err(error)) => {
                tracing::warn!(%error, "search failed");
                Vec::new()
            }
            Err(error) => {
                tracing::warn!(%error, "search task failed");
                Vec::new()
            }
        }
    }
}

/// Resolves once `flag` is (or becomes) true; pending forever if its
/// sender is gone first.
pub(crate) async fn stepped_down(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn commit_loop(index: Arc<FileIndex>, interval: Duration) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        let index = index.clone();
        match tokio::task::spawn_blocking(move || index.commit_if_dirty()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "index commit failed"),
            Err(error) => tracing::warn!(%error, "index commit task failed"),
        }
    }
}
