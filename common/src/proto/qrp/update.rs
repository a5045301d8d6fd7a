//! What goes on the wire: a table as runs of changed 64-bit words.
//!
//! A supernode sends a neighbour its table once (a *reset*), then only the
//! words that changed since, XOR-ed with what the neighbour holds. Changed
//! words travel in *runs* of consecutive words, as raw little-endian bytes:
//! a dense table is one run at 8 bytes a word (postcard's varints would
//! spend up to 10 on a random `u64`), and a new file's few bits are a few
//! runs of one word each (about 12 bytes per word).
//!
//! Each update is bounded by [`MAX_UPDATE_COST`]: a run costs 8 bytes per
//! word plus [`RUN_OVERHEAD`], which over-counts its real encoding, so an
//! update always fits one control frame (64 KiB).

use serde::{Deserialize, Serialize};

use super::{word_count, TableError};

/// Bytes an update may cost by [`TableUpdate::cost`].
pub const MAX_UPDATE_COST: usize = 48 * 1024;
/// What one run costs beyond its words: more than its start (a varint of
/// at most 3 bytes for a 2^14-word table) and its length prefix (at most 3).
pub const RUN_OVERHEAD: usize = 8;

/// Consecutive changed words from `start`: XOR them with `xor_le`, read as
/// little-endian `u64`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordRun {
    pub start: u32,
    pub xor_le: Vec<u8>,
}

impl WordRun {
    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.xor_le
            .chunks_exact(8)
            .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }
}

/// A change to the table a supernode last sent a neighbour; the wire
/// message (to be carried by an `OverlayMessage::KeywordTable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableUpdate {
    pub log2_bits: u8,
    /// Start from an empty table of this size (the first update on a link,
    /// or after a resize).
    pub reset: bool,
    /// In increasing order, not overlapping, within the table.
    pub runs: Vec<WordRun>,
}

impl TableUpdate {
    /// The bound [`MAX_UPDATE_COST`] applies to.
    pub fn cost(&self) -> usize {
        self.runs.iter().map(|run| run.xor_le.len() + RUN_OVERHEAD).sum()
    }

    /// Checks an update from a peer: size, cost, alignment, order, range.
    pub fn check(&self) -> Result<(), TableError> {
        let words = word_count(self.log2_bits)?;
        if self.cost() > MAX_UPDATE_COST {
            return Err(TableError::TooCostly(self.cost()));
        }
        let mut next_free = 0usize;
        for run in &self.runs {
            let start = run.start as usize;
            if run.xor_le.len() % 8 != 0 || run.xor_le.is_empty() || start < next_free {
                return Err(TableError::MalformedRun { start: run.start });
            }
            next_free = start + run.xor_le.len() / 8;
            if next_free > words {
                return Err(TableError::IndexOutOfRange {
                    index: (next_free - 1) as u32,
                    words,
                });
            }
        }
        Ok(())
    }

    /// XORs the runs into `words` (which [`Self::check`] has vouched for).
    pub(super) fn xor_into(&self, words: &mut [u64]) {
        for run in &self.runs {
            for (slot, xor) in words[run.start as usize..].iter_mut().zip(run.words()) {
                *slot ^= xor;
            }
        }
    }
}

/// The updates that turn `old` into `new` (same length), each within
/// [`MAX_UPDATE_COST`]; the first marked `reset` if asked. Empty when
/// nothing changed and no reset is wanted.
pub(super) fn updates_between(log2_bits: u8, old: Option<&[u64]>, new: &[u64]) -> Vec<TableUpdate> {
    let reset = old.is_none();
    let mut updates = Vec::new();
    let mut current = TableUpdate {
        log2_bits,
        reset,
        runs: Vec::new(),
    };
    for (index, &word) in new.iter().enumerate() {
        let xor = word ^ old.map_or(0, |old| old[index]);
        if xor == 0 {
            continue;
        }
        let extends = current
            .runs
            .last()
            .is_some_and(|run| run.start as usize + run.xor_le.len() / 8 == index);
        let added = if extends { 8 } else { 8 + RUN_OVERHEAD };
        if current.cost() + added > MAX_UPDATE_COST {
            let full = std::mem::replace(
                &mut current,
                TableUpdate {
                    log2_bits,
                    reset: false,
                    runs: Vec::new(),
                },
            );
            updates.push(full);
        }
        match current.runs.last_mut() {
            Some(run) if run.start as usize + run.xor_le.len() / 8 == index => {
                run.xor_le.extend_from_slice(&xor.to_le_bytes());
            }
            _ => current.runs.push(WordRun {
                start: index as u32,
                xor_le: xor.to_le_bytes().to_vec(),
            }),
        }
    }
    if !current.runs.is_empty() || (reset && updates.is_empty()) {
        updates.push(current);
    }
    updates
}
