//! Supernodes this node has reached before, so later commands need no
//! `--bootstrap`. One `PEERID@HOST:PORT` per line, most recent first.

use std::path::{Path, PathBuf};

use canopy_common::proto::PeerAddr;

use crate::fileio::write_atomically;

const FILE: &str = "supernodes.txt";
const MAX_ENTRIES: usize = 64;

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Known supernodes, most recent first. A damaged line is skipped.
pub fn load(data_dir: &Path) -> Vec<PeerAddr> {
    let Ok(text) = std::fs::read_to_string(path(data_dir)) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let entries: Vec<PeerAddr> = lines.iter().filter_map(|line| line.parse().ok()).collect();
    if entries.len() < lines.len() {
        tracing::warn!(
            path = %path(data_dir).display(),
            damaged = lines.len() - entries.len(),
            "skipped damaged lines of the supernode cache; it is rewritten as supernodes are reached"
        );
    }
    entries.into_iter().take(MAX_ENTRIES).collect()
}

/// Moves `supernode` to the front of the cache.
pub fn remember(data_dir: &Path, supernode: PeerAddr) {
    let mut entries = load(data_dir);
    entries.retain(|known| known.id != supernode.id);
    entries.insert(0, supernode);
    entries.truncate(MAX_ENTRIES);
    let text: String = entries.iter().map(|entry| format!("{entry}\n")).collect();
    if let Err(error) =
        std::fs::create_dir_all(data_dir).and_then(|()| write_atomically(&path(data_dir), text.as_bytes()))
    {
        tracing::debug!(%error, "cannot save the supernode cache");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::PeerId;

    #[test]
    fn most_recent_first_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let a = PeerAddr::new(PeerId([1; 32]), ([127, 0, 0, 1], 1).into());
        let b = PeerAddr::new(PeerId([2; 32]), ([127, 0, 0, 1], 2).into());
        remember(dir.path(), a);
        remember(dir.path(), b);
        remember(dir.path(), a);
        assert_eq!(load(dir.path()), vec![a, b]);
        std::fs::write(dir.path().join(FILE), "garbage\n").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
