//! `canopy demo`: the whole network on loopback in one process, so a new
//! user sees Canopy work before configuring anything.
//!
//! Three supernodes link into an overlay; twelve leaves join them and
//! publish sample files; a searcher asks one supernode and hears from all
//! three; then it fetches the largest hit from every leaf that has it at
//! once, verified block by block. Each step is printed as it happens.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use canopy_common::proto::{ContentHash, Hit, Query};
use canopy_supernode::SupernodeConfig;

use crate::download::{DownloadOptions, DownloadReport};
use crate::leaf::LeafStatus;
use crate::searcher::Searcher;
use crate::units::human_bytes;
use crate::{Node, NodeConfig};

pub const SUPERNODES: usize = 3;
pub const LEAVES: usize = 12;
/// Leaves that share the big file.
const HOLDERS: usize = 4;

const TOPICS: [&str; LEAVES] = [
    "rivers",
    "mountains",
    "tides",
    "forests",
    "deserts",
    "glaciers",
    "volcanoes",
    "meadows",
    "reefs",
    "caves",
    "storms",
    "auroras",
];

/// What the demo did.
#[derive(Debug)]
pub struct DemoReport {
    pub hits: Vec<Hit>,
    pub expected: ContentHash,
    pub fetched: DownloadReport,
    pub fetched_hash: ContentHash,
}

/// Runs the demo with a big file of `size` bytes, printing as it goes.
pub async fn run(size: u64) -> anyhow::Result<DemoReport> {
    let workspace = tempfile::tempdir().context("cannot create a temporary folder for the demo")?;
    let root = workspace.path();
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let started = Instant::now();
    let step = |text: String| println!("[{:>5.1}s] {text}", started.elapsed().as_secs_f64());

    // 1. Supernodes, each bootstrapping from the one before: a line that the
    //    host-cache exchange then fills in.
    let mut supernodes: Vec<Node> = Vec::new();
    for index in 0..SUPERNODES {
        let mut config = NodeConfig::new(root.join(format!("supernode-{index}")), loopback);
        config.supernode = Some(SupernodeConfig::for_this_machine(None));
        config.bootstrap = supernodes.last().map(|s| vec![s.peer_addr()]).unwrap_or_default();
        let node = Node::start(config).await.context("cannot start a supernode")?;
        step(format!("supernode {index} up at {}", node.peer_addr()));
        supernodes.push(node);
    }
    wait_for("the supernodes to link", || {
        supernodes.iter().all(|s| {
            s.supernode()
                .is_some_and(|s| s.overlay().is_some_and(|o| !o.neighbours().is_empty()))
        })
    })
    .await?;
    step("supernodes linked into an overlay".into());

    // 2. Leaves with sample files; a few hold the same big one.
    let big = root.join("big.bin");
    let expected = write_sample(&big, size).context("cannot write the sample file")?;
    let mut leaves = Vec::new();
    for (index, topic) in TOPICS.iter().enumerate() {
        let share = root.join(format!("leaf-{index}-share"));
        std::fs::create_dir_all(&share)?;
        std::fs::write(
            share.join(format!("field notes about {topic}.txt")),
            format!("Notes on {topic}.\n"),
        )?;
        if index % (LEAVES / HOLDERS) == 0 {
            std::fs::copy(&big, share.join("canopy demo film.mkv"))?;
        }
        let mut config = NodeConfig::new(root.join(format!("leaf-{index}")), loopback).sharing(share);
        config.bootstrap = vec![supernodes[index % SUPERNODES].peer_addr()];
        config.leaf_sessions = 1;
        leaves.push(Node::start(config).await.context("cannot start a leaf")?);
    }
    for leaf in &leaves {
        let files = leaf.shares().len();
        let mut status = leaf.leaf_status();
        tokio::time::timeout(
            Duration::from_secs(20),
            status.wait_for(|s: &LeafStatus| s.published(files)),
        )
        .await
        .context("a leaf did not publish in time")??;
    }
    step(format!(
        "{LEAVES} leaves joined ({} per supernode) and published their files",
        LEAVES / SUPERNODES
    ));

    // 3. Search through one supernode; hits come from the whole overlay.
    let searcher = Node::start(NodeConfig::new(root.join("searcher"), loopback)).await?;
    let query = Query::words("demo film");
    let entry = supernodes[0].peer_addr();
    let asker = Searcher::one_shot(searcher.endpoint().clone(), vec![entry]);
    let mut hits = Vec::new();
    for _ in 0..40 {
        hits = asker.search(&query, &mut |_| {}).await?.hits;
        if hits.first().is_some_and(|hit| hit.sources.len() >= HOLDERS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hit = hits.first().context("the search found nothing")?.clone();
    step(format!(
        "searched \"demo film\" at supernode 0: {} ({}) with {} sources across the overlay",
        hit.name,
        human_bytes(hit.size),
        hit.sources.len()
    ));
    let notes = asker
        .search(&Query::words("field notes"), &mut |_| {})
        .await?
        .hits;
    step(format!(
        "searched \"field notes\": {} files from {} leaves",
        notes.len(),
        notes.iter().map(|h| h.sources.len()).sum::<usize>()
    ));

    // 4. Fetch from every source at once.
    let output = root.join("downloaded.mkv");
    let fetched = searcher
        .download(hit.hash, &output, hit.sources.clone(), DownloadOptions::default())
        .wait()
        .await
        .context("demo download failed")?;
    let fetched_hash = ContentHash::of(&std::fs::read(&output)?);
    ensure!(fetched_hash == expected, "downloaded file does not match");
    step(format!(
        "fetched {} by hash from {} sources at once, every block verified: {}/s",
        human_bytes(fetched.size),
        fetched.sources.iter().filter(|s| s.bytes > 0).count(),
        human_bytes(fetched.bytes_per_second() as u64)
    ));

    step("shutting the demo network down".into());
    // Together: each node says goodbye to its peers, and one at a time
    // that took seconds.
    let mut stopping = tokio::task::JoinSet::new();
    for node in std::iter::once(searcher).chain(leaves).chain(supernodes) {
        stopping.spawn(node.shutdown());
    }
    while stopping.join_next().await.is_some() {}
    Ok(DemoReport {
        hits,
        expected,
        fetched,
        fetched_hash,
    })
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    for _ in 0..200 {
        if condition() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

/// Writes `size` pseudo-random (incompressible) bytes and returns their hash.
fn write_sample(path: &Path, size: u64) -> std::io::Result<ContentHash> {
    use std::io::Write;
    let mut stream = blake3::Hasher::new_derive_key("canopy demo sample").finalize_xof();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let len = left.min(buffer.len() as u64) as usize;
        stream.fill(&mut buffer[..len]);
        file.write_all(&buffer[..len])?;
        hasher.update(&buffer[..len]);
        left -= len as u64;
    }
    file.flush()?;
    Ok(hasher.finalize().into())
}

/// Sources of the fetched file, for the summary.
pub fn sources_line(report: &DownloadReport) -> Vec<(String, u64)> {
    report
        .sources
        .iter()
        .map(|s| {
            (
                s.peer
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(10)
                    .collect(),
                s.bytes,
            )
        })
        .collect()
}
