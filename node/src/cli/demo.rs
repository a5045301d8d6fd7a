//! `canopy demo`: a whole network on loopback, narrated (the network itself
//! is [`crate::demo`]).

use crate::demo;
use crate::units::human_bytes;

/// Runs the demo network and prints what happened.
pub async fn run(size: u64) -> anyhow::Result<()> {
    println!(
        "canopy demo: {} supernodes and {} leaves on loopback, a search across them, a {} multi-source download",
        demo::SUPERNODES,
        demo::LEAVES,
        human_bytes(size)
    );
    let report = demo::run(size).await?;
    println!("  bytes from each source:");
    for (peer, bytes) in demo::sources_line(&report.fetched) {
        println!("          {peer}  {}", human_bytes(bytes));
    }
    println!("  hash     {}", report.fetched_hash);
    println!(
        "  verified {} (BLAKE3, same as b3sum)",
        if report.fetched_hash == report.expected {
            "yes"
        } else {
            "NO"
        }
    );
    Ok(())
}
