//! Query flooding between supernodes, as a sans-IO state machine.
//!
//! A supernode hands every query it sees to [`Router::on_query`] and every
//! batch of hits to [`Router::on_hits`], with the current time; the router
//! answers with [`Action`]s (answer from the local index, forward to these
//! neighbours, send these hits back along that path). It never reads a
//! clock or touches a socket, so the real supernode and the simulator run
//! the same decisions.
//!
//! The rules, as in Gnutella and FastTrack:
//! * a query carries a random id, a TTL and a hop count; the TTL is capped
//!   on arrival so no peer can inflate a flood;
//! * a caller that knows its neighbours' keyword tables ([`super::qrp`])
//!   passes a filter to [`Router::on_query_with`], and a copy goes only to
//!   neighbours whose tables say a match may lie within the copy's reach
//!   (Gnutella's QRP checked on the last hop, extended to every hop the
//!   tables cover); without one, it goes to all;
//! * each id is handled once: a duplicate (arriving by another path) is
//!   dropped, tracked by a bounded seen-cache with expiry;
//! * a query is answered locally and forwarded to every neighbour but the
//!   one it came from, with TTL − 1, while TTL stays above zero;
//! * hits travel back the way the query came: the router remembers, per
//!   query id, who sent it; hits for an id it has no route for are dropped.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::budget::TokenBucket;
use super::id::PeerId;
use super::search::{Hit, Query};

/// A query's random id, chosen by the supernode that first receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueryId(pub [u8; 16]);

/// A query as it travels between supernodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloodQuery {
    pub id: QueryId,
    /// Hops it may still travel.
    pub ttl: u8,
    /// Hops travelled so far.
    pub hops: u8,
    pub query: Query,
}

/// Where a query came from, and so where its hits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// One of this supernode's own leaves; the number is the supernode's
    /// handle for that search.
    Local(u64),
    Neighbour(PeerId),
}

/// What the supernode should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Search the local index and feed the hits to [`Router::on_local_hits`].
    AnswerLocally { id: QueryId, query: Query },
    /// Send this query to a neighbour.
    Forward { to: PeerId, query: FloodQuery },
    /// Send these hits towards where the query came from.
    Deliver { to: Origin, id: QueryId, hits: Vec<Hit> },
}

/// Why the router dropped something, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    Duplicate,
    UnknownRoute,
    SeenCacheFull,
    /// Not passed on: over the forwarding cap (answered locally only).
    Capped,
}

/// Decides whether a last-hop copy of a query goes to a neighbour.
pub type ForwardFilter<'a> = &'a dyn Fn(PeerId, &Query, u8) -> Forward;

/// How a copy of a query is chosen for one neighbour, as a keyword
/// routing filter decides ([`super::qrp::horizon`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Send it without a check: nothing is known about what lies that far
    /// (no tables from this neighbour, or a TTL past their horizon).
    Broadcast,
    /// Send it: the neighbour's tables say a match may lie within reach.
    Routed,
    /// Do not send it: the neighbour's tables rule out every supernode the
    /// copy could reach.
    Pruned,
}

/// Query copies this router sent, by how they were chosen: the measure of
/// how much of the traffic keyword routing decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// Sent without a check (no filter given, or it knew nothing that far).
    pub broadcast: u64,
    /// Sent because the neighbour's tables may match within the copy's reach.
    pub routed: u64,
    /// Not sent: the neighbour's tables rule out everything in reach.
    pub pruned: u64,
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Highest TTL accepted; larger ones are lowered to this.
    pub max_ttl: u8,
    /// TTL given to queries from our own leaves.
    pub default_ttl: u8,
    /// Query ids remembered at once (seen-cache and routes share it).
    pub max_entries: usize,
    /// How long a query id is remembered, and its hits routed back.
    pub entry_lifetime: Duration,
    /// Queries passed on to neighbours per second at most, in bursts of a
    /// second's worth; beyond it a query is answered locally only, so a
    /// storm cannot make us flood the overlay. `None`: no cap.
    pub max_forwarded_per_second: Option<u32>,
}

/// The forwarding cap a supernode keeps unless told otherwise.
pub const DEFAULT_MAX_FORWARDED_PER_SECOND: u32 = 200;

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_ttl: 7,
            default_ttl: 4,
            max_entries: 100_000,
            entry_lifetime: Duration::from_secs(60),
            max_forwarded_per_second: Some(DEFAULT_MAX_FORWARDED_PER_SECOND),
        }
    }
}

#[derive(Debug)]
struct Entry {
    origin: Origin,
    expires: Duration,
}

/// The flooding state of one supernode.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    entries: HashMap<QueryId, Entry>,
    /// Ids in arrival order, for expiry from the oldest end.
    order: VecDeque<(Duration, QueryId)>,
    dropped: HashMap<Dropped, u64>,
    forwarding: Forwarding,
    /// The forwarding cap's budget (`None`: no cap).
    cap: Option<TokenBucket>,
}

impl Router {
    /// A router whose clock starts at zero.
    pub fn new(config: RouterConfig) -> Self {
        let cap = config.max_forwarded_per_second.map(|rate| {
            let rate = f64::from(rate.max(1));
            TokenBucket::full(rate, rate, Duration::ZERO)
        });
        Router {
            config,
            entries: HashMap::new(),
            order: VecDeque::new(),
            dropped: HashMap::new(),
            forwarding: Forwarding::default(),
            cap,
        }
    }

    /// Whether one more query may be passed on now, under the forwarding
    /// cap; a refusal is counted as [`Dropped::Capped`]. Flooded queries
    /// are checked here by [`Router::on_query_with`]; a dynamic query asks
    /// once, at its first copy.
    pub fn may_forward(&mut self, now: Duration) -> bool {
        let allowed = self.cap.as_mut().is_none_or(|cap| cap.take(1.0, now));
        if !allowed {
            self.count(Dropped::Capped);
        }
        allowed
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Times something was dropped for `reason`.
    pub fn dropped(&self, reason: Dropped) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }

    /// Copies sent so far, broadcast or routed.
    pub fn forwarding(&self) -> Forwarding {
        self.forwarding
    }

    /// Query ids currently remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A new query from one of our leaves (`handle` identifies the search)
    /// with a fresh random `id`.
    pub fn on_local_query(
        &mut self,
        handle: u64,
        id: QueryId,
        query: Query,
        neighbours: &[PeerId],
        now: Duration,
    ) -> Vec<Action> {
        let flood = FloodQuery {
            id,
            ttl: query
                .ttl
                .unwrap_or(self.config.default_ttl)
                .min(self.config.max_ttl),
            hops: 0,
            query,
        };
        self.on_query(Origin::Local(handle), flood, neighbours, now)
    }

    /// A query from `from`. `neighbours` are the supernodes we could
    /// forward to right now; every one of them gets it (plain flooding).
    pub fn on_query(
        &mut self,
        from: Origin,
        query: FloodQuery,
        neighbours: &[PeerId],
        now: Duration,
    ) -> Vec<Action> {
        self.on_query_with(from, query, neighbours, None, now)
    }

    /// [`Router::on_query`] with keyword routing: each copy goes to a
    /// neighbour only if `filter(neighbour, query, ttl)` does not prune it,
    /// where `ttl` is what the copy carries on arrival (0: the neighbour
    /// answers from its index and forwards no further). Without a filter
    /// every neighbour gets a copy.
    pub fn on_query_with(
        &mut self,
        from: Origin,
        mut query: FloodQuery,
        neighbours: &[PeerId],
        filter: Option<ForwardFilter<'_>>,
        now: Duration,
    ) -> Vec<Action> {
        self.expire(now);
        if self.entries.contains_key(&query.id) {
            self.count(Dropped::Duplicate);
            return Vec::new();
        }
        if self.entries.len() >= self.config.max_entries {
            // Full of live entries: refuse new work rather than forget routes.
            self.count(Dropped::SeenCacheFull);
            return Vec::new();
        }
        let expires = now + self.config.entry_lifetime;
        self.entries.insert(
            query.id,
            Entry {
                origin: from,
                expires,
            },
        );
        self.order.push_back((expires, query.id));

        query.ttl = query.ttl.min(self.config.max_ttl);
        let mut actions = vec![Action::AnswerLocally {
            id: query.id,
            query: query.query.clone(),
        }];
        if query.ttl > 0 {
            let forwarded = FloodQuery {
                ttl: query.ttl - 1,
                hops: query.hops.saturating_add(1),
                ..query
            };
            let decisions: Vec<(PeerId, Forward)> = neighbours
                .iter()
                .filter(|&&neighbour| Origin::Neighbour(neighbour) != from)
                .map(|&neighbour| {
                    let decision = filter.map_or(Forward::Broadcast, |decide| {
                        decide(neighbour, &forwarded.query, forwarded.ttl)
                    });
                    (neighbour, decision)
                })
                .collect();
            let pruned = decisions.iter().filter(|(_, d)| *d == Forward::Pruned).count();
            self.forwarding.pruned += pruned as u64;
            let sends = decisions.len() > pruned;
            if sends && !self.may_forward(now) {
                return actions;
            }
            for (neighbour, decision) in decisions {
                match decision {
                    Forward::Broadcast => self.forwarding.broadcast += 1,
                    Forward::Routed => self.forwarding.routed += 1,
                    Forward::Pruned => continue,
                }
                actions.push(Action::Forward {
                    to: neighbour,
                    query: forwarded.clone(),
                });
            }
        }
        actions
    }

    /// Hits from our own index for query `id`.
    pub fn on_local_hits(&mut self, id: QueryId, hits: Vec<Hit>, now: Duration) -> Vec<Action> {
        self.route(id, hits, now)
    }

    /// Hits from neighbour `from` for query `id`.
    pub fn on_hits(&mut self, _from: PeerId, id: QueryId, hits: Vec<Hit>, now: Duration) -> Vec<Action> {
        self.route(id, hits, now)
    }

    fn route(&mut self, id: QueryId, hits: Vec<Hit>, now: Duration) -> Vec<Action> {
        self.expire(now);
        match self.entries.get(&id) {
            // Our own leaf hears even "nothing here", so it need not wait
            // for hits that will never come; neighbours only get hits.
            Some(entry) if !hits.is_empty() || matches!(entry.origin, Origin::Local(_)) => {
                vec![Action::Deliver {
                    to: entry.origin,
                    id,
                    hits,
                }]
            }
            Some(_) => Vec::new(),
            None => {
                self.count(Dropped::UnknownRoute);
                Vec::new()
            }
        }
    }

    /// Where what answers query `id` goes (its hits, and the votes on
    /// them), while the query's route is remembered.
    pub fn origin_of(&mut self, id: QueryId, now: Duration) -> Option<Origin> {
        self.expire(now);
        self.entries.get(&id).map(|entry| entry.origin)
    }

    /// Forgets entries whose time is up.
    pub fn expire(&mut self, now: Duration) {
        while let Some(&(expires, id)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&id).is_some_and(|entry| entry.expires <= now) {
                self.entries.remove(&id);
            }
        }
    }

    fn count(&mut self, reason: Dropped) {
        *self.dropped.entry(reason).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ContentHash, FileKind};

    fn query() -> Query {
        Query {
            text: "rare".into(),
            hash: None,
            kind: None,
            min_size: None,
            max_size: None,
            max_hits: 10,
            ttl: None,
        }
    }

    fn hit() -> Hit {
        Hit {
            hash: ContentHash([1; 32]),
            size: 1,
            name: "rare.txt".into(),
            kind: FileKind::Document,
            sources: vec![],
            source_count: 1,
            relayed: vec![],
        }
    }

    fn peer(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn forwards_to_all_but_the_sender_with_one_less_ttl() {
        let mut router = Router::new(RouterConfig::default());
        let id = QueryId([1; 16]);
        let flood = FloodQuery {
            id,
            ttl: 3,
            hops: 1,
            query: query(),
        };
        let actions = router.on_query(
            Origin::Neighbour(peer(1)),
            flood,
            &[peer(1), peer(2), peer(3)],
            T0,
        );
        assert_eq!(actions[0], Action::AnswerLocally { id, query: query() });
        let forwarded: Vec<_> = actions[1..]
            .iter()
            .map(|a| match a {
                Action::Forward { to, query } => (*to, query.ttl, query.hops),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(forwarded, vec![(peer(2), 2, 2), (peer(3), 2, 2)]);
    }

    #[test]
    fn ttl_zero_is_answered_but_not_forwarded_and_inflation_is_capped() {
        let mut router = Router::new(RouterConfig::default());
        let last = FloodQuery {
            id: QueryId([2; 16]),
            ttl: 0,
            hops: 7,
            query: query(),
        };
        let actions = router.on_query(Origin::Neighbour(peer(1)), last, &[peer(2)], T0);
        assert_eq!(actions.len(), 1);
        let inflated = FloodQuery {
            id: QueryId([3; 16]),
            ttl: 250,
            hops: 0,
            query: query(),
        };
        let actions = router.on_query(Origin::Neighbour(peer(1)), inflated, &[peer(2)], T0);
        assert!(matches!(&actions[1], Action::Forward { query, .. } if query.ttl == 6));
    }

    #[test]
    fn duplicates_are_dropped_and_hits_go_back_the_way_the_query_came() {
        let mut router = Router::new(RouterConfig::default());
        let id = QueryId([4; 16]);
        let flood = FloodQuery {
            id,
            ttl: 2,
            hops: 0,
            query: query(),
        };
        router.on_query(Origin::Neighbour(peer(1)), flood.clone(), &[peer(1), peer(2)], T0);
        assert!(router
            .on_query(Origin::Neighbour(peer(2)), flood, &[peer(1), peer(2)], T0)
            .is_empty());
        assert_eq!(router.dropped(Dropped::Duplicate), 1);

        let back = router.on_hits(peer(2), id, vec![hit()], T0);
        assert_eq!(
            back,
            vec![Action::Deliver {
                to: Origin::Neighbour(peer(1)),
                id,
                hits: vec![hit()]
            }]
        );
        assert!(router
            .on_hits(peer(2), QueryId([9; 16]), vec![hit()], T0)
            .is_empty());
        assert_eq!(router.dropped(Dropped::UnknownRoute), 1);
    }

    #[test]
    fn local_queries_route_hits_to_the_leaf_and_entries_expire() {
        let mut router = Router::new(RouterConfig::default());
        let id = QueryId([5; 16]);
        let actions = router.on_local_query(42, id, query(), &[peer(1)], T0);
        assert!(matches!(&actions[1], Action::Forward { query, .. } if query.ttl == 3 && query.hops == 1));
        let back = router.on_local_hits(id, vec![hit()], T0);
        assert_eq!(
            back,
            vec![Action::Deliver {
                to: Origin::Local(42),
                id,
                hits: vec![hit()]
            }]
        );
        let later = T0 + RouterConfig::default().entry_lifetime;
        assert!(router.on_hits(peer(1), id, vec![hit()], later).is_empty());
        assert!(router.is_empty());
    }

    #[test]
    fn the_last_hop_goes_only_where_the_filter_allows() {
        let mut router = Router::new(RouterConfig::default());
        // Peer 3's tables match; the others' rule the query out on the
        // last hop and know nothing further away.
        let only_peer_3 = |to: PeerId, _: &Query, ttl: u8| match (to == peer(3), ttl) {
            (true, _) => Forward::Routed,
            (false, 0) => Forward::Pruned,
            (false, _) => Forward::Broadcast,
        };
        let neighbours = [peer(1), peer(2), peer(3)];
        let flood = |n: u8, ttl: u8| FloodQuery {
            id: QueryId([n; 16]),
            ttl,
            hops: 0,
            query: query(),
        };
        let targets = |actions: Vec<Action>| -> Vec<PeerId> {
            actions
                .into_iter()
                .filter_map(|a| match a {
                    Action::Forward { to, .. } => Some(to),
                    _ => None,
                })
                .collect()
        };
        // TTL 1: the copies arrive with TTL 0, so this is the last hop.
        let last = router.on_query_with(Origin::Local(1), flood(1, 1), &neighbours, Some(&only_peer_3), T0);
        assert_eq!(targets(last), vec![peer(3)]);
        // TTL 2: peers 1 and 2 know nothing that far, so they get it too.
        let earlier =
            router.on_query_with(Origin::Local(1), flood(2, 2), &neighbours, Some(&only_peer_3), T0);
        assert_eq!(targets(earlier), neighbours.to_vec());
        assert_eq!(
            router.forwarding(),
            Forwarding {
                broadcast: 2,
                routed: 2,
                pruned: 2
            }
        );
    }

    #[test]
    fn memory_is_bounded() {
        let config = RouterConfig {
            max_entries: 3,
            ..RouterConfig::default()
        };
        let mut router = Router::new(config);
        for n in 0..5u8 {
            let flood = FloodQuery {
                id: QueryId([n; 16]),
                ttl: 1,
                hops: 0,
                query: query(),
            };
            router.on_query(Origin::Neighbour(peer(1)), flood, &[], T0);
        }
        assert_eq!(router.len(), 3);
        assert_eq!(router.dropped(Dropped::SeenCacheFull), 2);
        // Once entries expire there is room again.
        let flood = FloodQuery {
            id: QueryId([9; 16]),
            ttl: 1,
            hops: 0,
            query: query(),
        };
        assert!(!router
            .on_query(
                Origin::Neighbour(peer(1)),
                flood,
                &[],
                T0 + Duration::from_secs(61)
            )
            .is_empty());
    }
}
