//! The simulated network: who is online, who routes, who is linked to whom,
//! and how that changes with churn and the supernode election.
//!
//! Every router is a real
//! [`Router`](canopy_common::proto::routing::Router) from
//! `canopy_common::proto::routing`;
//! every role decision in Canopy mode is the real
//! [`decide`] at arrival and the
//! real [`Election`] state machine afterwards. The simulator only supplies
//! what a real node would learn from the network (neighbour lists, the free
//! slots of a few supernodes, the time) and carries out the actions.
//!
//! Searching (queries, floods, hits) lives in [`crate::search`]; this file
//! is the population and the overlay. What both see and change, the
//! network itself, the event queue and the counters, is the [`World`] they
//! share; [`Sim`] owns it and hands it to [`Search`] with each query's event.

use canopy_common::proto::election::{decide, disqualified, Change, Election, ElectionConfig};
use canopy_common::proto::election::{NetworkHints, Observation, Role};
use canopy_common::proto::nearest::keep_nearest;
use canopy_common::proto::routing::RouterConfig;

use crate::clock::{as_duration, seconds, Time, NEVER};
use crate::live::LiveSet;
use crate::metrics::{Point, Run, TableTraffic, Tally};
use crate::population::Population;
use crate::rng::{splitmix, Rng};
use crate::scenario::{Scenario, Selection};
use crate::search::Search;
use crate::traversal::{Downloads, Transfer};
use crate::world::{Event, State, World, MAX_SESSIONS, NONE};

/// Supernodes a node asks about free slots before deciding or promoting.
const HINT_SAMPLE: usize = 8;
/// Random supernodes a leaf tries before it gives up for a while.
const ATTACH_TRIES: usize = 24;

/// The whole simulated network.
pub struct Sim {
    /// What searching shares with the rest: the network, the queue, the counters.
    pub(crate) world: World,
    pub(crate) search: Search,
    /// The nodes that route.
    routing: LiveSet,
    elections: Vec<Option<Box<Election>>>,
    /// Leaf slots of a supernode.
    slots: Vec<u32>,
    /// When each leaf lost its last supernode ([`NEVER`]: it has one).
    orphan_since: Vec<Time>,
    /// Since when each node has routed in the query phase ([`NEVER`]: it
    /// does not route).
    routing_since: Vec<Time>,
    topology_rng: Rng,
    election_config: ElectionConfig,
    end: Time,
}

impl Sim {
    /// What was counted during the run.
    pub fn tally(&self) -> &Tally {
        &self.world.tally
    }

    /// Every (downloader, source) pair of the query phase (empty without
    /// a `[nat]` section).
    pub fn transfers(&self) -> &[Transfer] {
        &self.search.transfers
    }

    /// Routers a traced query reached, with their hop counts.
    pub fn trace(&self, q: u32) -> Option<&[(u32, u8)]> {
        self.search.trace(q)
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
        let tally = Tally::new(n, (warmup, query_end));
        let world = World::new(scenario, population, seed, tally);
        Sim {
            search: Search::new(&world, router_config),
            world,
            routing: LiveSet::with_capacity(n),
            elections: (0..n).map(|_| None).collect(),
            slots: vec![0; n],
            orphan_since: vec![NEVER; n],
            routing_since: vec![NEVER; n],
            topology_rng: Rng::stream(seed, 4),
            election_config,
            end,
        }
    }

    /// Runs the scenario to its end.
    pub fn run(&mut self) {
        if !self.world.population.nodes.is_empty() {
            let first = self.world.population.nodes[0].arrive;
            self.world.queue.at(first, Event::Arrive(0));
        }
        self.search.plan(&mut self.world);
        self.world.queue.at(0, Event::Sample);
        if self.world.scenario.supernodes.selection == Selection::Election && !self.is_flat() {
            let every = seconds(self.world.scenario.supernodes.observe_every_s);
            self.world.queue.at(every, Event::Observe);
        }
        self.run_until(self.end);
        self.close_books();
    }

    /// Handles events until the queue is empty or `until` is reached.
    pub fn run_until(&mut self, until: Time) {
        while let Some((now, event)) = self.world.queue.pop() {
            if now > until {
                break;
            }
            self.handle(now, event);
        }
    }

    /// Churn, the overlay and the election are handled here; a query's
    /// events go to [`Search`].
    fn handle(&mut self, now: Time, event: Event) {
        let (search, world) = (&mut self.search, &mut self.world);
        match event {
            Event::Arrive(node) => {
                let next = node + 1;
                if let Some(spec) = self.world.population.nodes.get(next as usize) {
                    self.world.queue.at(spec.arrive, Event::Arrive(next));
                }
                self.arrive(node, now);
            }
            Event::Depart(node) => self.depart(node, now),
            Event::Reattach(node) => {
                if self.world.state[node as usize] == State::Leaf {
                    self.attach(node, now);
                }
            }
            Event::TopUp(node) => {
                if self.world.state[node as usize] == State::Router {
                    self.link_up(node, now);
                }
            }
            Event::Observe => {
                self.observe_all(now);
                let every = seconds(self.world.scenario.supernodes.observe_every_s);
                self.world.queue.at(now + every, Event::Observe);
            }
            Event::Sample => {
                self.sample(now);
                self.world.queue.at(now + seconds(60.0), Event::Sample);
            }
            Event::Query(q) => search.start_query(world, q, now),
            Event::LeafQuery {
                query,
                leaf,
                supernode,
            } => search.leaf_query(world, query, leaf, supernode, now),
            Event::Flood {
                query,
                from,
                to,
                ttl,
                hops,
            } => search.flood(world, query, from, to, ttl, hops, now),
            Event::Hits {
                query,
                responder,
                from,
                to,
            } => search.hits(world, query, responder, from, to, now),
            Event::HitsHome { query, responder } => search.hits_home(world, query, responder, now),
            Event::Finish(q) => search.finish_query(world, q),
            Event::DynamicTick(q) => search.dynamic_tick(world, q, now),
        }
    }

    fn is_flat(&self) -> bool {
        self.world.scenario.is_flat()
    }

    fn arrive(&mut self, node: u32, now: Time) {
        let spec = self.world.population.nodes[node as usize];
        self.world.live.insert(node);
        if spec.depart != NEVER {
            self.world.queue.at(spec.depart, Event::Depart(node));
        }
        if self.is_flat() {
            self.become_router(node, now);
            return;
        }
        let role = self.choose_role(node, now);
        if self.world.scenario.supernodes.selection == Selection::Election {
            let profile = self.world.population.profile(node, now);
            // A node that can never qualify has nothing to observe.
            if disqualified(&profile, &self.election_config.thresholds).is_none() {
                let election = Election::new(self.election_config.clone(), role, as_duration(now));
                self.elections[node as usize] = Some(Box::new(election));
            }
        }
        match role {
            Role::Supernode => self.become_router(node, now),
            Role::Leaf => {
                self.world.state[node as usize] = State::Leaf;
                self.attach(node, now);
            }
        }
    }

    fn choose_role(&mut self, node: u32, now: Time) -> Role {
        let hints = self.hints(node);
        match self.world.scenario.supernodes.selection {
            Selection::Election => {
                let profile = self.world.population.profile(node, now);
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
        let spec = &self.world.population.nodes[node as usize];
        !spec.firewalled && spec.level >= self.world.scenario.supernodes.min_level
    }

    /// What a node hears about supernode slots: its own supernodes plus a
    /// few random ones (a host cache's worth), never the whole network.
    fn hints(&mut self, node: u32) -> NetworkHints {
        let mut asked: [u32; HINT_SAMPLE] = [NONE; HINT_SAMPLE];
        let mut count = 0;
        for &sn in &self.world.sessions[node as usize] {
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
            hints.free_slots += slots.saturating_sub(self.world.leaves[sn as usize].len() as u64);
        }
        hints
    }

    /// Leaf slots a new supernode offers. Canopy sizes them as
    /// `SupernodeConfig::for_this_machine` does (100 per GiB, 50 to 5,000);
    /// FastTrack mode draws them from the scenario's range.
    fn slots_for(&self, node: u32, now: Time) -> u32 {
        match self.world.scenario.supernodes.selection {
            Selection::Election => {
                let gib = self.world.population.profile(node, now).memory_total as f64 / (1u64 << 30) as f64;
                ((gib * 100.0) as u32).clamp(50, 5000)
            }
            Selection::Capacity => {
                let s = &self.world.scenario.supernodes;
                let span = (s.leaves_max - s.leaves_min + 1) as u64;
                s.leaves_min + (splitmix(self.world.latency_seed() ^ !(node as u64)) % span) as u32
            }
        }
    }

    pub(crate) fn become_router(&mut self, node: u32, now: Time) {
        let i = node as usize;
        if self.world.state[i] == State::Leaf {
            self.drop_sessions(node, now);
        }
        self.world.state[i] = State::Router;
        self.search.router_up(node);
        if !self.is_flat() {
            self.slots[i] = self.slots_for(node, now);
        }
        self.routing.insert(node);
        self.routing_since[i] = now.max(self.world.tally.phase.0);
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
        let min = self.world.scenario.topology.degree_min as usize;
        let max = self.world.scenario.topology.degree_max as usize;
        let missing = min.saturating_sub(self.world.neighbours[node as usize].len());
        let mut tries = 20 * missing;
        while self.world.neighbours[node as usize].len() < min && tries > 0 {
            tries -= 1;
            let Some(mut other) = self.routing.pick(&mut self.topology_rng) else {
                break;
            };
            if other == node || self.world.neighbours[node as usize].contains(&other) {
                continue;
            }
            // Size up more candidates with room; keep the nearest.
            let mut sized_up = vec![(other, self.world.latency(node, other))];
            for _ in 1..self.world.scenario.topology.closest_of {
                let Some(candidate) = self.routing.pick(&mut self.topology_rng) else {
                    break;
                };
                let usable = candidate != node
                    && !self.world.neighbours[node as usize].contains(&candidate)
                    && self.world.neighbours[candidate as usize].len() < max;
                if usable {
                    sized_up.push((candidate, self.world.latency(node, candidate)));
                }
            }
            other = keep_nearest(sized_up, 1).0[0].0;
            if self.world.neighbours[other as usize].len() < max {
                self.link(node, other, now);
                continue;
            }
            if min - self.world.neighbours[node as usize].len() < 2 {
                continue;
            }
            let list = &self.world.neighbours[other as usize];
            let handed = list[self.topology_rng.below(list.len() as u64) as usize];
            if handed == node || self.world.neighbours[node as usize].contains(&handed) {
                continue;
            }
            self.unlink(other, handed);
            self.link(node, other, now);
            self.link(node, handed, now);
        }
        if self.world.neighbours[node as usize].len() < min && self.routing.len() > min {
            let retry = seconds(self.world.scenario.topology.maintain_s.max(5.0));
            self.world.queue.at(now + retry, Event::TopUp(node));
        }
    }

    fn link(&mut self, a: u32, b: u32, now: Time) {
        self.world.neighbours[a as usize].push(b);
        self.world.neighbours[b as usize].push(a);
        if let Some(tables) = &mut self.search.tables {
            tables.count_new_link(&self.world, a, b, now);
        }
    }

    fn unlink(&mut self, a: u32, b: u32) {
        self.world.neighbours[a as usize].retain(|&n| n != b);
        self.world.neighbours[b as usize].retain(|&n| n != a);
    }

    fn depart(&mut self, node: u32, now: Time) {
        match self.world.state[node as usize] {
            State::Offline => return,
            State::Router => self.stop_routing(node, now, false),
            State::Leaf => {
                self.drop_sessions(node, now);
                self.end_orphan(node, now, false);
            }
        }
        self.world.state[node as usize] = State::Offline;
        self.elections[node as usize] = None;
        self.world.live.remove(node);
    }

    /// The router goes: its neighbours look for others, its leaves notice
    /// (at once if it said goodbye, after the idle timeout if it did not),
    /// or, when it hands them over (`handover`), move at once.
    fn stop_routing(&mut self, node: u32, now: Time, handover: bool) {
        let i = node as usize;
        // Out of the routing set first, so a handed-over leaf cannot pick it again.
        self.routing.remove(node);
        self.slots[i] = 0;
        let maintain = seconds(self.world.scenario.topology.maintain_s);
        for other in std::mem::take(&mut self.world.neighbours[i]) {
            let list = &mut self.world.neighbours[other as usize];
            list.retain(|&n| n != node);
            if list.len() < self.world.scenario.topology.degree_min as usize {
                self.world.queue.at(now + maintain, Event::TopUp(other));
            }
        }
        let detect = seconds(self.world.scenario.supernodes.detect_s);
        let graceful = self.world.scenario.supernodes.graceful_share;
        for leaf in std::mem::take(&mut self.world.leaves[i]) {
            let sessions = &mut self.world.sessions[leaf as usize];
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
                let delay = if self.world.churn_rng.chance(graceful) {
                    0
                } else {
                    detect
                };
                self.world.queue.at(now + delay, Event::Reattach(leaf));
            }
        }
        if self.routing_since[i] != NEVER {
            let until = now.min(self.world.tally.phase.1.max(self.world.tally.phase.0));
            self.world.tally.routing_time[i] += until.saturating_sub(self.routing_since[i]);
            self.routing_since[i] = NEVER;
        }
        self.search.router_down(node);
    }

    fn drop_sessions(&mut self, node: u32, now: Time) {
        for router in self.world.sessions[node as usize] {
            if let Some(tables) = &mut self.search.tables {
                if router != NONE {
                    tables.count_table_change(&self.world, node, router, now);
                }
            }
        }
        for place in self.world.sessions[node as usize].iter_mut() {
            if *place != NONE {
                let list = &mut self.world.leaves[*place as usize];
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
    fn attach(&mut self, node: u32, now: Time) {
        let wanted = (self.world.scenario.supernodes.sessions as usize).clamp(1, MAX_SESSIONS);
        let mut tries = ATTACH_TRIES;
        let mut handshake = 0;
        while tries > 0 {
            let have = self.world.sessions[node as usize]
                .iter()
                .filter(|&&s| s != NONE)
                .count();
            if have >= wanted {
                break;
            }
            tries -= 1;
            // Size up to `closest_of` supernodes with room; join the nearest.
            let mut sized_up: Vec<(u32, Time)> = Vec::new();
            while sized_up.len() < self.world.scenario.supernodes.closest_of.max(1) as usize {
                let Some(sn) = self.routing.pick(&mut self.topology_rng) else {
                    break;
                };
                let room = (self.world.leaves[sn as usize].len() as u32) < self.slots[sn as usize];
                if sn == node || !room || self.world.sessions[node as usize].contains(&sn) {
                    if self.world.scenario.supernodes.closest_of <= 1 {
                        break;
                    }
                    tries = tries.saturating_sub(1);
                    if tries == 0 {
                        break;
                    }
                    continue;
                }
                sized_up.push((sn, self.world.latency(node, sn)));
            }
            let Some(&(sn, _)) = keep_nearest(sized_up, 1).0.first() else {
                continue;
            };
            let place = self.world.sessions[node as usize].iter().position(|&s| s == NONE);
            if let Some(place) = place {
                self.world.sessions[node as usize][place] = sn;
                self.world.leaves[sn as usize].push(node);
                if let Some(tables) = &mut self.search.tables {
                    tables.count_table_change(&self.world, node, sn, now);
                }
                // A QUIC handshake and the publish: about three one-way trips.
                handshake = handshake.max(3 * self.world.latency(node, sn));
            }
        }
        let have = self.world.sessions[node as usize]
            .iter()
            .filter(|&&s| s != NONE)
            .count();
        if have == 0 {
            if self.orphan_since[node as usize] == NEVER {
                self.orphan_since[node as usize] = now;
            }
            if self.world.scenario.supernodes.selection == Selection::Capacity && self.capable(node) {
                self.end_orphan(node, now, true);
                self.become_router(node, now);
                self.world.tally.promotions += 1;
                return;
            }
            let retry = seconds(self.world.scenario.supernodes.detect_s.max(1.0));
            self.world.queue.at(now + retry, Event::Reattach(node));
        } else {
            self.end_orphan(node, now + handshake, true);
            if have < wanted {
                self.world.queue.at(now + seconds(30.0), Event::Reattach(node));
            }
        }
    }

    /// Closes a spell without a supernode, if one is open. `resolved`:
    /// the leaf found a supernode (rather than leaving the network).
    fn end_orphan(&mut self, node: u32, now: Time, resolved: bool) {
        let since = std::mem::replace(&mut self.orphan_since[node as usize], NEVER);
        if since != NEVER {
            let spell = now.saturating_sub(since);
            if now >= self.world.tally.phase.0 && since < self.world.tally.phase.1 {
                self.world.tally.orphan_spells.push(spell);
                if !resolved {
                    self.world.tally.orphan_unresolved += 1;
                }
            }
        }
    }

    /// The run-time election: every node that could ever be a supernode
    /// feeds the real [`Election`] what it sees, and obeys its changes.
    fn observe_all(&mut self, now: Time) {
        for at in 0..self.world.live.len() {
            let Some(&node) = self.world.live.items().get(at) else {
                break;
            };
            let Some(mut election) = self.elections[node as usize].take() else {
                continue;
            };
            let hints = self.hints(node);
            let seen = Observation {
                hints,
                leaves: self.world.leaves[node as usize].len() as u32,
                neighbours: self.world.neighbours[node as usize].len() as u32,
            };
            let profile = self.world.population.profile(node, now);
            let change = election.observe(&profile, &seen, as_duration(now));
            self.elections[node as usize] = Some(election);
            match change {
                Some(Change::Promote { .. }) if self.world.state[node as usize] == State::Leaf => {
                    self.end_orphan(node, now, true);
                    self.become_router(node, now);
                    self.world.tally.promotions += 1;
                }
                Some(Change::Demote { .. }) if self.world.state[node as usize] == State::Router => {
                    self.stop_routing(node, now, true);
                    self.world.state[node as usize] = State::Leaf;
                    self.attach(node, now);
                    self.world.tally.demotions += 1;
                }
                _ => {}
            }
        }
    }

    fn sample(&mut self, now: Time) {
        let routers = self.routing.len();
        let online = self.world.live.len();
        let leaves = online - routers;
        let orphans = self
            .world
            .live
            .items()
            .iter()
            .filter(|&&n| self.orphan_since[n as usize] != NEVER)
            .count();
        let degree: usize = self
            .routing
            .items()
            .iter()
            .map(|&n| self.world.neighbours[n as usize].len())
            .sum();
        let sessions: usize = self
            .routing
            .items()
            .iter()
            .map(|&n| self.world.leaves[n as usize].len())
            .sum();
        self.world.tally.timeline.push(Point {
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
        let until = self.world.tally.phase.1.max(self.world.tally.phase.0);
        for i in 0..self.routing_since.len() {
            if self.routing_since[i] != NEVER {
                self.world.tally.routing_time[i] += until.saturating_sub(self.routing_since[i]);
                self.routing_since[i] = NEVER;
            }
        }
        self.world.tally.events = self.world.queue.scheduled();
        self.world.tally.peak_pending = self.world.queue.peak();
    }
}

impl Run for Sim {
    fn scenario(&self) -> &Scenario {
        &self.world.scenario
    }

    fn population(&self) -> &Population {
        &self.world.population
    }

    fn tally(&self) -> &Tally {
        Sim::tally(self)
    }

    fn table_traffic(&self) -> Option<TableTraffic> {
        self.search.tables.as_ref().map(|model| model.traffic)
    }
}

impl Downloads for Sim {
    fn transfers(&self) -> &[Transfer] {
        Sim::transfers(self)
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
        sim.world.queue.at(0, Event::Arrive(0));
        sim
    }

    #[test]
    fn supernodes_appear_when_slots_run_out() {
        let mut sim = ten_nodes();
        sim.run_until(seconds(20.0));
        // Node 0 finds no supernode and becomes one; 1–5 fill its slots; 6
        // finds it full and becomes the second; 7–9 join 6.
        assert_eq!(sim.routing.len(), 2);
        assert_eq!(sim.world.leaves[0], vec![1, 2, 3, 4, 5]);
        assert_eq!(sim.world.leaves[6], vec![7, 8, 9]);
        assert!(sim.world.tally.orphan_spells.is_empty());
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
        assert_eq!(sim.world.tally.promotions, 1);
        assert_eq!(sim.routing.len(), 2, "supernode 6 and the promoted leaf");
        assert_eq!(sim.world.leaves[6].len(), 5);
        let promoted = (1..=5)
            .find(|&n| sim.world.state[n as usize] == State::Router)
            .unwrap();
        assert_eq!(sim.world.leaves[promoted as usize].len(), 2);
        let spells = &sim.world.tally.orphan_spells;
        assert_eq!(spells.len(), 5);
        for &spell in spells {
            // 10 s to notice, plus at most three 500 ms trips to join.
            assert!((seconds(10.0)..=seconds(11.5)).contains(&spell), "{spell}");
        }
        assert!(sim
            .world
            .live
            .items()
            .iter()
            .all(|&n| n == 0 || sim.world.state[n as usize] != State::Offline));
        assert_eq!(sim.world.state[0], State::Offline);
    }
}
