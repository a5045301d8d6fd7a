//! Asking the network: searches, and "who has this hash?", for the command
//! line and the desktop app alike (the CLI only parses and prints).
//!
//! A [`Searcher`] knows how to reach supernodes. A one-shot command dials
//! the supernodes it was given; a running node asks over its leaf sessions
//! first (no handshake to wait for), and a supernode answers from its own
//! index before asking a neighbour, which floods the query on. Either way
//! the first supernode that answers runs the search; the rest are only
//! tried if it fails.

use crate::votes::{Notes, Votes};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use canopy_common::net::{read_frame, write_frame, Endpoint, EndpointConfig, NetError, Network, NodeKey};
use canopy_common::proto::frame::MAX_CONTROL_FRAME;
use canopy_common::proto::search::MAX_HITS;
use canopy_common::proto::{ContentHash, Hit, PeerAddr, PeerId, Query, Request, Response};
use tokio::sync::watch;

use crate::download::{SourceSpec, SourceWatch};
use crate::leaf::{LeafStatus, SessionLinks};
use crate::state::NodeState;
use crate::units::Backoff;

/// How long one supernode may take to answer.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no supernode ran a search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no supernode known: pass --bootstrap PEERID@HOST:PORT")]
    NoSupernodeKnown,
    #[error("no supernode ran the search ({})", describe(.0))]
    NoneAnswered(Vec<(PeerAddr, AskError)>),
}

fn describe(failures: &[(PeerAddr, AskError)]) -> String {
    failures
        .iter()
        .map(|(supernode, error)| format!("{} at {}: {error}", supernode.id.short(), supernode.addr))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one supernode did not answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no answer within {SEARCH_TIMEOUT:?}")]
    Timeout,
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("the supernode sent far more hits than asked for")]
    TooManyHits,
    #[error("not a supernode")]
    NotSupernode,
    #[error("search refused: {0}")]
    Refused(String),
    #[error("too many searches at once; the supernode asks us to wait {0:?}")]
    Busy(Duration),
    #[error("unexpected answer {0}")]
    Unexpected(String),
}

/// What a search found, and which supernode ran it.
#[derive(Debug)]
pub struct Answer {
    pub hits: Vec<Hit>,
    /// `None` when only this node's own index answered.
    pub answered: Option<PeerAddr>,
}

/// Who has a file: every source a hash search found, relayed ones (leaves
/// that accept no connections, reached through their supernode) included.
#[derive(Debug, Default)]
pub struct Found {
    pub sources: Vec<SourceSpec>,
    /// The file's name, as the first hit gives it.
    pub name: Option<String>,
    pub answered: Option<PeerAddr>,
}

/// A running node's side of searching: its own index (if it is a
/// supernode) and its leaf sessions.
#[derive(Clone)]
pub struct NodeSide {
    pub context: Arc<NodeState>,
    pub leaf_status: watch::Receiver<LeafStatus>,
    /// The leaf's live sessions, asked first, nearest first.
    pub links: SessionLinks,
}

/// Asks the network on behalf of a command or a running node.
#[derive(Clone)]
pub struct Searcher {
    endpoint: Endpoint,
    node: Option<NodeSide>,
    /// Supernodes to dial when no session is up.
    known: Vec<PeerAddr>,
}

impl Searcher {
    /// For a one-shot command: dials `supernodes`, first to answer wins.
    pub fn one_shot(endpoint: Endpoint, supernodes: Vec<PeerAddr>) -> Self {
        Searcher {
            endpoint,
            node: None,
            known: supernodes,
        }
    }

    /// For a running node; `known` are the supernodes known at start (flags
    /// and host cache), dialled when no session is up.
    pub fn of_node(endpoint: Endpoint, node: NodeSide, known: Vec<PeerAddr>) -> Self {
        Searcher {
            endpoint,
            node: Some(node),
            known,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Runs `query`, calling `on_new` with each result (by content hash) as
    /// it first arrives; returns every result, sources merged.
    pub async fn search(
        &self,
        query: &Query,
        on_new: &mut (dyn FnMut(&Hit) + Send),
    ) -> Result<Answer, SearchError> {
        // We are no source for ourselves: a file we share comes back from
        // our supernode with us among its sources.
        let me = self.endpoint.peer_id();
        let on_new = &mut |hit: &Hit| on_new(&without_source(hit.clone(), me));
        let mut waited = 0;
        let mut answer = loop {
            match self.search_all(query, on_new).await {
                // Every supernode asked says we search too often (its
                // budget per asker): wait as long as it asks, a few times.
                Err(SearchError::NoneAnswered(failures)) if waited < BUSY_RETRIES => {
                    let Some(wait) = all_busy(&failures) else {
                        return Err(SearchError::NoneAnswered(failures));
                    };
                    waited += 1;
                    tracing::warn!(
                        "too many searches at once: the supernode asks us to wait {wait:?}; asking again"
                    );
                    tokio::time::sleep(wait).await;
                }
                other => break other?,
            }
        };
        answer.hits = answer
            .hits
            .into_iter()
            .map(|hit| without_source(hit, me))
            .collect();
        Ok(answer)
    }

    async fn search_all(
        &self,
        query: &Query,
        on_new: &mut (dyn FnMut(&Hit) + Send),
    ) -> Result<Answer, SearchError> {
        let mut hits: Vec<Hit> = Vec::new();
        let ways: Vec<Way> = match self.node.as_ref().and_then(|node| node.context.supernode()) {
            Some(supernode) => {
                let local = supernode.search(query.clone()).await;
                for hit in &local {
                    on_new(hit);
                }
                merge(&mut hits, local);
                let neighbours = supernode.overlay().map(|o| o.neighbours()).unwrap_or_default();
                if neighbours.is_empty() {
                    return Ok(Answer { hits, answered: None });
                }
                neighbours.into_iter().map(Way::Dial).collect()
            }
            None => self.leaf_ways(),
        };
        let seen: Vec<_> = hits.iter().map(|hit| hit.hash).collect();
        let mut fresh = |hit: &Hit| {
            if !seen.contains(&hit.hash) {
                on_new(hit)
            }
        };
        match ask_first(&self.endpoint, ways, query, &mut fresh).await {
            Ok((more, answered)) => {
                merge(&mut hits, more);
                Ok(Answer {
                    hits,
                    answered: Some(answered),
                })
            }
            // What our own index found still counts.
            Err(error) if !hits.is_empty() => {
                tracing::debug!(%error, "neighbours did not answer");
                Ok(Answer { hits, answered: None })
            }
            Err(error) => Err(error),
        }
    }

    /// Looks for sources of `hash` for as long as `watch`'s download runs:
    /// at once (or, if `asked` already, after the first pause), then again
    /// whenever it is short of sources or stalled, 5 s after the last look
    /// and doubling to a minute (a supernode is asked at most about once a
    /// minute by a download that goes well). One path for the CLI and the
    /// app; the caller aborts it, or it ends with the download. A
    /// supernode that answers is remembered in `host_cache_in`'s host
    /// cache, if given.
    pub async fn keep_finding(
        &self,
        hash: ContentHash,
        watch: SourceWatch,
        asked: bool,
        host_cache_in: Option<PathBuf>,
    ) {
        let mut pauses = Backoff::new(FIND_AGAIN_FIRST, FIND_AGAIN_MAX);
        let mut look = !asked;
        loop {
            if look {
                // While we look, a download with no source left waits for us.
                let Some(finder) = watch.finder() else { return };
                match self.sources_of(hash).await {
                    Ok(found) => {
                        if let (Some(data_dir), Some(answered)) = (&host_cache_in, found.answered) {
                            crate::hostcache::remember(data_dir, answered);
                        }
                        found.sources.into_iter().for_each(|source| finder.add(source));
                    }
                    Err(error) => tracing::debug!(%hash, %error, "no sources found by hash"),
                }
            }
            let pause = pauses.take();
            watch.looking_again_at(std::time::Instant::now() + pause);
            tokio::time::sleep(pause).await;
            look = match watch.wants_more() {
                None => return,
                Some(more) => more,
            };
        }
    }

    /// Every source the network knows for `hash`.
    pub async fn sources_of(&self, hash: ContentHash) -> Result<Found, SearchError> {
        let answer = self.search(&Query::for_hash(hash), &mut |_| {}).await?;
        let mut found = Found {
            answered: answer.answered,
            ..Found::default()
        };
        for hit in answer.hits.into_iter().filter(|hit| hit.hash == hash) {
            found
                .sources
                .extend(hit.sources.into_iter().map(SourceSpec::from));
            found.sources.extend(
                hit.relayed
                    .into_iter()
                    .map(|relayed| SourceSpec::relayed(relayed.leaf, relayed.via)),
            );
            found.name.get_or_insert(hit.name);
        }
        // A source listed at two addresses (IPv6 and IPv4), or dialable at
        // one and firewalled at the other, is one source with ways to try.
        found.sources = SourceSpec::grouped(found.sources);
        Ok(found)
    }

    /// Learns into `votes` what the supernodes this node searches through
    /// know of `files` (a search's results) besides their hits: votes on
    /// them, and their tags. Its own caches when it is a supernode, else
    /// those of the supernodes it is joined to (two at most), or the first
    /// of `known` that answers.
    pub async fn gather_notes(&self, votes: &Votes, files: &[ContentHash]) -> Notes {
        if let Some(supernode) = self.node.as_ref().and_then(|node| node.context.supernode()) {
            return Notes {
                learned: votes.learn(&supernode.votes_for(files)),
                tags: supernode.tags_for(files),
            };
        }
        let mut notes = Notes::default();
        let mut asked = 0;
        for way in self.leaf_ways() {
            let connection = match &way {
                Way::Over(_, connection) => connection.clone(),
                Way::Dial(supernode) => match self.endpoint.connect(supernode).await {
                    Ok(connection) => connection,
                    Err(_) => continue,
                },
            };
            let more = votes.gather(&connection, files).await;
            notes.learned += more.learned;
            for file in more.tags {
                if !notes.tags.iter().any(|known| known.hash == file.hash) {
                    notes.tags.push(file);
                }
            }
            asked += 1;
            // Two supernodes' notes are plenty; a leaf joins two.
            if asked == 2 {
                break;
            }
        }
        notes
    }

    /// Asks the voters this user agrees with most, among the sources it
    /// downloaded from, what they think of `files` ([`Votes::ask_met`]).
    pub async fn ask_met_voters(&self, votes: &Votes, files: &[ContentHash]) -> usize {
        votes.ask_met(&self.endpoint, files).await
    }

    /// A leaf (or a one-shot command) asks over its live sessions first,
    /// nearest first, then dials the supernodes it is joined to (or, with
    /// none, those it knew at start).
    fn leaf_ways(&self) -> Vec<Way> {
        let Some(node) = &self.node else {
            return self.known.iter().copied().map(Way::Dial).collect();
        };
        let joined = node.leaf_status.borrow().supernodes();
        let dial = if joined.is_empty() {
            self.known.clone()
        } else {
            joined
        };
        node.links
            .nearest_first()
            .into_iter()
            .map(|(supernode, connection)| Way::Over(supernode, connection))
            .chain(dial.into_iter().map(Way::Dial))
            .collect()
    }
}

/// How to reach a supernode to ask it.
enum Way {
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

/// How long an ask may go unanswered before the next supernode is asked
/// as well (the idea of Happy Eyeballs, RFC 8305): a supernode that is gone
/// costs this much, not a whole timeout. A live one answers well within it
/// (a handshake and a search: a few round trips).
const ASK_NEXT_AFTER: Duration = Duration::from_millis(1000);

/// Asks over `ways` until one supernode answers; returns its hits and who
/// it was. The first is asked at once and each next one when the asks
/// under way have failed or stayed silent for [`ASK_NEXT_AFTER`]; hits
/// reach `on_new` (once per file) from whichever ask brings them first.
async fn ask_first(
    endpoint: &Endpoint,
    ways: Vec<Way>,
    query: &Query,
    on_new: &mut (dyn FnMut(&Hit) + Send),
) -> Result<(Vec<Hit>, PeerAddr), SearchError> {
    if ways.is_empty() {
        return Err(SearchError::NoSupernodeKnown);
    }
    let (hits_tx, mut hits_rx) = tokio::sync::mpsc::unbounded_channel::<Hit>();
    let mut waiting = ways.into_iter();
    let mut asks = tokio::task::JoinSet::new();
    let start = |asks: &mut tokio::task::JoinSet<_>, way: Way| {
        let (endpoint, query, hits) = (endpoint.clone(), query.clone(), hits_tx.clone());
        asks.spawn(async move {
            let supernode = way.supernode();
            let mut forward = |hit: &Hit| {
                let _ = hits.send(hit.clone());
            };
            let asked = match &way {
                Way::Dial(_) => {
                    let ask = ask_one(&endpoint, &supernode, &query, &mut forward);
                    tokio::time::timeout(SEARCH_TIMEOUT, ask).await
                }
                Way::Over(_, connection) => {
                    let ask = ask_on(connection, &supernode, &query, &mut forward);
                    tokio::time::timeout(SEARCH_TIMEOUT, ask).await
                }
            };
            (supernode, asked.unwrap_or(Err(AskError::Timeout)))
        });
    };
    let mut seen = std::collections::HashSet::new();
    let mut show = |hit: Hit, on_new: &mut (dyn FnMut(&Hit) + Send)| {
        if seen.insert(hit.hash) {
            on_new(&hit);
        }
    };
    let mut failures = Vec::new();
    if let Some(way) = waiting.next() {
        start(&mut asks, way);
    }
    loop {
        let next_after = tokio::time::sleep(ASK_NEXT_AFTER);
        tokio::select! {
            Some(hit) = hits_rx.recv() => show(hit, on_new),
            Some(joined) = asks.join_next() => {
                // (An ask that panicked counts as one that failed.)
                if let Ok((supernode, asked)) = joined {
                    match asked {
                        Ok(hits) => {
                            while let Ok(hit) = hits_rx.try_recv() {
                                show(hit, on_new);
                            }
                            return Ok((hits, supernode));
                        }
                        Err(error) => failures.push((supernode, error)),
                    }
                }
                match waiting.next() {
                    Some(way) => start(&mut asks, way),
                    None if asks.is_empty() => return Err(SearchError::NoneAnswered(failures)),
                    None => {}
                }
            }
            _ = next_after, if waiting.len() > 0 => {
                if let Some(way) = waiting.next() {
                    start(&mut asks, way);
                }
            }
        }
    }
}

async fn ask_one(
    endpoint: &Endpoint,
    supernode: &PeerAddr,
    query: &Query,
    on_new: &mut (dyn FnMut(&Hit) + Send),
) -> Result<Vec<Hit>, AskError> {
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
) -> Result<Vec<Hit>, AskError> {
    let (mut send, mut recv) = connection.open_bi().await?;
    write_frame(&mut send, &Request::Search(query.clone())).await?;
    send.finish()?;
    let wanted = usize::from(query.max_hits.clamp(1, MAX_HITS));
    let mut hits: Vec<Hit> = Vec::new();
    let mut received = 0;
    while hits.len() < wanted {
        match read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME).await? {
            Response::Hits { hits: mut more } => {
                received += more.len();
                for hit in &mut more {
                    reachable_sources(hit, supernode);
                }
                if received > usize::from(MAX_HITS) * 4 {
                    return Err(AskError::TooManyHits);
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
            Response::NotSupernode { .. } => return Err(AskError::NotSupernode),
            // How supernodes before `Busy` said it.
            Response::BadRequest { reason } if reason.starts_with("too many searches") => {
                return Err(AskError::Busy(Duration::from_millis(200)))
            }
            Response::BadRequest { reason } => return Err(AskError::Refused(reason)),
            Response::Busy { retry_after_ms } => {
                return Err(AskError::Busy(Duration::from_millis(u64::from(retry_after_ms))))
            }
            other => return Err(AskError::Unexpected(format!("{other:?}"))),
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
/// found through two supernodes becomes one hit with the sources (direct
/// and relayed) of both.
/// A running download short of sources asks the network again after this
/// long, doubling up to the second.
const FIND_AGAIN_FIRST: Duration = Duration::from_secs(5);
const FIND_AGAIN_MAX: Duration = Duration::from_secs(60);

/// How often a search refused as too frequent is asked again.
const BUSY_RETRIES: u32 = 3;

/// The longest wait asked for, if every failure is a supernode busy with
/// our earlier searches (capped at 5 s).
fn all_busy(failures: &[(PeerAddr, AskError)]) -> Option<Duration> {
    let waits: Option<Vec<Duration>> = failures
        .iter()
        .map(|(_, error)| match error {
            AskError::Busy(wait) => Some(*wait),
            _ => None,
        })
        .collect();
    waits?
        .into_iter()
        .max()
        .map(|wait| wait.clamp(Duration::from_millis(50), Duration::from_secs(5)))
}

/// `hit` without `peer` among its sources (and its count one less if it
/// was there).
fn without_source(mut hit: Hit, peer: PeerId) -> Hit {
    let before = hit.sources.len() + hit.relayed.len();
    hit.sources.retain(|source| source.id != peer);
    hit.relayed.retain(|relayed| relayed.leaf != peer);
    let removed = before - (hit.sources.len() + hit.relayed.len());
    hit.source_count = hit.source_count.saturating_sub(removed as u32);
    hit
}

pub fn merge(hits: &mut Vec<Hit>, more: Vec<Hit>) {
    for hit in more {
        match hits.iter_mut().find(|known| known.hash == hit.hash) {
            Some(known) => {
                // The same peer at another address (its IPv6 one) is kept:
                // the download tries both.
                for source in hit.sources {
                    if !known.sources.contains(&source) {
                        known.sources.push(source);
                    }
                }
                for relayed in hit.relayed {
                    if !known.relayed.iter().any(|r| r.leaf == relayed.leaf) {
                        known.relayed.push(relayed);
                    }
                }
                known.source_count = known
                    .source_count
                    .max(hit.source_count)
                    .max((known.sources.len() + known.relayed.len()) as u32);
            }
            None => hits.push(hit),
        }
    }
}

/// A one-shot endpoint with this node's identity, in a private network
/// (`None`: the public one).
pub fn endpoint(data_dir: &Path, network: Option<Network>) -> Result<Endpoint, EndpointError> {
    let key = NodeKey::load_or_create(data_dir).map_err(EndpointError::Key)?;
    Endpoint::bind_in(
        key,
        "0.0.0.0:0".parse().expect("valid"),
        &EndpointConfig::default(),
        network,
    )
    .map_err(EndpointError::Bind)
}

/// Why a one-shot endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot load this node's key")]
    Key(#[source] NetError),
    #[error("cannot open a UDP socket")]
    Bind(#[source] NetError),
}

#[cfg(test)]
mod tests {
    use canopy_common::proto::search::RelayedSource;
    use canopy_common::proto::FileKind;

    use super::*;

    fn hit(sources: Vec<PeerAddr>, relayed: Vec<RelayedSource>) -> Hit {
        Hit {
            hash: ContentHash::of(b"x"),
            name: "x".into(),
            size: 1,
            kind: FileKind::Other,
            source_count: (sources.len() + relayed.len()) as u32,
            sources,
            relayed,
        }
    }

    #[test]
    fn merging_keeps_relayed_sources_from_both_sides() {
        let peer = |n: u8| PeerAddr::new(PeerId([n; 32]), "10.0.0.1:1".parse().unwrap());
        let relayed = |n: u8| RelayedSource {
            leaf: peer(n).id,
            via: peer(100 + n),
        };
        let mut hits = vec![hit(vec![peer(1)], vec![relayed(2)])];
        merge(
            &mut hits,
            vec![hit(vec![peer(1), peer(3)], vec![relayed(2), relayed(4)])],
        );
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].sources.len(), 2);
        assert_eq!(hits[0].relayed.len(), 2);
        assert_eq!(hits[0].source_count, 4);
    }

    #[test]
    fn this_node_is_no_source_of_its_own_results() {
        let peer = |n: u8| PeerAddr::new(PeerId([n; 32]), "10.0.0.1:1".parse().unwrap());
        let relayed = RelayedSource {
            leaf: peer(1).id,
            via: peer(9),
        };
        let mut counted = hit(vec![peer(1), peer(2)], vec![relayed]);
        counted.source_count = 7;
        let shown = without_source(counted, peer(1).id);
        assert_eq!(shown.sources, vec![peer(2)]);
        assert!(shown.relayed.is_empty());
        assert_eq!(shown.source_count, 5, "both of our entries taken off the count");
        let untouched = without_source(hit(vec![peer(2)], vec![]), peer(1).id);
        assert_eq!(untouched.source_count, 1);
    }
}
