//! `canopy status`: what a running node on this machine is doing, read from
//! its metrics endpoint (the same numbers Prometheus scrapes).

use std::collections::BTreeMap;
use std::path::Path;

use crate::units::human_bytes;
use crate::web::control::{fetch_metrics, parse_metrics};

/// `canopy status`'s arguments.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Print every metric as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: super::args::DataDir,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    status(&args.data.resolve()?, args.json).await
}

async fn status(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let metrics: BTreeMap<String, f64> = parse_metrics(&fetch_metrics(data_dir).await?)
        .into_iter()
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
        return Ok(());
    }
    let value = |series: &str| metrics.get(series).copied().unwrap_or(0.0);
    let supernode = value("canopy_role{role=\"supernode\"}") == 1.0;
    println!(
        "role        {} (up {})",
        if supernode { "supernode" } else { "leaf" },
        duration(value("canopy_uptime_seconds"))
    );
    println!(
        "sharing     {} files, {}",
        value("canopy_shared_files"),
        human_bytes(value("canopy_shared_bytes") as u64)
    );
    if supernode {
        println!(
            "leaves      {} of {}",
            value("canopy_leaves"),
            value("canopy_max_leaves")
        );
        println!("neighbours  {}", value("canopy_neighbours"));
        println!("index       {} files", value("canopy_index_documents"));
        println!(
            "relay       {} pairs now, {} relayed, {} refused",
            value("canopy_relay_pairs"),
            human_bytes(value("canopy_relay_bytes_total") as u64),
            value("canopy_relay_refused_total")
        );
        println!(
            "checks      {} passed, {} failed (leaves hold what they publish); {} entries and {} leaves dropped",
            value("canopy_possession_checks_total{outcome=\"passed\"}"),
            value("canopy_possession_checks_total{outcome=\"failed\"}"),
            value("canopy_possession_entries_dropped_total"),
            value("canopy_possession_leaves_dropped_total")
        );
        println!(
            "queries     {} from leaves, {} from neighbours, {} passed on ({} over the cap), {} hits",
            value("canopy_searches_total"),
            value("canopy_queries_received_total"),
            value("canopy_queries_forwarded_total"),
            value("canopy_queries_not_forwarded_total"),
            value("canopy_hits_total")
        );
        if value("canopy_leaves") == 0.0 && value("canopy_neighbours") == 0.0 {
            println!("network     alone so far: no leaf and no other supernode has found this node");
        }
    } else {
        println!("supernodes  {} joined", value("canopy_supernodes_joined"));
        if value("canopy_supernodes_joined") == 0.0 {
            println!(
                "network     not connected: nothing is published or searched until a supernode is joined"
            );
        }
    }
    if let Some(how) = labelled(&metrics, "canopy_reach", "how") {
        let nat = labelled(&metrics, "canopy_nat", "kind").unwrap_or_else(|| "unknown".into());
        let outside: Vec<String> = metrics
            .keys()
            .filter_map(|series| series.strip_prefix("canopy_outside_address{addr=\""))
            .map(|rest| rest.trim_end_matches("\"}").to_string())
            .collect();
        let mapped_by = labelled(&metrics, "canopy_port_mapped", "via");
        let reached = match how.as_str() {
            "direct" => "directly".to_string(),
            "mapped" => format!(
                "directly, on the port its router forwards ({})",
                mapped_by.as_deref().unwrap_or("port mapping")
            ),
            "punch" => "by hole punching (its supernode arranges it)".into(),
            "push" => "by peers that accept connections (push), others through a relay".into(),
            _ => "not known yet".into(),
        };
        println!("reached     {reached}; router: {nat} NAT");
        if !outside.is_empty() {
            println!(
                "seen as     {} (by {} peers)",
                outside.join(", "),
                value("canopy_address_observers")
            );
        }
    }
    println!(
        "traffic     {} up, {} down",
        human_bytes(value("canopy_uploaded_bytes_total") as u64),
        human_bytes(value("canopy_downloaded_bytes_total") as u64)
    );
    if let Some(memory) = metrics.get("canopy_memory_resident_bytes") {
        println!("memory      {}", human_bytes(*memory as u64));
    }
    Ok(())
}

/// The label value of the series of `family` that is 1 (a one-hot gauge).
fn labelled(metrics: &BTreeMap<String, f64>, family: &str, label: &str) -> Option<String> {
    let prefix = format!("{family}{{{label}=\"");
    metrics
        .iter()
        .filter(|(_, value)| **value == 1.0)
        .find_map(|(series, _)| series.strip_prefix(&prefix))
        .map(|rest| rest.split('"').next().unwrap_or_default().to_string())
}

fn duration(seconds: f64) -> String {
    let seconds = seconds as u64;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}
