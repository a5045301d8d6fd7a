//! What the simulator's parts share: who is online and in which part, who
//! is linked to whom, the event queue and the counters.
//!
//! [`crate::sim`] changes the network as nodes come and go and the election
//! runs; [`crate::search`] and [`crate::qrp`] read it and schedule their
//! messages on its queue. Neither knows the other's state, and nothing
//! here knows either of them.

use canopy_common::proto::id::PeerId;

use crate::clock::{millis, EventQueue, Time};
use crate::live::LiveSet;
use crate::metrics::Tally;
use crate::population::Population;
use crate::rng::{splitmix, Rng};
use crate::scenario::Scenario;

/// "No supernode" in a leaf's session list.
pub const NONE: u32 = u32::MAX;
/// Leaf sessions a node can hold (Canopy keeps two).
pub const MAX_SESSIONS: usize = 2;

/// The node's current part in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Offline,
    Leaf,
    /// Routes queries: a supernode, or any node in a flat network.
    Router,
}

/// Something that happens at a point in simulated time. Kept to 20 bytes:
/// there may be millions pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Arrive(u32),
    Depart(u32),
    /// Query number `.0` is issued by its origin.
    Query(u32),
    /// A leaf's query reaches its supernode.
    LeafQuery {
        query: u32,
        leaf: u32,
        supernode: u32,
    },
    /// A flooded query reaches router `to` from router `from`.
    Flood {
        query: u32,
        from: u32,
        to: u32,
        ttl: u8,
        hops: u8,
    },
    /// Hits found by `responder` travel from `from` to `to` on the way back.
    Hits {
        query: u32,
        responder: u32,
        from: u32,
        to: u32,
    },
    /// Hits found by `responder` reach the node that searched.
    HitsHome {
        query: u32,
        responder: u32,
    },
    /// The query's figures are final.
    Finish(u32),
    /// Query `.0`'s dynamic search may take its next step.
    DynamicTick(u32),
    /// A leaf looks for supernodes to fill its sessions.
    Reattach(u32),
    /// A router looks for more overlay neighbours.
    TopUp(u32),
    /// Every node with an election state observes the network.
    Observe,
    /// A point of the timeline.
    Sample,
}

/// The simulated node's id: its index in the first four bytes. The router
/// only compares ids, so any injective mapping will do.
pub fn peer(node: u32) -> PeerId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&node.to_le_bytes());
    bytes[4] = 0xca;
    PeerId(bytes)
}

pub fn node_of(peer: &PeerId) -> u32 {
    u32::from_le_bytes([peer.0[0], peer.0[1], peer.0[2], peer.0[3]])
}

/// The simulated network as every part of the simulator sees it.
pub struct World {
    pub scenario: Scenario,
    pub population: Population,
    pub queue: EventQueue<Event>,
    pub state: Vec<State>,
    pub neighbours: Vec<Vec<u32>>,
    /// A supernode's leaves.
    pub leaves: Vec<Vec<u32>>,
    /// A leaf's supernodes ([`NONE`] for an empty place).
    pub sessions: Vec<[u32; MAX_SESSIONS]>,
    /// Everyone online.
    pub live: LiveSet,
    /// Churn's randomness; queries draw their origins from it too.
    pub churn_rng: Rng,
    pub seed: u64,
    latency_seed: u64,
    pub tally: Tally,
}

impl World {
    /// Nobody online yet; `tally` counts the query phase.
    pub fn new(scenario: Scenario, population: Population, seed: u64, tally: Tally) -> Self {
        let n = population.nodes.len();
        World {
            scenario,
            population,
            queue: EventQueue::default(),
            state: vec![State::Offline; n],
            neighbours: vec![Vec::new(); n],
            leaves: vec![Vec::new(); n],
            sessions: vec![[NONE; MAX_SESSIONS]; n],
            live: LiveSet::with_capacity(n),
            churn_rng: Rng::stream(seed, 3),
            seed,
            latency_seed: splitmix(seed ^ 0x1a7e),
            tally,
        }
    }

    /// A seed for what is drawn once per node or pair and fixed for the
    /// run (latencies, FastTrack's leaf slots).
    pub fn latency_seed(&self) -> u64 {
        self.latency_seed
    }

    /// One-way latency between two nodes: drawn once per pair (by hashing
    /// the pair with the run's seed), uniform in the scenario's range.
    pub fn latency(&self, a: u32, b: u32) -> Time {
        if a == b {
            return 0;
        }
        let (low, high) = (a.min(b) as u64, a.max(b) as u64);
        let min = millis(self.scenario.latency.min_ms);
        let span = millis(self.scenario.latency.max_ms).saturating_sub(min);
        min + splitmix(self.latency_seed ^ (low << 32 | high)) % (span + 1)
    }

    /// The routers whose index lists `holder`'s files (itself, if it
    /// routes; its supernodes, if a leaf; `NONE` in unused places), or
    /// `None` while it is offline.
    pub fn indexed_by(&self, holder: u32) -> Option<[u32; MAX_SESSIONS]> {
        match self.state[holder as usize] {
            State::Offline => None,
            State::Router => {
                let mut routers = [NONE; MAX_SESSIONS];
                routers[0] = holder;
                Some(routers)
            }
            State::Leaf => Some(self.sessions[holder as usize]),
        }
    }
}
