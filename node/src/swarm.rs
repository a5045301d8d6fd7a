//! Who else wants a file: the peers that asked us for it recently.
//!
//! A downloader asks each source for others (source exchange, as eMule and
//! BitTorrent's PEX do), so downloaders of the same file find and help each
//! other without a tracker. Every node uses one UDP socket for dialing and
//! listening, so the address a peer dials us from is the address it can be
//! reached at.

use canopy_common::sync::Lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use canopy_common::proto::wire::MAX_SOURCES_PER_REPLY;
use canopy_common::proto::{ContentHash, PeerAddr, PeerId};

/// How long a peer stays listed after it last asked. A downloader asks for
/// blocks all along (each request refreshes it), so one that stopped drops
/// out within a minute; one whose connection ends (a one-shot `get` that
/// exited) is forgotten at once.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// Files tracked at once; the least recently asked-about is forgotten first.
const MAX_FILES: usize = 1024;

#[derive(Debug, Default)]
pub struct SwarmDirectory {
    files: Mutex<HashMap<ContentHash, Vec<(PeerAddr, Instant)>>>,
}

impl SwarmDirectory {
    /// Notes that `peer` is fetching `hash`.
    pub fn record(&self, hash: ContentHash, peer: PeerAddr, now: Instant) {
        let mut files = self.files.locked();
        if !files.contains_key(&hash) && files.len() >= MAX_FILES {
            let stalest = files
                .iter()
                .min_by_key(|(_, peers)| peers.iter().map(|(_, seen)| *seen).max())
                .map(|(hash, _)| *hash);
            if let Some(stalest) = stalest {
                files.remove(&stalest);
            }
        }
        let peers = files.entry(hash).or_default();
        peers.retain(|(known, seen)| known.id != peer.id && now.duration_since(*seen) < FRESH_FOR);
        peers.push((peer, now));
        if peers.len() > MAX_SOURCES_PER_REPLY {
            peers.remove(0);
        }
    }

    /// Forgets `peer` everywhere: its connection to us ended (a one-shot
    /// `get` that exited, a download that finished or gave up), so others
    /// should not be sent to it.
    pub fn forget(&self, peer: PeerId) {
        let mut files = self.files.locked();
        for peers in files.values_mut() {
            peers.retain(|(known, _)| known.id != peer);
        }
        files.retain(|_, peers| !peers.is_empty());
    }

    /// Recent peers for `hash`, newest first, excluding `asker`.
    pub fn peers(&self, hash: &ContentHash, asker: PeerId, now: Instant) -> Vec<PeerAddr> {
        let files = self.files.locked();
        let Some(peers) = files.get(hash) else {
            return Vec::new();
        };
        peers
            .iter()
            .rev()
            .filter(|(peer, seen)| peer.id != asker && now.duration_since(*seen) < FRESH_FOR)
            .map(|(peer, _)| *peer)
            .take(MAX_SOURCES_PER_REPLY)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerAddr {
        PeerAddr::new(PeerId([n; 32]), ([127, 0, 0, 1], 1000 + u16::from(n)).into())
    }

    #[test]
    fn lists_recent_peers_but_not_the_asker_and_is_bounded() {
        let swarm = SwarmDirectory::default();
        let hash = ContentHash([1; 32]);
        let now = Instant::now();
        for n in 0..40 {
            swarm.record(hash, peer(n), now);
        }
        swarm.record(hash, peer(39), now);
        let listed = swarm.peers(&hash, peer(39).id, now);
        assert_eq!(listed.len(), MAX_SOURCES_PER_REPLY - 1);
        assert!(!listed.contains(&peer(39)));
        assert_eq!(listed[0], peer(38));
        assert!(swarm.peers(&hash, peer(0).id, now + FRESH_FOR).is_empty());
    }

    #[test]
    fn a_peer_whose_connection_ended_is_no_longer_offered() {
        let swarm = SwarmDirectory::default();
        let (one, other) = (ContentHash([1; 32]), ContentHash([2; 32]));
        let now = Instant::now();
        swarm.record(one, peer(1), now);
        swarm.record(one, peer(2), now);
        swarm.record(other, peer(1), now);
        swarm.forget(peer(1).id);
        assert_eq!(swarm.peers(&one, peer(9).id, now), vec![peer(2)]);
        assert!(swarm.peers(&other, peer(9).id, now).is_empty());
    }
}
