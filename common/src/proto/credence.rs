//! Signed votes on content, weighted by whom *you* have agreed with: the
//! Credence model (Walsh & Sirer, "Experience with an Object Reputation
//! System for Peer-to-Peer Filesharing", NSDI 2006), sans-IO.
//!
//! A content hash proves that the bytes are the bytes, never that a file is
//! what its name says: a decoy named like a famous song is a valid file with
//! its own hash. After downloading, a user can tell — and say so with a
//! [`SignedVote`]: thumbs up ([`Verdict::Authentic`]) or down
//! ([`Verdict::Fake`]), signed with the peer key and bound to the hash.
//!
//! Votes are cheap to forge in bulk (a peer id is a free key pair), so a
//! vote's weight is not given by the network but computed by each reader:
//! [`VoteBook::weight`] is the *correlation* of that voter's past votes with
//! the reader's own, over the objects both voted on. A voter who agreed with
//! me before counts; one who consistently said the opposite is read
//! inverted; a fresh id — one of a thousand Sybils — has no history with me
//! and counts nothing. One transitive step lets a user with few votes
//! borrow the judgement of the voters it trusts most: their correlations
//! with others ([`VoteBook::weight`]) and, asked about a file, their own
//! weighted opinion of it ([`VoteBook::opinion`], [`VoteBook::hear`]).
//!
//! [`rank`] orders search results: publishers the user trusts, then the vote
//! score, then the number of sources (which a polluter inflates with many
//! ids, so it weighs least). docs/TRUST.md names every parameter and the
//! model's limits; the simulator (`canopy-netsim`, pollution scenario) runs
//! this same code to measure it.
//!
//! Everything here is deterministic (ordered maps, no clock, no randomness):
//! the caller passes `now`, and the simulator's runs are reproducible.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::id::{ContentHash, PeerId};

/// Domain tag that starts every signed vote, so a vote's signature can never
/// be replayed as any other signed Canopy message (or the reverse).
pub const VOTE_DOMAIN: &[u8] = b"canopy-vote-v1\0";

/// How far in the future a vote's `issued` may lie: ten minutes, a clock
/// that far off still joins QUIC (no certificate dates are checked) but
/// rarely more.
pub const MAX_CLOCK_SKEW: u64 = 10 * 60;

/// Oldest vote accepted: one year. What a file *is* does not change, but
/// interest in a popular release fades within months (Liang et al., INFOCOM
/// 2005, watched decoys of songs in their first weeks), and a bound keeps
/// keys compromised long ago from speaking forever.
pub const MAX_VOTE_AGE: u64 = 365 * 24 * 60 * 60;

/// Most votes gossiped with one search hit (and accepted by
/// [`decode_votes`]). A vote is about 134 bytes on the wire, so eight add
/// about 1.1 KB to a hit; the simulator's pollution scenario measures that
/// a handful of well-chosen votes is what ranking needs.
pub const MAX_VOTES_PER_HIT: usize = 8;

/// Most of its own votes a peer hands to another in one exchange (a
/// downloader and its source swapping their newest votes, see
/// docs/TRUST.md): how two peers who downloaded the same things learn they
/// agree, so each has history with the other. 32 votes are about 4.3 KB,
/// under 0.1 % of a 5 MB song.
pub const MAX_VOTES_PER_EXCHANGE: usize = 32;

/// Most voters a [`VoteBook`] remembers (besides its owner).
pub const MAX_VOTERS: usize = 4096;
/// Most votes remembered from one voter; beyond, its oldest go.
pub const MAX_VOTES_PER_VOTER: usize = 512;
/// Most votes remembered from all other voters together: about 8 MB of
/// book at most (votes, indexes and the signatures kept for gossip).
pub const MAX_TOTAL_VOTES: usize = 65_536;
/// Most of the owner's own votes remembered; beyond, the oldest go. A user
/// votes on what they downloaded, so this is years of use.
pub const MAX_OWN_VOTES: usize = 16_384;

/// The bounds of one [`VoteBook`]. [`Limits::DEFAULT`] is what a node uses;
/// smaller books (the simulator keeps ten thousand of them) evict sooner by
/// the same rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most other voters ([`MAX_VOTERS`]).
    pub voters: usize,
    /// Most votes per voter ([`MAX_VOTES_PER_VOTER`]).
    pub votes_per_voter: usize,
    /// Most votes of others in all ([`MAX_TOTAL_VOTES`]).
    pub total: usize,
    /// Most own votes ([`MAX_OWN_VOTES`]).
    pub own: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        voters: MAX_VOTERS,
        votes_per_voter: MAX_VOTES_PER_VOTER,
        total: MAX_TOTAL_VOTES,
        own: MAX_OWN_VOTES,
    };
}

/// Fewest objects two voters must both have voted on before their
/// correlation means anything. Credence likewise ignores peers with too
/// little overlap; four keeps a chance agreement on two or three coin flips
/// from counting.
pub const MIN_COMMON: u32 = 4;

/// A correlation counts only when it is unlikely to be chance: under
/// independence, `phi * sqrt(n)` is roughly standard normal, so
/// `|phi| >= SIGNIFICANCE_Z / sqrt(n)` keeps about 10 % of random voters
/// (two-sided, z = 1.64) — and with [`MIN_COMMON`] = 4, only perfect
/// agreement on four files counts (a coin-flipping voter manages it one
/// time in sixteen), five of six on six files. A first choice of z = 2.33
/// (2 %) made weights all but impossible for users with a few dozen votes
/// in the simulator (four files cannot reach it at all, 2.33/√4 > 1).
pub const SIGNIFICANCE_Z: f64 = 1.64;

/// Shrinks a correlation measured on few objects: weight = phi · n / (n +
/// prior). A voter who agreed on 4 objects weighs at most 0.67, on 12 at
/// most 0.86. (A Bayesian-style pseudo-count; our choice, not Credence's.)
pub const CONFIDENCE_PRIOR: f64 = 2.0;

/// How many of my best-correlated voters lend me their correlations (the
/// transitive step). Bounds its cost to `TRUST_SOURCES × MAX_TOTAL_VOTES`
/// lookups per change of the book.
pub const TRUST_SOURCES: usize = 8;

/// A second-hand weight (my trust in j times j's correlation with k) counts
/// half: it is one step further from anything I checked myself.
pub const TRANSITIVE_DISCOUNT: f64 = 0.5;

/// Fewest direct weight a voter needs to lend its correlations onward.
pub const MIN_TRUST_SOURCE_WEIGHT: f64 = 0.3;

/// Most opinions heard from trusted voters ([`VoteBook::hear`]) a book
/// keeps; beyond, the oldest heard go.
pub const MAX_HEARSAY: usize = 4096;

/// Pseudo-weight in [`Score::confidence`]: a score backed by weight 1 counts
/// half of its value, so one lukewarm voter does not beat a chorus.
pub const SCORE_PRIOR: f64 = 1.0;

/// A thumbs up or down on a file, as a user judged it after downloading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Verdict {
    /// The file is what its name says.
    Authentic,
    /// A decoy: the name lies about the content (noise, a different song,
    /// an advert, malware).
    Fake,
}

impl Verdict {
    /// The byte signed for this verdict: postcard's variant index, 0 for
    /// authentic, 1 for fake.
    pub fn byte(self) -> u8 {
        match self {
            Verdict::Authentic => 0,
            Verdict::Fake => 1,
        }
    }

    /// +1 for authentic, −1 for fake: the value correlated and averaged.
    pub fn sign(self) -> f64 {
        match self {
            Verdict::Authentic => 1.0,
            Verdict::Fake => -1.0,
        }
    }
}

/// Why a vote, or a list of votes, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    #[error("the signature does not verify with the voter's key for this content, verdict and time")]
    BadSignature,
    #[error("the vote is dated {issued}, more than {MAX_CLOCK_SKEW} s after now ({now})")]
    FromTheFuture { issued: u64, now: u64 },
    #[error("the vote is dated {issued}, more than {MAX_VOTE_AGE} s before now ({now})")]
    TooOld { issued: u64, now: u64 },
    #[error("{count} votes in one list, at most {max} allowed")]
    TooMany { count: u64, max: usize },
    #[error("malformed vote list: {0}")]
    Malformed(String),
    #[error("the vote list has {0} bytes left over after its last vote")]
    TrailingBytes(usize),
    #[error("the vote list is not in canonical form (e.g. an over-long integer)")]
    NotCanonical,
}

/// What a voter thinks of a file it has not voted on, as it answers when
/// asked ([`crate::proto::Request::AskOpinions`]): its
/// [`VoteBook::opinion`] in percent, −100 (surely a fake) to 100 (surely
/// authentic). Unsigned hearsay: it counts only for a receiver with a
/// direct weight for the one who said it ([`VoteBook::hear`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opinion {
    pub content: ContentHash,
    pub percent: i8,
}

impl Opinion {
    /// The opinion of `content` worth `value` (−1 … 1, clamped).
    pub fn new(content: ContentHash, value: f64) -> Opinion {
        Opinion {
            content,
            percent: (value.clamp(-1.0, 1.0) * 100.0).round() as i8,
        }
    }

    /// Its value, −1 … 1; `None` for a percent outside −100 … 100.
    pub fn value(&self) -> Option<f64> {
        (-100..=100)
            .contains(&self.percent)
            .then(|| f64::from(self.percent) / 100.0)
    }
}

/// One voter's verdict on one file, signed with the voter's peer key.
///
/// On the wire (postcard): the voter's 32 key bytes, the 32 hash bytes, the
/// verdict (one byte, 0 or 1), `issued` as a varint, then the 64 signature
/// bytes — about 134 bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    /// Who votes: the Ed25519 public key that signed.
    pub voter: PeerId,
    /// What the vote is about.
    pub content: ContentHash,
    pub verdict: Verdict,
    /// When the vote was cast, in Unix seconds (the voter's clock). A later
    /// vote by the same voter on the same content replaces an earlier one.
    pub issued: u64,
    /// Ed25519 signature of [`SignedVote::message`].
    #[serde(with = "signature_bytes")]
    pub signature: [u8; 64],
}

impl SignedVote {
    /// The exact bytes signed: [`VOTE_DOMAIN`], the 32 bytes of the content
    /// hash, the verdict byte ([`Verdict::byte`]) and `issued` as a u64
    /// big-endian — 56 bytes. The voter is not in the message: an Ed25519
    /// signature already binds the public key that made it (RFC 8032 hashes
    /// the key into every signature).
    pub fn message(content: &ContentHash, verdict: Verdict, issued: u64) -> Vec<u8> {
        let mut message = Vec::with_capacity(VOTE_DOMAIN.len() + 32 + 1 + 8);
        message.extend_from_slice(VOTE_DOMAIN);
        message.extend_from_slice(&content.0);
        message.push(verdict.byte());
        message.extend_from_slice(&issued.to_be_bytes());
        message
    }

    /// Makes a vote; `sign` signs the message with the voter's private key
    /// (the node's key stays where it is, this module never sees it).
    pub fn sign(
        voter: PeerId,
        content: ContentHash,
        verdict: Verdict,
        issued: u64,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> SignedVote {
        let signature = sign(&Self::message(&content, verdict, issued));
        SignedVote {
            voter,
            content,
            verdict,
            issued,
            signature,
        }
    }

    /// Checks the vote at time `now` (Unix seconds): not dated more than
    /// [`MAX_CLOCK_SKEW`] ahead, not older than [`MAX_VOTE_AGE`], and signed
    /// by `voter` for exactly this content, verdict and date. The dates are
    /// checked first: they are free, a signature check is not.
    pub fn verify(&self, now: u64) -> Result<(), VoteError> {
        if self.issued > now.saturating_add(MAX_CLOCK_SKEW) {
            return Err(VoteError::FromTheFuture {
                issued: self.issued,
                now,
            });
        }
        if now.saturating_sub(self.issued) > MAX_VOTE_AGE {
            return Err(VoteError::TooOld {
                issued: self.issued,
                now,
            });
        }
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, self.voter.as_bytes());
        key.verify(
            &Self::message(&self.content, self.verdict, self.issued),
            &self.signature,
        )
        .map_err(|_| VoteError::BadSignature)
    }
}

/// Serde for a 64-byte array as a fixed-size tuple (serde derives arrays
/// only up to 32): postcard writes the 64 bytes with no length, JSON a list
/// of 64 numbers.
mod signature_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in bytes {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 64], D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = [u8; 64];
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut out = [0u8; 64];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_tuple(64, Bytes)
    }
}

/// Encodes a list of votes (postcard: a varint count, then each vote), the
/// form gossiped with a hit. The caller keeps it to [`MAX_VOTES_PER_HIT`].
pub fn encode_votes(votes: &[SignedVote]) -> Vec<u8> {
    postcard::to_stdvec(votes).expect("votes always serialize")
}

/// Decodes a list of votes from a stranger: at most [`MAX_VOTES_PER_HIT`]
/// (the count is read before anything is allocated), no bytes left over,
/// canonical form only (the bytes must be exactly what [`encode_votes`]
/// writes, so one list has one encoding). Signatures and dates are *not*
/// checked here: call [`SignedVote::verify`] on each vote with the time.
pub fn decode_votes(bytes: &[u8]) -> Result<Vec<SignedVote>, VoteError> {
    decode_vote_list(bytes, MAX_VOTES_PER_HIT)
}

/// [`decode_votes`] with another bound: `max` votes (e.g.
/// [`MAX_VOTES_PER_EXCHANGE`] for an exchange between two peers).
pub fn decode_vote_list(bytes: &[u8], max: usize) -> Result<Vec<SignedVote>, VoteError> {
    let (count, _) =
        postcard::take_from_bytes::<u64>(bytes).map_err(|e| VoteError::Malformed(e.to_string()))?;
    if count > max as u64 {
        return Err(VoteError::TooMany { count, max });
    }
    let (votes, rest) = postcard::take_from_bytes::<Vec<SignedVote>>(bytes)
        .map_err(|e| VoteError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(VoteError::TrailingBytes(rest.len()));
    }
    if encode_votes(&votes) != bytes {
        return Err(VoteError::NotCanonical);
    }
    Ok(votes)
}

/// What the votes known to one node say about one file, for that node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Weighted mean verdict, from −1 (fake) to +1 (authentic); 0 when no
    /// one with any weight voted. The owner's own vote, if any, decides it.
    pub value: f64,
    /// Voters with a weight for me whose votes were counted (strangers,
    /// with weight 0, are not), plus one for my own vote.
    pub voters: u32,
    /// Total weight behind `value`: the sum of the counted voters'
    /// |weight| (1 for my own vote).
    pub weight: f64,
    /// The owner's own vote on the file, if any.
    pub own: Option<Verdict>,
}

impl Score {
    /// No votes at all.
    pub const NONE: Score = Score {
        value: 0.0,
        voters: 0,
        weight: 0.0,
        own: None,
    };

    /// The value discounted by how much weight stands behind it:
    /// `value · weight / (weight + SCORE_PRIOR)`, the key [`rank`] sorts by.
    /// Own votes count as certain (±1).
    pub fn confidence(&self) -> f64 {
        match self.own {
            Some(verdict) => verdict.sign(),
            None if self.weight > 0.0 => self.value * self.weight / (self.weight + SCORE_PRIOR),
            None => 0.0,
        }
    }
}

/// Counts over the objects both I and one voter voted on, kept up to date
/// as votes come and go, so a direct weight costs O(1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Common {
    /// Objects both voted on.
    n: u32,
    /// Of those, how many I called authentic.
    mine: u32,
    /// Of those, how many they called authentic.
    theirs: u32,
    /// Of those, how many we both called authentic.
    both: u32,
}

impl Common {
    fn add(&mut self, mine: Verdict, theirs: Verdict) {
        let (m, t) = (mine == Verdict::Authentic, theirs == Verdict::Authentic);
        self.n += 1;
        self.mine += u32::from(m);
        self.theirs += u32::from(t);
        self.both += u32::from(m && t);
    }

    fn remove(&mut self, mine: Verdict, theirs: Verdict) {
        let (m, t) = (mine == Verdict::Authentic, theirs == Verdict::Authentic);
        self.n -= 1;
        self.mine -= u32::from(m);
        self.theirs -= u32::from(t);
        self.both -= u32::from(m && t);
    }

    /// The weight these counts earn: the phi coefficient (Pearson's
    /// correlation of two ±1 vote vectors), zero unless there are
    /// [`MIN_COMMON`] objects, both sides varied (a voter who says
    /// "authentic" to everything tells nothing — the cheapest Sybil) and the
    /// correlation is significant; then shrunk by [`CONFIDENCE_PRIOR`].
    fn weight(&self) -> f64 {
        if self.n < MIN_COMMON {
            return 0.0;
        }
        let n = f64::from(self.n);
        let (a, b, p) = (f64::from(self.mine), f64::from(self.theirs), f64::from(self.both));
        let variance = a * (n - a) * b * (n - b);
        if variance <= 0.0 {
            return 0.0;
        }
        let phi = (n * p - a * b) / variance.sqrt();
        if phi.abs() < SIGNIFICANCE_Z / n.sqrt() {
            return 0.0;
        }
        phi.clamp(-1.0, 1.0) * n / (n + CONFIDENCE_PRIOR)
    }
}

/// What one other voter said, as far as this book remembers.
#[derive(Debug, Clone, Default)]
struct Voter {
    /// Content → (verdict, issued).
    votes: BTreeMap<ContentHash, (Verdict, u64)>,
    /// Agreement with my own votes.
    common: Common,
    /// When (the book's own counter, not the voter's dates: those are
    /// chosen by the voter) this voter last gave a vote that was kept.
    seen: u64,
    /// Whether it has a direct weight (eviction keeps these longest).
    useful: bool,
}

/// Results of the transitive step, recomputed lazily after any change.
#[derive(Debug, Default)]
struct Cache {
    /// My best-correlated voters with their direct weights, once computed.
    sources: Option<Vec<(PeerId, f64)>>,
    /// Weights computed since the last change.
    weights: BTreeMap<PeerId, f64>,
}

/// One node's local knowledge of votes: its own, and other voters'
/// opinions heard with search hits. Bounded in every dimension
/// ([`MAX_VOTERS`], [`MAX_VOTES_PER_VOTER`], [`MAX_TOTAL_VOTES`],
/// [`MAX_OWN_VOTES`]); when full, voters with no weight for me go first,
/// least recently heard first, so a flood of fresh ids cannot push out the
/// voters I learnt to trust.
///
/// Votes given to [`VoteBook::observe`] must already be verified
/// ([`SignedVote::verify`]); the book checks only that it is not a replay
/// or an older vote than one it holds.
#[derive(Debug)]
pub struct VoteBook {
    me: PeerId,
    limits: Limits,
    /// My votes: content → (verdict, issued).
    own: BTreeMap<ContentHash, (Verdict, u64)>,
    /// My votes by date, for evicting the oldest.
    own_by_date: BTreeSet<(u64, ContentHash)>,
    voters: BTreeMap<PeerId, Voter>,
    /// Content → who voted on it (an index for scores and correlations).
    by_content: BTreeMap<ContentHash, BTreeSet<PeerId>>,
    /// Eviction order: (useful, seen, voter), least useful first.
    eviction: BTreeSet<(bool, u64, PeerId)>,
    /// Signatures of others' votes given with [`VoteBook::observe_signed`],
    /// so they can be gossiped on.
    signatures: BTreeMap<(PeerId, ContentHash), [u8; 64]>,
    /// Opinions heard from voters asked about a search's results:
    /// content → teller → (opinion, when heard).
    hearsay: BTreeMap<ContentHash, BTreeMap<PeerId, (f64, u64)>>,
    /// The same by when heard, for evicting the oldest.
    hearsay_order: BTreeSet<(u64, ContentHash, PeerId)>,
    total: usize,
    clock: u64,
    cache: Mutex<Cache>,
}

impl VoteBook {
    /// An empty book for the node `me`, with the default bounds.
    pub fn new(me: PeerId) -> Self {
        Self::with_limits(me, Limits::DEFAULT)
    }

    /// An empty book with other bounds (each at least 1).
    pub fn with_limits(me: PeerId, limits: Limits) -> Self {
        let limits = Limits {
            voters: limits.voters.max(1),
            votes_per_voter: limits.votes_per_voter.max(1),
            total: limits.total.max(1),
            own: limits.own.max(1),
        };
        VoteBook {
            me,
            limits,
            own: BTreeMap::new(),
            own_by_date: BTreeSet::new(),
            voters: BTreeMap::new(),
            by_content: BTreeMap::new(),
            eviction: BTreeSet::new(),
            signatures: BTreeMap::new(),
            hearsay: BTreeMap::new(),
            hearsay_order: BTreeSet::new(),
            total: 0,
            clock: 0,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Whose book this is.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// Records my own vote (the node signs and gossips it: see
    /// [`VoteBook::own_votes`]). A new vote on the same content replaces
    /// the old one; casting the same verdict again only refreshes the date.
    pub fn cast(&mut self, content: ContentHash, verdict: Verdict, now: u64) {
        if let Some((old, issued)) = self.own.remove(&content) {
            self.own_by_date.remove(&(issued, content));
            self.update_common(&content, Some(old), None);
        }
        while self.own.len() >= self.limits.own {
            let Some((_, oldest)) = self.own_by_date.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.own.remove(&oldest) {
                self.update_common(&oldest, Some(old), None);
            }
        }
        self.own.insert(content, (verdict, now));
        self.own_by_date.insert((now, content));
        self.update_common(&content, None, Some(verdict));
        self.changed();
    }

    /// My own vote on `content` with its date, if I cast one: what the node
    /// answers (signed) when a peer asks what it thinks of that file.
    pub fn own_votes_on(&self, content: &ContentHash) -> Option<(Verdict, u64)> {
        self.own.get(content).copied()
    }

    /// My own vote on `content`, if I cast one.
    pub fn own(&self, content: &ContentHash) -> Option<Verdict> {
        self.own.get(content).map(|&(verdict, _)| verdict)
    }

    /// How many of my own votes the book holds.
    pub fn own_count(&self) -> usize {
        self.own.len()
    }

    /// How many other voters, and how many of their votes, the book holds.
    pub fn size(&self) -> (usize, usize) {
        (self.voters.len(), self.total)
    }

    /// Records another voter's (already verified) vote. Returns false when
    /// it was ignored: my own id, a replay or duplicate, or older than the
    /// vote this voter already gave on this content. A newer vote replaces
    /// the older.
    pub fn observe(&mut self, voter: PeerId, content: ContentHash, verdict: Verdict, issued: u64) -> bool {
        self.insert(voter, content, verdict, issued, None)
    }

    /// [`VoteBook::observe`] for a signed vote, keeping its signature so
    /// [`VoteBook::signed_opinions_about`] can pass it on. The caller
    /// verifies it first.
    pub fn observe_signed(&mut self, vote: &SignedVote) -> bool {
        self.insert(
            vote.voter,
            vote.content,
            vote.verdict,
            vote.issued,
            Some(vote.signature),
        )
    }

    fn insert(
        &mut self,
        voter: PeerId,
        content: ContentHash,
        verdict: Verdict,
        issued: u64,
        signature: Option<[u8; 64]>,
    ) -> bool {
        if voter == self.me {
            return false;
        }
        if let Some(&(_, held)) = self.voters.get(&voter).and_then(|v| v.votes.get(&content)) {
            if issued <= held {
                return false;
            }
            self.remove_vote(&voter, &content);
        }
        // Make room first, never evicting the voter we are adding to.
        if !self.voters.contains_key(&voter) {
            while self.voters.len() >= self.limits.voters {
                if !self.evict_one(&voter) {
                    return false;
                }
            }
        } else if self.voters[&voter].votes.len() >= self.limits.votes_per_voter {
            let oldest = self.voters[&voter]
                .votes
                .iter()
                .min_by_key(|(hash, (_, issued))| (*issued, **hash))
                .map(|(hash, _)| *hash);
            if let Some(oldest) = oldest {
                self.remove_vote(&voter, &oldest);
            }
        }
        while self.total >= self.limits.total {
            if !self.evict_one(&voter) {
                // Only this voter is left: drop its oldest vote instead.
                let oldest = self.voters.get(&voter).and_then(|v| {
                    v.votes
                        .iter()
                        .min_by_key(|(hash, (_, issued))| (*issued, **hash))
                        .map(|(hash, _)| *hash)
                });
                match oldest {
                    Some(oldest) => self.remove_vote(&voter, &oldest),
                    None => return false,
                }
            }
        }
        self.clock += 1;
        let clock = self.clock;
        let mine = self.own.get(&content).map(|&(v, _)| v);
        let record = self.voters.entry(voter).or_default();
        self.eviction.remove(&(record.useful, record.seen, voter));
        record.votes.insert(content, (verdict, issued));
        if let Some(mine) = mine {
            record.common.add(mine, verdict);
        }
        record.seen = clock;
        record.useful = record.common.weight() != 0.0;
        self.eviction.insert((record.useful, record.seen, voter));
        self.by_content.entry(content).or_default().insert(voter);
        if let Some(signature) = signature {
            self.signatures.insert((voter, content), signature);
        }
        self.total += 1;
        self.changed();
        true
    }

    /// Removes one vote of `voter` (and the voter, if it was its last).
    fn remove_vote(&mut self, voter: &PeerId, content: &ContentHash) {
        let mine = self.own.get(content).map(|&(v, _)| v);
        let Some(record) = self.voters.get_mut(voter) else {
            return;
        };
        let Some((theirs, _)) = record.votes.remove(content) else {
            return;
        };
        self.total -= 1;
        if let Some(mine) = mine {
            record.common.remove(mine, theirs);
        }
        self.eviction.remove(&(record.useful, record.seen, *voter));
        if record.votes.is_empty() {
            self.voters.remove(voter);
        } else {
            record.useful = record.common.weight() != 0.0;
            self.eviction.insert((record.useful, record.seen, *voter));
        }
        if let Some(set) = self.by_content.get_mut(content) {
            set.remove(voter);
            if set.is_empty() {
                self.by_content.remove(content);
            }
        }
        self.signatures.remove(&(*voter, *content));
        self.changed();
    }

    /// Evicts the least useful voter other than `keep`, with all its votes.
    /// False if there is none.
    fn evict_one(&mut self, keep: &PeerId) -> bool {
        let victim = self
            .eviction
            .iter()
            .find(|(_, _, voter)| voter != keep)
            .map(|&(_, _, voter)| voter);
        let Some(victim) = victim else {
            return false;
        };
        let contents: Vec<ContentHash> = self.voters[&victim].votes.keys().copied().collect();
        for content in contents {
            self.remove_vote(&victim, &content);
        }
        true
    }

    /// My vote on `content` changed from `old` to `new`: update the counts
    /// of everyone who voted on it.
    fn update_common(&mut self, content: &ContentHash, old: Option<Verdict>, new: Option<Verdict>) {
        let Some(voters) = self.by_content.get(content) else {
            return;
        };
        for voter in voters {
            let record = self.voters.get_mut(voter).expect("the index names known voters");
            let theirs = record.votes[content].0;
            if let Some(old) = old {
                record.common.remove(old, theirs);
            }
            if let Some(new) = new {
                record.common.add(new, theirs);
            }
            let useful = record.common.weight() != 0.0;
            if useful != record.useful {
                self.eviction.remove(&(record.useful, record.seen, *voter));
                record.useful = useful;
                self.eviction.insert((useful, record.seen, *voter));
            }
        }
    }

    fn changed(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.sources = None;
        cache.weights.clear();
    }

    /// What I would tell a peer who asks me about `content`: my own vote
    /// (±1) if I cast one, else my [`Score::confidence`] if anyone I trust
    /// voted on it, else nothing. This is Credence's transitive step in its
    /// original form — trust flowing through a well-correlated voter's own
    /// judgement of others — for the files its votes do not cover.
    pub fn opinion(&self, content: &ContentHash) -> Option<f64> {
        if let Some(verdict) = self.own(content) {
            return Some(verdict.sign());
        }
        let score = self.score(content);
        (score.weight > 0.0).then(|| score.confidence())
    }

    /// Records `from`'s [`VoteBook::opinion`] of `content` (−1 … 1), as it
    /// answered when asked. It counts in [`VoteBook::score`] only while I
    /// have a direct weight for `from`, at [`TRANSITIVE_DISCOUNT`] × that
    /// weight × the opinion, and not where `from`'s own vote on `content`
    /// is in the book already. A newer opinion replaces an older one; at
    /// most [`MAX_HEARSAY`] are kept. False if ignored (my own id, or a
    /// value that is not a number).
    pub fn hear(&mut self, from: PeerId, content: ContentHash, value: f64) -> bool {
        if from == self.me || !value.is_finite() {
            return false;
        }
        self.clock += 1;
        let entry = self.hearsay.entry(content).or_default();
        if let Some((_, heard)) = entry.insert(from, (value.clamp(-1.0, 1.0), self.clock)) {
            self.hearsay_order.remove(&(heard, content, from));
        }
        self.hearsay_order.insert((self.clock, content, from));
        while self.hearsay_order.len() > MAX_HEARSAY {
            let Some((_, old_content, old_from)) = self.hearsay_order.pop_first() else {
                break;
            };
            if let Some(tellers) = self.hearsay.get_mut(&old_content) {
                tellers.remove(&old_from);
                if tellers.is_empty() {
                    self.hearsay.remove(&old_content);
                }
            }
        }
        true
    }

    /// My direct weight for `voter`: the shrunk, significance-gated phi of
    /// our common votes (see [`MIN_COMMON`], [`SIGNIFICANCE_Z`],
    /// [`CONFIDENCE_PRIOR`]). Negative for a voter who says the opposite of
    /// what I found: its votes are read inverted.
    pub fn direct_weight(&self, voter: &PeerId) -> f64 {
        self.voters
            .get(voter)
            .map_or(0.0, |record| record.common.weight())
    }

    /// How much I trust `voter`'s votes, from −1 (read them inverted) to 1.
    /// The direct weight when there is one; otherwise one transitive step:
    /// [`TRANSITIVE_DISCOUNT`] × the strongest (my weight for j) × (j's
    /// correlation with `voter`) over my [`TRUST_SOURCES`] best voters j.
    /// Zero for a stranger with no history with me or them.
    pub fn weight(&self, voter: &PeerId) -> f64 {
        if *voter == self.me {
            return 1.0;
        }
        let direct = self.direct_weight(voter);
        if direct != 0.0 {
            return direct;
        }
        let Some(record) = self.voters.get(voter) else {
            return 0.0;
        };
        // Fewer votes than MIN_COMMON cannot correlate with anyone: most
        // voters heard with hits, and every fresh Sybil, stop here for free.
        if record.votes.len() < MIN_COMMON as usize {
            return 0.0;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&weight) = cache.weights.get(voter) {
            return weight;
        }
        if cache.sources.is_none() {
            cache.sources = Some(self.trust_sources());
        }
        let mut best = 0.0f64;
        for (source, trust) in cache.sources.as_deref().unwrap_or_default() {
            if source == voter {
                continue;
            }
            let correlation = correlation(&self.voters[source].votes, &record.votes);
            let weight = TRANSITIVE_DISCOUNT * trust * correlation;
            if weight.abs() > best.abs() {
                best = weight;
            }
        }
        cache.weights.insert(*voter, best);
        best
    }

    /// The voters I have a direct weight for, strongest (|weight|) first, at
    /// most `max`: whom to ask about the results of a search (see
    /// docs/TRUST.md), and a measure of how far my book has come.
    pub fn trusted(&self, max: usize) -> Vec<(PeerId, f64)> {
        let mut voters: Vec<(PeerId, f64)> = self
            .eviction
            .iter()
            .rev()
            .take_while(|(useful, _, _)| *useful)
            .map(|&(_, _, voter)| (voter, self.direct_weight(&voter)))
            .collect();
        voters.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        voters.truncate(max);
        voters
    }

    /// My [`TRUST_SOURCES`] voters with the highest positive direct weight
    /// (at least [`MIN_TRUST_SOURCE_WEIGHT`]). Trust flows only through
    /// voters I agree with: an inverted voter's friends tell me little.
    fn trust_sources(&self) -> Vec<(PeerId, f64)> {
        let mut sources: Vec<(PeerId, f64)> = self
            .eviction
            .iter()
            .rev()
            .take_while(|(useful, _, _)| *useful)
            .map(|&(_, _, voter)| (voter, self.direct_weight(&voter)))
            .filter(|&(_, weight)| weight >= MIN_TRUST_SOURCE_WEIGHT)
            .collect();
        sources.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        sources.truncate(TRUST_SOURCES);
        sources
    }

    /// What the votes I know say about `content`, weighted for me. My own
    /// vote decides the value; otherwise each voter with a weight counts
    /// `weight × (±1)`. Strangers (weight 0) count nothing, however many:
    /// the crowd's opinion is exactly what a Sybil can fake. (A first
    /// version gave them a shared weight of 0.05; in the simulator it put
    /// Sybil-backed decoys and poisoned entries above the authentic file,
    /// since it beat the source count in the ranking.)
    pub fn score(&self, content: &ContentHash) -> Score {
        let own = self.own(content);
        let mut sum = 0.0;
        let mut weight = 0.0;
        let mut voters = 0u32;
        if let Some(set) = self.by_content.get(content) {
            for voter in set {
                let w = self.weight(voter);
                if w != 0.0 {
                    voters += 1;
                    sum += w * self.voters[voter].votes[content].0.sign();
                    weight += w.abs();
                }
            }
        }
        for (from, &(value, _)) in self.hearsay.get(content).into_iter().flatten() {
            let voted = self.by_content.get(content).is_some_and(|set| set.contains(from));
            let w = self.direct_weight(from);
            if w != 0.0 && !voted && value != 0.0 {
                voters += 1;
                sum += TRANSITIVE_DISCOUNT * w * value;
                weight += TRANSITIVE_DISCOUNT * w.abs() * value.abs();
            }
        }
        let value = match own {
            Some(verdict) => verdict.sign(),
            None if weight > 0.0 => (sum / weight).clamp(-1.0, 1.0),
            None => 0.0,
        };
        Score {
            value,
            voters: voters + u32::from(own.is_some()),
            weight: weight + if own.is_some() { 1.0 } else { 0.0 },
            own,
        }
    }

    /// My own votes, newest first, at most `max`: what the node signs and
    /// gossips.
    pub fn own_votes(&self, max: usize) -> Vec<(ContentHash, Verdict, u64)> {
        self.own_by_date
            .iter()
            .rev()
            .take(max)
            .map(|&(issued, content)| (content, self.own[&content].0, issued))
            .collect()
    }

    /// Votes I know on `content`, to gossip with a hit for it: my own first
    /// (voter = me; the node signs it), then others by |weight| for me,
    /// strongest first (ties: newest, then by id). At most `max`.
    pub fn opinions_about(&self, content: &ContentHash, max: usize) -> Vec<(PeerId, Verdict, u64)> {
        let mut out = Vec::new();
        if let Some(&(verdict, issued)) = self.own.get(content) {
            out.push((self.me, verdict, issued));
        }
        out.extend(
            self.ranked_voters(content)
                .into_iter()
                .map(|(voter, verdict, issued, _)| (voter, verdict, issued)),
        );
        out.truncate(max);
        out
    }

    /// Like [`VoteBook::opinions_about`], others' votes only, as the signed
    /// votes they came in (those given with [`VoteBook::observe_signed`]).
    pub fn signed_opinions_about(&self, content: &ContentHash, max: usize) -> Vec<SignedVote> {
        self.ranked_voters(content)
            .into_iter()
            .filter_map(|(voter, verdict, issued, _)| {
                self.signatures
                    .get(&(voter, *content))
                    .map(|signature| SignedVote {
                        voter,
                        content: *content,
                        verdict,
                        issued,
                        signature: *signature,
                    })
            })
            .take(max)
            .collect()
    }

    fn ranked_voters(&self, content: &ContentHash) -> Vec<(PeerId, Verdict, u64, f64)> {
        let mut others: Vec<(PeerId, Verdict, u64, f64)> = self
            .by_content
            .get(content)
            .into_iter()
            .flatten()
            .map(|voter| {
                let (verdict, issued) = self.voters[voter].votes[content];
                (*voter, verdict, issued, self.weight(voter).abs())
            })
            .collect();
        others.sort_by(|a, b| b.3.total_cmp(&a.3).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        others
    }
}

/// Significance-gated, shrunk phi between two other voters over the
/// objects both voted on (the same rule as a direct weight). Walks the
/// smaller list, so its cost is bounded by [`MAX_VOTES_PER_VOTER`].
fn correlation(a: &BTreeMap<ContentHash, (Verdict, u64)>, b: &BTreeMap<ContentHash, (Verdict, u64)>) -> f64 {
    let (small, large, swapped) = if a.len() <= b.len() {
        (a, b, false)
    } else {
        (b, a, true)
    };
    let mut common = Common::default();
    for (content, (x, _)) in small {
        if let Some((y, _)) = large.get(content) {
            if swapped {
                common.add(*y, *x);
            } else {
                common.add(*x, *y);
            }
        }
    }
    common.weight()
}

/// A search result as [`rank`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub content: ContentHash,
    /// Sources the hits listed (inflatable: many ids cost a polluter
    /// nothing).
    pub sources: u32,
    /// [`VoteBook::score`] for the content.
    pub score: Score,
    /// Published (signed) by a publisher the user trusts.
    pub trusted_publisher: bool,
}

/// Orders search results best first: a candidate I voted fake is last
/// whatever else it has; then trusted publishers' files; then by
/// [`Score::confidence`] (my own "authentic" counts as certain); then by
/// sources, which weigh least because a polluter inflates them with many
/// peer ids. The sort is stable: equal candidates keep their order.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(compare);
}

fn compare(a: &Candidate, b: &Candidate) -> Ordering {
    let disowned = |c: &Candidate| c.score.own == Some(Verdict::Fake);
    disowned(a)
        .cmp(&disowned(b))
        .then(b.trusted_publisher.cmp(&a.trusted_publisher))
        .then(b.score.confidence().total_cmp(&a.score.confidence()))
        .then(b.sources.cmp(&a.sources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    const NOW: u64 = 1_800_000_000;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("a 32-byte seed")
    }

    fn id_of(pair: &Ed25519KeyPair) -> PeerId {
        PeerId(pair.public_key().as_ref().try_into().expect("32-byte key"))
    }

    fn signed(pair: &Ed25519KeyPair, content: ContentHash, verdict: Verdict, issued: u64) -> SignedVote {
        SignedVote::sign(id_of(pair), content, verdict, issued, |message| {
            pair.sign(message).as_ref().try_into().expect("64-byte signature")
        })
    }

    fn peer(n: u32) -> PeerId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        bytes[31] = 0xaa;
        PeerId(bytes)
    }

    fn file(n: u32) -> ContentHash {
        ContentHash::of(&n.to_be_bytes())
    }

    fn verdict(authentic: bool) -> Verdict {
        if authentic {
            Verdict::Authentic
        } else {
            Verdict::Fake
        }
    }

    #[test]
    fn the_signed_message_is_domain_hash_verdict_and_big_endian_date() {
        let content = ContentHash([7; 32]);
        let message = SignedVote::message(&content, Verdict::Fake, 0x0102_0304_0506_0708);
        assert_eq!(message.len(), 56);
        assert_eq!(&message[..15], b"canopy-vote-v1\0");
        assert_eq!(&message[15..47], &[7; 32]);
        assert_eq!(message[47], 1);
        assert_eq!(&message[48..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(SignedVote::message(&content, Verdict::Authentic, 0)[47], 0);
    }

    #[test]
    fn a_good_vote_verifies_and_a_forged_one_does_not() {
        let pair = key(1);
        let vote = signed(&pair, file(1), Verdict::Authentic, NOW);
        assert_eq!(vote.verify(NOW), Ok(()));

        // Someone else's key claiming to be the voter.
        let mut forged = signed(&key(2), file(1), Verdict::Authentic, NOW);
        forged.voter = id_of(&pair);
        assert_eq!(forged.verify(NOW), Err(VoteError::BadSignature));

        // A flipped signature bit.
        let mut flipped = vote.clone();
        flipped.signature[10] ^= 1;
        assert_eq!(flipped.verify(NOW), Err(VoteError::BadSignature));

        // The same signature moved to other content, verdict or date.
        let mut moved = vote.clone();
        moved.content = file(2);
        assert_eq!(moved.verify(NOW), Err(VoteError::BadSignature));
        let mut turned = vote.clone();
        turned.verdict = Verdict::Fake;
        assert_eq!(turned.verify(NOW), Err(VoteError::BadSignature));
        let mut redated = vote.clone();
        redated.issued += 1;
        assert_eq!(redated.verify(NOW), Err(VoteError::BadSignature));

        // A key that is not a curve point at all.
        let mut garbage = vote;
        garbage.voter = PeerId([0xff; 32]);
        assert_eq!(garbage.verify(NOW), Err(VoteError::BadSignature));
    }

    #[test]
    fn dates_too_far_ahead_or_too_old_are_refused_before_the_signature() {
        let pair = key(3);
        let ahead = signed(&pair, file(1), Verdict::Fake, NOW + MAX_CLOCK_SKEW + 1);
        assert_eq!(
            ahead.verify(NOW),
            Err(VoteError::FromTheFuture {
                issued: NOW + MAX_CLOCK_SKEW + 1,
                now: NOW
            })
        );
        assert_eq!(
            signed(&pair, file(1), Verdict::Fake, NOW + MAX_CLOCK_SKEW).verify(NOW),
            Ok(())
        );
        let old = signed(&pair, file(1), Verdict::Fake, NOW - MAX_VOTE_AGE - 1);
        assert!(matches!(old.verify(NOW), Err(VoteError::TooOld { .. })));
        assert_eq!(
            signed(&pair, file(1), Verdict::Fake, NOW - MAX_VOTE_AGE).verify(NOW),
            Ok(())
        );
        // Extreme values do not overflow.
        let far = signed(&pair, file(1), Verdict::Fake, u64::MAX);
        assert!(matches!(far.verify(u64::MAX - 1), Ok(())));
        assert!(matches!(far.verify(0), Err(VoteError::FromTheFuture { .. })));
    }

    #[test]
    fn vote_lists_round_trip_and_bad_ones_are_refused_with_a_reason() {
        let pair = key(4);
        let votes: Vec<SignedVote> = (0..MAX_VOTES_PER_HIT as u32)
            .map(|n| signed(&pair, file(n), verdict(n % 2 == 0), NOW + u64::from(n)))
            .collect();
        let bytes = encode_votes(&votes);
        assert_eq!(decode_votes(&bytes), Ok(votes.clone()));
        // 1 count byte + 8 × (32 + 32 + 1 + 5-byte varint + 64).
        assert_eq!(bytes.len(), 1 + MAX_VOTES_PER_HIT * 134);

        let mut too_many = votes.clone();
        too_many.push(votes[0].clone());
        assert_eq!(
            decode_votes(&encode_votes(&too_many)),
            Err(VoteError::TooMany {
                count: 9,
                max: MAX_VOTES_PER_HIT
            })
        );
        // A huge claimed count is refused before anything is read.
        assert!(matches!(
            decode_votes(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(VoteError::TooMany { .. })
        ));
        assert!(matches!(
            decode_votes(&bytes[..bytes.len() - 1]),
            Err(VoteError::Malformed(_))
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode_votes(&trailing), Err(VoteError::TrailingBytes(1)));
        // An over-long varint count (1 written as 0x81 0x00).
        let one = encode_votes(&votes[..1]);
        let mut long = vec![0x81, 0x00];
        long.extend_from_slice(&one[1..]);
        assert_eq!(decode_votes(&long), Err(VoteError::NotCanonical));
        // A verdict byte out of range.
        let mut bad_verdict = one.clone();
        bad_verdict[1 + 64] = 2;
        assert!(matches!(decode_votes(&bad_verdict), Err(VoteError::Malformed(_))));
        assert_eq!(decode_votes(&[0]), Ok(vec![]));
        // An exchange list may be longer, up to its own bound.
        let exchange: Vec<SignedVote> = (0..MAX_VOTES_PER_EXCHANGE as u32)
            .map(|n| signed(&pair, file(n), Verdict::Fake, NOW))
            .collect();
        let bytes = encode_votes(&exchange);
        assert!(matches!(decode_votes(&bytes), Err(VoteError::TooMany { .. })));
        assert_eq!(decode_vote_list(&bytes, MAX_VOTES_PER_EXCHANGE), Ok(exchange));
        assert!(matches!(decode_votes(&[]), Err(VoteError::Malformed(_))));
    }

    #[test]
    fn replays_duplicates_and_older_votes_are_ignored_newer_ones_replace() {
        let mut book = VoteBook::new(peer(0));
        assert!(book.observe(peer(1), file(1), Verdict::Authentic, 100));
        assert!(
            !book.observe(peer(1), file(1), Verdict::Authentic, 100),
            "a replay"
        );
        assert!(
            !book.observe(peer(1), file(1), Verdict::Fake, 100),
            "same date, other verdict"
        );
        assert!(!book.observe(peer(1), file(1), Verdict::Fake, 99), "older");
        assert_eq!(book.size(), (1, 1));
        assert!(
            book.observe(peer(1), file(1), Verdict::Fake, 101),
            "newer replaces"
        );
        assert_eq!(book.size(), (1, 1));
        assert_eq!(
            book.opinions_about(&file(1), 8),
            vec![(peer(1), Verdict::Fake, 101)]
        );
        assert!(
            !book.observe(peer(0), file(1), Verdict::Fake, 200),
            "my own id is not another voter"
        );
    }

    /// Has `peer(voter)` vote on files `0..n` as I did (`agree`), or the
    /// opposite, where I voted authentic on even files and fake on odd ones.
    fn history(book: &mut VoteBook, voter: u32, n: u32, agree: bool) {
        for f in 0..n {
            let mine = f % 2 == 0;
            book.observe(peer(voter), file(f), verdict(mine == agree), NOW);
        }
    }

    fn my_votes(book: &mut VoteBook, n: u32) {
        for f in 0..n {
            book.cast(file(f), verdict(f % 2 == 0), NOW);
        }
    }

    #[test]
    fn weights_follow_agreement_and_strangers_count_nothing() {
        let mut book = VoteBook::new(peer(0));
        my_votes(&mut book, 10);
        history(&mut book, 1, 10, true);
        history(&mut book, 2, 10, false);
        // A yes-man: "authentic" to everything.
        for f in 0..10 {
            book.observe(peer(3), file(f), Verdict::Authentic, NOW);
        }
        book.observe(peer(4), file(1000), Verdict::Authentic, NOW);
        // Agreed on 10 objects: phi 1, shrunk by 10/12.
        assert!(book.weight(&peer(1)) > 0.8, "{}", book.weight(&peer(1)));
        assert!(
            book.weight(&peer(2)) < -0.8,
            "disagreeing voters are read inverted"
        );
        assert_eq!(
            book.weight(&peer(3)),
            0.0,
            "a voter who never varies tells nothing"
        );
        assert_eq!(book.weight(&peer(4)), 0.0, "a stranger");
        assert_eq!(book.weight(&peer(99)), 0.0, "unknown");
        assert_eq!(book.weight(&peer(0)), 1.0, "myself");

        // Too few objects in common: nothing yet.
        let mut fresh = VoteBook::new(peer(0));
        my_votes(&mut fresh, 3);
        history(&mut fresh, 1, 3, true);
        assert_eq!(fresh.weight(&peer(1)), 0.0);
        // My changing my mind moves the weight.
        my_votes(&mut fresh, 6);
        history(&mut fresh, 1, 6, true);
        let before = fresh.weight(&peer(1));
        assert!(before > 0.5, "{before}");
        fresh.cast(file(0), Verdict::Fake, NOW + 1);
        assert!(fresh.weight(&peer(1)) < before);
    }

    #[test]
    fn trust_flows_one_hop_through_a_trusted_voter() {
        let mut book = VoteBook::new(peer(0));
        my_votes(&mut book, 8);
        history(&mut book, 1, 8, true);
        // Voter 2 shares nothing with me but agrees with voter 1 on files
        // 100..110 (voter 1 mixes authentic and fake there).
        for f in 100..110 {
            book.observe(peer(1), file(f), verdict(f % 3 == 0), NOW);
            book.observe(peer(2), file(f), verdict(f % 3 == 0), NOW);
            book.observe(peer(3), file(f), verdict(f % 3 != 0), NOW);
        }
        let trusted = book.weight(&peer(1));
        assert!(trusted > 0.5);
        let second = book.weight(&peer(2));
        assert!(
            second > 0.3 && second <= TRANSITIVE_DISCOUNT * trusted + 1e-9,
            "{second}"
        );
        assert!(
            book.weight(&peer(3)) < -0.3,
            "an anti-correlated friend-of-friend is inverted"
        );
        // And it ranks what voter 2 says.
        book.observe(peer(2), file(500), Verdict::Fake, NOW);
        assert!(book.score(&file(500)).value < -0.9);
    }

    #[test]
    fn a_thousand_sybils_do_not_outweigh_two_voters_with_history() {
        let mut book = VoteBook::new(peer(0));
        my_votes(&mut book, 10);
        history(&mut book, 1, 10, true);
        history(&mut book, 2, 10, true);
        let decoy = file(777);
        book.observe(peer(1), decoy, Verdict::Fake, NOW);
        book.observe(peer(2), decoy, Verdict::Fake, NOW);
        for sybil in 10_000..11_000 {
            book.observe(peer(sybil), decoy, Verdict::Authentic, NOW);
        }
        let score = book.score(&decoy);
        assert_eq!(score.voters, 2, "only the two with history count");
        assert!(score.value < -0.9, "{score:?}");
        // Without the two, the Sybils are all there is, and count nothing:
        // the ranking falls back on sources and publishers.
        let mut alone = VoteBook::new(peer(0));
        for sybil in 10_000..11_000 {
            alone.observe(peer(sybil), decoy, Verdict::Authentic, NOW);
        }
        assert_eq!(alone.score(&decoy), Score::NONE);
    }

    #[test]
    fn the_book_stays_bounded_under_a_flood_and_keeps_the_voters_it_trusts() {
        let mut book = VoteBook::new(peer(0));
        my_votes(&mut book, 10);
        history(&mut book, 1, 10, true);
        history(&mut book, 2, 10, false);
        let trusted = book.weight(&peer(1));
        // 10^5 votes from 10^4 ids, ten each, on 1,000 files.
        let mut kept = 0;
        for n in 0..100_000u32 {
            let voter = 1_000_000 + n % 10_000;
            if book.observe(
                peer(voter),
                file(5_000 + n % 1_000),
                verdict(n % 3 == 0),
                NOW + u64::from(n),
            ) {
                kept += 1;
            }
            let (voters, total) = book.size();
            assert!(voters <= MAX_VOTERS && total <= MAX_TOTAL_VOTES);
        }
        assert!(
            kept > 90_000,
            "fresh votes are taken (older strangers make room): {kept}"
        );
        let (voters, total) = book.size();
        assert_eq!(voters, MAX_VOTERS);
        assert!(total <= MAX_TOTAL_VOTES);
        assert_eq!(
            book.weight(&peer(1)),
            trusted,
            "the trusted voter survived the flood"
        );
        assert!(book.weight(&peer(2)) < -0.5, "so did the inverted one");

        // One voter's flood: its oldest votes go.
        for f in 0..(MAX_VOTES_PER_VOTER as u32 + 100) {
            book.observe(peer(7), file(100_000 + f), Verdict::Fake, u64::from(f));
        }
        let opinions = book.opinions_about(&file(100_000), 8);
        assert!(opinions.is_empty(), "the oldest of voter 7's votes was evicted");
        assert_eq!(
            book.opinions_about(&file(100_000 + MAX_VOTES_PER_VOTER as u32 + 99), 8)
                .len(),
            1
        );

        // My own votes are bounded too.
        let mut mine = VoteBook::new(peer(0));
        for f in 0..(MAX_OWN_VOTES as u32 + 10) {
            mine.cast(file(f), Verdict::Authentic, u64::from(f));
        }
        assert_eq!(mine.own_count(), MAX_OWN_VOTES);
        assert_eq!(mine.own(&file(0)), None);
        assert_eq!(
            mine.own_votes(1),
            vec![(
                file(MAX_OWN_VOTES as u32 + 9),
                Verdict::Authentic,
                u64::from(MAX_OWN_VOTES as u32 + 9)
            )]
        );
    }

    #[test]
    fn opinions_heard_from_trusted_voters_count_discounted_and_strangers_not() {
        let mut book = VoteBook::new(peer(0));
        my_votes(&mut book, 10);
        history(&mut book, 1, 10, true);
        history(&mut book, 2, 10, false);
        let target = file(4242);
        assert!(book.hear(peer(1), target, -0.8));
        assert!(
            book.hear(peer(9), target, 1.0),
            "heard, but a stranger's word counts nothing"
        );
        assert!(!book.hear(peer(0), target, 1.0));
        assert!(!book.hear(peer(1), target, f64::NAN));
        let score = book.score(&target);
        assert_eq!(score.voters, 1);
        assert!(score.value < -0.99, "{score:?}");
        let expected = TRANSITIVE_DISCOUNT * book.weight(&peer(1)) * 0.8;
        assert!((score.weight - expected).abs() < 1e-9);
        // The inverted voter's opinion is read inverted.
        book.hear(peer(2), target, 1.0);
        assert!(book.score(&target).value < -0.99);
        // Its own vote, once in the book, replaces what it said.
        book.observe(peer(1), target, Verdict::Authentic, NOW);
        let score = book.score(&target);
        assert!(score.value > 0.0, "{score:?}");
        // What I tell others: my vote, else my weighted view, else nothing.
        assert_eq!(book.opinion(&file(0)), Some(1.0));
        assert!(book.opinion(&target).is_some_and(|v| v > 0.0));
        assert_eq!(book.opinion(&file(31_337)), None);
        // Bounded.
        for n in 0..(MAX_HEARSAY as u32 + 50) {
            book.hear(peer(1), file(50_000 + n), 0.5);
        }
        assert_eq!(book.score(&file(50_000)).voters, 0, "the oldest heard went");
        assert_eq!(book.score(&file(50_000 + MAX_HEARSAY as u32 + 49)).voters, 1);
    }

    #[test]
    fn smaller_limits_evict_by_the_same_rule() {
        let limits = Limits {
            voters: 50,
            votes_per_voter: 20,
            total: 200,
            own: 30,
        };
        let mut book = VoteBook::with_limits(peer(0), limits);
        my_votes(&mut book, 40);
        assert_eq!(book.own_count(), 30);
        history(&mut book, 1, 40, true);
        assert_eq!(book.size(), (1, 20), "a voter keeps its newest 20");
        assert!(book.weight(&peer(1)) > 0.5);
        for n in 0..5_000u32 {
            book.observe(
                peer(10_000 + n % 700),
                file(n % 90),
                Verdict::Authentic,
                NOW + u64::from(n),
            );
            let (voters, total) = book.size();
            assert!(voters <= 50 && total <= 200);
        }
        assert!(book.weight(&peer(1)) > 0.5, "the trusted voter is kept");
    }

    #[test]
    fn opinions_are_given_best_weighted_first_with_my_own_first() {
        let mut book = VoteBook::new(peer(0));
        my_votes(&mut book, 10);
        history(&mut book, 1, 10, true);
        history(&mut book, 2, 10, false);
        let target = file(3); // I voted fake on it (odd).
        book.observe(peer(50), target, Verdict::Authentic, NOW + 5);
        let opinions = book.opinions_about(&target, 8);
        assert_eq!(opinions[0], (peer(0), Verdict::Fake, NOW));
        let others: Vec<PeerId> = opinions[1..].iter().map(|o| o.0).collect();
        assert_eq!(others.len(), 3);
        assert_eq!(*others.last().unwrap(), peer(50), "the stranger comes last");
        assert_eq!(book.opinions_about(&target, 2).len(), 2);

        // Signed votes are kept for gossip, others' only.
        let pair = key(9);
        let vote = signed(&pair, target, Verdict::Fake, NOW);
        assert_eq!(vote.verify(NOW), Ok(()));
        assert!(book.observe_signed(&vote));
        let signed = book.signed_opinions_about(&target, 8);
        assert_eq!(signed, vec![vote]);
    }

    fn candidate(n: u32, sources: u32, score: Score, trusted_publisher: bool) -> Candidate {
        Candidate {
            content: file(n),
            sources,
            score,
            trusted_publisher,
        }
    }

    #[test]
    fn rank_puts_trusted_publishers_then_scores_then_sources_and_my_fakes_last() {
        let liked = Score {
            value: 0.9,
            voters: 3,
            weight: 2.0,
            own: None,
        };
        let disliked = Score {
            value: -0.9,
            voters: 3,
            weight: 2.0,
            own: None,
        };
        let mine_fake = Score {
            value: -1.0,
            voters: 1,
            weight: 1.0,
            own: Some(Verdict::Fake),
        };
        let mine_good = Score {
            own: Some(Verdict::Authentic),
            ..mine_fake
        };
        let weak = Score {
            value: 1.0,
            voters: 1,
            weight: 0.05,
            own: None,
        };
        let mut candidates = vec![
            candidate(1, 5_000, Score::NONE, false),
            candidate(2, 2, liked, false),
            candidate(3, 9_000, disliked, false),
            candidate(4, 1, Score::NONE, true),
            candidate(5, 10_000, mine_fake, true),
            candidate(6, 1, mine_good, false),
            candidate(7, 50, weak, false),
            candidate(8, 6_000, Score::NONE, false),
        ];
        rank(&mut candidates);
        let order: Vec<ContentHash> = candidates.iter().map(|c| c.content).collect();
        assert_eq!(
            order,
            vec![
                file(4),
                file(6),
                file(2),
                file(7),
                file(8),
                file(1),
                file(3),
                file(5)
            ]
        );
    }

    #[test]
    fn the_score_weighs_each_voter_by_my_trust() {
        let mut book = VoteBook::new(peer(0));
        my_votes(&mut book, 12);
        history(&mut book, 1, 12, true);
        history(&mut book, 2, 12, false);
        let decoy = file(900);
        // The trusted voter says fake; the inverted one says authentic
        // (read: fake); a stranger says authentic.
        book.observe(peer(1), decoy, Verdict::Fake, NOW);
        book.observe(peer(2), decoy, Verdict::Authentic, NOW);
        book.observe(peer(3), decoy, Verdict::Authentic, NOW);
        let score = book.score(&decoy);
        assert_eq!(score.voters, 2, "the stranger is not counted");
        assert!(score.value < -0.9, "{score:?}");
        assert!(score.weight > 1.5);
        assert_eq!(book.score(&file(12345)), Score::NONE);
        book.cast(decoy, Verdict::Authentic, NOW);
        assert_eq!(book.score(&decoy).value, 1.0, "my own vote decides");
    }
}
