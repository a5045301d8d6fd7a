use super::*;

fn peer(n: u8) -> PeerId {
    PeerId([n; 32])
}

fn neighbours(count: u8, degree: u32) -> Vec<Neighbour> {
    (1..=count)
        .map(|n| Neighbour {
            peer: peer(n),
            degree,
            reach: Reach::Unknown,
        })
        .collect()
}

const T0: Duration = Duration::from_secs(1000);

/// A scripted network: behind every neighbour, each supernode searched
/// holds `results_per_supernode` results, which come back half a hop-wait
/// per TTL after the probe. Runs the search to its end and returns every
/// probe sent (with when) and how it finished.
fn run(
    config: DynamicConfig,
    neighbours: Vec<Neighbour>,
    results_per_supernode: f64,
) -> (Vec<(Duration, PeerId, u8)>, Finish, u32) {
    let wait = config.wait_per_hop;
    let (mut search, mut steps) = DynamicQuery::start(config, neighbours.clone(), T0);
    let mut probes = Vec::new();
    let mut arrivals: Vec<(Duration, u32)> = Vec::new();
    let mut now = T0;
    let mut fractional = 0.0;
    loop {
        for step in steps.drain(..) {
            match step {
                Step::Probe { to, ttl } => {
                    probes.push((now, to, ttl));
                    let degree = neighbours.iter().find(|n| n.peer == to).unwrap().degree;
                    fractional += reach(degree, ttl) * results_per_supernode;
                    let whole = fractional.floor();
                    fractional -= whole;
                    arrivals.push((now + wait * (u32::from(ttl) + 1) / 2, whole as u32));
                }
                Step::Finish(how) => return (probes, how, search.results()),
            }
        }
        // Next event: an arrival or the search's own wake-up.
        arrivals.sort();
        let wakeup = search.next_wakeup().expect("running");
        match arrivals.first().copied() {
            Some((at, count)) if at <= wakeup => {
                arrivals.remove(0);
                now = at;
                steps = search.on_results(count, now);
            }
            _ => {
                now = wakeup;
                steps = search.on_tick(now);
            }
        }
    }
}

#[test]
fn reach_counts_a_tree_of_supernodes() {
    assert_eq!(reach(10, 0), 1.0);
    assert_eq!(reach(10, 1), 10.0);
    assert_eq!(reach(10, 2), 91.0);
    // A neighbour with one link (or none known) still counts itself.
    assert_eq!(reach(1, 3), 4.0);
}

#[test]
fn a_popular_file_stops_after_the_first_probe() {
    let (probes, how, results) = run(DynamicConfig::default(), neighbours(30, 10), 10.0);
    assert_eq!(how, Finish::Enough);
    assert!(results >= 150);
    assert_eq!(probes.len(), 3, "{probes:?}");
    assert!(probes.iter().all(|&(_, _, ttl)| ttl == 1));
}

#[test]
fn a_rare_file_gets_the_whole_horizon_in_time() {
    let config = DynamicConfig::default();
    let limit = config.time_limit;
    let (probes, how, results) = run(config, neighbours(30, 10), 0.0);
    assert_eq!(results, 0);
    assert_eq!(how, Finish::Exhausted);
    // Every neighbour asked, all but the first probe at the largest TTL,
    // and all before the time limit.
    assert_eq!(probes.len(), 30);
    assert!(probes[3..].iter().all(|&(_, _, ttl)| ttl == 4));
    assert!(probes.iter().all(|&(at, _, _)| at < T0 + limit));
}

#[test]
fn a_middling_file_widens_with_the_ttl_its_rate_needs() {
    // 3 probes at TTL 1 through degree-10 neighbours search 1 + 3 × 10
    // supernodes; at 1 result each, 31 results, 119 missing over 7
    // neighbours: 17 each, more than a TTL 1 copy reaches (10), less than
    // TTL 2 (91). So the next copy goes out at TTL 2.
    let (probes, how, results) = run(DynamicConfig::default(), neighbours(10, 10), 1.0);
    assert_eq!(probes[3].2, 2, "{probes:?}");
    assert_eq!(how, Finish::Enough);
    assert!(results >= 150);
    // The same search by plain flooding would have asked all 10 at TTL 4.
    assert!(probes.len() < 10, "{probes:?}");
}

#[test]
fn the_time_limit_stops_a_search() {
    let config = DynamicConfig {
        time_limit: Duration::from_secs(5),
        ..DynamicConfig::default()
    };
    let (search, _) = DynamicQuery::start(config, neighbours(30, 10), T0);
    let mut search = search;
    assert_eq!(
        search.on_tick(T0 + Duration::from_secs(5)),
        vec![Step::Finish(Finish::TimeLimit)]
    );
    assert_eq!(search.finished(), Some(Finish::TimeLimit));
    assert!(search.on_results(500, T0 + Duration::from_secs(6)).is_empty());
    assert_eq!(search.next_wakeup(), None);
}

#[test]
fn the_first_probe_goes_straight_to_the_nearest_match() {
    let mut list = neighbours(5, 10);
    list[0].reach = Reach::Beyond(4);
    list[1].reach = Reach::Within(3);
    list[2].reach = Reach::Within(2);
    list[3].reach = Reach::Within(2);
    list[4].reach = Reach::Within(3);
    let (_, steps) = DynamicQuery::start(DynamicConfig::default(), list, T0);
    // Only the two at the nearest level, with the TTL that gets there.
    assert_eq!(
        steps,
        vec![
            Step::Probe { to: peer(3), ttl: 2 },
            Step::Probe { to: peer(4), ttl: 2 }
        ]
    );
}

#[test]
fn neighbours_whose_tables_rule_out_everything_wait_and_are_dropped_once_results_are_in() {
    let mut list = neighbours(3, 10);
    list[0].reach = Reach::Beyond(4);
    list[1].reach = Reach::Within(1);
    list[2].reach = Reach::Beyond(4);
    let (mut search, steps) = DynamicQuery::start(DynamicConfig::default(), list.clone(), T0);
    assert_eq!(steps, vec![Step::Probe { to: peer(2), ttl: 1 }]);
    search.on_results(1, T0 + Duration::from_millis(500));
    let later = search.on_tick(search.next_wakeup().unwrap());
    assert_eq!(later, vec![Step::Finish(Finish::Exhausted)]);

    // Nothing found anywhere the tables cover: the others get a TTL past it.
    let (mut search, _) = DynamicQuery::start(DynamicConfig::default(), list, T0);
    let later = search.on_tick(search.next_wakeup().unwrap());
    assert!(
        later
            .iter()
            .all(|step| matches!(step, Step::Probe { ttl, .. } if *ttl >= 4)),
        "{later:?}"
    );
    assert!(!later.is_empty());
}

/// The caller lists neighbours nearest round trip first; among those whose
/// tables put a match equally near, the first probe keeps that order.
#[test]
fn equally_near_matches_are_asked_in_the_callers_order() {
    let mut listed = neighbours(6, 4);
    for (n, neighbour) in listed.iter_mut().enumerate() {
        neighbour.reach = if n == 4 {
            Reach::Within(2)
        } else {
            Reach::Within(1)
        };
    }
    let config = DynamicConfig {
        probe_fanout: 3,
        ..DynamicConfig::default()
    };
    let (_, steps) = DynamicQuery::start(config, listed, T0);
    let asked: Vec<PeerId> = steps
        .iter()
        .filter_map(|step| match step {
            Step::Probe { to, .. } => Some(*to),
            Step::Finish(_) => None,
        })
        .collect();
    assert_eq!(asked, vec![peer(1), peer(2), peer(3)]);
}
