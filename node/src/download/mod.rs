//! Multi-source, verified, resumable downloads.
//!
//! A [`Download`] fetches one file by content hash from every source it
//! knows at once:
//!
//! * each source runs its own task (`source`) that pulls block ranges from
//!   the shared [`Scheduler`], sized by that source's measured speed, with
//!   several requests in flight;
//! * every block is verified against the file's BLAKE3 tree before it is
//!   handed to the `part` writer, so no unverified byte reaches the disk,
//!   and a source that sends a bad block is banned for this download;
//! * sources may join at any time ([`Download::add_source`], or learned
//!   from other sources by source exchange); a source that fails, stalls or
//!   leaves has its blocks handed to the others;
//! * a killed download resumes from `PATH.part` and its state file.
//!
//! The first source to answer supplies the block layer and the file's last
//! block, which together prove the file's size; until then nothing is
//! written.

pub mod focus;
mod ledger;
#[cfg(test)]
mod model_tests;
mod part;
mod scheduler;
mod source;
mod traverse;
mod watchdog;

pub use part::{part_path, state_path, CHECKPOINT_BYTES, CHECKPOINT_INTERVAL};
pub use scheduler::{Scheduler, SourceId};

use canopy_common::sync::Lock;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use canopy_common::net::Endpoint;
use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::{ContentHash, PeerAddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::AbortHandle;

use crate::share::{PartialFile, SharedFile};
use crate::state::NodeState;
use ledger::Ledger;
use part::{WriteCommand, Writer};
use scheduler::RequestId;
use watchdog::{Reading, Verdict, Watchdog};

/// Tuning for one download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Sources connected at once; more wait in a queue.
    pub max_sources: usize,
    /// Requests kept open per source.
    pub requests_per_source: usize,
    /// A request that delivers nothing for this long (or four times the
    /// source's usual pace, if longer) is abandoned and its blocks reassigned.
    pub stall_timeout: Duration,
    /// How long to wait for a first or new source once none is left before
    /// giving up. Zero: give up as soon as every known source is gone.
    pub wait_for_sources: Duration,
    /// How many times in all a source that has served us is tried when it
    /// fails (connection lost, stalled, unreachable), waiting
    /// [`FIRST_RETRY`] and then twice as long each time, up to
    /// [`LONGEST_RETRY`]: a source that froze for a while, or a link that
    /// broke, is not given up for good. A source that sent bad data is
    /// never tried again.
    pub source_tries: u32,
    /// Try again, in the same way, sources that never served us (not
    /// reachable yet, or still hashing the file): a desktop app waits for
    /// them; a command fails fast.
    pub retry_unproven_sources: bool,
    /// The supernode that listed the sources, told of one that sends a
    /// block that fails verification or says it does not hold the file
    /// (`Request::Report`: it checks its leaf itself). A source reached
    /// through its supernode is reported to that one.
    pub report_to: Option<PeerAddr>,
}

/// The wait before a failed source is tried again the first time.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between two tries of one source.
pub const LONGEST_RETRY: Duration = Duration::from_secs(60);

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            max_sources: 32,
            requests_per_source: 4,
            stall_timeout: Duration::from_secs(3),
            wait_for_sources: Duration::ZERO,
            // As aria2c's --max-tries.
            source_tries: 5,
            retry_unproven_sources: false,
            report_to: None,
        }
    }
}

/// Why one source stopped contributing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceFailure {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("does not share this file")]
    NotFound,
    #[error("banned: {0}")]
    Banned(String),
    #[error("connection lost: {0}")]
    Gone(String),
    #[error("stalled repeatedly")]
    Stalled,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Why a download failed. The part file is kept in every case, so running
/// the same download again resumes it.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("no source could deliver {hash} ({}){}", describe_failures(.failures), describe_part(.part))]
    NoSources {
        hash: ContentHash,
        /// The part file, if any verified data was kept.
        part: Option<PathBuf>,
        failures: Vec<(PeerAddr, SourceFailure)>,
    },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the finished file does not match {hash} when read back from disk (disk error?); kept as {part}"
    )]
    DiskCheck { hash: ContentHash, part: PathBuf },
    /// Stopped by [`Download::pause`]; the part file holds what was verified.
    #[error("paused")]
    Paused,
}

fn describe_failures(failures: &[(PeerAddr, SourceFailure)]) -> String {
    if failures.is_empty() {
        return "no sources were given".into();
    }
    failures
        .iter()
        .map(|(peer, failure)| format!("{} at {} {failure}", peer.id.short(), peer.addr))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_part(part: &Option<PathBuf>) -> String {
    match part {
        Some(part) => format!("; verified data is kept in {}", part.display()),
        None => String::new(),
    }
}

impl DownloadError {
    /// The part file holding verified data, when there is one to resume.
    pub fn kept_part(&self) -> Option<&std::path::Path> {
        match self {
            DownloadError::NoSources { part, .. } => part.as_deref(),
            _ => None,
        }
    }
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    pub hash: ContentHash,
    pub size: u64,
    pub path: PathBuf,
    pub elapsed: Duration,
    /// From the start to the first verified block of this run (`None`:
    /// nothing was fetched, all was resumed).
    pub first_block: Option<Duration>,
    /// Bytes that were already verified in the part file at start.
    pub resumed_bytes: u64,
    /// Bytes received over the network in this run (including duplicates
    /// and rejected blocks).
    pub received_bytes: u64,
    pub sources: Vec<SourceProgress>,
}

impl DownloadReport {
    /// Average rate of this run in bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        (self.size - self.resumed_bytes) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What one source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    Queued,
    /// Connecting, or waiting for the first source to prove the file's size.
    Connecting,
    Active,
    /// Connected, with nothing to fetch from it right now (it holds none of
    /// the missing blocks, or the others are fetching them).
    Idle,
    /// It asked us to come back later (its upload slots are full).
    Busy,
    Done,
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceProgress {
    pub peer: String,
    pub state: SourceState,
    /// Verified bytes this source delivered first.
    pub bytes: u64,
    /// Recent rate in bytes per second.
    pub rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// How we got the connection, once connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<SourcePath>,
    /// It sent data that failed verification and is banned from this
    /// download (`failure` says what).
    #[serde(skip)]
    pub banned: bool,
}

/// A snapshot of a download.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    pub hash: String,
    /// `None` until a source has told us (and proved) the size.
    pub size: Option<u64>,
    pub verified: u64,
    pub resumed: u64,
    pub received: u64,
    /// Blocks requested but not yet delivered.
    pub in_flight_blocks: u32,
    pub sources: Vec<SourceProgress>,
    /// Set when no verified byte has arrived for a while.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<Stall>,
    /// Seconds until the network is asked for sources again, while someone
    /// keeps looking ([`SourceWatch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_look_seconds: Option<u64>,
}

/// A download that has not moved for a while, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stall {
    /// Seconds since the last verified byte (or the start).
    pub seconds: u64,
    /// What the download is waiting for, in words a user can act on.
    pub reason: String,
}

impl Progress {
    pub fn rate(&self) -> f64 {
        self.sources.iter().map(|s| s.rate).sum()
    }
}

/// A source to try: reached directly, or (`via` its supernode) by push,
/// punch or relay; and perhaps at a second address, tried first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSpec {
    /// Its id, and where to dial it (for a source reached only through
    /// `via`, the supernode's address stands in).
    pub peer: PeerAddr,
    pub via: Option<PeerAddr>,
    /// Another address to dial it at, tried first: its IPv6 address, where
    /// no NAT is on the way (RFC 8305: the other attempt starts 250 ms
    /// later, or at once if this one fails). For a source with `via`, the
    /// way through its supernode is taken only if this fails.
    pub first: Option<SocketAddr>,
}

impl SourceSpec {
    /// A source that accepts no connections, reached through supernode `via`.
    pub fn relayed(leaf: PeerId, via: PeerAddr) -> Self {
        SourceSpec {
            peer: PeerAddr::new(leaf, via.addr),
            via: Some(via),
            first: None,
        }
    }

    /// The addresses it can be dialed at, `first` first.
    fn direct(&self) -> impl Iterator<Item = SocketAddr> {
        self.first
            .into_iter()
            .chain(self.via.is_none().then_some(self.peer.addr))
    }

    /// This source (the same peer) as learned two ways, for example at
    /// its IPv4 address from one supernode and its IPv6 one from another,
    /// or as firewalled on IPv4 and dialable on IPv6: one spec that tries
    /// IPv6 first, then another direct address, then the supernode.
    pub fn merged(self, other: SourceSpec) -> SourceSpec {
        let id = self.peer.id;
        let mut direct: Vec<SocketAddr> = Vec::new();
        for addr in self.direct().chain(other.direct()) {
            if !direct.contains(&addr) {
                direct.push(addr);
            }
        }
        // IPv6 first; the order learned otherwise.
        direct.sort_by_key(|addr| addr.is_ipv4());
        match (direct.as_slice(), self.via.or(other.via)) {
            ([], Some(via)) => SourceSpec::relayed(id, via),
            ([only], None) => SourceSpec::from(PeerAddr::new(id, *only)),
            ([best, .., last], None) => SourceSpec {
                peer: PeerAddr::new(id, *last),
                via: None,
                first: Some(*best),
            },
            ([best, ..], Some(via)) => SourceSpec {
                first: Some(*best),
                ..SourceSpec::relayed(id, via)
            },
            ([], None) => self,
        }
    }

    /// `specs` with those of the same peer merged, in the order first seen.
    pub fn grouped(specs: impl IntoIterator<Item = SourceSpec>) -> Vec<SourceSpec> {
        let mut grouped: Vec<SourceSpec> = Vec::new();
        for spec in specs {
            match grouped.iter_mut().find(|known| known.peer.id == spec.peer.id) {
                Some(known) => *known = known.merged(spec),
                None => grouped.push(spec),
            }
        }
        grouped
    }
}

impl From<PeerAddr> for SourceSpec {
    fn from(peer: PeerAddr) -> Self {
        SourceSpec {
            peer,
            via: None,
            first: None,
        }
    }
}

/// Events source tasks report to the coordinator.
enum Event {
    /// A verified block layer, plus the verified last block that proves the size.
    Layer {
        hashes: Arc<BlockHashes>,
        tail: Vec<u8>,
        /// Who sent them (and is credited with the tail's bytes).
        source: SourceId,
    },
    /// Peers learned from a source.
    Learned(Vec<PeerAddr>),
    /// A source task ended.
    Ended {
        id: SourceId,
        failure: Option<SourceFailure>,
    },
    /// Someone added a source by hand.
    Add(SourceSpec),
    /// Someone started looking for sources ([`SourceWatch::finder`]).
    Looking,
    /// A [`SourceFinder`] is done.
    Found,
    /// Stop, keeping every verified block (see [`Download::pause`]).
    Pause,
    /// The last missing block was verified and handed to the writer: finish
    /// now rather than at the next checkpoint tick.
    Complete,
}

/// Per-source figures, updated by source tasks.
struct SourceSlot {
    peer: PeerAddr,
    state: SourceState,
    bytes: u64,
    rate: f64,
    failure: Option<SourceFailure>,
    path: Option<SourcePath>,
}

/// How a download reached one of its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourcePath {
    /// We dialed it.
    Direct,
    /// It dialed us, asked by its supernode (we accept connections).
    Pushed,
    /// It dialed us through a hole our packets opened in our router.
    Punched,
    /// Its supernode forwards the datagrams between us.
    Relayed,
}

/// What the coordinator and every source task share.
struct Shared {
    hash: ContentHash,
    endpoint: Endpoint,
    /// The node's upload side: we serve our verified blocks and tell others
    /// about our sources through it.
    context: Arc<NodeState>,
    options: DownloadOptions,
    /// Exists once the first source has proved the file's size and the
    /// part file is open.
    ledger: OnceLock<Ledger>,
    /// Becomes `true` when the ledger exists.
    ready: watch::Receiver<bool>,
    /// Becomes `true` when sources should stop (complete or failed).
    stop: watch::Receiver<bool>,
    /// Something changed that may give an idle source work.
    changed: Notify,
    requests: Mutex<HashMap<RequestId, AbortHandle>>,
    /// The source fetching the block layer right now, if any.
    layer_claim: Mutex<Option<SourceId>>,
    slots: Mutex<HashMap<SourceId, SourceSlot>>,
    events: mpsc::UnboundedSender<Event>,
    received: AtomicU64,
    /// When the download went quiet, once the watchdog shows it as stalled.
    stalled_since: Mutex<Option<Instant>>,
    /// When whoever looks for sources ([`SourceWatch`]) asks the network
    /// next.
    next_look: Mutex<Option<Instant>>,
    /// Where a player reads the file, if one does: fetched first.
    focus: Arc<focus::Focus>,
}

impl Shared {
    fn with_scheduler<T>(&self, f: impl FnOnce(&mut Scheduler) -> T) -> Option<T> {
        self.ledger.get().map(|ledger| f(ledger.book().scheduler()))
    }

    fn hashes(&self) -> Option<&Arc<BlockHashes>> {
        self.ledger.get().map(Ledger::hashes)
    }

    /// Abandons request `id` wherever it is, returning its blocks to the pool.
    fn cancel_request(&self, id: RequestId) {
        self.with_scheduler(|s| s.release(id));
        if let Some(handle) = self.requests.locked().remove(&id) {
            handle.abort();
        }
        self.changed.notify_waiters();
    }

    fn update_slot(&self, id: SourceId, f: impl FnOnce(&mut SourceSlot)) {
        if let Some(slot) = self.slots.locked().get_mut(&id) {
            f(slot);
        }
    }
}

/// A running download.
pub struct Download {
    shared: Arc<Shared>,
    result: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<DownloadReport, DownloadError>>>>,
    abort: AbortHandle,
}

impl Download {
    /// Starts fetching `hash` into `output` from `sources`. Through the
    /// node's upload side (`context`) other downloaders can fetch our
    /// verified blocks while we are still downloading, and the finished
    /// file is shared.
    pub fn start(
        endpoint: Endpoint,
        context: Arc<NodeState>,
        hash: ContentHash,
        output: &Path,
        sources: Vec<SourceSpec>,
        options: DownloadOptions,
    ) -> Download {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let focus = context.shares.focus(&hash);
        let shared = Arc::new(Shared {
            hash,
            endpoint,
            context,
            options,
            ledger: OnceLock::new(),
            ready,
            stop,
            changed: Notify::new(),
            requests: Mutex::new(HashMap::new()),
            layer_claim: Mutex::new(None),
            slots: Mutex::new(HashMap::new()),
            events: events_tx,
            received: AtomicU64::new(0),
            stalled_since: Mutex::new(None),
            next_look: Mutex::new(None),
            focus,
        });
        let coordinator = Coordinator {
            shared: shared.clone(),
            output: output.to_path_buf(),
            events: events_rx,
            ready: ready_tx,
            stop: stop_tx,
            queue: VecDeque::new(),
            known: HashSet::new(),
            active: 0,
            next_id: 0,
            failures: Vec::new(),
            started: Instant::now(),
            finders: 0,
            specs: HashMap::new(),
            retries: Vec::new(),
        };
        let task = tokio::spawn(coordinator.run(sources));
        Download {
            shared,
            abort: task.abort_handle(),
            result: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// Adds a source while the download runs.
    pub fn add_source(&self, peer: PeerAddr) {
        let _ = self.shared.events.send(Event::Add(SourceSpec::from(peer)));
    }

    pub fn progress(&self) -> Progress {
        progress_of(&self.shared)
    }

    /// A handle for whoever keeps looking for sources while the download
    /// runs ([`crate::searcher::Searcher::keep_finding`]); it does not keep
    /// the download alive.
    pub fn watch(&self) -> SourceWatch {
        SourceWatch {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Waits for the download to finish.
    pub async fn wait(self) -> Result<DownloadReport, DownloadError> {
        self.finished().await
    }

    /// Waits for the download to finish without giving up the handle, so
    /// progress can still be read meanwhile. Call it once.
    pub async fn finished(&self) -> Result<DownloadReport, DownloadError> {
        let mut result = self.result.lock().await;
        if let Some(task) = result.as_mut() {
            let outcome = task.await.expect("download coordinator panicked");
            *result = None;
            return outcome;
        }
        panic!("Download::finished called after the download was collected")
    }

    /// Stops the download gracefully: sources stop, the part file and its
    /// state are brought up to date, and [`Download::finished`] returns
    /// [`DownloadError::Paused`]. Starting the same download again resumes it.
    pub fn pause(&self) {
        let _ = self.shared.events.send(Event::Pause);
    }

    /// Stops the download at once, keeping the part file for a later resume
    /// (blocks since the last checkpoint may be fetched again).
    pub fn abort(&self) {
        self.abort.abort();
    }
}

/// Sources enough for a download not to ask the network for more (unless
/// it stalls): a few fast ones fill a home link, and every ask costs a
/// supernode a search. eMule asks every 20 minutes per file; we ask while
/// short, at most once a minute.
pub const ENOUGH_SOURCES: usize = 8;

/// Whether a download could use more sources, and a way to hand them over;
/// see [`Download::watch`].
#[derive(Clone)]
pub struct SourceWatch {
    shared: std::sync::Weak<Shared>,
}

impl SourceWatch {
    /// A finder for one round of looking (`None`: the download is over).
    /// While one is held, a download with no source left waits for it
    /// rather than giving up; dropping it says the search is over.
    pub fn finder(&self) -> Option<SourceFinder> {
        let shared = self.shared.upgrade()?;
        if shared.events.send(Event::Looking).is_err() {
            return None;
        }
        Some(SourceFinder {
            events: shared.events.clone(),
        })
    }

    /// Says when the network will be asked again, for progress reports.
    pub fn looking_again_at(&self, at: Instant) {
        if let Some(shared) = self.shared.upgrade() {
            *shared.next_look.locked() = Some(at);
        }
    }

    /// Whether the download is short of sources (fewer usable ones than
    /// [`ENOUGH_SOURCES`], or than it would connect at once) or stalled;
    /// `None` once it is over.
    pub fn wants_more(&self) -> Option<bool> {
        let shared = self.shared.upgrade()?;
        if shared.events.is_closed() {
            return None;
        }
        let usable = shared
            .slots
            .locked()
            .values()
            .filter(|slot| !matches!(slot.state, SourceState::Done | SourceState::Failed))
            .count();
        let stalled = shared.stalled_since.locked().is_some();
        Some(stalled || usable < shared.options.max_sources.min(ENOUGH_SOURCES))
    }
}

/// Hands sources found to a running download; see [`SourceWatch::finder`].
pub struct SourceFinder {
    events: mpsc::UnboundedSender<Event>,
}

impl SourceFinder {
    pub fn add(&self, source: SourceSpec) {
        let _ = self.events.send(Event::Add(source));
    }
}

impl Drop for SourceFinder {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Found);
    }
}

fn progress_of(shared: &Shared) -> Progress {
    let mut sources: Vec<SourceProgress> = shared
        .slots
        .locked()
        .values()
        .map(|slot| SourceProgress {
            peer: slot.peer.to_string(),
            state: slot.state,
            bytes: slot.bytes,
            rate: slot.rate,
            failure: slot.failure.as_ref().map(ToString::to_string),
            path: slot.path,
            banned: matches!(slot.failure, Some(SourceFailure::Banned(_))),
        })
        .collect();
    sources.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    let ledger = shared.ledger.get();
    let since = *shared.stalled_since.locked();
    let stalled = since.map(|since| Stall {
        seconds: since.elapsed().as_secs(),
        reason: stall_reason(ledger.is_some(), &sources),
    });
    Progress {
        hash: shared.hash.to_hex(),
        size: ledger.map(|l| l.hashes().layout().size()),
        verified: ledger.map_or(0, Ledger::verified),
        resumed: ledger.map_or(0, Ledger::resumed),
        received: shared.received.load(Ordering::Relaxed),
        in_flight_blocks: shared.with_scheduler(|s| s.outstanding_blocks()).unwrap_or(0),
        sources,
        stalled,
        next_look_seconds: shared
            .next_look
            .locked()
            .and_then(|at| at.checked_duration_since(Instant::now()))
            .map(|wait| wait.as_secs_f64().ceil() as u64),
    }
}

/// Why a download with these sources is not moving, as the user would ask
/// it: which sources there are and what each is doing.
fn stall_reason(size_known: bool, sources: &[SourceProgress]) -> String {
    let count = |state: SourceState| sources.iter().filter(|s| s.state == state).count();
    // A queued source with a failure waits to be tried again.
    let retrying = sources
        .iter()
        .filter(|s| s.state == SourceState::Queued && s.failure.is_some())
        .count();
    let (connecting, active, idle, busy, queued) = (
        count(SourceState::Connecting),
        count(SourceState::Active),
        count(SourceState::Idle),
        count(SourceState::Busy),
        count(SourceState::Queued) - retrying,
    );
    let live = connecting + active + idle + busy + queued + retrying;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if live == 0 {
        let failed = count(SourceState::Failed);
        return match failed {
            0 => "no sources yet; looking for some".into(),
            1 => "the only source failed; looking for more".into(),
            _ => format!("all {failed} sources failed; looking for more"),
        };
    }
    if !size_known {
        return match live {
            1 => "waiting for the source to send the file's size".into(),
            _ => format!("waiting for one of {live} sources to send the file's size"),
        };
    }
    let mut parts = Vec::new();
    if active > 0 {
        parts.push(format!("{active} sending nothing"));
    }
    if busy > 0 {
        parts.push(format!("{busy} busy (retrying)"));
    }
    if idle > 0 {
        parts.push(format!("{idle} without the missing blocks"));
    }
    if connecting + queued > 0 {
        parts.push(format!("{} connecting", connecting + queued));
    }
    if retrying > 0 {
        parts.push(format!("{retrying} failed, to be tried again"));
    }
    format!("{live} source{}: {}", plural(live), parts.join(", "))
}

/// Owns the download's life cycle: sources in and out, the part file, the
/// finish.
struct Coordinator {
    shared: Arc<Shared>,
    output: PathBuf,
    events: mpsc::UnboundedReceiver<Event>,
    ready: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    queue: VecDeque<SourceSpec>,
    known: HashSet<PeerId>,
    active: usize,
    next_id: SourceId,
    failures: Vec<(PeerAddr, SourceFailure)>,
    started: Instant,
    /// Searches for sources still under way: an idle download waits for them.
    finders: usize,
    /// How each source was given, and how often it has been tried.
    specs: HashMap<SourceId, (SourceSpec, u32)>,
    /// Failed sources to try again, and when.
    retries: Vec<(Instant, SourceId)>,
}

impl Coordinator {
    async fn run(mut self, sources: Vec<SourceSpec>) -> Result<DownloadReport, DownloadError> {
        for source in sources {
            self.offer_spec(source);
        }
        let result = self.drive().await;
        let _ = self.stop.send(true);
        for (_, handle) in self.shared.requests.locked().drain() {
            handle.abort();
        }
        if result.is_err() {
            // Keep every verified block for the next attempt.
            if let Some(writer) = self.shared.ledger.get().map(Ledger::writer) {
                let (reply, flushed) = oneshot::channel();
                if writer.send(WriteCommand::Flush(reply)).await.is_ok() {
                    let _ = flushed.await;
                }
            }
        }
        self.shared.context.shares.remove_partial(&self.shared.hash);
        result
    }

    /// Queues a source we have not seen yet and starts it if there is room.
    fn offer(&mut self, peer: PeerAddr) {
        self.offer_spec(SourceSpec::from(peer));
    }

    fn offer_spec(&mut self, spec: SourceSpec) {
        let peer = spec.peer;
        if peer.id == self.shared.endpoint.peer_id() {
            let failure = SourceFailure::Unreachable("that is this node itself".into());
            self.failures.push((peer, failure));
            return;
        }
        if !self.known.insert(peer.id) {
            return;
        }
        self.queue.push_back(spec);
        self.start_queued();
    }

    fn start_queued(&mut self) {
        while self.active < self.shared.options.max_sources {
            let Some(spec) = self.queue.pop_front() else {
                break;
            };
            let peer = spec.peer;
            let id = self.next_id;
            self.next_id += 1;
            self.active += 1;
            self.specs.insert(id, (spec, 1));
            self.shared.slots.locked().insert(
                id,
                SourceSlot {
                    peer,
                    state: SourceState::Connecting,
                    bytes: 0,
                    rate: 0.0,
                    failure: None,
                    path: None,
                },
            );
            tokio::spawn(source::run(self.shared.clone(), id, spec));
        }
    }

    /// Starts again the failed sources whose wait is over, as room allows.
    fn retry_due(&mut self) {
        let now = Instant::now();
        while self.active < self.shared.options.max_sources {
            let Some(at) = self.retries.iter().position(|&(due, _)| due <= now) else {
                break;
            };
            let (_, id) = self.retries.swap_remove(at);
            let Some((spec, tries)) = self.specs.get_mut(&id) else {
                continue;
            };
            *tries += 1;
            let spec = *spec;
            self.active += 1;
            self.shared
                .update_slot(id, |slot| slot.state = SourceState::Connecting);
            tokio::spawn(source::run(self.shared.clone(), id, spec));
        }
    }

    async fn drive(&mut self) -> Result<DownloadReport, DownloadError> {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        let mut idle_since: Option<Instant> = None;
        let mut watchdog = Watchdog::new(Instant::now());
        loop {
            if self.is_complete() {
                return self.finish().await;
            }
            if let Some(ledger) = self.shared.ledger.get() {
                if ledger.writer().is_stopped() {
                    return Err(self.writer_error());
                }
            }
            if self.active == 0 && self.queue.is_empty() && self.finders == 0 && self.retries.is_empty() {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.shared.options.wait_for_sources {
                    let part = part_path(&self.output);
                    return Err(DownloadError::NoSources {
                        hash: self.shared.hash,
                        part: part.exists().then_some(part),
                        failures: std::mem::take(&mut self.failures),
                    });
                }
            } else {
                idle_since = None;
            }
            tokio::select! {
                event = self.events.recv() => {
                    let event = event.expect("coordinator holds a sender");
                    self.handle(event).await?;
                }
                _ = tick.tick() => {
                    if let Some(ledger) = self.shared.ledger.get() {
                        let _ = ledger.writer().send(WriteCommand::Tick).await;
                    }
                    self.watch(&mut watchdog);
                    self.retry_due();
                }
            }
        }
    }

    /// Every block verified *and* handed to the writer.
    fn is_complete(&self) -> bool {
        self.shared.ledger.get().is_some_and(Ledger::is_complete)
    }

    /// The tick's checks: the ledger's invariant (every block the scheduler
    /// counts as done was handed to the writer), and the watchdog's
    /// (progress, or a re-plan).
    fn watch(&mut self, watchdog: &mut Watchdog) {
        let now = Instant::now();
        let ledger = self.shared.ledger.get();
        if let Some(ledger) = ledger {
            let lost = ledger.book().lost();
            if !lost.is_empty() {
                tracing::warn!(
                    hash = %self.shared.hash,
                    blocks = ?&lost[..lost.len().min(8)],
                    count = lost.len(),
                    "blocks marked done were never written; fetching them again (a bug: please report it)"
                );
                self.replan();
            }
        }
        // Sources that could be asked for blocks right now: connected, the
        // size known, neither busy (a timer is armed) nor still connecting.
        let askable = match ledger {
            Some(_) => self
                .shared
                .slots
                .locked()
                .values()
                .filter(|slot| matches!(slot.state, SourceState::Active | SourceState::Idle))
                .count(),
            None => 0,
        };
        let reading = Reading {
            verified: ledger.map_or(0, Ledger::verified),
            complete: self.is_complete(),
            in_flight: self
                .shared
                .with_scheduler(|s| s.outstanding_blocks())
                .unwrap_or(0),
            live_sources: askable,
        };
        if watchdog.observe(now, reading) == Verdict::Replan {
            let progress = progress_of(&self.shared);
            let missing = ledger.map(|l| {
                let book = l.book();
                let done = book.scheduler_ref().done();
                (done.len() - done.count(), done.len())
            });
            tracing::warn!(
                hash = %self.shared.hash,
                verified = reading.verified,
                size = ?progress.size,
                blocks = ?missing.map(|(missing, total)| format!("{missing} of {total} missing")),
                in_flight = reading.in_flight,
                sources = ?progress.sources.iter().map(|s| format!("{} {:?}", s.peer, s.state)).collect::<Vec<_>>(),
                "no progress for a while; re-planning the download"
            );
            self.replan();
        }
        *self.shared.stalled_since.locked() = watchdog.stalled_for(now).map(|quiet| now - quiet);
    }

    /// Puts the download's books right and wakes every source: blocks
    /// marked done but never written go back to the pool, the scheduler's
    /// counts are recomputed, and requests whose task is gone are released.
    fn replan(&self) {
        if let Some(ledger) = self.shared.ledger.get() {
            let (lost, wrong) = ledger.book().repair();
            let orphans: Vec<RequestId> = {
                let tasks = self.shared.requests.locked();
                let ids = ledger.book().scheduler_ref().request_ids();
                ids.into_iter()
                    .filter(|id| tasks.get(id).is_none_or(AbortHandle::is_finished))
                    .collect()
            };
            for &id in &orphans {
                self.shared.cancel_request(id);
            }
            if !lost.is_empty() || wrong > 0 || !orphans.is_empty() {
                tracing::warn!(
                    lost = lost.len(),
                    wrong_counts = wrong,
                    orphaned_requests = orphans.len(),
                    "re-plan put the download's books right"
                );
            }
        }
        self.shared.changed.notify_waiters();
    }

    async fn handle(&mut self, event: Event) -> Result<(), DownloadError> {
        match event {
            Event::Add(spec) => self.offer_spec(spec),
            Event::Looking => self.finders += 1,
            Event::Found => self.finders = self.finders.saturating_sub(1),
            Event::Pause => return Err(DownloadError::Paused),
            Event::Complete => {}
            Event::Learned(peers) => {
                for peer in peers {
                    self.offer(peer);
                }
            }
            Event::Ended { id, failure } => {
                self.active -= 1;
                let peer = self.shared.slots.locked().get(&id).map(|slot| slot.peer);
                if let Some(failure) = failure {
                    let tries = self.specs.get(&id).map_or(u32::MAX, |&(_, tries)| tries);
                    let served = self
                        .shared
                        .slots
                        .locked()
                        .get(&id)
                        .is_some_and(|slot| slot.bytes > 0);
                    let again = !matches!(failure, SourceFailure::Banned(_) | SourceFailure::Protocol(_))
                        && (served || self.shared.options.retry_unproven_sources)
                        && tries < self.shared.options.source_tries
                        && !self.is_complete();
                    if let (SourceFailure::Banned(_) | SourceFailure::NotFound, Some(peer)) = (&failure, peer)
                    {
                        let listed_by = self.specs.get(&id).and_then(|(spec, _)| spec.via);
                        if let Some(supernode) = listed_by.or(self.shared.options.report_to) {
                            let endpoint = self.shared.endpoint.clone();
                            tokio::spawn(report(endpoint, supernode, self.shared.hash, peer.id));
                        }
                    }
                    match &failure {
                        SourceFailure::Banned(reason) => {
                            tracing::info!(source = ?peer, %reason, "banned source for this download")
                        }
                        other if again => {
                            tracing::debug!(source = ?peer, reason = %other, tries, "source failed; trying it again later")
                        }
                        other => tracing::debug!(source = ?peer, reason = %other, "source dropped"),
                    }
                    if again {
                        let wait = FIRST_RETRY
                            .saturating_mul(1 << (tries - 1).min(8))
                            .min(LONGEST_RETRY);
                        self.retries.push((Instant::now() + wait, id));
                    } else if let Some(peer) = peer {
                        self.failures.push((peer, failure.clone()));
                    }
                    self.shared.update_slot(id, |slot| {
                        slot.state = if again {
                            SourceState::Queued
                        } else {
                            SourceState::Failed
                        };
                        slot.failure = Some(failure);
                        slot.rate = 0.0;
                    });
                } else {
                    self.shared.update_slot(id, |slot| {
                        slot.state = SourceState::Done;
                        slot.rate = 0.0;
                    });
                }
                self.start_queued();
            }
            Event::Layer { hashes, tail, source } => {
                if self.shared.ledger.get().is_none() {
                    self.open_part(hashes, tail, source).await?;
                }
            }
        }
        Ok(())
    }

    /// The first verified layer arrived: open (or resume) the part file and
    /// let the sources start.
    async fn open_part(
        &mut self,
        hashes: Arc<BlockHashes>,
        tail: Vec<u8>,
        source: SourceId,
    ) -> Result<(), DownloadError> {
        let output = self.output.clone();
        let opened = {
            let hashes = hashes.clone();
            tokio::task::spawn_blocking(move || part::open(&output, &hashes))
                .await
                .expect("part open panicked")
        };
        let (file, done) = opened.map_err(|source| DownloadError::Output {
            path: part_path(&self.output),
            source,
        })?;
        let have = Arc::new(RwLock::new(done.clone()));
        let writer = Writer::start(&self.output, file, hashes.clone(), done.clone(), have.clone());
        let ledger = Ledger::new(hashes.clone(), done, writer);
        if ledger.resumed() > 0 {
            tracing::info!(bytes = ledger.resumed(), "resuming from the part file");
        }
        let last = hashes.layout().block_count() - 1;
        let bytes = tail.len() as u64;
        match ledger.deliver(None, last, tail).await {
            Ok(scheduler::Received::Fresh { .. }) => {
                self.shared.update_slot(source, |slot| slot.bytes += bytes);
            }
            Ok(scheduler::Received::Duplicate) => {}
            Err(ledger::WriterStopped) => {}
        }
        let _ = self.shared.ledger.set(ledger);
        self.shared.context.shares.insert_partial(PartialFile {
            part: part_path(&self.output),
            hashes,
            have: have.clone(),
        });
        let _ = self.ready.send(true);
        Ok(())
    }

    fn writer_error(&self) -> DownloadError {
        let source = self
            .shared
            .ledger
            .get()
            .and_then(|ledger| ledger.writer().error())
            .unwrap_or_else(|| std::io::Error::other("the part file writer stopped"));
        DownloadError::Output {
            path: part_path(&self.output),
            source,
        }
    }

    async fn finish(&mut self) -> Result<DownloadReport, DownloadError> {
        let _ = self.stop.send(true);
        let ledger = self.shared.ledger.get().expect("complete implies a ledger");
        let writer = ledger.writer();
        let (reply, result) = oneshot::channel();
        let sent = writer.send(WriteCommand::Finish(reply)).await;
        let outcome = match sent {
            Ok(()) => result
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("writer stopped"))),
            Err(()) => Err(std::io::Error::other("writer stopped")),
        };
        let hashes = ledger.hashes().clone();
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                return Err(DownloadError::DiskCheck {
                    hash: self.shared.hash,
                    part: part_path(&self.output),
                })
            }
            Err(source) => {
                return Err(DownloadError::Output {
                    path: self.output.clone(),
                    source,
                })
            }
        }
        // What we fetched, we share: as eMule and BitTorrent do.
        match std::fs::metadata(&self.output).and_then(|meta| meta.modified()) {
            Ok(modified) => self.shared.context.shares.insert_downloaded(SharedFile {
                meta: crate::tags::read(&self.output),
                path: self.output.clone(),
                size: hashes.layout().size(),
                modified,
                hashes: hashes.clone(),
            }),
            Err(error) => tracing::debug!(%error, "not sharing the finished file"),
        }
        let progress = progress_of(&self.shared);
        Ok(DownloadReport {
            hash: self.shared.hash,
            size: hashes.layout().size(),
            path: self.output.clone(),
            elapsed: self.started.elapsed(),
            first_block: self
                .shared
                .ledger
                .get()
                .and_then(|ledger| ledger.first_block())
                .map(|at| at.saturating_duration_since(self.started)),
            resumed_bytes: progress.resumed,
            received_bytes: progress.received,
            sources: progress.sources,
        })
    }
}

/// Tells `supernode` that `source` did not serve `hash` as listed: it
/// checks its leaf itself (a report alone condemns nobody). Best effort.
async fn report(endpoint: Endpoint, supernode: PeerAddr, hash: ContentHash, source: PeerId) {
    let told = tokio::time::timeout(Duration::from_secs(5), async {
        let connection = endpoint.connect(&supernode).await.ok()?;
        let report = canopy_common::proto::Request::Report { hash, source };
        let answer: Option<canopy_common::proto::Response> =
            canopy_common::net::ask(&connection, &report).await.ok();
        connection.close(0u32.into(), b"reported");
        answer
    })
    .await;
    match told {
        Ok(Some(canopy_common::proto::Response::ReportNoted { checking })) => {
            tracing::info!(source = ?source, %hash, checking, "told the supernode a source did not serve what it listed")
        }
        _ => tracing::debug!(source = ?source, %hash, "could not report a source to its supernode"),
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_peer_learned_at_two_addresses_is_one_source_that_tries_ipv6_first() {
        let id = PeerId([7; 32]);
        let v4 = SourceSpec::from(PeerAddr::new(id, at("198.51.100.7:4663")));
        let v6 = SourceSpec::from(PeerAddr::new(id, at("[2a0b:77:1::2]:4663")));
        let both = SourceSpec {
            peer: PeerAddr::new(id, at("198.51.100.7:4663")),
            via: None,
            first: Some(at("[2a0b:77:1::2]:4663")),
        };
        assert_eq!(v4.merged(v6), both);
        assert_eq!(v6.merged(v4), both);
        assert_eq!(v4.merged(v4), v4);

        // Firewalled over IPv4, dialable over IPv6: IPv6 first, then the
        // supernode's ways.
        let supernode = PeerAddr::new(PeerId([9; 32]), at("203.0.113.1:4663"));
        let relayed = SourceSpec::relayed(id, supernode);
        let expected = SourceSpec {
            first: Some(at("[2a0b:77:1::2]:4663")),
            ..relayed
        };
        assert_eq!(relayed.merged(v6), expected);
        assert_eq!(v6.merged(relayed), expected);
        assert_eq!(relayed.merged(relayed), relayed);
    }

    #[test]
    fn grouping_keeps_the_order_sources_were_learned_in() {
        let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
        let specs = [
            SourceSpec::from(PeerAddr::new(a, at("198.51.100.1:1"))),
            SourceSpec::from(PeerAddr::new(b, at("198.51.100.2:2"))),
            SourceSpec::from(PeerAddr::new(a, at("[2a0b:77::1]:1"))),
        ];
        let grouped = SourceSpec::grouped(specs);
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].peer.id, a);
        assert_eq!(grouped[0].first, Some(at("[2a0b:77::1]:1")));
        assert_eq!(grouped[1], specs[1]);
    }
}
