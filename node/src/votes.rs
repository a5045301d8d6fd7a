//! This node's votes on files, and what it knows of other people's
//! (issue 22: Credence's signed votes, `common::proto::credence`).
//!
//! A user who downloaded a file says whether it was what its name said
//! (`canopy vote HASH up|down`, or the app's buttons). The vote is signed
//! with the node's key, kept in the data folder ([`VOTES_FILE`]) and handed
//! to the supernodes this leaf is joined to, which give it to searchers
//! ([`Request::NotesFor`]) and send it along with their hits to searches
//! from afar. A search's results are then ranked by what the votes say
//! *for this user*: each voter weighs as much as its past votes agreed
//! with this user's own (the [`VoteBook`]), so a crowd of fresh identities
//! voting for a decoy counts next to nothing.
//!
//! **Publishers.** A node that shares what it made (a band, a label, an
//! archive) can vouch for every file it shares ([`Votes::vouch_for`], the
//! `sign-shares` setting): an "authentic" vote from a source of the file.
//! A user who trusts that publisher ([`TRUSTED_FILE`], `canopy trust`) sees
//! its files marked and ranked first. Optional on both sides: nobody has
//! to sign to share, or trust anyone to search.
//!
//! What is kept is bounded: this node's own votes (the newest
//! [`MAX_OWN_VOTES`]), others' as the [`VoteBook`] bounds them, and
//! [`MAX_TRUSTED`] publishers; votes learned from supernodes are verified
//! one by one before they count.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canopy_common::net::{ask, Endpoint, NodeKey};
use canopy_common::proto::budget::{Budgets, TokenBucket};
use canopy_common::proto::credence::{
    rank, Candidate, Opinion, Score, SignedVote, Verdict, VoteBook, MAX_OWN_VOTES, MAX_TOTAL_VOTES,
    MAX_VOTES_PER_EXCHANGE,
};
use canopy_common::proto::search::FileTags;
use canopy_common::proto::wire::{MAX_HASHES_PER_NOTES_ASK, MAX_VOTES_PER_MESSAGE};
use canopy_common::proto::{ContentHash, Hit, PeerAddr, PeerId, Request, Response};
use canopy_common::sync::Lock;
use serde::{Deserialize, Serialize};

pub use canopy_supernode::votes::unix_now;

use crate::fileio::write_atomically;
use crate::leaf::SessionLinks;

/// The file the votes are kept in, inside the data folder.
pub const VOTES_FILE: &str = "votes.bin";
/// The sources this node swapped votes with (the voters a search may ask),
/// inside the data folder, so a restart does not leave it with no one to
/// ask until it has downloaded again.
pub const MET_FILE: &str = "vote-sources.bin";
/// The publishers the user trusts, one peer id a line, inside the data
/// folder (a text file people may edit; `#` starts a comment).
pub const TRUSTED_FILE: &str = "trusted-publishers.txt";
/// Most publishers trusted at once.
pub const MAX_TRUSTED: usize = 1024;
/// How often a leaf looks whether a supernode it is joined to lacks some
/// of its votes (one joined since; a new vote is handed in at once). The
/// look is local: nothing is sent when every supernode has them all.
const HAND_IN_CHECK: Duration = Duration::from_secs(10);
/// When a supernode did not take our votes (busy, or gone), how soon
/// they are offered again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long one exchange about votes with a supernode may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon a downloader swaps votes with the same source again: an
/// album fetched from one peer is one meeting, not fifteen.
const SWAP_AGAIN_AFTER: Duration = Duration::from_secs(10 * 60);
/// Peers remembered, for [`SWAP_AGAIN_AFTER`] and as the voters a search
/// may ask (past it, the longest unseen go).
const MAX_MET: usize = 4096;
/// Voters asked about a search's results: the strongest-correlated of
/// those met (Credence asks its most correlated peers; the simulator
/// measured 8, docs/NETSIM.md "Pollution").
const ASK_MET: usize = 8;
/// How long asking them may take, all at once (dialing included).
const ASK_MET_TIMEOUT: Duration = Duration::from_secs(3);
/// Asks answered per peer: one a second, bursts of 8 (a user searches a
/// few times a minute at most); and in all: 20 a second, bursts of 40.
const ASKS_PER_PEER: (f64, f64) = (1.0, 8.0);
const ASKS_IN_ALL: (f64, f64) = (20.0, 40.0);
/// Swaps a source answers per peer: one every 10 s, bursts of 4 (a
/// downloader swaps once per source per [`SWAP_AGAIN_AFTER`]; more is a
/// peer making us verify signatures for nothing).
const SWAPS_PER_PEER: (f64, f64) = (0.1, 4.0);
/// Swaps a source answers in all: 10 a second, bursts of 40. Each costs
/// up to 32 signature checks (about 1.5 ms of one core).
const SWAPS_IN_ALL: (f64, f64) = (10.0, 40.0);

/// What [`VOTES_FILE`] holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// This node's own votes, oldest first.
    own: Vec<SignedVote>,
    /// Others' votes, verified when they came, oldest first.
    others: Vec<SignedVote>,
}

struct Book {
    book: VoteBook,
    saved: Saved,
    /// Which of our votes each supernode has (file, date), so each is
    /// handed in once per supernode.
    handed: HashMap<PeerId, HashSet<(ContentHash, u64)>>,
    /// Publishers the user trusts.
    trusted: HashSet<PeerId>,
}

impl Book {
    /// Whether a publisher the user trusts vouched for `file`.
    fn trusted_vouched(&self, file: &ContentHash) -> bool {
        (self.book.opinions_about(file, usize::MAX).iter())
            .any(|(voter, verdict, _)| *verdict == Verdict::Authentic && self.trusted.contains(voter))
    }

    fn keep_own(&mut self, vote: SignedVote) {
        self.book.cast(vote.content, vote.verdict, vote.issued);
        self.saved.own.retain(|old| old.content != vote.content);
        self.saved.own.push(vote);
        let excess = self.saved.own.len().saturating_sub(MAX_OWN_VOTES);
        self.saved.own.drain(..excess);
    }
}

/// This node's votes. Shared as an `Arc`.
pub struct Votes {
    inner: Mutex<Book>,
    file: PathBuf,
    trusted_file: PathBuf,
    key: NodeKey,
    cast: tokio::sync::Notify,
    swaps: Mutex<Swaps>,
    met_file: PathBuf,
    /// Opened by a one-shot command beside a running node: nothing is
    /// written, so the node's own saves are never overwritten.
    read_only: bool,
}

impl std::fmt::Debug for Votes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Votes")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// The sources this node downloaded from and swapped votes with (the
/// voters a search may ask), and the budgets of what it answers. Peers
/// that downloaded from this node are not kept: anyone can be one at will,
/// while a source is one the user chose to download from.
struct Swaps {
    started: Instant,
    /// Where each source met was, and when this node last swapped with it.
    met: HashMap<PeerId, Met>,
    swaps_per_peer: Budgets<PeerId>,
    swaps_in_all: TokenBucket,
    asks_per_peer: Budgets<PeerId>,
    asks_in_all: TokenBucket,
}

struct Met {
    at: PeerAddr,
    swapped: Instant,
}

impl Swaps {
    /// With the sources kept in `file` (none if there is none or it is
    /// damaged: they come back with the next downloads), each due for a
    /// swap again.
    fn load(file: &Path) -> Self {
        let mut swaps = Swaps::new();
        let kept: Vec<PeerAddr> = (std::fs::read(file).ok())
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_default();
        let due = Instant::now()
            .checked_sub(SWAP_AGAIN_AFTER)
            .unwrap_or_else(Instant::now);
        for at in kept.into_iter().take(MAX_MET) {
            swaps.met.insert(at.id, Met { at, swapped: due });
        }
        swaps
    }

    /// Keeps the sources in `file`, the longest unmet first.
    fn save(&self, file: &Path) {
        let mut met: Vec<&Met> = self.met.values().collect();
        met.sort_by_key(|met| met.swapped);
        let kept: Vec<PeerAddr> = met.into_iter().map(|met| met.at).collect();
        let written = postcard::to_allocvec(&kept)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(file, &bytes));
        if let Err(error) = written {
            tracing::debug!(file = %file.display(), %error, "cannot keep the sources met");
        }
    }

    fn new() -> Self {
        Swaps {
            started: Instant::now(),
            met: HashMap::new(),
            swaps_per_peer: Budgets::new(SWAPS_PER_PEER.0, SWAPS_PER_PEER.1, MAX_MET),
            swaps_in_all: TokenBucket::full(SWAPS_IN_ALL.0, SWAPS_IN_ALL.1, Duration::ZERO),
            asks_per_peer: Budgets::new(ASKS_PER_PEER.0, ASKS_PER_PEER.1, MAX_MET),
            asks_in_all: TokenBucket::full(ASKS_IN_ALL.0, ASKS_IN_ALL.1, Duration::ZERO),
        }
    }

    /// Remembers swapping with source `peer` now, at its address; the
    /// longest unmet goes when the list is full.
    fn meet(&mut self, peer: PeerAddr) {
        if self.met.len() >= MAX_MET && !self.met.contains_key(&peer.id) {
            let oldest = (self.met.iter())
                .min_by_key(|(_, met)| met.swapped)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.met.remove(&oldest);
            }
        }
        let swapped = Instant::now();
        self.met.insert(peer.id, Met { at: peer, swapped });
    }

    /// Takes one answer from `peer`'s budget and the node's.
    fn answer(&mut self, peer: PeerId, ask: bool) -> bool {
        let now = self.started.elapsed();
        match ask {
            false => self.swaps_per_peer.take(peer, 1.0, now) && self.swaps_in_all.take(1.0, now),
            true => self.asks_per_peer.take(peer, 1.0, now) && self.asks_in_all.take(1.0, now),
        }
    }
}

/// Why a peer's [`Request::SwapVotes`] or [`Request::AskOpinions`] is not
/// answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("{0} votes in one swap, over {MAX_VOTES_PER_EXCHANGE}")]
    TooManyVotes(usize),
    #[error("opinions on {0} files asked at once, over {MAX_HASHES_PER_NOTES_ASK}")]
    TooManyFiles(usize),
    #[error("a swap carries only the sender's own votes; one is by {0}")]
    NotOwn(PeerId),
    #[error("too many asks; later")]
    Busy,
}

impl Votes {
    /// Loads the votes kept in `data_dir` (none if there are none; a
    /// damaged file is logged and started afresh: votes are opinions, not
    /// data a user would lose sleep over) and the trusted publishers.
    pub fn open(data_dir: &Path, key: NodeKey) -> Arc<Votes> {
        Arc::new(Votes::load(data_dir, key, false))
    }

    /// Like [`Votes::open`], for a one-shot command that only ranks
    /// (`canopy search --ranked`): what it learns is used, never saved.
    pub fn open_read_only(data_dir: &Path, key: NodeKey) -> Votes {
        Votes::load(data_dir, key, true)
    }

    fn load(data_dir: &Path, key: NodeKey, read_only: bool) -> Votes {
        let file = data_dir.join(VOTES_FILE);
        let saved: Saved = match std::fs::read(&file) {
            Ok(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|error| {
                tracing::warn!(file = %file.display(), %error, "ignoring the damaged vote file");
                Saved::default()
            }),
            Err(_) => Saved::default(),
        };
        let mut book = VoteBook::new(key.peer_id());
        for vote in &saved.own {
            book.cast(vote.content, vote.verdict, vote.issued);
        }
        for vote in &saved.others {
            book.observe_signed(vote);
        }
        let trusted_file = data_dir.join(TRUSTED_FILE);
        let trusted = read_trusted(&trusted_file);
        Votes {
            inner: Mutex::new(Book {
                book,
                saved,
                handed: HashMap::new(),
                trusted,
            }),
            file,
            trusted_file,
            key,
            cast: tokio::sync::Notify::new(),
            swaps: Mutex::new(Swaps::load(&data_dir.join(MET_FILE))),
            met_file: data_dir.join(MET_FILE),
            read_only,
        }
    }

    /// Votes `verdict` on `content` (replacing an earlier vote on it),
    /// signed now; saved and handed to the supernodes at once.
    pub fn cast(&self, content: ContentHash, verdict: Verdict) -> SignedVote {
        let vote = self.sign(content, verdict, unix_now());
        {
            let mut inner = self.inner.locked();
            inner.keep_own(vote.clone());
            self.save(&inner.saved);
        }
        self.cast.notify_one();
        vote
    }

    /// Vouches for each of `files` this node has not voted on yet, as its
    /// publisher: an "authentic" vote from a source of the file. A file
    /// already voted on keeps that vote. How many were new.
    pub fn vouch_for(&self, files: &[ContentHash]) -> usize {
        let now = unix_now();
        let mut inner = self.inner.locked();
        let new: Vec<ContentHash> = (files.iter())
            .filter(|file| inner.book.own(file).is_none())
            .copied()
            .collect();
        for &file in &new {
            inner.keep_own(self.sign(file, Verdict::Authentic, now));
        }
        if !new.is_empty() {
            self.save(&inner.saved);
            self.cast.notify_one();
        }
        new.len()
    }

    fn sign(&self, content: ContentHash, verdict: Verdict, now: u64) -> SignedVote {
        SignedVote::sign(self.key.peer_id(), content, verdict, now, |message| {
            self.key.sign(message)
        })
    }

    /// Takes in votes a supernode gave: each is verified (signature, date)
    /// and counted if it says something new. How many were.
    pub fn learn(&self, votes: &[SignedVote]) -> usize {
        let now = unix_now();
        let mut inner = self.inner.locked();
        let mut learned = 0;
        for vote in votes {
            if vote.verify(now).is_err() || !inner.book.observe_signed(vote) {
                continue;
            }
            (inner.saved.others).retain(|old| (old.voter, old.content) != (vote.voter, vote.content));
            inner.saved.others.push(vote.clone());
            learned += 1;
        }
        if learned > 0 {
            let excess = inner.saved.others.len().saturating_sub(MAX_TOTAL_VOTES);
            inner.saved.others.drain(..excess);
            self.save(&inner.saved);
        }
        learned
    }

    /// Whether to swap votes with `source` now (once per source per 10
    /// minutes); if so, it counts as done, and `source` as met
    /// there.
    pub fn swap_due(&self, source: PeerAddr) -> bool {
        let mut swaps = self.swaps.locked();
        let recent = (swaps.met.get(&source.id)).is_some_and(|met| met.swapped.elapsed() < SWAP_AGAIN_AFTER);
        if recent {
            return false;
        }
        swaps.meet(source);
        if !self.read_only {
            swaps.save(&self.met_file);
        }
        true
    }

    /// The sources this node swapped votes with and may ask, the most
    /// recently met first.
    pub fn sources_met(&self) -> Vec<PeerAddr> {
        let swaps = self.swaps.locked();
        let mut met: Vec<&Met> = swaps.met.values().collect();
        met.sort_by_key(|met| std::cmp::Reverse(met.swapped));
        met.into_iter().map(|met| met.at).collect()
    }

    /// What a downloader offers a source: its newest own votes.
    pub fn swap_offer(&self) -> Vec<SignedVote> {
        let inner = self.inner.locked();
        (inner.saved.own.iter().rev())
            .take(MAX_VOTES_PER_EXCHANGE)
            .cloned()
            .collect()
    }

    /// A source's side of a swap with `peer`: takes in its votes (its own
    /// only, each verified) and answers with this node's own votes on the
    /// same files first, then its newest, [`MAX_VOTES_PER_EXCHANGE`] in all.
    pub fn swap_answer(&self, peer: PeerAddr, given: &[SignedVote]) -> Result<Vec<SignedVote>, Refused> {
        if given.len() > MAX_VOTES_PER_EXCHANGE {
            return Err(Refused::TooManyVotes(given.len()));
        }
        if let Some(other) = given.iter().find(|vote| vote.voter != peer.id) {
            return Err(Refused::NotOwn(other.voter));
        }
        {
            let mut swaps = self.swaps.locked();
            if !swaps.answer(peer.id, false) {
                return Err(Refused::Busy);
            }
        }
        self.learn(given);
        let inner = self.inner.locked();
        let about: HashSet<ContentHash> = given.iter().map(|vote| vote.content).collect();
        let newest_first = || inner.saved.own.iter().rev();
        let mut answer: Vec<SignedVote> = newest_first()
            .filter(|vote| about.contains(&vote.content))
            .take(MAX_VOTES_PER_EXCHANGE)
            .cloned()
            .collect();
        let room = MAX_VOTES_PER_EXCHANGE - answer.len();
        answer.extend(
            newest_first()
                .filter(|vote| !about.contains(&vote.content))
                .take(room)
                .cloned(),
        );
        Ok(answer)
    }

    /// A downloader takes in what `source` answered to a swap: its own
    /// votes only, each verified. How many were new.
    pub fn take_swapped(&self, source: PeerId, votes: &[SignedVote]) -> usize {
        let own: Vec<SignedVote> = (votes.iter())
            .filter(|vote| vote.voter == source)
            .take(MAX_VOTES_PER_EXCHANGE)
            .cloned()
            .collect();
        self.learn(&own)
    }

    /// What this node answers `peer` asking its view of `hashes`: its own
    /// votes on them, and its opinion ([`VoteBook::opinion`]) of those it
    /// did not vote on but has a weighted view of.
    pub fn opinions_answer(
        &self,
        peer: PeerId,
        hashes: &[ContentHash],
    ) -> Result<(Vec<SignedVote>, Vec<Opinion>), Refused> {
        if hashes.len() > MAX_HASHES_PER_NOTES_ASK {
            return Err(Refused::TooManyFiles(hashes.len()));
        }
        if !self.swaps.locked().answer(peer, true) {
            return Err(Refused::Busy);
        }
        let asked: HashSet<ContentHash> = hashes.iter().copied().collect();
        let inner = self.inner.locked();
        let votes: Vec<SignedVote> = (inner.saved.own.iter())
            .filter(|vote| asked.contains(&vote.content))
            .cloned()
            .collect();
        let opinions = (asked.iter())
            .filter(|file| inner.book.own(file).is_none())
            .filter_map(|file| Some(Opinion::new(*file, inner.book.opinion(file)?)))
            .collect();
        Ok((votes, opinions))
    }

    /// Asks the voters this user agrees with most, among the sources it
    /// downloaded from (8 of them, all at once, within 3 s), what
    /// they think of `files` (a search's best-placed results): their votes
    /// are learned, their opinions heard ([`VoteBook::hear`]). Credence's
    /// step that makes votes reach a user who never met the voters: the
    /// simulator measured it as what lifts the top result from 82 % to
    /// 98 % authentic (docs/NETSIM.md, "Pollution"). How many votes and
    /// opinions counted.
    pub async fn ask_met(&self, endpoint: &Endpoint, files: &[ContentHash]) -> usize {
        let hashes: Vec<ContentHash> = files.iter().take(MAX_HASHES_PER_NOTES_ASK).copied().collect();
        if hashes.is_empty() {
            return 0;
        }
        let strongest = self.inner.locked().book.trusted(usize::MAX);
        let asked: Vec<PeerAddr> = {
            let swaps = self.swaps.locked();
            (strongest.into_iter())
                .filter_map(|(voter, _)| swaps.met.get(&voter).map(|met| met.at))
                .take(ASK_MET)
                .collect()
        };
        let mut asks = tokio::task::JoinSet::new();
        for peer in asked {
            let (endpoint, request) = (
                endpoint.clone(),
                Request::AskOpinions {
                    hashes: hashes.clone(),
                },
            );
            asks.spawn(async move {
                let answer = tokio::time::timeout(ASK_MET_TIMEOUT, async {
                    let connection = endpoint.connect(&peer).await.ok()?;
                    let answer = ask(&connection, &request).await.ok();
                    connection.close(0u32.into(), b"asked");
                    answer
                })
                .await;
                (peer.id, answer.ok().flatten())
            });
        }
        let mut counted = 0;
        while let Some(joined) = asks.join_next().await {
            match joined {
                Ok((from, Some(Response::Opinions { votes, opinions }))) => {
                    counted += self.take_opinions(from, &hashes, &votes, &opinions);
                }
                Ok((from, answer)) => tracing::debug!(peer = ?from, ?answer, "no opinions"),
                Err(error) => tracing::debug!(%error, "asking for opinions failed"),
            }
        }
        counted
    }

    /// Takes in `from`'s answer about `hashes`: its own votes on them
    /// (verified), its opinions of them (at most one a file, in range).
    fn take_opinions(
        &self,
        from: PeerId,
        hashes: &[ContentHash],
        votes: &[SignedVote],
        opinions: &[Opinion],
    ) -> usize {
        let own: Vec<SignedVote> = (votes.iter())
            .filter(|vote| vote.voter == from && hashes.contains(&vote.content))
            .take(hashes.len())
            .cloned()
            .collect();
        let mut counted = self.learn(&own);
        let mut inner = self.inner.locked();
        let mut heard = HashSet::new();
        for opinion in opinions.iter().take(hashes.len()) {
            let Some(value) = opinion.value() else {
                continue;
            };
            if hashes.contains(&opinion.content)
                && heard.insert(opinion.content)
                && inner.book.hear(from, opinion.content, value)
            {
                counted += 1;
            }
        }
        counted
    }

    /// What the votes say about `content`, for this node's user.
    pub fn score(&self, content: &ContentHash) -> Score {
        self.inner.locked().book.score(content)
    }

    /// This node's own vote on `content`, if any.
    pub fn own(&self, content: &ContentHash) -> Option<Verdict> {
        self.inner.locked().book.own(content)
    }

    /// Trusts publisher `id` (or stops, with `trust` false): files it
    /// vouched for are marked and ranked first. Saved in [`TRUSTED_FILE`].
    pub fn trust(&self, id: PeerId, trust: bool) -> std::io::Result<()> {
        let mut inner = self.inner.locked();
        let changed = match trust {
            true if inner.trusted.len() >= MAX_TRUSTED && !inner.trusted.contains(&id) => {
                return Err(std::io::Error::other(format!(
                    "at most {MAX_TRUSTED} publishers can be trusted"
                )))
            }
            true => inner.trusted.insert(id),
            false => inner.trusted.remove(&id),
        };
        if changed {
            let mut ids: Vec<String> = inner.trusted.iter().map(PeerId::to_string).collect();
            ids.sort();
            let text = format!(
                "# Publishers this node's user trusts: files they vouched for are marked and ranked first.\n{}\n",
                ids.join("\n")
            );
            write_atomically(&self.trusted_file, text.as_bytes())?;
        }
        Ok(())
    }

    /// The publishers the user trusts.
    pub fn trusted(&self) -> Vec<PeerId> {
        let mut ids: Vec<PeerId> = self.inner.locked().trusted.iter().copied().collect();
        ids.sort();
        ids
    }

    /// Who vouched for `hit`'s file among its sources (its publishers),
    /// and whether a publisher the user trusts vouched for it.
    pub fn publishers(&self, hit: &Hit) -> (Vec<PeerId>, bool) {
        let inner = self.inner.locked();
        let sources: HashSet<PeerId> = (hit.sources.iter().map(|source| source.id))
            .chain(hit.relayed.iter().map(|relayed| relayed.leaf))
            .collect();
        let vouched = (inner.book.opinions_about(&hit.hash, usize::MAX).into_iter())
            .filter(|(voter, verdict, _)| *verdict == Verdict::Authentic && sources.contains(voter))
            .map(|(voter, _, _)| voter)
            .collect();
        (vouched, inner.trusted_vouched(&hit.hash))
    }

    /// Orders `hits` best first for this user ([`rank`]: a file the user
    /// called fake last, then trusted publishers' files, then by what the
    /// voters the user agrees with say, then sources); each hit's score,
    /// in the new order.
    pub fn rank(&self, hits: &mut Vec<Hit>) -> Vec<Score> {
        let mut candidates: Vec<(Candidate, Hit)> = {
            let inner = self.inner.locked();
            (hits.drain(..))
                .map(|hit| {
                    let listed = (hit.sources.len() + hit.relayed.len()) as u32;
                    let candidate = Candidate {
                        content: hit.hash,
                        sources: hit.source_count.max(listed),
                        score: inner.book.score(&hit.hash),
                        trusted_publisher: inner.trusted_vouched(&hit.hash),
                    };
                    (candidate, hit)
                })
                .collect()
        };
        // `rank` sorts candidates alone; each hit follows its candidate.
        let mut order: Vec<Candidate> = candidates.iter().map(|(candidate, _)| *candidate).collect();
        rank(&mut order);
        let mut scores = Vec::with_capacity(order.len());
        for candidate in order {
            if let Some(at) = candidates
                .iter()
                .position(|(c, _)| c.content == candidate.content)
            {
                let (candidate, hit) = candidates.swap_remove(at);
                scores.push(candidate.score);
                hits.push(hit);
            }
        }
        scores
    }

    /// Asks the supernode at the end of `connection` what it knows of
    /// `files` (the first half of [`MAX_HASHES_PER_NOTES_ASK`]) and of the
    /// files this user voted on last: learns the votes, and returns the
    /// files' tags. Others' votes on the user's own files are what tells
    /// whom to trust: the voters who agreed with the user before. An older
    /// supernode that does not know the request resets it: no notes, no
    /// error.
    pub async fn gather(&self, connection: &quinn::Connection, files: &[ContentHash]) -> Notes {
        let mut hashes: Vec<ContentHash> = files.iter().take(MAX_HASHES_PER_NOTES_ASK / 2).copied().collect();
        let own = self.inner.locked().book.own_votes(MAX_HASHES_PER_NOTES_ASK);
        for (file, _, _) in own {
            if hashes.len() == MAX_HASHES_PER_NOTES_ASK {
                break;
            }
            if !hashes.contains(&file) {
                hashes.push(file);
            }
        }
        if hashes.is_empty() {
            return Notes::default();
        }
        let asked = tokio::time::timeout(ASK_TIMEOUT, ask(connection, &Request::NotesFor { hashes })).await;
        match asked {
            Ok(Ok(Response::Notes { votes, mut tags })) => {
                // Tags within the bounds, one per file asked about.
                tags.retain(|file| file.check() && files.contains(&file.hash));
                tags.truncate(MAX_HASHES_PER_NOTES_ASK);
                Notes {
                    learned: self.learn(&votes),
                    tags,
                }
            }
            Ok(Ok(other)) => {
                tracing::debug!(answer = ?other, "the supernode gave no notes");
                Notes::default()
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "the supernode gave no notes");
                Notes::default()
            }
            Err(_) => Notes::default(),
        }
    }

    /// Hands the supernode `supernode`, at the end of `connection`, every
    /// vote of ours it does not have yet, [`MAX_VOTES_PER_MESSAGE`] at a
    /// time, newest first; whether it took them all.
    async fn hand_in(&self, supernode: PeerId, connection: &quinn::Connection) -> bool {
        loop {
            let votes: Vec<SignedVote> = {
                let inner = self.inner.locked();
                let handed = inner.handed.get(&supernode);
                (inner.saved.own.iter().rev())
                    .filter(|vote| !handed.is_some_and(|h| h.contains(&(vote.content, vote.issued))))
                    .take(MAX_VOTES_PER_MESSAGE)
                    .cloned()
                    .collect()
            };
            if votes.is_empty() {
                return true;
            }
            let request = Request::Votes { votes: votes.clone() };
            let asked = tokio::time::timeout(ASK_TIMEOUT, ask(connection, &request)).await;
            if !matches!(asked, Ok(Ok(Response::VotesNoted { .. }))) {
                return false;
            }
            let mut inner = self.inner.locked();
            let own = inner.saved.own.len();
            let handed = inner.handed.entry(supernode).or_default();
            // Entries of votes since replaced go when the set outgrows the
            // votes (the supernode ignores what it has already).
            if handed.len() > 2 * own.max(MAX_VOTES_PER_MESSAGE) {
                handed.clear();
            }
            handed.extend(votes.iter().map(|vote| (vote.content, vote.issued)));
        }
    }

    /// Keeps every supernode this leaf is joined to (`links`) supplied
    /// with its votes: at once after a vote, and within seconds for a
    /// supernode joined since. Runs until aborted.
    pub async fn keep_handing_in(self: Arc<Self>, links: SessionLinks) {
        loop {
            let mut refused = false;
            for (supernode, connection) in links.nearest_first() {
                if !self.hand_in(supernode.id, &connection).await {
                    refused = true;
                }
            }
            // A supernode that was busy (many votes at once are over its
            // budget for one leaf) is asked again soon.
            let wait = if refused { RETRY_AFTER } else { HAND_IN_CHECK };
            let _ = tokio::time::timeout(wait, self.cast.notified()).await;
        }
    }

    fn save(&self, saved: &Saved) {
        if self.read_only {
            return;
        }
        let bytes = match postcard::to_allocvec(saved) {
            Ok(bytes) => bytes,
            Err(error) => return tracing::warn!(%error, "cannot encode the votes"),
        };
        if let Err(error) = write_atomically(&self.file, &bytes) {
            tracing::warn!(file = %self.file.display(), %error, "cannot save the votes");
        }
    }
}

/// Reads the trusted publishers' file: one peer id a line; blank lines,
/// `#` comments and lines that are no peer id (logged) are skipped.
fn read_trusted(path: &Path) -> HashSet<PeerId> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashSet::new();
    };
    let mut trusted = HashSet::new();
    for line in text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
    {
        if line.is_empty() || trusted.len() >= MAX_TRUSTED {
            continue;
        }
        match line.parse() {
            Ok(id) => {
                trusted.insert(id);
            }
            Err(_) => tracing::warn!(file = %path.display(), line, "not a peer id; ignored"),
        }
    }
    trusted
}

/// What supernodes said of a search's files besides their hits.
#[derive(Debug, Default)]
pub struct Notes {
    /// Votes that were new to this node (now in its book).
    pub learned: usize,
    /// The files' tags, those that have some.
    pub tags: Vec<FileTags>,
}

/// A verdict as a user types it: `up` or `down`.
#[derive(Debug, Clone, Copy)]
pub struct VerdictArg(pub Verdict);

impl std::str::FromStr for VerdictArg {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "up" | "authentic" | "good" => Ok(VerdictArg(Verdict::Authentic)),
            "down" | "fake" | "bad" => Ok(VerdictArg(Verdict::Fake)),
            other => Err(format!(
                "{other:?} is no verdict: say up (it is what it says) or down (a fake)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sources met survive a restart, due for a swap again, and a
    /// damaged file only forgets them.
    #[test]
    fn the_sources_met_are_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::generate().unwrap();
        let source = |n: u8| PeerAddr::new(PeerId([n; 32]), "127.0.0.1:4001".parse().unwrap());
        let votes = Votes::open(dir.path(), key.clone());
        assert!(votes.swap_due(source(1)));
        assert!(votes.swap_due(source(2)));
        assert!(!votes.swap_due(source(1)), "swapped a moment ago");
        drop(votes);
        let reopened = Votes::open(dir.path(), key.clone());
        assert_eq!(reopened.sources_met().len(), 2);
        assert!(reopened.sources_met().contains(&source(1)));
        assert!(reopened.swap_due(source(1)), "due again after a restart");
        std::fs::write(dir.path().join(MET_FILE), b"\xff\xff\xff").unwrap();
        assert!(Votes::open(dir.path(), key).sources_met().is_empty());
    }
}
