//! Searching in the simulated network: a query leaves a node, floods
//! through the real routers, each router answers from the files of the
//! nodes it indexes, and hits travel back along the routers' reverse paths.
//!
//! A router's index is whatever nodes have a session with it (its leaves)
//! plus itself; in a flat network, just itself. Which routers could answer
//! is worked out once, when the query is issued, from the holders of the
//! file online at that moment (a snapshot: the flood lasts seconds, churn
//! works in minutes).
//!
//! Capacity: a node processes query messages one at a time at its ladder
//! rate; a message that would wait longer than `max_queue_s` is dropped
//! (Gia's model of an overloaded peer). Hits are forwarded without queueing.

use canopy_common::proto::budget::{Budgets, MAX_SEARCHERS, SEARCHES_PER_SECOND, SEARCH_BURST};
use canopy_common::proto::dynamic::DynamicQuery;
use canopy_common::proto::frame::{encode, MAX_CONTROL_FRAME};
use canopy_common::proto::id::{ContentHash, PeerAddr, PeerId};
use canopy_common::proto::routing::{Action, FloodQuery, Forward, Origin, QueryId};
use canopy_common::proto::search::{FileKind, Hit, Query};

use crate::clock::{seconds, Time, NEVER};
use crate::rng::Rng;
use crate::sim::{node_of, peer, Event, Sim, State, MAX_SESSIONS, NONE};

/// One query in flight, and what happened to it so far.
#[derive(Debug, Clone)]
pub struct QueryState {
    pub file: u32,
    pub origin: u32,
    pub issued: Time,
    pub id: QueryId,
    pub query: Query,
    /// Size of the query's flood frame (TTL and hops fit one byte each, so
    /// every copy has the same size).
    flood_bytes: u64,
    /// Routers that index a holder of the file, with how many holders each.
    pub(crate) index: Vec<(u32, u32)>,
    /// Each live holder and its indexing routers, for recall.
    pub(crate) holders: Vec<(u32, [u32; MAX_SESSIONS])>,
    /// Routers whose hits reached the searcher, in the order they came.
    pub(crate) responders: Vec<u32>,
    pub first_hit: Option<Time>,
    pub outcome: Outcome,
    /// Kept only when tracing: (router, hops) in the order reached.
    pub trace: Option<Vec<(u32, u8)>>,
    /// The search its supernode runs, with dynamic querying.
    pub(crate) dynamic: Option<Box<DynamicQuery>>,
    /// With keyword tables of more than one level: routers near a holder,
    /// by distance ([`Sim::holder_distances`]), taken when it starts.
    pub(crate) near: Option<Vec<(u32, u8)>>,
    pub(crate) dynamic_router: u32,
}

/// A query's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    pub rare: bool,
    /// Routers whose [`Router`](canopy_common::proto::routing::Router)
    /// took the query in (answered it).
    pub routers_reached: u32,
    /// Nodes whose files were searched: reached routers plus their leaves.
    pub nodes_covered: u64,
    /// New routers reached at each hop count (index 0: the first router).
    pub reached_at_hop: [u32; 8],
    pub query_messages: u32,
    /// Of them, copies sent because a neighbour's keyword tables may match.
    pub routed_messages: u32,
    pub duplicates: u32,
    /// Query messages a router refused because its seen-cache was full.
    pub refused: u32,
    pub hit_messages: u32,
    /// Leaf ↔ supernode messages (the query up, the hits down).
    pub leaf_messages: u32,
    pub bytes: u64,
    /// Messages dropped by a full queue, or lost to a node that left.
    pub dropped: u32,
    pub lost: u32,
    /// Holders of the file online when the query was issued.
    pub live_holders: u32,
    /// Of them, those whose router's answer reached the searcher.
    pub found: u32,
    /// Time to the first hit, if any came.
    pub first_hit: Option<Time>,
    /// Dynamic querying: time until the searcher's supernode had the
    /// target number of sources, if it got them.
    pub target_reached: Option<Time>,
    /// The searcher had no supernode to ask.
    pub stranded: bool,
}

impl Outcome {
    pub fn recall(&self) -> Option<f64> {
        (self.live_holders > 0).then(|| self.found as f64 / self.live_holders as f64)
    }

    pub fn messages(&self) -> u32 {
        self.query_messages + self.hit_messages + self.leaf_messages
    }
}

/// Bytes of the messages on the wire, from the real postcard frames.
#[derive(Debug, Clone)]
pub struct WireSizes {
    /// Hits with 0..=20 sources listed.
    hits: Vec<u64>,
}

impl Default for WireSizes {
    fn default() -> Self {
        let source = PeerAddr::new(peer(1), "203.0.113.7:4433".parse().expect("address"));
        let hits = (0..=20)
            .map(|sources| {
                let hit = Hit {
                    hash: ContentHash([7; 32]),
                    size: 4_718_592,
                    name: "Some Artist - Some Title (2003).mp3".into(),
                    kind: FileKind::Audio,
                    sources: vec![source; sources],
                    source_count: sources as u32,
                    relayed: vec![],
                };
                frame_len(&(QueryId([0; 16]), vec![hit]))
            })
            .collect();
        WireSizes { hits }
    }
}

fn frame_len<T: serde::Serialize>(message: &T) -> u64 {
    encode(message, MAX_CONTROL_FRAME).map_or(0, |frame| frame.len() as u64)
}

impl WireSizes {
    pub fn hits(&self, sources: u32) -> u64 {
        self.hits[(sources as usize).min(self.hits.len() - 1)]
    }
}

/// What a router sends back for its holders: the router only looks at
/// whether the list is empty, so one hit stands for the lot.
fn stub_hits(holders: u32) -> Vec<Hit> {
    vec![Hit {
        hash: ContentHash([0; 32]),
        size: 0,
        name: String::new(),
        kind: FileKind::Other,
        sources: Vec::new(),
        source_count: holders,
        relayed: Vec::new(),
    }]
}

impl Sim {
    /// Draws the queries' times (a Poisson process after the warm-up) and
    /// files (rare ones uniformly, the rest by Zipf).
    pub(crate) fn plan_queries(&mut self) {
        let mut rng = Rng::stream(self.seed, 5);
        let q = self.scenario.queries.clone();
        let catalogue = &self.population.catalogue;
        let rare = catalogue.files() - catalogue.popular;
        let mut t = q.warmup_s;
        for index in 0..q.count {
            t += rng.exponential(1.0 / q.rate_per_s);
            let file = if rare > 0 && rng.chance(q.rare_share) {
                catalogue.popular + rng.below(rare as u64) as u32
            } else {
                catalogue.zipf.sample(&mut rng) as u32
            };
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&index.to_le_bytes());
            id[4..12].copy_from_slice(&rng.next_u64().to_le_bytes());
            let issued = seconds(t).min(self.query_phase.1);
            self.queries.push(QueryState::new(file, QueryId(id), issued));
            self.queue.at(issued, Event::Query(index));
        }
    }

    pub(crate) fn start_query(&mut self, q: u32, now: Time) {
        let Some(origin) = self.live.pick(&mut self.churn_rng) else {
            return;
        };
        self.issue(q, origin, now);
    }

    /// Query `q` leaves node `origin` now.
    pub(crate) fn issue(&mut self, q: u32, origin: u32, now: Time) {
        self.snapshot_holders(q, now);
        let state = &mut self.queries[q as usize];
        state.origin = origin;
        state.outcome.rare = self.population.catalogue.is_rare(state.file);
        let window = seconds(self.scenario.queries.window_s);
        self.queue.at(now + window, Event::Finish(q));
        match self.state[origin as usize] {
            State::Router => self.local_query(q, origin, origin, now),
            _ => {
                let mut joined = self.sessions[origin as usize]
                    .iter()
                    .copied()
                    .filter(|&s| s != NONE);
                let supernode = if self.scenario.supernodes.search_via_nearest {
                    joined.min_by_key(|&s| self.latency(origin, s))
                } else {
                    joined.next()
                };
                let Some(supernode) = supernode else {
                    self.queries[q as usize].outcome.stranded = true;
                    return;
                };
                let state = &mut self.queries[q as usize];
                state.outcome.leaf_messages += 1;
                let bytes = frame_len(&state.query);
                state.outcome.bytes += bytes;
                self.account(supernode, bytes, now);
                let at = now + self.latency(origin, supernode);
                self.queue.at(
                    at,
                    Event::LeafQuery {
                        query: q,
                        leaf: origin,
                        supernode,
                    },
                );
            }
        }
    }

    /// The routers whose index lists `holder`'s files (itself, if it
    /// routes; its supernodes, if a leaf; `NONE` in unused places), or
    /// `None` while it is offline.
    pub(crate) fn indexed_by(&self, holder: u32) -> Option<[u32; MAX_SESSIONS]> {
        match self.state[holder as usize] {
            State::Offline => None,
            State::Router => {
                let mut routers = [NONE; MAX_SESSIONS];
                routers[0] = holder;
                Some(routers)
            }
            State::Leaf => Some(self.sessions[holder as usize]),
        }
    }

    /// Which routers index which live holders, right now.
    fn snapshot_holders(&mut self, q: u32, _now: Time) {
        let file = self.queries[q as usize].file;
        let mut index: Vec<(u32, u32)> = Vec::new();
        let mut holders = Vec::new();
        for &holder in self.population.catalogue.holders(file) {
            let Some(indexed_by) = self.indexed_by(holder) else {
                continue;
            };
            holders.push((holder, indexed_by));
            index.extend(indexed_by.iter().filter(|&&r| r != NONE).map(|&r| (r, 1)));
        }
        index.sort_unstable();
        index.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 += later.1;
            }
            same
        });
        let state = &mut self.queries[q as usize];
        state.outcome.live_holders = holders.len() as u32;
        state.index = index;
        state.holders = holders;
        if self.keyword_tables() {
            let near = self.holder_distances(q);
            self.queries[q as usize].near = Some(near);
        }
    }

    /// Takes a message into the node's processing queue: when it will be
    /// done, or `None` if the queue is too long and it is dropped.
    fn admit(&mut self, node: u32, now: Time) -> Option<Time> {
        let wait = self.busy_until[node as usize].saturating_sub(now);
        if wait > seconds(self.scenario.population.max_queue_s) {
            return None;
        }
        let service = (1e6 / self.population.rate(node)).round() as Time;
        let done = now.max(self.busy_until[node as usize]) + service.max(1);
        self.busy_until[node as usize] = done;
        let (start, end) = self.query_phase;
        if now >= start && now <= end {
            self.processed[node as usize] += 1;
        }
        Some(done)
    }

    pub(crate) fn leaf_query(&mut self, q: u32, leaf: u32, supernode: u32, now: Time) {
        if self.state[supernode as usize] != State::Router {
            self.queries[q as usize].outcome.lost += 1;
            return;
        }
        self.local_query(q, leaf, supernode, now);
    }

    /// A query enters the overlay at `router` on behalf of `searcher`.
    fn local_query(&mut self, q: u32, searcher: u32, router: u32, now: Time) {
        let Some(done) = self.admit(router, now) else {
            self.queries[q as usize].outcome.dropped += 1;
            return;
        };
        // The searcher's budget at this supernode, as a real one keeps it.
        let budgets = self
            .search_budgets
            .entry(router)
            .or_insert_with(|| Budgets::new(SEARCHES_PER_SECOND, SEARCH_BURST, MAX_SEARCHERS));
        if !budgets.take(searcher, 1.0, crate::clock::as_duration(done)) {
            self.queries[q as usize].outcome.dropped += 1;
            return;
        }
        let Some(mut state_router) = self.routers[router as usize].take() else {
            return;
        };
        self.fill_scratch(router);
        let (id, query) = {
            let state = &self.queries[q as usize];
            (state.id, state.query.clone())
        };
        let dynamic = self.scenario.router.dynamic;
        // A dynamic search registers the query (for its hits' way back)
        // and sends the probes itself.
        let neighbours: &[PeerId] = if dynamic { &[] } else { &self.scratch };
        let actions = state_router.on_local_query(
            searcher as u64,
            id,
            query,
            neighbours,
            crate::clock::as_duration(done),
        );
        if dynamic {
            // The forwarding cap, as a supernode applies it to a dynamic
            // query: one token at its first copy; refused, the search is
            // answered from this router's index only.
            let alone = self.neighbours[router as usize].is_empty();
            if alone || state_router.may_forward(crate::clock::as_duration(done)) {
                self.start_dynamic(q, router, done);
            }
        }
        self.carry_out(q, router, 0, actions, &mut state_router, done);
        self.routers[router as usize] = Some(state_router);
    }

    pub(crate) fn flood(&mut self, q: u32, from: u32, to: u32, ttl: u8, hops: u8, now: Time) {
        if self.state[to as usize] != State::Router {
            self.queries[q as usize].outcome.lost += 1;
            return;
        }
        let Some(done) = self.admit(to, now) else {
            self.queries[q as usize].outcome.dropped += 1;
            return;
        };
        let Some(mut router) = self.routers[to as usize].take() else {
            return;
        };
        self.fill_scratch(to);
        let message = {
            let state = &self.queries[q as usize];
            FloodQuery {
                id: state.id,
                ttl,
                hops,
                query: state.query.clone(),
            }
        };
        let tables = self.keyword_tables();
        if tables {
            let forwarded_ttl = ttl.min(router.config().max_ttl).saturating_sub(1);
            self.fill_decisions(q, to, forwarded_ttl, done);
        }
        let (scratch, decisions) = (&self.scratch, &self.decisions);
        let may_match = |to: PeerId, _: &Query, _: u8| {
            scratch
                .iter()
                .position(|p| *p == to)
                .map_or(Forward::Broadcast, |at| decisions[at])
        };
        let actions = router.on_query_with(
            Origin::Neighbour(peer(from)),
            message,
            &self.scratch,
            tables.then_some(&may_match as &dyn Fn(PeerId, &Query, u8) -> Forward),
            crate::clock::as_duration(done),
        );
        // The router answers a new query at least with AnswerLocally; it
        // returns nothing for a duplicate, or when its seen-cache is full
        // (then it still holds max_entries ids). Cheaper than asking its
        // drop counters, which are a hash map.
        if actions.is_empty() {
            if router.len() < router.config().max_entries {
                self.queries[q as usize].outcome.duplicates += 1;
            } else {
                self.queries[q as usize].outcome.refused += 1;
            }
        }
        self.carry_out(q, to, hops, actions, &mut router, done);
        self.routers[to as usize] = Some(router);
    }

    fn fill_scratch(&mut self, node: u32) {
        self.scratch.clear();
        self.scratch
            .extend(self.neighbours[node as usize].iter().map(|&n| peer(n)));
    }

    /// Does what the router said, at time `done`.
    fn carry_out(
        &mut self,
        q: u32,
        node: u32,
        hops: u8,
        actions: Vec<Action>,
        router: &mut canopy_common::proto::routing::Router,
        done: Time,
    ) {
        let now = crate::clock::as_duration(done);
        for action in actions {
            match action {
                Action::AnswerLocally { id, .. } => {
                    let leaves = self.leaves[node as usize].len() as u64;
                    let state = &mut self.queries[q as usize];
                    let outcome = &mut state.outcome;
                    outcome.routers_reached += 1;
                    outcome.nodes_covered += 1 + leaves;
                    outcome.reached_at_hop[(hops as usize).min(7)] += 1;
                    if let Some(trace) = &mut state.trace {
                        trace.push((node, hops));
                    }
                    let holders = match state.index.binary_search_by_key(&node, |&(r, _)| r) {
                        Ok(at) => state.index[at].1,
                        Err(_) => 0,
                    };
                    if holders > 0 {
                        let back = router.on_local_hits(id, stub_hits(holders), now);
                        self.send_hits(q, node, node, back, done);
                    }
                }
                Action::Forward { to, query } => {
                    let routed = query.ttl < self.table_levels();
                    self.send_flood(q, node, node_of(&to), query.ttl, query.hops, routed, done);
                }
                Action::Deliver { .. } => {}
            }
        }
    }

    /// Sends one copy of query `q` from `from` to `to`, counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_flood(
        &mut self,
        q: u32,
        from: u32,
        to: u32,
        ttl: u8,
        hops: u8,
        routed: bool,
        done: Time,
    ) {
        let state = &mut self.queries[q as usize];
        state.outcome.query_messages += 1;
        state.outcome.routed_messages += u32::from(routed);
        state.outcome.bytes += state.flood_bytes;
        let bytes = state.flood_bytes;
        self.account(from, bytes, done);
        self.account(to, bytes, done);
        let at = done + self.latency(from, to);
        self.queue.at(
            at,
            Event::Flood {
                query: q,
                from,
                to,
                ttl,
                hops,
            },
        );
    }

    /// Sends hits the way the router said: to a neighbour, or home.
    fn send_hits(&mut self, q: u32, node: u32, responder: u32, actions: Vec<Action>, done: Time) {
        for action in actions {
            let Action::Deliver { to, hits, .. } = action else {
                continue;
            };
            let sources: u32 = hits.iter().map(|hit| hit.source_count).sum();
            if sources == 0 {
                continue;
            }
            let bytes = self.sizes().hits(sources);
            match to {
                Origin::Neighbour(next) => {
                    let next = node_of(&next);
                    let outcome = &mut self.queries[q as usize].outcome;
                    outcome.hit_messages += 1;
                    outcome.bytes += bytes;
                    self.account(node, bytes, done);
                    self.account(next, bytes, done);
                    let at = done + self.latency(node, next);
                    self.queue.at(
                        at,
                        Event::Hits {
                            query: q,
                            responder,
                            from: node,
                            to: next,
                        },
                    );
                }
                Origin::Local(searcher) => {
                    if self.queries[q as usize].dynamic_router == node {
                        self.dynamic_results(q, sources, done);
                    }
                    let searcher = searcher as u32;
                    if searcher != node {
                        let outcome = &mut self.queries[q as usize].outcome;
                        outcome.leaf_messages += 1;
                        outcome.bytes += bytes;
                        self.account(node, bytes, done);
                    }
                    let at = done + self.latency(node, searcher);
                    self.queue.at(at, Event::HitsHome { query: q, responder });
                }
            }
        }
    }

    /// Counts search bytes a node sent or received during the query phase.
    fn account(&mut self, node: u32, bytes: u64, now: Time) {
        let (start, end) = self.query_phase;
        if now >= start && now <= end {
            self.traffic[node as usize] += bytes;
        }
    }

    fn sizes(&mut self) -> &WireSizes {
        self.tally.sizes.get_or_insert_with(WireSizes::default)
    }

    pub(crate) fn hits(&mut self, q: u32, responder: u32, from: u32, to: u32, now: Time) {
        if self.state[to as usize] != State::Router {
            self.queries[q as usize].outcome.lost += 1;
            return;
        }
        let Some(mut router) = self.routers[to as usize].take() else {
            return;
        };
        let holders = {
            let state = &self.queries[q as usize];
            match state.index.binary_search_by_key(&responder, |&(r, _)| r) {
                Ok(at) => state.index[at].1,
                Err(_) => 1,
            }
        };
        let id = self.queries[q as usize].id;
        let back = router.on_hits(peer(from), id, stub_hits(holders), crate::clock::as_duration(now));
        self.routers[to as usize] = Some(router);
        self.send_hits(q, to, responder, back, now);
    }

    pub(crate) fn hits_home(&mut self, q: u32, responder: u32, now: Time) {
        let state = &mut self.queries[q as usize];
        if self.state[state.origin as usize] == State::Offline {
            state.outcome.lost += 1;
            return;
        }
        if state.first_hit.is_none() {
            state.first_hit = Some(now - state.issued);
        }
        state.responders.push(responder);
    }

    /// Counts which live holders were found, and frees the query's lists.
    pub(crate) fn finish_query(&mut self, q: u32) {
        let (start, end) = self.query_phase;
        let measured = {
            let issued = self.queries[q as usize].issued;
            issued >= start && issued <= end && issued != NEVER
        };
        if measured && self.scenario.nat.is_some() {
            self.record_transfers(q);
        }
        let state = &mut self.queries[q as usize];
        state.responders.sort_unstable();
        state.responders.dedup();
        let responders = std::mem::take(&mut state.responders);
        state.outcome.found = state
            .holders
            .iter()
            .filter(|(_, routers)| {
                routers
                    .iter()
                    .any(|&r| r != NONE && responders.binary_search(&r).is_ok())
            })
            .count() as u32;
        state.outcome.first_hit = state.first_hit;
        state.dynamic = None;
        state.near = None;
        state.index = Vec::new();
        state.holders = Vec::new();
        if measured {
            self.tally.outcomes.push(state.outcome);
        }
    }

    /// Routers a traced query reached, with their hop counts.
    pub fn trace(&self, q: u32) -> Option<&[(u32, u8)]> {
        self.queries.get(q as usize)?.trace.as_deref()
    }
}

impl QueryState {
    pub fn new(file: u32, id: QueryId, issued: Time) -> Self {
        // Named like a tagged music file, so the frames have a realistic length.
        let query = Query::words(format!("artist{} title{}", file % 977, file));
        let flood_bytes = frame_len(&FloodQuery {
            id,
            ttl: 7,
            hops: 0,
            query: query.clone(),
        });
        QueryState {
            file,
            origin: 0,
            issued,
            id,
            query,
            flood_bytes,
            index: Vec::new(),
            holders: Vec::new(),
            responders: Vec::new(),
            first_hit: None,
            near: None,
            outcome: Outcome::default(),
            trace: None,
            dynamic: None,
            dynamic_router: NONE,
        }
    }
}
