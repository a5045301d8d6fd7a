//! How many connections one host may hold: a cap per IP address, counted
//! from the first packet, and a cap per peer id, counted once the handshake
//! proves the id. One host (or one key) then cannot exhaust a node's
//! connections, tasks and memory, while a whole office behind one NAT still
//! fits under the address cap.

use canopy_common::sync::Lock;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use canopy_common::proto::PeerId;

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections from one IP address at once.
    pub per_address: usize,
    /// Connections from one peer id at once.
    pub per_peer: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            per_address: 64,
            per_peer: 4,
        }
    }
}

/// Counts of live connections by address and by peer.
#[derive(Debug, Default)]
pub struct Admission {
    limits: ConnectionLimits,
    by_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    by_peer: Arc<Mutex<HashMap<PeerId, usize>>>,
    /// Connections refused so far, for metrics.
    pub refused: std::sync::atomic::AtomicU64,
}

/// A counted connection; the count drops with it.
#[derive(Debug)]
pub struct Admitted<K: Eq + Hash + Copy> {
    key: K,
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Copy> Drop for Admitted<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.locked();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

fn admit<K: Eq + Hash + Copy>(
    counts: &Arc<Mutex<HashMap<K, usize>>>,
    key: K,
    cap: usize,
) -> Option<Admitted<K>> {
    let mut map = counts.locked();
    let count = map.entry(key).or_insert(0);
    if *count >= cap {
        return None;
    }
    *count += 1;
    Some(Admitted {
        key,
        counts: counts.clone(),
    })
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Self {
        Admission {
            limits,
            ..Admission::default()
        }
    }

    /// Counts a connection attempt from `address`; `None` if it has too many.
    pub fn address(&self, address: IpAddr) -> Option<Admitted<IpAddr>> {
        let admitted = admit(&self.by_address, address, self.limits.per_address);
        self.count_refusal(admitted.is_none());
        admitted
    }

    /// Counts a connection from `peer`; `None` if it has too many.
    pub fn peer(&self, peer: PeerId) -> Option<Admitted<PeerId>> {
        let admitted = admit(&self.by_peer, peer, self.limits.per_peer);
        self.count_refusal(admitted.is_none());
        admitted
    }

    fn count_refusal(&self, refused: bool) {
        if refused {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_come_back() {
        let admission = Admission::new(ConnectionLimits {
            per_address: 2,
            per_peer: 1,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = admission.address(ip).unwrap();
        let _second = admission.address(ip).unwrap();
        assert!(admission.address(ip).is_none());
        assert!(admission.address("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert!(admission.address(ip).is_some());
        let peer = PeerId([9; 32]);
        let held = admission.peer(peer).unwrap();
        assert!(admission.peer(peer).is_none());
        drop(held);
        assert!(admission.peer(peer).is_some());
        assert_eq!(admission.refused.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
