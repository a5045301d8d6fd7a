//! The simulated network: who is online, who routes, who is linked to whom,
//! and how that changes with churn and the supernode election.
//!
//! Every router is a real [`Router`] from `canopy_common::proto::routing`;
//! every role decision in Canopy mode is the real
//! [`decide`] at arrival and the
//! real [`Election`] state machine afterwards. The simulator only supplies
//! what a real node would learn from the network (neighbour lists, the free
//! slots of a few supernodes, the time) and carries out the actions.
//!
//! Searching (queries, floods, hits) lives in [`crate::search`]; this file
//! is the population and the overlay.

use canopy_common::proto::budget::Budgets;
use canopy_common::proto::election::{decide, disqualified, Change, Election, ElectionConfig};
use canopy_common::proto::election::{NetworkHints, Observation, Role};
use canopy_common::proto::id::PeerId;
use canopy_common::proto::nearest::keep_nearest;
use canopy_common::proto::routing::{Router, RouterConfig};

use crate::clock::{as_duration, millis, seconds, EventQueue, Time, NEVER};
use crate::live::LiveSet;
use crate::metrics::Tally;
use crate::population::Population;
use crate::rng::{splitmix, Rng};
use crate::scenario::{Scenario, Selection};
use crate::search::QueryState;

/// "No supernode" in a leaf's session list.
pub const NONE: u32 = u32::MAX;
/// Leaf sessions a node can hold (Canopy keeps two).
pub const MAX_SESSIONS: usize = 2;
/// Supernodes a node asks about free slots before deciding or promoting.
const HINT_SAMPLE: usize = 8;
/// Random supernodes a leaf tries before it gives up for a while.
const ATTACH_TRIES: usize = 24;

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

/// The whole simulated network.
pub struct Sim {
    pub scenario: Scenario,
    pub population: Population,
    pub(crate) queue: EventQueue<Event>,
    pub(crate) state: Vec<State>,
    pub(crate) routers: Vec<Option<Box<Router>>>,
    /// Each router's per-searcher search budgets, as a supernode keeps
    /// them (made on a router's first search).
    pub(crate) search_budgets: std::collections::HashMap<u32, Budgets<u32>>,
    pub(crate) elections: Vec<Option<Box<Election>>>,
    pub(crate) neighbours: Vec<Vec<u32>>,
    /// A supernode's leaves.
    pub(crate) leaves: Vec<Vec<u32>>,
    /// A leaf's supernodes ([`NONE`] for an empty place).
    pub(crate) sessions: Vec<[u32; MAX_SESSIONS]>,
    /// Leaf slots of a supernode.
    pub(crate) slots: Vec<u32>,
    /// When the node's processing queue empties.
    pub(crate) busy_until: Vec<Time>,
    pub(crate) live: LiveSet,
    pub(crate) routing: LiveSet,
    /// When each leaf lost its last supernode ([`NEVER`]: it has one).
    pub(crate) orphan_since: Vec<Time>,
    pub(crate) queries: Vec<QueryState>,
    pub(crate) tally: Tally,
    /// Query messages each node processed during the query phase.
    pub(crate) processed: Vec<u32>,
    /// Search bytes each node sent and received during the query phase.
    pub(crate) traffic: Vec<u64>,
    /// Time each node spent routing during the query phase.
    pub(crate) routing_time: Vec<Time>,
    pub(crate) routing_since: Vec<Time>,
    pub(crate) churn_rng: Rng,
    pub(crate) topology_rng: Rng,
    pub(crate) router_config: RouterConfig,
    pub(crate) election_config: ElectionConfig,
    pub(crate) seed: u64,
    pub(crate) latency_seed: u64,
    pub(crate) query_phase: (Time, Time),
    pub(crate) end: Time,
    /// Scratch list of neighbour ids handed to the router.
    pub(crate) scratch: Vec<PeerId>,
    /// Routing decisions for `scratch`, when keyword routing is on.
    pub(crate) decisions: Vec<canopy_common::proto::routing::Forward>,
    /// Keyword tables, modelled (`None`: plain flooding).
    pub(crate) tables: Option<crate::qrp::TableModel>,
    /// With home routers modelled: every (downloader, source) pair of the
    /// query phase and the way it got through.
    pub(crate) transfers: Vec<crate::traversal::Transfer>,
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

impl Sim {
    /// What was counted during the run.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn new(scenario: Scenario, seed: u64) -> Self {
        let population = Population::generate(&scenario, seed);
        Self::with_population(scenario, population, seed)
    }

    pub fn with_population(scenario: Scenario, population: Population, seed: u64) -> Self {
        let n = population.nodes.len();
        let router_config = RouterConfig {
            max_ttl: scenario.topology.max_ttl,
            default_ttl: scenario.topology.ttl,
            max_entries: scenario.router.max_entries,
            entry_lifetime: as_duration(seconds(scenario.router.entry_lifetime_s)),
            max_forwarded_per_second: scenario.router.max_forwarded_per_second,
        };
        let scale = scenario.supernodes.election_timer_scale;
        let defaults = ElectionConfig::default();
        let election_config = ElectionConfig {
            min_tenure: defaults.min_tenure.mul_f64(scale),
            shortage_for: defaults.shortage_for.mul_f64(scale),
            idle_for: defaults.idle_for.mul_f64(scale),
            ..defaults
        };
        let warmup = seconds(scenario.queries.warmup_s);
        let end = seconds(crate::population::run_length(&scenario));
        let query_end = end - seconds(scenario.queries.window_s);
        let mut sim = Sim {
            population,
            queue: EventQueue::default(),
            state: vec![State::Offline; n],
            routers: (0..n).map(|_| None).collect(),
            search_budgets: std::collections::HashMap::new(),
            elections: (0..n).map(|_| None).collect(),
            neighbours: vec![Vec::new(); n],
            leaves: vec![Vec::new(); n],
            sessions: vec![[NONE; MAX_SESSIONS]; n],
            slots: vec![0; n],
            busy_until: vec![0; n],
            live: LiveSet::with_capacity(n),
            routing: LiveSet::with_capacity(n),
            orphan_since: vec![NEVER; n],
            queries: Vec::new(),
            tally: Tally::default(),
            processed: vec![0; n],
            traffic: vec![0; n],
            routing_time: vec![0; n],
            routing_since: vec![NEVER; n],
            churn_rng: Rng::stream(seed, 3),
            topology_rng: Rng::stream(seed, 4),
            router_config,
            election_config,
            seed,
            latency_seed: splitmix(seed ^ 0x1a7e),
            query_phase: (warmup, query_end),
            end,
            scratch: Vec::new(),
            decisions: Vec::new(),
            tables: None,
            transfers: Vec::new(),
            scenario,
        };
        if sim.scenario.router.keyword_tables {
            sim.tables = Some(crate::qrp::TableModel::new(&sim));
        }
        sim
    }

    /// Runs the scenario to its end.
    pub fn run(&mut self) {
        if !self.population.nodes.is_empty() {
            let first = self.population.nodes[0].arrive;
            self.queue.at(first, Event::Arrive(0));
        }
        self.plan_queries();
        self.queue.at(0, Event::Sample);
        if self.scenario.supernodes.selection == Selection::Election && !self.scenario.is_flat() {
            self.queue
                .at(seconds(self.scenario.supernodes.observe_every_s), Event::Observe);
        }
        self.run_until(self.end);
        self.close_books();
    }

    /// Handles events until the queue is empty or `until` is reached.
    pub fn run_until(&mut self, until: Time) {
        while let Some((now, event)) = self.queue.pop() {
            if now > until {
                break;
            }
            self.handle(now, event);
        }
    }

    fn handle(&mut self, now: Time, event: Event) {
        match event {
            Event::Arrive(node) => {
                let next = node + 1;
                if let Some(spec) = self.population.nodes.get(next as usize) {
                    self.queue.at(spec.arrive, Event::Arrive(next));
                }
                self.arrive(node, now);
            }
            Event::Depart(node) => self.depart(node, now),
            Event::Reattach(node) => {
                if self.state[node as usize] == State::Leaf {
                    self.attach(node, now);
                }
            }
            Event::TopUp(node) => {
                if self.state[node as usize] == State::Router {
                    self.link_up(node, now);
                }
            }
            Event::Observe => {
                self.observe_all(now);
                let every = seconds(self.scenario.supernodes.observe_every_s);
                self.queue.at(now + every, Event::Observe);
            }
            Event::Sample => {
                self.sample(now);
                self.queue.at(now + seconds(60.0), Event::Sample);
            }
            Event::Query(q) => self.start_query(q, now),
            Event::LeafQuery {
                query,
                leaf,
                supernode,
            } => self.leaf_query(query, leaf, supernode, now),
            Event::Flood {
                query,
                from,
                to,
                ttl,
                hops,
            } => self.flood(query, from, to, ttl, hops, now),
            Event::Hits {
                query,
                responder,
                from,
                to,
            } => self.hits(query, responder, from, to, now),
            Event::HitsHome { query, responder } => self.hits_home(query, responder, now),
            Event::Finish(q) => self.finish_query(q),
            Event::DynamicTick(q) => self.dynamic_tick(q, now),
        }
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

    fn is_flat(&self) -> bool {
        self.scenario.is_flat()
    }

    fn arrive(&mut self, node: u32, now: Time) {
        let spec = self.population.nodes[node as usize];
        self.live.insert(node);
        if spec.depart != NEVER {
            self.queue.at(spec.depart, Event::Depart(node));
        }
        if self.is_flat() {
            self.become_router(node, now);
            return;
        }
        let role = self.choose_role(node, now);
        if self.scenario.supernodes.selection == Selection::Election {
            let profile = self.population.profile(node, now);
            // A node that can never qualify has nothing to observe.
            if disqualified(&profile, &self.election_config.thresholds).is_none() {
                let election = Election::new(self.election_config.clone(), role, as_duration(now));
                self.elections[node as usize] = Some(Box::new(election));
            }
        }
        match role {
            Role::Supernode => self.become_router(node, now),
            Role::Leaf => {
                self.state[node as usize] = State::Leaf;
                self.attach(node, now);
            }
        }
    }

    fn choose_role(&mut self, node: u32, now: Time) -> Role {
        let hints = self.hints(node);
        match self.scenario.supernodes.selection {
            Selection::Election => {
                let profile = self.population.profile(node, now);
                let decision = decide(&profile, &hints, &self.election_config.thresholds, false);
                decision.role
            }
            Selection::Capacity => {
                let short = hints.supernodes == 0
                    || hints.short_of_slots(self.election_config.thresholds.short_of_slots);
                if self.capable(node) && short {
                    Role::Supernode
                } else {
                    Role::Leaf
                }
            }
        }
    }

    /// FastTrack's rule of thumb: enough capacity and reachable.
    fn capable(&self, node: u32) -> bool {
        let spec = &self.population.nodes[node as usize];
        !spec.firewalled && spec.level >= self.scenario.supernodes.min_level
    }

    /// What a node hears about supernode slots: its own supernodes plus a
    /// few random ones (a host cache's worth), never the whole network.
    fn hints(&mut self, node: u32) -> NetworkHints {
        let mut asked: [u32; HINT_SAMPLE] = [NONE; HINT_SAMPLE];
        let mut count = 0;
        for &sn in &self.sessions[node as usize] {
            if sn != NONE {
                asked[count] = sn;
                count += 1;
            }
        }
        let mut tries = 0;
        while count < HINT_SAMPLE && tries < 2 * HINT_SAMPLE && !self.routing.is_empty() {
            tries += 1;
            let Some(sn) = self.routing.pick(&mut self.topology_rng) else {
                break;
            };
            if sn != node && !asked[..count].contains(&sn) {
                asked[count] = sn;
                count += 1;
            }
        }
        let mut hints = NetworkHints::default();
        for &sn in &asked[..count] {
            let slots = self.slots[sn as usize] as u64;
            hints.supernodes += 1;
            hints.total_slots += slots;
            hints.free_slots += slots.saturating_sub(self.leaves[sn as usize].len() as u64);
        }
        hints
    }

    /// Leaf slots a new supernode offers. Canopy sizes them as
    /// `SupernodeConfig::for_this_machine` does (100 per GiB, 50 to 5,000);
    /// FastTrack mode draws them from the scenario's range.
    fn slots_for(&self, node: u32, now: Time) -> u32 {
        match self.scenario.supernodes.selection {
            Selection::Election => {
                let gib = self.population.profile(node, now).memory_total as f64 / (1u64 << 30) as f64;
                ((gib * 100.0) as u32).clamp(50, 5000)
            }
            Selection::Capacity => {
                let s = &self.scenario.supernodes;
                let span = (s.leaves_max - s.leaves_min + 1) as u64;
                s.leaves_min + (splitmix(self.latency_seed ^ !(node as u64)) % span) as u32
            }
        }
    }

    pub(crate) fn become_router(&mut self, node: u32, now: Time) {
        let i = node as usize;
        if self.state[i] == State::Leaf {
            self.drop_sessions(node, now);
        }
        self.state[i] = State::Router;
        self.routers[i] = Some(Box::new(Router::new(self.router_config.clone())));
        if !self.is_flat() {
            self.slots[i] = self.slots_for(node, now);
        }
        self.routing.insert(node);
        self.routing_since[i] = now.max(self.query_phase.0);
        self.link_up(node, now);
    }

    /// Dials random routers until the node has `degree_min` neighbours;
    /// tries again later if the network is too small.
    ///
    /// A router already at `degree_max` that is dialled while the newcomer
    /// still needs two links hands one of its own links over: it drops
    /// neighbour Y and both it and Y link to the newcomer (so no degree but
    /// the newcomer's changes). Without this, a network that fills up as it
    /// grows can only link newcomers to the few recent nodes with room, and
    /// the overlay becomes a long band instead of a random graph; with it,
    /// a degree-d network grows as a uniform random d-regular graph does.
    fn link_up(&mut self, node: u32, now: Time) {
        let min = self.scenario.topology.degree_min as usize;
        let max = self.scenario.topology.degree_max as usize;
        let missing = min.saturating_sub(self.neighbours[node as usize].len());
        let mut tries = 20 * missing;
        while self.neighbours[node as usize].len() < min && tries > 0 {
            tries -= 1;
            let Some(mut other) = self.routing.pick(&mut self.topology_rng) else {
                break;
            };
            if other == node || self.neighbours[node as usize].contains(&other) {
                continue;
            }
            // Size up more candidates with room; keep the nearest.
            let mut sized_up = vec![(other, self.latency(node, other))];
            for _ in 1..self.scenario.topology.closest_of {
                let Some(candidate) = self.routing.pick(&mut self.topology_rng) else {
                    break;
                };
                let usable = candidate != node
                    && !self.neighbours[node as usize].contains(&candidate)
                    && self.neighbours[candidate as usize].len() < max;
                if usable {
                    sized_up.push((candidate, self.latency(node, candidate)));
                }
            }
            other = keep_nearest(sized_up, 1).0[0].0;
            if self.neighbours[other as usize].len() < max {
                self.link(node, other, now);
                continue;
            }
            if min - self.neighbours[node as usize].len() < 2 {
                continue;
            }
            let list = &self.neighbours[other as usize];
            let handed = list[self.topology_rng.below(list.len() as u64) as usize];
            if handed == node || self.neighbours[node as usize].contains(&handed) {
                continue;
            }
            self.unlink(other, handed);
            self.link(node, other, now);
            self.link(node, handed, now);
        }
        if self.neighbours[node as usize].len() < min && self.routing.len() > min {
            let retry = seconds(self.scenario.topology.maintain_s.max(5.0));
            self.queue.at(now + retry, Event::TopUp(node));
        }
    }

    fn link(&mut self, a: u32, b: u32, now: Time) {
        self.neighbours[a as usize].push(b);
        self.neighbours[b as usize].push(a);
        if self.keyword_tables() {
            self.count_new_link(a, b, now);
        }
    }

    fn unlink(&mut self, a: u32, b: u32) {
        self.neighbours[a as usize].retain(|&n| n != b);
        self.neighbours[b as usize].retain(|&n| n != a);
    }

    fn depart(&mut self, node: u32, now: Time) {
        match self.state[node as usize] {
            State::Offline => return,
            State::Router => self.stop_routing(node, now, false),
            State::Leaf => {
                self.drop_sessions(node, now);
                self.end_orphan(node, now, false);
            }
        }
        self.state[node as usize] = State::Offline;
        self.elections[node as usize] = None;
        self.live.remove(node);
    }

    /// The router goes: its neighbours look for others, its leaves notice
    /// (at once if it said goodbye, after the idle timeout if it did not),
    /// or, when it hands them over (`handover`), move at once.
    fn stop_routing(&mut self, node: u32, now: Time, handover: bool) {
        let i = node as usize;
        // Out of the routing set first, so a handed-over leaf cannot pick it again.
        self.routing.remove(node);
        self.slots[i] = 0;
        let maintain = seconds(self.scenario.topology.maintain_s);
        for other in std::mem::take(&mut self.neighbours[i]) {
            let list = &mut self.neighbours[other as usize];
            list.retain(|&n| n != node);
            if list.len() < self.scenario.topology.degree_min as usize {
                self.queue.at(now + maintain, Event::TopUp(other));
            }
        }
        let detect = seconds(self.scenario.supernodes.detect_s);
        let graceful = self.scenario.supernodes.graceful_share;
        for leaf in std::mem::take(&mut self.leaves[i]) {
            let sessions = &mut self.sessions[leaf as usize];
            for place in sessions.iter_mut() {
                if *place == node {
                    *place = NONE;
                }
            }
            if sessions.iter().all(|&s| s == NONE) {
                self.orphan_since[leaf as usize] = now;
            }
            if handover {
                self.attach(leaf, now);
            } else {
                let delay = if self.churn_rng.chance(graceful) {
                    0
                } else {
                    detect
                };
                self.queue.at(now + delay, Event::Reattach(leaf));
            }
        }
        if self.routing_since[i] != NEVER {
            let until = now.min(self.query_phase.1.max(self.query_phase.0));
            self.routing_time[i] += until.saturating_sub(self.routing_since[i]);
            self.routing_since[i] = NEVER;
        }
        self.routers[i] = None;
        self.search_budgets.remove(&node);
    }

    fn drop_sessions(&mut self, node: u32, now: Time) {
        for router in self.sessions[node as usize] {
            if router != NONE && self.keyword_tables() {
                self.count_table_change(node, router, now);
            }
        }
        for place in self.sessions[node as usize].iter_mut() {
            if *place != NONE {
                let list = &mut self.leaves[*place as usize];
                if let Some(at) = list.iter().position(|&l| l == node) {
                    list.swap_remove(at);
                }
                *place = NONE;
            }
        }
    }

    /// Fills the leaf's sessions with random supernodes that have room. A
    /// leaf left with none keeps trying (FastTrack mode: a capable one
    /// becomes a supernode itself).
    pub(crate) fn attach(&mut self, node: u32, now: Time) {
        let wanted = (self.scenario.supernodes.sessions as usize).clamp(1, MAX_SESSIONS);
        let mut tries = ATTACH_TRIES;
        let mut handshake = 0;
        while tries > 0 {
            let have = self.sessions[node as usize]
                .iter()
                .filter(|&&s| s != NONE)
                .count();
            if have >= wanted {
                break;
            }
            tries -= 1;
            // Size up to `closest_of` supernodes with room; join the nearest.
            let mut sized_up: Vec<(u32, Time)> = Vec::new();
            while sized_up.len() < self.scenario.supernodes.closest_of.max(1) as usize {
                let Some(sn) = self.routing.pick(&mut self.topology_rng) else {
                    break;
                };
                let room = (self.leaves[sn as usize].len() as u32) < self.slots[sn as usize];
                if sn == node || !room || self.sessions[node as usize].contains(&sn) {
                    if self.scenario.supernodes.closest_of <= 1 {
                        break;
                    }
                    tries = tries.saturating_sub(1);
                    if tries == 0 {
                        break;
                    }
                    continue;
                }
                sized_up.push((sn, self.latency(node, sn)));
            }
            let Some(&(sn, _)) = keep_nearest(sized_up, 1).0.first() else {
                continue;
            };
            let place = self.sessions[node as usize].iter().position(|&s| s == NONE);
            if let Some(place) = place {
                self.sessions[node as usize][place] = sn;
                self.leaves[sn as usize].push(node);
                if self.keyword_tables() {
                    self.count_table_change(node, sn, now);
                }
                // A QUIC handshake and the publish: about three one-way trips.
                handshake = handshake.max(3 * self.latency(node, sn));
            }
        }
        let have = self.sessions[node as usize]
            .iter()
            .filter(|&&s| s != NONE)
            .count();
        if have == 0 {
            if self.orphan_since[node as usize] == NEVER {
                self.orphan_since[node as usize] = now;
            }
            if self.scenario.supernodes.selection == Selection::Capacity && self.capable(node) {
                self.end_orphan(node, now, true);
                self.become_router(node, now);
                self.tally.promotions += 1;
                return;
            }
            let retry = seconds(self.scenario.supernodes.detect_s.max(1.0));
            self.queue.at(now + retry, Event::Reattach(node));
        } else {
            self.end_orphan(node, now + handshake, true);
            if have < wanted {
                self.queue.at(now + seconds(30.0), Event::Reattach(node));
            }
        }
    }

    /// Closes a spell without a supernode, if one is open. `resolved`:
    /// the leaf found a supernode (rather than leaving the network).
    fn end_orphan(&mut self, node: u32, now: Time, resolved: bool) {
        let since = std::mem::replace(&mut self.orphan_since[node as usize], NEVER);
        if since != NEVER {
            let spell = now.saturating_sub(since);
            if now >= self.query_phase.0 && since < self.query_phase.1 {
                self.tally.orphan_spells.push(spell);
                if !resolved {
                    self.tally.orphan_unresolved += 1;
                }
            }
        }
    }

    /// The run-time election: every node that could ever be a supernode
    /// feeds the real [`Election`] what it sees, and obeys its changes.
    fn observe_all(&mut self, now: Time) {
        for at in 0..self.live.len() {
            let Some(&node) = self.live.items().get(at) else {
                break;
            };
            let Some(mut election) = self.elections[node as usize].take() else {
                continue;
            };
            let hints = self.hints(node);
            let seen = Observation {
                hints,
                leaves: self.leaves[node as usize].len() as u32,
                neighbours: self.neighbours[node as usize].len() as u32,
            };
            let profile = self.population.profile(node, now);
            let change = election.observe(&profile, &seen, as_duration(now));
            self.elections[node as usize] = Some(election);
            match change {
                Some(Change::Promote { .. }) if self.state[node as usize] == State::Leaf => {
                    self.end_orphan(node, now, true);
                    self.become_router(node, now);
                    self.tally.promotions += 1;
                }
                Some(Change::Demote { .. }) if self.state[node as usize] == State::Router => {
                    self.stop_routing(node, now, true);
                    self.state[node as usize] = State::Leaf;
                    self.attach(node, now);
                    self.tally.demotions += 1;
                }
                _ => {}
            }
        }
    }

    fn sample(&mut self, now: Time) {
        let routers = self.routing.len();
        let online = self.live.len();
        let leaves = online - routers;
        let orphans = self
            .live
            .items()
            .iter()
            .filter(|&&n| self.orphan_since[n as usize] != NEVER)
            .count();
        let degree: usize = self
            .routing
            .items()
            .iter()
            .map(|&n| self.neighbours[n as usize].len())
            .sum();
        let sessions: usize = self
            .routing
            .items()
            .iter()
            .map(|&n| self.leaves[n as usize].len())
            .sum();
        self.tally.timeline.push(crate::metrics::Point {
            t: now,
            online: online as u32,
            routers: routers as u32,
            orphans: orphans as u32,
            mean_degree: degree as f64 / routers.max(1) as f64,
            leaves_per_router: leaves as f64 / routers.max(1) as f64,
            sessions_per_router: sessions as f64 / routers.max(1) as f64,
        });
    }

    /// Closes open routing spells at the end of the run.
    pub(crate) fn close_books(&mut self) {
        let until = self.query_phase.1.max(self.query_phase.0);
        for i in 0..self.routing_since.len() {
            if self.routing_since[i] != NEVER {
                self.routing_time[i] += until.saturating_sub(self.routing_since[i]);
                self.routing_since[i] = NEVER;
            }
        }
        self.tally.events = self.queue.scheduled();
        self.tally.peak_pending = self.queue.peak();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::{Catalogue, NodeSpec};
    use crate::scenario::SessionModel;

    /// Ten strong, reachable nodes logging on one a second, FastTrack
    /// selection with 5 leaf slots per supernode, one session per leaf,
    /// nobody says goodbye.
    fn ten_nodes() -> Sim {
        let mut scenario = Scenario {
            nodes: 10,
            ..Scenario::default()
        };
        scenario.supernodes.selection = Selection::Capacity;
        scenario.supernodes.leaves_min = 5;
        scenario.supernodes.leaves_max = 5;
        scenario.supernodes.sessions = 1;
        scenario.supernodes.min_level = 0;
        scenario.supernodes.graceful_share = 0.0;
        scenario.supernodes.detect_s = 10.0;
        scenario.churn.model = SessionModel::None;
        // A 1000-second measuring phase (no query is planned: the tests
        // drive events themselves).
        scenario.queries.count = 1;
        scenario.queries.rate_per_s = 0.001;
        scenario.queries.warmup_s = 0.0;
        let nodes = (0..10)
            .map(|i| NodeSpec {
                arrive: seconds(i as f64),
                depart: NEVER,
                level: 0,
                firewalled: false,
                sharer: true,
                router: None,
            })
            .collect();
        let population = Population {
            nodes,
            multiples: vec![1000.0],
            base_upload_kbit: 64.0,
            base_rate: 10.0,
            catalogue: Catalogue::empty(),
        };
        let mut sim = Sim::with_population(scenario, population, 1);
        sim.queue.at(0, Event::Arrive(0));
        sim
    }

    #[test]
    fn supernodes_appear_when_slots_run_out() {
        let mut sim = ten_nodes();
        sim.run_until(seconds(20.0));
        // Node 0 finds no supernode and becomes one; 1–5 fill its slots; 6
        // finds it full and becomes the second; 7–9 join 6.
        assert_eq!(sim.routing.len(), 2);
        assert_eq!(sim.leaves[0], vec![1, 2, 3, 4, 5]);
        assert_eq!(sim.leaves[6], vec![7, 8, 9]);
        assert!(sim.tally.orphan_spells.is_empty());
    }

    #[test]
    fn leaves_of_a_vanished_supernode_wait_out_the_timeout_then_rehome() {
        let mut sim = ten_nodes();
        sim.run_until(seconds(20.0));
        sim.depart(0, seconds(100.0));
        sim.run_until(seconds(200.0));
        // The five leaves notice after 10 s and look in turn. Two fit in
        // supernode 6's free slots; the third finds no room and, being
        // capable, becomes a supernode; the last two join it.
        assert_eq!(sim.tally.promotions, 1);
        assert_eq!(sim.routing.len(), 2, "supernode 6 and the promoted leaf");
        assert_eq!(sim.leaves[6].len(), 5);
        let promoted = (1..=5).find(|&n| sim.state[n as usize] == State::Router).unwrap();
        assert_eq!(sim.leaves[promoted as usize].len(), 2);
        let spells = &sim.tally.orphan_spells;
        assert_eq!(spells.len(), 5);
        for &spell in spells {
            // 10 s to notice, plus at most three 500 ms trips to join.
            assert!((seconds(10.0)..=seconds(11.5)).contains(&spell), "{spell}");
        }
        assert!(sim
            .live
            .items()
            .iter()
            .all(|&n| n == 0 || sim.state[n as usize] != State::Offline));
        assert_eq!(sim.state[0], State::Offline);
    }
}
