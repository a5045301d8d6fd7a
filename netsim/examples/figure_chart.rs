//! Draws one figure of several runs against network size, log–log: e.g.
//! query messages per query for FastTrack and Canopy at 10^5 and 10^6 nodes.
//!
//! ```text
//! cargo run --release -p canopy-netsim --example figure_chart -- \
//!     OUT.svg "FIGURE" "TITLE" LABEL=SUMMARY.csv[,SUMMARY.csv...]...
//! ```
//! FIGURE is a row name of `summary.csv` (as `canopy-netsim` writes it,
//! e.g. `query messages / query`); each series takes its x from the row
//! `nodes online (target)`.

use anyhow::{bail, Context, Result};
use canopy_netsim::chart::{Chart, Series};

/// The value of row `figure` in a `summary.csv`.
fn value(summary: &str, figure: &str) -> Result<f64> {
    let text = std::fs::read_to_string(summary).with_context(|| format!("cannot read {summary}"))?;
    let line = text
        .lines()
        .find(|line| {
            line.split_once(',')
                .is_some_and(|(name, _)| name.trim() == figure)
        })
        .with_context(|| format!("{summary} has no row {figure:?}"))?;
    let raw = line
        .split_once(',')
        .map_or("", |(_, v)| v)
        .trim()
        .trim_end_matches('%')
        .trim();
    raw.parse()
        .with_context(|| format!("{summary}: {figure:?} is {raw:?}, not a number"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, figure, title, series @ ..] = args.as_slice() else {
        bail!("usage: figure_chart OUT.svg FIGURE TITLE LABEL=SUMMARY.csv[,SUMMARY.csv...]...");
    };
    if series.is_empty() {
        bail!("name at least one series");
    }
    let mut chart = Chart {
        title: title.clone(),
        x_label: "nodes online".into(),
        y_label: figure.clone(),
        log_x: true,
        log_y: true,
        series: Vec::new(),
    };
    for spec in series {
        let (label, files) = spec.split_once('=').context("a series is LABEL=FILES")?;
        let mut points = Vec::new();
        for file in files.split(',') {
            points.push((value(file, "nodes online (target)")?, value(file, figure)?));
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.series.push(Series::new(label, points));
    }
    std::fs::write(out, chart.svg()).with_context(|| format!("cannot write {out}"))?;
    Ok(())
}
