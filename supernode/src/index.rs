//! The supernode's index of its leaves' files.
//!
//! Text goes into tantivy: one document per (leaf, file), the file's name
//! and metadata values as one text field, folded to lower case and plain
//! ASCII so `beyonce` finds `Beyoncé`. What a hit needs (hash, name, size,
//! type, who shares it) stays in memory, keyed by a `u64` fast field, so a
//! query never reads tantivy's stored fields (ten times slower).
//!
//! tantivy shows changes only after a commit, and commits are costly, so
//! changes are batched and committed on a timer ([`FileIndex::commit_if_dirty`]).
//! A leaf that leaves vanishes from hits at once: its documents are dropped
//! from the in-memory table immediately and deleted from tantivy at the
//! next commit.

use canopy_common::sync::{Lock, ReadWrite};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use canopy_common::proto::keywords;
use canopy_common::proto::qrp::{Horizon, HorizonConfig, WordKey};
use canopy_common::proto::search::{FileTags, RelayedSource, MAX_SOURCES_PER_HIT};
use canopy_common::proto::{ContentHash, FileEntry, FileKind, Hit, PeerAddr, Query};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::LogMergePolicy;
use tantivy::query::{BooleanQuery, Occur, Query as TantivyQuery, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED};
use tantivy::tokenizer::{TextAnalyzer, Token, TokenStream, Tokenizer};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Identifies a leaf inside one supernode's index.
pub type LeafId = u32;

const TOKENIZER: &str = "canopy";
/// Documents a query looks at before grouping by hash.
const CANDIDATES: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index folder {path}: {source}")]
    Folder {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    key: Field,
    leaf: Field,
    kind: Field,
    size: Field,
    text: Field,
}

/// What a hit needs of one indexed document.
#[derive(Debug, Clone)]
struct DocRecord {
    leaf: LeafId,
    hash: ContentHash,
    size: u64,
    kind: FileKind,
    name: String,
    /// Its routing words, to take back out of the keyword table.
    words: Vec<WordKey>,
    /// It brought tags to show with results (counted in `Catalog::tags`).
    tagged: bool,
}

/// The index's tokenizer: exactly [`keywords::words`] (split on
/// non-alphanumerics, drop pieces of 40 bytes or more, lower-case, fold to
/// ASCII), so keyword routing tables hold the words the index matches.
#[derive(Debug, Clone, Default)]
struct WordTokenizer;

/// The tokens of one text, made up front.
struct WordTokens {
    tokens: Vec<Token>,
    /// One past the current token.
    next: usize,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordTokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordTokens {
        let tokens = keywords::pieces(text)
            .enumerate()
            .map(|(position, (offset, piece))| Token {
                offset_from: offset,
                offset_to: offset + piece.len(),
                position,
                text: keywords::normalise(piece),
                position_length: 1,
            })
            .collect();
        WordTokens { tokens, next: 0 }
    }
}

impl TokenStream for WordTokens {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next.max(1) - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next.max(1) - 1]
    }
}

/// A file's shown tags, with how many indexed documents brought them.
type CountedTags = (u32, Vec<(String, String)>);

#[derive(Debug, Default)]
struct Catalog {
    docs: HashMap<u64, DocRecord>,
    /// The tags results show for a file ([`FileTags::shown`]), by hash,
    /// with how many documents brought them: the first publisher's stay
    /// while any document of that file is indexed.
    tags: HashMap<ContentHash, CountedTags>,
    /// Per leaf: its address and its documents by hash.
    leaves: HashMap<LeafId, LeafRecord>,
}

#[derive(Debug)]
struct LeafRecord {
    peer: PeerAddr,
    /// Accepts no inbound connections: listed as a relayed source.
    firewalled: bool,
    /// Addresses of its other family that a stranger reached (its global
    /// IPv6 ones): listed as direct sources, before `peer`.
    also: Vec<SocketAddr>,
    files: HashMap<ContentHash, u64>,
    next_slot: u32,
}

/// Counters for operators and benchmarks.
#[derive(Debug, Default)]
pub struct IndexStats {
    pub commits: AtomicU64,
    pub documents: AtomicU64,
}

pub struct FileIndex {
    fields: Fields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    catalog: RwLock<Catalog>,
    relay: RwLock<Option<PeerAddr>>,
    dirty: AtomicBool,
    /// The words of everything indexed, for keyword routing; the overlay
    /// keeps its links in the same [`Horizon`].
    horizon: Mutex<Horizon>,
    pub stats: IndexStats,
}

impl FileIndex {
    /// A fresh index in `dir` (wiped first: leaves republish on reconnect,
    /// so nothing in it outlives the process), with at most
    /// `writer_memory` bytes of indexing buffers.
    pub fn create(dir: &Path, writer_memory: usize) -> Result<FileIndex, IndexError> {
        let folder_error = |source| IndexError::Folder {
            path: dir.to_path_buf(),
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(folder_error)?;
        }
        std::fs::create_dir_all(dir).map_err(folder_error)?;
        let directory = MmapDirectory::open(dir).map_err(|e| IndexError::Tantivy(e.into()))?;
        Self::with_directory(
            Index::create(directory, schema().0, Default::default())?,
            writer_memory,
        )
    }

    /// An index held in memory (tests).
    pub fn in_memory(writer_memory: usize) -> Result<FileIndex, IndexError> {
        Self::with_directory(Index::create_in_ram(schema().0), writer_memory)
    }

    fn with_directory(index: Index, writer_memory: usize) -> Result<FileIndex, IndexError> {
        let fields = schema().1;
        let analyzer = TextAnalyzer::builder(WordTokenizer).build();
        index.tokenizers().register(TOKENIZER, analyzer);
        let threads = 2;
        let writer: IndexWriter =
            index.writer_with_num_threads(threads, writer_memory.max(threads * 15_000_000))?;
        // Churn leaves many deleted documents behind; merge them away early.
        let mut policy = LogMergePolicy::default();
        policy.set_del_docs_ratio_before_merge(0.25);
        writer.set_merge_policy(Box::new(policy));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(FileIndex {
            fields,
            writer: Mutex::new(writer),
            reader,
            catalog: RwLock::default(),
            relay: RwLock::new(None),
            dirty: AtomicBool::new(false),
            horizon: Mutex::new(
                Horizon::new(HorizonConfig::default()).expect("the default table size is valid"),
            ),
            stats: IndexStats::default(),
        })
    }

    /// Registers a leaf (no files yet).
    pub fn add_leaf(&self, leaf: LeafId, peer: PeerAddr) {
        self.add_leaf_with(leaf, peer, false);
    }

    /// Registers a leaf; a `firewalled` one is offered to searchers as a
    /// source to reach through this supernode (see [`FileIndex::set_relay_address`]).
    pub fn add_leaf_with(&self, leaf: LeafId, peer: PeerAddr, firewalled: bool) {
        self.catalog.write_locked().leaves.insert(
            leaf,
            LeafRecord {
                peer,
                firewalled,
                also: Vec::new(),
                files: HashMap::new(),
                next_slot: 0,
            },
        );
    }

    /// `leaf` is now reached at `peer` (its router rebound).
    pub fn move_leaf(&self, leaf: LeafId, peer: PeerAddr) {
        if let Some(record) = self.catalog.write_locked().leaves.get_mut(&leaf) {
            record.peer = peer;
        }
    }

    /// `leaf` now says it does (not) accept inbound connections: hits list
    /// it as a direct source or as one reached through this supernode.
    pub fn set_firewalled(&self, leaf: LeafId, firewalled: bool) {
        if let Some(record) = self.catalog.write_locked().leaves.get_mut(&leaf) {
            record.firewalled = firewalled;
        }
    }

    /// `leaf` is also reached directly at `also` (tested addresses of its
    /// other family), replacing what was listed before.
    pub fn set_also(&self, leaf: LeafId, also: Vec<SocketAddr>) {
        if let Some(record) = self.catalog.write_locked().leaves.get_mut(&leaf) {
            record.also = also;
        }
    }

    /// The address searchers should send push requests to (this supernode's).
    pub fn set_relay_address(&self, address: PeerAddr) {
        *self.relay.write_locked() = Some(address);
    }

    /// Number of files `leaf` has published.
    pub fn leaf_files(&self, leaf: LeafId) -> usize {
        let catalog = self.catalog.read_locked();
        catalog.leaves.get(&leaf).map_or(0, |record| record.files.len())
    }

    /// The published size of `leaf`'s file `hash`, if it publishes it.
    pub fn leaf_file(&self, leaf: LeafId, hash: &ContentHash) -> Option<u64> {
        let catalog = self.catalog.read_locked();
        let key = catalog.leaves.get(&leaf)?.files.get(hash)?;
        Some(catalog.docs.get(key)?.size)
    }

    /// One of `leaf`'s files, `pick` choosing which (any number: it is
    /// taken modulo the count), with its published size; `None` if it
    /// publishes nothing.
    pub fn some_file(&self, leaf: LeafId, pick: u64) -> Option<(ContentHash, u64)> {
        let catalog = self.catalog.read_locked();
        let record = catalog.leaves.get(&leaf)?;
        let count = record.files.len() as u64;
        let (hash, key) = record.files.iter().nth((pick % count.max(1)) as usize)?;
        let size = catalog.docs.get(key)?.size;
        Some((*hash, size))
    }

    /// Adds files for `leaf`. Entries must already be checked.
    pub fn add_files(&self, leaf: LeafId, files: &[FileEntry]) {
        let mut guard = self.catalog.write_locked();
        // Its fields borrowed apart: the leaf's record and the tags at once.
        let catalog = &mut *guard;
        let writer = self.writer.locked();
        let Some(record) = catalog.leaves.get_mut(&leaf) else {
            return;
        };
        let mut horizon = self.horizon.locked();
        let mut new_docs = Vec::new();
        for file in files {
            if record.files.contains_key(&file.hash) {
                continue;
            }
            let key = (u64::from(leaf) << 32) | u64::from(record.next_slot);
            record.next_slot = record.next_slot.wrapping_add(1);
            record.files.insert(file.hash, key);
            let mut text = file.name.clone();
            for (_, value) in &file.meta {
                text.push(' ');
                text.push_str(value);
            }
            let mut doc = TantivyDocument::default();
            doc.add_u64(self.fields.key, key);
            doc.add_u64(self.fields.leaf, u64::from(leaf));
            doc.add_u64(self.fields.kind, file.kind.code());
            doc.add_u64(self.fields.size, file.size);
            doc.add_text(self.fields.text, &text);
            if let Err(error) = writer.add_document(doc) {
                tracing::warn!(%error, "cannot index a file");
                continue;
            }
            let words = WordKey::of_file(file);
            horizon.add_file(&words);
            let shown = FileTags::shown(&file.meta);
            let tagged = !shown.is_empty();
            if tagged {
                catalog.tags.entry(file.hash).or_insert((0, shown)).0 += 1;
            }
            new_docs.push((
                key,
                DocRecord {
                    leaf,
                    hash: file.hash,
                    size: file.size,
                    kind: file.kind,
                    name: file.name.clone(),
                    words,
                    tagged,
                },
            ));
        }
        self.stats
            .documents
            .fetch_add(new_docs.len() as u64, Ordering::Relaxed);
        catalog.docs.extend(new_docs);
        self.dirty.store(true, Ordering::Release);
    }

    /// Removes files of `leaf`.
    pub fn remove_files(&self, leaf: LeafId, hashes: &[ContentHash]) {
        let mut catalog = self.catalog.write_locked();
        let writer = self.writer.locked();
        let Some(record) = catalog.leaves.get_mut(&leaf) else {
            return;
        };
        let keys: Vec<u64> = hashes
            .iter()
            .filter_map(|hash| record.files.remove(hash))
            .collect();
        let mut horizon = self.horizon.locked();
        for &key in &keys {
            writer.delete_term(Term::from_field_u64(self.fields.key, key));
            if let Some(doc) = catalog.docs.remove(&key) {
                horizon.remove_file(&doc.words);
                untag(&mut catalog.tags, &doc);
            }
        }
        self.stats
            .documents
            .fetch_sub(keys.len() as u64, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Release);
    }

    /// The tags results show for those of `files` indexed here with tags.
    pub fn tags_for(&self, files: &[ContentHash]) -> Vec<FileTags> {
        let catalog = self.catalog.read_locked();
        (files.iter())
            .filter_map(|hash| {
                let (_, tags) = catalog.tags.get(hash)?;
                Some(FileTags {
                    hash: *hash,
                    tags: tags.clone(),
                })
            })
            .collect()
    }

    /// Forgets a leaf and everything it published; it is gone from hits at once.
    pub fn remove_leaf(&self, leaf: LeafId) {
        let mut catalog = self.catalog.write_locked();
        let Some(record) = catalog.leaves.remove(&leaf) else {
            return;
        };
        let mut horizon = self.horizon.locked();
        for key in record.files.values() {
            if let Some(doc) = catalog.docs.remove(key) {
                horizon.remove_file(&doc.words);
                untag(&mut catalog.tags, &doc);
            }
        }
        drop(horizon);
        self.stats
            .documents
            .fetch_sub(record.files.len() as u64, Ordering::Relaxed);
        drop(catalog);
        self.writer
            .locked()
            .delete_term(Term::from_field_u64(self.fields.leaf, u64::from(leaf)));
        self.dirty.store(true, Ordering::Release);
    }

    /// Commits pending changes and makes them searchable. Call on a timer:
    /// each commit costs milliseconds to seconds, whatever it carries.
    /// The keyword horizon: the words of every indexed file, and (once
    /// the overlay runs) what neighbours said lies past them. Lock order:
    /// the catalog before this, never the other way.
    pub fn horizon(&self) -> &Mutex<Horizon> {
        &self.horizon
    }

    pub fn commit_if_dirty(&self) -> Result<bool, IndexError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        self.writer.locked().commit()?;
        self.reader.reload()?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Runs a search: hits grouped by content, best first.
    pub fn search(&self, query: &Query) -> Result<Vec<Hit>, IndexError> {
        let max_hits = usize::from(query.max_hits.clamp(1, canopy_common::proto::search::MAX_HITS));
        let catalog = self.catalog.read_locked();
        let mut groups: HashMap<ContentHash, Group> = HashMap::new();
        if let Some(hash) = query.hash.filter(|_| query.text.trim().is_empty()) {
            // Sources for a known hash: straight from memory.
            for record in catalog.docs.values().filter(|record| record.hash == hash) {
                groups
                    .entry(hash)
                    .or_insert_with(|| Group::new(record))
                    .add(record, 1.0);
            }
        } else {
            let Some(tantivy_query) = self.build_query(query) else {
                return Ok(Vec::new());
            };
            let searcher = self.reader.searcher();
            let top = searcher.search(&tantivy_query, &TopDocs::with_limit(CANDIDATES).order_by_score())?;
            let mut columns = HashMap::new();
            for (score, address) in top {
                let column = match columns.entry(address.segment_ord) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => entry.insert(
                        searcher
                            .segment_reader(address.segment_ord)
                            .fast_fields()
                            .u64("key")?,
                    ),
                };
                let Some(key) = column.first(address.doc_id) else {
                    continue;
                };
                // Documents of departed leaves are gone from the catalog
                // even before the commit that deletes them.
                let Some(record) = catalog.docs.get(&key) else {
                    continue;
                };
                if query.hash.is_some_and(|hash| hash != record.hash) {
                    continue;
                }
                groups
                    .entry(record.hash)
                    .or_insert_with(|| Group::new(record))
                    .add(record, score);
            }
        }
        let mut groups: Vec<Group> = groups.into_values().collect();
        // Relevance first; among equals, the better-sourced file.
        groups.sort_by(|a, b| b.rank().total_cmp(&a.rank()));
        groups.truncate(max_hits);
        Ok(groups
            .into_iter()
            .map(|group| Hit {
                hash: group.hash,
                size: group.size,
                name: group.name,
                kind: group.kind,
                // A leaf at its session's address (unless firewalled), then
                // at its tested addresses of the other family: downloaders
                // that know try IPv6 first; older ones keep to the first.
                sources: group
                    .leaves
                    .iter()
                    .filter_map(|leaf| catalog.leaves.get(leaf))
                    .flat_map(|record| {
                        let id = record.peer.id;
                        let session = (!record.firewalled).then_some(record.peer);
                        session
                            .into_iter()
                            .chain(record.also.iter().map(move |&addr| PeerAddr::new(id, addr)))
                    })
                    .take(MAX_SOURCES_PER_HIT)
                    .collect(),
                relayed: match *self.relay.read_locked() {
                    Some(via) => group
                        .leaves
                        .iter()
                        .filter_map(|leaf| catalog.leaves.get(leaf))
                        .filter(|record| record.firewalled)
                        .map(|record| RelayedSource {
                            leaf: record.peer.id,
                            via,
                        })
                        .take(MAX_SOURCES_PER_HIT)
                        .collect(),
                    None => Vec::new(),
                },
                source_count: group.leaves.len() as u32,
            })
            .collect())
    }

    fn build_query(&self, query: &Query) -> Option<Box<dyn TantivyQuery>> {
        let mut clauses: Vec<(Occur, Box<dyn TantivyQuery>)> = Vec::new();
        let mut analyzer = self.reader.searcher().index().tokenizers().get(TOKENIZER)?;
        let mut stream = analyzer.token_stream(&query.text);
        while let Some(token) = stream.next() {
            let term = Term::from_field_text(self.fields.text, &token.text);
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
            ));
        }
        if clauses.is_empty() {
            return None;
        }
        if let Some(kind) = query.kind {
            let term = Term::from_field_u64(self.fields.kind, kind.code());
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        if query.min_size.is_some() || query.max_size.is_some() {
            let bound = |value: Option<u64>| match value {
                Some(value) => Bound::Included(Term::from_field_u64(self.fields.size, value)),
                None => Bound::Unbounded,
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(query.min_size), bound(query.max_size))),
            ));
        }
        Some(Box::new(BooleanQuery::new(clauses)))
    }

    /// Documents currently indexed (live leaves only).
    pub fn len(&self) -> usize {
        self.catalog.read_locked().docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Group {
    hash: ContentHash,
    size: u64,
    kind: FileKind,
    name: String,
    best: f32,
    leaves: Vec<LeafId>,
}

impl Group {
    fn new(record: &DocRecord) -> Self {
        Group {
            hash: record.hash,
            size: record.size,
            kind: record.kind,
            name: record.name.clone(),
            best: 0.0,
            leaves: Vec::new(),
        }
    }

    fn add(&mut self, record: &DocRecord, score: f32) {
        self.best = self.best.max(score);
        if !self.leaves.contains(&record.leaf) {
            self.leaves.push(record.leaf);
        }
    }

    fn rank(&self) -> f32 {
        self.best + 0.5 * (1.0 + self.leaves.len() as f32).ln()
    }
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let key = builder.add_u64_field("key", INDEXED | FAST);
    let leaf = builder.add_u64_field("leaf", INDEXED);
    let kind = builder.add_u64_field("kind", INDEXED);
    let size = builder.add_u64_field("size", INDEXED | FAST);
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(TOKENIZER)
        .set_index_option(IndexRecordOption::WithFreqs);
    let text = builder.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
    (
        builder.build(),
        Fields {
            key,
            leaf,
            kind,
            size,
            text,
        },
    )
}

/// Takes `doc`'s count off its file's tags, dropping them with the last.
fn untag(tags: &mut HashMap<ContentHash, CountedTags>, doc: &DocRecord) {
    if !doc.tagged {
        return;
    }
    if let Some((count, _)) = tags.get_mut(&doc.hash) {
        *count -= 1;
        if *count == 0 {
            tags.remove(&doc.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::PeerId;

    fn entry(name: &str, seed: u8, size: u64) -> FileEntry {
        FileEntry {
            hash: ContentHash([seed; 32]),
            size,
            name: name.into(),
            kind: FileKind::from_name(name),
            meta: Vec::new(),
        }
    }

    fn peer(n: u8) -> PeerAddr {
        PeerAddr::new(PeerId([n; 32]), ([127, 0, 0, 1], 4000 + u16::from(n)).into())
    }

    fn query(text: &str) -> Query {
        Query::words(text)
    }

    #[test]
    fn finds_by_words_groups_sources_and_forgets_leaves() {
        let index = FileIndex::in_memory(30_000_000).unwrap();
        index.add_leaf(1, peer(1));
        index.add_leaf(2, peer(2));
        index.add_files(
            1,
            &[
                entry("Beyoncé - Halo.mp3", 1, 5_000_000),
                entry("holiday.jpg", 2, 100),
            ],
        );
        let mut tagged = entry("track01.ogg", 3, 4_000_000);
        tagged.meta.push(("artist".into(), "Nina Simone".into()));
        index.add_files(2, &[entry("Beyoncé - Halo.mp3", 1, 5_000_000), tagged]);
        assert!(
            index.search(&query("halo")).unwrap().is_empty(),
            "nothing before a commit"
        );
        index.commit_if_dirty().unwrap();

        let hits = index.search(&query("beyonce HALO")).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].source_count, 2);
        assert_eq!(hits[0].sources.len(), 2);
        assert_eq!(index.search(&query("simone")).unwrap()[0].name, "track01.ogg");

        let mut audio = query("halo");
        audio.kind = Some(FileKind::Image);
        assert!(index.search(&audio).unwrap().is_empty());
        let mut big = query("halo");
        big.min_size = Some(6_000_000);
        assert!(index.search(&big).unwrap().is_empty());
        big.min_size = Some(1_000_000);
        assert_eq!(index.search(&big).unwrap().len(), 1);

        index.remove_leaf(1);
        // Gone from hits at once, before any commit.
        assert_eq!(index.search(&query("halo")).unwrap()[0].source_count, 1);
        assert!(index.search(&query("holiday")).unwrap().is_empty());
        index.remove_files(2, &[ContentHash([1; 32])]);
        index.commit_if_dirty().unwrap();
        assert!(index.search(&query("halo")).unwrap().is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn finds_sources_by_hash() {
        let index = FileIndex::in_memory(30_000_000).unwrap();
        for n in 1..=3 {
            index.add_leaf(u32::from(n), peer(n));
            index.add_files(u32::from(n), &[entry("same.bin", 7, 10)]);
        }
        let mut by_hash = query("");
        by_hash.hash = Some(ContentHash([7; 32]));
        let hits = index.search(&by_hash).unwrap();
        assert_eq!(hits[0].source_count, 3);
    }

    /// The analyzer the index used before it called `keywords` directly.
    fn tantivy_words(text: &str) -> Vec<String> {
        use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer};
        let mut analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build();
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while let Some(token) = stream.next() {
            words.push(token.text.clone());
        }
        words
    }

    fn our_words(text: &str) -> Vec<String> {
        let mut analyzer = TextAnalyzer::builder(WordTokenizer).build();
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while let Some(token) = stream.next() {
            words.push(token.text.clone());
        }
        words
    }

    /// The tokenizer is `keywords::words`, and agrees with tantivy's own
    /// analyzer chain on every folded character and on mixed text.
    #[test]
    fn keyword_normalisation_matches_the_index() {
        let mut texts: Vec<String> = vec![
            "Beyoncé - Déjà_Vu (Live).MP3".into(),
            "Straße ÆON œuvre ΣΟΦΙΑ 東京 2024 ＡＢＣ".into(),
            format!("{} {} {}", "a".repeat(39), "b".repeat(40), "é".repeat(20)),
            "  --__..  ".into(),
            String::new(),
        ];
        // Every character of the Latin-1 to Latin Extended Additional
        // blocks, the fullwidth forms, and a run of others, in words.
        let ranges = [
            0x00a0u32..0x0250,
            0x1e00..0x1f00,
            0x2c60..0x2c80,
            0xff00..0xff60,
            0x0370..0x0400,
        ];
        for range in ranges {
            let chars: Vec<char> = range.filter_map(char::from_u32).collect();
            for chunk in chars.chunks(7) {
                let word: String = chunk.iter().collect();
                texts.push(format!("x{word}y {word} {}", word.to_uppercase()));
            }
        }
        for text in &texts {
            let ours = our_words(text);
            assert_eq!(ours, tantivy_words(text), "{text:?}");
            assert_eq!(ours, keywords::words(text).collect::<Vec<_>>(), "{text:?}");
        }
    }

    /// What the index holds is in the keyword table, and leaves it again.
    #[test]
    fn the_keyword_table_follows_the_index() {
        let index = FileIndex::in_memory(30_000_000).unwrap();
        index.add_leaf(1, peer(1));
        index.add_leaf(2, peer(2));
        let mut tagged = entry("Sinnerman.ogg", 1, 10);
        tagged.meta = vec![("artist".into(), "Nina Simone".into())];
        index.add_files(1, &[tagged]);
        index.add_files(
            2,
            &[entry("Gymnopédie No1.ogg", 2, 10), entry("sinnerman.ogg", 3, 10)],
        );
        index.commit_if_dirty().unwrap();
        let table = |index: &FileIndex| index.horizon().lock().unwrap().own().clone();
        for text in ["sinnerman", "nina simone", "GYMNOPEDIE", "no1 ogg"] {
            assert!(!index.search(&query(text)).unwrap().is_empty(), "{text}");
            assert!(table(&index).may_match(&query(text)), "{text}");
        }
        assert!(!table(&index).may_match(&query("satie")));
        index.remove_files(2, &[ContentHash([2; 32])]);
        assert!(!table(&index).may_match(&query("gymnopedie")));
        assert!(table(&index).may_match(&query("sinnerman")));
        index.remove_leaf(1);
        assert!(!table(&index).may_match(&query("simone")));
        assert!(
            table(&index).may_match(&query("sinnerman")),
            "leaf 2 still has it"
        );
        index.remove_leaf(2);
        assert_eq!(table(&index).fill(), 0.0);
    }
}
