//! Searches over the overlay: routing a query (the sans-IO [`Router`]
//! decides, this carries its actions out), our leaves' searches as a flood
//! or a [`DynamicQuery`], and hits back to the searcher.

use super::*;
use crate::votes::unix_now;
use canopy_common::proto::credence::SignedVote;
use canopy_common::proto::search::FileTags;

impl Overlay {
    /// Hands a query to the router, with the keyword tables' say on each
    /// copy when keyword routing is on.
    pub(super) fn route_query(&self, from: Origin, query: FloodQuery, now: Duration) -> Vec<Action> {
        let neighbours = self.neighbour_ids();
        // The tables' say on each copy, decided before the router's lock is
        // taken (no lock is held while another is taken): for the TTL a
        // copy carries on arrival, as the router computes it.
        let arriving_ttl = query.ttl.min(self.config.router.max_ttl).saturating_sub(1);
        let decisions: Option<HashMap<PeerId, Forward>> = self.config.keyword_routing.then(|| {
            let horizon = self.index.horizon().locked();
            neighbours
                .iter()
                .map(|&to| (to, horizon.decide(to, &query.query, arriving_ttl)))
                .collect()
        });
        let mut state = self.state();
        let router = &mut state.router;
        let actions = match &decisions {
            Some(decisions) => {
                let decide = |to: PeerId, _: &Query, ttl: u8| {
                    debug_assert_eq!(ttl, arriving_ttl, "the router's TTL rule changed");
                    decisions.get(&to).copied().unwrap_or(Forward::Broadcast)
                };
                router.on_query_with(from, query, &neighbours, Some(&decide), now)
            }
            None => router.on_query(from, query, &neighbours, now),
        };
        self.stats
            .queries_capped
            .store(router.dropped(Dropped::Capped), Ordering::Relaxed);
        let Forwarding {
            broadcast,
            routed,
            pruned,
        } = router.forwarding();
        self.stats.copies_broadcast.store(broadcast, Ordering::Relaxed);
        self.stats.copies_routed.store(routed, Ordering::Relaxed);
        self.stats.copies_pruned.store(pruned, Ordering::Relaxed);
        actions
    }

    /// Router counts of query copies by how they were chosen.
    pub fn forwarding(&self) -> Forwarding {
        self.state().router.forwarding()
    }

    /// Whether one more query may be passed on now (the router's cap).
    pub(super) fn may_forward(&self) -> bool {
        let router = &mut self.state().router;
        let may = router.may_forward(self.now());
        self.stats
            .queries_capped
            .store(router.dropped(Dropped::Capped), Ordering::Relaxed);
        may
    }

    /// Carries out the router's decisions (the forwarding cap already
    /// applied by the router).
    pub(super) fn execute(self: &Arc<Self>, actions: Vec<Action>) {
        if actions.iter().any(|a| matches!(a, Action::Forward { .. })) {
            self.stats.queries_forwarded.fetch_add(1, Ordering::Relaxed);
        }
        for action in actions {
            match action {
                Action::AnswerLocally { id, query } => {
                    self.stats.queries_answered.fetch_add(1, Ordering::Relaxed);
                    let overlay = self.clone();
                    tokio::spawn(async move {
                        let index = overlay.index.clone();
                        let hits = tokio::task::spawn_blocking(move || index.search(&query))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .unwrap_or_default();
                        overlay
                            .stats
                            .hits_found
                            .fetch_add(hits.len() as u64, Ordering::Relaxed);
                        let files: Vec<_> = (hits.iter().map(|hit| hit.hash))
                            .take(MAX_HASHES_PER_NOTES_ASK)
                            .collect();
                        let actions = overlay.state().router.on_local_hits(id, hits, overlay.now());
                        overlay.execute(actions);
                        // After the hits, what we know of their files (votes
                        // on them, their tags), by the same way.
                        let votes = overlay.votes.locked().votes_for(&files);
                        let tags = overlay.index.tags_for(&files);
                        if !votes.is_empty() || !tags.is_empty() {
                            overlay.pass_notes_on(id, votes, tags, overlay.now());
                        }
                    });
                }
                Action::Forward { to, query } => {
                    self.send_to(to, OverlayMessage::Query(query));
                }
                Action::Deliver {
                    to: Origin::Neighbour(peer),
                    id,
                    hits,
                } => {
                    for hits in batches(&hits, MAX_CONTROL_FRAME) {
                        self.send_to(peer, OverlayMessage::Hits { id, hits });
                    }
                }
                Action::Deliver {
                    to: Origin::Local(handle),
                    hits,
                    ..
                } => {
                    let search = self.state().searches.get(&handle).cloned();
                    if let Some(search) = search {
                        let _ = search.try_send(hits);
                    }
                }
            }
        }
    }

    /// Sends what we know of the files of hits for query `id` (`votes`
    /// and `tags`) where the query's hits go: on to the neighbour it came
    /// from (if that link carries notes), or, for our own leaf's search,
    /// into our caches, each vote verified and each file's tags checked,
    /// for the leaf to ask for
    /// ([`Request::NotesFor`](canopy_common::proto::Request::NotesFor)).
    /// Notes for a query whose route is forgotten are dropped.
    pub(super) fn pass_notes_on(
        &self,
        id: QueryId,
        votes: Vec<SignedVote>,
        tags: Vec<FileTags>,
        now: Duration,
    ) {
        let origin = self.state().router.origin_of(id, now);
        match origin {
            Some(Origin::Local(_)) => {
                let kept = self.votes.locked().relay_in(&votes, unix_now());
                self.stats
                    .votes_relayed_in
                    .fetch_add(u64::from(kept), Ordering::Relaxed);
                self.tags.locked().relay_in(&tags);
            }
            Some(Origin::Neighbour(peer)) => {
                let carries = self.state().neighbours.get(&peer).is_some_and(|n| n.notes);
                if carries {
                    self.send_to(peer, OverlayMessage::HitNotes { id, votes, tags });
                }
            }
            None => {}
        }
    }

    /// Runs one of our leaves' searches across the overlay, writing hits to
    /// `send` as they arrive, then [`Response::EndOfHits`]. With keyword
    /// routing on and no TTL set by the searcher, it is a dynamic query;
    /// otherwise one flood with the query's TTL.
    pub async fn search(self: &Arc<Self>, query: Query, send: &mut SendStream) -> Result<(), NetError> {
        self.stats.searches.fetch_add(1, Ordering::Relaxed);
        let handle = self.next_search.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        self.state().searches.insert(handle, tx);
        let result = if self.config.keyword_routing && query.ttl.is_none() {
            self.dynamic_search(handle, query, rx, send).await
        } else {
            self.flood_search(handle, query, rx, send).await
        };
        self.state().searches.remove(&handle);
        result
    }

    /// One flood at the query's TTL, collecting hits for the search window.
    pub(super) async fn flood_search(
        self: &Arc<Self>,
        handle: u64,
        query: Query,
        mut rx: mpsc::Receiver<Vec<Hit>>,
        send: &mut SendStream,
    ) -> Result<(), NetError> {
        let max_hits = usize::from(query.max_hits.clamp(1, MAX_HITS));
        let router = self.config.router.clone();
        let flood = FloodQuery {
            id: QueryId(random_bytes()),
            ttl: query.ttl.unwrap_or(router.default_ttl).min(router.max_ttl),
            hops: 0,
            query,
        };
        // Alone in the network, or with TTL 0, our own answer is all there is.
        let alone = self.neighbour_ids().is_empty() || flood.ttl == 0;
        let actions = self.route_query(Origin::Local(handle), flood, self.now());
        self.execute(actions);
        let deadline = tokio::time::Instant::now() + self.config.search_window;
        let mut sent = 0;
        loop {
            tokio::select! {
                hits = rx.recv() => {
                    let Some(hits) = hits else { break };
                    if pass_hits(send, hits, &mut sent, max_hits).await? || alone {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        write_frame(send, &Response::EndOfHits).await
    }

    /// A dynamic query: our own index answers (the router holds the
    /// query's id with no neighbours, so every hit for it comes back
    /// here), then [`DynamicQuery`] says which neighbour to ask next and
    /// how far, from the distinct files found so far and each neighbour's
    /// keyword tables and degree.
    pub(super) async fn dynamic_search(
        self: &Arc<Self>,
        handle: u64,
        query: Query,
        mut rx: mpsc::Receiver<Vec<Hit>>,
        send: &mut SendStream,
    ) -> Result<(), NetError> {
        let max_hits = usize::from(query.max_hits.clamp(1, MAX_HITS));
        let id = QueryId(random_bytes());
        let started = tokio::time::Instant::now();
        let now = self.now();
        let actions = self.state().router.on_local_query(
            handle,
            id,
            Query {
                ttl: None,
                ..query.clone()
            },
            &[],
            now,
        );
        self.execute(actions);
        let neighbours = self.dynamic_neighbours(&query);
        let alone = neighbours.is_empty();
        let mut config = self.config.dynamic.clone();
        config.max_ttl = config.max_ttl.min(self.config.router.max_ttl);
        let (mut search, steps) = DynamicQuery::start(config, neighbours, now);
        // Alone in the network, our own answer is all there is.
        // Whether this search may pass the query on at all: decided, under
        // `max_forwarded_per_second` like a flood, at its first copy.
        let mut allowed = None;
        let mut done = self.probe(id, &query, steps, &mut allowed) || alone;
        let mut seen: HashSet<ResultKey> = HashSet::new();
        let mut sent = 0;
        // Our own index's answer is waited for even if there is nobody to ask.
        let mut own_answer = false;
        while !(done && own_answer) {
            let wakeup = search
                .next_wakeup()
                .map_or(started + self.config.dynamic.time_limit, |at| {
                    started + at.saturating_sub(now)
                });
            tokio::select! {
                hits = rx.recv() => {
                    let Some(hits) = hits else { break };
                    own_answer = true;
                    let fresh = hits
                        .iter()
                        .flat_map(result_keys)
                        .filter(|key| seen.insert(*key))
                        .count();
                    if pass_hits(send, hits, &mut sent, max_hits).await? {
                        break;
                    }
                    let steps = search.on_results(fresh as u32, self.now());
                    done |= self.probe(id, &query, steps, &mut allowed);
                }
                _ = tokio::time::sleep_until(wakeup) => {
                    own_answer = true;
                    let steps = search.on_tick(self.now());
                    done |= self.probe(id, &query, steps, &mut allowed);
                }
            }
        }
        write_frame(send, &Response::EndOfHits).await
    }

    /// Our neighbours as a dynamic query sees them, nearest round trip
    /// first: among neighbours whose tables put a match equally near, the
    /// query asks them in this order.
    pub(super) fn dynamic_neighbours(&self, query: &Query) -> Vec<dynamic::Neighbour> {
        let mut linked: Vec<(PeerId, u16, Duration)> = self
            .state()
            .neighbours
            .iter()
            .map(|(id, n)| (*id, n.degree, n.connection.rtt()))
            .collect();
        linked.sort_by_key(|&(_, _, rtt)| rtt);
        let horizon = self.index.horizon().locked();
        linked
            .into_iter()
            .map(|(peer, degree, _)| dynamic::Neighbour {
                peer,
                degree: u32::from(degree),
                reach: horizon.reach(&peer, query),
            })
            .collect()
    }

    /// Sends a dynamic query's probes; true once it has finished. The
    /// first probe of a search takes one token of the forwarding cap
    /// (`allowed` remembers the answer): a search over the cap is
    /// answered from our index only, as a flood over it would be.
    pub(super) fn probe(
        &self,
        id: QueryId,
        query: &Query,
        steps: Vec<Step>,
        allowed: &mut Option<bool>,
    ) -> bool {
        let mut finished = false;
        for step in steps {
            match step {
                Step::Probe { to, ttl } => {
                    let may = *allowed.get_or_insert_with(|| {
                        let may = self.may_forward();
                        if may {
                            self.stats.queries_forwarded.fetch_add(1, Ordering::Relaxed);
                        }
                        may
                    });
                    if !may {
                        // Local only: nothing more to wait for.
                        finished = true;
                        continue;
                    }
                    let copy = FloodQuery {
                        id,
                        ttl,
                        hops: 1,
                        query: Query {
                            ttl: None,
                            ..query.clone()
                        },
                    };
                    if self.send_to(to, OverlayMessage::Query(copy)) {
                        self.stats.probes_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Step::Finish(_) => finished = true,
            }
        }
        finished
    }
}

/// One result of a search, as dynamic querying counts them: a file at one
/// source (Gnutella counted a file once per host that has it, so a popular
/// file's many copies end a search early and a rare file's one does not).
type ResultKey = (canopy_common::proto::ContentHash, Option<PeerId>);

fn result_keys(hit: &Hit) -> Vec<ResultKey> {
    let mut keys: Vec<ResultKey> = hit
        .sources
        .iter()
        .map(|source| (hit.hash, Some(source.id)))
        .chain(hit.relayed.iter().map(|relayed| (hit.hash, Some(relayed.leaf))))
        .collect();
    if keys.is_empty() {
        keys.push((hit.hash, None));
    }
    keys
}

/// Passes hits on to the searcher, up to `max_hits` in all (`sent` so
/// far); true once that many were sent. One answer can hold up to 200
/// hits: more than a frame.
async fn pass_hits(
    send: &mut SendStream,
    mut hits: Vec<Hit>,
    sent: &mut usize,
    max_hits: usize,
) -> Result<bool, NetError> {
    hits.truncate(max_hits - *sent);
    *sent += hits.len();
    for hits in batches(&hits, MAX_CONTROL_FRAME) {
        write_frame(send, &Response::Hits { hits }).await?;
    }
    Ok(*sent >= max_hits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::dynamic::Reach;

    fn neighbour(n: u8, reach: Reach) -> dynamic::Neighbour {
        dynamic::Neighbour {
            peer: PeerId([n; 32]),
            degree: 3,
            reach,
        }
    }

    fn probes(config: DynamicConfig, neighbours: Vec<dynamic::Neighbour>) -> Vec<(u8, u8)> {
        let (_, steps) = DynamicQuery::start(config, neighbours, Duration::ZERO);
        steps
            .into_iter()
            .filter_map(|step| match step {
                Step::Probe { to, ttl } => Some((to.0[0], ttl)),
                Step::Finish(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_first_probe_goes_as_deep_as_the_nearest_match_and_no_further_out() {
        // DynamicQuery's own rules, with the supernode's settings.
        let config = default_dynamic();
        // A rare file 3 hops past neighbour 2; nothing within 4 past 1.
        let rare = vec![neighbour(1, Reach::Beyond(4)), neighbour(2, Reach::Within(3))];
        assert_eq!(probes(config.clone(), rare), [(2, 3)]);
        // A popular one right behind everyone: the usual narrow probe.
        let popular = (1..=5).map(|n| neighbour(n, Reach::Within(0))).collect();
        assert_eq!(probes(config.clone(), popular), [(1, 1), (2, 1), (3, 1)]);
        // No tables: as configured.
        let unknown = (1..=2).map(|n| neighbour(n, Reach::Unknown)).collect();
        assert_eq!(probes(config, unknown), [(1, 1), (2, 1)]);
    }

    #[test]
    fn a_result_is_a_file_at_one_source() {
        let hit = |hash: u8, sources: &[u8]| Hit {
            hash: canopy_common::proto::ContentHash([hash; 32]),
            size: 1,
            name: "x".into(),
            kind: canopy_common::proto::FileKind::Other,
            sources: sources
                .iter()
                .map(|&n| PeerAddr::new(PeerId([n; 32]), ([127, 0, 0, 1], 1).into()))
                .collect(),
            source_count: sources.len() as u32,
            relayed: vec![],
        };
        let mut seen = HashSet::new();
        let count = |seen: &mut HashSet<ResultKey>, hits: &[Hit]| {
            hits.iter()
                .flat_map(result_keys)
                .filter(|key| seen.insert(*key))
                .count()
        };
        assert_eq!(count(&mut seen, &[hit(1, &[1, 2]), hit(2, &[])]), 3);
        assert_eq!(count(&mut seen, &[hit(1, &[2, 3])]), 1);
    }
}
