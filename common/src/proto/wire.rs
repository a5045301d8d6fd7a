//! Messages exchanged between peers.
//!
//! Every exchange runs on its own bidirectional QUIC stream: the asker sends
//! one [`Request`] frame, the answerer one [`Response`] frame, followed for
//! bulk answers by raw bytes whose length both sides derive from the file's
//! [`BlockLayout`](super::BlockLayout) (bulk data is never postcard-wrapped).
//! Closing a stream never disturbs the others on the same connection.
//!
//! New variants are only ever appended: postcard encodes the variant index as
//! a varint, so older messages keep their bytes.

use serde::{Deserialize, Serialize};

use super::bitfield::WireBitfield;
use super::id::{ContentHash, PeerAddr};
use super::qrp::TableUpdate;
use super::routing::{FloodQuery, QueryId};
use super::search::{Hello, Hit, Query};

/// Most blocks one request may ask for; keeps one stream's answer bounded
/// and spreads large downloads over several streams.
pub const MAX_BLOCKS_PER_REQUEST: u32 = 1024;
/// Longest human-readable reason a peer may send.
pub const MAX_REASON_LEN: usize = 256;
/// Most peers one [`Response::Sources`] may list.
pub const MAX_SOURCES_PER_REPLY: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Ask for a file's size and block layer (the CVs every block is checked
    /// against). Answered by [`Response::BlockLayer`] and the raw layer.
    BlockLayer { hash: ContentHash },
    /// Ask for blocks `first..first + count` of a file. Answered by
    /// [`Response::Blocks`] and their raw bytes, back to back.
    Blocks {
        hash: ContentHash,
        first: u32,
        count: u32,
    },
    /// Ask which blocks of a file the peer holds (it may still be
    /// downloading it). Answered by [`Response::Have`] or [`Response::HaveAll`].
    Have { hash: ContentHash },
    /// Ask for other peers known to hold or fetch this file (source
    /// exchange). Answered by [`Response::Sources`].
    Sources { hash: ContentHash },
    /// A leaf joins this supernode. The stream stays open as the leaf's
    /// session: [`SessionNotice`](super::SessionNotice)s one way,
    /// [`LeafUpdate`](super::LeafUpdate)s the other, until either side leaves.
    Join(Hello),
    /// Search this supernode's index. Answered by [`Response::Hits`]
    /// frames and a final [`Response::EndOfHits`].
    Search(Query),
    /// Ask a supernode to have one of its firewalled leaves connect to us
    /// (the supernode tells the leaf the address it sees us at). Answered
    /// by [`Response::PushSent`], [`Response::UnknownLeaf`] or, from a node
    /// that is not a supernode, [`Response::NotSupernode`].
    Push { leaf: super::id::PeerId },
    /// Bandwidth probe: send us `bytes` raw bytes (download test). Answered
    /// by [`Response::ProbeData`] and the bytes, or [`Response::Busy`].
    ProbeDown { bytes: u32 },
    /// Bandwidth probe: `bytes` raw bytes follow (upload test). Answered by
    /// [`Response::ProbeReceived`] once all have arrived.
    ProbeUp { bytes: u32 },
    /// Reachability: try to connect to me from a fresh port. Answered by
    /// [`Response::DialBack`].
    DialBack,
    /// What a supernode has room for. Answered by [`Response::Status`].
    Status,
    /// A supernode asks to become our overlay neighbour. Answered by a
    /// [`LinkNotice`]; if accepted, the stream carries [`OverlayMessage`]s
    /// both ways for as long as the link lasts.
    Link(LinkHello),
    /// [`Request::Link`] from a supernode that speaks optional overlay
    /// features (appended after version 0). Answered like `Link`, with
    /// [`LinkNotice::AcceptedWith`] instead of `Accepted`. A node that
    /// does not know this variant resets the stream (a bad request); the
    /// asker then links again with a plain [`Request::Link`].
    LinkWith(LinkOffer),
    /// Ask a supernode to arrange a hole punch with one of its firewalled
    /// leaves (appended after version 0). Answered by
    /// [`Response::PunchReady`], then, a moment later, the supernode tells
    /// the leaf to connect to us (as for [`Request::Push`]); meanwhile we
    /// send a few tiny UDP packets from our listening port to the leaf's
    /// address, which opens our own router for the leaf's connection. Also
    /// [`Response::UnknownLeaf`], [`Response::Busy`] or
    /// [`Response::NotSupernode`]. A node that does not know this variant
    /// resets the stream: the asker falls back to [`Request::Push`].
    Punch { leaf: super::id::PeerId },
    /// What address do you see me at? Answered by [`Response::Observed`]
    /// (appended after version 0; an older node resets the stream).
    Observe,
    /// Ask a supernode to relay between us and one of its firewalled
    /// leaves, the last resort when a hole punch cannot work (both behind
    /// routers that give every peer a new port). Answered by
    /// [`Response::RelayReady`]; we then send bind packets
    /// ([`crate::proto::relay`]) to that port, and the supernode has the
    /// leaf dial the port as if it were us. Also [`Response::BadRequest`]
    /// (relaying off or full, with the reason), [`Response::UnknownLeaf`],
    /// [`Response::Busy`] or [`Response::NotSupernode`]. Appended after
    /// version 0; an older node resets the stream.
    Relay { leaf: super::id::PeerId },
    /// A leaf tells its supernode about its router and what it speaks, so
    /// punches with it can be planned ([`crate::proto::birthday`]); sent on
    /// its own stream after joining, and again when it learns more.
    /// Answered by [`Response::TraitsNoted`]. Appended after version 0; an
    /// older supernode resets the stream, and the leaf then gets only the
    /// orders it always had.
    Traits(super::birthday::Traits),
    /// Ask a supernode to plan a way to one of its firewalled leaves, for
    /// a downloader that says what its router is. Answered by
    /// [`Response::TraversePlan`] (and the leaf told its part), or as
    /// [`Request::Punch`] is refused. Appended after version 0; an older
    /// node resets the stream: the asker falls back to `Punch`.
    Traverse {
        leaf: super::id::PeerId,
        downloader: super::birthday::Downloader,
    },
    /// A joined leaf says whether peers can connect to it now, after it
    /// tested again (its outside address changed, or its router or
    /// firewall did): the supernode lists it as a direct source, or as one
    /// reached through the supernode (push, punch, relay), from then on.
    /// [`Hello::accepts_inbound`] said it once, at join; this keeps it
    /// true. Answered by [`Response::ReachNoted`]. Appended after version
    /// 0; an older supernode resets the stream, and keeps listing the leaf
    /// as it joined (the leaf may join again to correct it).
    Reach { accepts_inbound: bool },
    /// A joined leaf offers addresses of its other IP family (its global
    /// IPv6 addresses, when it joined over IPv4): the supernode dials each
    /// back, as a stranger would, and lists those that answered beside the
    /// session's address, first (a path with no NAT on it). At most
    /// [`super::nat::MAX_OTHER_ADDRESSES`]; `padding` is at least
    /// [`super::nat::PADDING_PER_ADDRESS`] bytes per address (any bytes),
    /// so the dial-backs never send an address more than the leaf sent.
    /// Answered by [`Response::AddressesTested`], or
    /// [`Response::BadRequest`]. Appended after version 0; an older
    /// supernode resets the stream, and lists only the session's address.
    Addresses {
        addrs: Vec<std::net::SocketAddr>,
        padding: Vec<u8>,
    },
    /// Proof of possession ([`crate::proto::possession`]): send chunk
    /// `chunk` (1 KiB) of this file with the chaining values that link it
    /// to the hash. A supernode asks its leaves this of what they publish.
    /// Answered by [`Response::Proof`] or [`Response::NotFound`]. Appended
    /// after version 0; an older node resets the stream.
    Prove { hash: ContentHash, chunk: u64 },
    /// A downloader tells a supernode that `source` did not serve `hash`
    /// as listed: it sent a block that failed verification, or said it
    /// does not hold the file. The supernode believes no one: if `source`
    /// is its leaf and publishes `hash`, it checks that file next
    /// ([`Request::Prove`]), so a false report costs an honest leaf one
    /// passed check. Answered by [`Response::ReportNoted`] (also when the
    /// source is not its leaf) or [`Response::Busy`]. Appended after
    /// version 0; an older node resets the stream.
    Report {
        hash: ContentHash,
        source: super::id::PeerId,
    },
    /// A leaf hands its supernode its own votes on files (at most
    /// [`MAX_VOTES_PER_MESSAGE`], each signed by the leaf's key: votes by
    /// anyone else are refused), for the supernode to give searchers
    /// ([`Request::NotesFor`]). Answered by [`Response::VotesNoted`],
    /// [`Response::Busy`] (over budget), [`Response::UnknownLeaf`] (not
    /// joined there) or [`Response::NotSupernode`]. Appended after
    /// version 0; an older node resets the stream.
    Votes { votes: Vec<super::credence::SignedVote> },
    /// Asks a supernode what it knows of these files (at most
    /// [`MAX_HASHES_PER_NOTES_ASK`]) besides their hits: votes on them and
    /// their tags, as a searcher does for its results. Answered by
    /// [`Response::Notes`] or [`Response::NotSupernode`]. Appended after
    /// version 0; an older node resets the stream.
    NotesFor { hashes: Vec<ContentHash> },
    /// A downloader and a source of its file swap votes: the downloader
    /// sends its own newest votes (at most
    /// [`MAX_VOTES_PER_EXCHANGE`](super::credence::MAX_VOTES_PER_EXCHANGE),
    /// each signed by its own key: anyone else's are refused), the source
    /// answers with its own votes on those files first, then its newest.
    /// Two peers who met over a file learn at once how far they agree,
    /// which is what gives a vote weight (docs/TRUST.md). Answered by
    /// [`Response::SwappedVotes`], [`Response::Busy`] or
    /// [`Response::BadRequest`]. Appended after version 0; an older node
    /// resets the stream.
    SwapVotes { votes: Vec<super::credence::SignedVote> },
    /// Asks a peer the asker agrees with (met over a download, docs/TRUST.md)
    /// what it thinks of these files (at most [`MAX_HASHES_PER_NOTES_ASK`]):
    /// its own votes on them, else its weighted opinion. Answered by
    /// [`Response::Opinions`], [`Response::Busy`] or
    /// [`Response::BadRequest`]. Appended after version 0; an older node
    /// resets the stream.
    AskOpinions { hashes: Vec<ContentHash> },
}

/// Most votes one [`Request::Votes`] may carry.
pub const MAX_VOTES_PER_MESSAGE: usize = 64;
/// Most files one [`Request::NotesFor`] may ask about. The answer then
/// holds at most this many times
/// [`MAX_VOTES_PER_HIT`](super::credence::MAX_VOTES_PER_HIT) votes of about
/// 134 bytes (34 KiB) and this many files' tags of at most about 500 bytes
/// (16 KiB): within one control frame.
pub const MAX_HASHES_PER_NOTES_ASK: usize = 32;

/// What a supernode says when it asks to link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkHello {
    /// Where other supernodes can reach it.
    pub listen: std::net::SocketAddr,
}

/// Overlay feature: the peer sends and reads
/// [`OverlayMessage::KeywordTable`] and [`OverlayMessage::Degree`].
pub const FEATURE_KEYWORD_TABLES: u32 = 1;
/// Overlay feature: the peer sends and reads [`OverlayMessage::HitNotes`].
pub const FEATURE_NOTES: u32 = 2;

/// What a supernode says when it asks to link, with what it can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOffer {
    /// Where other supernodes can reach it.
    pub listen: std::net::SocketAddr,
    /// `FEATURE_*` bits it speaks; unknown bits are ignored.
    pub features: u32,
    /// Its number of supernode neighbours now (dynamic querying estimates
    /// how far a query spreads from it).
    pub degree: u16,
}

/// The answer to a [`Request::Link`] or [`Request::LinkWith`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkNotice {
    Accepted,
    /// No room for more neighbours; try these.
    Full {
        others: Vec<PeerAddr>,
    },
    /// The link is up (answer to [`Request::LinkWith`] only): the features
    /// the answerer speaks and its degree. Features are used on the link
    /// only if both sides speak them.
    AcceptedWith {
        features: u32,
        degree: u16,
    },
}

/// A supernode another supernode knows, and how long ago it was last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub addr: PeerAddr,
    pub age_secs: u32,
}

/// Most entries in one host cache message.
pub const MAX_HOSTS_PER_MESSAGE: usize = 32;

/// What neighbouring supernodes tell each other on their link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverlayMessage {
    Query(FloodQuery),
    Hits {
        id: QueryId,
        hits: Vec<Hit>,
    },
    /// Part of the sender's host cache (at most [`MAX_HOSTS_PER_MESSAGE`]).
    Supernodes {
        entries: Vec<HostEntry>,
    },
    /// A change to the sender's level-`level` keyword table for this link
    /// ([`crate::proto::qrp::horizon`]): what lies within `level` hops past
    /// the sender, never back through the receiver. Sent only on links
    /// where both sides have [`FEATURE_KEYWORD_TABLES`]; `level` is below
    /// [`crate::proto::qrp::horizon::MAX_LEVELS`], the update within
    /// [`crate::proto::qrp::MAX_UPDATE_COST`].
    ///
    /// `more`: further updates of the same change follow (a table too big
    /// for one frame); the receiver applies them together, at the last.
    KeywordTable {
        level: u8,
        update: TableUpdate,
        more: bool,
    },
    /// The sender's number of supernode neighbours changed (only with
    /// [`FEATURE_KEYWORD_TABLES`]).
    Degree {
        neighbours: u16,
    },
    /// What the sender knows of the files of the hits it gave for query
    /// `id` besides the hits: signed votes on them (at most
    /// [`MAX_VOTES_PER_HIT_NOTES`]) and their tags (at most
    /// [`MAX_HASHES_PER_NOTES_ASK`] files). Sent back along the query's
    /// path like its hits, only on links where both sides have
    /// [`FEATURE_NOTES`]. The searcher's supernode keeps them for its leaf
    /// ([`Request::NotesFor`]); every node on the way may drop them.
    HitNotes {
        id: QueryId,
        votes: Vec<super::credence::SignedVote>,
        tags: Vec<super::search::FileTags>,
    },
}

/// Most votes one [`OverlayMessage::HitNotes`] carries: at most
/// [`MAX_VOTES_PER_HIT`](super::credence::MAX_VOTES_PER_HIT) on each of
/// [`MAX_HASHES_PER_NOTES_ASK`] files, about 34 KiB, one frame.
pub const MAX_VOTES_PER_HIT_NOTES: usize = MAX_HASHES_PER_NOTES_ASK * super::credence::MAX_VOTES_PER_HIT;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The file is `size` bytes; its block layer follows.
    BlockLayer {
        size: u64,
    },
    /// The requested blocks follow.
    Blocks {
        first: u32,
        count: u32,
    },
    /// This peer does not share that content.
    NotFound {
        hash: ContentHash,
    },
    /// The request was understood but not acceptable (out of range, too
    /// large). `reason` is at most [`MAX_REASON_LEN`] bytes.
    BadRequest {
        reason: String,
    },
    /// The peer holds these blocks (one bit per block of the file's layout).
    Have {
        blocks: WireBitfield,
    },
    /// The peer holds the whole file.
    HaveAll,
    /// Other peers for this file, at most [`MAX_SOURCES_PER_REPLY`].
    Sources {
        peers: Vec<PeerAddr>,
    },
    /// All upload slots are taken; ask again after this many milliseconds.
    Busy {
        retry_after_ms: u32,
    },
    /// Some hits for a search; more frames may follow.
    Hits {
        hits: Vec<Hit>,
    },
    /// The search is complete.
    EndOfHits,
    /// This node is not a supernode; leaves should join one of these.
    NotSupernode {
        others: Vec<PeerAddr>,
    },
    /// The leaf was asked to connect to you.
    PushSent,
    /// That leaf is not joined here.
    UnknownLeaf,
    /// Probe bytes follow.
    ProbeData,
    /// The receiver's measurement of an upload probe: `bytes` arrived in
    /// `micros` microseconds (from the first byte).
    ProbeReceived {
        bytes: u64,
        micros: u64,
    },
    DialBack {
        reachable: bool,
    },
    Status {
        supernode: bool,
        leaves: u32,
        max_leaves: u32,
        neighbours: u32,
    },
    /// The answer to [`Request::Punch`]: the leaf's address as this
    /// supernode sees it (send the punching packets there), and yours.
    PunchReady {
        leaf: std::net::SocketAddr,
        you: std::net::SocketAddr,
    },
    /// The answer to [`Request::Observe`]: the address the asker's
    /// packets come from, as the answerer sees it.
    Observed {
        addr: std::net::SocketAddr,
    },
    /// The answer to [`Request::Relay`]: the pair's UDP port on the
    /// supernode's address, and the token for the bind packets.
    RelayReady {
        port: u16,
        token: super::relay::Token,
    },
    /// The answer to [`Request::Traits`]: the `FEATURE_*` bits of
    /// [`crate::proto::birthday`] the supernode speaks.
    TraitsNoted {
        features: u32,
    },
    /// The answer to [`Request::Traverse`]: the leaf's address as this
    /// supernode sees it, the asker's, and the asker's part.
    TraversePlan {
        leaf: std::net::SocketAddr,
        you: std::net::SocketAddr,
        plan: super::birthday::Plan,
    },
    /// The answer to [`Request::Reach`]: searchers are told so from now on.
    ReachNoted,
    /// The answer to [`Request::Addresses`]: the offered addresses a
    /// stranger's fresh port reached (and that are listed from now on,
    /// replacing those listed before).
    AddressesTested {
        reachable: Vec<std::net::SocketAddr>,
    },
    /// The answer to [`Request::Prove`]: the file's size, the chunk's
    /// bytes (at most [`crate::proto::possession::CHUNK_LEN`]) and its
    /// siblings' chaining values from the root down (at most
    /// [`crate::proto::possession::MAX_PROOF_LEN`]).
    Proof {
        size: u64,
        data: Vec<u8>,
        proof: Vec<[u8; 32]>,
    },
    /// The answer to [`Request::Report`]: `checking` if the source is a
    /// leaf here publishing that file, and its check is now due.
    ReportNoted {
        checking: bool,
    },
    /// The answer to [`Request::Votes`]: how many of the votes were kept
    /// (the rest were not the leaf's own, failed their signature or date,
    /// or were already known).
    VotesNoted {
        accepted: u32,
    },
    /// The answer to [`Request::NotesFor`]: signed votes on the files asked
    /// about, at most [`MAX_VOTES_PER_HIT`](super::credence::MAX_VOTES_PER_HIT)
    /// per file (the receiver verifies each: see
    /// [`SignedVote::verify`](super::credence::SignedVote::verify)), and the
    /// tags of those it knows (at most one [`FileTags`](super::search::FileTags)
    /// per file asked about).
    Notes {
        votes: Vec<super::credence::SignedVote>,
        tags: Vec<super::search::FileTags>,
    },
    /// The answer to [`Request::SwapVotes`]: the source's own votes, at
    /// most [`MAX_VOTES_PER_EXCHANGE`](super::credence::MAX_VOTES_PER_EXCHANGE)
    /// (the receiver verifies each, and that each is the source's own).
    SwappedVotes {
        votes: Vec<super::credence::SignedVote>,
    },
    /// The answer to [`Request::AskOpinions`]: the answerer's own signed
    /// votes on the files asked about (at most one a file), and its
    /// opinion of those it did not vote on but has a view of (at most one
    /// a file).
    Opinions {
        votes: Vec<super::credence::SignedVote>,
        opinions: Vec<super::credence::Opinion>,
    },
}

/// Largest bandwidth probe, in bytes.
pub const MAX_PROBE_BYTES: u32 = 8 << 20;

impl Response {
    /// A `BadRequest` whose reason is cut to the wire limit.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut cut = MAX_REASON_LEN;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Response::BadRequest { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::birthday::Plan;
    use crate::proto::credence::{Opinion, MAX_VOTES_PER_EXCHANGE};
    use crate::proto::frame::{decode, encode, MAX_CONTROL_FRAME};
    use proptest::prelude::*;

    fn any_hash() -> impl Strategy<Value = ContentHash> {
        any::<[u8; 32]>().prop_map(ContentHash)
    }

    /// Only IP and port travel (no IPv6 scope or flow label).
    fn any_addr() -> impl Strategy<Value = std::net::SocketAddr> {
        any::<std::net::SocketAddr>().prop_map(|addr| std::net::SocketAddr::new(addr.ip(), addr.port()))
    }

    fn any_peer() -> impl Strategy<Value = PeerAddr> {
        (any::<[u8; 32]>(), any_addr()).prop_map(|(id, addr)| PeerAddr::new(crate::proto::PeerId(id), addr))
    }

    fn any_vote() -> impl Strategy<Value = crate::proto::credence::SignedVote> {
        (
            any::<[u8; 32]>(),
            any_hash(),
            any::<bool>(),
            any::<u64>(),
            any::<[u8; 32]>(),
        )
            .prop_map(
                |(voter, content, up, issued, half)| crate::proto::credence::SignedVote {
                    voter: crate::proto::PeerId(voter),
                    content,
                    verdict: if up {
                        crate::proto::credence::Verdict::Authentic
                    } else {
                        crate::proto::credence::Verdict::Fake
                    },
                    issued,
                    signature: [half, half].concat().try_into().unwrap(),
                },
            )
    }

    fn any_tags() -> impl Strategy<Value = crate::proto::search::FileTags> {
        (
            any_hash(),
            proptest::collection::vec(("[a-z]{1,16}", "\\PC{0,32}"), 0..=4),
        )
            .prop_map(|(hash, tags)| crate::proto::search::FileTags { hash, tags })
    }

    fn any_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any_hash().prop_map(|hash| Request::BlockLayer { hash }),
            (any_hash(), any::<u32>(), any::<u32>()).prop_map(|(hash, first, count)| Request::Blocks {
                hash,
                first,
                count
            }),
            any_hash().prop_map(|hash| Request::Have { hash }),
            any_hash().prop_map(|hash| Request::Sources { hash }),
            any::<[u8; 32]>().prop_map(|id| Request::Punch {
                leaf: crate::proto::PeerId(id)
            }),
            Just(Request::Observe),
            any::<[u8; 32]>().prop_map(|id| Request::Relay {
                leaf: crate::proto::PeerId(id)
            }),
            (any::<bool>(), any::<u32>()).prop_map(|(symmetric, features)| Request::Traits(
                crate::proto::birthday::Traits { symmetric, features }
            )),
            (any::<[u8; 32]>(), any::<bool>(), any::<bool>()).prop_map(|(id, symmetric, accepts)| {
                Request::Traverse {
                    leaf: crate::proto::PeerId(id),
                    downloader: crate::proto::birthday::Downloader { symmetric, accepts },
                }
            }),
            any::<bool>().prop_map(|accepts_inbound| Request::Reach { accepts_inbound }),
            (any_hash(), any::<u64>()).prop_map(|(hash, chunk)| Request::Prove { hash, chunk }),
            (any_hash(), any::<[u8; 32]>()).prop_map(|(hash, id)| Request::Report {
                hash,
                source: crate::proto::PeerId(id)
            }),
            (
                proptest::collection::vec(any_addr(), 0..3),
                proptest::collection::vec(any::<u8>(), 0..9000)
            )
                .prop_map(|(addrs, padding)| Request::Addresses { addrs, padding }),
            proptest::collection::vec(any_vote(), 0..MAX_VOTES_PER_MESSAGE)
                .prop_map(|votes| Request::Votes { votes }),
            proptest::collection::vec(any_hash(), 0..MAX_HASHES_PER_NOTES_ASK)
                .prop_map(|hashes| Request::NotesFor { hashes }),
            proptest::collection::vec(any_vote(), 0..MAX_VOTES_PER_EXCHANGE)
                .prop_map(|votes| Request::SwapVotes { votes }),
            proptest::collection::vec(any_hash(), 0..MAX_HASHES_PER_NOTES_ASK)
                .prop_map(|hashes| Request::AskOpinions { hashes }),
        ]
    }

    fn any_response() -> impl Strategy<Value = Response> {
        prop_oneof![
            any::<u64>().prop_map(|size| Response::BlockLayer { size }),
            (any::<u32>(), any::<u32>()).prop_map(|(first, count)| Response::Blocks { first, count }),
            any_hash().prop_map(|hash| Response::NotFound { hash }),
            "\\PC{0,300}".prop_map(Response::bad_request),
            proptest::collection::vec(any::<u8>(), 0..2048).prop_map(|bytes| Response::Have {
                blocks: WireBitfield(bytes)
            }),
            Just(Response::HaveAll),
            proptest::collection::vec(any_peer(), 0..MAX_SOURCES_PER_REPLY)
                .prop_map(|peers| Response::Sources { peers }),
            any::<u32>().prop_map(|retry_after_ms| Response::Busy { retry_after_ms }),
            (any_addr(), any_addr()).prop_map(|(leaf, you)| Response::PunchReady { leaf, you }),
            any_addr().prop_map(|addr| Response::Observed { addr }),
            (any::<u16>(), any::<[u8; 16]>()).prop_map(|(port, token)| Response::RelayReady { port, token }),
            any::<u32>().prop_map(|features| Response::TraitsNoted { features }),
            (any_addr(), any_addr(), 0..4u8).prop_map(|(leaf, you, plan)| Response::TraversePlan {
                leaf,
                you,
                plan: [Plan::Punch, Plan::Spray, Plan::Open, Plan::Relay][plan as usize]
            }),
            Just(Response::ReachNoted),
            (
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..1025),
                proptest::collection::vec(any::<[u8; 32]>(), 0..65)
            )
                .prop_map(|(size, data, proof)| Response::Proof { size, data, proof }),
            any::<bool>().prop_map(|checking| Response::ReportNoted { checking }),
            proptest::collection::vec(any_addr(), 0..3)
                .prop_map(|reachable| Response::AddressesTested { reachable }),
            any::<u32>().prop_map(|accepted| Response::VotesNoted { accepted }),
            (
                proptest::collection::vec(any_vote(), 0..256),
                proptest::collection::vec(any_tags(), 0..MAX_HASHES_PER_NOTES_ASK)
            )
                .prop_map(|(votes, tags)| Response::Notes { votes, tags }),
            proptest::collection::vec(any_vote(), 0..MAX_VOTES_PER_EXCHANGE)
                .prop_map(|votes| Response::SwappedVotes { votes }),
            (
                proptest::collection::vec(any_vote(), 0..MAX_HASHES_PER_NOTES_ASK),
                proptest::collection::vec(
                    (any_hash(), any::<i8>()).prop_map(|(content, percent)| Opinion { content, percent }),
                    0..MAX_HASHES_PER_NOTES_ASK
                )
            )
                .prop_map(|(votes, opinions)| Response::Opinions { votes, opinions }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in any_request()) {
            let bytes = encode(&request, MAX_CONTROL_FRAME).unwrap();
            let (decoded, used) = decode::<Request>(&bytes, MAX_CONTROL_FRAME).unwrap().unwrap();
            prop_assert_eq!(decoded, request);
            prop_assert_eq!(used, bytes.len());
        }

        #[test]
        fn responses_round_trip(response in any_response()) {
            if let Response::BadRequest { reason } = &response {
                prop_assert!(reason.len() <= MAX_REASON_LEN);
            }
            let bytes = encode(&response, MAX_CONTROL_FRAME).unwrap();
            let (decoded, used) = decode::<Response>(&bytes, MAX_CONTROL_FRAME).unwrap().unwrap();
            prop_assert_eq!(decoded, response);
            prop_assert_eq!(used, bytes.len());
        }
    }
}
