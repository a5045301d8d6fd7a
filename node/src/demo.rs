//! `canopy demo`: a small network on loopback in one process, so a new user
//! sees Canopy work before configuring anything.
//!
//! Today it starts three sharing nodes and a downloader, generates a file,
//! fetches it by content hash from all three sources at once over QUIC and
//! checks the result. Later the demo grows with the network: supernodes and
//! search.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{ensure, Context};
use canopy_common::proto::ContentHash;

use crate::download::{DownloadOptions, DownloadReport};
use crate::{Node, NodeConfig};

/// Sharing nodes the demo starts.
pub const SOURCES: usize = 3;

/// What the demo did, for printing.
#[derive(Debug)]
pub struct DemoReport {
    pub sources: Vec<String>,
    pub shared_path: PathBuf,
    pub expected: ContentHash,
    pub fetched: DownloadReport,
    pub fetched_hash: ContentHash,
}

/// Runs the demo with a generated file of `size` bytes in a temporary folder.
pub async fn run(size: u64) -> anyhow::Result<DemoReport> {
    let workspace = tempfile::tempdir().context("cannot create a temporary folder for the demo")?;
    let share_dir = workspace.path().join("shared");
    std::fs::create_dir_all(&share_dir)?;
    let shared_path = share_dir.join("canopy-demo.bin");
    let expected = write_sample(&shared_path, size).context("cannot write the demo file")?;

    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut sharers = Vec::new();
    for index in 0..SOURCES {
        let config = NodeConfig::new(workspace.path().join(format!("sharer-{index}")), loopback)
            .sharing(share_dir.clone());
        sharers.push(Node::start(config).await.context("cannot start a sharing node")?);
    }
    let sources: Vec<_> = sharers.iter().map(Node::peer_addr).collect();

    let fetcher = Node::start(NodeConfig::new(workspace.path().join("fetcher"), loopback))
        .await
        .context("cannot start the downloading node")?;
    let output = workspace.path().join("downloaded.bin");
    let fetched = fetcher
        .download(expected, &output, sources.clone(), DownloadOptions::default())
        .wait()
        .await
        .context("demo download failed")?;
    let fetched_hash = ContentHash::of(&std::fs::read(&output)?);
    ensure!(fetched_hash == expected, "downloaded file does not match");

    fetcher.shutdown().await;
    for sharer in sharers {
        sharer.shutdown().await;
    }
    Ok(DemoReport {
        sources: sources.iter().map(ToString::to_string).collect(),
        shared_path,
        expected,
        fetched,
        fetched_hash,
    })
}

/// Writes `size` pseudo-random (incompressible) bytes and returns their hash.
fn write_sample(path: &std::path::Path, size: u64) -> std::io::Result<ContentHash> {
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
