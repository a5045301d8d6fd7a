//! NAT traversal in whole runs: which way downloads get to their sources
//! for populations of home routers where the answer is known.

use canopy_common::proto::nat::{Path, RouterKind};
use canopy_netsim::scenario::Nat;
use canopy_netsim::{Scenario, Sim, TraversalSummary};

/// A small Canopy network (elected supernodes, churn) whose nodes sit
/// behind the given routers.
fn run(nat: Nat, seed: u64) -> (Sim, TraversalSummary) {
    let mut scenario = Scenario {
        name: "small-nat".into(),
        nodes: 1_500,
        nat: Some(nat),
        ..Scenario::default()
    };
    scenario.files.catalogue = 300;
    scenario.files.rare = 30;
    scenario.queries.count = 120;
    scenario.queries.rate_per_s = 1.0;
    scenario.queries.warmup_s = 200.0;
    scenario.churn.median_session_min = 10.0;
    let mut sim = Sim::new(scenario, seed);
    sim.run();
    let summary = TraversalSummary::of(&sim).expect("home routers are modelled");
    assert!(summary.pairs > 100, "too few pairs to judge: {summary:?}");
    (sim, summary)
}

fn shares(public: f64, cone: f64, symmetric: f64, mapped: f64) -> Nat {
    Nat {
        public,
        cone,
        symmetric,
        mapped,
        ..Nat::default()
    }
}

fn pairs(summary: &TraversalSummary, downloader: RouterKind, source: RouterKind) -> [u32; 4] {
    let at = |kind| RouterKind::ALL.iter().position(|&k| k == kind).unwrap();
    summary.matrix[at(downloader)][at(source)]
}

#[test]
fn everyone_public_is_everyone_direct() {
    let (_, summary) = run(shares(1.0, 0.0, 0.0, 0.0), 1);
    assert_eq!(summary.by_path, [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(summary.push_only, 1.0);
    assert_eq!(summary.relay_pairs.max, 0.0);
}

#[test]
fn symmetric_homes_are_never_punched_and_relayed_among_themselves() {
    // Some public nodes, or nobody could be a supernode.
    let (_, summary) = run(shares(0.15, 0.0, 0.85, 0.0), 2);
    let [direct, pushed, punched, relayed] = summary.by_path;
    assert_eq!(punched, 0.0);
    assert!(relayed > 0.5, "{summary:?}");
    let among = pairs(&summary, RouterKind::Symmetric, RouterKind::Symmetric);
    assert_eq!(among[0] + among[1] + among[2], 0, "{among:?}");
    assert_eq!(
        (relayed * summary.pairs as f64).round() as u32,
        among[3],
        "relayed are exactly the symmetric pairs"
    );
    assert!(direct > 0.0 && pushed > 0.0);
    assert!(summary.relay_pairs.mean > 0.0);
}

#[test]
fn cones_punch_unless_the_punch_fails_and_then_relay() {
    let always = Nat {
        punch_success: 1.0,
        ..shares(0.2, 0.8, 0.0, 0.0)
    };
    let (_, summary) = run(always.clone(), 3);
    assert_eq!(summary.by_path[3], 0.0, "no symmetric router, no relay");
    assert!(summary.by_path[2] > 0.4, "{summary:?}");
    assert_eq!(summary.with_punching, 1.0);
    let never = Nat {
        punch_success: 0.0,
        ..always
    };
    let (_, failing) = run(never, 3);
    let among = pairs(&failing, RouterKind::Cone, RouterKind::Cone);
    assert_eq!(failing.by_path[2], 0.0);
    assert_eq!(among[3], among.iter().sum::<u32>());
    assert_eq!(failing.punch_failed, failing.by_path[3]);
}

#[test]
fn the_default_population_climbs_from_push_to_punch_to_relay() {
    let (sim, summary) = run(Nat::default(), 4);
    assert!(summary.push_only < summary.with_punching, "{summary:?}");
    assert!(summary.with_punching < summary.with_relay);
    assert_eq!(summary.with_relay, 1.0);
    assert!(summary.downloads_push_only <= summary.downloads_with_punching);
    assert!(summary.punch_failed > 0.0 && summary.punch_failed < summary.by_path[3]);
    assert!(summary.relayed_unavoidable < 1.0, "{summary:?}");
    // Birthday punching is not done: a cone meeting a symmetric router is
    // relayed, whichever side downloads.
    for (downloader, source) in [
        (RouterKind::Cone, RouterKind::Symmetric),
        (RouterKind::Symmetric, RouterKind::Cone),
    ] {
        let cell = pairs(&summary, downloader, source);
        assert!(cell[3] > 0 && cell[3] == cell.iter().sum::<u32>(), "{cell:?}");
    }
    // The election lets only nodes that accept connections route.
    let [public, cone, symmetric, mapped] = summary.supernodes;
    assert_eq!(cone + symmetric, 0.0, "{summary:?}");
    assert!(public > 0.0 && mapped > 0.0);
    // Every relayed pair is a pair neither side of which accepts
    // connections, relayed by a supernode other than the source itself.
    for transfer in sim.transfers().iter().filter(|t| t.path == Path::Relayed) {
        assert!(!transfer.source_router.accepts_connections());
        assert!(!transfer.downloader_router.accepts_connections());
        assert_ne!(transfer.via, transfer.source);
    }
    // The same seed, the same figures.
    assert_eq!(run(Nat::default(), 4).1, summary);
}
