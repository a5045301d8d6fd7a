//! The node's downloads over time: the list the desktop app shows, each
//! one queued, running, paused, done or failed, keyed by content hash.
//!
//! * **start** — from a search result (its sources) or a bare hash (the
//!   sources are then found by a hash search); the file goes into the
//!   download folder under its (sanitised) name, made unique;
//! * **pause** — stops the download gracefully ([`Download::pause`]): the
//!   part file and its state keep every verified block;
//! * **resume** — starts it again from the part file, with the sources it
//!   had plus any a fresh hash search finds;
//! * **cancel** — stops it and deletes the part file.
//!
//! # The queue
//!
//! At most [`Downloads::max_active`] downloads run at once (the setting
//! `max-active-downloads`, 3 by default as in qBittorrent: a home link is
//! better spent finishing a few files than crawling through many). The
//! list's order is the queue's: a new download joins at the bottom as
//! `queued`, and whenever a running one finishes, fails or is paused, the
//! highest queued one starts. Paused downloads hold no place. Moving a
//! download up or down changes which queued one starts next; it never
//! stops one that runs (a running download is not interrupted for a
//! queued one, so reordering costs no connection). Only lowering the limit
//! stops downloads: the lowest running ones go back to `queued`, through a
//! graceful pause, so they keep every verified block.
//!
//! The list is saved in the data folder (`downloads.json`) at every change
//! of state, so a restarted node shows the same list, in the same order,
//! and resumes what was running or queued.

use canopy_common::sync::{Lock, ReadWrite};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use canopy_common::net::Endpoint;
use canopy_common::proto::resume::decode_state;
use canopy_common::proto::{Bitfield, BlockLayout, ContentHash, Hit, PeerAddr, PeerId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::download::{part_path, state_path, Download, DownloadError, DownloadOptions, SourceSpec};
use crate::fileio::write_atomically;
use crate::searcher::Searcher;
use crate::state::NodeState;

/// File name of the saved list inside the data folder.
pub const DOWNLOADS_FILE: &str = "downloads.json";
/// Downloads kept in the list at most (finished ones included).
pub const MAX_DOWNLOADS: usize = 1000;
/// Bytes of a file name kept (names come from the network).
const MAX_NAME: usize = 200;
/// How long a download waits for a source before it fails: never. The app
/// keeps looking (less and less often) until a source turns up or the user
/// cancels; meanwhile the download shows as waiting for sources.
const WAIT_FOR_SOURCES: Duration = Duration::MAX;
/// Downloads running at once unless the settings say otherwise
/// (qBittorrent's default too).
pub const DEFAULT_MAX_ACTIVE: usize = 3;
/// The highest limit accepted: each running download holds connections to
/// up to a dozen sources and a writer thread.
pub const MAX_ACTIVE_LIMIT: usize = 50;
/// How long a starting manager waits for the app to tell it the limit
/// before it starts what was running with the one it has: the app's
/// settings are read just after the manager is made, and starting more
/// than the limit only to stop them again would waste connections.
const FIRST_SCHEDULE_DELAY: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum DownloadsError {
    #[error("no download of {0}")]
    Unknown(ContentHash),
    #[error("that file is already in Downloads ({0})")]
    Exists(ContentHash),
    #[error("you already have this file: {}", .0.display())]
    AlreadyHave(PathBuf),
    #[error("the download list is full ({MAX_DOWNLOADS}); clear finished downloads first")]
    Full,
    #[error("cannot {action} a download that is {state}")]
    WrongState {
        action: &'static str,
        state: &'static str,
    },
    #[error("the download folder {0} must be an absolute path to a folder")]
    BadFolder(PathBuf),
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
}

/// Where a download stands.
///
/// Saved in `downloads.json` by name; lists saved before the queue existed
/// simply hold no `queued` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a place among the running downloads.
    Queued,
    Running,
    Paused,
    Done,
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Paused => "paused",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// Where a download moves in the queue (`POST /api/downloads/HASH/up`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// One place towards the top (starts sooner).
    Up,
    /// One place towards the bottom.
    Down,
    /// First in the list.
    Top,
    /// Last in the list.
    Bottom,
}

impl std::str::FromStr for Move {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "up" => Ok(Move::Up),
            "down" => Ok(Move::Down),
            "top" => Ok(Move::Top),
            "bottom" => Ok(Move::Bottom),
            _ => Err(()),
        }
    }
}

/// One download as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    hash: ContentHash,
    name: String,
    path: PathBuf,
    size: Option<u64>,
    state: State,
    /// Direct sources, `PEERID@HOST:PORT`.
    sources: Vec<PeerAddr>,
    /// Firewalled sources: (leaf, its supernode).
    #[serde(default)]
    relayed: Vec<(PeerId, PeerAddr)>,
    #[serde(default)]
    error: Option<String>,
    /// Verified bytes when it last stopped.
    #[serde(default)]
    verified: u64,
}

struct Entry {
    saved: Saved,
    /// Order of arrival, for a stable list.
    order: u64,
    running: Option<Arc<Download>>,
    /// Bumped at every start, so a stale finish is ignored.
    generation: u64,
    /// Cancelled while running: delete the part file once it stops.
    cancelled: bool,
    /// Asked to stop while running: the state it takes once stopped
    /// (`Paused` by the user, `Queued` when the limit was lowered).
    stop_to: Option<State>,
}

struct Inner {
    endpoint: Endpoint,
    context: Arc<NodeState>,
    searcher: Searcher,
    file: PathBuf,
    folder: RwLock<PathBuf>,
    entries: Mutex<HashMap<ContentHash, Entry>>,
    next_order: Mutex<u64>,
    /// Bumped at every change of state (not of progress).
    version: watch::Sender<u64>,
    /// Downloads that may run at once.
    max_active: AtomicUsize,
    /// Whether the queue may start downloads: not before the limit is
    /// known (or [`FIRST_SCHEDULE_DELAY`] has passed), and never again once
    /// the node shuts down.
    scheduling: AtomicBool,
    closed: AtomicBool,
}

/// The download manager. Cheap to clone.
#[derive(Clone)]
pub struct Downloads {
    inner: Arc<Inner>,
}

impl Downloads {
    /// Loads the saved list from `data_dir` and resumes what was running
    /// or queued, in the list's order, as far as the limit allows.
    pub fn start(
        endpoint: Endpoint,
        context: Arc<NodeState>,
        searcher: Searcher,
        data_dir: &Path,
        folder: PathBuf,
    ) -> Downloads {
        let file = data_dir.join(DOWNLOADS_FILE);
        let saved: Vec<Saved> = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %file.display(), %error, "ignoring the damaged download list");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let downloads = Downloads {
            inner: Arc::new(Inner {
                endpoint,
                context,
                searcher,
                file,
                folder: RwLock::new(folder),
                entries: Mutex::default(),
                next_order: Mutex::new(0),
                version: watch::channel(0).0,
                max_active: AtomicUsize::new(DEFAULT_MAX_ACTIVE),
                scheduling: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        };
        for mut saved in saved.into_iter().take(MAX_DOWNLOADS) {
            // What ran when the node stopped waits its turn like the rest:
            // the list's order decides what starts first.
            if saved.state == State::Running {
                saved.state = State::Queued;
            }
            downloads.insert(saved);
        }
        let this = downloads.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FIRST_SCHEDULE_DELAY).await;
            if !this.inner.scheduling.swap(true, Ordering::SeqCst) {
                this.reschedule();
            }
        });
        downloads
    }

    /// Downloads that may run at once.
    pub fn max_active(&self) -> usize {
        self.inner.max_active.load(Ordering::Relaxed)
    }

    /// Changes how many downloads may run at once (1 to
    /// [`MAX_ACTIVE_LIMIT`]), at once: a higher limit starts queued
    /// downloads, a lower one sends the lowest running ones back to the
    /// queue (gracefully: they keep what they verified).
    pub fn set_max_active(&self, limit: usize) {
        let limit = limit.clamp(1, MAX_ACTIVE_LIMIT);
        self.inner.max_active.store(limit, Ordering::Relaxed);
        self.inner.scheduling.store(true, Ordering::SeqCst);
        self.reschedule();
    }

    /// Moves a download in the list, which is the queue's order.
    pub fn move_in_queue(&self, hash: &ContentHash, to: Move) -> Result<(), DownloadsError> {
        {
            let mut entries = self.inner.entries.locked();
            if !entries.contains_key(hash) {
                return Err(DownloadsError::Unknown(*hash));
            }
            let mut order: Vec<(u64, ContentHash)> = entries
                .values()
                .map(|entry| (entry.order, entry.saved.hash))
                .collect();
            order.sort_unstable();
            let mut list: Vec<ContentHash> = order.into_iter().map(|(_, hash)| hash).collect();
            let at = list.iter().position(|h| h == hash).expect("listed");
            let item = list.remove(at);
            let to = match to {
                Move::Up => at.saturating_sub(1),
                Move::Down => (at + 1).min(list.len()),
                Move::Top => 0,
                Move::Bottom => list.len(),
            };
            list.insert(to, item);
            // Renumbered from 1: orders stay small and new entries (which
            // take the next number) still go to the bottom.
            for (index, hash) in list.iter().enumerate() {
                if let Some(entry) = entries.get_mut(hash) {
                    entry.order = index as u64 + 1;
                }
            }
            *self.inner.next_order.locked() = list.len() as u64;
            self.schedule(&mut entries);
        }
        self.changed();
        Ok(())
    }

    /// Where new downloads go.
    pub fn folder(&self) -> PathBuf {
        self.inner.folder.read_locked().clone()
    }

    /// Sends new downloads to `folder` (an absolute path; created if missing).
    pub fn set_folder(&self, folder: PathBuf) -> Result<(), DownloadsError> {
        if !folder.is_absolute() || std::fs::create_dir_all(&folder).is_err() || !folder.is_dir() {
            return Err(DownloadsError::BadFolder(folder));
        }
        *self.inner.folder.write_locked() = folder;
        Ok(())
    }

    /// Changes of state (not of progress): a new value at each.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Starts downloading `hash`, named `name`, from `hit`'s sources if a
    /// search found it (otherwise a hash search finds sources).
    pub fn add(
        &self,
        hash: ContentHash,
        name: Option<&str>,
        hit: Option<&Hit>,
    ) -> Result<(), DownloadsError> {
        // A file we share (from a folder, or downloaded before) is not
        // fetched again: the user is pointed at it instead.
        if let Some(have) = self
            .inner
            .context
            .shares
            .get(&hash)
            .filter(|f| f.unchanged_on_disk())
        {
            return Err(DownloadsError::AlreadyHave(have.path));
        }
        let name = sanitise_name(name.or(hit.map(|h| h.name.as_str())).unwrap_or(""), &hash);
        let saved = Saved {
            hash,
            path: unique_path(&self.folder(), &name),
            name,
            size: hit.map(|h| h.size),
            state: State::Queued,
            sources: hit.map(|h| h.sources.clone()).unwrap_or_default(),
            relayed: hit
                .map(|h| h.relayed.iter().map(|r| (r.leaf, r.via)).collect())
                .unwrap_or_default(),
            error: None,
            verified: 0,
        };
        {
            let mut entries = self.inner.entries.locked();
            if entries.contains_key(&hash) {
                return Err(DownloadsError::Exists(hash));
            }
            if entries.len() >= MAX_DOWNLOADS {
                return Err(DownloadsError::Full);
            }
            entries.insert(hash, self.entry(saved));
            self.schedule(&mut entries);
        }
        self.changed();
        Ok(())
    }

    /// Starts `hash` now, ahead of the queue, for someone who cannot wait
    /// their turn (a player reading the file as it arrives): it moves to
    /// the top, a paused or failed one is resumed, and if the limit is
    /// full the lowest running download goes back to the queue (gracefully,
    /// keeping what it verified) to make room. A finished or running
    /// download is left as it is, apart from its move to the top.
    pub fn start_now(&self, hash: &ContentHash) -> Result<(), DownloadsError> {
        self.move_in_queue(hash, Move::Top)?;
        {
            let mut entries = self.inner.entries.locked();
            let entry = entries.get(hash).ok_or(DownloadsError::Unknown(*hash))?;
            if entry.running.is_some() || entry.saved.state == State::Done {
                return Ok(());
            }
            let limit = self.max_active();
            let staying: Vec<(u64, ContentHash)> = entries
                .values()
                .filter(|e| e.running.is_some() && e.stop_to.is_none() && !e.cancelled)
                .map(|e| (e.order, e.saved.hash))
                .collect();
            if staying.len() >= limit {
                if let Some((_, lowest)) = staying.iter().max() {
                    let entry = entries.get_mut(lowest).expect("listed");
                    entry.stop_to = Some(State::Queued);
                    if let Some(download) = &entry.running {
                        download.pause();
                    }
                }
            }
            let entry = entries.get_mut(hash).expect("listed");
            entry.saved.state = State::Queued;
            entry.saved.error = None;
            if !self.inner.closed.load(Ordering::SeqCst) {
                self.launch(*hash, entry);
            }
        }
        self.changed();
        Ok(())
    }

    /// Stops a running download, keeping what it verified, or takes a
    /// queued one out of the queue. Either way it is `paused` (a running
    /// one once its part file is up to date) and holds no place.
    pub fn pause(&self, hash: &ContentHash) -> Result<(), DownloadsError> {
        let mut entries = self.inner.entries.locked();
        let entry = entries.get_mut(hash).ok_or(DownloadsError::Unknown(*hash))?;
        match (&entry.running, entry.saved.state) {
            (Some(download), _) => {
                entry.stop_to = Some(State::Paused);
                download.pause();
                Ok(())
            }
            (None, State::Queued) => {
                entry.saved.state = State::Paused;
                drop(entries);
                self.changed();
                Ok(())
            }
            (None, state) => Err(DownloadsError::WrongState {
                action: "pause",
                state: state.as_str(),
            }),
        }
    }

    /// Puts a paused or failed download back in the queue, where it keeps
    /// its place in the list: it starts from its part file at once if
    /// fewer than the limit run, else when its turn comes.
    pub fn resume(&self, hash: &ContentHash) -> Result<(), DownloadsError> {
        let mut entries = self.inner.entries.locked();
        let entry = entries.get_mut(hash).ok_or(DownloadsError::Unknown(*hash))?;
        if entry.running.is_some() || !matches!(entry.saved.state, State::Paused | State::Failed) {
            return Err(DownloadsError::WrongState {
                action: "resume",
                state: entry.saved.state.as_str(),
            });
        }
        entry.saved.state = State::Queued;
        entry.saved.error = None;
        self.schedule(&mut entries);
        drop(entries);
        self.changed();
        Ok(())
    }

    /// Removes a download from the list. One not finished stops and its
    /// part file is deleted; a finished file stays on disk.
    pub fn cancel(&self, hash: &ContentHash) -> Result<(), DownloadsError> {
        let mut entries = self.inner.entries.locked();
        let entry = entries.get_mut(hash).ok_or(DownloadsError::Unknown(*hash))?;
        if let Some(download) = &entry.running {
            // The finish handler deletes the part file once the writer has stopped.
            entry.cancelled = true;
            download.pause();
        } else {
            let entry = entries.remove(hash).expect("present");
            if entry.saved.state != State::Done {
                remove_part(&entry.saved.path);
            }
        }
        drop(entries);
        self.changed();
        Ok(())
    }

    /// Opens the folder holding a download in the desktop's file manager;
    /// returns the folder, so the page can say which it opened.
    pub fn open_folder(&self, hash: &ContentHash) -> Result<PathBuf, DownloadsError> {
        let path = {
            let entries = self.inner.entries.locked();
            let entry = entries.get(hash).ok_or(DownloadsError::Unknown(*hash))?;
            entry.saved.path.clone()
        };
        let folder = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        crate::web::open::open(&folder.to_string_lossy())
            .map_err(|reason| DownloadsError::Open {
                path: folder.clone(),
                reason,
            })
            .map(|()| folder)
    }

    /// Every download in the queue's order, with live progress.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let entries = self.inner.entries.locked();
        let mut sorted: Vec<&Entry> = entries.values().collect();
        sorted.sort_by_key(|entry| entry.order);
        sorted.into_iter().map(describe).collect()
    }

    /// One download with what the details view shows beyond the list: its
    /// sources (as [`Downloads::get`]) and the map of verified blocks.
    pub fn details(&self, hash: &ContentHash) -> Option<serde_json::Value> {
        let (mut value, path, size, state, running) = {
            let entries = self.inner.entries.locked();
            let entry = entries.get(hash)?;
            (
                describe(entry),
                entry.saved.path.clone(),
                entry.saved.size,
                entry.saved.state,
                entry.running.is_some(),
            )
        };
        let size = value["size"].as_u64().or(size);
        value["blocks"] = match self.verified_blocks(hash, &path, size, state, running) {
            Some((layout, have)) => block_map(&layout, &have),
            None => serde_json::Value::Null,
        };
        Some(value)
    }

    /// The blocks of `hash` verified so far, with their layout: from the
    /// running download's own record, else from its state file on disk
    /// (`None` while the size is unknown, or no state file exists yet).
    fn verified_blocks(
        &self,
        hash: &ContentHash,
        path: &Path,
        size: Option<u64>,
        state: State,
        running: bool,
    ) -> Option<(BlockLayout, Bitfield)> {
        if running {
            if let Some(crate::share::Content::Partial(file)) = self.inner.context.shares.content(hash) {
                let layout = file.hashes.layout();
                let have = file.have.read_locked().clone();
                return Some((layout, have));
            }
        }
        let layout = BlockLayout::for_size(size?);
        if state == State::Done {
            return Some((layout, Bitfield::full(layout.block_count())));
        }
        // A state file is at most 2 KiB of bits plus a header; anything
        // much larger is not ours and is not read.
        let state_file = state_path(path);
        let too_big = std::fs::metadata(&state_file).map_or(true, |m| m.len() > 64 * 1024);
        let have = if too_big {
            Bitfield::new(layout.block_count())
        } else {
            std::fs::read(&state_file)
                .ok()
                .and_then(|bytes| decode_state(&bytes, *hash, &layout).ok())
                .unwrap_or_else(|| Bitfield::new(layout.block_count()))
        };
        Some((layout, have))
    }

    /// One download, with live progress.
    pub fn get(&self, hash: &ContentHash) -> Option<serde_json::Value> {
        let entries = self.inner.entries.locked();
        entries.get(hash).map(describe)
    }

    /// Whether any download is running.
    pub fn any_running(&self) -> bool {
        let entries = self.inner.entries.locked();
        entries.values().any(|entry| entry.running.is_some())
    }

    /// Pauses every running download and waits (a little) for the part
    /// files to be brought up to date, keeping them marked as running so
    /// the next start resumes them.
    pub async fn shut_down(&self) {
        // Nothing queued may start behind our back while we stop.
        self.inner.closed.store(true, Ordering::SeqCst);
        let running: Vec<Arc<Download>> = {
            let mut entries = self.inner.entries.locked();
            entries
                .values_mut()
                .filter_map(|entry| {
                    entry.generation += 1; // the finish of this run is ignored
                    entry.running.take()
                })
                .collect()
        };
        for download in &running {
            download.pause();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for download in &running {
                while Arc::strong_count(download) > 1 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
        .await;
    }

    fn insert(&self, saved: Saved) {
        let entry = self.entry(saved);
        let hash = entry.saved.hash;
        self.inner.entries.locked().insert(hash, entry);
    }

    /// A new, stopped entry, last in the list.
    fn entry(&self, saved: Saved) -> Entry {
        let mut order = self.inner.next_order.locked();
        *order += 1;
        Entry {
            saved,
            order: *order,
            running: None,
            generation: 0,
            cancelled: false,
            stop_to: None,
        }
    }

    /// Runs [`Downloads::schedule`] and saves the list if it changed anything.
    fn reschedule(&self) {
        let changed = self.schedule(&mut self.inner.entries.locked());
        if changed {
            self.changed();
        }
    }

    /// Brings the running downloads in line with the limit, in the list's
    /// order: while fewer run than the limit allows, the highest queued
    /// one starts; while more run (the limit was lowered), the lowest
    /// running one is paused back into the queue. Downloads already
    /// stopping count as running until they have stopped, so the limit is
    /// never exceeded, even for a moment. Returns whether anything changed.
    fn schedule(&self, entries: &mut HashMap<ContentHash, Entry>) -> bool {
        if !self.inner.scheduling.load(Ordering::SeqCst) || self.inner.closed.load(Ordering::SeqCst) {
            return false;
        }
        let limit = self.max_active();
        let mut sorted: Vec<(u64, ContentHash)> = entries
            .values()
            .map(|entry| (entry.order, entry.saved.hash))
            .collect();
        sorted.sort_unstable();
        let running = entries.values().filter(|entry| entry.running.is_some()).count();
        let mut changed = false;
        // Too many: the lowest that are not already stopping go back.
        let mut staying = entries
            .values()
            .filter(|entry| entry.running.is_some() && entry.stop_to.is_none() && !entry.cancelled)
            .count();
        for (_, hash) in sorted.iter().rev() {
            if staying <= limit {
                break;
            }
            let entry = entries.get_mut(hash).expect("listed");
            if let (Some(download), None, false) = (&entry.running, entry.stop_to, entry.cancelled) {
                entry.stop_to = Some(State::Queued);
                download.pause();
                staying -= 1;
                changed = true;
            }
        }
        // Room: the highest queued start.
        let mut free = limit.saturating_sub(running);
        for (_, hash) in &sorted {
            if free == 0 {
                break;
            }
            let entry = entries.get_mut(hash).expect("listed");
            if entry.saved.state == State::Queued && entry.running.is_none() {
                self.launch(*hash, entry);
                free -= 1;
                changed = true;
            }
        }
        changed
    }

    /// Starts (or restarts) the download of `entry`.
    fn launch(&self, hash: ContentHash, entry: &mut Entry) {
        let direct = entry.saved.sources.iter().copied().map(SourceSpec::from);
        let relayed = (entry.saved.relayed.iter()).map(|(leaf, via)| SourceSpec::relayed(*leaf, *via));
        let sources = SourceSpec::grouped(direct.chain(relayed));
        if let Some(folder) = entry.saved.path.parent() {
            // The download folder may not exist yet (a fresh ~/Downloads);
            // if it cannot be made, the download fails saying so.
            let _ = std::fs::create_dir_all(folder);
        }
        let options = DownloadOptions {
            wait_for_sources: WAIT_FOR_SOURCES,
            // The app waits for sources that come back, however long.
            source_tries: u32::MAX,
            retry_unproven_sources: true,
            ..DownloadOptions::default()
        };
        let download = Arc::new(Download::start(
            self.inner.endpoint.clone(),
            self.inner.context.clone(),
            hash,
            &entry.saved.path,
            sources,
            options,
        ));
        entry.generation += 1;
        entry.running = Some(download.clone());
        entry.saved.state = State::Running;
        entry.saved.error = None;
        entry.stop_to = None;
        let generation = entry.generation;
        let this = self.clone();
        tokio::spawn(async move {
            let (searcher, watch) = (this.inner.searcher.clone(), download.watch());
            let finder = tokio::spawn(async move { searcher.keep_finding(hash, watch, false, None).await });
            let result = download.finished().await;
            finder.abort();
            let progress = download.progress();
            drop(download);
            this.finished(hash, generation, result, progress.verified, progress.size)
                .await;
        });
    }

    async fn finished(
        &self,
        hash: ContentHash,
        generation: u64,
        result: Result<crate::download::DownloadReport, DownloadError>,
        verified: u64,
        size: Option<u64>,
    ) {
        let cancelled_path = {
            let mut entries = self.inner.entries.locked();
            let Some(entry) = entries.get_mut(&hash) else {
                return;
            };
            if entry.generation != generation {
                return;
            }
            entry.running = None;
            entry.saved.verified = verified;
            // A download started from a bare hash learns its size from its
            // first source: kept, so a paused one still shows its
            // percentage and its block map.
            entry.saved.size = size.or(entry.saved.size);
            if entry.cancelled {
                let path = entry.saved.path.clone();
                entries.remove(&hash);
                Some(path)
            } else {
                match result {
                    Ok(report) => {
                        entry.saved.state = State::Done;
                        entry.saved.size = Some(report.size);
                        entry.saved.path = report.path;
                    }
                    // Paused by the user, or sent back to the queue by a
                    // lower limit.
                    Err(DownloadError::Paused) => {
                        entry.saved.state = entry.stop_to.take().unwrap_or(State::Paused)
                    }
                    Err(error) => {
                        tracing::info!(%hash, %error, "download failed");
                        entry.saved.state = State::Failed;
                        entry.saved.error = Some(error.to_string());
                    }
                }
                entry.stop_to = None;
                None
            }
        };
        // A place is free: the next queued download starts.
        self.schedule(&mut self.inner.entries.locked());
        if let Some(path) = cancelled_path {
            remove_part(&path);
            // A block still on its way to the writer may bring the state
            // file back: look again a moment later.
            tokio::time::sleep(Duration::from_millis(500)).await;
            remove_part(&path);
        }
        self.changed();
    }

    /// Saves the list and tells subscribers.
    fn changed(&self) {
        let saved: Vec<Saved> = {
            let entries = self.inner.entries.locked();
            let mut sorted: Vec<&Entry> = entries.values().collect();
            sorted.sort_by_key(|entry| entry.order);
            sorted.into_iter().map(|entry| entry.saved.clone()).collect()
        };
        let bytes = serde_json::to_vec_pretty(&saved).expect("downloads serialise");
        if let Err(error) = write_atomically(&self.inner.file, &bytes) {
            tracing::warn!(file = %self.inner.file.display(), %error, "cannot save the download list");
        }
        self.inner.version.send_modify(|version| *version += 1);
    }
}

/// The JSON the API and the page show for one download.
fn describe(entry: &Entry) -> serde_json::Value {
    let saved = &entry.saved;
    let progress = entry.running.as_ref().map(|download| download.progress());
    let size = progress.as_ref().and_then(|p| p.size).or(saved.size);
    let verified = match (&progress, saved.state) {
        // Until a source has proved the size, the part file is not open
        // again and the download counts nothing verified: what it had when
        // it stopped is still on disk, so that is shown (not 0 %).
        (Some(progress), _) if progress.size.is_none() => saved.verified,
        (Some(progress), _) => progress.verified,
        (None, State::Done) => size.unwrap_or(0),
        (None, _) => saved.verified,
    };
    let rate = progress.as_ref().map_or(0.0, |p| p.rate());
    let eta = match size {
        Some(size) if rate > 1.0 && size > verified => Some(((size - verified) as f64 / rate).ceil() as u64),
        _ => None,
    };
    let usable = progress.as_ref().map_or(0, |p| {
        p.sources
            .iter()
            .filter(|s| {
                !matches!(
                    s.state,
                    crate::download::SourceState::Done | crate::download::SourceState::Failed
                )
            })
            .count()
    });
    let (active, sources) = match &progress {
        Some(progress) => (
            progress
                .sources
                .iter()
                .filter(|s| matches!(s.state, crate::download::SourceState::Active))
                .count(),
            serde_json::to_value(&progress.sources).unwrap_or_default(),
        ),
        None => (0, json!([])),
    };
    json!({
        "hash": saved.hash.to_hex(),
        "name": saved.name,
        "path": saved.path,
        "state": saved.state,
        // Stopping on request: what it becomes once its part file is saved.
        "stopping_to": entry.stop_to,
        "size": size,
        "verified": verified,
        "resumed": progress.as_ref().map_or(0, |p| p.resumed),
        "fraction": size.map(|size| if size == 0 { 1.0 } else { verified as f64 / size as f64 }),
        "rate": rate,
        "eta_seconds": eta,
        "active_sources": active,
        "known_sources": saved.sources.len() + saved.relayed.len(),
        "sources": sources,
        "stalled": progress.as_ref().and_then(|p| p.stalled.clone()),
        // Running with no source that could deliver: not an error, a wait.
        "waiting": (saved.state == State::Running && usable == 0).then(|| json!({
            "next_look_seconds": progress.as_ref().and_then(|p| p.next_look_seconds),
        })),
        "error": saved.error,
    })
}

/// The verified-block map as the API shows it: the bits of `have` as
/// they travel between peers (block 0 in the lowest bit of the first byte),
/// in base64, with the figures a page needs to draw it. A file has at most
/// 16 384 blocks, so the map is at most 2 732 characters.
fn block_map(layout: &BlockLayout, have: &Bitfield) -> serde_json::Value {
    let verified_bytes: u64 = have.ones().map(|index| layout.block_len(index)).sum();
    json!({
        "count": layout.block_count(),
        "block_size": layout.block_size(),
        "verified_blocks": have.count(),
        "verified_bytes": verified_bytes,
        "have": base64(&have.to_wire().0),
    })
}

/// Standard base64 with padding (RFC 4648 §4), which a browser's `atob`
/// reads.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for (position, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if position <= chunk.len() {
                text.push(ALPHABET[(word >> shift) as usize & 63] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// A file name safe to create: the last path component, without control
/// characters or a leading dot, at most `MAX_NAME` bytes; the hash if
/// nothing is left.
pub fn sanitise_name(name: &str, hash: &ContentHash) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|'))
        .collect();
    clean = clean.trim().trim_start_matches('.').trim().to_string();
    while clean.len() > MAX_NAME {
        clean.pop();
    }
    // Windows drops trailing dots and spaces, and opens a device for a
    // reserved name whatever its extension (`COM1.mkv` is the serial
    // port): a peer's name must not send a download there. Checked on
    // every system, as files travel.
    clean = clean.trim_end_matches(['.', ' ']).to_string();
    if is_windows_device(&clean) {
        clean.insert(0, '_');
    }
    if clean.is_empty() || clean.ends_with(crate::share::PART_SUFFIX) {
        clean = hash.to_hex();
    }
    clean
}

/// Whether Windows takes `name` for a device: CON, PRN, AUX, NUL, COM1–9
/// and LPT1–9 (also with ¹²³), in any case, with or without an extension.
fn is_windows_device(name: &str) -> bool {
    let stem = name
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end()
        .to_ascii_uppercase();
    match stem.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" => true,
        _ => {
            let digit = |rest: &str| {
                matches!(
                    rest,
                    "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
                )
            };
            stem.strip_prefix("COM").is_some_and(digit) || stem.strip_prefix("LPT").is_some_and(digit)
        }
    }
}

/// `folder/name`, or `folder/stem (N).ext` if that is taken.
fn unique_path(folder: &Path, name: &str) -> PathBuf {
    let candidate = folder.join(name);
    if !taken(&candidate) {
        return candidate;
    }
    let (stem, extension) = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => (stem, format!(".{extension}")),
        _ => (name, String::new()),
    };
    (1..)
        .map(|n| folder.join(format!("{stem} ({n}){extension}")))
        .find(|path| !taken(path))
        .expect("some number is free")
}

fn taken(path: &Path) -> bool {
    path.exists() || part_path(path).exists()
}

fn remove_part(path: &Path) {
    let _ = std::fs::remove_file(part_path(path));
    let _ = std::fs::remove_file(state_path(path));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_network_cannot_escape_the_folder() {
        let hash = ContentHash([7; 32]);
        assert_eq!(sanitise_name("../../etc/passwd", &hash), "passwd");
        assert_eq!(sanitise_name("..\\..\\boot.ini", &hash), "boot.ini");
        assert_eq!(sanitise_name(".bashrc", &hash), "bashrc");
        assert_eq!(sanitise_name("..", &hash), hash.to_hex());
        assert_eq!(sanitise_name("a\u{0}b\nc.mp3", &hash), "abc.mp3");
        assert_eq!(sanitise_name("x.part", &hash), hash.to_hex());
        assert_eq!(sanitise_name("COM1.mkv", &hash), "_COM1.mkv");
        assert_eq!(sanitise_name("nul", &hash), "_nul");
        assert_eq!(sanitise_name("Con .txt", &hash), "_Con .txt");
        assert_eq!(sanitise_name("lpt9", &hash), "_lpt9");
        assert_eq!(sanitise_name("COM10.txt", &hash), "COM10.txt");
        assert_eq!(sanitise_name("console.log", &hash), "console.log");
        assert_eq!(sanitise_name("song.mp3. . ", &hash), "song.mp3");
        assert!(sanitise_name(&"é".repeat(300), &hash).len() <= MAX_NAME);
    }

    #[test]
    fn block_maps_are_base64_of_the_wire_bits() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // 3 blocks of 64 KiB and a short one; blocks 0 and 3 verified.
        let layout = BlockLayout::for_size(3 * 65_536 + 10);
        let mut have = Bitfield::new(layout.block_count());
        have.set(0);
        have.set(3);
        let map = block_map(&layout, &have);
        assert_eq!(map["count"], 4);
        assert_eq!(map["verified_blocks"], 2);
        assert_eq!(map["verified_bytes"], 65_536 + 10);
        assert_eq!(map["have"], base64(&[0b1001]));
    }

    #[test]
    fn moves_parse_from_the_api_path() {
        assert_eq!("top".parse::<Move>(), Ok(Move::Top));
        assert_eq!("down".parse::<Move>(), Ok(Move::Down));
        assert!("sideways".parse::<Move>().is_err());
    }

    #[test]
    fn a_list_saved_before_the_queue_still_loads() {
        let saved = Saved {
            hash: ContentHash([7; 32]),
            name: "a".into(),
            path: "/tmp/a".into(),
            size: Some(5),
            state: State::Running,
            sources: Vec::new(),
            relayed: Vec::new(),
            error: None,
            verified: 0,
        };
        // An early list: no relayed sources, error or verified count.
        let mut old = serde_json::to_value(vec![&saved]).unwrap();
        for key in ["relayed", "error", "verified"] {
            old[0].as_object_mut().unwrap().remove(key);
        }
        let loaded: Vec<Saved> = serde_json::from_value(old).unwrap();
        assert_eq!(loaded[0].state, State::Running);
        let queued = Saved {
            state: State::Queued,
            ..saved
        };
        let text = serde_json::to_string(&queued).unwrap();
        assert!(text.contains("\"state\":\"queued\""), "{text}");
        assert_eq!(serde_json::from_str::<Saved>(&text).unwrap().state, State::Queued);
    }

    #[test]
    fn a_taken_name_gets_a_number() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("song.mp3"), b"x").unwrap();
        std::fs::write(folder.path().join("song (1).mp3.part"), b"x").unwrap();
        assert_eq!(
            unique_path(folder.path(), "song.mp3"),
            folder.path().join("song (2).mp3")
        );
        assert_eq!(unique_path(folder.path(), "new"), folder.path().join("new"));
    }
}
