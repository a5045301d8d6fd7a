//! The supernode host cache: other supernodes we have heard of, with when
//! we last heard of them, persisted so a restart needs no bootstrap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use canopy_common::proto::wire::{HostEntry, MAX_HOSTS_PER_MESSAGE};
use canopy_common::proto::{PeerAddr, PeerId};

/// Most supernodes remembered.
const MAX_HOSTS: usize = 1000;

#[derive(Debug, Default)]
pub struct HostCache {
    /// Peer → (address, last seen, seconds since the Unix epoch).
    entries: HashMap<PeerId, (PeerAddr, u64)>,
    path: Option<PathBuf>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl HostCache {
    /// Loads the cache from `path` (missing or damaged lines are skipped).
    pub fn open(path: Option<PathBuf>) -> Self {
        let mut cache = HostCache {
            entries: HashMap::new(),
            path,
        };
        if let Some(text) = cache.path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            let mut damaged = 0;
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                let mut parts = line.split_whitespace();
                let parsed = match (parts.next(), parts.next()) {
                    (Some(addr), Some(seen)) => addr.parse::<PeerAddr>().ok().zip(seen.parse::<u64>().ok()),
                    _ => None,
                };
                match parsed {
                    Some((addr, seen)) => {
                        cache.entries.insert(addr.id, (addr, seen));
                    }
                    None => damaged += 1,
                }
            }
            if damaged > 0 {
                tracing::warn!(
                    path = %cache.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                    damaged,
                    kept = cache.entries.len(),
                    "skipped damaged lines of the supernode host cache; it is rewritten as supernodes are met"
                );
            }
        }
        cache
    }

    /// Records `addr` as seen `age_secs` ago (keeping the freshest news).
    pub fn saw(&mut self, addr: PeerAddr, age_secs: u64) {
        let seen = now_secs().saturating_sub(age_secs);
        let entry = self.entries.entry(addr.id).or_insert((addr, seen));
        if seen >= entry.1 {
            *entry = (addr, seen);
        }
        if self.entries.len() > MAX_HOSTS {
            if let Some(stalest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(id, _)| *id)
            {
                self.entries.remove(&stalest);
            }
        }
    }

    pub fn forget(&mut self, id: &PeerId) {
        self.entries.remove(id);
    }

    /// Known supernodes, freshest first.
    pub fn freshest(&self) -> Vec<PeerAddr> {
        let mut entries: Vec<_> = self.entries.values().collect();
        entries.sort_by_key(|(_, seen)| std::cmp::Reverse(*seen));
        entries.into_iter().map(|(addr, _)| *addr).collect()
    }

    /// The freshest entries as sent to neighbours.
    pub fn message(&self, me: PeerAddr) -> Vec<HostEntry> {
        let now = now_secs();
        let mut entries = vec![HostEntry {
            addr: me,
            age_secs: 0,
        }];
        let mut known: Vec<_> = self
            .entries
            .values()
            .filter(|(addr, _)| addr.id != me.id)
            .collect();
        known.sort_by_key(|(_, seen)| std::cmp::Reverse(*seen));
        entries.extend(
            known
                .into_iter()
                .take(MAX_HOSTS_PER_MESSAGE - 1)
                .map(|(addr, seen)| HostEntry {
                    addr: *addr,
                    age_secs: now.saturating_sub(*seen).min(u64::from(u32::MAX)) as u32,
                }),
        );
        entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the cache to disk (best effort).
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let text: String = self
            .entries
            .values()
            .map(|(addr, seen)| format!("{addr} {seen}\n"))
            .collect();
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(error) = written {
            tracing::debug!(%error, path = %Path::new(path).display(), "cannot save the supernode host cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> PeerAddr {
        PeerAddr::new(PeerId([n; 32]), ([127, 0, 0, 1], 1000 + u16::from(n)).into())
    }

    #[test]
    fn freshest_first_persisted_and_bounded_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.txt");
        let mut cache = HostCache::open(Some(path.clone()));
        cache.saw(addr(1), 100);
        cache.saw(addr(2), 10);
        cache.saw(addr(1), 500); // older news does not overwrite newer
        assert_eq!(cache.freshest(), vec![addr(2), addr(1)]);
        cache.save();
        let reloaded = HostCache::open(Some(path));
        assert_eq!(reloaded.freshest(), vec![addr(2), addr(1)]);
        for n in 10..100 {
            cache.saw(addr(n), 0);
        }
        let message = cache.message(addr(200));
        assert_eq!(message.len(), MAX_HOSTS_PER_MESSAGE);
        assert_eq!(message[0].addr, addr(200));
    }
}
