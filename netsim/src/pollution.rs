//! Pollution: decoys, Sybils, index poisoning, liars — and how much each of
//! Canopy's defences buys (issue 22, item 4).
//!
//! The model, after the measurements that motivated it (Liang, Kumar, Xi,
//! Ross, INFOCOM 2005: over half the copies of popular songs on KaZaA were
//! decoys; Liang, Naoumov, Ross, INFOCOM 2006: index poisoning):
//!
//! * **Titles.** `titles` popular titles, released over the first
//!   `release_share` of the run, asked for by Zipf popularity times a decay
//!   of interest since release (`lifetime_h`), each with `versions`
//!   versions (distinct content hashes), of which `fake_share` are
//!   **decoys**. Authentic versions start with `authentic_seeds` honest
//!   holders each, and gain every user who downloads them (downloads are
//!   shared, as in Canopy).
//! * **Polluters.** `polluters` operators share the decoys, each from many
//!   Sybil ids (`sybil_share` of all nodes): every Sybil of a polluter lists
//!   every decoy of that polluter, which inflates its source count, and
//!   sends its fellow ids' "authentic" votes with each hit. Talking to a
//!   user (exchanges, answers), a Sybil votes its stance — own decoys
//!   authentic, real versions fake — or, with `camouflage`, the truth
//!   about everything but its own decoys.
//! * **Poisoners** (`poisoner_share` of nodes) publish `bogus_per_title`
//!   entries per title for content nobody holds (and vouch for them with
//!   each other's ids). Without possession checks the entries stay; with
//!   them a poisoner is found out as the real supernode finds it
//!   (`supernode/src/possession.rs`: first check 3 s after joining, then
//!   every 2 s after a failure; "I do not hold it" is one strike of six,
//!   its best answer), so its entries live 13 s, after which it comes back
//!   under a new id after `poison_rejoin_s`.
//! * **Users** (all other nodes) search, rank what they find with
//!   [`credence::rank`] and their own [`VoteBook`], download in that order
//!   until they have an authentic copy (at most `max_attempts`), recognise
//!   a decoy after downloading it (as a human would), vote, and delete it
//!   (`keep_fake` keep sharing it). `liar_share` of them tell others the
//!   opposite of what they found, in every vote and opinion. `follower_share`
//!   trust `publishers` labels, each of which signed the first authentic
//!   version of `published_share` of the titles.
//! * **Votes travel** only the ways the protocol would carry them
//!   (docs/TRUST.md): with each hit, up to [`MAX_VOTES_PER_HIT`] taken from
//!   `vote_sources_per_hit` listed sources' `opinions_about`; on each
//!   download, the downloader sends its newest `exchange_votes` own votes
//!   ([`MAX_VOTES_PER_EXCHANGE`]) and the source answers with its own votes
//!   on those files first, then its newest; and before ranking, the user
//!   asks its `ask_trusted` strongest voters about the results (their votes,
//!   else their opinion, [`VoteBook::opinion`]).
//!
//! Every defence combination ([`Defence::ALL`]) runs over the same
//! population and the same draws (each search has its own random stream),
//! so the figures compare like with like. Searches are not routed through
//! the simulated overlay: a search finds every version that has a listed
//! source (Canopy's dynamic query finds most holders of popular files,
//! docs/NETSIM.md), and there is no churn.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use canopy_common::proto::credence::{
    self, Candidate, Limits, Score, SignedVote, Verdict, VoteBook, MAX_OWN_VOTES, MAX_VOTES_PER_EXCHANGE,
    MAX_VOTES_PER_HIT, MAX_VOTES_PER_VOTER,
};
use canopy_common::proto::wire::MAX_HASHES_PER_NOTES_ASK;
use canopy_common::proto::{ContentHash, PeerId};
use serde::{Deserialize, Serialize};

use crate::chart::{Chart, Series};
use crate::rng::{splitmix, Rng, Zipf};

/// The `[pollution]` section of a scenario. Every field has a default; an
/// unknown key is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pollution {
    /// Popular titles (the polluted ones).
    pub titles: u32,
    /// Zipf exponent of their popularity (0.8, as the overlay's files).
    pub zipf_alpha: f64,
    /// Versions (content hashes) per title.
    pub versions: u32,
    /// Share of the versions that are decoys (0.6: "over half the copies",
    /// Liang et al. 2005).
    pub fake_share: f64,
    /// Honest holders of each authentic version at the start.
    pub authentic_seeds: u32,
    /// Polluting operators.
    pub polluters: u32,
    /// Share of all node ids that are polluters' Sybils.
    pub sybil_share: f64,
    /// Share of nodes that poison the index.
    pub poisoner_share: f64,
    /// Entries each poisoner publishes per title, for content nobody holds.
    pub bogus_per_title: u32,
    /// Seconds a dropped poisoner takes to come back under a new id.
    pub poison_rejoin_s: f64,
    /// Share of users who tell others the opposite of what they found.
    pub liar_share: f64,
    /// Share of decoy downloads the user keeps sharing.
    pub keep_fake: f64,
    /// Publishers (labels) some users trust.
    pub publishers: u32,
    /// Share of titles whose first authentic version a publisher signed.
    pub published_share: f64,
    /// Share of users who trust the publishers.
    pub follower_share: f64,
    /// Titles come out over this share of the run (0: all at the start);
    /// polluters and the first authentic sharers are there at release.
    pub release_share: f64,
    /// Interest in a title decays as exp(−age / lifetime), hours (new
    /// releases draw most of their searches in their first days: Liang et
    /// al. 2005 watched decoys of songs in their first weeks).
    pub lifetime_h: f64,
    /// Searches per user over the run.
    pub searches_per_user: f64,
    /// Length of the run, hours (searches are spread uniformly over it).
    pub duration_h: f64,
    /// Share of the run before figures are taken (books fill up first).
    pub warmup_share: f64,
    /// Downloads a user tries per search before giving up.
    pub max_attempts: u32,
    /// Sources of a hit whose votes ride with it.
    pub vote_sources_per_hit: u32,
    /// Own votes swapped on each download (0: no exchange).
    pub exchange_votes: u32,
    /// Before ranking, the user asks this many of its best-correlated voters
    /// (`VoteBook::trusted`) what they think of the results: one request
    /// and one answer each, the answer being the asker-chosen hashes'
    /// votes it holds (at most [`MAX_VOTES_PER_HIT`]). 0: not asked.
    pub ask_trusted: u32,
    /// Ask only voters the user has met: sources it downloaded from (and
    /// swapped votes with). A node knows where those are (a voter known only
    /// from a supernode's store has no address to ask), and a peer cannot
    /// make itself one at will: the user chose to download from it. Peers
    /// that downloaded from the user are not asked (anyone can be one).
    pub ask_met_only: bool,
    /// How Sybils vote when they talk to users (exchanges, answers).
    /// false: their stance — own decoys authentic, real versions fake (a
    /// record of disagreement that Credence reads inverted). true:
    /// camouflage — the truth about everything but their own decoys, to
    /// earn weight (the attack Credence names).
    pub camouflage: bool,
    /// The node's own channel (commit 4d5ab45, `supernode/src/votes.rs`):
    /// users hand their votes to their supernodes, which keep the newest
    /// [`STORE_VOTES_PER_FILE`] per file and give a searcher the newest of
    /// them on each result — this many (0: channel off). Modelled as one
    /// store for the whole network (a search that reaches every supernode).
    pub store_votes: u32,
    /// The node's search also asks its supernodes about the files the user
    /// voted on last (`node::votes::Votes::gather`: the results' first
    /// half, then the newest own votes, [`MAX_HASHES_PER_NOTES_ASK`] files
    /// in all): the stored votes of others on *those* files are what tell
    /// whom to trust. Only with `store_votes`.
    pub gather_own: bool,
    /// Sybils re-sign their votes as they go, so theirs are always the
    /// newest a supernode holds (otherwise dated when the title came out).
    pub sybils_refresh: bool,
    /// Bound on each user's vote book (others' votes); the node's is
    /// 65,536, which ten thousand simulated books could not afford.
    pub book_votes: u32,
}

impl Default for Pollution {
    fn default() -> Self {
        Pollution {
            titles: 300,
            zipf_alpha: 0.8,
            versions: 5,
            fake_share: 0.6,
            authentic_seeds: 5,
            polluters: 5,
            sybil_share: 0.1,
            poisoner_share: 0.01,
            bogus_per_title: 2,
            poison_rejoin_s: 30.0,
            liar_share: 0.1,
            keep_fake: 0.1,
            publishers: 3,
            published_share: 0.5,
            follower_share: 0.3,
            release_share: 0.8,
            lifetime_h: 12.0,
            searches_per_user: 30.0,
            duration_h: 72.0,
            warmup_share: 0.25,
            max_attempts: 10,
            vote_sources_per_hit: 3,
            exchange_votes: MAX_VOTES_PER_EXCHANGE as u32,
            ask_trusted: 8,
            ask_met_only: false,
            camouflage: false,
            store_votes: 0,
            gather_own: false,
            sybils_refresh: false,
            book_votes: 1024,
        }
    }
}

impl Pollution {
    /// The users (searchers) among `nodes`: all but the Sybils, poisoners
    /// and publishers.
    pub fn users(&self, nodes: u32) -> u32 {
        let (sybils, poisoners) = self.bad_ids(nodes);
        nodes.saturating_sub(sybils + poisoners + self.publishers)
    }

    /// Sybil ids and poisoners among `nodes`.
    fn bad_ids(&self, nodes: u32) -> (u32, u32) {
        let sybils = ((nodes as f64 * self.sybil_share) as u32).max(self.polluters.min(nodes));
        (sybils, (nodes as f64 * self.poisoner_share) as u32)
    }
}

/// Seconds a poisoner's entries stay listed once proof-of-possession checks
/// are on: its first check 3 s after joining, then one every 2 s after
/// each failure, and six "I do not hold it" strikes (its longest-lasting
/// answer) drop it: 3 + 5 × 2 (`PossessionConfig::default`).
pub const POISON_WINDOW_S: f64 = 3.0 + 5.0 * 2.0;

/// Votes a supernode keeps per file (`supernode::votes::MAX_VOTES_PER_FILE`).
pub const STORE_VOTES_PER_FILE: usize = 32;

/// A combination of defences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defence {
    pub name: &'static str,
    /// Supernodes check possession (poisoned entries drain).
    pub possession: bool,
    /// Users rank by their vote books.
    pub votes: bool,
    /// Followers see trusted publishers' files first.
    pub publishers: bool,
}

impl Defence {
    /// The five combinations reported.
    pub const ALL: [Defence; 5] = [
        Defence {
            name: "none",
            possession: false,
            votes: false,
            publishers: false,
        },
        Defence {
            name: "possession",
            possession: true,
            votes: false,
            publishers: false,
        },
        Defence {
            name: "votes",
            possession: false,
            votes: true,
            publishers: false,
        },
        Defence {
            name: "votes+publishers",
            possession: false,
            votes: true,
            publishers: true,
        },
        Defence {
            name: "all",
            possession: true,
            votes: true,
            publishers: true,
        },
    ];
}

/// What one defence combination achieved, over the searches after warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub defence: Defence,
    /// Searches measured (after warm-up, with at least one result).
    pub searches: u64,
    /// Share whose top-ranked result was an authentic version.
    pub top_authentic: f64,
    /// Share whose first download was an authentic copy.
    pub first_authentic: f64,
    /// Mean decoys downloaded before the authentic copy (searches that got one).
    pub fakes_before_good: f64,
    /// Mean downloads per search that failed because no one held the
    /// content (poisoned entries).
    pub failed_per_search: f64,
    /// Share of searches that ended without an authentic copy.
    pub gave_up: f64,
    /// Votes carried with hits, per search.
    pub hit_votes_per_search: f64,
    /// Bytes of votes with hits, per search (postcard, as on the wire).
    pub hit_vote_bytes_per_search: f64,
    /// Vote exchanges (messages, both ways) per search.
    pub exchange_messages_per_search: f64,
    /// Bytes of exchanged votes per search.
    pub exchange_bytes_per_search: f64,
    /// Vote requests to trusted voters and their answers, per search.
    pub ask_messages_per_search: f64,
    /// Bytes of those (the hashes asked, 32 each, and the votes answered).
    pub ask_bytes_per_search: f64,
    /// Share of searches in which some result had a vote with weight for
    /// the searcher (someone it trusts had voted on it).
    pub weighted_share: f64,
    /// Mean number of voters a user has a direct weight for, at the end.
    pub trusted_per_user: f64,
    /// Top-ranked authentic share per hour of the whole run (warm-up too).
    pub timeline: Vec<f64>,
}

/// Runs every defence combination over the same population and draws.
pub fn study(config: &Pollution, nodes: u32, seed: u64) -> Vec<Outcome> {
    Defence::ALL
        .iter()
        .map(|&defence| run(config, nodes, seed, defence))
        .collect()
}

/// Who a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Sybil { polluter: u32 },
    Poisoner,
    Publisher,
    User,
}

/// What a version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Authentic,
    Decoy {
        polluter: u32,
    },
    /// An index entry for content nobody holds.
    Bogus,
}

struct Version {
    hash: ContentHash,
    kind: Kind,
    /// Honest (non-Sybil) holders, in the order they got it.
    holders: Vec<u32>,
    /// Signed by a publisher.
    published: bool,
}

struct World<'a> {
    config: &'a Pollution,
    defence: Defence,
    sybils: u32,
    poisoners: u32,
    publishers: u32,
    liars: Vec<bool>,
    followers: Vec<bool>,
    /// Title → its versions (authentic, then decoys, then bogus).
    versions: Vec<Vec<Version>>,
    /// User × title: holds an authentic copy.
    has: Vec<bool>,
    books: Vec<Option<VoteBook>>,
    /// Per node: the sources it downloaded from (only with `ask_met_only`).
    met: Vec<BTreeSet<PeerId>>,
    /// What each content hash is.
    kinds: BTreeMap<ContentHash, Kind>,
    /// Where each content hash is: (title, version).
    places: BTreeMap<ContentHash, (usize, usize)>,
    /// Honest users' votes handed to supernodes, per file: (issued, voter,
    /// verdict as told), the newest [`STORE_VOTES_PER_FILE`].
    store: BTreeMap<ContentHash, Vec<(u64, PeerId, Verdict)>>,
    /// When each title comes out, seconds.
    releases: Vec<f64>,
    /// Phase of each poisoner's join/drop cycle, seconds.
    phases: Vec<f64>,
    /// Bytes of one vote on the wire.
    vote_bytes: u64,
}

const EPOCH: u64 = 1_800_000_000;

fn peer(node: u32) -> PeerId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&node.to_le_bytes());
    bytes[4] = 0xcd;
    PeerId(bytes)
}

fn content(title: u32, version: u32, kind: u64) -> ContentHash {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let x = splitmix(((title as u64) << 32) ^ ((version as u64) << 8) ^ (kind << 4) ^ i as u64);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    ContentHash(bytes)
}

/// The simulated node behind a peer id (inverse of [`peer`]).
fn node_of(id: PeerId) -> Option<u32> {
    (id.0[4] == 0xcd).then(|| u32::from_le_bytes(id.0[..4].try_into().expect("4 bytes")))
}

impl<'a> World<'a> {
    fn new(config: &'a Pollution, nodes: u32, seed: u64, defence: Defence) -> Self {
        let mut rng = Rng::stream(seed, 0x9011_0001);
        let (sybils, poisoners) = config.bad_ids(nodes);
        let publishers = config.publishers;
        assert!(
            sybils + poisoners + publishers < nodes,
            "the pollution model needs users: {nodes} nodes, {sybils} Sybils, {poisoners} poisoners"
        );
        let first_user = sybils + poisoners + publishers;
        let users = nodes - first_user;
        let liars: Vec<bool> = (0..nodes)
            .map(|n| n >= first_user && rng.chance(config.liar_share))
            .collect();
        let followers: Vec<bool> = (0..nodes)
            .map(|n| n >= first_user && rng.chance(config.follower_share))
            .collect();
        let authentic = config.versions - (config.versions as f64 * config.fake_share).round() as u32;
        let mut versions = Vec::new();
        let mut decoy_counter = 0u32;
        for title in 0..config.titles {
            let published = publishers > 0 && rng.chance(config.published_share);
            let mut list = Vec::new();
            for v in 0..config.versions {
                if v < authentic {
                    let mut holders = Vec::new();
                    if published && v == 0 {
                        holders.push(sybils + poisoners + title % publishers);
                    }
                    while holders.len() < config.authentic_seeds as usize {
                        let user = first_user + rng.below(users as u64) as u32;
                        if !holders.contains(&user) {
                            holders.push(user);
                        }
                    }
                    list.push(Version {
                        hash: content(title, v, 1),
                        kind: Kind::Authentic,
                        holders,
                        published: published && v == 0,
                    });
                } else {
                    let polluter = decoy_counter % config.polluters.max(1);
                    decoy_counter += 1;
                    list.push(Version {
                        hash: content(title, v, 2),
                        kind: Kind::Decoy { polluter },
                        holders: Vec::new(),
                        published: false,
                    });
                }
            }
            if poisoners > 0 {
                for b in 0..config.bogus_per_title {
                    list.push(Version {
                        hash: content(title, b, 3),
                        kind: Kind::Bogus,
                        holders: Vec::new(),
                        published: false,
                    });
                }
            }
            versions.push(list);
        }
        let mut has = vec![false; nodes as usize * config.titles as usize];
        for (title, list) in versions.iter().enumerate() {
            for version in list.iter().filter(|v| v.kind == Kind::Authentic) {
                for &holder in &version.holders {
                    has[holder as usize * config.titles as usize + title] = true;
                }
            }
        }
        let cycle = POISON_WINDOW_S + config.poison_rejoin_s;
        let phases = (0..poisoners).map(|_| rng.unit() * cycle).collect();
        let span = config.release_share * config.duration_h * 3600.0;
        let releases = (0..config.titles).map(|_| rng.unit() * span).collect();
        let limits = Limits {
            voters: (config.book_votes as usize / 4).max(1),
            votes_per_voter: MAX_VOTES_PER_VOTER.min(config.book_votes as usize),
            total: config.book_votes as usize,
            own: MAX_OWN_VOTES,
        };
        let books = (0..nodes)
            .map(|n| (defence.votes && n >= first_user).then(|| VoteBook::with_limits(peer(n), limits)))
            .collect();
        let sample = SignedVote {
            voter: peer(0),
            content: content(0, 0, 1),
            verdict: Verdict::Authentic,
            issued: EPOCH,
            signature: [0; 64],
        };
        let vote_bytes = postcard::to_stdvec(&sample).expect("a vote encodes").len() as u64;
        let kinds = versions.iter().flatten().map(|v| (v.hash, v.kind)).collect();
        let places = (versions.iter().enumerate())
            .flat_map(|(title, list)| {
                (list.iter().enumerate()).map(move |(v, version)| (version.hash, (title, v)))
            })
            .collect();
        World {
            config,
            kinds,
            places,
            store: BTreeMap::new(),
            defence,
            sybils,
            poisoners,
            publishers,
            liars,
            followers,
            versions,
            has,
            books,
            met: vec![BTreeSet::new(); nodes as usize],
            releases,
            phases,
            vote_bytes,
        }
    }

    fn first_user(&self) -> u32 {
        self.sybils + self.poisoners + self.publishers
    }

    fn role(&self, node: u32) -> Role {
        if node < self.sybils {
            Role::Sybil {
                polluter: node % self.config.polluters.max(1),
            }
        } else if node < self.sybils + self.poisoners {
            Role::Poisoner
        } else if node < self.first_user() {
            Role::Publisher
        } else {
            Role::User
        }
    }

    fn sybils_of(&self, polluter: u32) -> u32 {
        let p = self.config.polluters.max(1);
        self.sybils / p + u32::from(polluter < self.sybils % p)
    }

    /// Poisoners whose entries are listed at `t` seconds.
    fn poisoners_listed(&self, t: f64) -> u32 {
        if !self.defence.possession {
            return self.poisoners;
        }
        let cycle = POISON_WINDOW_S + self.config.poison_rejoin_s;
        self.phases
            .iter()
            .filter(|&&phase| (t + phase) % cycle < POISON_WINDOW_S)
            .count() as u32
    }

    /// Sources a search sees for a version at `t`.
    fn sources(&self, version: &Version, t: f64) -> u32 {
        match version.kind {
            Kind::Authentic => version.holders.len() as u32,
            Kind::Decoy { polluter } => self.sybils_of(polluter) + version.holders.len() as u32,
            Kind::Bogus => self.poisoners_listed(t),
        }
    }

    /// A random source of a version with `sources` listed.
    fn pick_source(&self, version: &Version, sources: u32, rng: &mut Rng) -> u32 {
        let r = rng.below(sources.max(1) as u64) as u32;
        match version.kind {
            Kind::Authentic => version.holders[r as usize],
            Kind::Decoy { polluter } => {
                let own = self.sybils_of(polluter);
                if r < own {
                    polluter + r * self.config.polluters.max(1)
                } else {
                    version.holders[(r - own) as usize]
                }
            }
            Kind::Bogus => self.sybils + rng.below(self.poisoners.max(1) as u64) as u32,
        }
    }

    /// What a user says it voted: the truth, or its opposite for a liar.
    fn told(&self, node: u32, verdict: Verdict) -> Verdict {
        match (self.liars[node as usize], verdict) {
            (false, v) => v,
            (true, Verdict::Authentic) => Verdict::Fake,
            (true, Verdict::Fake) => Verdict::Authentic,
        }
    }

    /// The votes `source` sends with a hit for `version` of `title`.
    fn hit_opinions(&self, source: u32, title: u32, version: &Version) -> Vec<(PeerId, Verdict, u64)> {
        match self.role(source) {
            // A polluter sends its own ids' votes for its decoy.
            Role::Sybil { polluter } => {
                let step = self.config.polluters.max(1);
                let own = self.sybils_of(polluter);
                let first = (source - polluter) / step;
                (0..(MAX_VOTES_PER_HIT as u32).min(own))
                    .map(|i| {
                        let id = polluter + ((first + i) % own) * step;
                        (peer(id), Verdict::Authentic, EPOCH)
                    })
                    .collect()
            }
            // A poisoner vouches for its entries under its poisoners' ids.
            Role::Poisoner => (0..(MAX_VOTES_PER_HIT as u32).min(self.poisoners))
                .map(|i| {
                    let id = self.sybils + (source - self.sybils + i) % self.poisoners;
                    (peer(id), Verdict::Authentic, EPOCH + u64::from(title))
                })
                .collect(),
            Role::Publisher => Vec::new(),
            Role::User => match &self.books[source as usize] {
                Some(book) => book
                    .opinions_about(&version.hash, MAX_VOTES_PER_HIT)
                    .into_iter()
                    .map(|(voter, verdict, issued)| {
                        if voter == peer(source) {
                            (voter, self.told(source, verdict), issued)
                        } else {
                            (voter, verdict, issued)
                        }
                    })
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// The newest `store_votes` votes the supernodes hold on `version` of
    /// `title` at `t`: honest users' as handed in, and the Sybils' of every
    /// polluter with a decoy of the title (each Sybil id a joined leaf
    /// handing in its stance), dated now if they re-sign, else at release.
    fn stored(&self, title: usize, version: &Version, t: f64) -> Vec<(u64, PeerId, Verdict)> {
        let want = self.config.store_votes as usize;
        let mut all: Vec<(u64, PeerId, Verdict)> = self.store.get(&version.hash).cloned().unwrap_or_default();
        let dated = if self.config.sybils_refresh {
            EPOCH + t as u64
        } else {
            EPOCH + self.releases[title] as u64
        };
        let mut polluters: Vec<u32> = self.versions[title]
            .iter()
            .filter_map(|v| match v.kind {
                Kind::Decoy { polluter } => Some(polluter),
                _ => None,
            })
            .collect();
        polluters.sort_unstable();
        polluters.dedup();
        for polluter in polluters {
            let Some(verdict) = self.sybil_verdict(polluter, &version.hash) else {
                continue;
            };
            let step = self.config.polluters.max(1);
            for i in 0..self.sybils_of(polluter).min(STORE_VOTES_PER_FILE as u32) {
                all.push((dated, peer(polluter + i * step), verdict));
            }
        }
        all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        all.truncate(STORE_VOTES_PER_FILE.min(want));
        all
    }

    /// How a Sybil of `polluter` votes on `hash` when it talks to a user.
    fn sybil_verdict(&self, polluter: u32, hash: &ContentHash) -> Option<Verdict> {
        match (self.kinds.get(hash)?, self.config.camouflage) {
            (Kind::Decoy { polluter: p }, _) if *p == polluter => Some(Verdict::Authentic),
            (Kind::Authentic, false) => Some(Verdict::Fake),
            (Kind::Authentic, true) => Some(Verdict::Authentic),
            (Kind::Decoy { .. }, true) => Some(Verdict::Fake),
            _ => None,
        }
    }

    /// What `node` answers when asked about `hashes`: its own votes on them
    /// (as it tells them), and for the rest its weighted opinion
    /// ([`VoteBook::opinion`]). A Sybil answers with its polluter's stance.
    fn answer(&self, node: u32, title: usize, hashes: &[ContentHash]) -> Answer {
        let mut answer = Answer::default();
        match self.role(node) {
            Role::Sybil { polluter } => {
                for version in &self.versions[title] {
                    if let Some(verdict) = self.sybil_verdict(polluter, &version.hash) {
                        answer.votes.push((peer(node), version.hash, verdict, EPOCH));
                    }
                }
            }
            Role::User => {
                let Some(book) = self.books[node as usize].as_ref() else {
                    return answer;
                };
                for hash in hashes {
                    if let Some((verdict, issued)) = book.own_votes_on(hash) {
                        answer
                            .votes
                            .push((peer(node), *hash, self.told(node, verdict), issued));
                    } else if let Some(value) = book.opinion(hash) {
                        let value = if self.liars[node as usize] { -value } else { value };
                        answer.opinions.push((peer(node), *hash, value));
                    }
                }
            }
            Role::Poisoner | Role::Publisher => {}
        }
        answer.votes.truncate(MAX_VOTES_PER_HIT);
        answer.opinions.truncate(MAX_VOTES_PER_HIT);
        answer
    }

    /// The own votes `node` hands over in an exchange: first its votes on
    /// the files the other side just sent votes on (`about`: what lets two
    /// peers measure their agreement at once), then its newest, at most
    /// `exchange_votes` in all.
    fn exchanged(
        &self,
        node: u32,
        about: &[ContentHash],
        rng: &mut Rng,
    ) -> Vec<(PeerId, ContentHash, Verdict, u64)> {
        let max = self.config.exchange_votes as usize;
        let mut out: Vec<(PeerId, ContentHash, Verdict, u64)> = Vec::new();
        match self.role(node) {
            Role::Sybil { polluter } => {
                let stance = |hash: &ContentHash| self.sybil_verdict(polluter, hash);
                for hash in about {
                    if let Some(verdict) = stance(hash) {
                        out.push((peer(node), *hash, verdict, EPOCH));
                    }
                }
                for _ in 0..max {
                    if out.len() >= max {
                        break;
                    }
                    let title = rng.below(self.config.titles as u64) as usize;
                    for version in &self.versions[title] {
                        if let Some(verdict) = stance(&version.hash) {
                            if !out.iter().any(|v| v.1 == version.hash) {
                                out.push((peer(node), version.hash, verdict, EPOCH));
                            }
                        }
                    }
                }
            }
            Role::User => {
                if let Some(book) = &self.books[node as usize] {
                    for hash in about {
                        if let Some((verdict, issued)) = book.own_votes_on(hash) {
                            out.push((peer(node), *hash, self.told(node, verdict), issued));
                        }
                    }
                    for (hash, verdict, issued) in book.own_votes(max) {
                        if out.len() >= max {
                            break;
                        }
                        if !out.iter().any(|v| v.1 == hash) {
                            out.push((peer(node), hash, self.told(node, verdict), issued));
                        }
                    }
                }
            }
            Role::Poisoner | Role::Publisher => {}
        }
        out.truncate(max);
        out
    }
}

/// A peer's answer to "what do you think of these files?".
#[derive(Default)]
struct Answer {
    votes: Vec<(PeerId, ContentHash, Verdict, u64)>,
    opinions: Vec<(PeerId, ContentHash, f64)>,
}

/// Bytes of one opinion in an answer: the hash and the value as an i8.
const OPINION_BYTES: u64 = 33;

/// Counters of one run.
#[derive(Default)]
struct Tally {
    searches: u64,
    top_authentic: u64,
    first_authentic: u64,
    fakes_before_good: u64,
    got_good: u64,
    failed: u64,
    gave_up: u64,
    hit_votes: u64,
    hit_vote_bytes: u64,
    exchange_messages: u64,
    exchange_bytes: u64,
    ask_messages: u64,
    ask_bytes: u64,
    weighted: u64,
    hours: Vec<(u64, u64)>,
}

/// One defence combination over the whole run.
pub fn run(config: &Pollution, nodes: u32, seed: u64, defence: Defence) -> Outcome {
    let mut world = World::new(config, nodes, seed, defence);
    let zipf = Zipf::new(config.titles.max(1) as usize, config.zipf_alpha);
    let first_user = world.first_user();
    let users = nodes - first_user;
    let duration = config.duration_h * 3600.0;
    let count = (users as f64 * config.searches_per_user) as u64;
    // The searches' times, users and random streams, shared by every
    // defence combination.
    let mut schedule = Rng::stream(seed, 0x9011_0002);
    let mut searches: Vec<(f64, u32, u64)> = (0..count)
        .map(|i| {
            let t = schedule.unit() * duration;
            let user = first_user + schedule.below(users as u64) as u32;
            (t, user, i)
        })
        .collect();
    searches.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
    let hours = config.duration_h.ceil().max(1.0) as usize;
    let mut tally = Tally {
        hours: vec![(0, 0); hours],
        ..Tally::default()
    };
    for (t, user, index) in searches {
        let mut rng = Rng::stream(seed, 0x9011_1000 ^ splitmix(index));
        let measured = t >= config.warmup_share * duration;
        search(&mut world, &zipf, t, user, &mut rng, measured, &mut tally);
    }
    let n = tally.searches.max(1) as f64;
    let books: Vec<&VoteBook> = world.books.iter().flatten().collect();
    let trusted_per_user = if books.is_empty() {
        0.0
    } else {
        books
            .iter()
            .map(|b| b.trusted(usize::MAX).len() as f64)
            .sum::<f64>()
            / books.len() as f64
    };
    Outcome {
        defence,
        searches: tally.searches,
        top_authentic: tally.top_authentic as f64 / n,
        first_authentic: tally.first_authentic as f64 / n,
        fakes_before_good: tally.fakes_before_good as f64 / tally.got_good.max(1) as f64,
        failed_per_search: tally.failed as f64 / n,
        gave_up: tally.gave_up as f64 / n,
        hit_votes_per_search: tally.hit_votes as f64 / n,
        hit_vote_bytes_per_search: tally.hit_vote_bytes as f64 / n,
        exchange_messages_per_search: tally.exchange_messages as f64 / n,
        exchange_bytes_per_search: tally.exchange_bytes as f64 / n,
        ask_messages_per_search: tally.ask_messages as f64 / n,
        ask_bytes_per_search: tally.ask_bytes as f64 / n,
        weighted_share: tally.weighted as f64 / n,
        trusted_per_user,
        timeline: tally
            .hours
            .iter()
            .map(|&(top, all)| {
                if all == 0 {
                    f64::NAN
                } else {
                    top as f64 / all as f64
                }
            })
            .collect(),
    }
}

fn search(
    world: &mut World,
    zipf: &Zipf,
    t: f64,
    user: u32,
    rng: &mut Rng,
    measured: bool,
    tally: &mut Tally,
) {
    let titles = world.config.titles as usize;
    // A title the user does not have yet, among those out, by popularity
    // (Zipf) times the decay of interest since release.
    let lifetime = world.config.lifetime_h * 3600.0;
    let mut total = 0.0;
    let weights: Vec<f64> = (0..titles)
        .map(|title| {
            let age = t - world.releases[title];
            let w = if age < 0.0 || world.has[user as usize * titles + title] {
                0.0
            } else {
                zipf.probability(title) * (-age / lifetime).exp()
            };
            total += w;
            w
        })
        .collect();
    if total <= 0.0 {
        return;
    }
    let mut pick = rng.unit() * total;
    let mut title = titles - 1;
    for (i, w) in weights.iter().enumerate() {
        if pick < *w {
            title = i;
            break;
        }
        pick -= w;
    }
    if weights[title] <= 0.0 {
        return;
    }
    let now = EPOCH + t as u64;
    let follower = world.defence.publishers && world.followers[user as usize];
    // What the search finds: every version with a listed source.
    let mut found: Vec<(usize, u32)> = world.versions[title]
        .iter()
        .enumerate()
        .map(|(i, version)| (i, world.sources(version, t)))
        .filter(|&(_, sources)| sources > 0)
        .collect();
    if found.is_empty() {
        return;
    }
    // Votes ride with the hits into the user's book.
    let mut hit_votes = 0u64;
    let mut hit_bytes = 0u64;
    if world.defence.votes {
        for &(i, sources) in &found {
            let version = &world.versions[title][i];
            let mut seen = BTreeSet::new();
            let mut votes = Vec::new();
            for _ in 0..world.config.vote_sources_per_hit.min(sources) {
                let source = world.pick_source(version, sources, rng);
                for opinion in world.hit_opinions(source, title as u32, version) {
                    if votes.len() < MAX_VOTES_PER_HIT && seen.insert(opinion.0) {
                        votes.push(opinion);
                    }
                }
            }
            if votes.is_empty() {
                continue;
            }
            hit_votes += votes.len() as u64;
            hit_bytes += 1 + votes.len() as u64 * world.vote_bytes;
            let hash = version.hash;
            let book = world.books[user as usize].as_mut().expect("users have books");
            for (voter, verdict, issued) in votes {
                book.observe(voter, hash, verdict, issued);
            }
        }
    }
    // The supernodes' stores: the newest votes on each result.
    if world.defence.votes && world.config.store_votes > 0 {
        let mut read = Vec::new();
        for &(i, _) in &found {
            let version = &world.versions[title][i];
            let votes = world.stored(title, version, t);
            hit_votes += votes.len() as u64;
            hit_bytes += 1 + votes.len() as u64 * world.vote_bytes;
            read.push((version.hash, votes));
        }
        if world.config.gather_own {
            let asked_results = found.len().min(MAX_HASHES_PER_NOTES_ASK / 2);
            let own = world.books[user as usize]
                .as_ref()
                .map(|book| book.own_votes(MAX_HASHES_PER_NOTES_ASK - asked_results))
                .unwrap_or_default();
            for (hash, _, _) in own {
                let Some(&(own_title, v)) = world.places.get(&hash) else {
                    continue;
                };
                let votes = world.stored(own_title, &world.versions[own_title][v], t);
                hit_votes += votes.len() as u64;
                hit_bytes += 32 + votes.len() as u64 * world.vote_bytes;
                read.push((hash, votes));
            }
        }
        let book = world.books[user as usize].as_mut().expect("users have books");
        for (hash, votes) in read {
            for (issued, voter, verdict) in votes {
                book.observe(voter, hash, verdict, issued);
            }
        }
    }
    // Ask the voters it trusts most about what the search found.
    let mut ask_messages = 0u64;
    let mut ask_bytes = 0u64;
    if world.defence.votes && world.config.ask_trusted > 0 {
        let hashes: Vec<ContentHash> = found
            .iter()
            .map(|&(i, _)| world.versions[title][i].hash)
            .collect();
        let want = world.config.ask_trusted as usize;
        let asked: Vec<(PeerId, f64)> = match world.books[user as usize].as_ref() {
            None => Vec::new(),
            Some(book) if world.config.ask_met_only => {
                let met = &world.met[user as usize];
                (book.trusted(usize::MAX).into_iter())
                    .filter(|(voter, _)| met.contains(voter))
                    .take(want)
                    .collect()
            }
            Some(book) => book.trusted(want),
        };
        let mut answers = Vec::new();
        for (voter, _) in asked {
            let Some(node) = node_of(voter) else {
                continue;
            };
            let answer = world.answer(node, title, &hashes);
            ask_messages += 2;
            ask_bytes += 1
                + 32 * hashes.len() as u64
                + 2
                + answer.votes.len() as u64 * world.vote_bytes
                + answer.opinions.len() as u64 * OPINION_BYTES;
            answers.push(answer);
        }
        let book = world.books[user as usize].as_mut().expect("users have books");
        for answer in answers {
            for (voter, hash, verdict, issued) in answer.votes {
                book.observe(voter, hash, verdict, issued);
            }
            for (from, hash, value) in answer.opinions {
                book.hear(from, hash, value);
            }
        }
    }
    // Rank as the node would.
    let mut candidates: Vec<Candidate> = found
        .iter()
        .map(|&(i, sources)| {
            let version = &world.versions[title][i];
            Candidate {
                content: version.hash,
                sources,
                score: world.books[user as usize]
                    .as_ref()
                    .map_or(Score::NONE, |book| book.score(&version.hash)),
                trusted_publisher: follower && version.published,
            }
        })
        .collect();
    credence::rank(&mut candidates);
    // Back from hashes to versions (a handful of candidates).
    let order: Vec<usize> = candidates
        .iter()
        .map(|c| {
            world.versions[title]
                .iter()
                .position(|v| v.hash == c.content)
                .expect("candidates come from the versions")
        })
        .collect();
    found.sort_by_key(|&(i, _)| order.iter().position(|&o| o == i));
    let top_authentic = world.versions[title][order[0]].kind == Kind::Authentic;
    let weighted = candidates
        .iter()
        .any(|c| c.score.own.is_none() && c.score.weight > 0.0);
    // Download in rank order until an authentic copy arrives.
    let mut fakes = 0u64;
    let mut failed = 0u64;
    let mut first_authentic = None;
    let mut good = false;
    let mut exchange_messages = 0u64;
    let mut exchange_bytes = 0u64;
    for &(i, sources) in found.iter().take(world.config.max_attempts as usize) {
        let kind = world.versions[title][i].kind;
        if first_authentic.is_none() {
            first_authentic = Some(kind == Kind::Authentic);
        }
        if kind == Kind::Bogus {
            // Nobody holds it: the download never starts.
            failed += 1;
            continue;
        }
        let source = world.pick_source(&world.versions[title][i], sources, rng);
        let verdict = if kind == Kind::Authentic {
            Verdict::Authentic
        } else {
            Verdict::Fake
        };
        let hash = world.versions[title][i].hash;
        if let Some(book) = world.books[user as usize].as_mut() {
            book.cast(hash, verdict, now);
        }
        if world.defence.votes && world.config.store_votes > 0 {
            let told = world.told(user, verdict);
            let kept = world.store.entry(hash).or_default();
            kept.retain(|(_, voter, _)| *voter != peer(user));
            kept.push((now, peer(user), told));
            kept.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            kept.truncate(STORE_VOTES_PER_FILE);
        }
        // The downloader and its source swap their newest votes.
        if world.defence.votes && world.config.exchange_votes > 0 {
            let given = world.exchanged(user, &[], rng);
            let about: Vec<ContentHash> = given.iter().map(|v| v.1).collect();
            let received = world.exchanged(source, &about, rng);
            exchange_messages += 2;
            exchange_bytes += 2 + (given.len() + received.len()) as u64 * world.vote_bytes;
            if let Some(book) = world.books[user as usize].as_mut() {
                for (voter, hash, verdict, issued) in received {
                    book.observe(voter, hash, verdict, issued);
                }
            }
            if let Some(book) = world.books[source as usize].as_mut() {
                for (voter, hash, verdict, issued) in given {
                    book.observe(voter, hash, verdict, issued);
                }
            }
            if world.config.ask_met_only {
                world.met[user as usize].insert(peer(source));
            }
        }
        if kind == Kind::Authentic {
            world.versions[title][i].holders.push(user);
            world.has[user as usize * titles + title] = true;
            good = true;
            break;
        }
        fakes += 1;
        if rng.chance(world.config.keep_fake) {
            world.versions[title][i].holders.push(user);
        }
    }
    let hour = ((t / 3600.0) as usize).min(tally.hours.len() - 1);
    tally.hours[hour].1 += 1;
    tally.hours[hour].0 += u64::from(top_authentic);
    if measured {
        tally.searches += 1;
        tally.top_authentic += u64::from(top_authentic);
        tally.first_authentic += u64::from(first_authentic == Some(true));
        if good {
            tally.got_good += 1;
            tally.fakes_before_good += fakes;
        } else {
            tally.gave_up += 1;
        }
        tally.failed += failed;
        tally.hit_votes += hit_votes;
        tally.hit_vote_bytes += hit_bytes;
        tally.exchange_messages += exchange_messages;
        tally.exchange_bytes += exchange_bytes;
        tally.ask_messages += ask_messages;
        tally.ask_bytes += ask_bytes;
        tally.weighted += u64::from(weighted);
    }
}

/// The figures as a table for the terminal and `run.txt`.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>10} {:>11} {:>9} {:>8}\n",
        "defence",
        "searches",
        "top auth",
        "1st auth",
        "fakes/ok",
        "failed/s",
        "gave up",
        "hit votes/s",
        "vote msg/s",
        "vote kB/s",
        "weighted",
        "trusted"
    );
    for o in outcomes {
        let _ = writeln!(
            out,
            "{:<18} {:>9} {:>8.1}% {:>8.1}% {:>9.3} {:>9.3} {:>7.2}% {:>11.1} {:>10.2} {:>11.2} {:>8.1}% {:>8.1}",
            o.defence.name,
            o.searches,
            o.top_authentic * 100.0,
            o.first_authentic * 100.0,
            o.fakes_before_good,
            o.failed_per_search,
            o.gave_up * 100.0,
            o.hit_votes_per_search,
            o.exchange_messages_per_search + o.ask_messages_per_search,
            (o.hit_vote_bytes_per_search + o.exchange_bytes_per_search + o.ask_bytes_per_search) / 1e3,
            o.weighted_share * 100.0,
            o.trusted_per_user
        );
    }
    out
}

/// `pollution.csv`: one row per defence combination.
pub fn csv(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "defence,possession,votes,publishers,searches,top_authentic,first_authentic,fakes_before_good,\
         failed_per_search,gave_up,hit_votes_per_search,hit_vote_bytes_per_search,\
         exchange_messages_per_search,exchange_bytes_per_search,ask_messages_per_search,ask_bytes_per_search,\
         weighted_share,trusted_per_user\n",
    );
    for o in outcomes {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.5},{:.5},{:.5},{:.5},{:.5},{:.3},{:.1},{:.3},{:.1},{:.3},{:.1},{:.5},{:.2}",
            o.defence.name,
            o.defence.possession,
            o.defence.votes,
            o.defence.publishers,
            o.searches,
            o.top_authentic,
            o.first_authentic,
            o.fakes_before_good,
            o.failed_per_search,
            o.gave_up,
            o.hit_votes_per_search,
            o.hit_vote_bytes_per_search,
            o.exchange_messages_per_search,
            o.exchange_bytes_per_search,
            o.ask_messages_per_search,
            o.ask_bytes_per_search,
            o.weighted_share,
            o.trusted_per_user
        );
    }
    out
}

/// `pollution_timeline.csv`: top-ranked authentic share per hour, one
/// column per defence combination (empty where an hour had no search).
pub fn timeline_csv(outcomes: &[Outcome]) -> String {
    let mut out = String::from("hour");
    for o in outcomes {
        let _ = write!(out, ",{}", o.defence.name);
    }
    out.push('\n');
    let hours = outcomes.iter().map(|o| o.timeline.len()).max().unwrap_or(0);
    for hour in 0..hours {
        let _ = write!(out, "{hour}");
        for o in outcomes {
            match o.timeline.get(hour) {
                Some(v) if v.is_finite() => {
                    let _ = write!(out, ",{v:.5}");
                }
                _ => out.push(','),
            }
        }
        out.push('\n');
    }
    out
}

/// `pollution.svg`: top-ranked authentic share, hour by hour, per defence.
pub fn chart(outcomes: &[Outcome], name: &str) -> String {
    Chart {
        title: format!("{name}: top-ranked result authentic, by hour"),
        x_label: "simulated hours".into(),
        y_label: "share of searches".into(),
        series: outcomes
            .iter()
            .map(|o| {
                Series::new(
                    o.defence.name,
                    o.timeline
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(h, &v)| (h as f64 + 0.5, v))
                        .collect(),
                )
            })
            .collect(),
        ..Chart::default()
    }
    .svg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_with_defaults_and_refuses_unknown_keys() {
        let scenario = crate::Scenario::parse("nodes = 50\n[pollution]\nfake_share = 0.5\n").unwrap();
        let pollution = scenario.pollution.unwrap();
        assert_eq!(pollution.fake_share, 0.5);
        assert_eq!(pollution.versions, Pollution::default().versions);
        assert!(crate::Scenario::parse("[pollution]\nfake_shar = 0.5\n").is_err());
        assert_eq!(crate::Scenario::parse("nodes = 5").unwrap().pollution, None);
    }

    #[test]
    fn the_supernodes_newest_votes_are_the_sybils_when_they_re_sign() {
        let mut config = Pollution {
            titles: 3,
            store_votes: 8,
            ..Pollution::default()
        };
        let defence = Defence::ALL[2];
        let user = peer(1_999);
        for refresh in [false, true] {
            config.sybils_refresh = refresh;
            let mut world = World::new(&config, 2_000, 1, defence);
            let decoy = world.versions[0]
                .iter()
                .position(|v| matches!(v.kind, Kind::Decoy { .. }))
                .unwrap();
            let hash = world.versions[0][decoy].hash;
            let t = world.releases[0] + 600.0;
            world
                .store
                .insert(hash, vec![(EPOCH + t as u64 - 1, user, Verdict::Fake)]);
            let stored = world.stored(0, &world.versions[0][decoy], t);
            assert_eq!(stored.len(), 8);
            let honest = stored.iter().filter(|(_, voter, _)| *voter == user).count();
            // Re-signing Sybils hold every slot; otherwise the newer honest
            // vote comes first and Sybils fill the rest.
            assert_eq!(honest, usize::from(!refresh), "refresh {refresh}");
            assert!(stored
                .iter()
                .filter(|(_, voter, _)| *voter != user)
                .all(|v| v.2 == Verdict::Authentic));
        }
    }

    #[test]
    fn poisoners_are_listed_a_thirteen_second_window_per_cycle_with_checks() {
        let config = Pollution {
            poisoner_share: 0.1,
            ..Pollution::default()
        };
        let on = World::new(&config, 2_000, 1, Defence::ALL[1]);
        let off = World::new(&config, 2_000, 1, Defence::ALL[0]);
        assert_eq!(off.poisoners_listed(100.0), 200);
        let mean: f64 = (0..200)
            .map(|t| on.poisoners_listed(t as f64 * 7.3) as f64)
            .sum::<f64>()
            / 200.0;
        let expected = 200.0 * POISON_WINDOW_S / (POISON_WINDOW_S + config.poison_rejoin_s);
        assert!((mean - expected).abs() < expected * 0.2, "{mean} vs {expected}");
    }
}
