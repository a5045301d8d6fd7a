//! The node's downloads over time: the list the desktop app shows, each
//! one running, paused, done or failed, keyed by content hash.
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
//! The list is saved in the data folder (`downloads.json`) at every change
//! of state, so a restarted node shows the same list and resumes what was
//! running.

use canopy_common::sync::{Lock, ReadWrite};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use canopy_common::net::Endpoint;
use canopy_common::proto::{ContentHash, Hit, PeerAddr, PeerId};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Paused,
    Done,
    Failed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Done => "done",
            State::Failed => "failed",
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
}

/// The download manager. Cheap to clone.
#[derive(Clone)]
pub struct Downloads {
    inner: Arc<Inner>,
}

impl Downloads {
    /// Loads the saved list from `data_dir` and resumes what was running.
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
            }),
        };
        for saved in saved.into_iter().take(MAX_DOWNLOADS) {
            let resume = saved.state == State::Running;
            let hash = saved.hash;
            downloads.insert(saved);
            if resume {
                let mut entries = downloads.inner.entries.locked();
                if let Some(entry) = entries.get_mut(&hash) {
                    downloads.launch(hash, entry);
                }
            }
        }
        downloads
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
            state: State::Running,
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
            let entry = entries.entry(hash).or_insert(self.entry(saved));
            self.launch(hash, entry);
        }
        self.changed();
        Ok(())
    }

    /// Stops a running download, keeping what it verified.
    pub fn pause(&self, hash: &ContentHash) -> Result<(), DownloadsError> {
        let entries = self.inner.entries.locked();
        let entry = entries.get(hash).ok_or(DownloadsError::Unknown(*hash))?;
        match &entry.running {
            Some(download) => {
                download.pause();
                Ok(())
            }
            None => Err(DownloadsError::WrongState {
                action: "pause",
                state: entry.saved.state.as_str(),
            }),
        }
    }

    /// Starts a paused or failed download again from its part file.
    pub fn resume(&self, hash: &ContentHash) -> Result<(), DownloadsError> {
        let mut entries = self.inner.entries.locked();
        let entry = entries.get_mut(hash).ok_or(DownloadsError::Unknown(*hash))?;
        if entry.running.is_some() || entry.saved.state == State::Done {
            return Err(DownloadsError::WrongState {
                action: "resume",
                state: entry.saved.state.as_str(),
            });
        }
        self.launch(*hash, entry);
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

    /// Opens the folder holding a download in the desktop's file manager.
    pub fn open_folder(&self, hash: &ContentHash) -> Result<(), DownloadsError> {
        let path = {
            let entries = self.inner.entries.locked();
            let entry = entries.get(hash).ok_or(DownloadsError::Unknown(*hash))?;
            entry.saved.path.clone()
        };
        let folder = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        crate::web::open::open(&folder.to_string_lossy())
            .map_err(|reason| DownloadsError::Open { path: folder, reason })
    }

    /// Every download, oldest first, with live progress.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let entries = self.inner.entries.locked();
        let mut sorted: Vec<&Entry> = entries.values().collect();
        sorted.sort_by_key(|entry| entry.order);
        sorted.into_iter().map(describe).collect()
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
        }
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
        let generation = entry.generation;
        let this = self.clone();
        tokio::spawn(async move {
            let (searcher, watch) = (this.inner.searcher.clone(), download.watch());
            let finder = tokio::spawn(async move { searcher.keep_finding(hash, watch, false, None).await });
            let result = download.finished().await;
            finder.abort();
            let verified = download.progress().verified;
            drop(download);
            this.finished(hash, generation, result, verified).await;
        });
    }

    async fn finished(
        &self,
        hash: ContentHash,
        generation: u64,
        result: Result<crate::download::DownloadReport, DownloadError>,
        verified: u64,
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
                    Err(DownloadError::Paused) => entry.saved.state = State::Paused,
                    Err(error) => {
                        tracing::info!(%hash, %error, "download failed");
                        entry.saved.state = State::Failed;
                        entry.saved.error = Some(error.to_string());
                    }
                }
                None
            }
        };
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
