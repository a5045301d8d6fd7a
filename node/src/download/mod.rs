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

mod part;
mod scheduler;
mod source;

pub use part::{part_path, state_path, CHECKPOINT_BYTES, CHECKPOINT_INTERVAL};
pub use scheduler::{Scheduler, SourceId};

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use canopy_common::net::Endpoint;
use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::{ContentHash, PeerAddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::AbortHandle;

use crate::serve::ServeContext;
use crate::share::{PartialFile, SharedFile};
use part::{WriteCommand, Writer};
use scheduler::RequestId;

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
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            max_sources: 32,
            requests_per_source: 4,
            stall_timeout: Duration::from_secs(3),
            wait_for_sources: Duration::ZERO,
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
    /// The process exit code `canopy get` uses for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            DownloadError::NoSources { failures, .. } => {
                let all = |f: fn(&SourceFailure) -> bool| {
                    !failures.is_empty() && failures.iter().all(|(_, x)| f(x))
                };
                if all(|f| matches!(f, SourceFailure::NotFound)) {
                    exit::NOT_FOUND
                } else if all(|f| matches!(f, SourceFailure::Banned(_) | SourceFailure::Protocol(_))) {
                    exit::VERIFICATION
                } else {
                    exit::NETWORK
                }
            }
            DownloadError::Output { .. } | DownloadError::DiskCheck { .. } => exit::LOCAL_IO,
            DownloadError::Paused => exit::INTERRUPTED,
        }
    }

    /// The part file holding verified data, when there is one to resume.
    pub fn kept_part(&self) -> Option<&std::path::Path> {
        match self {
            DownloadError::NoSources { part, .. } => part.as_deref(),
            _ => None,
        }
    }
}

/// Exit codes of `canopy get`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const NETWORK: u8 = 4;
    pub const VERIFICATION: u8 = 5;
    pub const LOCAL_IO: u8 = 6;
    /// Ctrl-C or SIGTERM, as shells report a SIGINT.
    pub const INTERRUPTED: u8 = 130;
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    pub hash: ContentHash,
    pub size: u64,
    pub path: PathBuf,
    pub elapsed: Duration,
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
    Connecting,
    Active,
    Idle,
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
}

impl Progress {
    pub fn rate(&self) -> f64 {
        self.sources.iter().map(|s| s.rate).sum()
    }
}

/// A source to try: reached directly, or (`via` its supernode) by push.
#[derive(Debug, Clone, Copy)]
pub struct SourceSpec {
    pub peer: PeerAddr,
    pub via: Option<PeerAddr>,
}

impl SourceSpec {
    /// A source that accepts no connections, reached through supernode `via`.
    pub fn relayed(leaf: PeerId, via: PeerAddr) -> Self {
        SourceSpec {
            peer: PeerAddr::new(leaf, via.addr),
            via: Some(via),
        }
    }
}

impl From<PeerAddr> for SourceSpec {
    fn from(peer: PeerAddr) -> Self {
        SourceSpec { peer, via: None }
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
}

/// What the coordinator and every source task share.
struct Shared {
    hash: ContentHash,
    endpoint: Endpoint,
    /// The node's upload side: we serve our verified blocks and tell others
    /// about our sources through it.
    context: Arc<ServeContext>,
    options: DownloadOptions,
    hashes: OnceLock<Arc<BlockHashes>>,
    /// Becomes `true` once the part file is open and the scheduler exists.
    ready: watch::Receiver<bool>,
    /// Becomes `true` when sources should stop (complete or failed).
    stop: watch::Receiver<bool>,
    scheduler: Mutex<Option<Scheduler>>,
    /// Something changed that may give an idle source work.
    changed: Notify,
    writer: OnceLock<Writer>,
    requests: Mutex<HashMap<RequestId, AbortHandle>>,
    /// The source fetching the block layer right now, if any.
    layer_claim: Mutex<Option<SourceId>>,
    slots: Mutex<HashMap<SourceId, SourceSlot>>,
    events: mpsc::UnboundedSender<Event>,
    verified: AtomicU64,
    resumed: AtomicU64,
    received: AtomicU64,
}

impl Shared {
    fn with_scheduler<T>(&self, f: impl FnOnce(&mut Scheduler) -> T) -> Option<T> {
        self.scheduler.lock().expect("scheduler lock").as_mut().map(f)
    }

    /// Abandons request `id` wherever it is, returning its blocks to the pool.
    fn cancel_request(&self, id: RequestId) {
        self.with_scheduler(|s| s.release(id));
        if let Some(handle) = self.requests.lock().expect("requests lock").remove(&id) {
            handle.abort();
        }
        self.changed.notify_waiters();
    }

    fn update_slot(&self, id: SourceId, f: impl FnOnce(&mut SourceSlot)) {
        if let Some(slot) = self.slots.lock().expect("slots lock").get_mut(&id) {
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
        context: Arc<ServeContext>,
        hash: ContentHash,
        output: &Path,
        sources: Vec<SourceSpec>,
        options: DownloadOptions,
    ) -> Download {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            hash,
            endpoint,
            context,
            options,
            hashes: OnceLock::new(),
            ready,
            stop,
            scheduler: Mutex::new(None),
            changed: Notify::new(),
            writer: OnceLock::new(),
            requests: Mutex::new(HashMap::new()),
            layer_claim: Mutex::new(None),
            slots: Mutex::new(HashMap::new()),
            events: events_tx,
            verified: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            received: AtomicU64::new(0),
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
            have: None,
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
        let _ = self
            .shared
            .events
            .send(Event::Add(SourceSpec { peer, via: None }));
    }

    pub fn progress(&self) -> Progress {
        progress_of(&self.shared)
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

fn progress_of(shared: &Shared) -> Progress {
    let mut sources: Vec<SourceProgress> = shared
        .slots
        .lock()
        .expect("slots lock")
        .values()
        .map(|slot| SourceProgress {
            peer: slot.peer.to_string(),
            state: slot.state,
            bytes: slot.bytes,
            rate: slot.rate,
            failure: slot.failure.as_ref().map(ToString::to_string),
        })
        .collect();
    sources.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    Progress {
        hash: shared.hash.to_hex(),
        size: shared.hashes.get().map(|h| h.layout().size()),
        verified: shared.verified.load(Ordering::Relaxed),
        resumed: shared.resumed.load(Ordering::Relaxed),
        received: shared.received.load(Ordering::Relaxed),
        in_flight_blocks: shared.with_scheduler(|s| s.outstanding_blocks()).unwrap_or(0),
        sources,
    }
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
    have: Option<Arc<RwLock<canopy_common::proto::Bitfield>>>,
}

impl Coordinator {
    async fn run(mut self, sources: Vec<SourceSpec>) -> Result<DownloadReport, DownloadError> {
        for source in sources {
            self.offer_spec(source);
        }
        let result = self.drive().await;
        let _ = self.stop.send(true);
        for (_, handle) in self.shared.requests.lock().expect("requests lock").drain() {
            handle.abort();
        }
        if result.is_err() {
            // Keep every verified block for the next attempt.
            if let Some(writer) = self.shared.writer.get() {
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
        self.offer_spec(SourceSpec { peer, via: None });
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
            self.shared.slots.lock().expect("slots lock").insert(
                id,
                SourceSlot {
                    peer,
                    state: SourceState::Connecting,
                    bytes: 0,
                    rate: 0.0,
                    failure: None,
                },
            );
            tokio::spawn(source::run(self.shared.clone(), id, spec));
        }
    }

    async fn drive(&mut self) -> Result<DownloadReport, DownloadError> {
        let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.is_complete() {
                return self.finish().await;
            }
            if let Some(writer) = self.shared.writer.get() {
                if writer.is_stopped() {
                    return Err(self.writer_error());
                }
            }
            if self.active == 0 && self.queue.is_empty() {
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
                    if let Some(writer) = self.shared.writer.get() {
                        let _ = writer.send(WriteCommand::Tick).await;
                    }
                }
            }
        }
    }

    /// Every block verified *and* handed to the writer (a block is marked
    /// done in the scheduler just before it is queued for writing).
    fn is_complete(&self) -> bool {
        let Some(size) = self.shared.hashes.get().map(|h| h.layout().size()) else {
            return false;
        };
        self.shared.with_scheduler(|s| s.is_complete()).unwrap_or(false)
            && self.shared.verified.load(Ordering::Relaxed) == size
    }

    async fn handle(&mut self, event: Event) -> Result<(), DownloadError> {
        match event {
            Event::Add(spec) => self.offer_spec(spec),
            Event::Pause => return Err(DownloadError::Paused),
            Event::Complete => {}
            Event::Learned(peers) => {
                for peer in peers {
                    self.offer(peer);
                }
            }
            Event::Ended { id, failure } => {
                self.active -= 1;
                let peer = self
                    .shared
                    .slots
                    .lock()
                    .expect("slots lock")
                    .get(&id)
                    .map(|slot| slot.peer);
                if let Some(failure) = failure {
                    match &failure {
                        SourceFailure::Banned(reason) => {
                            tracing::info!(source = ?peer, %reason, "banned source for this download")
                        }
                        other => tracing::debug!(source = ?peer, reason = %other, "source dropped"),
                    }
                    if let Some(peer) = peer {
                        self.failures.push((peer, failure.clone()));
                    }
                    self.shared.update_slot(id, |slot| {
                        slot.state = SourceState::Failed;
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
                if self.shared.hashes.get().is_none() {
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
        let layout = hashes.layout();
        let resumed: u64 = done.ones().map(|b| layout.block_len(b)).sum();
        if resumed > 0 {
            tracing::info!(
                bytes = resumed,
                blocks = done.count(),
                "resuming from the part file"
            );
        }
        self.shared.resumed.store(resumed, Ordering::Relaxed);
        self.shared.verified.store(resumed, Ordering::Relaxed);

        let have = Arc::new(RwLock::new(done.clone()));
        let writer = Writer::start(&self.output, file, hashes.clone(), done.clone(), have.clone());
        let last = layout.block_count() - 1;
        let mut scheduler = Scheduler::new(done);
        if !scheduler.is_done(last) {
            let bytes = tail.len() as u64;
            scheduler.mark_done(last);
            let _ = writer
                .send(WriteCommand::Block {
                    index: last,
                    data: tail,
                })
                .await;
            self.shared.verified.fetch_add(bytes, Ordering::Relaxed);
            self.shared.update_slot(source, |slot| slot.bytes += bytes);
        }
        let _ = self.shared.hashes.set(hashes.clone());
        let _ = self.shared.writer.set(writer);
        *self.shared.scheduler.lock().expect("scheduler lock") = Some(scheduler);
        self.shared.context.shares.insert_partial(PartialFile {
            part: part_path(&self.output),
            hashes,
            have: have.clone(),
        });
        self.have = Some(have);
        let _ = self.ready.send(true);
        Ok(())
    }

    fn writer_error(&self) -> DownloadError {
        let source = self
            .shared
            .writer
            .get()
            .and_then(Writer::error)
            .unwrap_or_else(|| std::io::Error::other("the part file writer stopped"));
        DownloadError::Output {
            path: part_path(&self.output),
            source,
        }
    }

    async fn finish(&mut self) -> Result<DownloadReport, DownloadError> {
        let _ = self.stop.send(true);
        let writer = self.shared.writer.get().expect("complete implies a writer");
        let (reply, result) = oneshot::channel();
        let sent = writer.send(WriteCommand::Finish(reply)).await;
        let outcome = match sent {
            Ok(()) => result
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("writer stopped"))),
            Err(()) => Err(std::io::Error::other("writer stopped")),
        };
        let hashes = self.shared.hashes.get().expect("complete implies hashes").clone();
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
            resumed_bytes: progress.resumed,
            received_bytes: progress.received,
            sources: progress.sources,
        })
    }
}
