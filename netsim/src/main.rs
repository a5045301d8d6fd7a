//! `canopy-netsim`: runs one scenario file and leaves its figures behind.
//!
//! ```text
//! canopy-netsim --scenario netsim/scenarios/canopy.toml --nodes 100000 --seed 1 --out out/canopy
//! ```
//! (`--queries` and `--rate` override the file's query count and rate)
//! prints a summary table, and writes `summary.csv`, `queries.csv`,
//! `routers.csv`, `timeline.csv` and three SVG charts into `--out`; a
//! scenario with home routers (`[nat]`) adds the NAT traversal figures
//! (`traversal.csv`, `traversal_pairs.csv`, `relays.csv`).
//! A scenario with a `[pollution]` section runs the pollution study instead
//! (every defence combination) and writes `pollution.csv`,
//! `pollution_timeline.csv`, `pollution.svg` and `run.txt`.
//! `--cluster-sizes 10,20,50` instead runs the scenario once per fixed
//! cluster size (FastTrack-style selection) and charts load against it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;

use canopy_netsim::chart::{Chart, Series};
use canopy_netsim::metrics::{peak_rss, router_loads, write_csv, Run};
use canopy_netsim::pollution::Pollution;
use canopy_netsim::scenario::Selection;
use canopy_netsim::{Scenario, Sim, Summary, TraversalSummary};

#[derive(Parser, Debug)]
#[command(
    name = "canopy-netsim",
    about = "Simulate a Canopy, FastTrack or Gnutella network"
)]
struct Args {
    /// Scenario file (TOML), e.g. netsim/scenarios/canopy.toml.
    #[arg(long)]
    scenario: PathBuf,
    /// Nodes online at once (overrides the file).
    #[arg(long)]
    nodes: Option<u32>,
    /// Random seed (overrides the file).
    #[arg(long)]
    seed: Option<u64>,
    /// Queries to issue (overrides the file; a pollution study's searches
    /// in all).
    #[arg(long)]
    queries: Option<u32>,
    /// Queries per second across the network (overrides the file).
    #[arg(long)]
    rate: Option<f64>,
    /// Folder for the CSV files and charts.
    #[arg(long, default_value = "netsim-out")]
    out: PathBuf,
    /// Run once per cluster size (leaves per supernode) and chart the load.
    #[arg(long, value_delimiter = ',')]
    cluster_sizes: Vec<u32>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("cannot read scenario {}", args.scenario.display()))?;
    let mut scenario =
        Scenario::parse(&text).with_context(|| format!("in scenario {}", args.scenario.display()))?;
    if let Some(nodes) = args.nodes {
        scenario.nodes = nodes;
    }
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(queries) = args.queries {
        scenario.queries.count = queries;
        // A pollution study's queries are its users' searches.
        let nodes = scenario.nodes;
        if let Some(pollution) = scenario.pollution.as_mut() {
            pollution.searches_per_user = f64::from(queries) / f64::from(pollution.users(nodes).max(1));
        }
    }
    if let Some(rate) = args.rate {
        scenario.queries.rate_per_s = rate;
    }
    if scenario.nodes == 0 {
        bail!("a network needs at least one node");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    if let Some(pollution) = scenario.pollution.clone() {
        run_pollution(&scenario, &pollution, &args.out)
    } else if args.cluster_sizes.is_empty() {
        run_one(scenario, &args.out)
    } else {
        sweep_clusters(scenario, &args.cluster_sizes, &args.out)
    }
}

fn run_one(scenario: Scenario, out: &Path) -> Result<()> {
    let seed = scenario.seed;
    println!(
        "scenario {} — {} nodes, seed {seed}, {} queries",
        scenario.name, scenario.nodes, scenario.queries.count
    );
    let started = Instant::now();
    let mut sim = Sim::new(scenario, seed);
    let built = started.elapsed();
    sim.run();
    let wall = started.elapsed();
    let summary = Summary::of(&sim);
    let traversal = TraversalSummary::of(&sim);
    let peak = peak_rss();
    let mut table = summary.table();
    if let Some(traversal) = &traversal {
        table.push_str(&traversal.table());
    }
    print!("{table}");
    let footer = format!(
        "wall time {:.1} s (population {:.1} s), peak memory {}",
        wall.as_secs_f64(),
        built.as_secs_f64(),
        peak.map_or("unknown".into(), |b| format!(
            "{:.0} MiB",
            b as f64 / (1 << 20) as f64
        ))
    );
    println!("{footer}");
    write_csv(&sim, &summary, out).with_context(|| format!("writing CSV into {}", out.display()))?;
    if let Some(traversal) = &traversal {
        traversal
            .write_csv(&sim, out)
            .with_context(|| format!("writing CSV into {}", out.display()))?;
    }
    std::fs::write(out.join("run.txt"), format!("{table}{footer}\n"))?;
    write_charts(&sim, &summary, out)?;
    println!("figures in {}", out.display());
    Ok(())
}

/// The pollution study: every defence combination over one population.
fn run_pollution(scenario: &Scenario, pollution: &Pollution, out: &Path) -> Result<()> {
    println!(
        "scenario {} — pollution study, {} nodes, seed {}",
        scenario.name, scenario.nodes, scenario.seed
    );
    let started = Instant::now();
    let outcomes = canopy_netsim::pollution::study(pollution, scenario.nodes, scenario.seed);
    let wall = started.elapsed();
    let table = canopy_netsim::pollution::table(&outcomes);
    print!("{table}");
    let footer = format!(
        "figures after the first {:.0} % of {} h; wall time {:.1} s, peak memory {}",
        pollution.warmup_share * 100.0,
        pollution.duration_h,
        wall.as_secs_f64(),
        peak_rss().map_or("unknown".into(), |b| format!(
            "{:.0} MiB",
            b as f64 / (1 << 20) as f64
        ))
    );
    println!("{footer}");
    std::fs::write(
        out.join("pollution.csv"),
        canopy_netsim::pollution::csv(&outcomes),
    )?;
    std::fs::write(
        out.join("pollution_timeline.csv"),
        canopy_netsim::pollution::timeline_csv(&outcomes),
    )?;
    std::fs::write(
        out.join("pollution.svg"),
        canopy_netsim::pollution::chart(&outcomes, &scenario.name),
    )?;
    std::fs::write(out.join("run.txt"), format!("{table}{footer}\n"))?;
    println!("figures in {}", out.display());
    Ok(())
}

fn write_charts(sim: &Sim, summary: &Summary, out: &Path) -> Result<()> {
    // Reach by hop, cumulative, against the tree a flood would cover if no
    // path ever met another: d·(d−1)^(h−1) new routers at hop h.
    let d = summary.mean_degree;
    let mut theory = Vec::new();
    let mut measured = Vec::new();
    let (mut t_sum, mut m_sum) = (1.0, 0.0);
    for (hop, &new) in summary.reached_at_hop.iter().enumerate() {
        if hop > 0 {
            t_sum += d * (d - 1.0).powi(hop as i32 - 1);
        }
        m_sum += new;
        theory.push((hop as f64, t_sum));
        measured.push((hop as f64, m_sum));
    }
    let reach = Chart {
        title: format!("{}: routers reached within h hops", sim.scenario().name),
        x_label: "hops (TTL)".into(),
        y_label: "routers reached (cumulative)".into(),
        log_y: true,
        series: vec![
            Series::new(format!("tree, degree {d:.1}"), theory).dashed(),
            Series::new("measured", measured),
        ],
        ..Chart::default()
    };
    std::fs::write(out.join("reach.svg"), reach.svg())?;

    let mut utilisation: Vec<f64> = router_loads(sim).iter().map(|l| l.utilisation()).collect();
    utilisation.sort_by(f64::total_cmp);
    let n = utilisation.len().max(1) as f64;
    let step = (utilisation.len() / 400).max(1);
    let cdf: Vec<(f64, f64)> = utilisation
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i + 1 == utilisation.len())
        .map(|(i, &u)| (u.max(1e-6), (i + 1) as f64 / n))
        .collect();
    let load = Chart {
        title: format!("{}: router load / capacity (CDF)", sim.scenario().name),
        x_label: "query messages per second / capacity".into(),
        y_label: "share of routers".into(),
        log_x: true,
        series: vec![Series::new("routers", cdf)],
        ..Chart::default()
    };
    std::fs::write(out.join("load.svg"), load.svg())?;

    let timeline = &sim.tally().timeline;
    let minutes = |f: &dyn Fn(&canopy_netsim::metrics::Point) -> f64| -> Vec<(f64, f64)> {
        timeline.iter().map(|p| (p.t as f64 / 6e7, f(p))).collect()
    };
    let chart = Chart {
        title: format!("{}: population over time", sim.scenario().name),
        x_label: "simulated minutes".into(),
        y_label: "nodes".into(),
        log_y: true,
        series: vec![
            Series::new("online", minutes(&|p| p.online as f64)),
            Series::new("routers", minutes(&|p| p.routers as f64)),
            Series::new("leaves w/o supernode", minutes(&|p| p.orphans as f64)),
        ],
        ..Chart::default()
    };
    std::fs::write(out.join("timeline.svg"), chart.svg())?;
    Ok(())
}

/// Yang & Garcia-Molina's question: how do individual and aggregate load
/// change with the number of leaves per supernode?
fn sweep_clusters(base: Scenario, sizes: &[u32], out: &Path) -> Result<()> {
    if base.is_flat() {
        bail!("--cluster-sizes needs a two-tier scenario");
    }
    let mut rows = Vec::new();
    println!(
        "{:>8} {:>10} {:>10} {:>13} {:>12} {:>14} {:>12} {:>8}",
        "cluster", "routers", "leaves/SN", "SN msg/s", "SN msg/s p99", "SN kB/s", "msgs/query", "wall s"
    );
    for &size in sizes {
        let mut scenario = base.clone();
        scenario.supernodes.selection = Selection::Capacity;
        scenario.supernodes.leaves_min = size;
        scenario.supernodes.leaves_max = size;
        let started = Instant::now();
        let (_, summary) = canopy_netsim::run(scenario.clone(), scenario.seed);
        let wall = started.elapsed().as_secs_f64();
        println!(
            "{size:>8} {:>9.2}% {:>10.1} {:>13.2} {:>12.2} {:>14.2} {:>12.1} {wall:>8.1}",
            summary.router_share * 100.0,
            summary.leaves_per_router,
            summary.load_mean,
            summary.load_p99,
            summary.bandwidth_mean / 1e3,
            summary.messages
        );
        rows.push((size, summary));
    }
    let mut csv = String::from(
        "cluster_size,router_share,leaves_per_router,load_mean_msg_s,load_p99_msg_s,traffic_mean_bytes_s,traffic_p99_bytes_s,messages_per_query,bytes_per_query,routers_reached,nodes_covered\n",
    );
    for (size, s) in &rows {
        csv.push_str(&format!(
            "{size},{:.5},{:.2},{:.4},{:.4},{:.0},{:.0},{:.1},{:.0},{:.1},{:.1}\n",
            s.router_share,
            s.leaves_per_router,
            s.load_mean,
            s.load_p99,
            s.bandwidth_mean,
            s.bandwidth_p99,
            s.messages,
            s.bytes,
            s.routers_reached,
            s.nodes_covered
        ));
    }
    std::fs::write(out.join("load_vs_cluster.csv"), csv)?;
    let points = |f: &dyn Fn(&Summary) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|(size, s)| (*size as f64, f(s))).collect()
    };
    let individual = Chart {
        title: "Supernode load vs cluster size".into(),
        x_label: "leaves per supernode (slots)".into(),
        y_label: "query messages / s".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series::new("per supernode, mean", points(&|s| s.load_mean)),
            Series::new("per supernode, p99", points(&|s| s.load_p99)),
        ],
    };
    std::fs::write(out.join("load_vs_cluster.svg"), individual.svg())?;
    let traffic = Chart {
        title: "Supernode search traffic vs cluster size".into(),
        x_label: "leaves per supernode (slots)".into(),
        y_label: "kB/s in + out".into(),
        log_x: true,
        log_y: true,
        series: vec![
            Series::new("per supernode, mean", points(&|s| s.bandwidth_mean / 1e3)),
            Series::new("per supernode, p99", points(&|s| s.bandwidth_p99 / 1e3)),
        ],
    };
    std::fs::write(out.join("traffic_vs_cluster.svg"), traffic.svg())?;
    let aggregate = Chart {
        title: "Aggregate cost per query vs cluster size".into(),
        x_label: "leaves per supernode (slots)".into(),
        y_label: "messages per query".into(),
        log_x: true,
        log_y: true,
        series: vec![Series::new("all messages", points(&|s| s.messages))],
    };
    std::fs::write(out.join("aggregate_vs_cluster.svg"), aggregate.svg())?;
    println!("figures in {}", out.display());
    Ok(())
}
