//! NAT traversal in whole runs: which way downloads get to their sources
//! for populations of home routers where the answer is known.

use canopy_common::proto::nat::{Path, RouterKind};
use canopy_netsim::scenario::Nat;
use canopy_netsim::traversal::Punch;
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
    let (sim, summary) = run(shares(0.15, 0.0, 0.85, 0.0), 2);
    let [direct, pushed, punched, relayed] = summary.by_path;
    assert_eq!(punched, 0.0);
    assert_eq!(summary.punch_failed, 0.0, "no punch is even tried");
    assert!(relayed > 0.5, "{summary:?}");
    // Every pair in which neither side accepts connections is relayed.
    for transfer in sim.transfers() {
        let neither = !transfer.downloader_router.accepts_connections()
            && !transfer.source_router.accepts_connections();
        assert_eq!(transfer.path == Path::Relayed, neither, "{transfer:?}");
        assert_eq!(transfer.punch, None);
    }
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
    // A cone meeting a symmetric router punches by birthday, whichever
    // side downloads, and at the default chance (99.97 %) all but a few
    // pairs in 10,000 get through; two symmetric routers are relayed.
    for (downloader, source) in [
        (RouterKind::Cone, RouterKind::Symmetric),
        (RouterKind::Symmetric, RouterKind::Cone),
    ] {
        let cell = pairs(&summary, downloader, source);
        assert!(
            cell[2] > 0 && cell[2] + cell[3] == cell.iter().sum::<u32>(),
            "{cell:?}"
        );
        assert!(cell[3] * 100 <= cell[2], "{cell:?}");
    }
    assert!(summary.birthday_punched > 0.05, "{summary:?}");
    let among = pairs(&summary, RouterKind::Symmetric, RouterKind::Symmetric);
    assert!(among[3] > 0 && among[3] == among.iter().sum::<u32>(), "{among:?}");
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

/// Cones and symmetric routers only (and the public nodes that route): two
/// cones punch plainly, a cone and a symmetric router by birthday at the
/// birthday chance, two symmetric routers are relayed.
#[test]
fn a_cone_and_a_symmetric_router_punch_by_birthday_at_its_own_chance() {
    use RouterKind::{Cone, Symmetric};
    let population = Nat {
        punch_success: 1.0,
        birthday_success: 0.6,
        ..shares(0.15, 0.5, 0.35, 0.0)
    };
    let (sim, summary) = run(population.clone(), 5);
    let cones = pairs(&summary, Cone, Cone);
    assert!(cones[2] > 0 && cones[2] == cones.iter().sum::<u32>(), "{cones:?}");
    let symmetric = pairs(&summary, Symmetric, Symmetric);
    assert!(
        symmetric[3] > 0 && symmetric[3] == symmetric.iter().sum::<u32>(),
        "{symmetric:?}"
    );
    let mixed = [pairs(&summary, Cone, Symmetric), pairs(&summary, Symmetric, Cone)];
    let (punched, relayed) = (mixed[0][2] + mixed[1][2], mixed[0][3] + mixed[1][3]);
    assert_eq!(mixed[0][0] + mixed[0][1] + mixed[1][0] + mixed[1][1], 0);
    assert!(mixed[0][2] > 0 && mixed[1][2] > 0, "both ways round: {mixed:?}");
    let tried = (punched + relayed) as f64;
    assert!(tried > 200.0, "too few birthday pairs to judge: {mixed:?}");
    // Within four standard deviations of the configured chance.
    let rate = punched as f64 / tried;
    let slack = 4.0 * (0.6 * 0.4 / tried).sqrt();
    assert!((rate - 0.6).abs() < slack, "{rate} of {tried} pairs");
    // Every failed punch was a birthday one, and relayed.
    let total = summary.pairs as f64;
    assert_eq!(summary.punch_failed, summary.birthday_failed);
    assert_eq!((summary.birthday_failed * total).round() as u32, relayed);
    assert_eq!((summary.birthday_punched * total).round() as u32, punched);
    for transfer in sim.transfers() {
        let birthday = transfer.punch == Some(Punch::Birthday);
        assert_eq!(
            birthday,
            transfer.downloader_router != transfer.source_router
                && !transfer.downloader_router.accepts_connections()
                && !transfer.source_router.accepts_connections(),
            "{transfer:?}"
        );
    }
    // The chance is the birthday punch's own: certain, and never.
    let (_, certain) = run(
        Nat {
            birthday_success: 1.0,
            ..population.clone()
        },
        5,
    );
    assert_eq!(certain.birthday_failed, 0.0);
    assert_eq!(
        (certain.by_path[3] * certain.pairs as f64).round() as u32,
        pairs(&certain, Symmetric, Symmetric)[3],
        "only two symmetric routers are relayed"
    );
    let (_, never) = run(
        Nat {
            birthday_success: 0.0,
            ..population
        },
        5,
    );
    assert_eq!(never.birthday_punched, 0.0);
    assert_eq!(
        (never.by_path[2] * never.pairs as f64).round() as u32,
        pairs(&never, Cone, Cone)[2],
        "only the cones punch"
    );
}
