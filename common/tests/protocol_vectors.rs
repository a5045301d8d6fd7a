//! Byte-exact test vectors for `docs/PROTOCOL.md`, kept in `docs/vectors/`.
//!
//! Every vector is regenerated here from the real code and compared with the
//! stored file character for character; then the stored bytes are decoded (or
//! verified) again and compared with the value they claim to be. Two more
//! tests tie the document to the files: every vector file it names exists
//! (and every file is named), and every annotated hex example in it equals
//! the vector it cites.
//!
//! To rewrite the files after a deliberate protocol change:
//! `CANOPY_BLESS_VECTORS=1 cargo test -p canopy-common --test protocol_vectors`.
//! Without that variable these tests never write anything.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};
use canopy_common::net::identity::{peer_id_of_certificate, peer_id_of_spki, KEY_FILE};
use canopy_common::net::NodeKey;
use canopy_common::proto::birthday::{Downloader, Plan, Traits, FEATURE_BIRTHDAY};
use canopy_common::proto::content::{hash_bytes, MIN_BLOCK_SIZE};
use canopy_common::proto::credence::{
    decode_votes, encode_votes, Opinion, SignedVote, Verdict, VoteError, MAX_CLOCK_SKEW, MAX_VOTES_PER_HIT,
    MAX_VOTE_AGE,
};
use canopy_common::proto::frame::{self, FrameError, MAX_CONTROL_FRAME};
use canopy_common::proto::network::{
    alpn, client_proof, parse_allow_list, server_proof, Invite, NetworkKey, NetworkName, EXPORTER_LABEL,
    EXPORTER_LEN,
};
use canopy_common::proto::possession;
use canopy_common::proto::qrp::{TableUpdate, WordRun};
use canopy_common::proto::routing::{FloodQuery, QueryId};
use canopy_common::proto::search::{FileTags, RelayedSource};
use canopy_common::proto::wire::{
    HostEntry, LinkHello, LinkNotice, LinkOffer, OverlayMessage, FEATURE_KEYWORD_TABLES,
};
use canopy_common::proto::{
    Bitfield, BlockHashes, BlockLayout, ContentError, ContentHash, FileEntry, FileKind, Hello, Hit,
    LeafUpdate, Link, PeerAddr, PeerId, Query, Request, Response, SessionNotice,
};
use ring::signature::KeyPair;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Files and hex

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn vectors_dir() -> PathBuf {
    docs_dir().join("vectors")
}

fn blessing() -> bool {
    std::env::var_os("CANOPY_BLESS_VECTORS").is_some_and(|v| v == "1")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {text:?}"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("bad hex {text:?}: {e}")))
        .collect()
}

/// A JSON string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// A value as compact JSON in declaration order (postcard's field order),
/// with byte arrays written as `"0x…"` so hashes and ids stay readable.
fn readable<T: Serialize>(value: &T) -> String {
    let compact = serde_json::to_string(value).expect("messages serialize to JSON");
    let chars: Vec<char> = compact.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut in_string = false;
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            out.push(c);
            if c == '\\' {
                out.push(chars[i + 1]);
                i += 1;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '[' {
            let close = chars[i..].iter().position(|&c| c == ']').map(|p| i + p);
            let inner: Option<String> = close.map(|close| chars[i + 1..close].iter().collect());
            let bytes: Option<Vec<u8>> = inner
                .as_deref()
                .filter(|inner| !inner.is_empty())
                .and_then(|inner| inner.split(',').map(|n| n.parse::<u8>().ok()).collect());
            match (bytes, close) {
                (Some(bytes), Some(close)) => {
                    out.push_str(&format!("\"0x{}\"", hex(&bytes)));
                    i = close;
                }
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Vector files

type Check = Box<dyn Fn(&Value) -> Result<(), String>>;

/// One vector: its name, its JSON fields (raw JSON text, in order) and an
/// independent check of a stored copy.
struct Vector {
    name: String,
    fields: Vec<(&'static str, String)>,
    check: Check,
}

fn field<'a>(entry: &'a Value, key: &str) -> Result<&'a Value, String> {
    entry.get(key).ok_or_else(|| format!("missing field {key:?}"))
}

fn field_str<'a>(entry: &'a Value, key: &str) -> Result<&'a str, String> {
    field(entry, key)?
        .as_str()
        .ok_or_else(|| format!("field {key:?} is not a string"))
}

fn field_u64(entry: &Value, key: &str) -> Result<u64, String> {
    field(entry, key)?
        .as_u64()
        .ok_or_else(|| format!("field {key:?} is not an integer"))
}

fn render(about: &str, vectors: &[Vector]) -> String {
    let mut text = format!("{{\n  \"about\": {},\n  \"vectors\": [\n", js(about));
    for (n, vector) in vectors.iter().enumerate() {
        text.push_str("    {\n");
        let mut fields = vec![("name", js(&vector.name))];
        fields.extend(vector.fields.iter().cloned());
        for (k, (key, value)) in fields.iter().enumerate() {
            let comma = if k + 1 < fields.len() { "," } else { "" };
            text.push_str(&format!("      {}: {value}{comma}\n", js(key)));
        }
        text.push_str(if n + 1 < vectors.len() {
            "    },\n"
        } else {
            "    }\n"
        });
    }
    text.push_str("  ]\n}\n");
    text
}

/// Regenerates `file`, compares it with the stored copy (or writes it when
/// blessing), then runs every vector's check on the stored entries.
fn check_file(file: &str, about: &str, vectors: Vec<Vector>) {
    let names: BTreeSet<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names.len(), vectors.len(), "{file}: vector names must be unique");
    let generated = render(about, &vectors);
    let path = vectors_dir().join(file);
    if blessing() {
        std::fs::create_dir_all(vectors_dir()).expect("create docs/vectors");
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run CANOPY_BLESS_VECTORS=1 cargo test -p canopy-common --test protocol_vectors",
            path.display()
        )
    });
    if stored != generated {
        let line = stored
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| stored.lines().count().min(generated.lines().count()));
        panic!(
            "{file} differs from what the code produces, first at line {}:\n  stored:    {}\n  generated: {}\n\
             If the protocol changed on purpose, update docs/PROTOCOL.md and rerun with CANOPY_BLESS_VECTORS=1.",
            line + 1,
            stored.lines().nth(line).unwrap_or("<end of file>"),
            generated.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
    let parsed: Value = serde_json::from_str(&stored).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
    let entries = parsed["vectors"].as_array().expect("a vectors array");
    assert_eq!(entries.len(), vectors.len());
    for (entry, vector) in entries.iter().zip(&vectors) {
        assert_eq!(entry["name"].as_str(), Some(vector.name.as_str()));
        if let Err(error) = (vector.check)(entry) {
            panic!("{file}#{}: {error}", vector.name);
        }
    }
}

/// All vectors of all files, by file name, for the document checks.
fn all_files() -> Vec<(&'static str, Vec<Vector>)> {
    vec![
        ("postcard.json", postcard_vectors()),
        ("request.json", request_vectors()),
        ("response.json", response_vectors()),
        ("session.json", session_vectors()),
        ("overlay.json", overlay_vectors()),
        ("rejected.json", rejected_vectors()),
        ("ids.json", id_vectors()),
        ("layout.json", layout_vectors()),
        ("content.json", content_vectors()),
        ("blocks.json", block_vectors()),
        ("network.json", network_vectors()),
        ("identity.json", identity_vectors()),
        ("chaining.json", chaining_vectors()),
        ("possession.json", possession_vectors()),
        ("votes.json", vote_vectors()),
    ]
}

// ---------------------------------------------------------------------------
// Sample values

/// RFC 8032 section 7.1, test 1: a real Ed25519 public key.
fn peer_a() -> PeerId {
    PeerId(
        unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap()
            .try_into()
            .unwrap(),
    )
}

/// RFC 8032 section 7.1, test 2.
fn peer_b() -> PeerId {
    PeerId(
        unhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
            .unwrap()
            .try_into()
            .unwrap(),
    )
}

fn v4() -> SocketAddr {
    "192.0.2.1:4000".parse().unwrap()
}

fn v6() -> SocketAddr {
    "[2001:db8::1]:4001".parse().unwrap()
}

fn addr_a() -> PeerAddr {
    PeerAddr::new(peer_a(), v4())
}

fn addr_b() -> PeerAddr {
    PeerAddr::new(peer_b(), v6())
}

/// The content hash of the empty file (what `b3sum` prints for it).
fn hash_empty() -> ContentHash {
    ContentHash::of(b"")
}

/// The content hash of the 3-byte file `abc`.
fn hash_abc() -> ContentHash {
    ContentHash::of(b"abc")
}

fn query_id() -> QueryId {
    QueryId(std::array::from_fn(|i| i as u8))
}

fn sample_hit() -> Hit {
    Hit {
        hash: hash_abc(),
        size: 3,
        name: "abc.txt".into(),
        kind: FileKind::Document,
        sources: vec![addr_a()],
        source_count: 2,
        relayed: vec![RelayedSource {
            leaf: peer_b(),
            via: addr_a(),
        }],
    }
}

fn sample_entry() -> FileEntry {
    FileEntry {
        hash: hash_abc(),
        size: 3,
        name: "abc.txt".into(),
        kind: FileKind::Document,
        meta: vec![("artist".into(), "Nina Simone".into())],
    }
}

// ---------------------------------------------------------------------------
// Message vectors

/// A framed message: `frame` is the 4-byte length and the postcard body.
fn message<T>(name: &str, type_name: &str, description: &str, value: T) -> Vector
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    let frame = frame::encode(&value, MAX_CONTROL_FRAME).expect("vector fits a frame");
    let fields = vec![
        ("type", js(type_name)),
        ("description", js(description)),
        ("value", readable(&value)),
        ("body_len", (frame.len() - frame::LEN_PREFIX).to_string()),
        ("frame", js(&hex(&frame))),
    ];
    let check: Check = Box::new(move |entry| {
        let bytes = unhex(field_str(entry, "frame")?)?;
        let decoded = frame::decode::<T>(&bytes, MAX_CONTROL_FRAME)
            .map_err(|e| format!("stored frame does not decode: {e}"))?
            .ok_or("stored frame is incomplete")?;
        if decoded.1 != bytes.len() {
            return Err(format!("frame uses {} of {} bytes", decoded.1, bytes.len()));
        }
        if decoded.0 != value {
            return Err(format!("decodes to {:?}, not {value:?}", decoded.0));
        }
        if field_u64(entry, "body_len")? != (bytes.len() - frame::LEN_PREFIX) as u64 {
            return Err("body_len disagrees with the frame".into());
        }
        Ok(())
    });
    Vector {
        name: name.into(),
        fields,
        check,
    }
}

/// A bare postcard encoding (no frame), for the primer.
fn bare<T>(name: &str, type_name: &str, description: &str, value: T) -> Vector
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    let bytes = postcard::to_allocvec(&value).expect("serializes");
    let fields = vec![
        ("type", js(type_name)),
        ("description", js(description)),
        ("value", readable(&value)),
        ("hex", js(&hex(&bytes))),
    ];
    let check: Check = Box::new(move |entry| {
        let bytes = unhex(field_str(entry, "hex")?)?;
        let decoded: T = postcard::from_bytes(&bytes).map_err(|e| format!("does not decode: {e}"))?;
        if decoded != value {
            return Err(format!("decodes to {decoded:?}, not {value:?}"));
        }
        if postcard::to_allocvec(&decoded).map_err(|e| e.to_string())? != bytes {
            return Err("not the canonical encoding".into());
        }
        Ok(())
    });
    Vector {
        name: name.into(),
        fields,
        check,
    }
}

fn postcard_vectors() -> Vec<Vector> {
    vec![
        bare("u8_255", "u8", "u8 is one raw byte, never a varint", 255u8),
        bare("u16_4000", "u16", "u16 as a varint (a port number)", 4000u16),
        bare(
            "u32_0",
            "u32",
            "varint: 7 bits per byte, least significant group first",
            0u32,
        ),
        bare("u32_127", "u32", "largest one-byte varint", 127u32),
        bare("u32_128", "u32", "smallest two-byte varint", 128u32),
        bare("u32_300", "u32", "300 = 0b10_0101100", 300u32),
        bare("u32_max", "u32", "u32 varints take at most 5 bytes", u32::MAX),
        bare("u64_2_32", "u64", "2^32", 1u64 << 32),
        bare("u64_max", "u64", "u64 varints take at most 10 bytes", u64::MAX),
        bare(
            "i64_minus_3",
            "i64",
            "zigzag then varint (no Canopy message has a signed field)",
            -3i64,
        ),
        bare("bool_false", "bool", "one byte, 0", false),
        bare(
            "bool_true",
            "bool",
            "one byte, 1; any other byte is an error",
            true,
        ),
        bare(
            "string_empty",
            "String",
            "varint byte length, then UTF-8",
            String::new(),
        ),
        bare(
            "string_cafe",
            "String",
            "the length counts bytes, not characters",
            "café".to_string(),
        ),
        bare("option_none", "Option<u64>", "tag 0", None::<u64>),
        bare(
            "option_some",
            "Option<u64>",
            "tag 1, then the value",
            Some(300u64),
        ),
        bare(
            "vec_u32",
            "Vec<u32>",
            "varint element count, then the elements",
            vec![1u32, 300],
        ),
        bare(
            "array_u8_4",
            "[u8; 4]",
            "fixed-size arrays have no length prefix",
            [1u8, 2, 3, 4],
        ),
        bare(
            "tuple_strings",
            "(String, String)",
            "tuples and structs: fields back to back, no names, no count",
            ("artist".to_string(), "Nina Simone".to_string()),
        ),
        bare(
            "file_kind_audio",
            "FileKind",
            "unit enum variant: just the varint index",
            FileKind::Audio,
        ),
        bare("file_kind_other", "FileKind", "FileKind index 6", FileKind::Other),
        bare(
            "socket_addr_v4",
            "SocketAddr",
            "variant 0 (V4), 4 address bytes, port as varint",
            v4(),
        ),
        bare(
            "socket_addr_v6",
            "SocketAddr",
            "variant 1 (V6), 16 address bytes, port as varint; no flow info or scope id",
            v6(),
        ),
        bare(
            "content_hash",
            "ContentHash",
            "32 raw bytes, no length prefix",
            hash_abc(),
        ),
        bare(
            "peer_id",
            "PeerId",
            "32 raw bytes: the Ed25519 public key",
            peer_a(),
        ),
        bare("peer_addr", "PeerAddr", "PeerId then SocketAddr", addr_a()),
        bare("query_id", "QueryId", "16 raw bytes", query_id()),
    ]
}

fn request_vectors() -> Vec<Vector> {
    let r = |name: &str, description: &str, value: Request| message(name, "Request", description, value);
    vec![
        r(
            "block_layer",
            "variant 0: ask for a file's size and block layer",
            Request::BlockLayer { hash: hash_abc() },
        ),
        r(
            "blocks",
            "variant 1: ask for block 16 only",
            Request::Blocks {
                hash: hash_abc(),
                first: 16,
                count: 1,
            },
        ),
        r(
            "blocks_many",
            "variant 1 with multi-byte varints: blocks 300..1324",
            Request::Blocks {
                hash: hash_abc(),
                first: 300,
                count: 1024,
            },
        ),
        r(
            "have",
            "variant 2: which blocks do you hold?",
            Request::Have { hash: hash_abc() },
        ),
        r(
            "sources",
            "variant 3: who else holds or fetches this file?",
            Request::Sources { hash: hash_abc() },
        ),
        r(
            "join",
            "variant 4: a leaf joins a supernode; the stream becomes its session",
            Request::Join(Hello {
                listen: vec![v4(), v6()],
                accepts_inbound: true,
                agent: "canopy/0.1.0".into(),
            }),
        ),
        r(
            "join_firewalled",
            "variant 4: a leaf that accepts no inbound connections",
            Request::Join(Hello {
                listen: vec![],
                accepts_inbound: false,
                agent: String::new(),
            }),
        ),
        r(
            "search_words",
            "variant 5: the CLI's default search (50 hits, supernode's default TTL)",
            Request::Search(Query::words("nina simone")),
        ),
        r(
            "search_hash",
            "variant 5: sources for one known hash",
            Request::Search(Query::for_hash(hash_abc())),
        ),
        r(
            "search_filters",
            "variant 5 with every optional field present",
            Request::Search(Query {
                text: "live".into(),
                hash: Some(hash_abc()),
                kind: Some(FileKind::Audio),
                min_size: Some(1_000_000),
                max_size: Some(u64::MAX),
                max_hits: 200,
                ttl: Some(7),
            }),
        ),
        r(
            "push",
            "variant 6: ask a supernode to have its firewalled leaf call us",
            Request::Push { leaf: peer_b() },
        ),
        r(
            "probe_down",
            "variant 7: send me 4 MiB (download probe)",
            Request::ProbeDown { bytes: 4 << 20 },
        ),
        r(
            "probe_up",
            "variant 8: 4 MiB follow this frame (upload probe)",
            Request::ProbeUp { bytes: 4 << 20 },
        ),
        r(
            "dial_back",
            "variant 9: try to reach me from a fresh port",
            Request::DialBack,
        ),
        r("status", "variant 10: what room do you have?", Request::Status),
        r(
            "link",
            "variant 11: a supernode asks to link; the stream becomes the link",
            Request::Link(LinkHello { listen: v4() }),
        ),
        r(
            "link_with",
            "variant 12: a supernode asks to link and says it speaks keyword tables and has 3 neighbours",
            Request::LinkWith(LinkOffer {
                listen: v4(),
                features: FEATURE_KEYWORD_TABLES,
                degree: 3,
            }),
        ),
        r(
            "punch",
            "variant 13: arrange a hole punch with your firewalled leaf (an older node resets the stream: ask Push)",
            Request::Punch { leaf: peer_a() },
        ),
        r(
            "observe",
            "variant 14: what address do you see me at? (an older node resets the stream)",
            Request::Observe,
        ),
        r(
            "relay",
            "variant 15: relay between me and your firewalled leaf (an older node resets the stream)",
            Request::Relay { leaf: peer_a() },
        ),
        r(
            "traits",
            "variant 16: a joined leaf says its router gives every peer a new port, and it speaks birthday punching (an older supernode resets the stream)",
            Request::Traits(Traits {
                symmetric: true,
                features: FEATURE_BIRTHDAY,
            }),
        ),
        r(
            "traverse",
            "variant 17: plan a way to your firewalled leaf for me, behind a one-port router, not accepting connections (an older node resets the stream: ask Punch)",
            Request::Traverse {
                leaf: peer_a(),
                downloader: Downloader {
                    symmetric: false,
                    accepts: false,
                },
            },
        ),
        r(
            "reach",
            "variant 18: a joined leaf says peers can connect to it now (it was dialed back at a new address; an older supernode resets the stream: join again)",
            Request::Reach { accepts_inbound: true },
        ),
        r(
            "prove",
            "variant 20: send chunk 100 of this file with its proof (a supernode checking what a leaf publishes)",
            Request::Prove {
                hash: hash_abc(),
                chunk: 100,
            },
        ),
        r(
            "report",
            "variant 21: a downloader reports that a source listed for this file did not serve it",
            Request::Report {
                hash: hash_abc(),
                source: peer_a(),
            },
        ),
        r(
            "addresses",
            "variant 19: a joined leaf offers its IPv6 address [2001:db8::1]:4001 for a dial-back, with 4,096 bytes of padding (zeros here; any bytes)",
            Request::Addresses {
                addrs: vec![v6()],
                padding: vec![0; canopy_common::proto::nat::PADDING_PER_ADDRESS],
            },
        ),
        r(
            "votes",
            "variant 22: a joined leaf hands in its own vote (fake_abc in votes.json) to its supernode",
            Request::Votes {
                votes: vec![vote_a(hash_abc(), Verdict::Fake, VOTE_TIME)],
            },
        ),
        r(
            "notes_for",
            "variant 23: what do you know of these files (votes, tags)? Asked about the empty file and `abc`",
            Request::NotesFor {
                hashes: vec![hash_empty(), hash_abc()],
            },
        ),
        r(
            "swap_votes",
            "variant 24: a downloader offers a source of its file its own newest votes (here authentic_abc) for the source's",
            Request::SwapVotes {
                votes: vec![vote_a(hash_abc(), Verdict::Authentic, VOTE_TIME)],
            },
        ),
        r(
            "ask_opinions",
            "variant 25: what do you think of `abc` and the empty file? (asked of a voter the asker agrees with)",
            Request::AskOpinions {
                hashes: vec![hash_abc(), hash_empty()],
            },
        ),
    ]
}

fn response_vectors() -> Vec<Vector> {
    let r = |name: &str, description: &str, value: Response| message(name, "Response", description, value);
    let mut have = Bitfield::new(17);
    for index in [0, 1, 2, 16] {
        have.set(index);
    }
    vec![
        r(
            "block_layer",
            "variant 0: the file is 1,048,577 bytes (17 blocks); 544 raw layer bytes follow the frame",
            Response::BlockLayer { size: 1_048_577 },
        ),
        r(
            "blocks",
            "variant 1: block 16 follows the frame, raw",
            Response::Blocks { first: 16, count: 1 },
        ),
        r(
            "not_found",
            "variant 2: this peer does not share that content",
            Response::NotFound { hash: hash_abc() },
        ),
        r(
            "bad_request",
            "variant 3: the reason is at most 256 bytes",
            Response::bad_request("blocks 17..18 not in 0..17 (at most 1024 per request)"),
        ),
        r(
            "have",
            "variant 4: blocks 0, 1, 2 and 16 of a 17-block file (3 bytes, block 0 in the low bit)",
            Response::Have {
                blocks: have.to_wire(),
            },
        ),
        r(
            "have_all",
            "variant 5: the peer holds every block",
            Response::HaveAll,
        ),
        r(
            "sources",
            "variant 6: other peers for the file (at most 32)",
            Response::Sources {
                peers: vec![addr_a(), addr_b()],
            },
        ),
        r(
            "busy",
            "variant 7: all upload slots taken; retry in 1 s",
            Response::Busy { retry_after_ms: 1000 },
        ),
        r(
            "hits",
            "variant 8: one hit, with one direct and one relayed source",
            Response::Hits {
                hits: vec![sample_hit()],
            },
        ),
        r(
            "end_of_hits",
            "variant 9: the search is complete",
            Response::EndOfHits,
        ),
        r(
            "not_supernode",
            "variant 10: as sent today, always with an empty list",
            Response::NotSupernode { others: vec![] },
        ),
        r(
            "push_sent",
            "variant 11: the leaf was asked to call you",
            Response::PushSent,
        ),
        r(
            "unknown_leaf",
            "variant 12: that leaf is not joined here",
            Response::UnknownLeaf,
        ),
        r(
            "probe_data",
            "variant 13: probe bytes follow",
            Response::ProbeData,
        ),
        r(
            "probe_received",
            "variant 14: 4 MiB arrived in 1.234567 s",
            Response::ProbeReceived {
                bytes: 4 << 20,
                micros: 1_234_567,
            },
        ),
        r(
            "dial_back",
            "variant 15: a stranger could connect to you",
            Response::DialBack { reachable: true },
        ),
        r(
            "status",
            "variant 16: a supernode with 12 of 200 leaf slots used and 4 neighbours",
            Response::Status {
                supernode: true,
                leaves: 12,
                max_leaves: 200,
                neighbours: 4,
            },
        ),
        r(
            "punch_ready",
            "variant 17: send punching packets to the leaf at 192.0.2.1:4000; you are seen at [2001:db8::1]:4001",
            Response::PunchReady { leaf: v4(), you: v6() },
        ),
        r(
            "observed",
            "variant 18: your packets come from 192.0.2.1:4000",
            Response::Observed { addr: v4() },
        ),
        r(
            "relay_ready",
            "variant 19: send bind packets (CRB0 + this token) to port 40000 of the supernode's address",
            Response::RelayReady {
                port: 40_000,
                token: *b"0123456789abcdef",
            },
        ),
        r(
            "traits_noted",
            "variant 20: noted; this supernode speaks birthday punching",
            Response::TraitsNoted {
                features: FEATURE_BIRTHDAY,
            },
        ),
        r(
            "traverse_plan",
            "variant 21: the leaf is at 192.0.2.1:4000, you at [2001:db8::1]:4001; spray probes at random ports of the leaf's IP (plan 1)",
            Response::TraversePlan {
                leaf: v4(),
                you: v6(),
                plan: Plan::Spray,
            },
        ),
        r(
            "reach_noted",
            "variant 22: searchers are told so from now on",
            Response::ReachNoted,
        ),
        r(
            "proof",
            "variant 24: a 5-byte file's only chunk (its proof is empty: the bytes hash to the root)",
            Response::Proof {
                size: 5,
                data: vec![0, 1, 2, 3, 4],
                proof: vec![],
            },
        ),
        r(
            "report_noted",
            "variant 25: the source is a leaf here publishing that file; its check is due now",
            Response::ReportNoted { checking: true },
        ),
        r(
            "addresses_tested",
            "variant 23: a stranger's fresh port reached [2001:db8::1]:4001; it is listed from now on",
            Response::AddressesTested { reachable: vec![v6()] },
        ),
        r(
            "votes_noted",
            "variant 26: the supernode kept 1 of the votes handed in",
            Response::VotesNoted { accepted: 1 },
        ),
        r(
            "notes",
            "variant 27: one vote on `abc` (fake_abc in votes.json) and its tags, artist then title",
            Response::Notes {
                votes: vec![vote_a(hash_abc(), Verdict::Fake, VOTE_TIME)],
                tags: vec![FileTags {
                    hash: hash_abc(),
                    tags: vec![
                        ("artist".into(), "Nina Simone".into()),
                        ("title".into(), "Feeling Good".into()),
                    ],
                }],
            },
        ),
        r(
            "swapped_votes",
            "variant 28: the source's own votes in a swap (none here: it has voted on nothing)",
            Response::SwappedVotes { votes: vec![] },
        ),
        r(
            "opinions",
            "variant 29: the answerer's own vote on `abc` (fake_abc in votes.json) and its opinion of the empty file, -37 % (leaning fake; one signed byte)",
            Response::Opinions {
                votes: vec![vote_a(hash_abc(), Verdict::Fake, VOTE_TIME)],
                opinions: vec![Opinion {
                    content: hash_empty(),
                    percent: -37,
                }],
            },
        ),
    ]
}

fn session_vectors() -> Vec<Vector> {
    let n = |name: &str, description: &str, value: SessionNotice| {
        message(name, "SessionNotice", description, value)
    };
    let u =
        |name: &str, description: &str, value: LeafUpdate| message(name, "LeafUpdate", description, value);
    vec![
        n(
            "welcome",
            "SessionNotice 0: joined; publish at most 10,000 files",
            SessionNotice::Welcome { max_files: 10_000 },
        ),
        n(
            "full",
            "SessionNotice 1: no room; try these (at most 8)",
            SessionNotice::Full {
                others: vec![addr_b()],
            },
        ),
        n(
            "refused",
            "SessionNotice 2: a publish broke a limit; the session ends",
            SessionNotice::Refused {
                reason: "file name of 300 bytes is over the 255-byte limit".into(),
            },
        ),
        n(
            "supernodes",
            "SessionNotice 3: fallback supernodes",
            SessionNotice::Supernodes {
                others: vec![addr_a(), addr_b()],
            },
        ),
        n(
            "push",
            "SessionNotice 4: connect out to this requester, then serve it",
            SessionNotice::Push { requester: addr_a() },
        ),
        n(
            "leaving",
            "SessionNotice 5: this supernode steps down; join one of these instead",
            SessionNotice::Leaving {
                others: vec![addr_b()],
            },
        ),
        n(
            "birthday",
            "SessionNotice 6: open ports towards the requester and dial it from the one its probe reaches (spray false)",
            SessionNotice::Birthday {
                requester: addr_b(),
                spray: false,
            },
        ),
        u(
            "add",
            "LeafUpdate 0: one file with one metadata pair",
            LeafUpdate::Add {
                files: vec![sample_entry()],
            },
        ),
        u(
            "add_empty_file",
            "LeafUpdate 0: the empty file, no metadata",
            LeafUpdate::Add {
                files: vec![FileEntry {
                    hash: hash_empty(),
                    size: 0,
                    name: "empty".into(),
                    kind: FileKind::Other,
                    meta: vec![],
                }],
            },
        ),
        u(
            "remove",
            "LeafUpdate 1: files no longer shared",
            LeafUpdate::Remove {
                hashes: vec![hash_abc(), hash_empty()],
            },
        ),
    ]
}

fn overlay_vectors() -> Vec<Vector> {
    let l =
        |name: &str, description: &str, value: LinkNotice| message(name, "LinkNotice", description, value);
    let o = |name: &str, description: &str, value: OverlayMessage| {
        message(name, "OverlayMessage", description, value)
    };
    vec![
        l("accepted", "LinkNotice 0: the link is up", LinkNotice::Accepted),
        l(
            "full",
            "LinkNotice 1: no room for more neighbours; try these",
            LinkNotice::Full {
                others: vec![addr_b()],
            },
        ),
        o(
            "query",
            "OverlayMessage 0: a flooded query, 3 hops left, 1 travelled",
            OverlayMessage::Query(FloodQuery {
                id: query_id(),
                ttl: 3,
                hops: 1,
                query: Query::words("nina"),
            }),
        ),
        o(
            "hits",
            "OverlayMessage 1: hits travelling back towards the query's origin",
            OverlayMessage::Hits {
                id: query_id(),
                hits: vec![sample_hit()],
            },
        ),
        o(
            "supernodes",
            "OverlayMessage 2: part of the sender's host cache",
            OverlayMessage::Supernodes {
                entries: vec![
                    HostEntry {
                        addr: addr_a(),
                        age_secs: 0,
                    },
                    HostEntry {
                        addr: addr_b(),
                        age_secs: 75,
                    },
                ],
            },
        ),
        l(
            "accepted_with",
            "LinkNotice 2: the link is up; the answerer speaks keyword tables and has 5 neighbours",
            LinkNotice::AcceptedWith {
                features: FEATURE_KEYWORD_TABLES,
                degree: 5,
            },
        ),
        o(
            "keyword_table_reset",
            "OverlayMessage 3: level 1 of the sender's table for this link, from scratch: a 2^10-bit table with bits 3 and 64 set",
            OverlayMessage::KeywordTable {
                level: 1,
                update: TableUpdate {
                    log2_bits: 10,
                    reset: true,
                    runs: vec![WordRun {
                        start: 0,
                        xor_le: [8u64, 1].iter().flat_map(|word| word.to_le_bytes()).collect(),
                    }],
                },
                more: false,
            },
        ),
        o(
            "keyword_table_patch",
            "OverlayMessage 3: level 0 changes: bit 0 of 64-bit word 300 of a 2^20-bit table flips",
            OverlayMessage::KeywordTable {
                level: 0,
                update: TableUpdate {
                    log2_bits: 20,
                    reset: false,
                    runs: vec![WordRun {
                        start: 300,
                        xor_le: 1u64.to_le_bytes().to_vec(),
                    }],
                },
                more: false,
            },
        ),
        o(
            "degree",
            "OverlayMessage 4: the sender now has 6 supernode neighbours",
            OverlayMessage::Degree { neighbours: 6 },
        ),
        o(
            "hit_notes",
            "OverlayMessage 5: the votes and tags the sender knows on its hits' files for query 00..0f (one vote, fake_abc in votes.json; no tags)",
            OverlayMessage::HitNotes {
                id: QueryId(std::array::from_fn(|i| i as u8)),
                votes: vec![vote_a(hash_abc(), Verdict::Fake, VOTE_TIME)],
                tags: vec![],
            },
        ),
    ]
}

// ---------------------------------------------------------------------------
// Frames a receiver must refuse

fn error_kind(error: &FrameError) -> &'static str {
    match error {
        FrameError::TooLarge { .. } => "TooLarge",
        FrameError::Malformed(_) => "Malformed",
        FrameError::TrailingBytes(_) => "TrailingBytes",
        FrameError::NonCanonical => "NonCanonical",
    }
}

fn rejected<T>(name: &str, type_name: &str, description: &str, frame_hex: &str, error: &'static str) -> Vector
where
    T: Serialize + DeserializeOwned + Debug + 'static,
{
    let decode = |bytes: &[u8]| match frame::decode::<T>(bytes, MAX_CONTROL_FRAME) {
        Ok(Some((value, _))) => Err(format!("accepted as {value:?}")),
        Ok(None) => Err("treated as incomplete".to_string()),
        Err(e) => Ok(error_kind(&e)),
    };
    let bytes = unhex(frame_hex).expect("vector hex");
    assert_eq!(decode(&bytes), Ok(error), "{name}");
    let fields = vec![
        ("type", js(type_name)),
        ("description", js(description)),
        ("frame", js(frame_hex)),
        ("error", js(error)),
    ];
    let check: Check = Box::new(move |entry| {
        let bytes = unhex(field_str(entry, "frame")?)?;
        let got = decode(&bytes)?;
        let want = field_str(entry, "error")?;
        if got != want {
            return Err(format!("refused as {got}, file says {want}"));
        }
        Ok(())
    });
    Vector {
        name: name.into(),
        fields,
        check,
    }
}

fn rejected_vectors() -> Vec<Vector> {
    vec![
        rejected::<Request>(
            "too_large",
            "Request",
            "length prefix 65,537 is over the 65,536-byte cap: refused before any body byte is read",
            "00010001",
            "TooLarge",
        ),
        rejected::<Request>(
            "empty_body",
            "Request",
            "a zero-length body holds no message",
            "00000000",
            "Malformed",
        ),
        rejected::<Response>(
            "over_long_varint",
            "Response",
            "Blocks { first: 0, count: 122 } with count written fa 00 instead of 7a",
            "000000040100fa00",
            "NonCanonical",
        ),
        rejected::<Request>(
            "over_long_variant",
            "Request",
            "Status with its variant index 10 written 8a 00 instead of 0a",
            "000000028a00",
            "NonCanonical",
        ),
        rejected::<Request>(
            "trailing_byte",
            "Request",
            "Status followed by one byte that belongs to no message",
            "000000020a00",
            "TrailingBytes",
        ),
        rejected::<Request>(
            "unknown_variant",
            "Request",
            "variant index 127 is not a Request (yet; 0 to 17 are)",
            "000000017f",
            "Malformed",
        ),
        rejected::<Response>(
            "bad_bool",
            "Response",
            "DialBack { reachable } with the bool byte 02",
            "000000020f02",
            "Malformed",
        ),
        rejected::<Response>(
            "bad_utf8",
            "Response",
            "BadRequest whose 1-byte reason is ff, not UTF-8",
            "000000030301ff",
            "Malformed",
        ),
        rejected::<Request>(
            "bad_option_tag",
            "Request",
            "Search whose Option tag for `hash` is 02",
            "0000000405016102",
            "Malformed",
        ),
        rejected::<Response>(
            "varint_overflow",
            "Response",
            "Busy { retry_after_ms } with a varint above u32::MAX (ff ff ff ff 1f)",
            "0000000607ffffffff1f",
            "Malformed",
        ),
        rejected::<Request>(
            "truncated_body",
            "Request",
            "Have whose body ends one byte into its 32-byte hash",
            "000000020211",
            "Malformed",
        ),
    ]
}

// ---------------------------------------------------------------------------
// Text forms: ids, addresses, links

fn text_vector(name: &str, description: &str, fields: Vec<(&'static str, String)>, check: Check) -> Vector {
    let mut all = vec![("description", js(description))];
    all.extend(fields);
    Vector {
        name: name.into(),
        fields: all,
        check,
    }
}

fn peer_id_vector(name: &str, description: &str, id: PeerId) -> Vector {
    let text = id.to_string();
    text_vector(
        name,
        description,
        vec![("bytes", js(&hex(id.as_bytes()))), ("text", js(&text))],
        Box::new(move |entry| {
            let bytes = unhex(field_str(entry, "bytes")?)?;
            let text = field_str(entry, "text")?;
            let parsed: PeerId = text.parse().map_err(|e| format!("{e}"))?;
            let upper: PeerId = text.to_uppercase().parse().map_err(|e| format!("{e}"))?;
            if parsed.as_bytes()[..] != bytes[..] || upper != parsed || parsed != id {
                return Err("text and bytes disagree".into());
            }
            if parsed.to_string() != text {
                return Err("not the canonical text".into());
            }
            Ok(())
        }),
    )
}

fn peer_addr_vector(name: &str, description: &str, addr: PeerAddr) -> Vector {
    text_vector(
        name,
        description,
        vec![("text", js(&addr.to_string()))],
        Box::new(move |entry| {
            let text = field_str(entry, "text")?;
            let parsed: PeerAddr = text.parse().map_err(|e| format!("{e}"))?;
            if parsed != addr || parsed.to_string() != text {
                return Err(format!("parses to {parsed:?}"));
            }
            Ok(())
        }),
    )
}

fn link_vector(name: &str, description: &str, link: Link) -> Vector {
    let sources: Vec<String> = link.sources.iter().map(|s| s.to_string()).collect();
    text_vector(
        name,
        description,
        vec![
            ("text", js(&link.to_string())),
            ("hash", js(&link.hash.to_hex())),
            ("size", link.size.map_or("null".into(), |size| size.to_string())),
            ("file_name", link.name.as_deref().map_or("null".into(), js)),
            ("sources", serde_json::to_string(&sources).expect("strings")),
        ],
        Box::new(move |entry| {
            let text = field_str(entry, "text")?;
            let parsed: Link = text.parse().map_err(|e| format!("{e}"))?;
            if parsed != link || parsed.to_string() != text {
                return Err(format!("parses to {parsed:?}"));
            }
            if parsed.hash.to_hex() != field_str(entry, "hash")? {
                return Err("hash field disagrees".into());
            }
            Ok(())
        }),
    )
}

fn id_vectors() -> Vec<Vector> {
    let hash = hash_abc();
    vec![
        peer_id_vector(
            "peer_id_a",
            "RFC 8032 test 1 public key; base32 (RFC 4648), lower case, no padding",
            peer_a(),
        ),
        peer_id_vector("peer_id_b", "RFC 8032 test 2 public key", peer_b()),
        peer_id_vector(
            "peer_id_ff",
            "all ones: the 52nd character carries 1 bit and 4 zero padding bits",
            PeerId([0xff; 32]),
        ),
        text_vector(
            "content_hash_abc",
            "BLAKE3 of the 3 bytes \"abc\": 64 lower-case hex characters, as b3sum prints",
            vec![("text", js(&hash.to_hex()))],
            Box::new(move |entry| {
                let parsed: ContentHash = field_str(entry, "text")?.parse().map_err(|e| format!("{e}"))?;
                if parsed != ContentHash::of(b"abc") || parsed != hash {
                    return Err("not blake3(\"abc\")".into());
                }
                Ok(())
            }),
        ),
        peer_addr_vector("peer_addr_v4", "PEERID@IPV4:PORT", addr_a()),
        peer_addr_vector("peer_addr_v6", "PEERID@[IPV6]:PORT", addr_b()),
        link_vector(
            "link_minimal",
            "only the hash is required",
            Link::new(hash_empty()),
        ),
        link_vector(
            "link_full",
            "size, a percent-encoded UTF-8 name and two sources",
            Link {
                hash: hash_abc(),
                size: Some(3),
                name: Some("Nina Simone – Live (1968).ogg".into()),
                sources: vec![addr_a(), addr_b()],
            },
        ),
    ]
}

// ---------------------------------------------------------------------------
// Private networks: ALPN ids, membership proofs, invites, allow-lists

/// RFC 4648 base32, lower case, no padding, written out again here so the
/// check does not lean on the code under test.
fn spec_base32(bytes: &[u8]) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    bits.chunks(5)
        .map(|chunk| {
            let mut value = 0usize;
            for i in 0..5 {
                value = (value << 1) | usize::from(chunk.get(i).copied().unwrap_or(0));
            }
            alphabet[value] as char
        })
        .collect()
}

fn key32(text: &str) -> Result<[u8; 32], String> {
    unhex(text)?.try_into().map_err(|_| "not 32 bytes".to_string())
}

/// The sample network key: bytes 00 01 … 1f.
fn sample_network_key() -> NetworkKey {
    NetworkKey(std::array::from_fn(|i| i as u8))
}

fn alpn_vector(name: &str, description: &str, network: &str, key: NetworkKey) -> Vector {
    let parsed: NetworkName = network.parse().expect("a valid sample name");
    let id = alpn(&parsed, &key);
    text_vector(
        name,
        description,
        vec![
            ("network", js(network)),
            ("key", js(&key.to_hex())),
            ("alpn", js(std::str::from_utf8(&id).expect("ASCII"))),
            ("hex", js(&hex(&id))),
        ],
        Box::new(move |entry| {
            let key = key32(field_str(entry, "key")?)?;
            let network = field_str(entry, "network")?;
            let mut message = b"alpn".to_vec();
            message.extend_from_slice(network.as_bytes());
            let tag = blake3::keyed_hash(&key, &message);
            let want = format!("canopy/0/g/{}", spec_base32(&tag.as_bytes()[..10]));
            let stored = field_str(entry, "alpn")?;
            let code = alpn(&network.parse().map_err(|e| format!("{e}"))?, &NetworkKey(key));
            if stored != want || code != want.as_bytes() || hex(want.as_bytes()) != field_str(entry, "hex")? {
                return Err(format!("ALPN id should be {want}"));
            }
            Ok(())
        }),
    )
}

fn network_vectors() -> Vec<Vector> {
    let family: NetworkName = "family".parse().expect("valid");
    let exporter: [u8; EXPORTER_LEN] = std::array::from_fn(|i| 0x20 + i as u8);
    let key = sample_network_key();
    let client = client_proof(&key, &exporter);
    let server = server_proof(&key, &exporter);
    let invite = Invite {
        name: family.clone(),
        key: key.clone(),
        members: vec![addr_a(), addr_b()],
    };
    let allow_text = format!(
        "# family members\n{}  # alice\n{}, {}\n",
        peer_a(),
        peer_b(),
        peer_a()
    );
    let open_key = NetworkKey::open(&family);
    vec![
        alpn_vector(
            "alpn_family",
            "the ALPN id of network \"family\" with key 00 01 … 1f: canopy/0/g/ + base32 of the first 10 \
             bytes of BLAKE3-keyed(key, \"alpn\" || name)",
            "family",
            key.clone(),
        ),
        alpn_vector(
            "alpn_family_other_key",
            "the same name with key ff … ff: another id, so the handshake fails",
            "family",
            NetworkKey([0xff; 32]),
        ),
        text_vector(
            "open_key_family",
            "the key of a network without a secret (membership by allow-list only): \
             BLAKE3 derive_key(\"canopy/0 open network key\", name)",
            vec![
                ("network", js("family")),
                ("key", js(&open_key.to_hex())),
                (
                    "alpn",
                    js(std::str::from_utf8(&alpn(&family, &open_key)).expect("ASCII")),
                ),
            ],
            Box::new(move |entry| {
                let key = key32(field_str(entry, "key")?)?;
                let want = blake3::derive_key("canopy/0 open network key", b"family");
                let network: NetworkName = "family".parse().map_err(|e| format!("{e}"))?;
                if key != want || NetworkKey::open(&network).0 != want {
                    return Err("not the derived key".into());
                }
                if field_str(entry, "alpn")?.as_bytes() != alpn(&network, &NetworkKey(key)) {
                    return Err("ALPN id disagrees".into());
                }
                Ok(())
            }),
        ),
        text_vector(
            "proof_exchange",
            "membership proofs for key 00 01 … 1f over the TLS exporter value 20 21 … 3f (label \
             \"EXPORTER-canopy/0 network proof\", empty context, 32 bytes). `hex` is what the dialer \
             writes on its first stream: BLAKE3-keyed(key, \"client proof\" || exporter); the acceptor \
             answers `server` = BLAKE3-keyed(key, \"server proof\" || exporter)",
            vec![
                ("key", js(&key.to_hex())),
                (
                    "exporter_label",
                    js(std::str::from_utf8(EXPORTER_LABEL).expect("ASCII")),
                ),
                ("exporter", js(&hex(&exporter))),
                ("hex", js(&hex(&client))),
                ("server", js(&hex(&server))),
            ],
            Box::new(move |entry| {
                let key = key32(field_str(entry, "key")?)?;
                let exporter = key32(field_str(entry, "exporter")?)?;
                let mac = |label: &[u8]| {
                    let mut message = label.to_vec();
                    message.extend_from_slice(&exporter);
                    hex(blake3::keyed_hash(&key, &message).as_bytes())
                };
                if field_str(entry, "hex")? != mac(b"client proof")
                    || field_str(entry, "server")? != mac(b"server proof")
                {
                    return Err("proofs disagree with the spec".into());
                }
                let ours = client_proof(&NetworkKey(key), &exporter);
                if hex(&ours) != field_str(entry, "hex")? {
                    return Err("proofs disagree with the code".into());
                }
                if field_str(entry, "exporter_label")?.as_bytes() != EXPORTER_LABEL {
                    return Err("exporter label".into());
                }
                Ok(())
            }),
        ),
        text_vector(
            "invite_family",
            "an invite: name, key (64 hex) and the members to join through",
            vec![
                ("text", js(&invite.to_string())),
                ("network", js("family")),
                ("key", js(&key.to_hex())),
                (
                    "members",
                    serde_json::to_string(&[addr_a().to_string(), addr_b().to_string()]).expect("strings"),
                ),
            ],
            Box::new(move |entry| {
                let parsed: Invite = field_str(entry, "text")?.parse().map_err(|e| format!("{e}"))?;
                if parsed != invite || parsed.to_string() != field_str(entry, "text")? {
                    return Err(format!("parses to {parsed:?}"));
                }
                if parsed.key.to_hex() != field_str(entry, "key")? {
                    return Err("key disagrees".into());
                }
                Ok(())
            }),
        ),
        text_vector(
            "allow_list",
            "an allow-list file: peer ids separated by newlines, commas or spaces; # starts a comment",
            vec![
                ("text", js(&allow_text)),
                (
                    "ids",
                    serde_json::to_string(&[peer_b().to_string(), peer_a().to_string()]).expect("strings"),
                ),
            ],
            Box::new(move |entry| {
                let parsed = parse_allow_list(field_str(entry, "text")?).map_err(|e| format!("{e}"))?;
                let ids: Vec<String> = parsed.iter().map(|id| id.to_string()).collect();
                let stored: Vec<String> =
                    serde_json::from_value(field(entry, "ids")?.clone()).map_err(|e| format!("{e}"))?;
                let (mut a, mut b) = (ids, stored);
                a.sort();
                b.sort();
                if a != b {
                    return Err(format!("parses to {a:?}"));
                }
                Ok(())
            }),
        ),
    ]
}

// ---------------------------------------------------------------------------
// Content: layout, hashes, block layer, block proofs

/// The test file of `len` bytes: byte `i` is `i mod 251` (as in BLAKE3's
/// own test vectors).
fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn layout_vectors() -> Vec<Vector> {
    const GIB: u64 = 1 << 30;
    let sizes = [
        ("empty", 0),
        ("one_byte", 1),
        ("one_block", MIN_BLOCK_SIZE),
        ("two_blocks", MIN_BLOCK_SIZE + 1),
        ("max_64k_blocks", GIB),
        ("first_128k", GIB + 1),
        ("max_128k_blocks", 2 * GIB),
        ("first_256k", 2 * GIB + 1),
        ("one_tib", 1 << 40),
        ("two_to_the_62", 1 << 62),
    ];
    sizes
        .into_iter()
        .map(|(name, size)| {
            let layout = BlockLayout::for_size(size);
            Vector {
                name: name.into(),
                fields: vec![
                    ("size", size.to_string()),
                    ("block_size", layout.block_size().to_string()),
                    ("block_count", layout.block_count().to_string()),
                    (
                        "last_block_len",
                        layout.block_len(layout.block_count() - 1).to_string(),
                    ),
                    ("layer_len", layout.layer_len().to_string()),
                ],
                check: Box::new(|entry| {
                    let layout = BlockLayout::for_size(field_u64(entry, "size")?);
                    let got = [
                        layout.block_size(),
                        u64::from(layout.block_count()),
                        layout.block_len(layout.block_count() - 1),
                        layout.layer_len() as u64,
                    ];
                    let keys = ["block_size", "block_count", "last_block_len", "layer_len"];
                    for (key, got) in keys.into_iter().zip(got) {
                        if field_u64(entry, key)? != got {
                            return Err(format!("{key} is {got}"));
                        }
                    }
                    Ok(())
                }),
            }
        })
        .collect()
}

/// Sizes of the content vectors.
const CONTENT_SIZES: [u64; 9] = [0, 1, 1024, 65_535, 65_536, 65_537, 102_400, 196_613, 1_048_577];

/// BLAKE3's left-balanced split, restated from the specification: the left
/// subtree holds the largest power of two of blocks that leaves at least one.
fn left_blocks(count: usize) -> usize {
    let mut left = 1;
    while left * 2 < count {
        left *= 2;
    }
    left
}

fn tree_shape(first: usize, count: usize) -> String {
    if count == 1 {
        return first.to_string();
    }
    let left = left_blocks(count);
    format!(
        "({} {})",
        tree_shape(first, left),
        tree_shape(first + left, count - left)
    )
}

/// A block's chaining value, computed from the BLAKE3 specification (the
/// subtree of chunks at that offset, no ROOT flag), not from Canopy's code.
fn spec_block_cv(offset: u64, data: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(offset)
        .update(data)
        .finalize_non_root()
}

fn spec_root(cvs: &[ChainingValue]) -> ContentHash {
    fn subtree(cvs: &[ChainingValue]) -> ChainingValue {
        if cvs.len() == 1 {
            return cvs[0];
        }
        let (left, right) = cvs.split_at(left_blocks(cvs.len()));
        merge_subtrees_non_root(&subtree(left), &subtree(right), Mode::Hash)
    }
    let (left, right) = cvs.split_at(left_blocks(cvs.len()));
    merge_subtrees_root(&subtree(left), &subtree(right), Mode::Hash).into()
}

fn content_vectors() -> Vec<Vector> {
    CONTENT_SIZES
        .into_iter()
        .map(|size| {
            let data = pattern(size);
            let hashes = hash_bytes(&data);
            let layout = hashes.layout();
            Vector {
                name: format!("size_{size}"),
                fields: vec![
                    ("size", size.to_string()),
                    ("root", js(&hashes.root().to_hex())),
                    ("block_size", layout.block_size().to_string()),
                    ("block_count", layout.block_count().to_string()),
                    ("layer_len", layout.layer_len().to_string()),
                    ("tree", js(&tree_shape(0, layout.block_count() as usize))),
                    ("layer", js(&hex(&hashes.layer_bytes()))),
                ],
                check: Box::new(|entry| {
                    let size = field_u64(entry, "size")?;
                    let data = pattern(size);
                    let root: ContentHash = field_str(entry, "root")?.parse().map_err(|e| format!("{e}"))?;
                    let layer = unhex(field_str(entry, "layer")?)?;
                    if ContentHash::of(&data) != root {
                        return Err("root is not BLAKE3 of the file".into());
                    }
                    let verified = BlockHashes::verify(root, size, &layer).map_err(|e| format!("{e}"))?;
                    let layout = verified.layout();
                    if field_u64(entry, "block_count")? != u64::from(layout.block_count())
                        || field_u64(entry, "block_size")? != layout.block_size()
                        || field_u64(entry, "layer_len")? != layer.len() as u64
                    {
                        return Err("layout fields disagree".into());
                    }
                    // The same layer, derived from the BLAKE3 specification alone.
                    if !layout.is_single_block() {
                        let cvs: Vec<ChainingValue> = (0..layout.block_count())
                            .map(|index| {
                                let range = layout.block_range(index);
                                spec_block_cv(range.start, &data[range.start as usize..range.end as usize])
                            })
                            .collect();
                        if cvs.concat() != layer {
                            return Err("layer is not the blocks' chaining values".into());
                        }
                        if spec_root(&cvs) != root {
                            return Err("merging the layer does not give the root".into());
                        }
                    }
                    Ok(())
                }),
            }
        })
        .collect()
}

fn possession_vectors() -> Vec<Vector> {
    let picks: [(u64, u64); 6] = [
        (5, 0),
        (3_000, 2),
        (65_537, 64),
        (196_613, 0),
        (196_613, 100),
        (196_613, 192),
    ];
    picks
        .into_iter()
        .map(|(size, chunk)| {
            let data = pattern(size);
            let hashes = hash_bytes(&data);
            let layout = hashes.layout();
            let block = (chunk * 1024 / layout.block_size()) as u32;
            let bytes = layout.block_range(block);
            let proof = possession::prove(&hashes, chunk, &data[bytes.start as usize..bytes.end as usize])
                .expect("the vector's chunk is in range");
            let range = possession::chunk_range(size, chunk);
            Vector {
                name: format!("size_{size}_chunk_{chunk}"),
                fields: vec![
                    ("size", size.to_string()),
                    ("chunk", chunk.to_string()),
                    ("root", js(&hashes.root().to_hex())),
                    ("offset", range.start.to_string()),
                    ("len", (range.end - range.start).to_string()),
                    ("proof", js(&hex(&proof.concat()))),
                ],
                check: Box::new(|entry| {
                    let size = field_u64(entry, "size")?;
                    let chunk = field_u64(entry, "chunk")?;
                    let root: ContentHash = field_str(entry, "root")?.parse().map_err(|e| format!("{e}"))?;
                    let proof: Vec<ChainingValue> = unhex(field_str(entry, "proof")?)?
                        .chunks(32)
                        .map(|cv| cv.try_into().map_err(|_| "a proof is whole CVs".to_string()))
                        .collect::<Result<_, _>>()?;
                    let data = pattern(size);
                    let range = possession::chunk_range(size, chunk);
                    if field_u64(entry, "offset")? != range.start
                        || field_u64(entry, "len")? != range.end - range.start
                    {
                        return Err("offset or len disagree with the chunk".into());
                    }
                    let piece = &data[range.start as usize..range.end as usize];
                    possession::verify(root, size, chunk, piece, &proof).map_err(|e| format!("{e}"))?;
                    let mut tampered = piece.to_vec();
                    if let Some(byte) = tampered.first_mut() {
                        *byte ^= 1;
                        if possession::verify(root, size, chunk, &tampered, &proof).is_ok() {
                            return Err("a changed byte still verifies".into());
                        }
                    }
                    Ok(())
                }),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Signed votes (common::proto::credence, docs/TRUST.md)

/// When the vote vectors are cast and checked (2023-11-14T22:13:20Z).
const VOTE_TIME: u64 = 1_700_000_000;

/// A vote by peer_a (RFC 8032 test 1 key); Ed25519 is deterministic, so the
/// signature is exact.
fn vote_a(content: ContentHash, verdict: Verdict, issued: u64) -> SignedVote {
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&key32(SEED_A).unwrap()).expect("seed");
    SignedVote::sign(peer_a(), content, verdict, issued, |message| {
        pair.sign(message).as_ref().try_into().expect("64-byte signature")
    })
}

/// The signed message as TRUST.md spells it, built by hand.
fn spec_vote_message(content: &ContentHash, verdict: Verdict, issued: u64) -> Vec<u8> {
    let verdict_byte = match verdict {
        Verdict::Authentic => 0u8,
        Verdict::Fake => 1u8,
    };
    [
        &b"canopy-vote-v1\0"[..],
        &content.0,
        &[verdict_byte],
        &issued.to_be_bytes(),
    ]
    .concat()
}

fn vote_error_kind(error: &VoteError) -> &'static str {
    match error {
        VoteError::BadSignature => "BadSignature",
        VoteError::FromTheFuture { .. } => "FromTheFuture",
        VoteError::TooOld { .. } => "TooOld",
        VoteError::TooMany { .. } => "TooMany",
        VoteError::Malformed(_) => "Malformed",
        VoteError::TrailingBytes(_) => "TrailingBytes",
        VoteError::NotCanonical => "NotCanonical",
    }
}

/// One vote: its signed message, its postcard bytes, and what a receiver
/// checking it at `now` concludes (`ok` or the error's kind).
fn vote_vector(name: &str, description: &str, vote: SignedVote, now: u64) -> Vector {
    let result = match vote.verify(now) {
        Ok(()) => "ok",
        Err(error) => vote_error_kind(&error),
    };
    let bytes = postcard::to_allocvec(&vote).expect("serializes");
    let message = SignedVote::message(&vote.content, vote.verdict, vote.issued);
    text_vector(
        name,
        description,
        vec![
            ("value", readable(&vote)),
            ("message", js(&hex(&message))),
            ("hex", js(&hex(&bytes))),
            ("now", now.to_string()),
            ("result", js(result)),
        ],
        Box::new(|stored| {
            let bytes = unhex(field_str(stored, "hex")?)?;
            let vote: SignedVote =
                postcard::from_bytes(&bytes).map_err(|e| format!("does not decode: {e}"))?;
            if postcard::to_allocvec(&vote).map_err(|e| e.to_string())? != bytes {
                return Err("not the canonical encoding".into());
            }
            let message = unhex(field_str(stored, "message")?)?;
            if message != spec_vote_message(&vote.content, vote.verdict, vote.issued) {
                return Err("the message is not tag, hash, verdict byte and big-endian date".into());
            }
            if message != SignedVote::message(&vote.content, vote.verdict, vote.issued) {
                return Err("SignedVote::message disagrees with the stored message".into());
            }
            // The signature checked with ring directly, not through the code under test.
            let key =
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, vote.voter.as_bytes());
            let signature_ok = key.verify(&message, &vote.signature).is_ok();
            let now = field_u64(stored, "now")?;
            let expected = field_str(stored, "result")?;
            let got = match vote.verify(now) {
                Ok(()) => "ok",
                Err(error) => vote_error_kind(&error),
            };
            if got != expected {
                return Err(format!("a receiver at {now} concludes {got}, not {expected}"));
            }
            if expected == "ok" && !signature_ok {
                return Err("ring refuses the signature".into());
            }
            Ok(())
        }),
    )
}

/// A vote list as gossiped with a hit, and what [`decode_votes`] makes of it.
fn vote_list_vector(name: &str, description: &str, bytes: Vec<u8>) -> Vector {
    let result = match decode_votes(&bytes) {
        Ok(votes) => format!("{} votes", votes.len()),
        Err(error) => vote_error_kind(&error).to_string(),
    };
    text_vector(
        name,
        description,
        vec![("hex", js(&hex(&bytes))), ("result", js(&result))],
        Box::new(|stored| {
            let bytes = unhex(field_str(stored, "hex")?)?;
            let got = match decode_votes(&bytes) {
                Ok(votes) => {
                    if encode_votes(&votes) != bytes {
                        return Err("decoded list re-encodes differently".into());
                    }
                    format!("{} votes", votes.len())
                }
                Err(error) => vote_error_kind(&error).to_string(),
            };
            if got != field_str(stored, "result")? {
                return Err(format!("decode_votes gives {got}"));
            }
            Ok(())
        }),
    )
}

fn vote_vectors() -> Vec<Vector> {
    let authentic = vote_a(hash_abc(), Verdict::Authentic, VOTE_TIME);
    let fake = vote_a(hash_abc(), Verdict::Fake, VOTE_TIME);
    let mut moved = authentic.clone();
    moved.content = hash_empty();
    let mut flipped = authentic.clone();
    flipped.verdict = Verdict::Fake;
    let mut over_long = vec![0x82, 0x00];
    over_long.extend_from_slice(&encode_votes(&[authentic.clone(), fake.clone()])[1..]);
    let mut trailing = encode_votes(std::slice::from_ref(&authentic));
    trailing.push(0);
    vec![
        vote_vector(
            "authentic_abc",
            "peer_a (RFC 8032 test 1 key) votes that the file `abc` (hash_abc) is authentic, at VOTE_TIME.",
            authentic.clone(),
            VOTE_TIME,
        ),
        vote_vector(
            "fake_abc",
            "The same voter, content and time with the verdict fake: the message differs in one byte, the signature entirely.",
            fake.clone(),
            VOTE_TIME,
        ),
        vote_vector(
            "signature_moved_to_other_content",
            "authentic_abc's signature on a vote about the empty file: refused.",
            moved,
            VOTE_TIME,
        ),
        vote_vector(
            "signature_kept_verdict_flipped",
            "authentic_abc with its verdict changed to fake and its signature kept: refused.",
            flipped,
            VOTE_TIME,
        ),
        vote_vector(
            "from_the_future",
            "A correctly signed vote dated one second past the allowed clock skew (MAX_CLOCK_SKEW, 600 s) of the receiver's time: refused.",
            vote_a(hash_abc(), Verdict::Authentic, VOTE_TIME + MAX_CLOCK_SKEW + 1),
            VOTE_TIME,
        ),
        vote_vector(
            "too_old",
            "A correctly signed vote dated one second more than MAX_VOTE_AGE (365 days) before the receiver's time: refused.",
            vote_a(hash_abc(), Verdict::Authentic, VOTE_TIME - MAX_VOTE_AGE - 1),
            VOTE_TIME,
        ),
        vote_list_vector(
            "list_of_two",
            "authentic_abc and fake_abc as gossiped with a hit: a varint count, then each vote.",
            encode_votes(&[authentic.clone(), fake]),
        ),
        vote_list_vector("empty_list", "No votes: the count 0 alone.", encode_votes(&[])),
        vote_list_vector(
            "too_many",
            "A list claiming MAX_VOTES_PER_HIT + 1 (9) votes: refused from its count, before any vote is read.",
            vec![(MAX_VOTES_PER_HIT + 1) as u8],
        ),
        vote_list_vector(
            "over_long_count",
            "list_of_two with its count written in two bytes (0x82 0x00): not canonical, refused.",
            over_long,
        ),
        vote_list_vector(
            "trailing_byte",
            "A one-vote list followed by a stray byte: refused.",
            trailing,
        ),
    ]
}

fn block_vectors() -> Vec<Vector> {
    let picks: [(u64, u32); 8] = [
        (1, 0),
        (196_613, 0),
        (196_613, 1),
        (196_613, 2),
        (196_613, 3),
        (1_048_577, 0),
        (1_048_577, 15),
        (1_048_577, 16),
    ];
    picks
        .into_iter()
        .map(|(size, index)| {
            let data = pattern(size);
            let hashes = hash_bytes(&data);
            let layout = hashes.layout();
            let range = layout.block_range(index);
            let block = &data[range.start as usize..range.end as usize];
            let flip = block.len() / 2;
            let mut tampered = block.to_vec();
            tampered[flip] ^= 1;
            let (against, expected, tampered_value) = if layout.is_single_block() {
                (
                    "root",
                    hashes.root().to_hex(),
                    ContentHash::of(&tampered).to_hex(),
                )
            } else {
                let cv = &hashes.layer_bytes()[index as usize * 32..][..32];
                ("layer", hex(cv), hex(&spec_block_cv(range.start, &tampered)))
            };
            let mut fields = vec![
                ("file_size", size.to_string()),
                ("index", index.to_string()),
                ("offset", range.start.to_string()),
                ("len", block.len().to_string()),
                ("chunk_counter", (range.start / 1024).to_string()),
                ("verified_against", js(against)),
                ("expected", js(&expected)),
                ("flip_offset_in_block", flip.to_string()),
                ("tampered", js(&tampered_value)),
            ];
            if block.len() <= 64 {
                fields.push(("data", js(&hex(block))));
            }
            Vector {
                name: format!("size_{size}_block_{index}"),
                fields,
                check: Box::new(|entry| {
                    let size = field_u64(entry, "file_size")?;
                    let index = field_u64(entry, "index")? as u32;
                    let data = pattern(size);
                    let hashes = hash_bytes(&data);
                    let layout = hashes.layout();
                    let range = layout.block_range(index);
                    if field_u64(entry, "offset")? != range.start
                        || field_u64(entry, "len")? != range.end - range.start
                        || field_u64(entry, "chunk_counter")? != range.start / 1024
                    {
                        return Err("block position disagrees with the layout".into());
                    }
                    let block = &data[range.start as usize..range.end as usize];
                    let expected = unhex(field_str(entry, "expected")?)?;
                    let own = match field_str(entry, "verified_against")? {
                        "root" => ContentHash::of(block).as_bytes().to_vec(),
                        "layer" => spec_block_cv(range.start, block).to_vec(),
                        other => return Err(format!("unknown verified_against {other:?}")),
                    };
                    if own != expected {
                        return Err("the block does not hash to `expected`".into());
                    }
                    // The stored layer (content.json) is what the block is checked against.
                    let layer = hashes.layer_bytes();
                    let received =
                        BlockHashes::verify(hashes.root(), size, &layer).map_err(|e| format!("{e}"))?;
                    received.verify_block(index, block).map_err(|e| format!("{e}"))?;
                    let mut bad = block.to_vec();
                    bad[field_u64(entry, "flip_offset_in_block")? as usize] ^= 1;
                    if received.verify_block(index, &bad) != Err(ContentError::BlockMismatch { index }) {
                        return Err("a tampered block was not refused".into());
                    }
                    let tampered = match field_str(entry, "verified_against")? {
                        "root" => ContentHash::of(&bad).as_bytes().to_vec(),
                        _ => spec_block_cv(range.start, &bad).to_vec(),
                    };
                    if hex(&tampered) != field_str(entry, "tampered")? {
                        return Err("tampered hash disagrees".into());
                    }
                    Ok(())
                }),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// TLS identity: the raw key and the X.509 certificate (section 3.2)

/// RFC 8032 section 7.1, test 1: the secret key (seed) whose public key is `peer_a`.
const SEED_A: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// The Ed25519 SubjectPublicKeyInfo prefix of section 3.2, item 3.
const SPKI_PREFIX: &str = "302a300506032b6570032100";

/// The node key of an Ed25519 seed, loaded the way a node loads its
/// `node.key` (PKCS#8 v2, RFC 8410 / RFC 5958).
fn node_key_from_seed(seed: &[u8; 32]) -> NodeKey {
    let public = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .expect("a 32-byte seed")
        .public_key()
        .as_ref()
        .to_vec();
    let pkcs8 = [
        &unhex("3053020101300506032b657004220420").unwrap()[..],
        seed,
        &unhex("a123032100").unwrap(),
        &public,
    ]
    .concat();
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join(KEY_FILE), pkcs8).expect("write node.key");
    NodeKey::load_or_create(dir.path()).expect("the PKCS#8 key loads")
}

fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        len @ 0..=0x7f => out.push(len as u8),
        len @ 0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        len => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// The elements of the DER SEQUENCE `element`, each with its header, and
/// where each starts within `element`. Only short and long lengths of up to
/// two bytes, which is all these certificates use.
fn der_children(element: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let header = |at: &[u8]| -> (usize, usize) {
        match at[1] {
            len @ 0..=0x7f => (2, usize::from(len)),
            0x81 => (3, usize::from(at[2])),
            0x82 => (4, usize::from(at[2]) << 8 | usize::from(at[3])),
            other => panic!("unexpected DER length byte {other:#x}"),
        }
    };
    let (outer, len) = header(element);
    let mut at = outer;
    let mut out = Vec::new();
    while at < outer + len {
        let (head, len) = header(&element[at..]);
        out.push((at, element[at..at + head + len].to_vec()));
        at += head + len;
    }
    out
}

/// Section 3.2's certificate, built from the document's description alone
/// (not from Canopy's code) and signed with `seed`.
fn spec_certificate(seed: &[u8; 32]) -> Vec<u8> {
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed).expect("a 32-byte seed");
    let id = PeerId(pair.public_key().as_ref().try_into().expect("32 bytes"));
    let ed25519 = unhex("300506032b6570").unwrap();
    let name = der(
        0x30,
        &der(
            0x31,
            &der(
                0x30,
                &[
                    der(0x06, &[0x55, 0x04, 0x03]),
                    der(0x0c, id.to_string().as_bytes()),
                ]
                .concat(),
            ),
        ),
    );
    let tbs = der(
        0x30,
        &[
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[1]),
            ed25519.clone(),
            name.clone(),
            der(
                0x30,
                &[der(0x17, b"700101000000Z"), der(0x18, b"99991231235959Z")].concat(),
            ),
            name,
            unhex(&format!("{SPKI_PREFIX}{}", hex(id.as_bytes()))).unwrap(),
        ]
        .concat(),
    );
    let signature = pair.sign(&tbs);
    der(
        0x30,
        &[
            tbs,
            ed25519,
            der(0x03, &[&[0u8][..], signature.as_ref()].concat()),
        ]
        .concat(),
    )
}

/// Where the SubjectPublicKeyInfo starts in a certificate: the seventh
/// element of tbsCertificate (the sixth without a version).
fn spki_offset(certificate: &[u8]) -> usize {
    let (tbs_at, tbs) = der_children(certificate).remove(0);
    let fields = der_children(&tbs);
    let index = if fields[0].1[0] == 0xa0 { 6 } else { 5 };
    tbs_at + fields[index].0
}

/// What a receiver makes of `entry` presented in `form`: the peer id, or
/// `None` if it must refuse the handshake.
fn receive(form: &str, entry: &[u8]) -> Result<Option<PeerId>, String> {
    match form {
        "RawPublicKey" => Ok(peer_id_of_spki(entry)),
        "X509" => Ok(peer_id_of_certificate(entry)),
        other => Err(format!("unknown form {other:?}")),
    }
}

fn entry_vector(
    name: &str,
    description: &str,
    form: &'static str,
    entry: Vec<u8>,
    accept: Option<PeerId>,
) -> Vector {
    let result = accept.map_or_else(|| "refuse".to_string(), |id| id.to_string());
    text_vector(
        name,
        description,
        vec![
            ("form", js(form)),
            ("entry", js(&hex(&entry))),
            ("result", js(&result)),
        ],
        Box::new(move |stored| {
            let entry = unhex(field_str(stored, "entry")?)?;
            let got = receive(field_str(stored, "form")?, &entry)?;
            let want = match field_str(stored, "result")? {
                "refuse" => None,
                id => Some(id.parse::<PeerId>().map_err(|e| format!("{e}"))?),
            };
            if got != want {
                return Err(format!("a receiver gets {got:?}, the vector says {want:?}"));
            }
            Ok(())
        }),
    )
}

fn identity_vectors() -> Vec<Vector> {
    let seed: [u8; 32] = key32(SEED_A).unwrap();
    let key = node_key_from_seed(&seed);
    assert_eq!(key.peer_id(), peer_a(), "RFC 8032 test 1");
    let certificate = key.certificate().to_vec();
    let spki = unhex(&format!("{SPKI_PREFIX}{}", hex(peer_a().as_bytes()))).unwrap();
    let at = spki_offset(&certificate);

    let mut vectors = vec![
        text_vector(
            "raw_public_key_a",
            "The RFC 7250 raw public key of peer_a: its Ed25519 SubjectPublicKeyInfo, the one entry of the Certificate message.",
            vec![
                ("form", js("RawPublicKey")),
                ("entry", js(&hex(&spki))),
                ("result", js(&peer_a().to_string())),
            ],
            Box::new(|stored| {
                let entry = unhex(field_str(stored, "entry")?)?;
                if hex(&entry) != format!("{SPKI_PREFIX}{}", hex(peer_a().as_bytes())) {
                    return Err("not the 12-byte prefix followed by the key".into());
                }
                if receive("RawPublicKey", &entry)? != Some(field_str(stored, "result")?.parse().map_err(|e| format!("{e}"))?) {
                    return Err("the receiver reads another peer id".into());
                }
                Ok(())
            }),
        ),
        text_vector(
            "x509_certificate_a",
            "The self-signed X.509 certificate of the RFC 8032 test 1 key (peer_a), as a node presents it to a peer that \
             does not negotiate raw public keys. Ed25519 signatures are deterministic, so the bytes are exact. A receiver \
             reads only the SubjectPublicKeyInfo, `spki_len` bytes at byte `spki_offset`.",
            vec![
                ("secret_key", js(SEED_A)),
                ("form", js("X509")),
                ("entry", js(&hex(&certificate))),
                ("entry_len", certificate.len().to_string()),
                ("spki_offset", at.to_string()),
                ("spki_len", spki.len().to_string()),
                ("spki", js(&hex(&spki))),
                ("result", js(&peer_a().to_string())),
            ],
            Box::new(|stored| {
                let seed = key32(field_str(stored, "secret_key")?)?;
                let entry = unhex(field_str(stored, "entry")?)?;
                if entry != spec_certificate(&seed) {
                    return Err("not the certificate section 3.2 describes".into());
                }
                if entry != node_key_from_seed(&seed).certificate() {
                    return Err("not the certificate the node presents".into());
                }
                let at = field_u64(stored, "spki_offset")? as usize;
                let len = field_u64(stored, "spki_len")? as usize;
                if entry.len() as u64 != field_u64(stored, "entry_len")?
                    || at != spki_offset(&entry)
                    || hex(&entry[at..at + len]) != field_str(stored, "spki")?
                {
                    return Err("the SPKI is not where the vector says".into());
                }
                let id: PeerId = field_str(stored, "result")?.parse().map_err(|e| format!("{e}"))?;
                if receive("X509", &entry)? != Some(id) || peer_id_of_spki(&entry[at..at + len]) != Some(id) {
                    return Err("the receiver reads another peer id".into());
                }
                // Self-signed: the signature over tbsCertificate verifies with the key.
                let parts = der_children(&entry);
                let bits = &parts[2].1[2..];
                ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, id.as_bytes())
                    .verify(&parts[0].1, &bits[1..])
                    .map_err(|_| "the self-signature does not verify".to_string())?;
                Ok(())
            }),
        ),
    ];

    // Variations a receiver must take the same way, or refuse.
    let parts = der_children(&certificate);
    let tbs: Vec<Vec<u8>> = der_children(&parts[0].1).into_iter().map(|(_, e)| e).collect();
    let rebuild = |tbs: &[Vec<u8>], rest: &[Vec<u8>]| {
        der(
            0x30,
            &[vec![der(0x30, &tbs.concat())], rest.to_vec()].concat().concat(),
        )
    };
    let tail: Vec<Vec<u8>> = parts[1..].iter().map(|(_, e)| e.clone()).collect();
    let zero_signature = vec![tail[0].clone(), der(0x03, &[0u8; 65])];
    let mut p256 = tbs.clone();
    p256[6] = unhex(
        "3059301306072a8648ce3d020106082a8648ce3d03010703420004\
         6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
         4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
    )
    .unwrap();
    let mut long_spki = tbs.clone();
    long_spki[6] = der(
        0x30,
        &[
            unhex("300506032b6570").unwrap(),
            der(0x03, &[&[0u8][..], &[7u8; 33]].concat()),
        ]
        .concat(),
    );
    let mut trailing = certificate.clone();
    trailing.push(0);
    // (name, description, form, entry, the peer id a receiver reads or None to refuse)
    type Variation = (&'static str, &'static str, &'static str, Vec<u8>, Option<PeerId>);
    let variations: Vec<Variation> = vec![
        (
            "x509_without_version_accepted",
            "x509_certificate_a without its version field (a v1 layout): the SPKI is then the sixth element of \
             tbsCertificate. Accepted; the signature, now over other bytes, is not examined.",
            "X509",
            rebuild(&tbs[1..], &tail),
            Some(peer_a()),
        ),
        (
            "x509_zero_signature_accepted",
            "x509_certificate_a with its signature replaced by zeros: receivers do not check it (the handshake's \
             CertificateVerify proves the key). Accepted.",
            "X509",
            rebuild(&tbs, &zero_signature),
            Some(peer_a()),
        ),
        (
            "x509_p256_key_refused",
            "x509_certificate_a with an ECDSA P-256 SubjectPublicKeyInfo (the curve's generator point) in place of the \
             Ed25519 one. Refused: the key is not Ed25519.",
            "X509",
            rebuild(&p256, &tail),
            None,
        ),
        (
            "x509_33_byte_key_refused",
            "x509_certificate_a whose SubjectPublicKeyInfo says Ed25519 but carries 33 key bytes. Refused: not the \
             44-byte form.",
            "X509",
            rebuild(&long_spki, &tail),
            None,
        ),
        (
            "x509_trailing_byte_refused",
            "x509_certificate_a followed by one zero byte inside the same certificate entry. Refused: the entry must be \
             exactly one DER element.",
            "X509",
            trailing,
            None,
        ),
        (
            "raw_key_as_x509_refused",
            "raw_public_key_a sent where X.509 was negotiated. Refused: it is not a certificate.",
            "X509",
            spki.clone(),
            None,
        ),
        (
            "x509_as_raw_key_refused",
            "x509_certificate_a sent where RawPublicKey was negotiated. Refused: it is not the 44-byte SPKI.",
            "RawPublicKey",
            certificate.clone(),
            None,
        ),
    ];
    for (name, description, form, entry, accept) in variations {
        vectors.push(entry_vector(name, description, form, entry, accept));
    }
    vectors
}

// ---------------------------------------------------------------------------
// BLAKE3 chaining values inside a block (section 7.3)

/// BLAKE3's compression function and its chunk and parent rules, written out
/// from the BLAKE3 specification (sections 2.1-2.5) as section 7.3 describes
/// them, so the vectors are checked against the document and not only
/// against the `blake3` crate that produced them.
mod spec_blake3 {
    pub const IV: [u32; 8] = [
        0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
    ];
    const PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
    pub const CHUNK_START: u32 = 1;
    pub const CHUNK_END: u32 = 2;
    pub const PARENT: u32 = 4;
    pub const CHUNK_LEN: usize = 1024;
    const BLOCK_LEN: usize = 64;

    fn g(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize, x: u32, y: u32) {
        s[a] = s[a].wrapping_add(s[b]).wrapping_add(x);
        s[d] = (s[d] ^ s[a]).rotate_right(16);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_right(12);
        s[a] = s[a].wrapping_add(s[b]).wrapping_add(y);
        s[d] = (s[d] ^ s[a]).rotate_right(8);
        s[c] = s[c].wrapping_add(s[d]);
        s[b] = (s[b] ^ s[c]).rotate_right(7);
    }

    /// The first 8 words of `compress(cv, block, counter, block_len, flags)`.
    pub fn compress(cv: &[u32; 8], block: &[u8; 64], counter: u64, block_len: u32, flags: u32) -> [u32; 8] {
        let mut m: [u32; 16] =
            std::array::from_fn(|i| u32::from_le_bytes(block[4 * i..4 * i + 4].try_into().unwrap()));
        let mut s = [
            cv[0],
            cv[1],
            cv[2],
            cv[3],
            cv[4],
            cv[5],
            cv[6],
            cv[7],
            IV[0],
            IV[1],
            IV[2],
            IV[3],
            counter as u32,
            (counter >> 32) as u32,
            block_len,
            flags,
        ];
        for round in 0..7 {
            g(&mut s, 0, 4, 8, 12, m[0], m[1]);
            g(&mut s, 1, 5, 9, 13, m[2], m[3]);
            g(&mut s, 2, 6, 10, 14, m[4], m[5]);
            g(&mut s, 3, 7, 11, 15, m[6], m[7]);
            g(&mut s, 0, 5, 10, 15, m[8], m[9]);
            g(&mut s, 1, 6, 11, 12, m[10], m[11]);
            g(&mut s, 2, 7, 8, 13, m[12], m[13]);
            g(&mut s, 3, 4, 9, 14, m[14], m[15]);
            if round < 6 {
                m = std::array::from_fn(|i| m[PERMUTATION[i]]);
            }
        }
        std::array::from_fn(|i| s[i] ^ s[i + 8])
    }

    pub fn bytes(words: &[u32; 8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, word) in words.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    pub fn words(bytes: &[u8; 32]) -> [u32; 8] {
        std::array::from_fn(|i| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()))
    }

    /// The chaining value after each 64-byte block of a chunk (at least one
    /// block, zero-padded), with the flags that block was compressed with;
    /// the last is the chunk's chaining value.
    pub fn chunk_steps(counter: u64, chunk: &[u8]) -> Vec<(u32, [u8; 32])> {
        assert!(chunk.len() <= CHUNK_LEN);
        let blocks: Vec<&[u8]> = if chunk.is_empty() {
            vec![&[]]
        } else {
            chunk.chunks(BLOCK_LEN).collect()
        };
        let mut cv = IV;
        let mut steps = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let mut padded = [0u8; 64];
            padded[..block.len()].copy_from_slice(block);
            let mut flags = 0;
            if j == 0 {
                flags |= CHUNK_START;
            }
            if j + 1 == blocks.len() {
                flags |= CHUNK_END;
            }
            cv = compress(&cv, &padded, counter, block.len() as u32, flags);
            steps.push((flags, bytes(&cv)));
        }
        steps
    }

    pub fn chunk_cv(counter: u64, chunk: &[u8]) -> [u8; 32] {
        chunk_steps(counter, chunk).last().expect("at least one block").1
    }

    pub fn parent_cv(left: &[u8; 32], right: &[u8; 32], flags: u32) -> [u8; 32] {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(left);
        block[32..].copy_from_slice(right);
        bytes(&compress(&IV, &block, 0, 64, PARENT | flags))
    }
}

/// One node of a block's subtree: the chunks it covers (by chunk counter),
/// its height (0 for a chunk) and its chaining value.
struct Node {
    first: u64,
    last: u64,
    height: u32,
    cv: ChainingValue,
}

/// Every node of the subtree over `chunks` (the first at chunk counter
/// `first`), computed with the `blake3` crate as Canopy's hashing does:
/// chunks at their offset, finalized without ROOT, merged as non-root
/// parents with the left-balanced split.
fn subtree_nodes(first: u64, chunks: &[&[u8]], out: &mut Vec<Node>) -> (ChainingValue, u32) {
    if chunks.len() == 1 {
        let cv = spec_block_cv(first * 1024, chunks[0]);
        out.push(Node {
            first,
            last: first,
            height: 0,
            cv,
        });
        return (cv, 0);
    }
    let left = left_blocks(chunks.len());
    let (left_cv, left_height) = subtree_nodes(first, &chunks[..left], out);
    let (right_cv, right_height) = subtree_nodes(first + left as u64, &chunks[left..], out);
    let cv = merge_subtrees_non_root(&left_cv, &right_cv, Mode::Hash);
    let height = left_height.max(right_height) + 1;
    out.push(Node {
        first,
        last: first + chunks.len() as u64 - 1,
        height,
        cv,
    });
    (cv, height)
}

fn node_label(first: u64, last: u64) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// Parses `"FIRST-LAST HEX"` (or `"FIRST HEX"`).
fn parse_node(text: &str) -> Result<(u64, u64, Vec<u8>), String> {
    let (span, cv) = text.split_once(' ').ok_or_else(|| format!("bad node {text:?}"))?;
    let (first, last) = span.split_once('-').unwrap_or((span, span));
    let number = |n: &str| n.parse::<u64>().map_err(|e| format!("bad node {text:?}: {e}"));
    Ok((number(first)?, number(last)?, unhex(cv)?))
}

fn chaining_vectors() -> Vec<Vector> {
    let picks: [(u64, u32); 3] = [(196_613, 1), (69_633, 1), (196_613, 3)];
    let mut vectors: Vec<Vector> = picks
        .into_iter()
        .map(|(size, index)| {
            let data = pattern(size);
            let layout = BlockLayout::for_size(size);
            let range = layout.block_range(index);
            let block = &data[range.start as usize..range.end as usize];
            let chunks: Vec<&[u8]> = block.chunks(1024).collect();
            let mut nodes = Vec::new();
            let (top, _) = subtree_nodes(range.start / 1024, &chunks, &mut nodes);
            nodes.sort_by_key(|node| (node.height, node.first));
            let listed: Vec<String> = nodes
                .iter()
                .map(|node| {
                    js(&format!(
                        "{} {}",
                        node_label(node.first, node.last),
                        hex(&node.cv)
                    ))
                })
                .collect();
            Vector {
                name: format!("size_{size}_block_{index}"),
                fields: vec![
                    ("file_size", size.to_string()),
                    ("index", index.to_string()),
                    ("offset", range.start.to_string()),
                    ("len", block.len().to_string()),
                    ("tree", js(&tree_shape(range.start as usize / 1024, chunks.len()))),
                    ("nodes", format!("[{}]", listed.join(", "))),
                    ("block_cv", js(&hex(&top))),
                ],
                check: Box::new(|entry| {
                    let size = field_u64(entry, "file_size")?;
                    let index = field_u64(entry, "index")? as u32;
                    let data = pattern(size);
                    let range = BlockLayout::for_size(size).block_range(index);
                    if field_u64(entry, "offset")? != range.start
                        || field_u64(entry, "len")? != range.end - range.start
                    {
                        return Err("block position disagrees with the layout".into());
                    }
                    let block = &data[range.start as usize..range.end as usize];
                    let nodes = field(entry, "nodes")?.as_array().ok_or("nodes is not a list")?;
                    let mut by_span = std::collections::BTreeMap::new();
                    for node in nodes {
                        let (first, last, cv) = parse_node(node.as_str().ok_or("a node is not a string")?)?;
                        let cv: [u8; 32] = cv.try_into().map_err(|_| "a CV is not 32 bytes")?;
                        by_span.insert((first, last), cv);
                    }
                    if by_span.len() != nodes.len() {
                        return Err("a span is listed twice".into());
                    }
                    // Each chunk from its bytes, each parent from its two
                    // children, with the specification's compression function.
                    for (&(first, last), cv) in &by_span {
                        let own = if first == last {
                            let start = (first * 1024 - range.start) as usize;
                            let chunk = &block[start..(start + 1024).min(block.len())];
                            spec_blake3::chunk_cv(first, chunk)
                        } else {
                            let count = (last - first + 1) as usize;
                            let split = first + left_blocks(count) as u64;
                            let left = by_span
                                .get(&(first, split - 1))
                                .ok_or("a left child is missing")?;
                            let right = by_span.get(&(split, last)).ok_or("a right child is missing")?;
                            spec_blake3::parent_cv(left, right, 0)
                        };
                        if &own != cv {
                            return Err(format!(
                                "node {} is not its chaining value",
                                node_label(first, last)
                            ));
                        }
                    }
                    let first = range.start / 1024;
                    let last = (range.end - 1).max(range.start) / 1024;
                    let top = by_span
                        .get(&(first, last))
                        .ok_or("the whole block is not a node")?;
                    let block_cv = unhex(field_str(entry, "block_cv")?)?;
                    // The top node is the block's entry in Canopy's block layer.
                    let layer = hash_bytes(&data).layer_bytes();
                    if top[..] != block_cv[..] || layer[index as usize * 32..][..32] != block_cv[..] {
                        return Err("block_cv is not the top node and the layer entry".into());
                    }
                    Ok(())
                }),
            }
        })
        .collect();

    // One chunk step by step: the chaining value after each of its 16
    // compressions. Chunk 64 of every file above is bytes 65,536..66,560.
    let data = pattern(69_633);
    let chunk = &data[65_536..66_560];
    let steps: Vec<String> = spec_blake3::chunk_steps(64, chunk)
        .iter()
        .enumerate()
        .map(|(j, (flags, cv))| js(&format!("{j} {flags} {}", hex(cv))))
        .collect();
    vectors.push(Vector {
        name: "chunk_64_steps".into(),
        fields: vec![
            ("offset", "65536".into()),
            ("len", "1024".into()),
            ("counter", "64".into()),
            ("first_block", js(&hex(&chunk[..64]))),
            ("steps", format!("[{}]", steps.join(", "))),
        ],
        check: Box::new(|entry| {
            let data = pattern(69_633);
            let offset = field_u64(entry, "offset")? as usize;
            let chunk = &data[offset..offset + field_u64(entry, "len")? as usize];
            let counter = field_u64(entry, "counter")?;
            if hex(&chunk[..64]) != field_str(entry, "first_block")? {
                return Err("first_block is not the chunk's first 64 bytes".into());
            }
            let steps = field(entry, "steps")?.as_array().ok_or("steps is not a list")?;
            let mut cv = spec_blake3::IV;
            for (j, step) in steps.iter().enumerate() {
                let text = step.as_str().ok_or("a step is not a string")?;
                let parts: Vec<&str> = text.split(' ').collect();
                let [number, flags, want] = parts[..] else {
                    return Err(format!("bad step {text:?}"));
                };
                let flags: u32 = flags.parse().map_err(|e| format!("{e}"))?;
                let want: [u8; 32] = unhex(want)?.try_into().map_err(|_| "a CV is not 32 bytes")?;
                let expected_flags = u32::from(j == 0) * spec_blake3::CHUNK_START
                    + u32::from(j + 1 == steps.len()) * spec_blake3::CHUNK_END;
                if number != j.to_string() || flags != expected_flags {
                    return Err(format!("step {j}: wrong number or flags"));
                }
                let block: [u8; 64] = chunk[64 * j..64 * j + 64].try_into().expect("64 bytes");
                cv = spec_blake3::compress(&cv, &block, counter, 64, flags);
                if spec_blake3::bytes(&cv) != want {
                    return Err(format!("step {j} is not the compression's output"));
                }
                // Each step is also the next step's input.
                assert_eq!(spec_blake3::words(&want), cv);
            }
            // The last step is the chunk's chaining value, as the blake3 crate computes it.
            if spec_blake3::bytes(&cv) != spec_block_cv(counter * 1024, chunk) {
                return Err("the last step is not the chunk's chaining value".into());
            }
            Ok(())
        }),
    });
    vectors
}

// ---------------------------------------------------------------------------
// The tests

const ABOUT_POSTCARD: &str = "Bare postcard encodings (no frame) of the types Canopy messages are built from. \
    `value` is the value as JSON with byte arrays shown as 0x-hex; `hex` is the exact encoding. See docs/PROTOCOL.md, section 4.";
const ABOUT_MESSAGES: &str = "Framed messages: `frame` is the 4-byte big-endian body length followed by the postcard body \
    (`body_len` bytes). `value` is the message as JSON in field order, byte arrays shown as 0x-hex. See docs/PROTOCOL.md.";

#[test]
fn postcard_primer() {
    check_file("postcard.json", ABOUT_POSTCARD, postcard_vectors());
}

#[test]
fn requests() {
    check_file("request.json", ABOUT_MESSAGES, request_vectors());
}

#[test]
fn responses() {
    check_file("response.json", ABOUT_MESSAGES, response_vectors());
}

#[test]
fn leaf_sessions() {
    check_file("session.json", ABOUT_MESSAGES, session_vectors());
}

#[test]
fn overlay_links() {
    check_file("overlay.json", ABOUT_MESSAGES, overlay_vectors());
}

#[test]
fn rejected_frames() {
    check_file(
        "rejected.json",
        "Frames a receiver MUST refuse, and the decoder's error kind (TooLarge, Malformed, TrailingBytes, \
         NonCanonical). `type` is what the receiver expected. See docs/PROTOCOL.md, section 5.",
        rejected_vectors(),
    );
}

#[test]
fn text_forms() {
    check_file(
        "ids.json",
        "Text forms: peer ids (base32), content hashes (hex), peer addresses and canopy: links. \
         See docs/PROTOCOL.md, sections 3 and 7.",
        id_vectors(),
    );
}

#[test]
fn block_layouts() {
    check_file(
        "layout.json",
        "How a file of `size` bytes is cut into blocks; both ends derive this from the size alone. \
         See docs/PROTOCOL.md, section 7.",
        layout_vectors(),
    );
}

#[test]
fn content_hashes_and_layers() {
    check_file(
        "content.json",
        "Files whose byte i is (i mod 251), their BLAKE3 root (= b3sum), block layout, merge tree of the \
         blocks and block layer (the chaining values of the blocks, 32 bytes each, in order; empty for a \
         single-block file). See docs/PROTOCOL.md, section 7.",
        content_vectors(),
    );
}

#[test]
fn block_proofs() {
    check_file(
        "blocks.json",
        "Verifying one block of the files in content.json. `expected` is the block's chaining value from \
         the block layer (or, for a single-block file, the root); `tampered` is what the block hashes to \
         after flipping the low bit of its byte at `flip_offset_in_block`. See docs/PROTOCOL.md, section 7.",
        block_vectors(),
    );
}

#[test]
fn possession_proofs() {
    check_file(
        "possession.json",
        "Proofs of possession (`Request::Prove`) for chunks of the files in content.json (byte i is i mod 251): \
         the chunk is bytes `offset..offset + len`; `proof` is the chaining values of its ancestors' siblings in \
         BLAKE3's tree of 1 KiB chunks, from the root down, 32 bytes each (empty for a one-chunk file). See \
         docs/PROTOCOL.md, section 9.1.",
        possession_vectors(),
    );
}

#[test]
fn signed_votes() {
    check_file(
        "votes.json",
        "Signed votes on content (common::proto::credence). A vote is signed with Ed25519 over `message`: the 15-byte \
         tag `canopy-vote-v1\\0`, the 32-byte content hash, the verdict byte (0 authentic, 1 fake) and `issued` as a \
         big-endian u64 (Unix seconds). `hex` is the vote's postcard encoding (voter, content, verdict, issued as a \
         varint, 64 signature bytes); `result` is what a receiver checking it at `now` concludes: `ok`, or the refusal. \
         List vectors are votes gossiped with a hit (a varint count of at most 8, then the votes) and what a decoder \
         makes of them. See docs/TRUST.md.",
        vote_vectors(),
    );
}

#[test]
fn tls_identities() {
    check_file(
        "identity.json",
        "What a node presents in the TLS handshake and what a receiver makes of it. `form` is the negotiated \
         certificate type (RawPublicKey or X509), `entry` the one entry of the Certificate message, and `result` \
         the peer id a receiver reads from it, or `refuse` where it MUST fail the handshake (bad_certificate). \
         See docs/PROTOCOL.md, section 3.2.",
        identity_vectors(),
    );
}

#[test]
fn blake3_chaining_values() {
    check_file(
        "chaining.json",
        "BLAKE3 chaining values inside blocks of the files in content.json (byte i is i mod 251). `nodes` lists \
         every node of the block's subtree as `CHUNKS CV`: a chunk by its counter (its 1 KiB index in the file), a \
         parent by the first and last chunk it covers; all are non-root chaining values, listed by height, then \
         from the left. The node covering the whole block is `block_cv`, the block's entry in the block layer. \
         `chunk_64_steps` gives, for one chunk, the chaining value after each of its 16 compressions as \
         `BLOCK FLAGS CV`. See docs/PROTOCOL.md, section 7.3.",
        chaining_vectors(),
    );
}

#[test]
fn private_networks() {
    check_file(
        "network.json",
        "Private networks: ALPN ids, the key of an allow-list-only network, membership proofs over the \
         TLS exporter, invites and allow-lists. See docs/PROTOCOL.md, section 15.",
        network_vectors(),
    );
}

/// Sizes 0, 1, 1,024 and 102,400 of the content vectors are inputs of BLAKE3's
/// official `test_vectors.json` (byte i = i mod 251): their roots must be the
/// published hashes, an anchor outside this code base.
#[test]
fn content_roots_agree_with_blake3_official_vectors() {
    let official = [
        (
            0,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ),
        (
            1,
            "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
        ),
        (
            1024,
            "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
        ),
        (
            102_400,
            "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085",
        ),
    ];
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(vectors_dir().join("content.json")).expect("content.json"),
    )
    .expect("content.json is JSON");
    for (size, hash) in official {
        let entry = stored["vectors"]
            .as_array()
            .and_then(|entries| entries.iter().find(|entry| entry["size"] == size))
            .unwrap_or_else(|| panic!("content.json has no file of {size} bytes"));
        assert_eq!(entry["root"], hash, "size {size}");
        assert_eq!(hash_bytes(&pattern(size)).root().to_hex(), hash, "size {size}");
    }
}

fn protocol_md() -> String {
    std::fs::read_to_string(docs_dir().join("PROTOCOL.md")).expect("docs/PROTOCOL.md")
}

#[test]
fn protocol_md_names_exactly_the_vector_files() {
    // Signed votes are specified in TRUST.md (votes.json), the rest in
    // PROTOCOL.md: each vector file must be named in one of the two.
    let trust = std::fs::read_to_string(docs_dir().join("TRUST.md")).expect("docs/TRUST.md");
    let doc = protocol_md() + &trust;
    let mut named = BTreeSet::new();
    for (at, _) in doc.match_indices("vectors/") {
        let rest = &doc[at + "vectors/".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let file = rest[..end].trim_end_matches('.');
        if file.ends_with(".json") {
            named.insert(file.to_string());
        }
    }
    let generated: BTreeSet<String> = all_files().iter().map(|(file, _)| file.to_string()).collect();
    assert_eq!(
        named, generated,
        "PROTOCOL.md and TRUST.md must name every vector file, and only those"
    );
    let on_disk: BTreeSet<String> = std::fs::read_dir(vectors_dir())
        .expect("docs/vectors")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    assert_eq!(
        on_disk, generated,
        "docs/vectors holds exactly the generated files"
    );
}

/// Blocks in PROTOCOL.md fenced as ```` ```vector FILE#NAME ```` hold the
/// bytes of that vector (its `frame`, `hex` or `entry`), annotated: each
/// line is `HEX BYTES | comment`.
#[test]
fn annotated_examples_in_protocol_md_match_the_vectors() {
    let doc = protocol_md();
    let mut lines = doc.lines();
    let mut checked = 0;
    while let Some(line) = lines.next() {
        // Examples inside list items are indented; the fence is the same.
        let Some(target) = line.trim_start().strip_prefix("```vector ") else {
            continue;
        };
        let (file, name) = target.trim().split_once('#').expect("```vector FILE#NAME");
        let mut bytes = String::new();
        for line in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            let data = line.split('|').next().unwrap_or_default();
            bytes.extend(data.chars().filter(|c| !c.is_whitespace()));
        }
        let stored: Value = serde_json::from_str(
            &std::fs::read_to_string(vectors_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        let entry = stored["vectors"]
            .as_array()
            .and_then(|entries| entries.iter().find(|entry| entry["name"] == name))
            .unwrap_or_else(|| panic!("PROTOCOL.md cites {file}#{name}, which does not exist"));
        let want = entry["frame"]
            .as_str()
            .or(entry["hex"].as_str())
            .or(entry["entry"].as_str())
            .unwrap_or_else(|| panic!("{file}#{name} has no bytes"));
        assert_eq!(
            bytes.to_lowercase(),
            want,
            "PROTOCOL.md's example of {file}#{name}"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "PROTOCOL.md should walk through at least 5 encodings, found {checked}"
    );
}
