//! Horizon tables: keyword tables that see past the last hop.
//!
//! Gnutella's QRP told an ultrapeer what its *leaves* had, so it could skip
//! them on a query's last hop. Canopy's leaves are inside their supernode's
//! index already, so the interesting question is one step further: which
//! *neighbouring supernode* is worth a copy of a query, given how far the
//! copy may still travel? A [`Horizon`] answers it with attenuated tables,
//! one per distance ("level"):
//!
//! * level 0 of what supernode S sends neighbour N is S's own table (the
//!   words of everything its leaves and itself share);
//! * level `k` is S's own table united with level `k − 1` of the tables
//!   S received from every *other* neighbour M ≠ N.
//!
//! So level `k` from N covers every supernode within `k` hops of N, never
//! back through us (split horizon: what we send N never includes what N
//! told us, so a word cannot echo round a link and outlive its file). A
//! copy of a query that arrives at N with TTL `t` can reach exactly the
//! supernodes within `t` hops of N, so N's level-`t` table decides it
//! ([`Horizon::decide`]): no match there, and the copy cannot find anything.
//! Past the last level nothing is known, and the copy is broadcast.
//!
//! Tables are exchanged as [`TableUpdate`]s against what was last sent on
//! each link and level ([`Horizon::updates_to_send`]), so a quiet network
//! costs nothing and a new file costs a few dozen bytes per link and level.
//!
//! **Never a false negative.** Every way this can go wrong costs messages,
//! never results:
//! * a neighbour that has not sent a level (a new link, an older peer, a
//!   peer with fewer levels) is *unknown* there: our tables built on it are
//!   sent as a tiny table with every bit set ([`Horizon::unknown_table`]),
//!   which matches everything;
//! * a refused update (bad size, level, order, a patch before a reset)
//!   forgets every table of that neighbour, which is then broadcast to;
//! * a link whose update was lost on the way (the caller could not send
//!   it) is told to start over with resets ([`Horizon::resend`]).
//!
//! Sans-IO and pure: the supernode calls it from its overlay and index.

use std::collections::HashMap;

use super::{KeywordCounts, KeywordTable, TableError, TableUpdate, WordKey, MIN_LOG2_BITS};
use crate::proto::dynamic::Reach;
use crate::proto::id::PeerId;
use crate::proto::routing::Forward;
use crate::proto::search::Query;

/// Most levels a horizon may have (and a peer may send).
pub const MAX_LEVELS: u8 = 8;
/// Most neighbours whose tables are kept (a neighbour past it is flooded).
pub const MAX_NEIGHBOUR_TABLES: usize = 64;
/// Default number of levels: tables decide copies arriving with TTL 0–3.
pub const DEFAULT_LEVELS: u8 = 5;
/// Default size of a supernode's own table: 2^20 bits (128 KiB), room for
/// ~50,000 words at under 1 % one-word false positives.
pub const DEFAULT_HORIZON_LOG2_BITS: u8 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HorizonConfig {
    /// Levels kept and sent, 1 to [`MAX_LEVELS`]: level `k` covers `k` hops
    /// past a neighbour.
    pub levels: u8,
    /// Size of the own table (2^`log2_bits` bits).
    pub log2_bits: u8,
}

impl Default for HorizonConfig {
    fn default() -> Self {
        HorizonConfig {
            levels: DEFAULT_LEVELS,
            log2_bits: DEFAULT_HORIZON_LOG2_BITS,
        }
    }
}

/// What we hold for one linked neighbour.
#[derive(Debug, Default)]
struct Link {
    /// The tables it sent us, by level (`None`: not yet, or forgotten).
    received: Vec<Option<KeywordTable>>,
    /// A change it is still sending, by level: the table as it will be
    /// once the update marked as the last arrives. Until then routing uses
    /// the table it replaces, never a half-built one.
    pending: Vec<Option<KeywordTable>>,
    /// The tables we last sent it, by level (`None`: nothing yet, so the
    /// next update is a reset).
    sent: Vec<Option<KeywordTable>>,
}

impl Link {
    /// Drops everything the neighbour sent: it is flooded until it resets.
    fn forget(&mut self) {
        self.received.iter_mut().for_each(|table| *table = None);
        self.pending.iter_mut().for_each(|table| *table = None);
    }

    fn new(levels: u8) -> Self {
        Link {
            received: vec![None; usize::from(levels)],
            pending: vec![None; usize::from(levels)],
            sent: vec![None; usize::from(levels)],
        }
    }
}

/// A supernode's keyword horizon: its own words, and per neighbour what
/// lies within each number of hops past it.
#[derive(Debug)]
pub struct Horizon {
    config: HorizonConfig,
    own: KeywordCounts,
    links: HashMap<PeerId, Link>,
    /// Something changed since the last [`Self::updates_to_send`].
    dirty: bool,
}

impl Horizon {
    /// An empty horizon. `levels` is clamped to 1..=[`MAX_LEVELS`].
    pub fn new(config: HorizonConfig) -> Result<Self, TableError> {
        let config = HorizonConfig {
            levels: config.levels.clamp(1, MAX_LEVELS),
            ..config
        };
        Ok(Horizon {
            own: KeywordCounts::new(config.log2_bits)?,
            config,
            links: HashMap::new(),
            dirty: true,
        })
    }

    pub fn config(&self) -> HorizonConfig {
        self.config
    }

    /// Changes the number of levels (clamped as in [`Self::new`]). Every
    /// link starts over: tables received are forgotten, and the next
    /// updates are resets. Meant for start-up, before links exist.
    pub fn set_levels(&mut self, levels: u8) {
        self.config.levels = levels.clamp(1, MAX_LEVELS);
        for link in self.links.values_mut() {
            *link = Link::new(self.config.levels);
        }
        self.dirty = true;
    }

    /// One more shared file with these words ([`WordKey::of_file`]).
    pub fn add_file(&mut self, keys: &[WordKey]) {
        self.own.add(keys);
        self.dirty = true;
    }

    /// One shared file fewer: the keys it was added with.
    pub fn remove_file(&mut self, keys: &[WordKey]) {
        self.own.remove(keys);
        self.dirty = true;
    }

    /// Our own table (level 0 of what every neighbour gets).
    pub fn own(&self) -> &KeywordTable {
        self.own.table()
    }

    /// A new link to `peer`: it will get full tables. Refused past
    /// [`MAX_NEIGHBOUR_TABLES`] links (that neighbour is then simply
    /// flooded, and gets no tables).
    pub fn link_up(&mut self, peer: PeerId) -> Result<(), TableError> {
        if !self.links.contains_key(&peer) && self.links.len() >= MAX_NEIGHBOUR_TABLES {
            return Err(TableError::TooManyTables(self.links.len()));
        }
        self.links.insert(peer, Link::new(self.config.levels));
        self.dirty = true;
        Ok(())
    }

    /// The link to `peer` closed: forget its tables and what we sent it.
    pub fn link_down(&mut self, peer: &PeerId) {
        if self.links.remove(peer).is_some() {
            self.dirty = true;
        }
    }

    pub fn is_linked(&self, peer: &PeerId) -> bool {
        self.links.contains_key(peer)
    }

    /// Forgets what we sent `peer` (an update to it was lost): the next
    /// [`Self::updates_to_send`] sends it every level afresh, as resets.
    pub fn resend(&mut self, peer: &PeerId) {
        if let Some(link) = self.links.get_mut(peer) {
            link.sent.iter_mut().for_each(|sent| *sent = None);
            self.dirty = true;
        }
    }

    /// Applies an update from `from` to its level-`level` table. With
    /// `more`, further updates of the same change follow: the change is
    /// built aside and takes effect with the last one, so a table too big
    /// for one message is never used half sent.
    ///
    /// Levels from our own count up to [`MAX_LEVELS`] are accepted and
    /// ignored (a peer configured with more levels than us is not wrong);
    /// a level past [`MAX_LEVELS`], an update from a peer that is not
    /// linked, or an update the table refuses is an error, and **every**
    /// table of `from` is forgotten: it is broadcast to until it sends
    /// resets again.
    pub fn on_update(
        &mut self,
        from: PeerId,
        level: u8,
        update: &TableUpdate,
        more: bool,
    ) -> Result<(), TableError> {
        let levels = self.config.levels;
        let Some(link) = self.links.get_mut(&from) else {
            return Err(TableError::NotLinked);
        };
        if level >= MAX_LEVELS {
            link.forget();
            self.dirty = true;
            return Err(TableError::Level {
                level,
                max: MAX_LEVELS,
            });
        }
        if level >= levels {
            return Ok(());
        }
        let at = usize::from(level);
        // The table this update changes: the one being built, a new one
        // for a reset, or (copied only if more is coming) the one in use.
        let pending = link.pending[at].take();
        let building = match pending {
            // A reset starts over, whatever was being built.
            _ if update.reset => None,
            Some(table) => Some(table),
            None if more => link.received[at].clone(),
            None => {
                let result = match &mut link.received[at] {
                    Some(table) => table.apply(update),
                    None => Err(TableError::SizeMismatch {
                        got: update.log2_bits,
                        expected: 0,
                    }),
                };
                if result.is_err() {
                    link.forget();
                }
                self.dirty = true;
                return result;
            }
        };
        let result = match building {
            Some(mut table) => table.apply(update).map(|()| table),
            None if update.reset => KeywordTable::from_updates([update]),
            None => Err(TableError::SizeMismatch {
                got: update.log2_bits,
                expected: 0,
            }),
        };
        match result {
            Ok(table) if more => link.pending[at] = Some(table),
            Ok(table) => {
                link.received[at] = Some(table);
                self.dirty = true;
            }
            Err(error) => {
                link.forget();
                self.dirty = true;
                return Err(error);
            }
        }
        Ok(())
    }

    /// The table to send `to` at `level`: our own table united with level
    /// `level − 1` of every other neighbour's; [`Self::unknown_table`] if
    /// any of those is unknown.
    pub fn table_for(&self, to: &PeerId, level: u8) -> KeywordTable {
        let mut table = self.own.table().clone();
        if level == 0 {
            return table;
        }
        let below = usize::from(level - 1);
        for (peer, link) in &self.links {
            if peer == to {
                continue;
            }
            match link.received.get(below).and_then(Option::as_ref) {
                Some(theirs) => table.union(theirs),
                None => return Self::unknown_table(),
            }
        }
        table
    }

    /// "Anything may be there": the smallest table, every bit set. It
    /// matches every query, costs 128 bytes to send, and folds any table
    /// it is united with down to itself.
    pub fn unknown_table() -> KeywordTable {
        let mut table = KeywordTable::new(MIN_LOG2_BITS).expect("the smallest size is valid");
        table.words.iter_mut().for_each(|word| *word = u64::MAX);
        table
    }

    /// What every neighbour needs to hear now: `(to, level, update, more)`
    /// for each level whose table changed since it was last sent on that
    /// link (everything, as resets, on a new link); `more` marks all but
    /// the last update of a change that takes several. The updates are
    /// taken as sent; if one cannot be delivered, call [`Self::resend`].
    pub fn updates_to_send(&mut self) -> Vec<(PeerId, u8, TableUpdate, bool)> {
        if !self.dirty {
            return Vec::new();
        }
        self.dirty = false;
        let mut peers: Vec<PeerId> = self.links.keys().copied().collect();
        peers.sort_unstable();
        let mut out = Vec::new();
        for peer in peers {
            for level in 0..self.config.levels {
                let table = self.table_for(&peer, level);
                let link = self.links.get_mut(&peer).expect("listed above");
                let sent = &mut link.sent[usize::from(level)];
                if sent.as_ref() == Some(&table) {
                    continue;
                }
                let updates = table.updates_since(sent.as_ref());
                let last = updates.len().saturating_sub(1);
                for (at, update) in updates.into_iter().enumerate() {
                    out.push((peer, level, update, at < last));
                }
                *sent = Some(table);
            }
        }
        out
    }

    /// Whether a copy of `query` arriving at `to` with `ttl` is worth
    /// sending ([`crate::proto::routing::Router::on_query_with`]'s filter):
    /// decided by `to`'s level-`ttl` table if we hold it, else broadcast.
    pub fn decide(&self, to: PeerId, query: &Query, ttl: u8) -> Forward {
        let table = self
            .links
            .get(&to)
            .and_then(|link| link.received.get(usize::from(ttl)))
            .and_then(Option::as_ref);
        match table {
            Some(table) if table.may_match(query) => Forward::Routed,
            Some(_) => Forward::Pruned,
            None => Forward::Broadcast,
        }
    }

    /// How far past `to` the nearest match may be, for dynamic querying:
    /// the first level whose table may match; beyond the levels held
    /// (contiguous from 0) if none does; unknown without a level-0 table.
    pub fn reach(&self, to: &PeerId, query: &Query) -> Reach {
        let Some(link) = self.links.get(to) else {
            return Reach::Unknown;
        };
        let mut held = 0u8;
        for table in &link.received {
            let Some(table) = table else { break };
            if table.may_match(query) {
                return Reach::Within(held);
            }
            held += 1;
        }
        if held == 0 {
            Reach::Unknown
        } else {
            Reach::Beyond(held)
        }
    }

    /// Levels of `peer`'s tables held, counted from 0 up to the first gap.
    pub fn levels_from(&self, peer: &PeerId) -> u8 {
        self.links.get(peer).map_or(0, |link| {
            link.received.iter().take_while(|table| table.is_some()).count() as u8
        })
    }

    /// Neighbours linked.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Bytes of tables held (own, received and sent), for operators. At
    /// most (1 + 2 × levels × [`MAX_NEIGHBOUR_TABLES`]) × 128 KiB.
    pub fn bytes(&self) -> usize {
        let held = |tables: &Vec<Option<KeywordTable>>| -> usize {
            tables.iter().flatten().map(KeywordTable::byte_len).sum()
        };
        self.own.table().byte_len()
            + self
                .links
                .values()
                .map(|link| held(&link.received) + held(&link.pending) + held(&link.sent))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::qrp::{WordRun, MAX_LOG2_BITS};

    fn peer(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    fn keys(text: &str) -> Vec<WordKey> {
        crate::proto::keywords::routing_words(text)
            .map(|word| WordKey::of(&word))
            .collect()
    }

    fn small() -> HorizonConfig {
        HorizonConfig {
            levels: 4,
            log2_bits: 14,
        }
    }

    /// Supernodes `0..n` and the links between them, exchanging updates in
    /// memory until nothing more is sent. Returns the bytes exchanged.
    struct Net {
        nodes: Vec<Horizon>,
    }

    impl Net {
        fn new(n: usize, edges: &[(usize, usize)], config: HorizonConfig) -> Net {
            let mut nodes: Vec<Horizon> = (0..n).map(|_| Horizon::new(config).unwrap()).collect();
            for &(a, b) in edges {
                nodes[a].link_up(peer(b as u8)).unwrap();
                nodes[b].link_up(peer(a as u8)).unwrap();
            }
            Net { nodes }
        }

        fn settle(&mut self) -> usize {
            let mut bytes = 0;
            for _round in 0..50 {
                let mut any = false;
                for from in 0..self.nodes.len() {
                    for (to, level, update, more) in self.nodes[from].updates_to_send() {
                        any = true;
                        bytes += update.cost();
                        self.nodes[usize::from(to.0[0])]
                            .on_update(peer(from as u8), level, &update, more)
                            .unwrap();
                    }
                }
                if !any {
                    return bytes;
                }
            }
            panic!("updates never settled");
        }

        fn decide(&self, at: usize, to: usize, text: &str, ttl: u8) -> Forward {
            self.nodes[at].decide(peer(to as u8), &Query::words(text), ttl)
        }
    }

    #[test]
    fn a_line_learns_what_lies_each_number_of_hops_away() {
        // 0 - 1 - 2 - 3 - 4 - 5; "faraway" is shared at 5.
        let edges: Vec<(usize, usize)> = (0..5).map(|i| (i, i + 1)).collect();
        let mut net = Net::new(6, &edges, small());
        net.nodes[5].add_file(&keys("faraway song"));
        net.settle();
        // At 0, neighbour 1 holds it 4 hops further: beyond levels 0..=3.
        assert_eq!(
            net.nodes[0].reach(&peer(1), &Query::words("faraway")),
            Reach::Beyond(4)
        );
        for ttl in 0..4 {
            assert_eq!(net.decide(0, 1, "faraway", ttl), Forward::Pruned, "ttl {ttl}");
        }
        assert_eq!(net.decide(0, 1, "faraway", 4), Forward::Broadcast);
        // At 2, neighbour 3 holds it 2 hops further.
        assert_eq!(
            net.nodes[2].reach(&peer(3), &Query::words("faraway")),
            Reach::Within(2)
        );
        assert_eq!(net.decide(2, 3, "faraway", 1), Forward::Pruned);
        assert_eq!(net.decide(2, 3, "faraway", 2), Forward::Routed);
        assert_eq!(net.decide(2, 3, "faraway", 3), Forward::Routed);
        // Split horizon: 4 never hears its own word back from 3.
        for ttl in 0..4 {
            assert_eq!(net.decide(4, 3, "faraway", ttl), Forward::Pruned);
        }
        // A query without routing words is always forwarded.
        assert_eq!(net.decide(0, 1, "a", 0), Forward::Routed);
    }

    #[test]
    fn every_level_is_the_union_of_what_lies_within_that_many_hops() {
        // A star with a tail: 0 in the middle, 1..=3 around it, 4 behind 3.
        let mut net = Net::new(5, &[(0, 1), (0, 2), (0, 3), (3, 4)], small());
        for i in 0..5 {
            net.nodes[i].add_file(&keys(&format!("word{i}")));
        }
        net.settle();
        // What 1 holds about 0, level by level.
        let at = |ttl: u8, word: &str| net.decide(1, 0, word, ttl);
        assert_eq!(at(0, "word0"), Forward::Routed);
        assert_eq!(at(0, "word2"), Forward::Pruned);
        assert_eq!(at(1, "word2"), Forward::Routed);
        assert_eq!(at(1, "word3"), Forward::Routed);
        assert_eq!(at(1, "word4"), Forward::Pruned);
        assert_eq!(at(2, "word4"), Forward::Routed);
        // Never back through 1 itself.
        for ttl in 0..4 {
            assert_eq!(at(ttl, "word1"), Forward::Pruned);
        }
        // And the levels nest.
        let link = &net.nodes[1].links[&peer(0)];
        for pair in link.received.windows(2) {
            let (lower, upper) = (pair[0].as_ref().unwrap(), pair[1].as_ref().unwrap());
            let mut union = upper.clone();
            union.union(lower);
            assert_eq!(&union, upper);
        }
    }

    #[test]
    fn removal_and_link_loss_take_words_back_out() {
        let mut net = Net::new(3, &[(0, 1), (1, 2)], small());
        let song = keys("removable song");
        net.nodes[2].add_file(&song);
        net.settle();
        assert_eq!(net.decide(0, 1, "removable", 1), Forward::Routed);
        net.nodes[2].remove_file(&song);
        let bytes = net.settle();
        // Two words, two bits each: at most 4 changed 64-bit words (16 bytes
        // each) per table, in the 7 tables that hold them (4 levels from 2
        // to 1, levels 1..=3 from 1 to 0).
        assert!(
            bytes > 0 && bytes <= 7 * 4 * 16,
            "a removal is a few small diffs: {bytes} bytes"
        );
        assert_eq!(net.decide(0, 1, "removable", 1), Forward::Pruned);

        net.nodes[2].add_file(&song);
        net.settle();
        assert_eq!(net.decide(0, 1, "removable", 1), Forward::Routed);
        // 1 loses 2: 0 hears that nothing matches past 1 any more.
        net.nodes[1].link_down(&peer(2));
        net.nodes[2].link_down(&peer(1));
        net.settle();
        assert_eq!(net.decide(0, 1, "removable", 1), Forward::Pruned);
        assert_eq!(net.decide(0, 1, "removable", 3), Forward::Pruned);
    }

    #[test]
    fn a_neighbour_without_tables_makes_the_tables_built_on_it_match_everything() {
        let mut net = Net::new(3, &[(0, 1)], small());
        net.nodes[1].add_file(&keys("known"));
        net.settle();
        assert_eq!(net.decide(0, 1, "unknown", 1), Forward::Pruned);
        // 1 gains neighbour 2, which has sent nothing yet: until it does,
        // level 1 from 1 must not rule anything out.
        net.nodes[1].link_up(peer(2)).unwrap();
        for (to, level, update, more) in net.nodes[1].updates_to_send() {
            if to == peer(0) {
                net.nodes[0].on_update(peer(1), level, &update, more).unwrap();
            }
        }
        // (What 1 sent 2 was lost here: it must start over.)
        net.nodes[1].resend(&peer(2));
        assert_eq!(net.decide(0, 1, "unknown", 0), Forward::Pruned);
        assert_eq!(net.decide(0, 1, "unknown", 1), Forward::Routed);
        assert_eq!(net.decide(0, 1, "unknown", 3), Forward::Routed);
        // Once 2 has spoken, the tables sharpen again.
        net.nodes[2].link_up(peer(1)).unwrap();
        net.settle();
        assert_eq!(net.decide(0, 1, "unknown", 1), Forward::Pruned);
        assert_eq!(
            net.nodes[0].reach(&peer(1), &Query::words("unknown")),
            Reach::Beyond(4)
        );
        assert_eq!(
            net.nodes[0].reach(&peer(2), &Query::words("unknown")),
            Reach::Unknown
        );
    }

    #[test]
    fn a_refused_update_forgets_every_table_of_that_neighbour() {
        let mut net = Net::new(2, &[(0, 1)], small());
        net.nodes[1].add_file(&keys("present"));
        net.settle();
        assert_eq!(net.decide(0, 1, "absent", 2), Forward::Pruned);
        let bad = TableUpdate {
            log2_bits: 14,
            reset: false,
            runs: vec![WordRun {
                start: u32::MAX,
                xor_le: vec![1, 0, 0, 0, 0, 0, 0, 0],
            }],
        };
        assert!(net.nodes[0].on_update(peer(1), 2, &bad, false).is_err());
        for ttl in 0..4 {
            assert_eq!(net.decide(0, 1, "absent", ttl), Forward::Broadcast);
        }
        assert_eq!(
            net.nodes[0].reach(&peer(1), &Query::words("absent")),
            Reach::Unknown
        );
        // A level past the maximum is refused too; one we just do not keep
        // is ignored; a stranger's update is refused.
        let reset = KeywordTable::new(14).unwrap().updates_since(None).remove(0);
        assert!(net.nodes[0]
            .on_update(peer(1), MAX_LEVELS, &reset, false)
            .is_err());
        assert!(net.nodes[0].on_update(peer(1), 5, &reset, false).is_ok());
        assert!(net.nodes[0].on_update(peer(9), 0, &reset, false).is_err());
        // The neighbour recovers by starting over.
        net.nodes[1].resend(&peer(0));
        net.settle();
        assert_eq!(net.decide(0, 1, "absent", 2), Forward::Pruned);
    }

    #[test]
    fn a_table_sent_in_several_updates_is_used_only_once_whole() {
        let config = HorizonConfig {
            levels: 1,
            log2_bits: 20,
        };
        let (mut sender, mut receiver) = (Horizon::new(config).unwrap(), Horizon::new(config).unwrap());
        sender.link_up(peer(2)).unwrap();
        receiver.link_up(peer(1)).unwrap();
        // Dense enough that nearly every 64-bit word is set: 128 KiB raw.
        for n in 0..60_000 {
            sender.add_file(&keys(&format!("word{n}")));
        }
        let updates = sender.updates_to_send();
        assert!(updates.len() >= 3, "{} updates", updates.len());
        let (last, first) = updates.split_last().unwrap();
        assert!(first[0].2.reset && first.iter().all(|(_, _, _, more)| *more));
        assert!(!last.3);
        let present = Query::words("word59999");
        for (_, level, update, more) in first {
            receiver.on_update(peer(1), *level, update, *more).unwrap();
            // Half a table would prune what the rest of it holds.
            assert_eq!(receiver.decide(peer(1), &present, 0), Forward::Broadcast);
        }
        receiver.on_update(peer(1), last.1, &last.2, last.3).unwrap();
        assert_eq!(receiver.decide(peer(1), &present, 0), Forward::Routed);
        let pruned = (0..20)
            .filter(|n| receiver.decide(peer(1), &Query::words(format!("absent{n}")), 0) == Forward::Pruned)
            .count();
        assert!(pruned >= 15, "{pruned} of 20 absent words pruned");
    }

    #[test]
    fn a_new_link_gets_full_tables_and_then_only_changes() {
        let mut horizon = Horizon::new(HorizonConfig::default()).unwrap();
        horizon.add_file(&keys("first file"));
        horizon.link_up(peer(1)).unwrap();
        let first = horizon.updates_to_send();
        assert!(first.iter().all(|(_, _, _, more)| !more), "each fits one update");
        // Level 0 is the own table; the levels above are built on no other
        // neighbour, so they equal it too. Each is one reset of 2^20 bits.
        let levels = usize::from(DEFAULT_LEVELS);
        assert!(first.iter().all(|(to, _, _, _)| *to == peer(1)));
        let resets = first.iter().filter(|(_, _, update, _)| update.reset).count();
        assert_eq!(resets, levels);
        assert!(horizon.updates_to_send().is_empty(), "nothing changed");
        horizon.add_file(&keys("second"));
        let next = horizon.updates_to_send();
        assert_eq!(next.len(), levels);
        assert!(next
            .iter()
            .all(|(_, _, update, _)| !update.reset && update.cost() <= 2 * 16));
    }

    #[test]
    fn memory_is_bounded() {
        let config = HorizonConfig {
            levels: 200,
            log2_bits: MAX_LOG2_BITS,
        };
        let mut horizon = Horizon::new(config).unwrap();
        assert_eq!(horizon.config().levels, MAX_LEVELS);
        for n in 0..MAX_NEIGHBOUR_TABLES {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(n as u64).to_le_bytes());
            horizon.link_up(PeerId(id)).unwrap();
        }
        assert!(horizon.link_up(peer(255)).is_err());
        let worst = (1 + 2 * usize::from(MAX_LEVELS) * MAX_NEIGHBOUR_TABLES) * (1 << MAX_LOG2_BITS) / 8;
        assert!(horizon.bytes() <= worst);
        assert_eq!(worst, (128 << 20) + (128 << 10));
    }
}
