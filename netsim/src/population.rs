//! Who is in the network: capacities, sessions and shared files.
//!
//! Everyone who will ever be online during a run is drawn up front, from
//! the seed, so churn is replayable and the files can be handed out once:
//! * capacity from a ladder of multiples (the Gia ladder measured on
//!   Gnutella by Saroiu et al. 2002 by default), a share of free riders and
//!   of firewalled peers;
//! * sessions from a Weibull (or exponential) law; the first `nodes` are
//!   online at the start with the *residual* of a session (what a
//!   stationary network shows), the rest arrive as a Poisson process whose
//!   rate keeps the population steady (Little's law: N / mean session);
//! * files in a Zipf catalogue with a chosen replication rule, plus rare
//!   files held by one node each;
//! * with a `[nat]` section, the kind of home router each node sits
//!   behind, which then decides who is firewalled.

use std::time::Duration;

use canopy_common::proto::election::Profile;
use canopy_common::proto::nat::RouterKind;

use crate::clock::{seconds, Time, NEVER};
use crate::rng::{Rng, Zipf};
use crate::scenario::{Nat, Replication, Scenario, SessionModel};

/// One node, as drawn. A few bytes of traits plus two times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    pub arrive: Time,
    pub depart: Time,
    /// Index into the capacity ladder.
    pub level: u8,
    /// Fails the election's dial-back: nobody can connect to it unasked.
    pub firewalled: bool,
    pub sharer: bool,
    /// The home router it sits behind, when the scenario models them.
    pub router: Option<RouterKind>,
}

/// Everyone, in order of arrival, and what they share.
#[derive(Debug)]
pub struct Population {
    pub nodes: Vec<NodeSpec>,
    /// Capacity multiple of each ladder level.
    pub multiples: Vec<f64>,
    pub base_upload_kbit: f64,
    pub base_rate: f64,
    pub catalogue: Catalogue,
}

/// Files and who holds them, in compressed-row form (one flat vector of
/// holders, sliced per file) so 10^7 replicas cost 40 MB.
#[derive(Debug)]
pub struct Catalogue {
    /// Files `0..popular` follow the Zipf law; the rest are rare.
    pub popular: u32,
    pub zipf: Zipf,
    offsets: Vec<u32>,
    holders: Vec<u32>,
}

impl Catalogue {
    /// One file that nobody holds.
    pub fn empty() -> Self {
        Catalogue {
            popular: 1,
            zipf: Zipf::new(1, 1.0),
            offsets: vec![0, 0],
            holders: Vec::new(),
        }
    }

    pub fn files(&self) -> u32 {
        (self.offsets.len() - 1) as u32
    }

    pub fn holders(&self, file: u32) -> &[u32] {
        &self.holders[self.offsets[file as usize] as usize..self.offsets[file as usize + 1] as usize]
    }

    pub fn is_rare(&self, file: u32) -> bool {
        file >= self.popular
    }

    pub fn replicas(&self) -> usize {
        self.holders.len()
    }
}

/// Natural log of Γ(x) (Lanczos, g = 7), for Weibull means.
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Session lengths, in seconds.
#[derive(Debug, Clone, Copy)]
pub enum Sessions {
    Forever,
    Weibull { shape: f64, scale: f64 },
    Exponential { mean: f64 },
}

impl Sessions {
    pub fn from_scenario(scenario: &Scenario) -> Self {
        let median = scenario.churn.median_session_min * 60.0;
        match scenario.churn.model {
            SessionModel::None => Sessions::Forever,
            SessionModel::Weibull => {
                let shape = scenario.churn.weibull_shape;
                Sessions::Weibull {
                    shape,
                    scale: median / std::f64::consts::LN_2.powf(1.0 / shape),
                }
            }
            SessionModel::Exponential => Sessions::Exponential {
                mean: median / std::f64::consts::LN_2,
            },
        }
    }

    pub fn mean(&self) -> f64 {
        match *self {
            Sessions::Forever => f64::INFINITY,
            Sessions::Weibull { shape, scale } => scale * ln_gamma(1.0 + 1.0 / shape).exp(),
            Sessions::Exponential { mean } => mean,
        }
    }

    /// A whole session, for a node arriving now.
    pub fn draw(&self, rng: &mut Rng) -> f64 {
        match *self {
            Sessions::Forever => f64::INFINITY,
            Sessions::Weibull { shape, scale } => rng.weibull(shape, scale),
            Sessions::Exponential { mean } => rng.exponential(mean),
        }
    }

    /// What is left of the session of a node found online in a steady
    /// network. Sessions seen in progress are length-biased; for a Weibull
    /// law the biased length is λ·G^(1/k) with G ~ Gamma(1 + 1/k), and the
    /// remainder is a uniform share of it.
    pub fn draw_residual(&self, rng: &mut Rng) -> f64 {
        match *self {
            Sessions::Forever => f64::INFINITY,
            Sessions::Weibull { shape, scale } => {
                let biased = scale * rng.gamma(1.0 + 1.0 / shape).powf(1.0 / shape);
                rng.unit() * biased
            }
            // Memoryless: the remainder is a fresh session.
            Sessions::Exponential { mean } => rng.exponential(mean),
        }
    }
}

/// Simulated seconds the run lasts: warm-up, the queries, and their window.
pub fn run_length(scenario: &Scenario) -> f64 {
    let q = &scenario.queries;
    q.warmup_s + q.count as f64 / q.rate_per_s.max(1e-9) + q.window_s
}

/// Seconds over which the first population logs on.
pub const RAMP_S: f64 = 60.0;

impl Population {
    pub fn generate(scenario: &Scenario, seed: u64) -> Self {
        let mut rng = Rng::stream(seed, 1);
        let pop = &scenario.population;
        let total_share: f64 = pop.ladder.iter().map(|&(_, share)| share).sum();
        let sessions = Sessions::from_scenario(scenario);
        let end = run_length(scenario);
        let mut nodes = Vec::with_capacity(scenario.nodes as usize);
        let traits = |rng: &mut Rng| {
            let mut pick = rng.unit() * total_share;
            let mut level = pop.ladder.len() - 1;
            for (i, &(_, share)) in pop.ladder.iter().enumerate() {
                if pick < share {
                    level = i;
                    break;
                }
                pick -= share;
            }
            (
                level as u8,
                rng.chance(pop.firewalled),
                !rng.chance(pop.free_riders),
            )
        };
        let to_time = |s: f64| if s.is_finite() { seconds(s) } else { NEVER };
        for _ in 0..scenario.nodes {
            let arrive = rng.unit() * RAMP_S;
            let stay = sessions.draw_residual(&mut rng);
            let (level, firewalled, sharer) = traits(&mut rng);
            nodes.push(NodeSpec {
                arrive: to_time(arrive),
                depart: to_time(arrive + stay),
                level,
                firewalled,
                sharer,
                router: None,
            });
        }
        let rate = scenario.nodes as f64 / sessions.mean();
        if rate > 0.0 {
            let mut t = RAMP_S;
            loop {
                t += rng.exponential(1.0 / rate);
                if t >= end {
                    break;
                }
                let stay = sessions.draw(&mut rng);
                let (level, firewalled, sharer) = traits(&mut rng);
                nodes.push(NodeSpec {
                    arrive: to_time(t),
                    depart: to_time(t + stay),
                    level,
                    firewalled,
                    sharer,
                    router: None,
                });
            }
        }
        if let Some(nat) = &scenario.nat {
            give_routers(&mut nodes, nat, seed);
        }
        // Arrival order is index order, so "node 0" logged on first.
        nodes.sort_by_key(|node| node.arrive);
        let catalogue = Catalogue::generate(scenario, &nodes, &mut Rng::stream(seed, 2));
        Population {
            nodes,
            multiples: pop.ladder.iter().map(|&(multiple, _)| multiple).collect(),
            base_upload_kbit: pop.base_upload_kbit,
            base_rate: pop.base_rate,
            catalogue,
        }
    }

    pub fn multiple(&self, node: u32) -> f64 {
        self.multiples[self.nodes[node as usize].level as usize]
    }

    /// Query messages per second the node can process.
    pub fn rate(&self, node: u32) -> f64 {
        self.base_rate * self.multiple(node)
    }

    /// The node as the election sees it. The ladder says only "how much
    /// bandwidth"; machines are assumed to grow with it (a modem-class 1×
    /// peer has one core and 1 GiB, a 10000× one eight cores and 16 GiB),
    /// download is four times upload (asymmetric lines), and a firewalled
    /// peer fails the dial-back test.
    pub fn profile(&self, node: u32, now: Time) -> Profile {
        let spec = &self.nodes[node as usize];
        let upload = self.multiple(node) * self.base_upload_kbit * 1000.0 / 8.0;
        let (cores, gib) = match spec.level {
            0 => (1, 1),
            1 => (2, 2),
            2 => (2, 4),
            3 => (4, 8),
            _ => (8, 16),
        };
        Profile {
            cores,
            memory_total: gib << 30,
            memory_available: (gib << 30) / 2,
            uptime: Duration::from_micros(now.saturating_sub(spec.arrive)),
            os: String::new(),
            upload: Some(upload as u64),
            download: Some((upload * 4.0) as u64),
            reachable: Some(!spec.firewalled),
        }
    }
}

/// Draws each node's home router from the scenario's shares, on a stream
/// of its own (so nothing else drawn changes), and lets the router decide
/// who is firewalled: only public and mapped homes let a stranger in.
fn give_routers(nodes: &mut [NodeSpec], nat: &Nat, seed: u64) {
    let mut rng = Rng::stream(seed, 6);
    for node in nodes {
        let kind = nat.kind_at(rng.unit());
        node.router = Some(kind);
        node.firewalled = !kind.accepts_connections();
    }
}

impl Catalogue {
    /// A catalogue of popular files held by the given nodes, equally
    /// likely to be asked for (for networks built by hand).
    pub fn with_holders(files: &[&[u32]]) -> Self {
        let mut offsets = vec![0u32];
        let mut holders = Vec::new();
        for file in files {
            holders.extend_from_slice(file);
            offsets.push(holders.len() as u32);
        }
        Catalogue {
            popular: files.len() as u32,
            zipf: Zipf::new(files.len().max(1), 0.0),
            offsets,
            holders,
        }
    }

    fn generate(scenario: &Scenario, nodes: &[NodeSpec], rng: &mut Rng) -> Self {
        let files = &scenario.files;
        let sharers: Vec<u32> = (0..nodes.len() as u32)
            .filter(|&n| nodes[n as usize].sharer)
            .collect();
        let popular = files.catalogue.max(1);
        let zipf = Zipf::new(popular as usize, files.zipf_alpha);
        let weights: Vec<f64> = (0..popular as usize)
            .map(|i| match files.replication {
                Replication::Proportional => zipf.probability(i),
                Replication::SquareRoot => zipf.probability(i).sqrt(),
                Replication::Uniform => 1.0,
            })
            .collect();
        let weight_sum: f64 = weights.iter().sum();
        let total = files.mean_replicas * popular as f64;
        let mut offsets = vec![0u32];
        let mut holders = Vec::new();
        let mut picked = Vec::new();
        let limit = sharers.len().max(1);
        for file in 0..(popular + files.rare) {
            let count = if file < popular {
                ((total * weights[file as usize] / weight_sum).round() as usize).clamp(1, limit)
            } else {
                1
            };
            picked.clear();
            if !sharers.is_empty() {
                picked.extend((0..count).map(|_| sharers[rng.below(sharers.len() as u64) as usize]));
            }
            // Two draws of one node are one replica.
            picked.sort_unstable();
            picked.dedup();
            holders.extend_from_slice(&picked);
            offsets.push(holders.len() as u32);
        }
        Catalogue {
            popular,
            zipf,
            offsets,
            holders,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(nodes: u32) -> Scenario {
        Scenario {
            nodes,
            ..Scenario::default()
        }
    }

    #[test]
    fn the_ladder_and_free_riders_come_out_in_their_shares() {
        let population = Population::generate(&scenario(20_000), 5);
        let initial = &population.nodes;
        let n = initial.len() as f64;
        let share = |level: u8| initial.iter().filter(|s| s.level == level).count() as f64 / n;
        assert!((share(0) - 0.20).abs() < 0.02);
        assert!((share(1) - 0.45).abs() < 0.02);
        assert!((share(2) - 0.30).abs() < 0.02);
        assert!((share(3) - 0.049).abs() < 0.01);
        let riders = initial.iter().filter(|s| !s.sharer).count() as f64 / n;
        assert!((riders - 0.25).abs() < 0.02, "{riders}");
        assert!(population.nodes.windows(2).all(|w| w[0].arrive <= w[1].arrive));
    }

    #[test]
    fn weibull_sessions_have_the_asked_median_and_keep_the_population_steady() {
        let s = scenario(10_000);
        let sessions = Sessions::from_scenario(&s);
        let mut rng = Rng::new(9);
        let mut draws: Vec<f64> = (0..50_000).map(|_| sessions.draw(&mut rng)).collect();
        draws.sort_by(f64::total_cmp);
        assert!(
            (draws[25_000] / 3600.0 - 1.0).abs() < 0.05,
            "median {}",
            draws[25_000]
        );
        // Γ(3) = 2: the mean of a shape-0.5 Weibull is twice its scale.
        let Sessions::Weibull { scale, .. } = sessions else {
            panic!()
        };
        assert!((sessions.mean() / scale - 2.0).abs() < 1e-9);
        // Online at the end of the run: close to the asked population.
        let population = Population::generate(&s, 3);
        let end = seconds(run_length(&s));
        let online = population
            .nodes
            .iter()
            .filter(|n| n.arrive <= end && n.depart > end)
            .count() as f64;
        assert!((online / 10_000.0 - 1.0).abs() < 0.1, "{online}");
    }

    #[test]
    fn rare_files_have_one_holder_and_replication_follows_popularity() {
        let mut s = scenario(5_000);
        s.files.catalogue = 1_000;
        s.files.rare = 50;
        let population = Population::generate(&s, 1);
        let catalogue = &population.catalogue;
        assert_eq!(catalogue.files(), 1_050);
        assert!((1_000..1_050).all(|f| catalogue.holders(f).len() == 1 && catalogue.is_rare(f)));
        assert!(catalogue.holders(0).len() > 10 * catalogue.holders(999).len());
        let sharer = |n: &u32| population.nodes[*n as usize].sharer;
        assert!(catalogue.holders(0).iter().all(sharer));
    }

    #[test]
    fn home_routers_decide_who_is_firewalled_and_change_nothing_else() {
        let plain = scenario(20_000);
        let mut homes = plain.clone();
        homes.nat = Some(Nat::default());
        let without = Population::generate(&plain, 4);
        let with = Population::generate(&homes, 4);
        assert_eq!(without.nodes.len(), with.nodes.len());
        for (a, b) in without.nodes.iter().zip(&with.nodes) {
            assert_eq!(
                (a.arrive, a.depart, a.level, a.sharer),
                (b.arrive, b.depart, b.level, b.sharer)
            );
            assert_eq!(a.router, None);
            let kind = b.router.expect("every node has a router");
            assert_eq!(b.firewalled, !kind.accepts_connections());
        }
        assert_eq!(without.catalogue.replicas(), with.catalogue.replicas());
        let n = with.nodes.len() as f64;
        let nat = Nat::default();
        for kind in RouterKind::ALL {
            let share = with.nodes.iter().filter(|s| s.router == Some(kind)).count() as f64 / n;
            assert!(
                (share - nat.share(kind)).abs() < 0.01,
                "{}: {share}",
                kind.label()
            );
        }
    }

    #[test]
    fn a_hand_built_catalogue_lists_its_holders() {
        let catalogue = Catalogue::with_holders(&[&[3, 4], &[], &[1]]);
        assert_eq!(catalogue.files(), 3);
        assert_eq!(catalogue.holders(0), &[3, 4]);
        assert!(catalogue.holders(1).is_empty());
        assert_eq!(catalogue.holders(2), &[1]);
        assert!(!catalogue.is_rare(2));
    }

    #[test]
    fn profiles_follow_the_ladder() {
        let population = Population::generate(&scenario(2_000), 1);
        let strong = (0..2_000u32)
            .find(|&n| population.nodes[n as usize].level == 2)
            .unwrap();
        let profile = population.profile(strong, 0);
        assert_eq!(profile.upload, Some(800_000)); // 100 × 64 kbit/s
        assert_eq!(
            profile.reachable,
            Some(!population.nodes[strong as usize].firewalled)
        );
    }
}
