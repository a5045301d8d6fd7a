//! `canopy probe`, and the start-up election behind `canopy run --role auto`.

use std::net::SocketAddr;

use anyhow::Context;
use canopy_common::net::{Endpoint, EndpointConfig, NodeKey};
use canopy_common::proto::election::{decide, Decision, Profile, Thresholds};
use canopy_common::proto::PeerAddr;

use super::args::{DataDir, ElectionArgs, NetworkArgs};
use crate::probe::{machine, measure, Measured};
use crate::ratelimit::RateLimiter;
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
    let listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let (profile, measured, decision, _) = elect(
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
    Ok(())
}

/// Measures this machine and its links from `listen` (the address the
/// node will use, so reachability is tested where it matters), and decides
/// its role. In a private network (`network`), the peers probed are
/// members and the probes prove membership like any connection.
pub async fn elect(
    data_dir: &std::path::Path,
    listen: SocketAddr,
    peers: &[PeerAddr],
    max_upload_rate: Option<u64>,
    thresholds: &Thresholds,
    never_supernode: bool,
    network: Option<canopy_common::net::Network>,
) -> anyhow::Result<(Profile, Measured, Decision, SocketAddr)> {
    let key = NodeKey::load_or_create(data_dir)?;
    let endpoint = Endpoint::bind_in(key, listen, &EndpointConfig::default(), network)
        .context("cannot open the node's UDP port")?;
    // Keep the port that was picked, so the node itself gets the same one.
    let bound = endpoint.local_addr();
    // Complete the handshakes of peers dialing back to test reachability.
    let answering = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        if endpoint.admit(&connection).await.is_ok() {
                            let _ = connection.closed().await;
                        }
                    }
                });
            }
        })
    };
    let limiter = max_upload_rate.map(RateLimiter::new);
    let measured = measure(&endpoint, peers, limiter.as_ref()).await;
    answering.abort();
    endpoint.shutdown().await;
    drop(endpoint);
    let mut profile = machine();
    profile.upload = measured.upload;
    profile.download = measured.download;
    profile.reachable = measured.reachable;
    let decision = decide(&profile, &measured.hints, thresholds, never_supernode);
    Ok((profile, measured, decision, bound))
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
            None => "unknown (no peer to ask)",
        }
    );
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
