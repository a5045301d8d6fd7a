//! Votes a supernode keeps for searchers ([`crate::Supernode::hand_in_votes`],
//! [`crate::Supernode::votes_for`]).
//!
//! Each leaf hands in its own signed votes on files (Credence's thumbs up
//! or down, `common::proto::credence`); a searcher asks for the votes on
//! the files its search found and weighs them by its own agreement with
//! each voter. The supernode judges nothing: it checks that each vote is
//! the leaf's own and well signed, keeps the newest per voter and file,
//! and hands them out. Only a joined leaf votes here, so one machine's
//! thousand made-up identities need a thousand joined sessions (each
//! passing possession checks) to be heard — and a searcher gives voters it
//! has no history with almost no weight anyway.
//!
//! Votes also travel with hits: a supernode that answers a query from
//! afar sends the votes it keeps on those files back along the query's
//! path (`OverlayMessage::HitNotes`), and the searcher's supernode keeps
//! them for its leaf ([`VoteCache::relay_in`]). Such relayed votes are
//! second-class: a file's room goes to its own leaves' votes first, so a
//! neighbour cannot push them out with a flood of its own.

use std::collections::HashMap;

use canopy_common::proto::credence::{SignedVote, MAX_VOTES_PER_HIT};
use canopy_common::proto::{ContentHash, PeerId};

/// Most voters kept per file: the newest win. A searcher reads at most
/// [`MAX_VOTES_PER_HIT`] of them.
pub const MAX_VOTES_PER_FILE: usize = 32;
/// Most votes kept in all: about 134 bytes each, so 13 MiB at most.
pub const MAX_VOTES: usize = 100_000;

/// Seconds since the Unix epoch, the clock votes are dated by.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The votes, by file.
#[derive(Debug, Default)]
pub struct VoteCache {
    by_file: HashMap<ContentHash, Vec<Kept>>,
    total: usize,
}

#[derive(Debug, Clone)]
struct Kept {
    vote: SignedVote,
    /// Came with hits from another supernode, not from one of our leaves.
    relayed: bool,
}

impl VoteCache {
    /// Keeps those of `votes` that are `leaf`'s own, verify at `now` and
    /// are newer than what `leaf` said of the same file before; how many.
    pub fn hand_in(&mut self, leaf: PeerId, votes: &[SignedVote], now: u64) -> u32 {
        let own = votes.iter().filter(|vote| vote.voter == leaf);
        own.filter(|vote| self.keep(vote, false, now)).count() as u32
    }

    /// Keeps those of `votes`, on hits from another supernode, that verify
    /// at `now`, as room allows after our own leaves' votes; how many.
    pub fn relay_in(&mut self, votes: &[SignedVote], now: u64) -> u32 {
        votes.iter().filter(|vote| self.keep(vote, true, now)).count() as u32
    }

    /// Keeps `vote` if it verifies, is newer than what its voter said of
    /// the file before, and finds room: a full file makes room by dropping
    /// its oldest relayed vote, or (for a leaf's own) its oldest vote.
    fn keep(&mut self, vote: &SignedVote, relayed: bool, now: u64) -> bool {
        let file = self.by_file.entry(vote.content).or_default();
        if let Some(known) = file.iter().position(|k| k.vote.voter == vote.voter) {
            if file[known].vote.issued >= vote.issued || vote.verify(now).is_err() {
                return false;
            }
            // A leaf's own word stays first-class once it was.
            let relayed = relayed && file[known].relayed;
            file[known] = Kept {
                vote: vote.clone(),
                relayed,
            };
            return true;
        }
        if vote.verify(now).is_err() {
            return false;
        }
        if file.len() >= MAX_VOTES_PER_FILE {
            let oldest = |pool: &mut dyn Iterator<Item = (usize, &Kept)>| {
                pool.min_by_key(|(_, k)| k.vote.issued).map(|(at, _)| at)
            };
            let victim = oldest(&mut file.iter().enumerate().filter(|(_, k)| k.relayed))
                .or_else(|| (!relayed).then(|| oldest(&mut file.iter().enumerate())).flatten());
            let Some(victim) = victim else {
                return false;
            };
            file.swap_remove(victim);
            self.total -= 1;
        }
        file.push(Kept {
            vote: vote.clone(),
            relayed,
        });
        self.total += 1;
        self.make_room(&vote.content);
        true
    }

    /// Past [`MAX_VOTES`], drops every vote on some file other than
    /// `keep`. Which one is left to the map's order: an attacker cannot
    /// choose it, and a file that matters is voted on again by the next
    /// downloaders.
    fn make_room(&mut self, keep: &ContentHash) {
        while self.total > MAX_VOTES {
            let Some(victim) = self.by_file.keys().find(|file| *file != keep).copied() else {
                return;
            };
            if let Some(dropped) = self.by_file.remove(&victim) {
                self.total -= dropped.len();
            }
        }
    }

    /// Up to [`MAX_VOTES_PER_HIT`] votes on each of `files`, newest first.
    pub fn votes_for(&self, files: &[ContentHash]) -> Vec<SignedVote> {
        let mut out = Vec::new();
        for file in files {
            let Some(votes) = self.by_file.get(file) else {
                continue;
            };
            let mut newest: Vec<&SignedVote> = votes.iter().map(|kept| &kept.vote).collect();
            newest.sort_by_key(|vote| std::cmp::Reverse(vote.issued));
            out.extend(newest.into_iter().take(MAX_VOTES_PER_HIT).cloned());
        }
        out
    }

    /// Votes kept in all.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::credence::Verdict;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    const NOW: u64 = 1_800_000_000;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn vote(key: &Ed25519KeyPair, file: u8, verdict: Verdict, issued: u64) -> SignedVote {
        let voter = PeerId(key.public_key().as_ref().try_into().unwrap());
        SignedVote::sign(voter, ContentHash([file; 32]), verdict, issued, |message| {
            key.sign(message).as_ref().try_into().unwrap()
        })
    }

    fn id(key: &Ed25519KeyPair) -> PeerId {
        PeerId(key.public_key().as_ref().try_into().unwrap())
    }

    #[test]
    fn only_a_leafs_own_well_signed_votes_are_kept_and_the_newest_wins() {
        let (alice, mallory) = (key(1), key(2));
        let mut cache = VoteCache::default();
        let mut forged = vote(&alice, 1, Verdict::Authentic, NOW);
        forged.verdict = Verdict::Fake; // the signature no longer matches
        let handed = [
            vote(&alice, 1, Verdict::Authentic, NOW - 10),
            vote(&mallory, 2, Verdict::Fake, NOW), // not alice's
            forged,
            vote(&alice, 3, Verdict::Fake, NOW + 3600), // from the future
        ];
        assert_eq!(cache.hand_in(id(&alice), &handed, NOW), 1);
        // A replay changes nothing; a newer vote replaces the older.
        assert_eq!(cache.hand_in(id(&alice), &handed[..1], NOW), 0);
        assert_eq!(
            cache.hand_in(id(&alice), &[vote(&alice, 1, Verdict::Fake, NOW)], NOW),
            1
        );
        let kept = cache.votes_for(&[ContentHash([1; 32]), ContentHash([2; 32])]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].verdict, Verdict::Fake);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn relayed_votes_never_push_out_a_leafs_own() {
        let mut cache = VoteCache::default();
        let keys: Vec<Ed25519KeyPair> = (0..MAX_VOTES_PER_FILE as u8 + 4).map(|i| key(i + 50)).collect();
        // The file is full of our leaves' votes (old ones)...
        for key in &keys[..MAX_VOTES_PER_FILE] {
            assert_eq!(
                cache.hand_in(id(key), &[vote(key, 9, Verdict::Fake, NOW - 500)], NOW),
                1
            );
        }
        // ... so newer votes from afar find no room,
        let relayed: Vec<SignedVote> = (keys[MAX_VOTES_PER_FILE..].iter())
            .map(|key| vote(key, 9, Verdict::Authentic, NOW))
            .collect();
        assert_eq!(cache.relay_in(&relayed, NOW), 0);
        // while a leaf's vote replaces the oldest, and a forged relayed
        // vote is refused anyway.
        let mut cache = VoteCache::default();
        let mut forged = vote(&keys[0], 9, Verdict::Authentic, NOW);
        forged.content = ContentHash([8; 32]);
        assert_eq!(cache.relay_in(&[forged], NOW), 0);
        assert_eq!(cache.relay_in(&relayed, NOW), relayed.len() as u32);
        assert_eq!(cache.len(), relayed.len());
    }

    #[test]
    fn a_file_keeps_its_newest_voters_and_answers_the_newest_few() {
        let mut cache = VoteCache::default();
        for voter in 0..(MAX_VOTES_PER_FILE as u64 + 8) {
            let key = key(voter as u8 + 10);
            let issued = NOW - 1000 + voter;
            assert_eq!(
                cache.hand_in(id(&key), &[vote(&key, 7, Verdict::Authentic, issued)], NOW),
                1
            );
        }
        assert_eq!(cache.len(), MAX_VOTES_PER_FILE);
        let answered = cache.votes_for(&[ContentHash([7; 32])]);
        assert_eq!(answered.len(), MAX_VOTES_PER_HIT);
        let newest = NOW - 1000 + MAX_VOTES_PER_FILE as u64 + 7;
        assert_eq!(answered[0].issued, newest);
    }
}
