//! Keyword routing in the simulator: what each router's keyword tables say
//! of a query, and what keeping them costs.
//!
//! The decisions are the real ones: every router forwards through
//! [`Router::on_query_with`](canopy_common::proto::routing::Router::on_query_with),
//! and the searcher's supernode runs a real
//! [`DynamicQuery`](canopy_common::proto::dynamic::DynamicQuery)
//! ([`crate::search`] drives both); this module gives them the tables' say
//! ([`TableModel::decisions`], [`TableModel::reach`]).
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

use canopy_common::proto::dynamic::{DynamicConfig, Reach};
use canopy_common::proto::id::PeerId;
use canopy_common::proto::routing::Forward;

use crate::clock::{as_duration, seconds, Time};
use crate::metrics::TableTraffic;
use crate::scenario::Scenario;
use crate::world::{node_of, State, World, NONE};

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

/// A deterministic coin for (query, neighbour), uniform in [0, 1).
fn coin(query: u32, neighbour: u32, seed: u64) -> f64 {
    let x = crate::rng::splitmix(seed ^ (u64::from(query) << 32 | u64::from(neighbour)));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// How the searcher's supernode widens a dynamic query, from the scenario.
pub fn dynamic_config(scenario: &Scenario) -> DynamicConfig {
    let settings = &scenario.router;
    DynamicConfig {
        target_results: settings.target_results,
        time_limit: as_duration(seconds(settings.dynamic_time_limit_s)),
        max_ttl: match settings.dynamic_max_ttl {
            0 => scenario.topology.max_ttl,
            ttl => ttl.min(scenario.topology.max_ttl),
        },
        wait_per_hop: as_duration(seconds(settings.wait_per_hop_s)),
        max_widening_ttl: settings.dynamic_max_widening_ttl,
        broadcast_past_tables: settings.dynamic_broadcast_past_tables,
        ..DynamicConfig::default()
    }
}

impl TableModel {
    pub fn new(world: &World) -> Self {
        let n = world.population.nodes.len();
        let mut files_held = vec![0u32; n];
        let catalogue = &world.population.catalogue;
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
            log2_bits: world.scenario.router.table_log2_bits,
            levels: world.scenario.router.table_levels.clamp(1, MAX_LEVELS),
            catalogue_words: f64::from(catalogue.files()) + ARTISTS,
        }
    }

    /// Levels of table each router sends.
    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Distance from each router near a holder of a query's file to the
    /// nearest of `indexing` (the routers indexing one), as far as the
    /// tables can tell (levels − 2 hops: level `k` looks `k − 1` past a
    /// neighbour).
    pub fn holder_distances(&self, world: &World, indexing: &[u32]) -> Vec<(u32, u8)> {
        let farthest = self.levels.saturating_sub(2);
        let distance = distances(world, indexing, farthest);
        let mut near: Vec<(u32, u8)> = distance.into_iter().collect();
        near.sort_unstable();
        near
    }

    /// Words under one router: its own files', its leaves', their artists.
    fn files_under(&self, world: &World, router: u32) -> f64 {
        std::iter::once(router)
            .chain(world.leaves[router as usize].iter().copied())
            .map(|node| f64::from(self.files_held[node as usize]))
            .sum()
    }

    /// The share of bits set in a table of everything within `level` hops
    /// of `router`, now.
    fn table_fill(&mut self, world: &World, router: u32, level: u8, now: Time) -> f64 {
        if let Some(levels) = self.fill.get(&router) {
            let (at, fill) = levels[level as usize];
            if at != Time::MAX && now.saturating_sub(at) < seconds(FILL_REFRESH_S) {
                return f64::from(fill);
            }
        }
        // The ball of routers within `level` hops, breadth first, stopping
        // once it holds more than the catalogue's words.
        let mut seen = vec![router];
        let mut frontier = vec![router];
        let mut files = self.files_under(world, router);
        for _ in 0..level {
            if files >= self.catalogue_words {
                break;
            }
            let mut next = Vec::new();
            for &at in &frontier {
                for &n in &world.neighbours[at as usize] {
                    if world.state[n as usize] == State::Router && !seen.contains(&n) {
                        seen.push(n);
                        next.push(n);
                        files += self.files_under(world, n);
                    }
                }
            }
            frontier = next;
        }
        let words = (files + files.min(ARTISTS)).min(self.catalogue_words);
        let bits = (1u64 << self.log2_bits) as f64;
        let fill = 1.0 - (-2.0 * words / bits).exp();
        let entry = self
            .fill
            .entry(router)
            .or_insert([(Time::MAX, 0.0); MAX_LEVELS as usize]);
        entry[level as usize] = (now, fill as f32);
        fill
    }

    /// Whether level `level` of `router`'s tables, as `holder_of_tables`
    /// (its neighbour) holds them, may match query `q`. `near` is
    /// [`Self::holder_distances`] for `q`.
    #[allow(clippy::too_many_arguments)]
    fn level_matches(
        &mut self,
        world: &World,
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
            && world.neighbours[router as usize]
                .iter()
                .any(|&n| n != holder_of_tables && distance(n).is_some_and(|d| d < level))
        {
            return true;
        }
        let fill = self.table_fill(world, router, level, now);
        coin(q, router, world.seed) < fill * fill
    }

    /// Fills `decisions` with the routing decision, at `router`, for a copy
    /// of query `q` (`near`: its [`Self::holder_distances`]) arriving at
    /// each of `neighbours` with `ttl`.
    #[allow(clippy::too_many_arguments)]
    pub fn decisions(
        &mut self,
        world: &World,
        q: u32,
        near: &[(u32, u8)],
        router: u32,
        neighbours: &[PeerId],
        ttl: u8,
        now: Time,
        decisions: &mut Vec<Forward>,
    ) {
        let neighbours: Vec<u32> = neighbours.iter().map(node_of).collect();
        if ttl >= self.levels {
            *decisions = vec![Forward::Broadcast; neighbours.len()];
            return;
        }
        *decisions = neighbours
            .into_iter()
            .map(|n| {
                if self.level_matches(world, q, near, n, router, ttl, now) {
                    Forward::Routed
                } else {
                    Forward::Pruned
                }
            })
            .collect();
    }

    /// What `neighbour`'s tables, as `router` holds them, say about `q`.
    pub fn reach(
        &mut self,
        world: &World,
        q: u32,
        near: &[(u32, u8)],
        neighbour: u32,
        router: u32,
        now: Time,
    ) -> Reach {
        let levels = self.levels;
        (0..levels)
            .find(|&level| self.level_matches(world, q, near, neighbour, router, level, now))
            .map_or(Reach::Beyond(levels), Reach::Within)
    }

    /// Leaf `leaf` joined or left `router`: counts the table updates its
    /// files cause (see the module notes).
    pub fn count_table_change(&mut self, world: &World, leaf: u32, router: u32, now: Time) {
        if !in_query_phase(world, now) || world.state[router as usize] != State::Router {
            return;
        }
        self.seen_changes += 1;
        if !self.seen_changes.is_multiple_of(self.sample) {
            return;
        }
        self.traffic.changes += self.sample;
        let sample = self.sample as f64;
        let top = self.levels - 1;
        let (start, end) = (
            self.node_offsets[leaf as usize] as usize,
            self.node_offsets[leaf as usize + 1] as usize,
        );
        let files = &self.node_files[start..end];
        if files.is_empty() {
            return;
        }
        let near = distances(world, &[router], top);
        let mut updates = 0u64;
        for &file in files {
            // Every other router indexing a live holder of the file.
            let mut others = Vec::new();
            for &holder in world.population.catalogue.holders(file) {
                let Some(indexed_by) = world.indexed_by(holder) else {
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
            let elsewhere = distances(world, &others, top);
            for (&at, &from_here) in &near {
                let other = elsewhere.get(&at).copied().unwrap_or(u8::MAX);
                // Levels from `from_here` up to below `other` change.
                let levels = u64::from(other.min(top + 1).saturating_sub(from_here));
                if levels == 0 {
                    continue;
                }
                let degree = world.neighbours[at as usize].len() as u64;
                let told = if from_here == 0 {
                    degree
                } else {
                    degree.saturating_sub(1)
                };
                updates += levels * told;
            }
        }
        let bytes = updates as f64 * (BITS_PER_WORD * CHANGED_WORD_BYTES) as f64 * sample;
        self.traffic.update_bytes += bytes;
    }

    /// A link between routers `a` and `b` came up: each sends the other a
    /// full table per level.
    pub fn count_new_link(&mut self, world: &World, a: u32, b: u32, now: Time) {
        if !in_query_phase(world, now) {
            return;
        }
        let words = (1u64 << self.log2_bits) as f64 / 64.0;
        let mut bytes = 0.0;
        for router in [a, b] {
            for level in 0..self.levels {
                let fill = self.table_fill(world, router, level, now);
                let non_zero = 1.0 - (1.0 - fill).powi(64);
                bytes += words * non_zero * 8.0 + 16.0;
            }
        }
        self.traffic.link_bytes += bytes;
    }
}

fn in_query_phase(world: &World, now: Time) -> bool {
    let (start, end) = world.tally.phase;
    now >= start && now < end
}

/// Routers within `depth` hops of any of `from`, with their distance.
fn distances(world: &World, from: &[u32], depth: u8) -> HashMap<u32, u8> {
    let mut distance: HashMap<u32, u8> = from.iter().map(|&r| (r, 0)).collect();
    let mut frontier: VecDeque<u32> = from.iter().copied().collect();
    while let Some(router) = frontier.pop_front() {
        let d = distance[&router];
        if d >= depth {
            continue;
        }
        for &next in &world.neighbours[router as usize] {
            if world.state[next as usize] == State::Router && !distance.contains_key(&next) {
                distance.insert(next, d + 1);
                frontier.push_back(next);
            }
        }
    }
    distance
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
