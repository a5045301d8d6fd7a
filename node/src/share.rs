//! Shared folders: scanning, hashing and the persistent hash cache.
//!
//! Every regular file under a shared folder is hashed with BLAKE3 once; the
//! result is cached by (path, size, mtime) in the data directory so a restart
//! rehashes only what changed. Multi-block files also keep their block layer
//! on disk, since that is what downloaders verify against. Files are hashed
//! on all cores, one file per worker.
//!
//! What the network may ask for is a content hash, never a path: the
//! [`Shares`] table maps hashes to the files we chose to share, and nothing
//! else on disk is reachable through it.

use canopy_common::sync::{Lock, ReadWrite};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canopy_common::proto::content::{BlockHashes, FileHasher};
use canopy_common::proto::{Bitfield, BlockLayout, ContentHash};
use serde::{Deserialize, Serialize};

use crate::download::focus::Focus;
use crate::fileio::write_atomically;

/// File name of the hash cache inside the data directory.
const CACHE_FILE: &str = "hashcache.bin";
/// Folder for block layers inside the data directory.
const LAYER_DIR: &str = "layers";
/// The files this node downloaded (their paths), shared again at start.
const DOWNLOADED_FILE: &str = "downloaded.list";
/// Suffix of incomplete downloads, which are never shared as whole files.
pub const PART_SUFFIX: &str = ".part";

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("cannot read shared folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a folder")]
    NotAFolder { path: PathBuf },
}

/// One file we serve.
#[derive(Debug, Clone)]
pub struct SharedFile {
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    pub hashes: Arc<BlockHashes>,
    /// Tags read from the file (artist, title, …), published with it.
    pub meta: Vec<(String, String)>,
}

impl SharedFile {
    pub fn hash(&self) -> ContentHash {
        self.hashes.root()
    }

    /// Whether the file on disk still looks like the one we hashed.
    pub fn unchanged_on_disk(&self) -> bool {
        fs::metadata(&self.path)
            .map(|meta| meta.len() == self.size && meta.modified().ok() == Some(self.modified))
            .unwrap_or(false)
    }
}

/// A file we are still downloading: we serve the blocks we have verified,
/// so downloaders of the same file help each other.
#[derive(Debug, Clone)]
pub struct PartialFile {
    /// The part file the blocks are in.
    pub part: PathBuf,
    pub hashes: Arc<BlockHashes>,
    /// Blocks written to the part file so far.
    pub have: Arc<RwLock<Bitfield>>,
}

/// Something we can serve blocks of.
#[derive(Debug, Clone)]
pub enum Content {
    Complete(SharedFile),
    Partial(PartialFile),
}

impl Content {
    pub fn hashes(&self) -> &Arc<BlockHashes> {
        match self {
            Content::Complete(file) => &file.hashes,
            Content::Partial(file) => &file.hashes,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Content::Complete(file) => &file.path,
            Content::Partial(file) => &file.part,
        }
    }

    /// Whether blocks `first..first + count` can be served.
    pub fn has_blocks(&self, first: u32, count: u32) -> bool {
        match self {
            Content::Complete(_) => true,
            Content::Partial(file) => {
                let have = file.have.read_locked();
                (first..first + count).all(|index| have.get(index))
            }
        }
    }
}

/// The table of what this node shares, by content hash.
#[derive(Debug, Default)]
pub struct Shares {
    /// Files found in the shared folders.
    files: RwLock<HashMap<ContentHash, SharedFile>>,
    /// Files this node downloaded (shared wherever they were saved).
    downloaded: RwLock<HashMap<ContentHash, SharedFile>>,
    partial: RwLock<HashMap<ContentHash, PartialFile>>,
    /// Where the list of downloaded files is kept, so they stay shared
    /// across restarts (unset: a one-shot `canopy get`, which shares what
    /// it fetched only while it runs).
    downloaded_list: std::sync::OnceLock<PathBuf>,
    /// How far the running scan has got.
    pub progress: ScanProgress,
    /// Told when a shared file was found changed on disk: the rescan runs
    /// now rather than at its next tick.
    pub rescan_soon: tokio::sync::Notify,
    /// Where players read files still downloading, by hash; an entry lives
    /// while a reader or a download holds it.
    focus: Mutex<HashMap<ContentHash, Weak<Focus>>>,
}

/// How far the scan that runs now has got (all zero between scans), for
/// the desktop app's hashing progress.
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub scanning: AtomicBool,
    pub files_to_hash: AtomicU64,
    pub files_hashed: AtomicU64,
    pub bytes_to_hash: AtomicU64,
    pub bytes_hashed: AtomicU64,
}

impl ScanProgress {
    fn begin(&self, files: usize, bytes: u64) {
        self.files_to_hash.store(files as u64, Ordering::Relaxed);
        self.bytes_to_hash.store(bytes, Ordering::Relaxed);
        self.files_hashed.store(0, Ordering::Relaxed);
        self.bytes_hashed.store(0, Ordering::Relaxed);
    }

    fn hashed(&self, bytes: u64) {
        self.files_hashed.fetch_add(1, Ordering::Relaxed);
        self.bytes_hashed.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Shares {
    pub fn get(&self, hash: &ContentHash) -> Option<SharedFile> {
        let scanned = self.files.read_locked().get(hash).cloned();
        scanned.or_else(|| self.downloaded.read_locked().get(hash).cloned())
    }

    /// Makes `files` the set shared from the folders.
    pub fn replace_scanned(&self, files: Vec<SharedFile>) {
        let files = files.into_iter().map(|file| (file.hash(), file)).collect();
        *self.files.write_locked() = files;
    }

    /// Stops sharing `hash` if its file changed on disk since it was
    /// hashed (edited, retagged, replaced): the leaf session tells the
    /// supernode at its next sync, and the rescan, asked to run now, shares
    /// the file again under its new hash. Whether it had changed.
    pub fn forget_if_changed(&self, hash: &ContentHash) -> bool {
        let changed = self.get(hash).is_some_and(|file| !file.unchanged_on_disk());
        if changed {
            self.files.write_locked().remove(hash);
            self.downloaded.write_locked().remove(hash);
            tracing::info!(%hash, "a shared file changed on disk; unpublished until the rescan");
            self.rescan_soon.notify_one();
        }
        changed
    }

    /// What we can serve for `hash`: the complete file if it is still as we
    /// hashed it, else the blocks of a download in progress.
    pub fn content(&self, hash: &ContentHash) -> Option<Content> {
        if let Some(file) = self.get(hash).filter(SharedFile::unchanged_on_disk) {
            return Some(Content::Complete(file));
        }
        let partial = self.partial.read_locked();
        partial.get(hash).cloned().map(Content::Partial)
    }

    /// Where players read `hash` while it downloads: shared by every
    /// reader and every run of its download (see [`Focus`]).
    pub fn focus(&self, hash: &ContentHash) -> Arc<Focus> {
        let mut all = self.focus.locked();
        if let Some(focus) = all.get(hash).and_then(Weak::upgrade) {
            return focus;
        }
        // Entries nobody holds any more go whenever a new one comes, so
        // the table is never larger than what is read or downloaded now.
        all.retain(|_, focus| focus.strong_count() > 0);
        let focus = Arc::new(Focus::default());
        all.insert(*hash, Arc::downgrade(&focus));
        focus
    }

    pub fn insert_partial(&self, file: PartialFile) {
        let hash = file.hashes.root();
        self.partial.write_locked().insert(hash, file);
    }

    pub fn remove_partial(&self, hash: &ContentHash) {
        self.partial.write_locked().remove(hash);
    }

    /// Shares a file this node downloaded, and remembers it if
    /// [`Shares::keep_downloaded_in`] was called.
    pub fn insert_downloaded(&self, file: SharedFile) {
        let mut downloaded = self.downloaded.write_locked();
        downloaded.insert(file.hash(), file);
        if let Some(list) = self.downloaded_list.get() {
            if let Err(error) = save_downloaded(list, downloaded.values()) {
                tracing::warn!(list = %list.display(), %error, "cannot save the list of downloaded files");
            }
        }
    }

    /// From now on, keeps the list of downloaded files in `data_dir`.
    pub fn keep_downloaded_in(&self, data_dir: &Path) {
        let _ = self.downloaded_list.set(data_dir.join(DOWNLOADED_FILE));
    }

    /// Number of complete files shared.
    pub fn len(&self) -> usize {
        self.list().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files shared and their total size.
    pub fn totals(&self) -> (usize, u64) {
        let files = self.list();
        (files.len(), files.iter().map(|file| file.size).sum())
    }

    /// Every complete shared file (one per hash), sorted by path.
    pub fn list(&self) -> Vec<SharedFile> {
        let mut by_hash: HashMap<ContentHash, SharedFile> = self.downloaded.read_locked().clone();
        by_hash.extend(self.files.read_locked().clone());
        let mut files: Vec<_> = by_hash.into_values().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }
}

/// What a scan did, for the log line a user reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanStats {
    pub files: usize,
    pub bytes: u64,
    /// Files whose hash came from the cache.
    pub cached: usize,
    /// Files hashed in this scan.
    pub hashed: usize,
    /// Files skipped because they could not be read.
    pub unreadable: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    modified_nanos: u128,
    hash: ContentHash,
}

/// The persistent (path, size, mtime) → hash cache.
#[derive(Debug, Default)]
pub struct HashCache {
    dir: PathBuf,
    entries: HashMap<Vec<u8>, CacheEntry>,
}

impl HashCache {
    /// Opens the cache in `data_dir`. A missing or damaged cache is not an
    /// error: it only costs a rehash, and the damage is logged.
    pub fn open(data_dir: &Path) -> Self {
        let path = data_dir.join(CACHE_FILE);
        let entries = match fs::read(&path) {
            Ok(bytes) => match postcard::from_bytes(&bytes) {
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "hash cache is damaged; rebuilding it");
                    HashMap::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read hash cache; rebuilding it");
                HashMap::new()
            }
        };
        HashCache {
            dir: data_dir.to_path_buf(),
            entries,
        }
    }

    fn layer_path(&self, hash: &ContentHash) -> PathBuf {
        self.dir.join(LAYER_DIR).join(hash.to_hex())
    }

    /// The cached hashes of `path`, if its size and mtime still match and its
    /// block layer is intact.
    fn lookup(&self, path: &Path, size: u64, modified: SystemTime) -> Option<BlockHashes> {
        let entry = self.entries.get(&path_key(path))?;
        if entry.size != size || entry.modified_nanos != nanos(modified) {
            return None;
        }
        let layer = if needs_layer(size) {
            fs::read(self.layer_path(&entry.hash)).ok()?
        } else {
            Vec::new()
        };
        // Re-verifying the layer is cheap (one BLAKE3 merge per block) and
        // keeps a damaged cache from ever being served.
        BlockHashes::verify(entry.hash, size, &layer).ok()
    }

    fn remember(&mut self, path: &Path, modified: SystemTime, hashes: &BlockHashes) -> std::io::Result<()> {
        let size = hashes.layout().size();
        if needs_layer(size) {
            let layer_path = self.layer_path(&hashes.root());
            fs::create_dir_all(layer_path.parent().expect("layer dir"))?;
            write_atomically(&layer_path, &hashes.layer_bytes())?;
        }
        self.entries.insert(
            path_key(path),
            CacheEntry {
                size,
                modified_nanos: nanos(modified),
                hash: hashes.root(),
            },
        );
        Ok(())
    }

    /// Writes the cache to disk atomically.
    pub fn save(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let bytes = postcard::to_allocvec(&self.entries).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(CACHE_FILE), &bytes)
    }
}

/// Whether a file of `size` bytes has a block layer worth storing.
fn needs_layer(size: u64) -> bool {
    BlockLayout::for_size(size).layer_len() > 0
}

/// Shares again the files this node downloaded before (the list
/// [`Shares::insert_downloaded`] keeps in `data_dir`), those still on disk
/// and unchanged since they were verified: by the hash cache, else hashed
/// again and checked against the hash they were downloaded as. Returns how
/// many; from now on the list is kept up to date.
pub fn restore_downloaded(data_dir: &Path, shares: &Shares) -> usize {
    shares.keep_downloaded_in(data_dir);
    let list = data_dir.join(DOWNLOADED_FILE);
    let entries: Vec<DownloadedEntry> = match fs::read(&list) {
        Ok(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|error| {
            tracing::warn!(list = %list.display(), %error, "the list of downloaded files is damaged");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    let layers = data_dir.join(LAYER_DIR);
    let mut restored = Vec::new();
    for entry in entries {
        let path = path_from_key(entry.path);
        let Ok(meta) = fs::metadata(&path) else { continue };
        let (size, Ok(modified)) = (meta.len(), meta.modified()) else {
            continue;
        };
        let unchanged = size == entry.size && nanos(modified) == entry.modified_nanos;
        let kept = unchanged
            .then(|| {
                let layer = match needs_layer(size) {
                    true => fs::read(layers.join(entry.hash.to_hex())).ok()?,
                    false => Vec::new(),
                };
                BlockHashes::verify(entry.hash, size, &layer).ok()
            })
            .flatten();
        // Touched, or its layer lost: hash it again; it must still be the
        // file that was downloaded.
        let Some(hashes) = kept.or_else(|| hash_file(&path, size).ok()) else {
            continue;
        };
        if hashes.root() != entry.hash {
            continue;
        }
        restored.push(SharedFile {
            meta: crate::tags::read(&path),
            path,
            size,
            modified,
            hashes: Arc::new(hashes),
        });
    }
    let count = restored.len();
    for file in restored {
        shares.insert_downloaded(file);
    }
    count
}

/// One downloaded file as the list keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct DownloadedEntry {
    path: Vec<u8>,
    hash: ContentHash,
    size: u64,
    modified_nanos: u128,
}

/// Writes the list of downloaded files, and the block layers (beside the
/// hash cache's, in `layers/`) that let the next start share them without
/// hashing them again.
fn save_downloaded<'a>(list: &Path, files: impl Iterator<Item = &'a SharedFile>) -> std::io::Result<()> {
    let layers = list.parent().unwrap_or(Path::new(".")).join(LAYER_DIR);
    let mut entries = Vec::new();
    for file in files {
        if needs_layer(file.size) {
            let layer = layers.join(file.hash().to_hex());
            if !layer.exists() {
                fs::create_dir_all(&layers)?;
                crate::fileio::write_atomically(&layer, &file.hashes.layer_bytes())?;
            }
        }
        entries.push(DownloadedEntry {
            path: path_key(&file.path),
            hash: file.hash(),
            size: file.size,
            modified_nanos: nanos(file.modified),
        });
    }
    let bytes = postcard::to_allocvec(&entries).map_err(std::io::Error::other)?;
    crate::fileio::write_atomically(list, &bytes)
}

/// Scans `folders` recursively, hashing what the cache does not know, and
/// makes every readable regular file in them what `shares` serves from the
/// folders (files that disappeared stop being shared).
pub fn scan(folders: &[PathBuf], cache: &mut HashCache, shares: &Shares) -> Result<ScanStats, ShareError> {
    let mut scanned = Vec::new();
    shares.progress.scanning.store(true, Ordering::Relaxed);
    let stats = scan_files(folders, cache, &mut scanned, &shares.progress);
    shares.progress.begin(0, 0);
    shares.progress.scanning.store(false, Ordering::Relaxed);
    let stats = stats?;
    shares.replace_scanned(scanned);
    Ok(stats)
}

fn scan_files(
    folders: &[PathBuf],
    cache: &mut HashCache,
    scanned: &mut Vec<SharedFile>,
    progress: &ScanProgress,
) -> Result<ScanStats, ShareError> {
    let mut found = Vec::new();
    for folder in folders {
        let meta = fs::metadata(folder).map_err(|source| ShareError::Folder {
            path: folder.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ShareError::NotAFolder { path: folder.clone() });
        }
        walk(folder, &mut found);
    }

    let mut stats = ScanStats::default();
    let mut to_hash = Vec::new();
    for (path, size, modified) in found {
        match cache.lookup(&path, size, modified) {
            Some(hashes) => {
                stats.cached += 1;
                stats.files += 1;
                stats.bytes += size;
                scanned.push(SharedFile {
                    meta: crate::tags::read(&path),
                    path,
                    size,
                    modified,
                    hashes: Arc::new(hashes),
                });
            }
            None => to_hash.push((path, size, modified)),
        }
    }

    progress.begin(to_hash.len(), to_hash.iter().map(|(_, size, _)| size).sum());
    for (file, modified) in hash_in_parallel(to_hash, progress) {
        match file {
            Ok(file) => {
                if let Err(error) = cache.remember(&file.path, modified, &file.hashes) {
                    tracing::warn!(%error, "cannot store block layer in the hash cache");
                }
                stats.hashed += 1;
                stats.files += 1;
                stats.bytes += file.size;
                scanned.push(file);
            }
            Err((path, error)) => {
                stats.unreadable += 1;
                tracing::warn!(path = %path.display(), %error, "skipping unreadable file");
            }
        }
    }
    if let Err(error) = cache.save() {
        tracing::warn!(%error, "cannot save the hash cache; files will be rehashed next start");
    }
    Ok(stats)
}

type HashOutcome = (Result<SharedFile, (PathBuf, std::io::Error)>, SystemTime);

/// Hashes files on every core: each worker takes the next file from a shared
/// queue, so one huge file does not hold up the rest.
fn hash_in_parallel(mut queue: Vec<(PathBuf, u64, SystemTime)>, progress: &ScanProgress) -> Vec<HashOutcome> {
    // Largest first: the long jobs start early and the tail stays short.
    queue.sort_by_key(|(_, size, _)| *size);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(queue.len().max(1));
    let queue = Mutex::new(queue);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some((path, size, modified)) = queue.locked().pop() else {
                    break;
                };
                let outcome = hash_file(&path, size)
                    .map(|hashes| SharedFile {
                        meta: crate::tags::read(&path),
                        path: path.clone(),
                        size,
                        modified,
                        hashes: Arc::new(hashes),
                    })
                    .map_err(|error| (path, error));
                progress.hashed(size);
                results.locked().push((outcome, modified));
            });
        }
    });
    results.into_inner().expect("results")
}

/// Hashes one file, producing its content hash and block layer.
pub fn hash_file(path: &Path, size: u64) -> std::io::Result<BlockHashes> {
    let mut file = File::open(path)?;
    let mut hasher = FileHasher::new(size);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    hasher
        .finish()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// Collects regular files below `dir`. Symlinks are not followed (no loops,
/// no escaping the folder), hidden entries and partial downloads are skipped.
fn walk(dir: &Path, found: &mut Vec<(PathBuf, u64, SystemTime)>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(path = %dir.display(), %error, "cannot list folder");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with(PART_SUFFIX) || hidden_by_windows(&entry) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, found);
        } else if kind.is_file() {
            if let Ok(meta) = entry.metadata() {
                let modified = meta.modified().unwrap_or(UNIX_EPOCH);
                found.push((path, meta.len(), modified));
            }
        }
    }
}

/// Whether Windows hides this entry from its user (the hidden or system
/// attribute: `desktop.ini`, `Thumbs.db`, `$RECYCLE.BIN`), as a leading
/// dot does elsewhere.
#[cfg(windows)]
fn hidden_by_windows(entry: &fs::DirEntry) -> bool {
    use std::os::windows::fs::MetadataExt;
    const HIDDEN: u32 = 0x2;
    const SYSTEM: u32 = 0x4;
    entry
        .metadata()
        .is_ok_and(|meta| meta.file_attributes() & (HIDDEN | SYSTEM) != 0)
}

#[cfg(not(windows))]
fn hidden_by_windows(_: &fs::DirEntry) -> bool {
    false
}

fn nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
}

#[cfg(unix)]
fn path_key(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_key(path: &Path) -> Vec<u8> {
    path.to_string_lossy().as_bytes().to_vec()
}

#[cfg(unix)]
fn path_from_key(key: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(key))
}

#[cfg(not(unix))]
fn path_from_key(key: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&key).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, len: usize, seed: u8) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
        fs::write(path, data).unwrap();
    }

    #[test]
    fn scan_hashes_like_b3sum_and_caches() {
        let share = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        write(&share.path().join("a.bin"), 300_000, 3);
        write(&share.path().join("sub/b.bin"), 10, 5);
        write(&share.path().join(".hidden"), 10, 7);
        write(&share.path().join("c.bin.part"), 10, 9);

        let shares = Shares::default();
        let mut cache = HashCache::open(data.path());
        let stats = scan(&[share.path().to_path_buf()], &mut cache, &shares).unwrap();
        assert_eq!((stats.files, stats.hashed, stats.cached), (2, 2, 0));
        for file in shares.list() {
            let bytes = fs::read(&file.path).unwrap();
            assert_eq!(file.hash(), ContentHash::of(&bytes));
        }

        // A restart finds everything in the cache...
        let shares = Shares::default();
        let mut cache = HashCache::open(data.path());
        let stats = scan(&[share.path().to_path_buf()], &mut cache, &shares).unwrap();
        assert_eq!((stats.files, stats.hashed, stats.cached), (2, 0, 2));

        // ...except a file that changed.
        std::thread::sleep(Duration::from_millis(20));
        write(&share.path().join("sub/b.bin"), 11, 5);
        let shares = Shares::default();
        let mut cache = HashCache::open(data.path());
        let stats = scan(&[share.path().to_path_buf()], &mut cache, &shares).unwrap();
        assert_eq!((stats.files, stats.hashed, stats.cached), (2, 1, 1));
        let changed = fs::read(share.path().join("sub/b.bin")).unwrap();
        assert!(shares.get(&ContentHash::of(&changed)).is_some());
    }

    #[test]
    fn damaged_cache_and_layers_are_rebuilt() {
        let share = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        write(&share.path().join("big.bin"), 200_000, 11);
        let folders = [share.path().to_path_buf()];
        scan(&folders, &mut HashCache::open(data.path()), &Shares::default()).unwrap();

        // A damaged layer is detected and that file rehashed.
        for entry in fs::read_dir(data.path().join(LAYER_DIR)).unwrap() {
            fs::write(entry.unwrap().path(), [0u8; 128]).unwrap();
        }
        let stats = scan(&folders, &mut HashCache::open(data.path()), &Shares::default()).unwrap();
        assert_eq!(stats.hashed, 1);

        // A damaged cache file is rebuilt, not fatal.
        fs::write(data.path().join(CACHE_FILE), b"\xff\xff garbage").unwrap();
        let shares = Shares::default();
        let stats = scan(&folders, &mut HashCache::open(data.path()), &shares).unwrap();
        assert_eq!((stats.files, stats.hashed), (1, 1));
    }

    #[test]
    fn missing_folder_is_a_clear_error() {
        let error = scan(
            &[PathBuf::from("/definitely/not/here")],
            &mut HashCache::default(),
            &Shares::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("/definitely/not/here"), "{error}");
    }
}
