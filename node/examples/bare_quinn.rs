//! The benchmark ceiling: one file pushed down one bare QUIC stream, with the
//! same endpoint, TLS and transport settings as Canopy but no protocol, no
//! blocks and no verification. `bench/transfer.sh` compares `canopy get`
//! against it.
//!
//! ```text
//! bare_quinn serve FILE LISTEN_ADDR      # prints PEERID@HOST:PORT, serves until killed
//! bare_quinn fetch PEERID@HOST:PORT OUT  # writes the stream to OUT, prints bytes and seconds
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context};
use canopy_common::net::{Endpoint, EndpointConfig, NodeKey};
use canopy_common::proto::PeerAddr;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [mode, file, listen] if mode == "serve" => serve(file.into(), listen.parse()?).await,
        [mode, peer, out] if mode == "fetch" => fetch(peer.parse()?, out.into()).await,
        _ => bail!("usage: bare_quinn serve FILE LISTEN_ADDR | bare_quinn fetch PEERID@HOST:PORT OUT"),
    }
}

async fn serve(file: std::path::PathBuf, listen: SocketAddr) -> anyhow::Result<()> {
    // Served from memory, sent as zero-copy slices: the best case for quinn.
    let content = bytes::Bytes::from(std::fs::read(&file)?);
    let endpoint = Endpoint::bind(NodeKey::generate()?, listen, &EndpointConfig::default())?;
    println!("{}", endpoint.peer_addr());
    std::io::stdout().flush()?;
    while let Some(incoming) = endpoint.accept().await {
        let content = content.clone();
        tokio::spawn(async move {
            let result: anyhow::Result<()> = async {
                let connection = incoming.await?;
                let (mut send, mut recv) = connection.accept_bi().await?;
                let mut hello = [0u8; 1];
                recv.read_exact(&mut hello).await?;
                let mut offset = 0;
                while offset < content.len() {
                    let end = (offset + (1 << 20)).min(content.len());
                    send.write_chunk(content.slice(offset..end)).await?;
                    offset = end;
                }
                send.finish()?;
                connection.closed().await;
                Ok(())
            }
            .await;
            if let Err(error) = result {
                eprintln!("bare_quinn serve: {error:#}");
            }
        });
    }
    Ok(())
}

async fn fetch(peer: PeerAddr, out: std::path::PathBuf) -> anyhow::Result<()> {
    let endpoint = Endpoint::bind(
        NodeKey::generate()?,
        SocketAddr::from(([0, 0, 0, 0], 0)),
        &EndpointConfig::default(),
    )?;
    let started = Instant::now();
    let connection = endpoint.connect(&peer).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&[1]).await?;
    send.finish()?;
    // Disk writes on their own thread, so the network side never waits on them.
    let mut output =
        std::fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let (chunks, received) = std::sync::mpsc::sync_channel::<bytes::Bytes>(64);
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for chunk in received {
            output.write_all(&chunk)?;
        }
        output.sync_all()
    });
    let mut total = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
        chunks.send(chunk.bytes)?;
    }
    drop(chunks);
    writer.join().expect("writer thread")?;
    let elapsed = started.elapsed().as_secs_f64();
    connection.close(0u32.into(), b"done");
    println!("{total} bytes in {elapsed:.3} s");
    endpoint.shutdown().await;
    Ok(())
}
