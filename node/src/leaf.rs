//! The leaf side of the two-tier network: stay joined to a supernode and
//! keep it told what this node shares.
//!
//! The session is one QUIC stream: `Join`, the supernode's welcome, the
//! full file list in frame-sized pieces, then only changes, checked once a
//! second against what was published. QUIC keep-alives keep it open; if the
//! supernode goes away the leaf notices within the idle timeout and tries
//! the next supernode it knows, with a growing pause between rounds.
//!
//! Which supernode: the leaf sizes up a few it knows at once (QUIC
//! handshakes in parallel) and joins the one with the shortest round trip,
//! as KaZaA and eMule clients ranked servers by ping. Its searches then go
//! over the live session connection with the shortest round trip
//! ([`SessionLinks`]): no new handshake, and the nearest supernode. With a
//! query's first hit two supernode hops away at best, the leaf's own hop is
//! the one part of its wait it can choose.

use canopy_common::sync::Lock;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use canopy_common::net::{ask, read_frame, write_frame, Endpoint, NetError};
use canopy_common::proto::birthday::{Traits, FEATURE_BIRTHDAY};
use canopy_common::proto::frame::{batches, MAX_CONTROL_FRAME};
use canopy_common::proto::nat;
use canopy_common::proto::{
    ContentHash, FileEntry, FileKind, Hello, LeafUpdate, PeerAddr, PeerId, Request, Response, SessionNotice,
};
use tokio::sync::watch;

use crate::serve::serve_connection;
use crate::share::{SharedFile, Shares};
use crate::state::NodeState;

/// How often the shares are compared with what the supernode was told.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Which supernodes the leaf is joined to, and how many files each has been told of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafStatus {
    pub joined: BTreeMap<PeerId, (PeerAddr, usize)>,
    /// Why the last attempt failed, while no supernode is joined.
    pub last_error: Option<String>,
}

impl LeafStatus {
    /// Whether at least one supernode is joined and every joined one was
    /// told of exactly `files` files.
    pub fn published(&self, files: usize) -> bool {
        !self.joined.is_empty() && self.joined.values().all(|(_, published)| *published == files)
    }

    pub fn supernodes(&self) -> Vec<PeerAddr> {
        self.joined.values().map(|(addr, _)| *addr).collect()
    }
}

/// Supernodes to try, shared by the leaf's sessions.
struct Pool {
    candidates: Vec<PeerAddr>,
    in_use: HashSet<PeerId>,
    failed: HashMap<PeerId, Instant>,
}

impl Pool {
    fn add(&mut self, others: impl IntoIterator<Item = PeerAddr>) {
        for other in others {
            if !self.candidates.iter().any(|known| known.id == other.id) {
                self.candidates.push(other);
            }
        }
    }

    /// Up to `count` candidates no other session uses and that did not
    /// just fail, in the order they were learned; held until released.
    fn take(&mut self, count: usize) -> Vec<PeerAddr> {
        self.failed.retain(|_, when| when.elapsed() < RETRY_AFTER);
        let picks: Vec<PeerAddr> = self
            .candidates
            .iter()
            .filter(|c| !self.in_use.contains(&c.id) && !self.failed.contains_key(&c.id))
            .take(count)
            .copied()
            .collect();
        self.in_use.extend(picks.iter().map(|pick| pick.id));
        picks
    }

    /// Gives back a candidate that was sized up but not joined.
    fn release(&mut self, candidate: &PeerId, failed: bool) {
        self.in_use.remove(candidate);
        if failed {
            self.failed.insert(*candidate, Instant::now());
        }
    }
}

/// The leaf's live session connections, by supernode: searches go over
/// them, nearest first.
#[derive(Clone, Default)]
pub struct SessionLinks(Arc<Mutex<HashMap<PeerId, (PeerAddr, quinn::Connection)>>>);

impl SessionLinks {
    fn insert(&self, supernode: PeerAddr, connection: quinn::Connection) {
        self.0.locked().insert(supernode.id, (supernode, connection));
    }

    fn remove(&self, supernode: &PeerId) {
        self.0.locked().remove(supernode);
    }

    /// Live sessions, shortest round trip first.
    pub fn nearest_first(&self) -> Vec<(PeerAddr, quinn::Connection)> {
        let mut links: Vec<_> = self
            .0
            .locked()
            .values()
            .filter(|(_, connection)| connection.close_reason().is_none())
            .cloned()
            .collect();
        links.sort_by_key(|(_, connection)| connection.rtt());
        links
    }
}

impl std::fmt::Debug for SessionLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let links = self.nearest_first();
        f.debug_list()
            .entries(
                links
                    .iter()
                    .map(|(addr, connection)| (addr.id.short(), connection.rtt())),
            )
            .finish()
    }
}

/// A supernode that failed is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How a leaf joins the network.
#[derive(Debug, Clone)]
pub struct LeafSettings {
    /// Supernodes to try first (more are learned from them).
    pub supernodes: Vec<PeerAddr>,
    /// Supernodes to stay joined to at once.
    pub sessions: usize,
    /// Where the supernode cache lives.
    pub data_dir: PathBuf,
    /// Whether peers can connect to us, as the node started; if not, they
    /// ask our supernode to have us connect to them (a push), punch or
    /// relay. Re-checks may change it ([`crate::reach::recheck`]).
    pub reachable: bool,
    /// Whether this node accepts connections at all (`--no-inbound` says
    /// not): a re-check offers it as a direct source only if so.
    pub may_accept: bool,
    /// How often each session asks its supernode where it sees us; an
    /// address that changed has the node test its reachability again.
    pub reobserve_every: Duration,
    /// Where the live session connections are kept for searches.
    pub links: SessionLinks,
}

impl LeafSettings {
    /// These settings, joining `supernodes`; `None` when there is nothing
    /// to join or no session is wanted.
    pub fn joining(&self, supernodes: Vec<PeerAddr>) -> Option<LeafSettings> {
        (!supernodes.is_empty() && self.sessions > 0).then(|| LeafSettings {
            supernodes,
            ..self.clone()
        })
    }
}

/// Keeps `settings.sessions` supernode sessions up (two by default: if one
/// supernode dies, the leaf is still reachable through the other while it
/// finds a replacement). Runs until dropped.
pub async fn run(
    endpoint: Endpoint,
    context: Arc<NodeState>,
    settings: LeafSettings,
    status: Arc<watch::Sender<LeafStatus>>,
) {
    let pool = Arc::new(Mutex::new(Pool {
        candidates: settings.supernodes.clone(),
        in_use: HashSet::new(),
        failed: HashMap::new(),
    }));
    let settings = Arc::new(settings);
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..settings.sessions.max(1) {
        let (endpoint, context, pool, settings, status) = (
            endpoint.clone(),
            context.clone(),
            pool.clone(),
            settings.clone(),
            status.clone(),
        );
        slots.spawn(async move {
            loop {
                let candidates = pool.locked().take(canopy_common::proto::nearest::SIZE_UP);
                if candidates.is_empty() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                let (supernode, connection) = match nearest(&endpoint, &candidates, &pool).await {
                    Ok(pick) => pick,
                    Err(error) => {
                        tracing::info!(%error, "no supernode answered");
                        status.send_modify(|s| s.last_error = Some(error.to_string()));
                        continue;
                    }
                };
                settings.links.insert(supernode, connection.clone());
                let outcome = session(
                    &endpoint, &context, supernode, connection, &settings, &status, &pool,
                )
                .await;
                settings.links.remove(&supernode.id);
                status.send_modify(|s| {
                    s.joined.remove(&supernode.id);
                });
                let mut pool = pool.locked();
                pool.in_use.remove(&supernode.id);
                pool.failed.insert(supernode.id, Instant::now());
                match outcome {
                    Ok(Referral(others)) => pool.add(others),
                    Err(error) => {
                        tracing::info!(supernode = ?supernode, %error, "supernode session ended");
                        status.send_modify(|s| s.last_error = Some(error.to_string()));
                    }
                }
            }
        });
    }
    while slots.join_next().await.is_some() {}
}

/// A supernode that was full, and whom it suggested instead.
struct Referral(Vec<PeerAddr>);

/// Why a leaf could not join a supernode, or why its session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Every candidate failed; each with its reason.
    #[error("no supernode answered: {0}")]
    NoAnswer(String),
    #[error("cannot open the session stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    #[error("the session stream failed: {0}")]
    Stream(#[from] NetError),
    #[error("{supernode:?} did not accept us as a leaf ({source})")]
    NotAccepted { supernode: PeerAddr, source: NetError },
    #[error("refused: {0}")]
    Refused(String),
    #[error("the supernode spoke before welcoming us")]
    SpokeFirst,
    #[error("the supernode refused our files: {0}")]
    FilesRefused(String),
    #[error("unexpected notice {0:?}")]
    Unexpected(Box<SessionNotice>),
    /// A supernode from before `Request::Reach`, or one that did not
    /// answer: the leaf joins again with a `Hello` that says it.
    #[error("the supernode did not note our reachability ({0}); joining again")]
    ReachNotNoted(String),
}

/// Joins the nearest candidate that answers; the others go back to the
/// pool (marked failed if they did not answer).
async fn nearest(
    endpoint: &Endpoint,
    candidates: &[PeerAddr],
    pool: &Mutex<Pool>,
) -> Result<(PeerAddr, quinn::Connection), SessionError> {
    let found = endpoint
        .connect_nearest(candidates, 1, Duration::from_secs(10))
        .await;
    let mut pool = pool.locked();
    for farther in &found.farther {
        pool.release(&farther.id, false);
    }
    for (failed, _) in &found.failed {
        pool.release(&failed.id, true);
    }
    drop(pool);
    match found.kept.into_iter().next() {
        Some((supernode, connection)) => {
            tracing::debug!(supernode = ?supernode, rtt = ?connection.rtt(), sized_up = candidates.len(), "nearest supernode");
            Ok((supernode, connection))
        }
        None => Err(SessionError::NoAnswer(
            found
                .failed
                .iter()
                .map(|(candidate, reason)| format!("{}: {reason}", candidate.id.short()))
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// One session over `connection`; returns when it ends.
async fn session(
    endpoint: &Endpoint,
    context: &Arc<NodeState>,
    supernode: PeerAddr,
    connection: quinn::Connection,
    settings: &LeafSettings,
    status: &watch::Sender<LeafStatus>,
    pool: &Mutex<Pool>,
) -> Result<Referral, SessionError> {
    let seen = crate::reach::observe_through(endpoint, context, &connection).await;
    let (mut send, mut recv) = connection.open_bi().await?;
    // A private or unspecified address means nothing to a supernode
    // outside our network: it indexes us where it sees us instead.
    let listen = Some(endpoint.local_addr())
        .filter(|addr| nat::publishable(*addr, supernode.addr.ip()))
        .into_iter()
        .collect();
    let accepts_inbound = context.reach.locked().offered_direct(settings.reachable);
    let hello = Hello {
        listen,
        accepts_inbound,
        agent: format!("canopy/{}", env!("CARGO_PKG_VERSION")),
    };
    write_frame(&mut send, &Request::Join(hello)).await?;
    // A non-supernode answers with a Response; a supernode with a notice.
    let first: Result<SessionNotice, _> = read_frame(&mut recv, MAX_CONTROL_FRAME).await;
    match first {
        Ok(SessionNotice::Welcome { max_files }) => {
            tracing::info!(supernode = ?supernode, "joined supernode");
            crate::hostcache::remember(&settings.data_dir, supernode);
            let joined = Joined {
                connection: &connection,
                endpoint,
                context,
                supernode,
                settings,
                status,
                pool,
            };
            // The supernode checks on this connection that we hold what we
            // publish (`Request::Prove`), as any peer may ask us anything.
            let serving = tokio::spawn(serve_connection(connection.clone(), context.clone()));
            // A change of membership (a new key, a shorter allow-list)
            // ends the session if this supernode no longer qualifies.
            let ended = endpoint
                .guard(
                    &connection,
                    supernode.id,
                    joined.publish(&mut send, &mut recv, max_files as usize, (seen, accepts_inbound)),
                )
                .await;
            serving.abort();
            ended
        }
        Ok(SessionNotice::Full { others }) => Ok(Referral(others)),
        Ok(SessionNotice::Refused { reason }) => Err(SessionError::Refused(reason)),
        Ok(SessionNotice::Leaving { others }) => Ok(Referral(others)),
        Ok(
            SessionNotice::Supernodes { .. } | SessionNotice::Push { .. } | SessionNotice::Birthday { .. },
        ) => Err(SessionError::SpokeFirst),
        Err(source) => Err(SessionError::NotAccepted { supernode, source }),
    }
}

/// A session after the welcome.
struct Joined<'a> {
    connection: &'a quinn::Connection,
    endpoint: &'a Endpoint,
    context: &'a Arc<NodeState>,
    supernode: PeerAddr,
    settings: &'a LeafSettings,
    status: &'a watch::Sender<LeafStatus>,
    pool: &'a Mutex<Pool>,
}

impl Joined<'_> {
    /// Keeps the supernode told what we share and how we are reached, and
    /// answers its notices, until the session ends. `(seen, told_direct)`:
    /// where the supernode saw us when we joined, and what we told it.
    async fn publish(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        max_files: usize,
        (seen, mut told_direct): (Option<std::net::SocketAddr>, bool),
    ) -> Result<Referral, SessionError> {
        let mut published = Published::new(max_files);
        let mut timer = tokio::time::interval(SYNC_INTERVAL);
        // The first look at once: it offers our IPv6 address, if any.
        let mut reobserve = tokio::time::interval(self.settings.reobserve_every);
        let started = Instant::now();
        // At most one look (and re-check) at a time: a slow dial-back must
        // not pile up behind the next tick.
        let mut looking: Option<tokio::task::JoinHandle<()>> = None;
        let seen = Arc::new(Mutex::new(seen));
        // Our address of the other family the supernode last tested.
        let offered: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
        // What we last told the supernode of our router: told at once, and
        // again whenever what peers see of us changes the verdict.
        let mut told_symmetric = None;
        let notices = async {
            loop {
                match read_frame::<SessionNotice>(recv, MAX_CONTROL_FRAME).await {
                    Ok(SessionNotice::Leaving { others }) => {
                        tracing::info!(supernode = ?self.supernode, "supernode is stepping down; moving on");
                        return Ok(Referral(others.into_iter().take(16).collect()));
                    }
                    Ok(SessionNotice::Supernodes { others }) => {
                        // Fallbacks for when this supernode goes, and for a
                        // second session.
                        self.pool.locked().add(others.into_iter().take(16));
                    }
                    Ok(SessionNotice::Push { requester }) => self.push_to(requester),
                    Ok(SessionNotice::Birthday { requester, spray }) => self.birthday(requester, spray),
                    Ok(SessionNotice::Refused { reason }) => return Err(SessionError::FilesRefused(reason)),
                    Ok(other) => return Err(SessionError::Unexpected(Box::new(other))),
                    Err(error) => return Err(error.into()),
                }
            }
        };
        tokio::pin!(notices);
        loop {
            tokio::select! {
                ended = &mut notices => return ended,
                _ = timer.tick() => {}
                _ = reobserve.tick() => {
                    if looking.as_ref().is_none_or(|task| task.is_finished()) {
                        looking = Some(self.look_again(seen.clone(), offered.clone(), started));
                    }
                    continue;
                }
            }
            let (symmetric, direct) = {
                let reach = self.context.reach.locked();
                (reach.symmetric(), reach.offered_direct(self.settings.reachable))
            };
            if told_symmetric != Some(symmetric) {
                told_symmetric = Some(symmetric);
                tokio::spawn(tell_traits(self.connection.clone(), symmetric));
            }
            if told_direct != direct {
                tell_reach(self.connection, direct).await?;
                told_direct = direct;
            }
            let (added, removed) = published.changes(&self.context.shares);
            if !removed.is_empty() {
                write_frame(send, &LeafUpdate::Remove { hashes: removed }).await?;
            }
            // As many entries per frame as fit: a name and tags can make
            // one entry kilobytes long.
            for files in batches(&added, MAX_CONTROL_FRAME) {
                write_frame(send, &LeafUpdate::Add { files }).await?;
            }
            let count = published.len();
            let supernode = self.supernode;
            self.status.send_if_modified(|s| {
                let entry = (supernode, count);
                let changed = s.joined.get(&supernode.id) != Some(&entry) || s.last_error.is_some();
                s.joined.insert(supernode.id, entry);
                s.last_error = None;
                changed
            });
        }
    }

    /// Asks the supernode where it sees us now (`seen`: its answer last
    /// time) and, if that changed or a periodic re-check is due, has it
    /// dial us back: the next sync tick tells it the outcome. `seen` moves
    /// to the new address once a re-check got its answer, so a re-check
    /// the supernode could not run yet is asked for again next time. Our
    /// IPv6 address, if the session runs over IPv4, is offered for testing
    /// when it is new to this supernode (`offered`) or a re-check is due.
    fn look_again(
        &self,
        seen: Arc<Mutex<Option<std::net::SocketAddr>>>,
        offered: Arc<Mutex<Option<std::net::SocketAddr>>>,
        started: Instant,
    ) -> tokio::task::JoinHandle<()> {
        let (endpoint, context, connection) = (
            self.endpoint.clone(),
            self.context.clone(),
            self.connection.clone(),
        );
        let may_accept = self.settings.may_accept;
        tokio::spawn(async move {
            let now = crate::reach::observe_through(&endpoint, &context, &connection).await;
            let was = *seen.locked();
            let cause = crate::reach::recheck_cause(&context.reach.locked(), started, was, now);
            let settled = match cause {
                Some(cause) => crate::reach::recheck(&connection, &context, may_accept, cause).await,
                None => true,
            };
            if settled && now.is_some() {
                *seen.locked() = now;
            }
            let session = canopy_common::net::remote_addr(&connection);
            if let Some(other) = crate::reach::other_family_address(&endpoint, session) {
                let due = cause == Some(crate::reach::RecheckCause::Due);
                if (due || *offered.locked() != Some(other))
                    && crate::reach::offer_other_address(&connection, other).await
                {
                    *offered.locked() = Some(other);
                }
            }
        })
    }

    /// Someone who cannot reach us wants our files: we call them, then
    /// serve them on that connection as if they had called us.
    fn push_to(&self, requester: PeerAddr) {
        let (endpoint, context) = (self.endpoint.clone(), self.context.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(10), endpoint.connect(&requester)).await {
                Ok(Ok(connection)) => {
                    tracing::debug!(requester = ?requester, "pushed a connection");
                    serve_dialed(&endpoint, context, requester, connection).await;
                }
                Ok(Err(error)) => {
                    tracing::info!(requester = ?requester, %error, "cannot push to a requester")
                }
                Err(_) => tracing::info!(requester = ?requester, "cannot push to a requester: no answer"),
            }
        });
    }

    /// Our part in a birthday punch for a requester: spray probes at its
    /// IP (it dials us), or open ports towards it and dial it from the one
    /// its probe reaches. At most two at once: a supernode cannot make us
    /// spray without end.
    fn birthday(&self, requester: PeerAddr, spray: bool) {
        let Some(running) = crate::birthday::Running::start() else {
            tracing::info!(requester = ?requester, "declined a birthday punch: two are running");
            return;
        };
        let (endpoint, context) = (self.endpoint.clone(), self.context.clone());
        tokio::spawn(async move {
            if spray {
                crate::birthday::spray(&endpoint, requester.addr.ip()).await;
            } else if let Some(connection) = crate::birthday::open_and_dial(&endpoint, requester).await {
                tracing::debug!(requester = ?requester, "birthday punch: dialed from the port a probe reached");
                // The punch is over; serving the download is not one.
                drop(running);
                serve_dialed(&endpoint, context, requester, connection).await;
            }
        });
    }
}

/// Serves a requester on a connection we dialed for it, as if it had
/// called us.
async fn serve_dialed(
    endpoint: &Endpoint,
    context: Arc<NodeState>,
    requester: PeerAddr,
    connection: quinn::Connection,
) {
    endpoint
        .guard(
            &connection,
            requester.id,
            serve_connection(connection.clone(), context),
        )
        .await;
}

/// Tells the supernode our router's kind and that we take birthday
/// orders, so it can plan punches with us. An older supernode resets the
/// stream; it then keeps sending only the orders it always did.
async fn tell_traits(connection: quinn::Connection, symmetric: bool) {
    let traits = Request::Traits(Traits {
        symmetric,
        features: FEATURE_BIRTHDAY,
    });
    match tokio::time::timeout(Duration::from_secs(5), ask(&connection, &traits)).await {
        Ok(Ok(Response::TraitsNoted { .. })) => tracing::debug!(symmetric, "supernode noted our router"),
        _ => tracing::debug!("supernode did not note our router (an older version?)"),
    }
}

/// Tells the supernode whether peers can connect to us now. A supernode
/// from before `Reach` resets the stream: the session ends, and the leaf
/// joins again with a `Hello` that says it.
async fn tell_reach(connection: &quinn::Connection, accepts_inbound: bool) -> Result<(), SessionError> {
    let reach = Request::Reach { accepts_inbound };
    match tokio::time::timeout(Duration::from_secs(5), ask(connection, &reach)).await {
        Ok(Ok(Response::ReachNoted)) => {
            tracing::info!(accepts_inbound, "told our supernode how peers reach us now");
            Ok(())
        }
        Ok(Ok(other)) => Err(SessionError::ReachNotNoted(format!("it answered {other:?}"))),
        Ok(Err(error)) => Err(SessionError::ReachNotNoted(error.to_string())),
        Err(_) => Err(SessionError::ReachNotNoted("no answer".into())),
    }
}

/// What a supernode has been told we share, and how to tell it the rest.
pub struct Published {
    hashes: HashSet<ContentHash>,
    max_files: usize,
    warned: bool,
}

impl Published {
    pub fn new(max_files: usize) -> Self {
        Published {
            hashes: HashSet::new(),
            max_files,
            warned: false,
        }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Files to add and hashes to remove so the supernode matches `shares`
    /// (within its file limit); records them as told.
    pub fn changes(&mut self, shares: &Shares) -> (Vec<FileEntry>, Vec<ContentHash>) {
        let current: HashMap<ContentHash, SharedFile> =
            shares.list().into_iter().map(|f| (f.hash(), f)).collect();
        let removed: Vec<ContentHash> = self
            .hashes
            .iter()
            .filter(|h| !current.contains_key(h))
            .copied()
            .collect();
        for hash in &removed {
            self.hashes.remove(hash);
        }
        let mut added: Vec<FileEntry> = current
            .iter()
            .filter(|(hash, _)| !self.hashes.contains(hash))
            .map(|(_, file)| entry(file))
            .collect();
        let room = self.max_files.saturating_sub(self.hashes.len());
        if added.len() > room {
            if !self.warned {
                tracing::warn!(
                    shared = current.len(),
                    max = self.max_files,
                    "the supernode indexes only part of what we share"
                );
                self.warned = true;
            }
            added.truncate(room);
        }
        self.hashes.extend(added.iter().map(|file| file.hash));
        (added, removed)
    }
}

/// How a shared file is described to the supernode.
pub fn entry(file: &SharedFile) -> FileEntry {
    let mut name = file
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let max = canopy_common::proto::search::MAX_NAME_LEN;
    if name.len() > max {
        let mut cut = max;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    FileEntry {
        hash: file.hash(),
        size: file.size,
        kind: FileKind::from_name(&name),
        name,
        meta: file.meta.clone(),
    }
}
