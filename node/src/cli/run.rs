//! `canopy run`: a node that shares folders until stopped.

use anyhow::Context;
use canopy_common::proto::Link;

use crate::units::human_bytes;
use crate::{Node, NodeConfig};

pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let node = Node::start(config).await.context("cannot start the node")?;
    let me = node.peer_addr();
    let scan = node.scan_stats();
    println!("canopy node {}", me.id);
    println!("listening on {} (peers reach this node as {me})", me.addr);
    println!(
        "sharing {} file{}, {} ({} hashed now, {} from cache)",
        scan.files,
        if scan.files == 1 { "" } else { "s" },
        human_bytes(scan.bytes),
        scan.hashed,
        scan.cached
    );
    match node.supernode() {
        Some(_) => println!("role: supernode (leaves join it with --bootstrap {me})"),
        None if node.knows_supernodes() => println!("role: leaf (joining a supernode)"),
        None => println!("role: leaf (no supernode known: pass --bootstrap to publish and search)"),
    }
    let files = node.shares().list();
    for file in files.iter().take(20) {
        let link = Link {
            hash: file.hash(),
            size: Some(file.size),
            name: file
                .path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned()),
            sources: vec![me],
        };
        println!(
            "  {:>10}  {}  {link}",
            human_bytes(file.size),
            file.path.display()
        );
    }
    if files.len() > 20 {
        println!("  … and {} more", files.len() - 20);
    }
    if let Some(file) = files.first() {
        println!("fetch with: canopy get {} --source {me}", file.hash());
    }
    super::shutdown_signal().await;
    println!("shutting down");
    node.shutdown().await;
    Ok(())
}
