//! The node's shared state: what every connection, download and service of
//! one node reads and changes — its shares, caps, counters, upload slots,
//! the supernode role it plays, downloads waiting for a push.

use canopy_common::sync::{Lock, ReadWrite};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use canopy_common::proto::PeerId;
use canopy_supernode::Supernode;
use tokio::sync::{oneshot, Semaphore};

use crate::ratelimit::RateLimiter;
use crate::share::Shares;
use crate::swarm::SwarmDirectory;

/// Block requests one peer may have served at once, so a single peer
/// cannot take every upload slot.
pub const SLOTS_PER_PEER: usize = 8;

/// Upload policy.
#[derive(Debug, Clone)]
pub struct TransferLimits {
    /// Total upload rate in bytes per second (`None`: unlimited).
    pub max_upload_rate: Option<u64>,
    /// Block requests served at once; more get [`Response::Busy`](canopy_common::proto::Response::Busy).
    pub upload_slots: usize,
    /// Total download rate in bytes per second, over all of the node's
    /// downloads (`None`: unlimited).
    pub max_download_rate: Option<u64>,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            max_upload_rate: None,
            upload_slots: 64,
            max_download_rate: None,
        }
    }
}

/// Counters an operator (and a test) can read.
#[derive(Debug, Default)]
pub struct ServeStats {
    pub requests: AtomicU64,
    pub bad_frames: AtomicU64,
    pub busy: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Bytes received by this node's downloads: content (duplicates
    /// included) and block layers.
    pub bytes_received: AtomicU64,
}

/// Everything one node's connections, downloads and services share.
#[derive(Debug)]
pub struct NodeState {
    pub shares: Arc<Shares>,
    pub stats: Arc<ServeStats>,
    pub swarm: SwarmDirectory,
    /// Set while this node is a supernode (from the start, or from a
    /// promotion until a demotion).
    supernode: std::sync::RwLock<Option<Arc<Supernode>>>,
    /// Admission for bandwidth and reachability probes we serve.
    pub probes: crate::measure::ProbeGate,
    /// Downloads waiting for a firewalled source to connect to us.
    awaited_pushes: Mutex<HashMap<PeerId, Vec<oneshot::Sender<quinn::Connection>>>>,
    pub(crate) limiter: RateLimiter,
    /// Shared by every download of this node.
    pub(crate) download_limiter: RateLimiter,
    pub(crate) slots: Semaphore,
    /// Upload slots in use per peer.
    peer_slots: Arc<Mutex<HashMap<PeerId, usize>>>,
    /// The private network this node is in (unset: the public network).
    pub membership: std::sync::OnceLock<Arc<canopy_common::net::Membership>>,
    /// The user's votes, for swapping with peers met over a download (set
    /// by [`crate::Node::start`]; unset, swaps are refused and not asked).
    pub votes: std::sync::OnceLock<Arc<crate::votes::Votes>>,
    /// How peers reach this node, as far as it knows.
    pub reach: Mutex<crate::reach::Reachability>,
}

impl NodeState {
    pub fn new(shares: Arc<Shares>, limits: &TransferLimits, supernode: Option<Arc<Supernode>>) -> Self {
        NodeState {
            supernode: std::sync::RwLock::new(supernode),
            awaited_pushes: Mutex::default(),
            probes: Default::default(),
            shares,
            stats: Arc::default(),
            swarm: SwarmDirectory::default(),
            limiter: RateLimiter::optional(limits.max_upload_rate),
            download_limiter: RateLimiter::optional(limits.max_download_rate),
            slots: Semaphore::new(limits.upload_slots.max(1)),
            peer_slots: Arc::default(),
            membership: Default::default(),
            votes: Default::default(),
            reach: Mutex::default(),
        }
    }

    /// One of `peer`'s [`SLOTS_PER_PEER`] upload slots, released when dropped.
    pub(crate) fn peer_slot(&self, peer: PeerId) -> Option<PeerSlot> {
        let mut slots = self.peer_slots.locked();
        let used = slots.entry(peer).or_insert(0);
        if *used >= SLOTS_PER_PEER {
            return None;
        }
        *used += 1;
        Some(PeerSlot {
            peer,
            slots: self.peer_slots.clone(),
        })
    }

    /// Changes the upload and download caps (`None`: unlimited) from now on.
    pub fn set_rates(&self, upload: Option<u64>, download: Option<u64>) {
        self.limiter.set_rate(upload);
        self.download_limiter.set_rate(download);
    }

    /// The caps in force (`None`: unlimited).
    pub fn rates(&self) -> (Option<u64>, Option<u64>) {
        let cap = |limiter: &RateLimiter| limiter.active().map(RateLimiter::bytes_per_second);
        (cap(&self.limiter), cap(&self.download_limiter))
    }

    /// The supernode role this node plays now, if any.
    pub fn supernode(&self) -> Option<Arc<Supernode>> {
        self.supernode.read_locked().clone()
    }

    /// Takes up (`Some`) or leaves (`None`) the supernode role; returns the
    /// one it replaces.
    pub fn set_supernode(&self, supernode: Option<Arc<Supernode>>) -> Option<Arc<Supernode>> {
        std::mem::replace(&mut *self.supernode.write_locked(), supernode)
    }
}

impl NodeState {
    /// Resolves when `peer` connects to us (after we asked for a push).
    pub fn await_push(&self, peer: PeerId) -> oneshot::Receiver<quinn::Connection> {
        let (sender, receiver) = oneshot::channel();
        let mut awaited = self.awaited_pushes.locked();
        // Forget waiters that gave up.
        awaited.retain(|_, waiting| {
            waiting.retain(|w| !w.is_closed());
            !waiting.is_empty()
        });
        awaited.entry(peer).or_default().push(sender);
        receiver
    }

    /// Hands an incoming connection to downloads waiting for that peer.
    pub fn deliver_push(&self, peer: PeerId, connection: &quinn::Connection) {
        let waiting = self.awaited_pushes.locked().remove(&peer);
        for waiter in waiting.into_iter().flatten() {
            let _ = waiter.send(connection.clone());
        }
    }
}

/// A peer's hold on one upload slot.
pub(crate) struct PeerSlot {
    peer: PeerId,
    slots: Arc<Mutex<HashMap<PeerId, usize>>>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut slots = self.slots.locked();
        if let Some(used) = slots.get_mut(&self.peer) {
            *used -= 1;
            if *used == 0 {
                slots.remove(&self.peer);
            }
        }
    }
}
