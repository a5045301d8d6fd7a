//! The keyword tables a supernode has heard from its neighbours.
//!
//! Each neighbour sends its table as [`TableUpdate`]s on the overlay link;
//! the supernode applies them here and asks [`NeighbourTables::may_forward`]
//! before a last-hop copy of a query goes out. A neighbour that has sent
//! no table yet (or whose update was refused) gets every query, as in plain
//! flooding: a missing table may cost messages, never results.

use std::collections::HashMap;

use super::{KeywordTable, TableError, TableUpdate};
use crate::proto::id::PeerId;
use crate::proto::routing::Forward;
use crate::proto::search::Query;

/// Most neighbours whose tables are kept: with 2^[`super::MAX_LOG2_BITS`]-bit
/// tables, 64 × 128 KiB = 8 MiB at worst.
pub const MAX_NEIGHBOUR_TABLES: usize = 64;

#[derive(Debug, Default)]
pub struct NeighbourTables {
    tables: HashMap<PeerId, KeywordTable>,
}

impl NeighbourTables {
    pub fn new() -> Self {
        NeighbourTables::default()
    }

    /// Applies an update from `from`. A refused update forgets that
    /// neighbour's table (it is flooded again until it sends a reset), so a
    /// half-applied or out-of-step table can never prune a query.
    pub fn apply(&mut self, from: PeerId, update: &TableUpdate) -> Result<(), TableError> {
        if !self.tables.contains_key(&from) && self.tables.len() >= MAX_NEIGHBOUR_TABLES {
            return Err(TableError::TooManyTables(self.tables.len()));
        }
        let result = match self.tables.get_mut(&from) {
            Some(table) => table.apply(update),
            None if update.reset => KeywordTable::from_updates([update]).map(|table| {
                self.tables.insert(from, table);
            }),
            None => Err(TableError::SizeMismatch {
                got: update.log2_bits,
                expected: 0,
            }),
        };
        if result.is_err() {
            self.tables.remove(&from);
        }
        result
    }

    /// Forgets a neighbour (its link closed).
    pub fn remove(&mut self, neighbour: &PeerId) {
        self.tables.remove(neighbour);
    }

    pub fn get(&self, neighbour: &PeerId) -> Option<&KeywordTable> {
        self.tables.get(neighbour)
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Whether a last-hop copy of `query` should go to `to`: yes unless
    /// its table rules the query out.
    pub fn may_forward(&self, to: PeerId, query: &Query) -> bool {
        self.tables.get(&to).is_none_or(|table| table.may_match(query))
    }

    /// The routing decision for a copy arriving at `to` with `ttl`: these
    /// tables cover the neighbour alone, so they decide the last hop only.
    pub fn decide(&self, to: PeerId, query: &Query, ttl: u8) -> Forward {
        match self.tables.get(&to) {
            Some(table) if ttl == 0 => {
                if table.may_match(query) {
                    Forward::Routed
                } else {
                    Forward::Pruned
                }
            }
            _ => Forward::Broadcast,
        }
    }

    /// Bytes of table held, for operators.
    pub fn bytes(&self) -> usize {
        self.tables.values().map(KeywordTable::byte_len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::qrp::{WordRun, DEFAULT_LOG2_BITS, MAX_LOG2_BITS};
    use crate::proto::routing::{Action, FloodQuery, Origin, QueryId, Router, RouterConfig};
    use std::time::Duration;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    fn table_with(word: &str) -> KeywordTable {
        let mut table = KeywordTable::new(DEFAULT_LOG2_BITS).unwrap();
        table.insert_word(word);
        table
    }

    #[test]
    fn router_prunes_the_last_hop_by_neighbour_tables() {
        let mut tables = NeighbourTables::new();
        for update in table_with("sinnerman").updates_since(None) {
            tables.apply(peer(2), &update).unwrap();
        }
        for update in table_with("gymnopedie").updates_since(None) {
            tables.apply(peer(3), &update).unwrap();
        }
        // peer(4) sent nothing: it is flooded.
        let mut router = Router::new(RouterConfig::default());
        let flood = FloodQuery {
            id: QueryId([1; 16]),
            ttl: 1,
            hops: 0,
            query: Query::words("Sinnerman"),
        };
        let may_forward = |to: PeerId, query: &Query, ttl: u8| tables.decide(to, query, ttl);
        let actions = router.on_query_with(
            Origin::Neighbour(peer(1)),
            flood,
            &[peer(1), peer(2), peer(3), peer(4)],
            Some(&may_forward),
            Duration::from_secs(1),
        );
        let targets: Vec<PeerId> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Forward { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(targets, vec![peer(2), peer(4)]);
    }

    #[test]
    fn a_bad_or_out_of_step_update_forgets_the_table_so_nothing_is_pruned_wrongly() {
        let mut tables = NeighbourTables::new();
        for update in table_with("rare").updates_since(None) {
            tables.apply(peer(2), &update).unwrap();
        }
        assert!(!tables.may_forward(peer(2), &Query::words("other")));
        let bad = TableUpdate {
            log2_bits: DEFAULT_LOG2_BITS,
            reset: false,
            runs: vec![WordRun {
                start: u32::MAX,
                xor_le: 1u64.to_le_bytes().to_vec(),
            }],
        };
        assert!(tables.apply(peer(2), &bad).is_err());
        assert!(tables.may_forward(peer(2), &Query::words("other")));
        // A patch without a reset first is refused too.
        let patch = TableUpdate { reset: false, ..bad };
        assert!(tables.apply(peer(5), &patch).is_err());
        assert!(tables.is_empty());
    }

    #[test]
    fn the_number_of_tables_is_bounded() {
        let mut tables = NeighbourTables::new();
        let reset = KeywordTable::new(MAX_LOG2_BITS).unwrap().updates_since(None);
        for n in 0..MAX_NEIGHBOUR_TABLES {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(n as u64).to_le_bytes());
            tables.apply(PeerId(id), &reset[0]).unwrap();
        }
        assert!(tables.apply(peer(255), &reset[0]).is_err());
        assert_eq!(tables.len(), MAX_NEIGHBOUR_TABLES);
        assert_eq!(tables.bytes(), MAX_NEIGHBOUR_TABLES * (1 << MAX_LOG2_BITS) / 8);
    }
}
