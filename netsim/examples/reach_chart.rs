//! Draws the calibration chart of docs/NETSIM.md: routers reached within h
//! hops for several runs, against the tree a degree-d flood would cover.
//!
//! ```text
//! cargo run --release -p canopy-netsim --example reach_chart -- OUT.svg DEGREE LABEL=RUN_DIR...
//! ```
//! Each RUN_DIR is a `--out` folder of `canopy-netsim` (its `summary.csv`
//! holds the new routers reached at each hop).

use anyhow::{bail, Context, Result};
use canopy_netsim::chart::{Chart, Series};

fn per_hop(dir: &str) -> Result<Vec<f64>> {
    let summary = std::fs::read_to_string(format!("{dir}/summary.csv"))
        .with_context(|| format!("no summary.csv in {dir}"))?;
    let line = summary
        .lines()
        .find(|l| l.starts_with("new routers per hop"))
        .context("summary.csv has no per-hop row")?;
    let values = line.split_once(',').map(|(_, v)| v).unwrap_or("");
    values
        .split('/')
        .map(|v| v.trim().parse::<f64>().context("bad per-hop value"))
        .collect()
}

fn cumulative(values: &[f64]) -> Vec<(f64, f64)> {
    let mut sum = 0.0;
    values
        .iter()
        .enumerate()
        .map(|(hop, v)| {
            sum += v;
            (hop as f64, sum)
        })
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: reach_chart OUT.svg DEGREE LABEL=RUN_DIR...");
    }
    let degree: f64 = args[1].parse().context("DEGREE must be a number")?;
    let tree: Vec<f64> = (0..8)
        .map(|h| {
            if h == 0 {
                1.0
            } else {
                degree * (degree - 1.0).powi(h - 1)
            }
        })
        .collect();
    let mut series = vec![Series::new(format!("tree, degree {degree}"), cumulative(&tree)).dashed()];
    for run in &args[2..] {
        let (label, dir) = run.split_once('=').context("runs are LABEL=RUN_DIR")?;
        series.push(Series::new(label, cumulative(&per_hop(dir)?)));
    }
    let chart = Chart {
        title: "TTL-7 flood: routers reached within h hops".into(),
        x_label: "hops (TTL)".into(),
        y_label: "routers reached (cumulative)".into(),
        log_x: false,
        log_y: true,
        series,
    };
    std::fs::write(&args[0], chart.svg())?;
    Ok(())
}
