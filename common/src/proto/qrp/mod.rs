//! Keyword routing tables: who might have a file with these words.
//!
//! Gnutella's Query Routing Protocol, adapted to Canopy's two tiers. A
//! supernode summarises the words of every file its leaves (and it) share
//! in a [`KeywordTable`], a fixed-size bit table where each word sets
//! [`POSITIONS_PER_WORD`] hashed bits, and sends it to its neighbouring
//! supernodes, then only the bits that change ([`TableUpdate`]), in levels
//! that each reach a hop further ([`horizon`]). A supernode forwards a copy
//! of a query only to neighbours whose table for the copy's remaining hops
//! has every word of the query ([`KeywordTable::may_match`]): the others
//! certainly have no match within reach, and the message would be wasted.
//!
//! Properties the tests hold it to:
//! * **no false negatives**: a table built from a file matches every query
//!   the index would answer with that file (same words, [`super::keywords`]);
//! * **deterministic on every machine**: a word's bits come from BLAKE3 in
//!   derive-key mode with the context [`HASH_CONTEXT`], so peers agree
//!   without agreeing on anything else;
//! * **bounded**: tables hold 2^[`MIN_LOG2_BITS`] to 2^[`MAX_LOG2_BITS`]
//!   bits (128 B to 128 KiB), and one update fits one control frame.
//!
//! A word's bits are the low bits of two fixed 32-bit numbers, so a table
//! can be *folded* to any smaller power of two ([`KeywordTable::fold_to`])
//! and still equal the table built at that size: tables of different sizes
//! can be compared and merged.

pub mod horizon;
mod update;

use std::collections::HashMap;

pub use horizon::{Horizon, HorizonConfig, MAX_NEIGHBOUR_TABLES};
use serde::{Deserialize, Serialize};
pub use update::{TableUpdate, WordRun, MAX_UPDATE_COST, RUN_OVERHEAD};

use super::keywords;
use super::search::{FileEntry, Query};

/// BLAKE3 derive-key context for word hashes. Part of the wire format:
/// changing it changes every table.
pub const HASH_CONTEXT: &str = "canopy 2026-11 keyword routing table v1";
/// Bits each word sets.
pub const POSITIONS_PER_WORD: usize = 2;
/// Smallest table: 2^10 bits, 128 bytes.
pub const MIN_LOG2_BITS: u8 = 10;
/// Largest table: 2^20 bits, 128 KiB.
pub const MAX_LOG2_BITS: u8 = 20;
/// Default size: 2^16 bits, 8 KiB.
pub const DEFAULT_LOG2_BITS: u8 = 16;

/// A word reduced to the two numbers its bits are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WordKey([u32; POSITIONS_PER_WORD]);

impl WordKey {
    /// The key of an already-normalised word (see [`keywords::words`]).
    pub fn of(word: &str) -> WordKey {
        let digest = blake3::Hasher::new_derive_key(HASH_CONTEXT)
            .update(word.as_bytes())
            .finalize();
        let bytes = digest.as_bytes();
        let number = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        WordKey([number(0), number(4)])
    }

    /// The keys of every routing word of `file`, without repeats.
    pub fn of_file(file: &FileEntry) -> Vec<WordKey> {
        keywords::file_words(file)
            .iter()
            .map(|word| WordKey::of(word))
            .collect()
    }

    /// Bit positions in a table of 2^`log2_bits` bits.
    pub fn positions(self, log2_bits: u8) -> impl Iterator<Item = usize> {
        let mask = (1u32 << log2_bits) - 1;
        self.0.into_iter().map(move |number| (number & mask) as usize)
    }
}

/// Why a table or an update from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("table size 2^{0} bits is outside 2^{MIN_LOG2_BITS}..=2^{MAX_LOG2_BITS}")]
    Size(u8),
    #[error("table of {got} 64-bit words, expected {expected}")]
    Length { got: usize, expected: usize },
    #[error("update costing {0} bytes is over the limit of {MAX_UPDATE_COST}")]
    TooCostly(usize),
    #[error("run at word {start} is empty, not whole words, or overlaps the one before")]
    MalformedRun { start: u32 },
    #[error("update changes word {index} of a {words}-word table")]
    IndexOutOfRange { index: u32, words: usize },
    #[error("update for a 2^{got}-bit table applied to a 2^{expected}-bit one (0: no table yet)")]
    SizeMismatch { got: u8, expected: u8 },
    #[error("already holding the tables of {0} neighbours")]
    TooManyTables(usize),
    #[error("table level {level} is not below the limit of {max}")]
    Level { level: u8, max: u8 },
    #[error("a table update from a peer that is not a linked neighbour")]
    NotLinked,
}

/// A hashed bit table of keywords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTable", into = "RawTable")]
pub struct KeywordTable {
    log2_bits: u8,
    words: Vec<u64>,
}

/// A table as serialised; checked on the way in.
#[derive(Serialize, Deserialize)]
struct RawTable {
    log2_bits: u8,
    words: Vec<u64>,
}

impl TryFrom<RawTable> for KeywordTable {
    type Error = TableError;

    fn try_from(raw: RawTable) -> Result<Self, TableError> {
        let expected = word_count(raw.log2_bits)?;
        if raw.words.len() != expected {
            return Err(TableError::Length {
                got: raw.words.len(),
                expected,
            });
        }
        Ok(KeywordTable {
            log2_bits: raw.log2_bits,
            words: raw.words,
        })
    }
}

impl From<KeywordTable> for RawTable {
    fn from(table: KeywordTable) -> Self {
        RawTable {
            log2_bits: table.log2_bits,
            words: table.words,
        }
    }
}

fn word_count(log2_bits: u8) -> Result<usize, TableError> {
    if !(MIN_LOG2_BITS..=MAX_LOG2_BITS).contains(&log2_bits) {
        return Err(TableError::Size(log2_bits));
    }
    Ok((1usize << log2_bits) / 64)
}

impl KeywordTable {
    /// An empty table of 2^`log2_bits` bits.
    pub fn new(log2_bits: u8) -> Result<Self, TableError> {
        Ok(KeywordTable {
            log2_bits,
            words: vec![0; word_count(log2_bits)?],
        })
    }

    /// A table of the words of `files`.
    pub fn of_files<'a>(
        log2_bits: u8,
        files: impl IntoIterator<Item = &'a FileEntry>,
    ) -> Result<Self, TableError> {
        let mut table = KeywordTable::new(log2_bits)?;
        for file in files {
            table.insert_file(file);
        }
        Ok(table)
    }

    pub fn log2_bits(&self) -> u8 {
        self.log2_bits
    }

    /// Size of the bits, in bytes.
    pub fn byte_len(&self) -> usize {
        self.words.len() * 8
    }

    /// Share of bits set, 0 to 1: the chance that one unrelated word's
    /// position is set, so a one-word false positive is about `fill²`.
    pub fn fill(&self) -> f64 {
        let set: u32 = self.words.iter().map(|word| word.count_ones()).sum();
        f64::from(set) / (self.words.len() * 64) as f64
    }

    pub fn insert_key(&mut self, key: WordKey) {
        for position in key.positions(self.log2_bits) {
            self.words[position / 64] |= 1 << (position % 64);
        }
    }

    /// Adds a normalised word.
    pub fn insert_word(&mut self, word: &str) {
        self.insert_key(WordKey::of(word));
    }

    /// Adds every routing word of `file`.
    pub fn insert_file(&mut self, file: &FileEntry) {
        for key in WordKey::of_file(file) {
            self.insert_key(key);
        }
    }

    pub fn contains_key(&self, key: WordKey) -> bool {
        key.positions(self.log2_bits)
            .all(|position| self.words[position / 64] & (1 << (position % 64)) != 0)
    }

    /// Whether a file matching `query` may be behind this table. `false`
    /// is certain; `true` may be a false positive. A query whose words
    /// cannot rule anything out (by hash only, or only one-letter words)
    /// always may match.
    pub fn may_match(&self, query: &Query) -> bool {
        match keywords::query_words(query) {
            None => true,
            Some(words) => words.iter().all(|word| self.contains_key(WordKey::of(word))),
        }
    }

    /// Adds every word of `other`. A larger `other` is folded to this
    /// size first; a smaller one cannot be spread back out, so this table
    /// is folded down to `other`'s size.
    pub fn union(&mut self, other: &KeywordTable) {
        if other.log2_bits < self.log2_bits {
            *self = self.fold_to(other.log2_bits);
        }
        let other = other.fold_to(self.log2_bits);
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }

    /// The same words in a table of 2^`log2_bits` bits (at most this size):
    /// equal to the table built at that size from the same words.
    pub fn fold_to(&self, log2_bits: u8) -> KeywordTable {
        let target = log2_bits.clamp(MIN_LOG2_BITS, self.log2_bits);
        let words = (1usize << target) / 64;
        let mut folded = vec![0u64; words];
        for (index, word) in self.words.iter().enumerate() {
            folded[index % words] |= word;
        }
        KeywordTable {
            log2_bits: target,
            words: folded,
        }
    }

    /// The updates that turn `old` (`None`: a peer that has nothing yet,
    /// or a table of another size) into this table, each within
    /// [`MAX_UPDATE_COST`]. Empty when nothing changed.
    pub fn updates_since(&self, old: Option<&KeywordTable>) -> Vec<TableUpdate> {
        let old = old.filter(|old| old.log2_bits == self.log2_bits);
        update::updates_between(self.log2_bits, old.map(|old| &old.words[..]), &self.words)
    }

    /// Applies an update from a peer. A reset starts from an empty table of
    /// the update's size. Refused updates leave the table as it was.
    pub fn apply(&mut self, update: &TableUpdate) -> Result<(), TableError> {
        update.check()?;
        if update.reset {
            *self = KeywordTable::new(update.log2_bits)?;
        } else if update.log2_bits != self.log2_bits {
            return Err(TableError::SizeMismatch {
                got: update.log2_bits,
                expected: self.log2_bits,
            });
        }
        update.xor_into(&mut self.words);
        Ok(())
    }

    /// A table built from nothing but `updates` (the first must be a reset).
    pub fn from_updates<'a>(updates: impl IntoIterator<Item = &'a TableUpdate>) -> Result<Self, TableError> {
        let mut table = KeywordTable::new(MIN_LOG2_BITS)?;
        let mut started = false;
        for update in updates {
            if !started && !update.reset {
                return Err(TableError::SizeMismatch {
                    got: update.log2_bits,
                    expected: table.log2_bits,
                });
            }
            started = true;
            table.apply(update)?;
        }
        Ok(table)
    }
}

/// A supernode's own table with removals: how many shared files set each
/// bit. Adding and removing files moves the counts; [`Self::table`] is
/// the bits with a count above zero.
#[derive(Debug, Clone)]
pub struct KeywordCounts {
    log2_bits: u8,
    counts: HashMap<u32, u32>,
    table: KeywordTable,
}

impl KeywordCounts {
    pub fn new(log2_bits: u8) -> Result<Self, TableError> {
        Ok(KeywordCounts {
            log2_bits,
            counts: HashMap::new(),
            table: KeywordTable::new(log2_bits)?,
        })
    }

    /// One more file with these words (from [`WordKey::of_file`]).
    pub fn add(&mut self, keys: &[WordKey]) {
        for &key in keys {
            for position in key.positions(self.log2_bits) {
                *self.counts.entry(position as u32).or_default() += 1;
            }
            self.table.insert_key(key);
        }
    }

    /// One file fewer with these words: the same keys it was added with.
    pub fn remove(&mut self, keys: &[WordKey]) {
        for &key in keys {
            for position in key.positions(self.log2_bits) {
                let slot = position as u32;
                let Some(count) = self.counts.get_mut(&slot) else {
                    continue;
                };
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&slot);
                    self.table.words[position / 64] &= !(1 << (position % 64));
                }
            }
        }
    }

    /// The current table.
    pub fn table(&self) -> &KeywordTable {
        &self.table
    }
}

#[cfg(test)]
mod tests;
