//! Searches asked by a running node on its user's behalf (the desktop app):
//! a leaf asks the supernodes it is joined to; a supernode answers from its
//! own index first, then asks a neighbour supernode, which floods the query.

use std::sync::Arc;

use canopy_common::net::Endpoint;
use canopy_common::proto::{Hit, PeerAddr, Query};
use tokio::sync::watch;

use crate::cli::search::{ask_first, merge, Way};
use crate::leaf::{LeafStatus, SessionLinks};
use crate::serve::ServeContext;

/// What a running node needs to search the network.
#[derive(Clone)]
pub struct Searcher {
    pub endpoint: Endpoint,
    pub context: Arc<ServeContext>,
    pub leaf_status: watch::Receiver<LeafStatus>,
    /// The leaf's live sessions, asked first, nearest first.
    pub links: SessionLinks,
    /// Supernodes known at start (flags and host cache), asked when no
    /// session is up.
    pub known: Vec<PeerAddr>,
}

impl Searcher {
    /// Runs `query`, calling `on_new` with each result (by content hash)
    /// as it first arrives; returns every result, sources merged.
    pub async fn search(
        &self,
        query: &Query,
        on_new: &mut (dyn FnMut(&Hit) + Send),
    ) -> anyhow::Result<Vec<Hit>> {
        let mut hits: Vec<Hit> = Vec::new();
        let ways: Vec<Way> = match self.context.supernode() {
            Some(supernode) => {
                let local = supernode.search(query.clone()).await;
                for hit in &local {
                    on_new(hit);
                }
                merge(&mut hits, local);
                let neighbours = supernode.overlay().map(|o| o.neighbours()).unwrap_or_default();
                if neighbours.is_empty() {
                    return Ok(hits);
                }
                neighbours.into_iter().map(Way::Dial).collect()
            }
            None => {
                // Over a live session first, nearest first: no handshake to
                // wait for; then anew.
                let joined = self.leaf_status.borrow().supernodes();
                let dial = if joined.is_empty() {
                    self.known.clone()
                } else {
                    joined
                };
                let sessions = self.links.nearest_first().into_iter();
                sessions
                    .map(|(supernode, connection)| Way::Over(supernode, connection))
                    .chain(dial.into_iter().map(Way::Dial))
                    .collect()
            }
        };
        let seen: Vec<_> = hits.iter().map(|hit| hit.hash).collect();
        let mut fresh = |hit: &Hit| {
            if !seen.contains(&hit.hash) {
                on_new(hit)
            }
        };
        match ask_first(&self.endpoint, ways, query, &mut fresh).await {
            Ok((more, _)) => merge(&mut hits, more),
            // What our own index found still counts.
            Err(error) if !hits.is_empty() => tracing::debug!(%error, "neighbours did not answer"),
            Err(error) => return Err(error),
        }
        Ok(hits)
    }
}
