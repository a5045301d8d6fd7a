//! Which block to ask which source for: a pure state machine, no I/O.
//!
//! Sources *pull* work: whenever one has room for another request it asks
//! [`Scheduler::next_request`], sized by its measured speed, so fast sources
//! naturally carry more of the file and a slow one never holds up the rest
//! for long. Blocks are handed out lowest index first (good for the disk and
//! for previews), only from blocks the source holds.
//!
//! When every missing block is already requested somewhere, the download is
//! in its **endgame**: an idle source may duplicate one outstanding block
//! (at most [`MAX_OWNERS`] requests per block). Whichever copy arrives first
//! wins; requests left holding only finished blocks are returned for
//! cancellation. Once the sources' paces are known ([`Scheduler::set_pace`]),
//! a source duplicates the block its owner is expected to deliver last, and
//! only if it can fetch it sooner than that: a duplicate that loses is
//! bandwidth spent for nothing.

use std::collections::HashMap;

use canopy_common::proto::Bitfield;

/// Identifies a source within one download.
pub type SourceId = u32;
/// Identifies one request within one download.
pub type RequestId = u64;

/// Most requests that may hold the same block at once (one plus endgame
/// duplicates).
pub const MAX_OWNERS: u8 = 2;

/// A range of blocks a source should fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub id: RequestId,
    pub first: u32,
    pub count: u32,
}

/// What a received block means for the download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// First copy: verify-and-write it. `cancel` lists requests that now hold
    /// only finished blocks.
    Fresh { cancel: Vec<RequestId> },
    /// Another request delivered it first; drop these bytes.
    Duplicate,
}

#[derive(Debug)]
struct Outstanding {
    source: SourceId,
    /// Next block this request will deliver.
    next: u32,
    end: u32,
}

/// How fast a source delivers, as measured by its task.
#[derive(Debug, Clone, Copy)]
struct Pace {
    blocks_per_second: f64,
    /// Time from asking to the first byte (the round trip).
    latency: f64,
}

#[derive(Debug)]
pub struct Scheduler {
    done: Bitfield,
    owners: Vec<u8>,
    requests: HashMap<RequestId, Outstanding>,
    /// `None`: the source holds every block.
    haves: HashMap<SourceId, Option<Bitfield>>,
    paces: HashMap<SourceId, Pace>,
    next_id: RequestId,
    /// Missing blocks no request holds, kept in step by [`Scheduler::update`].
    unclaimed: u32,
    /// Where a player reads (see [`Scheduler::set_focus`]).
    focus: Option<u32>,
}

impl Scheduler {
    /// A scheduler for a file of `done.len()` blocks, of which the set bits
    /// are already verified on disk.
    pub fn new(done: Bitfield) -> Self {
        let blocks = done.len() as usize;
        Scheduler {
            unclaimed: done.len() - done.count(),
            done,
            owners: vec![0; blocks],
            requests: HashMap::new(),
            haves: HashMap::new(),
            paces: HashMap::new(),
            next_id: 0,
            focus: None,
        }
    }

    /// Hands out blocks from `block` on (wrapping round to the start)
    /// rather than from the first: someone plays the file from there and
    /// waits for it. `None` goes back to first-missing-first.
    pub fn set_focus(&mut self, block: Option<u32>) {
        self.focus = block.filter(|&b| b < self.block_count());
    }

    fn is_unclaimed(&self, block: u32) -> bool {
        !self.done.get(block) && self.owners[block as usize] == 0
    }

    /// Changes one block's state, keeping the unclaimed count in step.
    fn update(&mut self, block: u32, change: impl FnOnce(&mut Self)) {
        let before = self.is_unclaimed(block);
        change(self);
        match (before, self.is_unclaimed(block)) {
            (true, false) => self.unclaimed -= 1,
            (false, true) => self.unclaimed += 1,
            _ => {}
        }
    }

    pub fn block_count(&self) -> u32 {
        self.done.len()
    }

    pub fn done(&self) -> &Bitfield {
        &self.done
    }

    pub fn is_complete(&self) -> bool {
        self.done.is_full()
    }

    /// Registers or refreshes what a source holds (`None`: everything).
    pub fn set_have(&mut self, source: SourceId, have: Option<Bitfield>) {
        self.haves.insert(source, have);
    }

    /// Records how fast `source` delivers (blocks per second) and how long
    /// a request takes to start arriving (seconds). Used in the endgame.
    pub fn set_pace(&mut self, source: SourceId, blocks_per_second: f64, latency: f64) {
        if blocks_per_second > 0.0 {
            let pace = Pace {
                blocks_per_second,
                latency: latency.max(0.0),
            };
            self.paces.insert(source, pace);
        }
    }

    /// Forgets a source; its outstanding requests are released and returned.
    pub fn remove_source(&mut self, source: SourceId) -> Vec<RequestId> {
        self.haves.remove(&source);
        self.paces.remove(&source);
        let ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, request)| request.source == source)
            .map(|(&id, _)| id)
            .collect();
        for &id in &ids {
            self.release(id);
        }
        ids
    }

    fn source_has(&self, source: SourceId, block: u32) -> bool {
        match self.haves.get(&source) {
            Some(None) => true,
            Some(Some(have)) => have.get(block),
            None => false,
        }
    }

    /// The next request for `source`, which has `in_flight` requests open
    /// and could take `max_blocks` at its measured pace: the rules every
    /// source follows when it has room for another request.
    ///
    /// * In the endgame (nothing unclaimed) a source races one block at a
    ///   time: every duplicate that loses is wasted bandwidth.
    /// * Near the end no source takes more than its share of what is left,
    ///   so a slow one cannot hold the last blocks; once paces are known, no
    ///   more than its share of the time left, so the sources finish together.
    pub fn plan(&mut self, source: SourceId, in_flight: usize, max_blocks: u32) -> Option<Assignment> {
        if self.unclaimed == 0 && in_flight > 0 {
            return None;
        }
        let share = (self.unclaimed as usize).div_ceil(self.sources().max(1)).max(1) as u32;
        let fair = match self.fair_allowance(source) {
            Some(0) if in_flight > 0 => return None,
            Some(allowance) => allowance.max(1),
            None => u32::MAX,
        };
        self.next_request(source, max_blocks.min(share).min(fair))
    }

    /// The next range for `source`, at most `max_blocks` long, or `None` if
    /// it has nothing useful to fetch right now.
    pub fn next_request(&mut self, source: SourceId, max_blocks: u32) -> Option<Assignment> {
        let max_blocks = max_blocks.max(1);
        let blocks = self.block_count();
        let wanted =
            |s: &Self, b: u32| !s.done.get(b) && s.owners[b as usize] == 0 && s.source_has(source, b);
        let start = self.focus.unwrap_or(0);
        if let Some(first) = (start..blocks).chain(0..start).find(|&b| wanted(self, b)) {
            let mut count = 1;
            while count < max_blocks && first + count < blocks && wanted(self, first + count) {
                count += 1;
            }
            return Some(self.assign(source, first, count));
        }
        // Endgame: duplicate an outstanding block this source holds and is
        // not already fetching: the one expected last from its owners (the
        // least shared, lowest first, while paces are unknown).
        let fetching_here = |s: &Self, b: u32| {
            s.requests
                .values()
                .any(|r| r.source == source && r.next <= b && b < r.end)
        };
        let candidates: Vec<u32> = (0..blocks)
            .filter(|&b| {
                !self.done.get(b) && self.owners[b as usize] < MAX_OWNERS && self.source_has(source, b)
            })
            .filter(|&b| !fetching_here(self, b))
            .collect();
        let by_owners = candidates
            .iter()
            .copied()
            .min_by_key(|&b| self.owners[b as usize])?;
        let Some(own) = self.paces.get(&source).copied() else {
            return Some(self.assign(source, by_owners, 1));
        };
        let (candidate, eta) = candidates.iter().map(|&b| (b, self.expected_arrival(b))).fold(
            (by_owners, f64::NEG_INFINITY),
            |best, next| {
                if next.1 > best.1 {
                    next
                } else {
                    best
                }
            },
        );
        // Fetching it here takes a round trip and one block at our pace.
        let ours = own.latency + 1.0 / own.blocks_per_second;
        (eta > ours).then(|| self.assign(source, candidate, 1))
    }

    /// Seconds until `block` is expected from the requests holding it
    /// (infinite if a holder's pace is unknown). A source's requests share
    /// its pace evenly: by the time the block at position `p` of one request
    /// arrives, every other request of that source has delivered up to `p`
    /// blocks too.
    fn expected_arrival(&self, block: u32) -> f64 {
        self.requests
            .values()
            .filter(|r| r.next <= block && block < r.end)
            .map(|holder| {
                let Some(pace) = self.paces.get(&holder.source) else {
                    return f64::INFINITY;
                };
                let position = block - holder.next + 1;
                let ahead: u32 = self
                    .requests
                    .values()
                    .filter(|r| r.source == holder.source)
                    .map(|r| (r.end - r.next).min(position))
                    .sum();
                f64::from(ahead) / pace.blocks_per_second
            })
            .fold(f64::INFINITY, f64::min)
    }

    fn assign(&mut self, source: SourceId, first: u32, count: u32) -> Assignment {
        let id = self.next_id;
        self.next_id += 1;
        for block in first..first + count {
            self.update(block, |s| s.owners[block as usize] += 1);
        }
        self.requests.insert(
            id,
            Outstanding {
                source,
                next: first,
                end: first + count,
            },
        );
        Assignment { id, first, count }
    }

    /// Records a block verified outside any request (the tail block that
    /// came with the block layer).
    pub fn mark_done(&mut self, block: u32) {
        self.update(block, |s| s.done.set(block));
    }

    /// Whether `block` is already verified.
    pub fn is_done(&self, block: u32) -> bool {
        self.done.get(block)
    }

    /// Request `id` delivered `block` (its next one) and it was verified.
    pub fn received(&mut self, id: RequestId, block: u32) -> Received {
        let duplicate = self.done.get(block);
        self.update(block, |s| {
            if let Some(request) = s.requests.get_mut(&id) {
                if request.next == block {
                    request.next += 1;
                    s.owners[block as usize] -= 1;
                    if request.next == request.end {
                        s.requests.remove(&id);
                    }
                }
            }
            s.done.set(block);
        });
        if duplicate {
            return Received::Duplicate;
        }
        let cancel = self
            .requests
            .iter()
            .filter(|(_, r)| (r.next..r.end).all(|b| self.done.get(b)))
            .map(|(&id, _)| id)
            .collect();
        Received::Fresh { cancel }
    }

    /// Takes back a block marked done that never reached the disk, so it is
    /// fetched again (see `ledger`).
    pub fn forget(&mut self, block: u32) {
        self.update(block, |s| s.done.clear(block));
    }

    /// The requests still open.
    pub fn request_ids(&self) -> Vec<RequestId> {
        self.requests.keys().copied().collect()
    }

    /// Checks the scheduler's own books — each block's owner count is the
    /// number of open requests holding it, and the unclaimed count is the
    /// number of missing blocks nobody holds — and puts right whatever
    /// disagrees, returning how many figures were wrong. A count that is too
    /// high would keep a block from ever being asked for again.
    pub fn audit(&mut self) -> u32 {
        let mut owners = vec![0u8; self.owners.len()];
        for request in self.requests.values() {
            for block in request.next..request.end {
                owners[block as usize] = owners[block as usize].saturating_add(1);
            }
        }
        let mut wrong = owners.iter().zip(&self.owners).filter(|(a, b)| a != b).count() as u32;
        self.owners = owners;
        let unclaimed = (0..self.block_count()).filter(|&b| self.is_unclaimed(b)).count() as u32;
        if unclaimed != self.unclaimed {
            wrong += 1;
            self.unclaimed = unclaimed;
        }
        wrong
    }

    /// Ends request `id` early (failure, stall or cancellation): its
    /// undelivered blocks go back to the pool.
    pub fn release(&mut self, id: RequestId) {
        if let Some(request) = self.requests.remove(&id) {
            for block in request.next..request.end {
                self.update(block, |s| s.owners[block as usize] -= 1);
            }
        }
    }

    /// How many more blocks `source` may take so that, at the measured
    /// paces, every source finishes what is left (unclaimed and in flight)
    /// at about the same time: its pace's share of the whole, less what it
    /// already has in flight. `None` until every source's pace is known.
    pub fn fair_allowance(&self, source: SourceId) -> Option<u32> {
        let own = self.paces.get(&source)?;
        let mut total = 0.0;
        for other in self.haves.keys() {
            total += self.paces.get(other)?.blocks_per_second;
        }
        let in_flight_here: u32 = self
            .requests
            .values()
            .filter(|r| r.source == source)
            .map(|r| r.end - r.next)
            .sum();
        let finish = f64::from(self.unclaimed + self.outstanding_blocks()) / total;
        let allowance = (finish * own.blocks_per_second).ceil() - f64::from(in_flight_here);
        Some(allowance.max(0.0) as u32)
    }

    /// Missing blocks nobody has been asked for yet.
    pub fn unclaimed(&self) -> u32 {
        self.unclaimed
    }

    /// Sources currently registered.
    pub fn sources(&self) -> usize {
        self.haves.len()
    }

    /// Blocks requested but not yet delivered, over all sources.
    pub fn outstanding_blocks(&self) -> u32 {
        self.requests.values().map(|r| r.end - r.next).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(blocks: u32) -> Scheduler {
        Scheduler::new(Bitfield::new(blocks))
    }

    fn deliver(s: &mut Scheduler, a: Assignment) -> Vec<RequestId> {
        let mut cancels = Vec::new();
        for block in a.first..a.first + a.count {
            if let Received::Fresh { cancel } = s.received(a.id, block) {
                cancels.extend(cancel);
            }
        }
        cancels
    }

    #[test]
    fn a_focus_is_served_first_then_the_rest_wrapping_round() {
        let mut s = fresh(10);
        s.set_have(1, None);
        s.set_focus(Some(7));
        let a = s.next_request(1, 2).unwrap();
        assert_eq!((a.first, a.count), (7, 2));
        // The rest of the file after the focus comes before its start...
        let b = s.next_request(1, 4).unwrap();
        assert_eq!((b.first, b.count), (9, 1), "a range stops at the end of the file");
        // ... and then the blocks before the focus, lowest first.
        let c = s.next_request(1, 4).unwrap();
        assert_eq!((c.first, c.count), (0, 4));
        // A focus past the end is ignored.
        s.set_focus(Some(10));
        assert_eq!(s.next_request(1, 1).unwrap().first, 4);
    }

    #[test]
    fn hands_out_disjoint_ranges_lowest_first() {
        let mut s = fresh(10);
        s.set_have(1, None);
        s.set_have(2, None);
        let a = s.next_request(1, 4).unwrap();
        let b = s.next_request(2, 4).unwrap();
        assert_eq!((a.first, a.count, b.first, b.count), (0, 4, 4, 4));
        deliver(&mut s, a);
        deliver(&mut s, b);
        let c = s.next_request(1, 4).unwrap();
        assert_eq!((c.first, c.count), (8, 2));
        deliver(&mut s, c);
        assert!(s.is_complete());
        assert_eq!(s.next_request(1, 4), None);
    }

    #[test]
    fn only_asks_sources_for_blocks_they_hold() {
        let mut s = fresh(8);
        let mut have = Bitfield::new(8);
        have.set(5);
        have.set(6);
        s.set_have(1, Some(have));
        let a = s.next_request(1, 8).unwrap();
        assert_eq!((a.first, a.count), (5, 2));
        deliver(&mut s, a);
        assert_eq!(s.next_request(1, 8), None);
    }

    #[test]
    fn a_failed_request_returns_its_remaining_blocks() {
        let mut s = fresh(6);
        s.set_have(1, None);
        s.set_have(2, None);
        let a = s.next_request(1, 6).unwrap();
        assert_eq!(s.received(a.id, 0), Received::Fresh { cancel: vec![] });
        assert_eq!(s.remove_source(1), vec![a.id]);
        let b = s.next_request(2, 6).unwrap();
        assert_eq!((b.first, b.count), (1, 5));
    }

    #[test]
    fn endgame_duplicates_and_cancels_the_loser() {
        let mut s = fresh(3);
        s.set_have(1, None);
        s.set_have(2, None);
        let slow = s.next_request(1, 3).unwrap();
        assert_eq!(s.received(slow.id, 0), Received::Fresh { cancel: vec![] });
        // Nothing unassigned is left: source 2 duplicates an outstanding block.
        let dup = s.next_request(2, 3).unwrap();
        assert_eq!((dup.first, dup.count), (1, 1));
        let dup2 = s.next_request(2, 3).unwrap();
        assert_eq!((dup2.first, dup2.count), (2, 1));
        // No third copy of a block.
        assert_eq!(s.next_request(2, 3), None);
        assert_eq!(s.received(dup.id, 1), Received::Fresh { cancel: vec![] });
        // Block 2 arrives from the duplicate: the slow request holds nothing
        // useful any more and is returned for cancellation.
        assert_eq!(
            s.received(dup2.id, 2),
            Received::Fresh {
                cancel: vec![slow.id]
            }
        );
        s.release(slow.id);
        assert!(s.is_complete());
        assert_eq!(s.outstanding_blocks(), 0);
        assert_eq!(s.received(slow.id, 1), Received::Duplicate);
    }

    #[test]
    fn a_paced_endgame_duplicates_the_block_expected_last_and_only_if_it_helps() {
        let mut s = fresh(12);
        for source in 1..=3 {
            s.set_have(source, None);
        }
        // Source 1 (fast) holds 0..4 and 4..6; source 2 (slow) holds 6..12.
        let a = s.next_request(1, 4).unwrap();
        let b = s.next_request(1, 2).unwrap();
        let c = s.next_request(2, 6).unwrap();
        assert_eq!((a.first, b.first, c.first, c.count), (0, 4, 6, 6));
        s.set_pace(1, 40.0, 0.01);
        s.set_pace(2, 4.0, 0.01);
        // Source 3, as fast as source 1, takes the slow source's last block.
        s.set_pace(3, 40.0, 0.01);
        let dup = s.next_request(3, 4).unwrap();
        assert_eq!((dup.first, dup.count), (11, 1));
        // A source that would take longer than any owner stays idle.
        let mut s2 = fresh(4);
        s2.set_have(1, None);
        s2.set_have(2, None);
        let a = s2.next_request(1, 4).unwrap();
        assert_eq!(a.count, 4);
        s2.set_pace(1, 40.0, 0.01);
        s2.set_pace(2, 1.0, 0.01);
        assert_eq!(s2.next_request(2, 4), None);
        // Unknown paces: the old rule (least shared, lowest first).
        let mut s3 = fresh(2);
        s3.set_have(1, None);
        s3.set_have(2, None);
        s3.next_request(1, 2).unwrap();
        assert_eq!(s3.next_request(2, 2).map(|d| d.first), Some(0));
    }

    #[test]
    fn near_the_end_each_source_takes_its_pace_share_of_what_is_left() {
        let mut s = fresh(100);
        s.set_have(1, None);
        s.set_have(2, None);
        assert_eq!(s.fair_allowance(1), None);
        s.set_pace(1, 30.0, 0.01);
        assert_eq!(s.fair_allowance(1), None, "source 2's pace is still unknown");
        s.set_pace(2, 10.0, 0.01);
        // 100 blocks at 40 blocks/s: 2.5 s, of which source 1 covers 75.
        assert_eq!(s.fair_allowance(1), Some(75));
        assert_eq!(s.fair_allowance(2), Some(25));
        // Source 2 holding 40 already has more than its share of the time.
        s.next_request(2, 40).unwrap();
        assert_eq!(s.fair_allowance(2), Some(0));
        assert_eq!(s.fair_allowance(1), Some(75));
    }

    #[test]
    fn the_unclaimed_count_stays_true_through_any_sequence() {
        let brute = |s: &Scheduler| (0..s.block_count()).filter(|&b| s.is_unclaimed(b)).count() as u32;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut s = fresh(40);
        for source in 0..4 {
            s.set_have(source, None);
        }
        let mut live: Vec<Assignment> = Vec::new();
        for _ in 0..2000 {
            match next() % 4 {
                0 | 1 => {
                    if let Some(a) = s.next_request((next() % 4) as u32, 1 + (next() % 5) as u32) {
                        live.push(a);
                    }
                }
                2 if !live.is_empty() => {
                    let a = live.swap_remove((next() as usize) % live.len());
                    let delivered = (next() % (u64::from(a.count) + 1)) as u32;
                    for block in a.first..a.first + delivered {
                        s.received(a.id, block);
                    }
                    s.release(a.id);
                }
                _ => s.mark_done((next() % 40) as u32),
            }
            assert_eq!(s.unclaimed(), brute(&s));
        }
    }

    #[test]
    fn resumes_with_blocks_already_done() {
        let mut done = Bitfield::new(5);
        done.set(0);
        done.set(1);
        done.set(3);
        let mut s = Scheduler::new(done);
        s.set_have(1, None);
        let a = s.next_request(1, 5).unwrap();
        assert_eq!((a.first, a.count), (2, 1));
        let b = s.next_request(1, 5).unwrap();
        assert_eq!((b.first, b.count), (4, 1));
    }
}
