//! `canopy search`: ask a supernode, print what it knows, exit.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use canopy_common::net::{read_frame, write_frame, Endpoint, EndpointConfig, NodeKey};
use canopy_common::proto::frame::MAX_CONTROL_FRAME;
use canopy_common::proto::{Hit, Link, PeerAddr, Query, Request, Response};
use serde_json::json;

use crate::units::human_bytes;

/// How long one supernode may take to answer.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the first supernode that answers among `supernodes`; returns its
/// hits and who answered.
pub async fn ask(
    endpoint: &Endpoint,
    supernodes: &[PeerAddr],
    query: &Query,
) -> anyhow::Result<(Vec<Hit>, PeerAddr)> {
    ask_streaming(endpoint, supernodes, query, &mut |_| {}).await
}

/// Like [`ask`], calling `on_new` for each result the moment it first
/// arrives, and stopping once `query.max_hits` distinct results are in.
pub async fn ask_streaming(
    endpoint: &Endpoint,
    supernodes: &[PeerAddr],
    query: &Query,
    on_new: &mut (dyn FnMut(&Hit) + Send),
) -> anyhow::Result<(Vec<Hit>, PeerAddr)> {
    let ways: Vec<Way> = supernodes.iter().copied().map(Way::Dial).collect();
    ask_first(endpoint, ways, query, on_new).await
}

/// How to reach a supernode to ask it.
pub enum Way {
    /// Dial it for this search.
    Dial(PeerAddr),
    /// Over a connection already up (a leaf's session), which stays up.
    Over(PeerAddr, quinn::Connection),
}

impl Way {
    fn supernode(&self) -> PeerAddr {
        match self {
            Way::Dial(supernode) | Way::Over(supernode, _) => *supernode,
        }
    }
}

/// [`ask_streaming`] over `ways`, tried in order until one answers.
pub async fn ask_first(
    endpoint: &Endpoint,
    ways: Vec<Way>,
    query: &Query,
    on_new: &mut (dyn FnMut(&Hit) + Send),
) -> anyhow::Result<(Vec<Hit>, PeerAddr)> {
    if ways.is_empty() {
        bail!(NoSupernode(
            "no supernode known: pass --bootstrap PEERID@HOST:PORT".into()
        ));
    }
    let mut errors = Vec::new();
    for way in ways {
        let supernode = way.supernode();
        let asked = match &way {
            Way::Dial(_) => {
                tokio::time::timeout(SEARCH_TIMEOUT, ask_one(endpoint, &supernode, query, on_new)).await
            }
            Way::Over(_, connection) => {
                tokio::time::timeout(SEARCH_TIMEOUT, ask_on(connection, &supernode, query, on_new)).await
            }
        };
        match asked {
            Ok(Ok(hits)) => return Ok((hits, supernode)),
            Ok(Err(error)) => errors.push(format!("{} at {}: {error}", supernode.id.short(), supernode.addr)),
            Err(_) => errors.push(format!(
                "{} at {}: no answer within {SEARCH_TIMEOUT:?}",
                supernode.id.short(),
                supernode.addr
            )),
        }
    }
    bail!(NoSupernode(format!(
        "no supernode ran the search ({})",
        errors.join("; ")
    )))
}

/// No supernode could be asked; the CLI maps it to the network exit code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoSupernode(pub String);

async fn ask_one(
    endpoint: &Endpoint,
    supernode: &PeerAddr,
    query: &Query,
    on_new: &mut (dyn FnMut(&Hit) + Send),
) -> anyhow::Result<Vec<Hit>> {
    let connection = endpoint.connect(supernode).await?;
    let hits = ask_on(&connection, supernode, query, on_new).await;
    connection.close(0u32.into(), b"done");
    hits
}

/// Asks `supernode` over a connection that is already up (and stays up).
async fn ask_on(
    connection: &quinn::Connection,
    supernode: &PeerAddr,
    query: &Query,
    on_new: &mut (dyn FnMut(&Hit) + Send),
) -> anyhow::Result<Vec<Hit>> {
    let (mut send, mut recv) = connection.open_bi().await?;
    write_frame(&mut send, &Request::Search(query.clone())).await?;
    send.finish()?;
    let wanted = usize::from(query.max_hits.clamp(1, canopy_common::proto::search::MAX_HITS));
    let mut hits: Vec<Hit> = Vec::new();
    let mut received = 0;
    while hits.len() < wanted {
        match read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME).await? {
            Response::Hits { hits: mut more } => {
                received += more.len();
                for hit in &mut more {
                    reachable_sources(hit, supernode);
                }
                if received > usize::from(canopy_common::proto::search::MAX_HITS) * 4 {
                    bail!("the supernode sent far more hits than asked for");
                }
                for hit in &more {
                    if hits.len() < wanted && !hits.iter().any(|known| known.hash == hit.hash) {
                        on_new(hit);
                    }
                }
                merge(&mut hits, more);
                hits.truncate(wanted);
            }
            Response::EndOfHits => break,
            Response::NotSupernode { .. } => bail!("not a supernode"),
            Response::BadRequest { reason } => bail!("search refused: {reason}"),
            other => bail!("unexpected answer {other:?}"),
        }
    }
    Ok(hits)
}

/// A supernode lists its own files, and offers itself as relay, at the
/// address it is bound to, which is unspecified (`0.0.0.0`) by default and
/// cannot be dialed (PROTOCOL.md, open question 4). For the supernode we
/// asked, we know better: the address we reached it at.
fn reachable_sources(hit: &mut Hit, supernode: &PeerAddr) {
    let fix = |addr: &mut PeerAddr| {
        if addr.id == supernode.id && addr.addr.ip().is_unspecified() {
            addr.addr.set_ip(supernode.addr.ip());
        }
    };
    hit.sources.iter_mut().for_each(fix);
    hit.relayed.iter_mut().for_each(|relayed| fix(&mut relayed.via));
}

/// Adds hits arriving from another part of the network: the same content
/// found through two supernodes becomes one hit with the sources of both.
pub fn merge(hits: &mut Vec<Hit>, more: Vec<Hit>) {
    for hit in more {
        match hits.iter_mut().find(|known| known.hash == hit.hash) {
            Some(known) => {
                for source in hit.sources {
                    if !known.sources.iter().any(|s| s.id == source.id) {
                        known.sources.push(source);
                    }
                }
                known.source_count = known
                    .source_count
                    .max(hit.source_count)
                    .max(known.sources.len() as u32);
            }
            None => hits.push(hit),
        }
    }
}

/// A one-shot endpoint for asking, with this node's identity.
pub fn endpoint(data_dir: &Path) -> anyhow::Result<Endpoint> {
    endpoint_in(data_dir, None)
}

/// Like [`endpoint`], in a private network (`None`: the public one).
pub fn endpoint_in(
    data_dir: &Path,
    network: Option<canopy_common::net::Network>,
) -> anyhow::Result<Endpoint> {
    let key = NodeKey::load_or_create(data_dir)?;
    Endpoint::bind_in(
        key,
        "0.0.0.0:0".parse().expect("valid"),
        &EndpointConfig::default(),
        network,
    )
    .context("cannot open a UDP socket")
}

/// The link printed for a hit: hash, size, name and a few sources.
pub fn link_of(hit: &Hit) -> Link {
    Link {
        hash: hit.hash,
        size: Some(hit.size),
        name: Some(hit.name.clone()),
        sources: hit.sources.iter().take(5).copied().collect(),
    }
}

/// Width of the name column in tables (longer names are cut with "…").
const NAME_WIDTH: usize = 40;

/// The table header, printed before the first row.
pub fn print_header() {
    println!(
        "{:<NAME_WIDTH$}  {:>10}  {:<8}  {:>7}  LINK",
        "NAME", "SIZE", "TYPE", "SOURCES"
    );
}

/// One result, as a table row or a JSON line.
pub fn print_hit(hit: &Hit, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "hash": hit.hash.to_hex(),
                "name": hit.name,
                "size": hit.size,
                "type": hit.kind.as_str(),
                "sources": hit.source_count,
                "peers": hit.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "link": link_of(hit).to_string(),
            })
        );
        return;
    }
    let mut name: String = hit.name.chars().take(NAME_WIDTH).collect();
    if hit.name.chars().count() > NAME_WIDTH {
        name.pop();
        name.push('…');
    }
    println!(
        "{name:<NAME_WIDTH$}  {:>10}  {:<8}  {:>7}  {}",
        human_bytes(hit.size),
        hit.kind.as_str(),
        hit.source_count,
        link_of(hit)
    );
}
