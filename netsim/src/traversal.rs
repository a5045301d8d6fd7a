//! NAT traversal in the simulated network: which way each download gets
//! to each of its sources, and what the relays cost the supernodes.
//!
//! Every search of the query phase is taken to end in a download of the
//! file it looked for, from the holders whose hits reached the searcher:
//! the first [`Nat::sources_at_once`] to answer (the downloader connects to
//! that many at once), never the searcher itself. For each (downloader,
//! source) pair the way through is the real rule,
//! [`canopy_common::proto::nat::path`], of the two nodes' home routers. A
//! punch the routers allow may still fail (a coin per pair): a plain one
//! (two cones) with the scenario's `1 − punch_success`, a birthday one (a
//! cone and a symmetric router, planned by the source's supernode as
//! [`canopy_common::proto::birthday::plan`] plans it) with
//! `1 − birthday_success`; the downloader then takes the relay, as the real
//! one does after a second.
//!
//! A push, a punch and a relay are all asked of the router whose hit
//! listed the source (its supernode; a source that routes lists itself
//! and is dialed), so a relayed pair is the load of the **source's**
//! supernode, whoever the downloader's supernode is.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path as FilePath;

use canopy_common::proto::birthday::{self, Plan};
use canopy_common::proto::nat::{path, Path, RouterKind};

use crate::clock::as_seconds;
use crate::metrics::{quantile, Run};
use crate::rng::splitmix;
use crate::scenario::Nat;
use crate::world::{World, MAX_SESSIONS, NONE};

/// A finished run with its downloads, as the figures below read it
/// ([`crate::Sim`] is one).
pub trait Downloads: Run {
    /// Every (downloader, source) pair of the query phase.
    fn transfers(&self) -> &[Transfer];
}

/// The kind of punch a pair of routers calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Punch {
    /// Both routers keep one port: each side aims at the port the
    /// supernode saw of the other.
    Plain,
    /// One router keeps one port, the other is symmetric: the symmetric
    /// side opens many ports, the cone side sprays probes at random ones.
    Birthday,
}

impl Punch {
    pub fn label(self) -> &'static str {
        match self {
            Punch::Plain => "plain",
            Punch::Birthday => "birthday",
        }
    }
}

/// The punch a downloader behind `downloader` and a source behind `source`
/// go through, `None` where [`path`] says they need none (direct, pushed)
/// or none can work (relayed from the start). Plain or birthday as the
/// source's supernode plans it ([`birthday::plan`], every leaf taken to
/// speak birthday punching).
pub fn punch(downloader: RouterKind, source: RouterKind) -> Option<Punch> {
    if path(downloader, source) != Path::Punched {
        return None;
    }
    match birthday::plan(downloader.as_downloader(), Some(source.as_leaf())).0 {
        Plan::Spray | Plan::Open => Some(Punch::Birthday),
        Plan::Punch | Plan::Relay => Some(Punch::Plain),
    }
}

/// One source of one download, and the way it got through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    pub query: u32,
    pub downloader: u32,
    pub source: u32,
    /// The router whose hit listed the source: its supernode (the one a
    /// push, punch or relay is asked of), or the source itself if it
    /// routes.
    pub via: u32,
    pub downloader_router: RouterKind,
    pub source_router: RouterKind,
    pub path: Path,
    /// The punch the routers called for (whether or not it got through).
    pub punch: Option<Punch>,
    /// The routers allowed a punch but it failed: relayed instead.
    pub punch_failed: bool,
    /// Share of the file this source delivers (the download's sources
    /// share it evenly).
    pub share: f64,
}

/// Adds every (downloader, source) pair of the download that query `q`
/// leads to, from what its search found: `responders`, the routers whose
/// hits reached `downloader`, in the order they came; `holders`, each live
/// holder of the file with its indexing routers.
pub fn record(
    world: &World,
    q: u32,
    downloader: u32,
    responders: &[u32],
    holders: &[(u32, [u32; MAX_SESSIONS])],
    transfers: &mut Vec<Transfer>,
) {
    let Some(nat) = &world.scenario.nat else {
        return;
    };
    // When each responding router's first hit came, by router.
    let mut arrival: Vec<(u32, u32)> = responders
        .iter()
        .enumerate()
        .map(|(rank, &router)| (router, rank as u32))
        .collect();
    arrival.sort_unstable();
    arrival.dedup_by_key(|&mut (router, _)| router);
    let came = |router: u32| {
        arrival
            .binary_search_by_key(&router, |&(r, _)| r)
            .ok()
            .map(|at| arrival[at].1)
    };
    // Found holders, each with the router whose hit came first.
    let mut sources: Vec<(u32, u32, u32)> = holders
        .iter()
        .filter(|&&(holder, _)| holder != downloader)
        .filter_map(|&(holder, routers)| {
            routers
                .iter()
                .filter(|&&router| router != NONE)
                .filter_map(|&router| came(router).map(|rank| (rank, holder, router)))
                .min()
        })
        .collect();
    sources.sort_unstable();
    sources.truncate(nat.sources_at_once as usize);
    let share = 1.0 / sources.len().max(1) as f64;
    let kind = |node: u32| {
        world.population.nodes[node as usize]
            .router
            .expect("a scenario with [nat] gives every node a router")
    };
    let downloader_router = kind(downloader);
    for (_, source, via) in sources {
        let source_router = kind(source);
        let mut way = path(downloader_router, source_router);
        let tried = punch(downloader_router, source_router);
        let punch_failed = tried.is_some_and(|kind| !punch_gets_through(nat, kind, world.seed, q, source));
        if punch_failed {
            way = Path::Relayed;
        }
        transfers.push(Transfer {
            query: q,
            downloader,
            source,
            via,
            downloader_router,
            source_router,
            path: way,
            punch: tried,
            punch_failed,
            share,
        });
    }
}

/// The coin of one punch, of the chance of its kind: the same pair in the
/// same run always lands the same way, whatever order pairs are recorded
/// in.
fn punch_gets_through(nat: &Nat, kind: Punch, seed: u64, query: u32, source: u32) -> bool {
    let draw = splitmix(seed ^ 0x9c4e_d7a1 ^ splitmix((query as u64) << 32 | source as u64));
    let chance = match kind {
        Punch::Plain => nat.punch_success,
        Punch::Birthday => nat.birthday_success,
    };
    ((draw >> 11) as f64 / (1u64 << 53) as f64) < chance
}

/// What one supernode relayed over the query phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayLoad {
    pub node: u32,
    /// Seconds it routed during the query phase.
    pub seconds: f64,
    pub pairs: u32,
    /// Bytes of file content it forwarded (each crosses its link twice,
    /// in and out; counted once).
    pub bytes: f64,
}

impl RelayLoad {
    pub fn pairs_per_hour(&self) -> f64 {
        self.pairs as f64 * 3600.0 / self.seconds
    }

    pub fn bytes_per_second(&self) -> f64 {
        self.bytes / self.seconds
    }
}

/// The relay load of every node that routed for at least a minute of the
/// query phase (as [`crate::metrics::router_loads`] counts routers).
pub fn relay_loads(run: &impl Downloads) -> Vec<RelayLoad> {
    let file_bytes = run.scenario().nat.as_ref().map_or(0.0, |nat| nat.file_bytes);
    let routing_time = &run.tally().routing_time;
    let mut loads: Vec<RelayLoad> = (0..routing_time.len() as u32)
        .filter(|&n| routing_time[n as usize] >= 60_000_000)
        .map(|node| RelayLoad {
            node,
            seconds: as_seconds(routing_time[node as usize]),
            pairs: 0,
            bytes: 0.0,
        })
        .collect();
    for transfer in run.transfers().iter().filter(|t| t.path == Path::Relayed) {
        if let Ok(at) = loads.binary_search_by_key(&transfer.via, |load| load.node) {
            loads[at].pairs += 1;
            loads[at].bytes += transfer.share * file_bytes;
        }
    }
    loads
}

/// Mean, 99th percentile and maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        Spread {
            mean: if values.is_empty() { f64::NAN } else { mean },
            p99: quantile(&values, 0.99),
            max: values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The traversal figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct TraversalSummary {
    /// Share of each router kind among all nodes of the run, and among
    /// the supernodes (nodes that routed at least a minute of the query
    /// phase), in [`RouterKind::ALL`] order.
    pub population: [f64; 4],
    pub supernodes: [f64; 4],
    pub downloads: u32,
    pub pairs: u32,
    /// Share of pairs by the way they got through, in [`Path::ALL`] order.
    pub by_path: [f64; 4],
    /// Share of pairs that got through by a birthday punch (counted in
    /// `by_path`'s punched too).
    pub birthday_punched: f64,
    /// Share of pairs whose punch the routers allowed but which failed
    /// (relayed), plain or birthday, and birthday alone.
    pub punch_failed: f64,
    pub birthday_failed: f64,
    /// Share of pairs that transfer with push only (direct + pushed), with
    /// punching too, and with the relay too.
    pub push_only: f64,
    pub with_punching: f64,
    pub with_relay: f64,
    /// Share of downloads with at least one source reachable by push only,
    /// and with punching.
    pub downloads_push_only: f64,
    pub downloads_with_punching: f64,
    /// Share of the downloaded bytes that went through a relay.
    pub relayed_bytes_share: f64,
    /// Share of the relayed pairs that belong to downloads with no source
    /// reachable without a relay: what relays would still carry if a
    /// downloader asked for one only then (the real one asks per source).
    pub relayed_unavoidable: f64,
    /// Pairs and their ways for each (downloader, source) kind, indexed
    /// `[downloader][source][path]` in the `ALL` orders.
    pub matrix: [[[u32; 4]; 4]; 4],
    /// Per supernode: relayed pairs over the phase, per hour, and bytes
    /// per second.
    pub relay_pairs: Spread,
    pub relay_pairs_per_hour: Spread,
    pub relay_bytes_per_second: Spread,
    /// Share of supernodes that relayed at least one pair.
    pub relaying_share: f64,
}

/// "punched (birthday)" where the two routers call for a birthday punch,
/// else the way's label.
fn way_label(way: Path, downloader: RouterKind, source: RouterKind) -> String {
    match (way, punch(downloader, source)) {
        (Path::Punched, Some(Punch::Birthday)) => format!("{} (birthday)", way.label()),
        _ => way.label().to_string(),
    }
}

/// `n` of `pairs` as a percentage, in whole percent unless that would
/// round a few pairs away to 0 % or make 100 % of a share that is not.
fn cell_share(n: u32, pairs: u32) -> String {
    let share = 100.0 * n as f64 / pairs.max(1) as f64;
    let shown = |places: usize| format!("{share:.places$}");
    let rounds_off =
        |places: usize| n < pairs && matches!(shown(places).parse::<f64>(), Ok(v) if v == 0.0 || v == 100.0);
    let places = (0..4).find(|&places| !rounds_off(places)).unwrap_or(4);
    format!("{} %", shown(places))
}

fn index<T: PartialEq>(all: &[T], item: T) -> usize {
    all.iter().position(|x| *x == item).expect("listed in ALL")
}

impl TraversalSummary {
    /// The figures, or `None` when the scenario does not model routers.
    pub fn of(run: &impl Downloads) -> Option<Self> {
        run.scenario().nat.as_ref()?;
        let transfers = run.transfers();
        let population = run.population();
        let kind_shares = |nodes: &mut dyn Iterator<Item = u32>| {
            let mut counts = [0u32; 4];
            let mut total = 0;
            for node in nodes {
                if let Some(kind) = population.nodes[node as usize].router {
                    counts[index(&RouterKind::ALL, kind)] += 1;
                    total += 1;
                }
            }
            counts.map(|c| c as f64 / total.max(1) as f64)
        };
        let loads = relay_loads(run);
        let population = kind_shares(&mut (0..population.nodes.len() as u32));
        let supernodes = kind_shares(&mut loads.iter().map(|load| load.node));

        let pairs = transfers.len() as u32;
        let share_of = |test: &dyn Fn(&Transfer) -> bool| {
            transfers.iter().filter(|t| test(t)).count() as f64 / pairs.max(1) as f64
        };
        let mut by_path = [0.0; 4];
        for (slot, way) in by_path.iter_mut().zip(Path::ALL) {
            *slot = share_of(&|t| t.path == way);
        }
        let mut matrix = [[[0u32; 4]; 4]; 4];
        for t in transfers {
            let d = index(&RouterKind::ALL, t.downloader_router);
            let s = index(&RouterKind::ALL, t.source_router);
            matrix[d][s][index(&Path::ALL, t.path)] += 1;
        }

        // Per download (transfers of one query are recorded together).
        let (mut downloads, mut push_only, mut with_punching) = (0u32, 0u32, 0u32);
        let (mut relayed_pairs, mut unavoidable) = (0u32, 0u32);
        for download in transfers.chunk_by(|a, b| a.query == b.query) {
            downloads += 1;
            push_only += download.iter().any(|t| t.path <= Path::Pushed) as u32;
            let without_relay = download.iter().any(|t| t.path <= Path::Punched);
            with_punching += without_relay as u32;
            let relayed = download.iter().filter(|t| t.path == Path::Relayed).count() as u32;
            relayed_pairs += relayed;
            if !without_relay {
                unavoidable += relayed;
            }
        }
        let bytes: f64 = transfers.iter().map(|t| t.share).sum();
        let relayed: f64 = transfers
            .iter()
            .filter(|t| t.path == Path::Relayed)
            .map(|t| t.share)
            .sum();

        Some(TraversalSummary {
            population,
            supernodes,
            downloads,
            pairs,
            by_path,
            birthday_punched: share_of(&|t| t.path == Path::Punched && t.punch == Some(Punch::Birthday)),
            punch_failed: share_of(&|t| t.punch_failed),
            birthday_failed: share_of(&|t| t.punch_failed && t.punch == Some(Punch::Birthday)),
            push_only: share_of(&|t| t.path <= Path::Pushed),
            with_punching: share_of(&|t| t.path <= Path::Punched),
            with_relay: share_of(&|t| t.path <= Path::Relayed),
            downloads_push_only: push_only as f64 / downloads.max(1) as f64,
            downloads_with_punching: with_punching as f64 / downloads.max(1) as f64,
            relayed_bytes_share: relayed / bytes.max(f64::MIN_POSITIVE),
            relayed_unavoidable: if relayed_pairs == 0 {
                f64::NAN
            } else {
                unavoidable as f64 / relayed_pairs as f64
            },
            matrix,
            relay_pairs: Spread::of(loads.iter().map(|l| l.pairs as f64).collect()),
            relay_pairs_per_hour: Spread::of(loads.iter().map(RelayLoad::pairs_per_hour).collect()),
            relay_bytes_per_second: Spread::of(loads.iter().map(RelayLoad::bytes_per_second).collect()),
            relaying_share: loads.iter().filter(|l| l.pairs > 0).count() as f64 / loads.len().max(1) as f64,
        })
    }

    /// Label and value of each figure, for the table and the CSV.
    pub fn rows(&self) -> Vec<(String, String)> {
        let pct = |v: f64| {
            if v.is_nan() {
                "n/a".to_string()
            } else {
                // One place, more if that would show a few pairs as none.
                let places = (1..4)
                    .find(|&places| v == 0.0 || format!("{:.places$}", v * 100.0).parse() != Ok(0.0))
                    .unwrap_or(4);
                format!("{:.places$} %", v * 100.0)
            }
        };
        let spread = |s: Spread, places: usize, scale: f64| {
            format!(
                "{:.places$} / {:.places$} / {:.places$}",
                s.mean / scale,
                s.p99 / scale,
                s.max / scale
            )
        };
        let kinds = |shares: &[f64; 4]| {
            let mut text = String::new();
            for (kind, share) in RouterKind::ALL.iter().zip(shares) {
                let _ = write!(
                    text,
                    "{}{} {}",
                    if text.is_empty() { "" } else { ", " },
                    kind.label(),
                    pct(*share)
                );
            }
            text
        };
        let mut rows = vec![
            ("routers, all nodes".to_string(), kinds(&self.population)),
            ("routers, supernodes".to_string(), kinds(&self.supernodes)),
            (
                "downloads (one per search)".to_string(),
                self.downloads.to_string(),
            ),
            ("(downloader, source) pairs".to_string(), self.pairs.to_string()),
        ];
        for (way, share) in Path::ALL.iter().zip(self.by_path) {
            rows.push((format!("pairs {}", way.label()), pct(share)));
            if *way == Path::Punched {
                rows.push((
                    "  of them by a birthday punch".to_string(),
                    pct(self.birthday_punched),
                ));
            }
        }
        rows.extend([
            (
                "  of them relayed after a failed punch".to_string(),
                pct(self.punch_failed),
            ),
            (
                "  of them after a failed birthday punch".to_string(),
                pct(self.birthday_failed),
            ),
            ("pairs that transfer, push only".to_string(), pct(self.push_only)),
            (
                "pairs that transfer, + punching".to_string(),
                pct(self.with_punching),
            ),
            ("pairs that transfer, + relay".to_string(), pct(self.with_relay)),
            (
                "downloads with a source, push only".to_string(),
                pct(self.downloads_push_only),
            ),
            (
                "downloads with a source, + punching".to_string(),
                pct(self.downloads_with_punching),
            ),
            ("bytes through a relay".to_string(), pct(self.relayed_bytes_share)),
            (
                "relayed pairs with no other way in".to_string(),
                pct(self.relayed_unavoidable),
            ),
            (
                "relayed pairs / supernode, mean / p99 / max".to_string(),
                spread(self.relay_pairs, 1, 1.0),
            ),
            (
                "  per hour of routing".to_string(),
                spread(self.relay_pairs_per_hour, 0, 1.0),
            ),
            (
                "relayed kB/s / supernode, mean / p99 / max".to_string(),
                spread(self.relay_bytes_per_second, 1, 1e3),
            ),
            ("supernodes relaying at all".to_string(), pct(self.relaying_share)),
        ]);
        rows
    }

    /// The ways each pair of kinds took, as a table (downloader in rows,
    /// source in columns, each cell the share of all pairs and the ways;
    /// a birthday punch is "punched (birthday)").
    pub fn matrix_table(&self) -> String {
        let total = self.pairs.max(1) as f64;
        let mut out = String::from("downloader \\ source");
        for kind in RouterKind::ALL {
            let _ = write!(out, " | {}", kind.label());
        }
        out.push('\n');
        for (d, downloader) in RouterKind::ALL.iter().enumerate() {
            let _ = write!(out, "{}", downloader.label());
            for (cell, source) in self.matrix[d].iter().zip(RouterKind::ALL) {
                let pairs: u32 = cell.iter().sum();
                let ways: Vec<String> = Path::ALL
                    .iter()
                    .zip(cell)
                    .filter(|(_, &n)| n > 0)
                    .map(|(&way, &n)| {
                        format!("{} {}", way_label(way, *downloader, source), cell_share(n, pairs))
                    })
                    .collect();
                let _ = write!(
                    out,
                    " | {:.1} % of pairs: {}",
                    100.0 * pairs as f64 / total,
                    if ways.is_empty() {
                        "none".into()
                    } else {
                        ways.join(", ")
                    }
                );
            }
            out.push('\n');
        }
        out
    }

    pub fn table(&self) -> String {
        let mut out = crate::metrics::key_value_table(&self.rows());
        out.push_str(&self.matrix_table());
        out
    }

    /// Writes `traversal.csv` (every figure), `traversal_pairs.csv` (pairs
    /// by kinds and way) and `relays.csv` (each supernode's relay load).
    pub fn write_csv(&self, run: &impl Downloads, dir: &FilePath) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("traversal.csv"))?);
        writeln!(out, "figure,value")?;
        for (key, value) in self.rows() {
            writeln!(out, "\"{}\",\"{}\"", key.trim(), value)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("traversal_pairs.csv"))?);
        // `punch`: the punch these routers call for (plain, birthday, or
        // empty for none); their relayed pairs are its failures.
        writeln!(out, "downloader,source,punch,path,pairs")?;
        for (d, downloader) in RouterKind::ALL.iter().enumerate() {
            for (s, source) in RouterKind::ALL.iter().enumerate() {
                let kind = punch(*downloader, *source).map_or("", Punch::label);
                for (w, way) in Path::ALL.iter().enumerate() {
                    let pairs = self.matrix[d][s][w];
                    if pairs > 0 {
                        writeln!(
                            out,
                            "{},{},{kind},{},{pairs}",
                            downloader.label(),
                            source.label(),
                            way.label()
                        )?;
                    }
                }
            }
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("relays.csv"))?);
        writeln!(out, "node,seconds_routing,relayed_pairs,relayed_bytes")?;
        for load in relay_loads(run) {
            writeln!(
                out,
                "{},{:.0},{},{:.0}",
                load.node, load.seconds, load.pairs, load.bytes
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{seconds, NEVER};
    use crate::population::{Catalogue, NodeSpec, Population};
    use crate::scenario::{Scenario, Selection, SessionModel};
    use crate::search::QueryState;
    use crate::sim::Sim;
    use crate::world::{Event, State};
    use canopy_common::proto::routing::QueryId;

    /// Two supernodes of two leaf slots each, FastTrack selection so who
    /// routes is fixed by arrival: node 0 (public) routes and takes leaves
    /// 1 and 2 (symmetric), node 3 (public) routes and takes leaf 4
    /// (symmetric). Leaves 1 and 2 hold file 0.
    fn two_clusters() -> Sim {
        let mut scenario = Scenario {
            nodes: 5,
            nat: Some(Nat::default()),
            ..Scenario::default()
        };
        scenario.supernodes.selection = Selection::Capacity;
        scenario.supernodes.leaves_min = 2;
        scenario.supernodes.leaves_max = 2;
        scenario.supernodes.sessions = 1;
        scenario.supernodes.min_level = 0;
        scenario.churn.model = SessionModel::None;
        scenario.queries.count = 1;
        scenario.queries.rate_per_s = 0.001;
        scenario.queries.warmup_s = 0.0;
        let kinds = [
            RouterKind::Public,
            RouterKind::Symmetric,
            RouterKind::Symmetric,
            RouterKind::Public,
            RouterKind::Symmetric,
        ];
        let nodes = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| NodeSpec {
                arrive: seconds(i as f64),
                depart: NEVER,
                level: 0,
                firewalled: !kind.accepts_connections(),
                sharer: true,
                router: Some(kind),
            })
            .collect();
        let population = Population {
            nodes,
            multiples: vec![1000.0],
            base_upload_kbit: 64.0,
            base_rate: 10.0,
            catalogue: Catalogue::with_holders(&[&[1, 2]]),
        };
        let mut sim = Sim::with_population(scenario, population, 1);
        sim.world.queue.at(0, Event::Arrive(0));
        sim.run_until(seconds(10.0));
        sim
    }

    #[test]
    fn a_relayed_pair_loads_the_sources_supernode_not_the_downloaders() {
        let mut sim = two_clusters();
        assert_eq!(sim.world.state[0], State::Router);
        assert_eq!(sim.world.state[3], State::Router);
        assert_eq!(sim.world.sessions[4][0], 3, "leaf 4 joined the second supernode");
        // Leaf 4 looks for file 0 and downloads it from leaves 1 and 2.
        let query = QueryState::new(0, QueryId([1; 16]), seconds(20.0));
        sim.search.queries.push(query);
        sim.search.issue(&mut sim.world, 0, 4, seconds(20.0));
        sim.run_until(seconds(1000.0));
        sim.close_books();
        let transfers = sim.transfers();
        assert_eq!(transfers.len(), 2, "{transfers:?}");
        for t in transfers {
            assert_eq!((t.downloader, t.via), (4, 0));
            assert_eq!(t.path, Path::Relayed);
            assert_eq!(t.share, 0.5);
        }
        let loads = relay_loads(&sim);
        let load = |node: u32| loads.iter().find(|l| l.node == node).map(|l| l.pairs);
        assert_eq!(load(0), Some(2), "the sources' supernode relays both");
        assert_eq!(load(3), Some(0), "the downloader's supernode relays nothing");
        let summary = TraversalSummary::of(&sim).unwrap();
        assert_eq!(summary.with_relay, 1.0);
        assert_eq!(summary.push_only, 0.0);
        assert_eq!(summary.downloads_with_punching, 0.0);
        assert_eq!(summary.relayed_bytes_share, 1.0);
        assert_eq!(summary.relayed_unavoidable, 1.0, "no other way in");
    }

    #[test]
    fn the_punch_coin_is_fixed_per_pair_and_follows_the_chance_of_its_kind() {
        let nat = Nat {
            birthday_success: 0.3,
            ..Nat::default()
        };
        let through = |kind| {
            (0..10_000)
                .filter(|&i| punch_gets_through(&nat, kind, 1, i / 100, i % 100))
                .count()
        };
        let plain = through(Punch::Plain);
        assert!((7_700..8_300).contains(&plain), "{plain}");
        let birthday = through(Punch::Birthday);
        assert!((2_700..3_300).contains(&birthday), "{birthday}");
        for kind in [Punch::Plain, Punch::Birthday] {
            assert_eq!(
                punch_gets_through(&nat, kind, 1, 5, 6),
                punch_gets_through(&nat, kind, 1, 5, 6)
            );
        }
        let never = Nat {
            punch_success: 0.0,
            ..Nat::default()
        };
        assert!(!(0..1000).any(|i| punch_gets_through(&never, Punch::Plain, 1, i, i)));
        // The default birthday chance: about 3 misses in 10,000.
        let missed = (0..100_000)
            .filter(|&i| !punch_gets_through(&Nat::default(), Punch::Birthday, 1, i / 100, i % 100))
            .count();
        assert!((10..60).contains(&missed), "{missed}");
    }

    /// Plain between two cones, birthday exactly between a cone and a
    /// symmetric router (either downloading), none elsewhere.
    #[test]
    fn the_punch_a_pair_needs_is_the_one_its_supernode_plans() {
        use RouterKind::{Cone, Symmetric};
        for downloader in RouterKind::ALL {
            for source in RouterKind::ALL {
                let expected = match (downloader, source) {
                    (Cone, Cone) => Some(Punch::Plain),
                    (Cone, Symmetric) | (Symmetric, Cone) => Some(Punch::Birthday),
                    _ => None,
                };
                assert_eq!(
                    punch(downloader, source),
                    expected,
                    "{} downloading from {}",
                    downloader.label(),
                    source.label()
                );
                assert_eq!(expected.is_some(), path(downloader, source) == Path::Punched);
            }
        }
    }

    #[test]
    fn a_few_pairs_in_a_cell_do_not_round_away() {
        assert_eq!(cell_share(4, 5), "80 %");
        assert_eq!(cell_share(5, 5), "100 %");
        assert_eq!(cell_share(3, 10_000), "0.03 %");
        assert_eq!(cell_share(9_997, 10_000), "99.97 %");
        assert_eq!(cell_share(1, 3), "33 %");
    }

    #[test]
    fn a_small_share_of_pairs_shows_in_the_figures() {
        let mut sim = two_clusters();
        sim.close_books();
        let mut summary = TraversalSummary::of(&sim).unwrap();
        summary.birthday_failed = 0.000_06;
        summary.punch_failed = 0.0;
        let rows = summary.rows();
        let row = |key: &str| rows.iter().find(|(k, _)| k.trim() == key).unwrap().1.clone();
        assert_eq!(row("of them after a failed birthday punch"), "0.01 %");
        assert_eq!(row("of them relayed after a failed punch"), "0.0 %");
    }
}
