//! One query over a graph you choose: the simulator's answer to "which
//! routers does a query with this TTL reach from here?", for tests and for
//! comparing with a real network of the same shape.
//!
//! Every node is a router, links are the given edges, every link has the
//! same latency and nothing churns, so the flood order is the textbook one:
//! breadth first, ties in the order the routers forwarded.

use crate::clock::{Time, NEVER};
use crate::population::{Catalogue, NodeSpec, Population};
use crate::scenario::{Scenario, SessionModel, TopologyKind};
use crate::search::QueryState;
use crate::sim::Sim;
use canopy_common::proto::routing::QueryId;

/// What one flood did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Routers that took the query in, with the hops it had travelled, in
    /// the order they were reached.
    pub reached: Vec<(u32, u8)>,
    /// Query messages sent between routers (duplicates included).
    pub messages: u32,
    /// Of them, those a router dropped as already seen.
    pub duplicates: u32,
}

impl Probe {
    /// The reached routers, sorted.
    pub fn routers(&self) -> Vec<u32> {
        let mut routers: Vec<u32> = self.reached.iter().map(|&(r, _)| r).collect();
        routers.sort_unstable();
        routers
    }
}

/// Floods one query with `ttl` from `origin` over `nodes` routers linked
/// by `edges` (undirected), through the real routers.
pub fn flood(nodes: u32, edges: &[(u32, u32)], origin: u32, ttl: u8) -> Probe {
    let mut scenario = Scenario {
        name: "probe".into(),
        nodes,
        ..Scenario::default()
    };
    scenario.topology.kind = TopologyKind::Flat;
    scenario.topology.degree_min = 0;
    scenario.topology.degree_max = u32::MAX;
    scenario.churn.model = SessionModel::None;
    scenario.latency.min_ms = 100.0;
    scenario.latency.max_ms = 100.0;
    scenario.queries.count = 0;
    scenario.queries.warmup_s = 0.0;
    let population = Population {
        nodes: vec![
            NodeSpec {
                arrive: 0,
                depart: NEVER,
                level: 0,
                firewalled: false,
                sharer: false,
                router: None,
            };
            nodes as usize
        ],
        multiples: vec![1.0],
        base_upload_kbit: 64.0,
        // Fast enough that nothing ever queues.
        base_rate: 1e6,
        catalogue: Catalogue::empty(),
    };
    let mut sim = Sim::with_population(scenario, population, 1);
    for node in 0..nodes {
        sim.world.live.insert(node);
        sim.become_router(node, 0);
    }
    let neighbours = &mut sim.world.neighbours;
    for &(a, b) in edges {
        if a != b && !neighbours[a as usize].contains(&b) {
            neighbours[a as usize].push(b);
            neighbours[b as usize].push(a);
        }
    }
    let mut state = QueryState::new(0, QueryId([0x5e; 16]), 0);
    state.query.ttl = Some(ttl);
    state.trace = Some(Vec::new());
    sim.search.queries.push(state);
    sim.search.issue(&mut sim.world, 0, origin, 0);
    sim.run_until(Time::MAX);
    let state = &sim.search.queries[0];
    Probe {
        reached: state.trace.clone().unwrap_or_default(),
        messages: state.outcome.query_messages,
        duplicates: state.outcome.duplicates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u32) -> Vec<(u32, u32)> {
        (1..n).map(|i| (i - 1, i)).collect()
    }

    #[test]
    fn a_line_is_reached_exactly_ttl_hops_deep() {
        for ttl in [0u8, 2, 5] {
            let probe = flood(8, &line(8), 0, ttl);
            let expected: Vec<(u32, u8)> = (0..=ttl).map(|h| (h as u32, h)).collect();
            assert_eq!(probe.reached, expected, "ttl {ttl}");
            // One message per hop travelled, none back.
            assert_eq!(probe.messages, ttl as u32);
            assert_eq!(probe.duplicates, 0);
        }
    }

    #[test]
    fn a_ring_of_four_by_hand() {
        // 0 sends to 1 and 3 (2 messages); 1 and 3 both send to 2 (2 more);
        // 2 takes the first, forwards it to the other of 1 and 3 (1 more),
        // which drops it, and drops the second copy itself: 5 messages,
        // 2 duplicates, all 4 routers reached.
        let ring = [(0, 1), (1, 2), (2, 3), (3, 0)];
        let probe = flood(4, &ring, 0, 3);
        assert_eq!(probe.routers(), vec![0, 1, 2, 3]);
        assert_eq!((probe.messages, probe.duplicates), (5, 2));
        assert_eq!(probe.reached.last(), Some(&(2, 2)));
    }

    #[test]
    fn a_complete_graph_sends_everything_twice() {
        // K4 from 0: 3 messages out, then each of the 3 forwards to the 2
        // others: 6 more, all duplicates.
        let k4 = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
        let probe = flood(4, &k4, 0, 7);
        assert_eq!((probe.messages, probe.duplicates), (9, 6));
        assert_eq!(probe.routers(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_tree_reaches_the_textbook_sum() {
        // Root with 3 children, every other inner node with 2 more
        // (degree 3 throughout): 1 + 3 + 6 + 12 nodes within 3 hops,
        // d·(d−1)^(h−1) new at hop h, one message per node reached.
        let mut edges = Vec::new();
        let mut frontier = vec![0u32];
        let mut next_id = 1u32;
        for depth in 0..4 {
            let mut next = Vec::new();
            for &parent in &frontier {
                for _ in 0..if depth == 0 { 3 } else { 2 } {
                    edges.push((parent, next_id));
                    next.push(next_id);
                    next_id += 1;
                }
            }
            frontier = next;
        }
        let probe = flood(next_id, &edges, 0, 3);
        let mut per_hop = [0u32; 4];
        for &(_, hops) in &probe.reached {
            per_hop[hops as usize] += 1;
        }
        assert_eq!(per_hop, [1, 3, 6, 12]);
        assert_eq!(probe.messages, 21);
        assert_eq!(probe.duplicates, 0);
    }
}
