//! `canopy open LINK…`: hands `canopy:` links (or content hashes) to the
//! desktop app of the node running with this data folder, which starts
//! the downloads. What a link clicked in a browser runs, through the
//! `canopy:` URL handler (`deploy/canopy-link.desktop`).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::web::{auth, UI_ADDR_FILE};

#[derive(clap::Args)]
pub struct OpenArgs {
    /// `canopy:` links or content hashes (several at once, as pasted).
    #[arg(required = true, value_name = "LINK")]
    links: Vec<String>,
    #[command(flatten)]
    data: super::args::DataDir,
}

pub async fn run(args: OpenArgs) -> anyhow::Result<()> {
    let data_dir = args.data.resolve()?;
    let answer = post_links(&data_dir, &args.links.join("\n")).await?;
    let added = answer["added"].as_array().map(Vec::as_slice).unwrap_or_default();
    let failed = answer["failed"].as_array().map(Vec::as_slice).unwrap_or_default();
    for download in added {
        println!(
            "downloading {} ({})",
            download["name"].as_str().unwrap_or("?"),
            download["hash"].as_str().unwrap_or("?")
        );
    }
    for failure in failed {
        eprintln!(
            "canopy: not opened: {}: {}",
            failure["text"].as_str().unwrap_or("?"),
            failure["error"].as_str().unwrap_or("?")
        );
    }
    anyhow::ensure!(!added.is_empty(), "no link was opened");
    Ok(())
}

/// `POST /api/links` to the app of the node running with `data_dir`.
async fn post_links(data_dir: &Path, text: &str) -> anyhow::Result<Value> {
    let record = data_dir.join(UI_ADDR_FILE);
    let addr: SocketAddr = std::fs::read_to_string(&record)
        .with_context(|| {
            format!(
                "no running desktop app found: {} is missing (start `canopy run` with this --data-dir)",
                record.display()
            )
        })?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold an address", record.display()))?;
    // An app on every interface is asked on loopback.
    let addr = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())),
        ip if ip.is_unspecified() => SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    };
    let key_file = data_dir.join(auth::KEY_FILE);
    let key = std::fs::read_to_string(&key_file)
        .with_context(|| format!("cannot read the app's key in {}", key_file.display()))?;
    let body = json!({ "text": text }).to_string();
    let request = format!(
        "POST /api/links HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        key.trim(),
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the app at {addr} did not answer"))?
        .with_context(|| format!("cannot reach the app at {addr} (has the node stopped?)"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("the app at {addr} sent no HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    let answer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match status {
        "200" => Ok(answer),
        _ => anyhow::bail!(
            "the app refused the links ({status}): {}",
            answer["error"].as_str().unwrap_or(body.trim())
        ),
    }
}
