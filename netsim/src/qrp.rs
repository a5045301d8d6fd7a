//! Keyword routing and dynamic querying in the simulator.
//!
//! The decisions are the real ones: every router forwards through
//! [`Router::on_query_with`](canopy_common::proto::routing::Router::on_query_with),
//! and the searcher's supernode runs a real
//! [`DynamicQuery`].
//!
//! The tables are **modelled**, not built (the catalogue has no words per
//! node to hash, and rebuilding tables under churn at 10^6 nodes would
//! dominate the run). They are horizon tables
//! (`canopy_common::proto::qrp::horizon`): level `k` of the tables a
//! router M sends its neighbour N covers every router within `k` hops of
//! M, never through N. Level `k` of M's tables, as N holds them, matches a
//! query
//! * always, when a live holder of the file is indexed by M (`k = 0`) or,
//!   for `k ≥ 1`, by a router within `k − 1` hops of one of M's other
//!   neighbours (no false negatives: the property `common`'s tests prove
//!   of the real tables). Distances are taken on the overlay when the query
//!   starts: table updates take seconds to spread, queries seconds to run;
//! * otherwise with the false-positive rate of a real table holding the
//!   words of everything within `k` hops of M: `fill²` for the query's
//!   title word (unique to the file), where `fill = 1 − exp(−2·W / 2^bits)`
//!   and `W` is the files held by those routers and their leaves plus
//!   their artists, at most the catalogue's distinct words. The artist
//!   word is taken to be present, so this over-states false positives.
//!   One coin per (query, router), so a level matches whenever a lower one
//!   does, as the real tables (each a superset of the one below) do.
//!
//! **What the tables cost** is counted during the query phase
//! ([`TableTraffic`]): when a leaf joins or leaves a router, each of its
//! files' title word appears in or vanishes from level `k` of router R's
//! tables exactly when R is within `k` hops of that router and no other
//! router indexing a live holder of the file is; R then sends the change
//! to its neighbours (all of them at level 0; all but the one it came
//! through above, by split horizon), as two changed 64-bit words of about
//! 12 bytes each on the wire (`WordRun`s). A new link costs each side a full
//! table per level: the non-zero 64-bit words of a table at that level's
//! fill. Artist words (977, present almost everywhere) are left out, and so
//! are routers' own files; at 10^6 nodes one leaf change in
//! [`TRAFFIC_SAMPLE_AT_1M`] is followed and the count scaled up.
//!
//! Not modelled: the delay before a table change reaches the neighbours
//! (a file published seconds ago may be pruned).

use std::collections::{HashMap, VecDeque};

use canopy_common::proto::dynamic::{DynamicConfig, DynamicQuery, Finish, Neighbour, Reach, Step};
use canopy_common::proto::routing::Forward;

use crate::clock::{as_duration, seconds, Time};
use crate::sim::{node_of, peer, Event, Sim, State, NONE};

/// Distinct artists in the simulator's file names (`artist{file % 977}`).
const ARTISTS: f64 = 977.0;
/// A router's table fill is recomputed when older than this.
const FILL_REFRESH_S: f64 = 60.0;
/// Most levels a scenario may ask for.
pub const MAX_LEVELS: u8 = 8;

/// Bytes of one changed 64-bit table word in a `TableUpdate` (start,
/// length and the word).
const CHANGED_WORD_BYTES: u64 = 12;
/// Positions a word sets in a table.
const BITS_PER_WORD: u64 = 2;
/// At 10^6 nodes and up, one leaf change in this many is followed.
pub const TRAFFIC_SAMPLE_AT_1M: u64 = 10;

/// Table bytes sent during the query phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TableTraffic {
    /// Incremental updates after leaves joined or left.
    pub update_bytes: f64,
    /// Full tables sent on new links.
    pub link_bytes: f64,
    /// Leaf joins and departures followed.
    pub changes: u64,
}

/// What the simulator knows to model the routers' keyword tables.
#[derive(Debug)]
pub struct TableModel {
    /// Files each node shares.
    files_held: Vec<u32>,
    /// Files of each node, as a compressed row list: node `n`'s files are
    /// `node_files[node_offsets[n]..node_offsets[n + 1]]`.
    node_offsets: Vec<u32>,
    node_files: Vec<u32>,
    /// Counted during the query phase.
    pub traffic: TableTraffic,
    sample: u64,
    seen_changes: u64,
    /// Per router and level: when the fill was computed, and the fill.
    fill: HashMap<u32, [(Time, f32); MAX_LEVELS as usize]>,
    log2_bits: u8,
    levels: u8,
    /// Distinct words in the whole catalogue: no table holds more.
    catalogue_words: f64,
}

impl TableModel {
    pub fn new(sim: &Sim) -> Self {
        let n = sim.population.nodes.len();
        let mut files_held = vec![0u32; n];
        let catalogue = &sim.population.catalogue;
        for file in 0..catalogue.files() {
            for &holder in catalogue.holders(file) {
                files_held[holder as usize] += 1;
            }
        }
        let mut node_offsets = Vec::with_capacity(n + 1);
        node_offsets.push(0u32);
        for held in &files_held {
            node_offsets.push(node_offsets.last().expect("starts with 0") + held);
        }
        let mut node_files = vec![0u32; *node_offsets.last().expect("starts with 0") as usize];
        let mut next: Vec<u32> = node_offsets[..n].to_vec();
        for file in 0..catalogue.files() {
            for &holder in catalogue.holders(file) {
                node_files[next[holder as usize] as usize] = file;
                next[holder as usize] += 1;
            }
        }
        TableModel {
            files_held,
            node_offsets,
            node_files,
            traffic: TableTraffic::default(),
            sample: if n >= 1_000_000 { TRAFFIC_SAMPLE_AT_1M } else { 1 },
            seen_changes: 0,
            fill: HashMap::new(),
            log2_bits: sim.scenario.router.table_log2_bits,
            levels: sim.scenario.router.table_levels.clamp(1, MAX_LEVELS),
            catalogue_words: f64::from(catalogue.files()) + ARTISTS,
        }
    }

    pub fn levels(&self) -> u8 {
        self.levels
    }
}

/// A deterministic coin for (query, neighbour), uniform in [0, 1).
fn coin(query: u32, neighbour: u32, seed: u64) -> f64 {
    let x = crate::rng::splitmix(seed ^ (u64::from(query) << 32 | u64::from(neighbour)));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Sim {
    /// Whether keyword routing is on.
    pub(crate) fn keyword_tables(&self) -> bool {
        self.tables.is_some()
    }

    /// Table bytes counted so far (`None` without keyword routing).
    pub fn table_traffic(&self) -> Option<TableTraffic> {
        self.tables.as_ref().map(|model| model.traffic)
    }

    /// Levels of table each router sends (0 without keyword routing).
    pub(crate) fn table_levels(&self) -> u8 {
        self.tables.as_ref().map_or(0, TableModel::levels)
    }

    /// Distance from each router near a holder of query `q`'s file to the
    /// nearest router indexing one, as far as the tables can tell (levels −
    /// 2 hops: level `k` looks `k − 1` past a neighbour).
    pub(crate) fn holder_distances(&self, q: u32) -> Vec<(u32, u8)> {
        let farthest = self.table_levels().saturating_sub(2);
        let indexing: Vec<u32> = self.queries[q as usize]
            .index
            .iter()
            .map(|&(router, _)| router)
            .collect();
        let distance = self.distances(&indexing, farthest);
        let mut near: Vec<(u32, u8)> = distance.into_iter().collect();
        near.sort_unstable();
        near
    }

    /// Words under one router: its own files', its leaves', their artists.
    fn files_under(&self, model: &TableModel, router: u32) -> f64 {
        std::iter::once(router)
            .chain(self.leaves[router as usize].iter().copied())
            .map(|node| f64::from(model.files_held[node as usize]))
            .sum()
    }

    /// The share of bits set in a table of everything within `level` hops
    /// of `router`, now.
    fn table_fill(&mut self, router: u32, level: u8, now: Time) -> f64 {
        let Some(model) = self.tables.as_ref() else {
            return 1.0;
        };
        if let Some(levels) = model.fill.get(&router) {
            let (at, fill) = levels[level as usize];
            if at != Time::MAX && now.saturating_sub(at) < seconds(FILL_REFRESH_S) {
                return f64::from(fill);
            }
        }
        // The ball of routers within `level` hops, breadth first, stopping
        // once it holds more than the catalogue's words.
        let mut seen = vec![router];
        let mut frontier = vec![router];
        let mut files = self.files_under(model, router);
        for _ in 0..level {
            if files >= model.catalogue_words {
                break;
            }
            let mut next = Vec::new();
            for &at in &frontier {
                for &n in &self.neighbours[at as usize] {
                    if self.state[n as usize] == State::Router && !seen.contains(&n) {
                        seen.push(n);
                        next.push(n);
                        files += self.files_under(model, n);
                    }
                }
            }
            frontier = next;
        }
        let words = (files + files.min(ARTISTS)).min(model.catalogue_words);
        let bits = (1u64 << model.log2_bits) as f64;
        let fill = 1.0 - (-2.0 * words / bits).exp();
        let model = self.tables.as_mut().expect("checked above");
        let entry = model
            .fill
            .entry(router)
            .or_insert([(Time::MAX, 0.0); MAX_LEVELS as usize]);
        entry[level as usize] = (now, fill as f32);
        fill
    }

    /// Whether level `level` of `router`'s tables, as `holder_of_tables`
    /// (its neighbour) holds them, may match query `q`. `near` is
    /// [`Self::holder_distances`] for `q`.
    fn level_matches(
        &mut self,
        q: u32,
        near: &[(u32, u8)],
        router: u32,
        holder_of_tables: u32,
        level: u8,
        now: Time,
    ) -> bool {
        let distance = |node: u32| {
            near.binary_search_by_key(&node, |&(r, _)| r)
                .ok()
                .map(|at| near[at].1)
        };
        if distance(router) == Some(0) {
            return true;
        }
        if level >= 1
            && self.neighbours[router as usize]
                .iter()
                .any(|&n| n != holder_of_tables && distance(n).is_some_and(|d| d < level))
        {
            return true;
        }
        let fill = self.table_fill(router, level, now);
        coin(q, router, self.seed) < fill * fill
    }

    /// Fills `self.decisions` with the routing decision, at `router`, for
    /// a copy of query `q` arriving at each neighbour in `self.scratch`
    /// with `ttl`.
    pub(crate) fn fill_decisions(&mut self, q: u32, router: u32, ttl: u8, now: Time) {
        let levels = self.table_levels();
        let neighbours: Vec<u32> = self.scratch.iter().map(node_of).collect();
        if ttl >= levels {
            self.decisions = vec![Forward::Broadcast; neighbours.len()];
            return;
        }
        let near = self.queries[q as usize].near.take().unwrap_or_default();
        self.decisions = neighbours
            .into_iter()
            .map(|n| {
                if self.level_matches(q, &near, n, router, ttl, now) {
                    Forward::Routed
                } else {
                    Forward::Pruned
                }
            })
            .collect();
        self.queries[q as usize].near = Some(near);
    }

    /// What `neighbour`'s tables, as `router` holds them, say about `q`.
    fn reach(&mut self, q: u32, near: &[(u32, u8)], neighbour: u32, router: u32, now: Time) -> Reach {
        let levels = self.table_levels();
        (0..levels)
            .find(|&level| self.level_matches(q, near, neighbour, router, level, now))
            .map_or(Reach::Beyond(levels), Reach::Within)
    }

    fn in_query_phase(&self, now: Time) -> bool {
        now >= self.query_phase.0 && now < self.query_phase.1
    }

    /// Routers within `depth` hops of any of `from`, with their distance.
    fn distances(&self, from: &[u32], depth: u8) -> HashMap<u32, u8> {
        let mut distance: HashMap<u32, u8> = from.iter().map(|&r| (r, 0)).collect();
        let mut frontier: VecDeque<u32> = from.iter().copied().collect();
        while let Some(router) = frontier.pop_front() {
            let d = distance[&router];
            if d >= depth {
                continue;
            }
            for &next in &self.neighbours[router as usize] {
                if self.state[next as usize] == State::Router && !distance.contains_key(&next) {
                    distance.insert(next, d + 1);
                    frontier.push_back(next);
                }
            }
        }
        distance
    }

    /// Leaf `leaf` joined or left `router`: counts the table updates its
    /// files cause (see the module notes).
    pub(crate) fn count_table_change(&mut self, leaf: u32, router: u32, now: Time) {
        if !self.in_query_phase(now) || self.state[router as usize] != State::Router {
            return;
        }
        let Some(model) = self.tables.as_mut() else {
            return;
        };
        model.seen_changes += 1;
        if model.seen_changes % model.sample != 0 {
            return;
        }
        model.traffic.changes += model.sample;
        let sample = model.sample as f64;
        let top = model.levels - 1;
        let (start, end) = (
            model.node_offsets[leaf as usize] as usize,
            model.node_offsets[leaf as usize + 1] as usize,
        );
        let files: Vec<u32> = model.node_files[start..end].to_vec();
        if files.is_empty() {
            return;
        }
        let near = self.distances(&[router], top);
        let mut updates = 0u64;
        for file in files {
            // Every other router indexing a live holder of the file.
            let mut others = Vec::new();
            for &holder in self.population.catalogue.holders(file) {
                let Some(indexed_by) = self.indexed_by(holder) else {
                    continue;
                };
                others.extend(
                    indexed_by
                        .iter()
                        .filter(|&&r| r != NONE && !(holder == leaf && r == router)),
                );
            }
            others.sort_unstable();
            others.dedup();
            let elsewhere = self.distances(&others, top);
            for (&at, &from_here) in &near {
                let other = elsewhere.get(&at).copied().unwrap_or(u8::MAX);
                // Levels from `from_here` up to below `other` change.
                let levels = u64::from(other.min(top + 1).saturating_sub(from_here));
                if levels == 0 {
                    continue;
                }
                let degree = self.neighbours[at as usize].len() as u64;
                let told = if from_here == 0 {
                    degree
                } else {
                    degree.saturating_sub(1)
                };
                updates += levels * told;
            }
        }
        let bytes = updates as f64 * (BITS_PER_WORD * CHANGED_WORD_BYTES) as f64 * sample;
        if let Some(model) = self.tables.as_mut() {
            model.traffic.update_bytes += bytes;
        }
    }

    /// A link between routers `a` and `b` came up: each sends the other a
    /// full table per level.
    pub(crate) fn count_new_link(&mut self, a: u32, b: u32, now: Time) {
        if !self.in_query_phase(now) || self.tables.is_none() {
            return;
        }
        let levels = self.table_levels();
        let log2_bits = self.tables.as_ref().map_or(20, |m| m.log2_bits);
        let words = (1u64 << log2_bits) as f64 / 64.0;
        let mut bytes = 0.0;
        for router in [a, b] {
            for level in 0..levels {
                let fill = self.table_fill(router, level, now);
                let non_zero = 1.0 - (1.0 - fill).powi(64);
                bytes += words * non_zero * 8.0 + 16.0;
            }
        }
        if let Some(model) = self.tables.as_mut() {
            model.traffic.link_bytes += bytes;
        }
    }

    /// Starts query `q`'s dynamic search at `router` (which has already
    /// answered it from its own index).
    pub(crate) fn start_dynamic(&mut self, q: u32, router: u32, now: Time) {
        let settings = &self.scenario.router;
        let config = DynamicConfig {
            target_results: settings.target_results,
            time_limit: as_duration(seconds(settings.dynamic_time_limit_s)),
            max_ttl: match settings.dynamic_max_ttl {
                0 => self.scenario.topology.max_ttl,
                ttl => ttl.min(self.scenario.topology.max_ttl),
            },
            wait_per_hop: as_duration(seconds(settings.wait_per_hop_s)),
            max_widening_ttl: settings.dynamic_max_widening_ttl,
            broadcast_past_tables: settings.dynamic_broadcast_past_tables,
            ..DynamicConfig::default()
        };
        let near = self.queries[q as usize].near.take().unwrap_or_default();
        // Nearest round trip first: among neighbours whose tables put a
        // match equally near, the dynamic query asks them in this order.
        let mut order = self.neighbours[router as usize].clone();
        order.sort_by_key(|&n| self.latency(router, n));
        let mut neighbours = Vec::new();
        for n in order {
            let reach = if self.keyword_tables() {
                self.reach(q, &near, n, router, now)
            } else {
                Reach::Unknown
            };
            neighbours.push(Neighbour {
                peer: peer(n),
                degree: self.neighbours[n as usize].len() as u32,
                reach,
            });
        }
        let (search, steps) = DynamicQuery::start(config, neighbours, as_duration(now));
        let state = &mut self.queries[q as usize];
        state.near = Some(near);
        state.dynamic = Some(Box::new(search));
        state.dynamic_router = router;
        self.dynamic_steps(q, steps, now);
    }

    /// Sources found for query `q` reached its searcher's supernode.
    pub(crate) fn dynamic_results(&mut self, q: u32, sources: u32, now: Time) {
        let Some(search) = self.queries[q as usize].dynamic.as_mut() else {
            return;
        };
        let steps = search.on_results(sources, as_duration(now));
        if steps.contains(&Step::Finish(Finish::Enough)) {
            let state = &mut self.queries[q as usize];
            state.outcome.target_reached = Some(now.saturating_sub(state.issued));
        }
        self.dynamic_steps(q, steps, now);
    }

    pub(crate) fn dynamic_tick(&mut self, q: u32, now: Time) {
        let Some(search) = self.queries[q as usize].dynamic.as_mut() else {
            return;
        };
        if search.next_wakeup().is_none_or(|at| at > as_duration(now)) {
            return;
        }
        let steps = search.on_tick(as_duration(now));
        self.dynamic_steps(q, steps, now);
    }

    /// Sends the probes, and wakes the search when it asks.
    fn dynamic_steps(&mut self, q: u32, steps: Vec<Step>, now: Time) {
        let router = self.queries[q as usize].dynamic_router;
        for step in steps {
            let Step::Probe { to, ttl } = step else {
                continue;
            };
            let to = node_of(&to);
            if self.state[router as usize] != State::Router {
                return;
            }
            let routed = ttl < self.table_levels();
            self.send_flood(q, router, to, ttl, 1, routed, now);
        }
        let wakeup = self.queries[q as usize]
            .dynamic
            .as_ref()
            .and_then(|search| search.next_wakeup());
        if let Some(at) = wakeup {
            let at = (at.as_micros() as Time).max(now + 1);
            self.queue.at(at, Event::DynamicTick(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coins_are_deterministic_and_spread() {
        assert_eq!(coin(1, 2, 3), coin(1, 2, 3));
        let below: usize = (0..10_000).filter(|&n| coin(n, 7, 1) < 0.1).count();
        assert!((800..1200).contains(&below), "{below}");
    }
}
