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
//!
//! With dynamic querying the searcher's supernode runs a real
//! [`DynamicQuery`]: it asks one neighbour at a time, as deep as the
//! keyword tables ([`crate::qrp`]) and the results so far say.
//!
//! [`Search`] holds all of it (queries, routers, budgets, the tables'
//! model); it reads and changes the network only through the [`World`]
//! it is handed.

use std::collections::HashMap;

use canopy_common::proto::budget::{Budgets, MAX_SEARCHERS, SEARCHES_PER_SECOND, SEARCH_BURST};
use canopy_common::proto::dynamic::{DynamicQuery, Finish, Neighbour, Reach, Step};
use canopy_common::proto::frame::{encode, MAX_CONTROL_FRAME};
use canopy_common::proto::id::{ContentHash, PeerAddr, PeerId};
use canopy_common::proto::routing::{Action, FloodQuery, Forward, Origin, QueryId, Router, RouterConfig};
use canopy_common::proto::search::{FileKind, Hit, Query};

use crate::clock::{as_duration, seconds, Time, NEVER};
use crate::metrics::Outcome;
use crate::qrp::{dynamic_config, TableModel};
use crate::rng::Rng;
use crate::traversal::{self, Transfer};
use crate::world::{node_of, peer, Event, State, World, MAX_SESSIONS, NONE};

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
    index: Vec<(u32, u32)>,
    /// Each live holder and its indexing routers, for recall.
    holders: Vec<(u32, [u32; MAX_SESSIONS])>,
    /// Routers whose hits reached the searcher, in the order they came.
    responders: Vec<u32>,
    pub first_hit: Option<Time>,
    pub outcome: Outcome,
    /// Kept only when tracing: (router, hops) in the order reached.
    pub trace: Option<Vec<(u32, u8)>>,
    /// The search its supernode runs, with dynamic querying.
    dynamic: Option<Box<DynamicQuery>>,
    /// With keyword tables of more than one level: routers near a holder,
    /// by distance ([`TableModel::holder_distances`]), taken when it starts.
    near: Option<Vec<(u32, u8)>>,
    dynamic_router: u32,
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

/// Every query of the run and the routers that carry them.
pub struct Search {
    pub queries: Vec<QueryState>,
    router_config: RouterConfig,
    /// Each routing node's real router (`None` for the others: leaves do
    /// not route, and a departed node's router is dropped).
    routers: Vec<Option<Box<Router>>>,
    /// Each router's per-searcher search budgets, as a supernode keeps
    /// them (made on a router's first search).
    budgets: HashMap<u32, Budgets<u32>>,
    /// When the node's processing queue empties.
    busy_until: Vec<Time>,
    /// Scratch list of neighbour ids handed to the router.
    scratch: Vec<PeerId>,
    /// Routing decisions for `scratch`, when keyword routing is on.
    decisions: Vec<Forward>,
    sizes: WireSizes,
    /// Keyword tables, modelled (`None`: plain flooding).
    pub tables: Option<TableModel>,
    /// With home routers modelled: every (downloader, source) pair of the
    /// query phase and the way it got through.
    pub transfers: Vec<Transfer>,
}

impl Search {
    /// No query yet, and no router; the tables' model if the scenario
    /// routes by keyword tables.
    pub fn new(world: &World, router_config: RouterConfig) -> Self {
        let n = world.population.nodes.len();
        Search {
            queries: Vec::new(),
            router_config,
            routers: (0..n).map(|_| None).collect(),
            budgets: HashMap::new(),
            busy_until: vec![0; n],
            scratch: Vec::new(),
            decisions: Vec::new(),
            sizes: WireSizes::default(),
            tables: world
                .scenario
                .router
                .keyword_tables
                .then(|| TableModel::new(world)),
            transfers: Vec::new(),
        }
    }

    /// `node` starts routing: it gets a fresh router.
    pub fn router_up(&mut self, node: u32) {
        self.routers[node as usize] = Some(Box::new(Router::new(self.router_config.clone())));
    }

    /// `node` stops routing: its router and budgets go.
    pub fn router_down(&mut self, node: u32) {
        self.routers[node as usize] = None;
        self.budgets.remove(&node);
    }

    /// Levels of table each router sends (0 without keyword routing).
    fn table_levels(&self) -> u8 {
        self.tables.as_ref().map_or(0, TableModel::levels)
    }

    /// Draws the queries' times (a Poisson process after the warm-up) and
    /// files (rare ones uniformly, the rest by Zipf).
    pub fn plan(&mut self, world: &mut World) {
        let mut rng = Rng::stream(world.seed, 5);
        let q = world.scenario.queries.clone();
        let catalogue = &world.population.catalogue;
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
            let issued = seconds(t).min(world.tally.phase.1);
            self.queries.push(QueryState::new(file, QueryId(id), issued));
            world.queue.at(issued, Event::Query(index));
        }
    }

    pub fn start_query(&mut self, world: &mut World, q: u32, now: Time) {
        let Some(origin) = world.live.pick(&mut world.churn_rng) else {
            return;
        };
        self.issue(world, q, origin, now);
    }

    /// Query `q` leaves node `origin` now.
    pub fn issue(&mut self, world: &mut World, q: u32, origin: u32, now: Time) {
        self.snapshot_holders(world, q);
        let state = &mut self.queries[q as usize];
        state.origin = origin;
        state.outcome.rare = world.population.catalogue.is_rare(state.file);
        let window = seconds(world.scenario.queries.window_s);
        world.queue.at(now + window, Event::Finish(q));
        match world.state[origin as usize] {
            State::Router => self.local_query(world, q, origin, origin, now),
            _ => {
                let mut joined = world.sessions[origin as usize]
                    .iter()
                    .copied()
                    .filter(|&s| s != NONE);
                let supernode = if world.scenario.supernodes.search_via_nearest {
                    joined.min_by_key(|&s| world.latency(origin, s))
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
                world.tally.account(supernode, bytes, now);
                let at = now + world.latency(origin, supernode);
                world.queue.at(
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

    /// Which routers index which live holders, right now.
    fn snapshot_holders(&mut self, world: &World, q: u32) {
        let file = self.queries[q as usize].file;
        let mut index: Vec<(u32, u32)> = Vec::new();
        let mut holders = Vec::new();
        for &holder in world.population.catalogue.holders(file) {
            let Some(indexed_by) = world.indexed_by(holder) else {
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
        let near = self.tables.as_ref().map(|tables| {
            let indexing: Vec<u32> = index.iter().map(|&(router, _)| router).collect();
            tables.holder_distances(world, &indexing)
        });
        let state = &mut self.queries[q as usize];
        state.outcome.live_holders = holders.len() as u32;
        state.index = index;
        state.holders = holders;
        if let Some(near) = near {
            state.near = Some(near);
        }
    }

    /// Takes a message into the node's processing queue: when it will be
    /// done, or `None` if the queue is too long and it is dropped.
    fn admit(&mut self, world: &mut World, node: u32, now: Time) -> Option<Time> {
        let wait = self.busy_until[node as usize].saturating_sub(now);
        if wait > seconds(world.scenario.population.max_queue_s) {
            return None;
        }
        let service = (1e6 / world.population.rate(node)).round() as Time;
        let done = now.max(self.busy_until[node as usize]) + service.max(1);
        self.busy_until[node as usize] = done;
        let (start, end) = world.tally.phase;
        if now >= start && now <= end {
            world.tally.processed[node as usize] += 1;
        }
        Some(done)
    }

    pub fn leaf_query(&mut self, world: &mut World, q: u32, leaf: u32, supernode: u32, now: Time) {
        if world.state[supernode as usize] != State::Router {
            self.queries[q as usize].outcome.lost += 1;
            return;
        }
        self.local_query(world, q, leaf, supernode, now);
    }

    /// A query enters the overlay at `router` on behalf of `searcher`.
    fn local_query(&mut self, world: &mut World, q: u32, searcher: u32, router: u32, now: Time) {
        let Some(done) = self.admit(world, router, now) else {
            self.queries[q as usize].outcome.dropped += 1;
            return;
        };
        // The searcher's budget at this supernode, as a real one keeps it.
        let budgets = self
            .budgets
            .entry(router)
            .or_insert_with(|| Budgets::new(SEARCHES_PER_SECOND, SEARCH_BURST, MAX_SEARCHERS));
        if !budgets.take(searcher, 1.0, as_duration(done)) {
            self.queries[q as usize].outcome.dropped += 1;
            return;
        }
        let Some(mut state_router) = self.routers[router as usize].take() else {
            return;
        };
        self.fill_scratch(world, router);
        let (id, query) = {
            let state = &self.queries[q as usize];
            (state.id, state.query.clone())
        };
        let dynamic = world.scenario.router.dynamic;
        // A dynamic search registers the query (for its hits' way back)
        // and sends the probes itself.
        let neighbours: &[PeerId] = if dynamic { &[] } else { &self.scratch };
        let actions = state_router.on_local_query(searcher as u64, id, query, neighbours, as_duration(done));
        if dynamic {
            // The forwarding cap, as a supernode applies it to a dynamic
            // query: one token at its first copy; refused, the search is
            // answered from this router's index only.
            let alone = world.neighbours[router as usize].is_empty();
            if alone || state_router.may_forward(as_duration(done)) {
                self.start_dynamic(world, q, router, done);
            }
        }
        self.carry_out(world, q, router, 0, actions, &mut state_router, done);
        self.routers[router as usize] = Some(state_router);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn flood(&mut self, world: &mut World, q: u32, from: u32, to: u32, ttl: u8, hops: u8, now: Time) {
        if world.state[to as usize] != State::Router {
            self.queries[q as usize].outcome.lost += 1;
            return;
        }
        let Some(done) = self.admit(world, to, now) else {
            self.queries[q as usize].outcome.dropped += 1;
            return;
        };
        let Some(mut router) = self.routers[to as usize].take() else {
            return;
        };
        self.fill_scratch(world, to);
        let message = {
            let state = &self.queries[q as usize];
            FloodQuery {
                id: state.id,
                ttl,
                hops,
                query: state.query.clone(),
            }
        };
        let tables = self.tables.is_some();
        if let Some(model) = &mut self.tables {
            let forwarded_ttl = ttl.min(router.config().max_ttl).saturating_sub(1);
            let near = self.queries[q as usize].near.as_deref().unwrap_or_default();
            model.decisions(
                world,
                q,
                near,
                to,
                &self.scratch,
                forwarded_ttl,
                done,
                &mut self.decisions,
            );
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
            as_duration(done),
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
        self.carry_out(world, q, to, hops, actions, &mut router, done);
        self.routers[to as usize] = Some(router);
    }

    fn fill_scratch(&mut self, world: &World, node: u32) {
        self.scratch.clear();
        self.scratch
            .extend(world.neighbours[node as usize].iter().map(|&n| peer(n)));
    }

    /// Does what the router said, at time `done`.
    #[allow(clippy::too_many_arguments)]
    fn carry_out(
        &mut self,
        world: &mut World,
        q: u32,
        node: u32,
        hops: u8,
        actions: Vec<Action>,
        router: &mut Router,
        done: Time,
    ) {
        let now = as_duration(done);
        for action in actions {
            match action {
                Action::AnswerLocally { id, .. } => {
                    let leaves = world.leaves[node as usize].len() as u64;
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
                        self.send_hits(world, q, node, node, back, done);
                    }
                }
                Action::Forward { to, query } => {
                    let routed = query.ttl < self.table_levels();
                    self.send_flood(world, q, node, node_of(&to), query.ttl, query.hops, routed, done);
                }
                Action::Deliver { .. } => {}
            }
        }
    }

    /// Sends one copy of query `q` from `from` to `to`, counted.
    #[allow(clippy::too_many_arguments)]
    fn send_flood(
        &mut self,
        world: &mut World,
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
        world.tally.account(from, bytes, done);
        world.tally.account(to, bytes, done);
        let at = done + world.latency(from, to);
        world.queue.at(
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
    fn send_hits(
        &mut self,
        world: &mut World,
        q: u32,
        node: u32,
        responder: u32,
        actions: Vec<Action>,
        done: Time,
    ) {
        for action in actions {
            let Action::Deliver { to, hits, .. } = action else {
                continue;
            };
            let sources: u32 = hits.iter().map(|hit| hit.source_count).sum();
            if sources == 0 {
                continue;
            }
            let bytes = self.sizes.hits(sources);
            match to {
                Origin::Neighbour(next) => {
                    let next = node_of(&next);
                    let outcome = &mut self.queries[q as usize].outcome;
                    outcome.hit_messages += 1;
                    outcome.bytes += bytes;
                    world.tally.account(node, bytes, done);
                    world.tally.account(next, bytes, done);
                    let at = done + world.latency(node, next);
                    world.queue.at(
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
                        self.dynamic_results(world, q, sources, done);
                    }
                    let searcher = searcher as u32;
                    if searcher != node {
                        let outcome = &mut self.queries[q as usize].outcome;
                        outcome.leaf_messages += 1;
                        outcome.bytes += bytes;
                        world.tally.account(node, bytes, done);
                    }
                    let at = done + world.latency(node, searcher);
                    world.queue.at(at, Event::HitsHome { query: q, responder });
                }
            }
        }
    }

    pub fn hits(&mut self, world: &mut World, q: u32, responder: u32, from: u32, to: u32, now: Time) {
        if world.state[to as usize] != State::Router {
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
        let back = router.on_hits(peer(from), id, stub_hits(holders), as_duration(now));
        self.routers[to as usize] = Some(router);
        self.send_hits(world, q, to, responder, back, now);
    }

    pub fn hits_home(&mut self, world: &World, q: u32, responder: u32, now: Time) {
        let state = &mut self.queries[q as usize];
        if world.state[state.origin as usize] == State::Offline {
            state.outcome.lost += 1;
            return;
        }
        if state.first_hit.is_none() {
            state.first_hit = Some(now - state.issued);
        }
        state.responders.push(responder);
    }

    /// Counts which live holders were found, and frees the query's lists.
    pub fn finish_query(&mut self, world: &mut World, q: u32) {
        let (start, end) = world.tally.phase;
        let state = &mut self.queries[q as usize];
        let measured = state.issued >= start && state.issued <= end && state.issued != NEVER;
        if measured && world.scenario.nat.is_some() {
            let (origin, responders, holders) = (state.origin, &state.responders, &state.holders);
            traversal::record(world, q, origin, responders, holders, &mut self.transfers);
        }
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
            world.tally.outcomes.push(state.outcome);
        }
    }

    /// Starts query `q`'s dynamic search at `router` (which has already
    /// answered it from its own index).
    fn start_dynamic(&mut self, world: &mut World, q: u32, router: u32, now: Time) {
        let config = dynamic_config(&world.scenario);
        let near = self.queries[q as usize].near.take().unwrap_or_default();
        // Nearest round trip first: among neighbours whose tables put a
        // match equally near, the dynamic query asks them in this order.
        let mut order = world.neighbours[router as usize].clone();
        order.sort_by_key(|&n| world.latency(router, n));
        let mut neighbours = Vec::new();
        for n in order {
            let reach = match &mut self.tables {
                Some(tables) => tables.reach(world, q, &near, n, router, now),
                None => Reach::Unknown,
            };
            neighbours.push(Neighbour {
                peer: peer(n),
                degree: world.neighbours[n as usize].len() as u32,
                reach,
            });
        }
        let (search, steps) = DynamicQuery::start(config, neighbours, as_duration(now));
        let state = &mut self.queries[q as usize];
        state.near = Some(near);
        state.dynamic = Some(Box::new(search));
        state.dynamic_router = router;
        self.dynamic_steps(world, q, steps, now);
    }

    /// Sources found for query `q` reached its searcher's supernode.
    fn dynamic_results(&mut self, world: &mut World, q: u32, sources: u32, now: Time) {
        let Some(search) = self.queries[q as usize].dynamic.as_mut() else {
            return;
        };
        let steps = search.on_results(sources, as_duration(now));
        if steps.contains(&Step::Finish(Finish::Enough)) {
            let state = &mut self.queries[q as usize];
            state.outcome.target_reached = Some(now.saturating_sub(state.issued));
        }
        self.dynamic_steps(world, q, steps, now);
    }

    pub fn dynamic_tick(&mut self, world: &mut World, q: u32, now: Time) {
        let Some(search) = self.queries[q as usize].dynamic.as_mut() else {
            return;
        };
        if search.next_wakeup().is_none_or(|at| at > as_duration(now)) {
            return;
        }
        let steps = search.on_tick(as_duration(now));
        self.dynamic_steps(world, q, steps, now);
    }

    /// Sends the probes, and wakes the search when it asks.
    fn dynamic_steps(&mut self, world: &mut World, q: u32, steps: Vec<Step>, now: Time) {
        let router = self.queries[q as usize].dynamic_router;
        for step in steps {
            let Step::Probe { to, ttl } = step else {
                continue;
            };
            let to = node_of(&to);
            if world.state[router as usize] != State::Router {
                return;
            }
            let routed = ttl < self.table_levels();
            self.send_flood(world, q, router, to, ttl, 1, routed, now);
        }
        let wakeup = self.queries[q as usize]
            .dynamic
            .as_ref()
            .and_then(|search| search.next_wakeup());
        if let Some(at) = wakeup {
            let at = (at.as_micros() as Time).max(now + 1);
            world.queue.at(at, Event::DynamicTick(q));
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
