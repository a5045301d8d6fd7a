//! Keyword routing and dynamic querying in the simulator.
//!
//! The decisions are the real ones: every router forwards through
//! [`Router::on_query_with`](canopy_common::proto::routing::Router::on_query_with),
//! and the searcher's supernode runs a real
//! [`DynamicQuery`](canopy_common::proto::dynamic::DynamicQuery).
//!
//! The tables are **modelled**, not built (the catalogue has no words per
//! node to hash, and rebuilding tables under churn at 10^6 nodes would
//! dominate the run). A neighbour's table matches a query
//! * always, when the neighbour indexes a live holder of the file (no false
//!   negatives: the property `common`'s tests prove of the real table);
//! * otherwise with the false-positive rate of a real table of that
//!   neighbour's words: `fill²` for the query's title word (unique to the
//!   file), where `fill = 1 − exp(−2·W / 2^bits)` and `W` is the files held
//!   by the neighbour and its leaves plus their artists (at most 977). The
//!   artist word is taken to be present, so this over-states false
//!   positives. `common`'s tests measure the real table at `fill²` ± 0.01.
//!
//! Not modelled: the delay before a table change reaches the neighbours
//! (a file published seconds ago may be pruned), and the bytes of the
//! table updates themselves (see `docs/QRP.md` for their cost).

use canopy_common::proto::dynamic::{DynamicConfig, DynamicQuery, Finish, Neighbour, Reach, Step};

use crate::clock::{as_duration, seconds, Time};
use crate::sim::{node_of, peer, Event, Sim, State};

/// Distinct artists in the simulator's file names (`artist{file % 977}`).
const ARTISTS: f64 = 977.0;
/// A router's table fill is recomputed when older than this.
const FILL_REFRESH_S: f64 = 60.0;

/// What the simulator knows to model a router's keyword table.
#[derive(Debug)]
pub struct TableModel {
    /// Files each node shares.
    files_held: Vec<u32>,
    /// Per node: when its fill was computed, and the fill.
    fill: Vec<(Time, f32)>,
    log2_bits: u8,
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
        TableModel {
            files_held,
            fill: vec![(Time::MAX, 0.0); n],
            log2_bits: sim.scenario.router.table_log2_bits,
        }
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

    /// The share of a router's table bits set, now.
    fn table_fill(&mut self, router: u32, now: Time) -> f64 {
        let Some(model) = self.tables.as_mut() else {
            return 1.0;
        };
        let (at, fill) = model.fill[router as usize];
        if at != Time::MAX && now.saturating_sub(at) < seconds(FILL_REFRESH_S) {
            return f64::from(fill);
        }
        let files: f64 = std::iter::once(router)
            .chain(self.leaves[router as usize].iter().copied())
            .map(|node| f64::from(model.files_held[node as usize]))
            .sum();
        let words = files + files.min(ARTISTS);
        let bits = (1u64 << model.log2_bits) as f64;
        let fill = 1.0 - (-2.0 * words / bits).exp();
        model.fill[router as usize] = (now, fill as f32);
        fill
    }

    /// Whether `neighbour`'s table may match query `q`.
    pub(crate) fn table_may_match(&mut self, q: u32, neighbour: u32, now: Time) -> bool {
        let indexes_holder = self.queries[q as usize]
            .index
            .binary_search_by_key(&neighbour, |&(router, _)| router)
            .is_ok();
        if indexes_holder {
            return true;
        }
        let fill = self.table_fill(neighbour, now);
        coin(q, neighbour, self.seed) < fill * fill
    }

    /// Fills `self.allowed` with the last-hop decision for each neighbour
    /// in `self.scratch`.
    pub(crate) fn fill_allowed(&mut self, q: u32, now: Time) {
        let neighbours: Vec<u32> = self.scratch.iter().map(node_of).collect();
        self.allowed = neighbours
            .into_iter()
            .map(|n| self.table_may_match(q, n, now))
            .collect();
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
            ..DynamicConfig::default()
        };
        let probe_is_last_hop = config.probe_ttl == 0;
        let mut neighbours = Vec::new();
        for n in self.neighbours[router as usize].clone() {
            let reach = if !self.keyword_tables() || !probe_is_last_hop {
                Reach::Unknown
            } else if self.table_may_match(q, n, now) {
                Reach::Within(0)
            } else {
                Reach::Beyond(1)
            };
            neighbours.push(Neighbour {
                peer: peer(n),
                degree: self.neighbours[n as usize].len() as u32,
                reach,
            });
        }
        let (search, steps) = DynamicQuery::start(config, neighbours, as_duration(now));
        let state = &mut self.queries[q as usize];
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
            let last_hop = ttl == 0 && self.keyword_tables();
            self.send_flood(q, router, to, ttl, 1, last_hop, now);
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
