//! Tags of files indexed elsewhere, kept for this supernode's searchers.
//!
//! A supernode that answers a query from afar sends the tags of its hits'
//! files (artist, title, …: `FileTags`) back with its votes on them
//! (`OverlayMessage::HitNotes`); the searcher's supernode keeps them here
//! for its leaf to ask for (`Request::NotesFor`). Tags of files indexed
//! here come from the index itself.

use std::collections::HashMap;

use canopy_common::proto::search::FileTags;
use canopy_common::proto::ContentHash;

/// Most files whose tags are kept (at most about 500 bytes each: 10 MiB).
pub const MAX_RELAYED_TAGS: usize = 20_000;

/// Tags from afar, by file.
#[derive(Debug, Default)]
pub struct TagCache {
    by_file: HashMap<ContentHash, Vec<(String, String)>>,
}

impl TagCache {
    /// Keeps those of `tags` within the bounds ([`FileTags::check`]); how
    /// many. A full cache drops some file's tags for each new file: which
    /// one is left to the map's order (tags are there again with the next
    /// search that finds the file).
    pub fn relay_in(&mut self, tags: &[FileTags]) -> u32 {
        let mut kept = 0;
        for file in tags.iter().filter(|file| file.check() && !file.tags.is_empty()) {
            if !self.by_file.contains_key(&file.hash) && self.by_file.len() >= MAX_RELAYED_TAGS {
                if let Some(victim) = self.by_file.keys().next().copied() {
                    self.by_file.remove(&victim);
                }
            }
            self.by_file.insert(file.hash, file.tags.clone());
            kept += 1;
        }
        kept
    }

    /// The tags kept for those of `files` that have some.
    pub fn tags_for(&self, files: &[ContentHash]) -> Vec<FileTags> {
        (files.iter())
            .filter_map(|hash| {
                Some(FileTags {
                    hash: *hash,
                    tags: self.by_file.get(hash)?.clone(),
                })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(file: u8, pairs: &[(&str, &str)]) -> FileTags {
        FileTags {
            hash: ContentHash([file; 32]),
            tags: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn keeps_bounded_tags_and_refuses_oversized_ones() {
        let mut cache = TagCache::default();
        let long = "x".repeat(200);
        let kept = cache.relay_in(&[
            tags(1, &[("artist", "Nina Simone")]),
            tags(2, &[("title", &long)]),
            tags(3, &[]),
        ]);
        assert_eq!(kept, 1);
        let found = cache.tags_for(&[ContentHash([1; 32]), ContentHash([2; 32])]);
        assert_eq!(found, vec![tags(1, &[("artist", "Nina Simone")])]);
        for file in 0..=u8::MAX {
            for more in 0..100u8 {
                let mut entry = tags(file, &[("year", "1965")]);
                entry.hash.0[1] = more;
                cache.relay_in(&[entry]);
            }
        }
        assert!(cache.len() <= MAX_RELAYED_TAGS);
    }
}
