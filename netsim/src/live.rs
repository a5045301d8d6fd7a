//! A set of node indices with O(1) insert, remove and uniform random pick:
//! who is online, and which of them route.

use crate::rng::Rng;

const ABSENT: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
pub struct LiveSet {
    items: Vec<u32>,
    /// Where each node sits in `items`, or ABSENT.
    position: Vec<u32>,
}

impl LiveSet {
    pub fn with_capacity(nodes: usize) -> Self {
        LiveSet {
            items: Vec::new(),
            position: vec![ABSENT; nodes],
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, node: u32) -> bool {
        self.position[node as usize] != ABSENT
    }

    pub fn insert(&mut self, node: u32) {
        if !self.contains(node) {
            self.position[node as usize] = self.items.len() as u32;
            self.items.push(node);
        }
    }

    pub fn remove(&mut self, node: u32) {
        let at = self.position[node as usize];
        if at == ABSENT {
            return;
        }
        self.items.swap_remove(at as usize);
        if let Some(&moved) = self.items.get(at as usize) {
            self.position[moved as usize] = at;
        }
        self.position[node as usize] = ABSENT;
    }

    pub fn pick(&self, rng: &mut Rng) -> Option<u32> {
        if self.items.is_empty() {
            None
        } else {
            Some(self.items[rng.below(self.items.len() as u64) as usize])
        }
    }

    /// Members in the set's own (deterministic) order.
    pub fn items(&self) -> &[u32] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_pick() {
        let mut set = LiveSet::with_capacity(10);
        for n in [3, 5, 7] {
            set.insert(n);
        }
        set.insert(5);
        assert_eq!(set.len(), 3);
        set.remove(3);
        set.remove(3);
        assert!(!set.contains(3) && set.contains(7) && set.contains(5));
        let mut rng = Rng::new(1);
        for _ in 0..20 {
            assert!(matches!(set.pick(&mut rng), Some(5 | 7)));
        }
        set.remove(5);
        set.remove(7);
        assert!(set.is_empty() && set.pick(&mut rng).is_none());
    }
}
