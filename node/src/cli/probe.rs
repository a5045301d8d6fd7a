//! `canopy probe`: which role this machine would take, and why (the
//! measuring is [`crate::measure::elect`], which `canopy run --role auto`
//! runs too).

use std::net::SocketAddr;

use canopy_common::proto::election::{Decision, Profile};

use super::args::{DataDir, ElectionArgs, NetworkArgs};
use crate::measure::Measured;
use crate::reach::{Forwarded, Reachability};
use crate::units::human_bytes;

/// `canopy probe`'s arguments.
#[derive(clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    network: NetworkArgs,
    /// Count our upload as capped at this rate (as `run` would).
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_bytes)]
    max_upload_rate: Option<u64>,
    #[command(flatten)]
    election: ElectionArgs,
    #[command(flatten)]
    data: DataDir,
}

/// Measures and prints which role this machine would take, and why.
pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.network.network.is_none(),
        "canopy probe measures against the public network; --network is not for it"
    );
    let data_dir = args.data.resolve()?;
    let peers = args.network.supernodes(&data_dir);
    let listen = SocketAddr::from(([0u16; 8], 0));
    let (profile, measured, decision, _) = crate::measure::elect(
        &data_dir,
        listen,
        &peers,
        args.max_upload_rate,
        &args.election.thresholds(),
        args.election.never_supernode,
        None,
    )
    .await?;
    print(&profile, &measured, &decision, "would be");
    if let Some(Ok(mapping)) = measured.mapping {
        // Only a probe: give the port back.
        crate::portmap::Kept::new(mapping).release().await;
    }
    Ok(())
}

/// How peers reach this node, as the election's probes found.
pub fn reachability(profile: &Profile, measured: &Measured) -> Reachability {
    let mapped = match &measured.mapping {
        Some(Ok(mapping)) => Some(Forwarded {
            external: SocketAddr::V4(mapping.external),
            protocol: mapping.protocol(),
        }),
        _ => None,
    };
    Reachability {
        dial_back: profile.reachable,
        observations: measured.observations.clone(),
        mapped,
        rechecked: None,
    }
}

fn rate(bytes_per_second: Option<u64>) -> String {
    match bytes_per_second {
        Some(rate) => format!("{:.1} Mbit/s ({}/s)", rate as f64 * 8.0 / 1e6, human_bytes(rate)),
        None => "not measured (no peer to probe)".into(),
    }
}

/// Prints what `elect` found, as `canopy probe` shows it.
/// `verdict` starts the last line: "would be" for a probe, "starts as"
/// for a node that acts on it.
pub fn print(profile: &Profile, measured: &Measured, decision: &Decision, verdict: &str) {
    println!(
        "machine   {} cores, {} memory ({} free), up {:.1} h, {}",
        profile.cores,
        human_bytes(profile.memory_total),
        human_bytes(profile.memory_available),
        profile.uptime.as_secs_f64() / 3600.0,
        profile.os
    );
    for (peer, outcome) in &measured.peers {
        match outcome {
            Ok((up, down)) => println!(
                "probe     {peer:?}: up {}, down {}",
                rate(Some(*up)),
                rate(Some(*down))
            ),
            Err(error) => println!("probe     {peer:?}: failed ({error})"),
        }
    }
    println!("upload    {}", rate(profile.upload));
    println!("download  {}", rate(profile.download));
    println!(
        "reachable {}",
        match profile.reachable {
            Some(true) => "yes (a peer connected back from a fresh port)",
            Some(false) => "no (a peer could not connect back)",
            None => "unknown (no peer ran the test)",
        }
    );
    match &measured.mapping {
        Some(Ok(mapping)) => println!(
            "port map  {} forwarded to port {} by the router ({}, {} min lease)",
            mapping.external,
            mapping.internal_port,
            mapping.protocol(),
            mapping.lifetime.as_secs() / 60
        ),
        Some(Err(why)) => println!("port map  none: {why}"),
        None => {}
    }
    let reachability = reachability(profile, measured);
    println!("reached   {}", reachability.describe());
    println!(
        "network   {} supernode(s) answered, {} of {} leaf slots free",
        measured.hints.supernodes, measured.hints.free_slots, measured.hints.total_slots
    );
    let role = match decision.role {
        canopy_common::proto::election::Role::Supernode => "a supernode",
        canopy_common::proto::election::Role::Leaf => "a leaf",
    };
    println!("{verdict} {role} because {}", decision.reason);
}
