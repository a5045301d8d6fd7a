//! Whole runs: the same seed gives the same figures, and small networks
//! behave as they must.

use canopy_netsim::scenario::{Selection, SessionModel, TopologyKind};
use canopy_netsim::{run, Scenario};

fn small(kind: TopologyKind, nodes: u32, queries: u32) -> Scenario {
    let mut s = Scenario {
        name: "small".into(),
        nodes,
        ..Scenario::default()
    };
    s.topology.kind = kind;
    s.files.catalogue = 500;
    s.files.rare = 50;
    s.queries.count = queries;
    s.queries.rate_per_s = 0.5;
    s.queries.warmup_s = 200.0;
    s.churn.median_session_min = 10.0;
    s
}

#[test]
fn same_seed_same_figures_other_seed_other_figures() {
    let scenario = small(TopologyKind::TwoTier, 1_500, 80);
    // Compared as text: a figure with nothing to measure is NaN, and NaN
    // is not equal to itself.
    let (_, a) = run(scenario.clone(), 7);
    let (_, b) = run(scenario.clone(), 7);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(a.queries == 80 && a.routers_reached > 1.0, "{a:?}");
    let (_, c) = run(scenario, 8);
    assert_ne!(a, c);

    let flat = small(TopologyKind::Flat, 300, 30);
    assert_eq!(
        format!("{:?}", run(flat.clone(), 3).1),
        format!("{:?}", run(flat, 3).1)
    );
}

#[test]
fn without_churn_a_deep_flood_finds_every_holder() {
    let mut s = small(TopologyKind::Flat, 400, 40);
    s.churn.model = SessionModel::None;
    s.topology.ttl = 7;
    // Fast peers: nothing is dropped, so a connected graph is covered. One
    // latency for every link: each router first hears a query by a
    // shortest path, well within the TTL, so every router forwards it.
    s.population.ladder = vec![(10_000.0, 1.0)];
    s.latency.min_ms = 100.0;
    s.latency.max_ms = 100.0;
    let (sim, summary) = run(s, 1);
    assert_eq!(summary.routers_reached, 400.0, "{summary:?}");
    assert_eq!(summary.success_popular, 1.0);
    assert_eq!(summary.recall_popular, 1.0);
    assert_eq!(summary.recall_rare, 1.0);
    assert_eq!(summary.dropped + summary.lost, 0.0);
    // The origin sends to all its neighbours, every other router to all but
    // the one it first heard from: Σ degree − (routers − 1) messages.
    let degree_sum = summary.mean_degree * 400.0;
    let expected = degree_sum - (400.0 - 1.0);
    assert!(
        (summary.query_messages - expected).abs() < 1e-6,
        "{} vs {expected}",
        summary.query_messages
    );
    assert_eq!(sim.tally().outcomes.len(), 40);
}

#[test]
fn the_election_makes_few_supernodes_and_they_respect_their_slots() {
    let mut s = small(TopologyKind::TwoTier, 3_000, 50);
    s.supernodes.selection = Selection::Election;
    let (_, canopy) = run(s.clone(), 2);
    // Slots of 200–1600 leaves: well under 5 % of nodes need to route.
    assert!(
        canopy.router_share > 0.0 && canopy.router_share < 0.05,
        "{canopy:?}"
    );
    assert!(canopy.leaves_per_router > 20.0);
    assert_eq!(canopy.stranded, 0);

    // FastTrack-style, one session and clusters of at most 20: more supernodes.
    s.supernodes.selection = Selection::Capacity;
    s.supernodes.leaves_min = 10;
    s.supernodes.leaves_max = 20;
    s.supernodes.sessions = 1;
    let (_, fasttrack) = run(s, 2);
    assert!(fasttrack.leaves_per_router <= 20.0, "{fasttrack:?}");
    assert!(fasttrack.router_share > canopy.router_share);
    assert!(fasttrack.multiplier > 1.0 && fasttrack.orphan_spells > 0);
}
