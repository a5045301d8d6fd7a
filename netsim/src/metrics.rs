//! What a run measured: raw tallies during the run, a [`Summary`] after it,
//! and the CSV files a run leaves behind.
//!
//! The simulator fills a [`Tally`] as it runs and is read back through
//! [`Run`]; nothing here knows how the simulator works.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::clock::{as_seconds, Time};
use crate::population::Population;
use crate::scenario::Scenario;

/// A finished run, as its figures read it ([`crate::Sim`] is one).
pub trait Run {
    fn scenario(&self) -> &Scenario;
    fn population(&self) -> &Population;
    fn tally(&self) -> &Tally;
    /// Keyword table bytes, when tables are modelled.
    fn table_traffic(&self) -> Option<TableTraffic>;
}

/// One point of the timeline, sampled every simulated minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: Time,
    pub online: u32,
    pub routers: u32,
    pub orphans: u32,
    pub mean_degree: f64,
    pub leaves_per_router: f64,
    /// Leaf sessions per router (a leaf with two supernodes counts twice).
    pub sessions_per_router: f64,
}

/// A query's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    pub rare: bool,
    /// Routers whose [`Router`](canopy_common::proto::routing::Router)
    /// took the query in (answered it).
    pub routers_reached: u32,
    /// Nodes whose files were searched: reached routers plus their leaves.
    pub nodes_covered: u64,
    /// New routers reached at each hop count (index 0: the first router).
    pub reached_at_hop: [u32; 8],
    pub query_messages: u32,
    /// Of them, copies sent because a neighbour's keyword tables may match.
    pub routed_messages: u32,
    pub duplicates: u32,
    /// Query messages a router refused because its seen-cache was full.
    pub refused: u32,
    pub hit_messages: u32,
    /// Leaf ↔ supernode messages (the query up, the hits down).
    pub leaf_messages: u32,
    pub bytes: u64,
    /// Messages dropped by a full queue, or lost to a node that left.
    pub dropped: u32,
    pub lost: u32,
    /// Holders of the file online when the query was issued.
    pub live_holders: u32,
    /// Of them, those whose router's answer reached the searcher.
    pub found: u32,
    /// Time to the first hit, if any came.
    pub first_hit: Option<Time>,
    /// Dynamic querying: time until the searcher's supernode had the
    /// target number of sources, if it got them.
    pub target_reached: Option<Time>,
    /// The searcher had no supernode to ask.
    pub stranded: bool,
}

impl Outcome {
    pub fn recall(&self) -> Option<f64> {
        (self.live_holders > 0).then(|| self.found as f64 / self.live_holders as f64)
    }

    pub fn messages(&self) -> u32 {
        self.query_messages + self.hit_messages + self.leaf_messages
    }
}

/// Keyword table bytes sent during the query phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TableTraffic {
    /// Incremental updates after leaves joined or left.
    pub update_bytes: f64,
    /// Full tables sent on new links.
    pub link_bytes: f64,
    /// Leaf joins and departures followed.
    pub changes: u64,
}

/// Counters filled while the simulation runs.
#[derive(Debug, Default)]
pub struct Tally {
    /// The query phase, start and end: what per-node counts and the
    /// figures cover.
    pub phase: (Time, Time),
    pub outcomes: Vec<Outcome>,
    /// Spells leaves spent without a supernode during the query phase.
    pub orphan_spells: Vec<Time>,
    /// Of them, those that ended because the leaf left, not because it found one.
    pub orphan_unresolved: u32,
    pub promotions: u64,
    pub demotions: u64,
    pub timeline: Vec<Point>,
    /// Query messages each node processed during the query phase.
    pub processed: Vec<u32>,
    /// Search bytes each node sent and received during the query phase.
    pub traffic: Vec<u64>,
    /// Time each node spent routing during the query phase.
    pub routing_time: Vec<Time>,
    pub events: u64,
    pub peak_pending: usize,
}

impl Tally {
    /// Nothing counted yet for `nodes` nodes, over the query phase `phase`.
    pub fn new(nodes: usize, phase: (Time, Time)) -> Self {
        Tally {
            phase,
            processed: vec![0; nodes],
            traffic: vec![0; nodes],
            routing_time: vec![0; nodes],
            ..Tally::default()
        }
    }

    /// Counts search bytes a node sent or received during the query phase.
    pub fn account(&mut self, node: u32, bytes: u64, now: Time) {
        let (start, end) = self.phase;
        if now >= start && now <= end {
            self.traffic[node as usize] += bytes;
        }
    }
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values.into_iter().fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// A router's load over the query phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterLoad {
    pub node: u32,
    pub capacity: f64,
    pub seconds: f64,
    pub messages: u32,
    /// Query messages per second.
    pub rate: f64,
    /// Search bytes sent and received per second.
    pub bandwidth: f64,
}

impl RouterLoad {
    pub fn utilisation(&self) -> f64 {
        self.rate / self.capacity
    }
}

/// The figures of one run. Equal seeds must give equal summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub scenario: String,
    pub nodes: u32,
    pub nodes_ever: u32,
    pub queries: u32,
    /// Queries whose searcher had no supernode at the time.
    pub stranded: u32,
    pub router_share: f64,
    pub mean_degree: f64,
    pub leaves_per_router: f64,
    pub routers_reached: f64,
    pub routers_reached_p50: f64,
    /// Index entries searched per query: each reached router counts itself
    /// and its leaf sessions (a leaf with two supernodes may count twice).
    pub nodes_covered: f64,
    /// Nodes covered per router reached, measured...
    pub multiplier: f64,
    /// ...and as the two-tier rule has it: leaf sessions per supernode + 1.
    pub multiplier_expected: f64,
    pub query_messages: f64,
    /// Share of query messages sent on a last hop after a table check.
    pub routed_share: f64,
    pub hit_messages: f64,
    pub leaf_messages: f64,
    pub messages: f64,
    pub bytes: f64,
    pub duplicate_share: f64,
    pub dropped: f64,
    pub lost: f64,
    pub success_popular: f64,
    pub success_rare: f64,
    pub recall_popular: f64,
    pub recall_rare: f64,
    /// Queries for a file no online node held.
    pub unfindable: u32,
    pub first_hit_p50_ms: f64,
    pub first_hit_p90_ms: f64,
    /// Dynamic querying: time to the target number of sources, over the
    /// queries that reached it, and their share.
    pub target_p50_ms: f64,
    pub target_reached_share: f64,
    pub load_mean: f64,
    pub load_p99: f64,
    pub utilisation_mean: f64,
    pub utilisation_p99: f64,
    /// Search bytes per second in and out of a router.
    pub bandwidth_mean: f64,
    pub bandwidth_p99: f64,
    /// Share of routers asked for more than they can process.
    pub overloaded_share: f64,
    /// Keyword table bytes a router sends per second, on average (updates
    /// after leaves come and go; full tables on new links).
    pub table_update_rate: f64,
    pub table_link_rate: f64,
    /// All keyword table bytes of the query phase, per query issued.
    pub table_bytes_per_query: f64,
    pub orphan_spells: u32,
    pub orphan_mean_s: f64,
    pub orphan_p99_s: f64,
    /// Share of leaf-time spent without a supernode (timeline average).
    pub orphan_share: f64,
    pub promotions: u64,
    pub demotions: u64,
    /// Mean new routers reached at each hop.
    pub reached_at_hop: Vec<f64>,
    pub events: u64,
}

impl Summary {
    pub fn of(run: &impl Run) -> Self {
        let tally = run.tally();
        let outcomes: Vec<&Outcome> = tally.outcomes.iter().filter(|o| !o.stranded).collect();
        let n = outcomes.len().max(1) as f64;
        let per_query = |f: &dyn Fn(&Outcome) -> f64| outcomes.iter().map(|o| f(o)).sum::<f64>() / n;
        let (start, end) = tally.phase;
        let phase: Vec<&Point> = tally
            .timeline
            .iter()
            .filter(|p| p.t >= start && p.t <= end)
            .collect();
        let traffic = run.table_traffic();
        let mean_routers = mean(phase.iter().map(|p| p.routers as f64));
        let router_seconds = mean_routers * end.saturating_sub(start) as f64 / 1e6;
        let routers_reached = per_query(&|o| o.routers_reached as f64);
        let nodes_covered = per_query(&|o| o.nodes_covered as f64);
        let query_messages = per_query(&|o| o.query_messages as f64);
        let findable = |rare: bool| -> Vec<&&Outcome> {
            outcomes
                .iter()
                .filter(|o| o.rare == rare && o.live_holders > 0)
                .collect()
        };
        let success = |rare: bool| mean(findable(rare).iter().map(|o| (o.found > 0) as u8 as f64));
        let recall = |rare: bool| mean(findable(rare).iter().filter_map(|o| o.recall()));
        // Milliseconds of a time some queries have, sorted.
        let sorted_ms = |time: &dyn Fn(&Outcome) -> Option<Time>| {
            sorted(
                outcomes
                    .iter()
                    .filter_map(|o| time(o))
                    .map(|t| t as f64 / 1e3)
                    .collect(),
            )
        };
        let first_hits = sorted_ms(&|o| o.first_hit);
        let to_target = sorted_ms(&|o| o.target_reached);
        let loads = router_loads(run);
        let rates = sorted(loads.iter().map(|l| l.rate).collect());
        let utilisation = sorted(loads.iter().map(RouterLoad::utilisation).collect());
        let bandwidth = sorted(loads.iter().map(|l| l.bandwidth).collect());
        let spells = sorted(tally.orphan_spells.iter().map(|&t| as_seconds(t)).collect());
        let leaves_per_router = mean(phase.iter().map(|p| p.leaves_per_router));
        let mut reached_at_hop = vec![0.0; 8];
        for (hop, slot) in reached_at_hop.iter_mut().enumerate() {
            *slot = per_query(&|o| o.reached_at_hop[hop] as f64);
        }
        Summary {
            scenario: run.scenario().name.clone(),
            nodes: run.scenario().nodes,
            nodes_ever: run.population().nodes.len() as u32,
            queries: tally.outcomes.len() as u32,
            stranded: tally.outcomes.iter().filter(|o| o.stranded).count() as u32,
            router_share: mean(phase.iter().map(|p| p.routers as f64 / p.online.max(1) as f64)),
            mean_degree: mean(phase.iter().map(|p| p.mean_degree)),
            leaves_per_router,
            routers_reached,
            routers_reached_p50: quantile(
                &sorted(outcomes.iter().map(|o| o.routers_reached as f64).collect()),
                0.5,
            ),
            nodes_covered,
            multiplier: nodes_covered / routers_reached,
            multiplier_expected: mean(phase.iter().map(|p| p.sessions_per_router)) + 1.0,
            query_messages,
            routed_share: per_query(&|o| o.routed_messages as f64) / query_messages,
            hit_messages: per_query(&|o| o.hit_messages as f64),
            leaf_messages: per_query(&|o| o.leaf_messages as f64),
            messages: per_query(&|o| o.messages() as f64),
            bytes: per_query(&|o| o.bytes as f64),
            duplicate_share: per_query(&|o| o.duplicates as f64) / query_messages,
            dropped: per_query(&|o| o.dropped as f64),
            lost: per_query(&|o| o.lost as f64),
            success_popular: success(false),
            success_rare: success(true),
            recall_popular: recall(false),
            recall_rare: recall(true),
            unfindable: outcomes.iter().filter(|o| o.live_holders == 0).count() as u32,
            first_hit_p50_ms: quantile(&first_hits, 0.5),
            first_hit_p90_ms: quantile(&first_hits, 0.9),
            target_p50_ms: quantile(&to_target, 0.5),
            target_reached_share: to_target.len() as f64 / n,
            load_mean: mean(rates.iter().copied()),
            load_p99: quantile(&rates, 0.99),
            utilisation_mean: mean(utilisation.iter().copied()),
            utilisation_p99: quantile(&utilisation, 0.99),
            bandwidth_mean: mean(bandwidth.iter().copied()),
            bandwidth_p99: quantile(&bandwidth, 0.99),
            overloaded_share: mean(utilisation.iter().map(|&u| (u > 1.0) as u8 as f64)),
            table_update_rate: traffic.map_or(f64::NAN, |t| t.update_bytes / router_seconds),
            table_link_rate: traffic.map_or(f64::NAN, |t| t.link_bytes / router_seconds),
            table_bytes_per_query: traffic.map_or(f64::NAN, |t| (t.update_bytes + t.link_bytes) / n),
            orphan_spells: spells.len() as u32,
            orphan_mean_s: mean(spells.iter().copied()),
            orphan_p99_s: quantile(&spells, 0.99),
            orphan_share: mean(
                phase
                    .iter()
                    .map(|p| p.orphans as f64 / (p.online - p.routers).max(1) as f64),
            ),
            promotions: tally.promotions,
            demotions: tally.demotions,
            reached_at_hop,
            events: tally.events,
        }
    }

    /// Label and value of each figure, for the table and the CSV.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let f = |v: f64, places: usize| {
            if v.is_nan() {
                "n/a".to_string()
            } else {
                format!("{v:.places$}")
            }
        };
        let pct = |v: f64| {
            if v.is_nan() {
                "n/a".into()
            } else {
                format!("{:.1} %", v * 100.0)
            }
        };
        let mut hops = String::new();
        for (i, v) in self.reached_at_hop.iter().enumerate() {
            let _ = write!(hops, "{}{:.1}", if i == 0 { "" } else { " / " }, v);
        }
        vec![
            ("scenario", self.scenario.clone()),
            ("nodes online (target)", self.nodes.to_string()),
            ("nodes over the run", self.nodes_ever.to_string()),
            ("queries measured", self.queries.to_string()),
            ("queries stranded (no supernode)", self.stranded.to_string()),
            ("routing share (supernodes / online)", pct(self.router_share)),
            ("mean overlay degree", f(self.mean_degree, 2)),
            ("leaves per supernode", f(self.leaves_per_router, 1)),
            ("routers reached / query (mean)", f(self.routers_reached, 1)),
            ("routers reached / query (p50)", f(self.routers_reached_p50, 0)),
            ("nodes (leaf sessions) covered / query", f(self.nodes_covered, 1)),
            ("reach multiplier measured", f(self.multiplier, 2)),
            (
                "reach multiplier (sessions/SN + 1)",
                f(self.multiplier_expected, 2),
            ),
            ("new routers per hop 0..7", hops),
            ("query messages / query", f(self.query_messages, 1)),
            ("  routed by keyword tables", pct(self.routed_share)),
            ("hit messages / query", f(self.hit_messages, 1)),
            ("leaf messages / query", f(self.leaf_messages, 2)),
            ("messages / query", f(self.messages, 1)),
            ("bytes / query", f(self.bytes, 0)),
            ("duplicate share of query msgs", pct(self.duplicate_share)),
            ("dropped (queue full) / query", f(self.dropped, 2)),
            ("lost (node left) / query", f(self.lost, 2)),
            ("success, popular files", pct(self.success_popular)),
            ("success, rare files", pct(self.success_rare)),
            ("recall, popular files", pct(self.recall_popular)),
            ("recall, rare files", pct(self.recall_rare)),
            ("queries with no live holder", self.unfindable.to_string()),
            ("time to first hit p50 (ms)", f(self.first_hit_p50_ms, 0)),
            ("time to first hit p90 (ms)", f(self.first_hit_p90_ms, 0)),
            (
                "queries reaching the result target",
                pct(self.target_reached_share),
            ),
            ("  time to result target p50 (ms)", f(self.target_p50_ms, 0)),
            ("router load mean (msg/s)", f(self.load_mean, 3)),
            ("router load p99 (msg/s)", f(self.load_p99, 3)),
            ("load / capacity mean", pct(self.utilisation_mean)),
            ("load / capacity p99", pct(self.utilisation_p99)),
            ("routers over capacity", pct(self.overloaded_share)),
            (
                "router search traffic mean (kB/s)",
                f(self.bandwidth_mean / 1e3, 2),
            ),
            ("router search traffic p99 (kB/s)", f(self.bandwidth_p99 / 1e3, 2)),
            (
                "keyword table updates / router (kB/s)",
                f(self.table_update_rate / 1e3, 3),
            ),
            (
                "keyword tables on new links / router (kB/s)",
                f(self.table_link_rate / 1e3, 3),
            ),
            ("keyword table bytes / query", f(self.table_bytes_per_query, 0)),
            ("leaf spells without supernode", self.orphan_spells.to_string()),
            ("  mean length (s)", f(self.orphan_mean_s, 2)),
            ("  p99 length (s)", f(self.orphan_p99_s, 2)),
            ("leaf time without supernode", pct(self.orphan_share)),
            (
                "promotions / demotions",
                format!("{} / {}", self.promotions, self.demotions),
            ),
            ("events", self.events.to_string()),
        ]
    }

    pub fn table(&self) -> String {
        key_value_table(&self.rows())
    }
}

/// `rows` as two aligned columns, one row a line: how the simulator
/// prints its summaries.
pub fn key_value_table<K: AsRef<str>>(rows: &[(K, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.as_ref().len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "{:<width$}  {value}", key.as_ref());
    }
    out
}

/// Load of every node that routed for at least a minute of the query phase.
pub fn router_loads(run: &impl Run) -> Vec<RouterLoad> {
    let tally = run.tally();
    (0..tally.routing_time.len() as u32)
        .filter(|&n| tally.routing_time[n as usize] >= 60_000_000)
        .map(|node| {
            let seconds = as_seconds(tally.routing_time[node as usize]);
            let messages = tally.processed[node as usize];
            RouterLoad {
                node,
                capacity: run.population().rate(node),
                seconds,
                messages,
                rate: messages as f64 / seconds,
                bandwidth: tally.traffic[node as usize] as f64 / seconds,
            }
        })
        .collect()
}

fn csv_value(text: &str) -> String {
    if text.contains([',', '"']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Writes `summary.csv`, `queries.csv`, `routers.csv` and `timeline.csv`.
pub fn write_csv(run: &impl Run, summary: &Summary, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("summary.csv"))?);
    writeln!(out, "figure,value")?;
    for (key, value) in summary.rows() {
        writeln!(out, "{},{}", csv_value(key.trim()), csv_value(&value))?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("queries.csv"))?);
    writeln!(
        out,
        "query,rare,live_holders,found,routers_reached,nodes_covered,query_messages,duplicates,\
         hit_messages,leaf_messages,bytes,dropped,lost,first_hit_ms,stranded"
    )?;
    for (i, o) in run.tally().outcomes.iter().enumerate() {
        let first = o
            .first_hit
            .map_or(String::new(), |t| format!("{:.1}", t as f64 / 1e3));
        writeln!(
            out,
            "{i},{},{},{},{},{},{},{},{},{},{},{},{},{first},{}",
            o.rare as u8,
            o.live_holders,
            o.found,
            o.routers_reached,
            o.nodes_covered,
            o.query_messages,
            o.duplicates,
            o.hit_messages,
            o.leaf_messages,
            o.bytes,
            o.dropped,
            o.lost,
            o.stranded as u8
        )?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("routers.csv"))?);
    writeln!(
        out,
        "node,capacity_msg_s,seconds_routing,messages,load_msg_s,utilisation"
    )?;
    for l in router_loads(run) {
        writeln!(
            out,
            "{},{},{:.0},{},{:.4},{:.5},{:.0}",
            l.node,
            l.capacity,
            l.seconds,
            l.messages,
            l.rate,
            l.utilisation(),
            l.bandwidth
        )?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("timeline.csv"))?);
    writeln!(
        out,
        "t_s,online,routers,orphans,mean_degree,leaves_per_router,sessions_per_router"
    )?;
    for p in &run.tally().timeline {
        writeln!(
            out,
            "{:.0},{},{},{},{:.3},{:.2},{:.2}",
            as_seconds(p.t),
            p.online,
            p.routers,
            p.orphans,
            p.mean_degree,
            p.leaves_per_router,
            p.sessions_per_router
        )?;
    }
    Ok(())
}

/// Peak resident memory of this process so far (Linux), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
