//! What leaves publish and what searches ask and answer.
//!
//! Everything here arrives from strangers, so every list and string has a
//! hard bound, checked by [`FileEntry::check`] and [`Query::check`] before
//! anything else looks at it.

use serde::{Deserialize, Serialize};

use super::id::{ContentHash, PeerAddr};

/// Longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most metadata pairs per file.
pub const MAX_META_PAIRS: usize = 16;
/// Longest metadata key, in bytes.
pub const MAX_META_KEY_LEN: usize = 32;
/// Longest metadata value, in bytes.
pub const MAX_META_VALUE_LEN: usize = 256;
/// Longest search text, in bytes.
pub const MAX_QUERY_LEN: usize = 256;
/// Most hits one search may return.
pub const MAX_HITS: u16 = 200;
/// Most sources listed with one hit (the count may be higher).
pub const MAX_SOURCES_PER_HIT: usize = 20;
/// Most addresses a leaf may announce.
pub const MAX_LISTEN_ADDRS: usize = 4;

/// Broad file types, for filtering searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    Audio,
    Video,
    Image,
    Document,
    Archive,
    Software,
    Other,
}

impl FileKind {
    pub const ALL: [FileKind; 7] = [
        FileKind::Audio,
        FileKind::Video,
        FileKind::Image,
        FileKind::Document,
        FileKind::Archive,
        FileKind::Software,
        FileKind::Other,
    ];

    /// Guesses the type from a file name's extension.
    pub fn from_name(name: &str) -> FileKind {
        let extension = name
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "mp3" | "ogg" | "oga" | "opus" | "flac" | "wav" | "m4a" | "aac" | "wma" | "aiff" | "mid" => {
                FileKind::Audio
            }
            "mp4" | "mkv" | "avi" | "webm" | "mov" | "wmv" | "mpg" | "mpeg" | "m4v" | "ogv" => {
                FileKind::Video
            }
            "jpg" | "jpeg" | "png" | "gif" | "webp" | "bmp" | "tif" | "tiff" | "svg" | "heic" => {
                FileKind::Image
            }
            "pdf" | "txt" | "md" | "doc" | "docx" | "odt" | "rtf" | "epub" | "html" | "htm" | "xls"
            | "xlsx" | "ods" | "ppt" | "pptx" | "odp" | "csv" => FileKind::Document,
            "zip" | "tar" | "gz" | "tgz" | "bz2" | "xz" | "7z" | "rar" | "zst" => FileKind::Archive,
            "exe" | "msi" | "deb" | "rpm" | "dmg" | "apk" | "appimage" | "iso" | "img" => FileKind::Software,
            _ => FileKind::Other,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            FileKind::Audio => "audio",
            FileKind::Video => "video",
            FileKind::Image => "image",
            FileKind::Document => "document",
            FileKind::Archive => "archive",
            FileKind::Software => "software",
            FileKind::Other => "other",
        }
    }

    pub fn code(&self) -> u64 {
        FileKind::ALL.iter().position(|k| k == self).unwrap_or(6) as u64
    }
}

impl std::str::FromStr for FileKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FileKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                format!("unknown type {text:?} (audio, video, image, document, archive, software, other)")
            })
    }
}

/// One shared file as a leaf describes it to its supernode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub hash: ContentHash,
    pub size: u64,
    pub name: String,
    pub kind: FileKind,
    /// Free-form pairs such as `("artist", "Nina Simone")`.
    pub meta: Vec<(String, String)>,
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("file name of {0} bytes is over the {MAX_NAME_LEN}-byte limit")]
    NameTooLong(usize),
    #[error("{0} metadata pairs is over the limit of {MAX_META_PAIRS}")]
    TooManyPairs(usize),
    #[error("metadata entry {0:?} is over the size limit ({MAX_META_KEY_LEN}-byte keys, {MAX_META_VALUE_LEN}-byte values)")]
    PairTooLong(String),
    #[error("{count} files is over this supernode's limit of {max} per leaf")]
    TooManyFiles { count: usize, max: usize },
    #[error("this supernode's index is full ({0} files at most)")]
    IndexFull(usize),
}

impl FileEntry {
    pub fn check(&self) -> Result<(), PublishError> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(PublishError::NameTooLong(self.name.len()));
        }
        if self.meta.len() > MAX_META_PAIRS {
            return Err(PublishError::TooManyPairs(self.meta.len()));
        }
        for (key, value) in &self.meta {
            if key.len() > MAX_META_KEY_LEN || value.len() > MAX_META_VALUE_LEN {
                let mut shown = key.clone();
                shown.truncate(MAX_META_KEY_LEN.min(shown.len()));
                return Err(PublishError::PairTooLong(shown));
            }
        }
        Ok(())
    }
}

/// What a leaf tells the supernode when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Addresses the leaf accepts connections on (at most [`MAX_LISTEN_ADDRS`]).
    pub listen: Vec<std::net::SocketAddr>,
    /// Whether others can connect to it (false behind a NAT it cannot open).
    pub accepts_inbound: bool,
    /// Software name and version, for the operator's curiosity.
    pub agent: String,
}

/// Updates a leaf sends on its session stream after joining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeafUpdate {
    /// Files now shared (the initial list comes as several of these).
    Add { files: Vec<FileEntry> },
    /// Files no longer shared.
    Remove { hashes: Vec<ContentHash> },
}

/// What the supernode says on a leaf's session stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionNotice {
    /// Joined; at most `max_files` may be published.
    Welcome { max_files: u32 },
    /// No room here; try these supernodes instead.
    Full { others: Vec<PeerAddr> },
    /// A publish broke the limits; the session ends.
    Refused { reason: String },
    /// Other supernodes, for a leaf to fall back on if this one goes.
    Supernodes { others: Vec<PeerAddr> },
    /// Someone wants our files but cannot connect to us: connect to them.
    Push { requester: PeerAddr },
    /// This supernode is stepping down (a demotion or a shutdown): the
    /// session ends, and these supernodes can take the leaf instead.
    Leaving { others: Vec<PeerAddr> },
    /// Someone wants our files and one of our two routers gives every peer
    /// a new port ([`crate::proto::birthday`]). `spray`: send probes to
    /// random ports of the requester's IP from our listening port; the
    /// requester dials us. Otherwise: open sockets towards the requester's
    /// address, and dial it from the one its probe reaches. Sent only to
    /// leaves that said they speak it (`Request::Traits`).
    Birthday { requester: PeerAddr, spray: bool },
}

/// A search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Words to match in names and metadata (all must match). May be empty
    /// when `hash` is given.
    pub text: String,
    /// Only this content (to find sources for a known hash).
    pub hash: Option<ContentHash>,
    pub kind: Option<FileKind>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// At most this many hits (capped at [`MAX_HITS`]).
    pub max_hits: u16,
    /// How many supernode hops the search may travel (capped by each
    /// supernode; `None`: the supernode's default).
    pub ttl: Option<u8>,
}

impl Query {
    /// A search for `text` with no filters: up to 50 hits, default TTL.
    pub fn words(text: impl Into<String>) -> Self {
        Query {
            text: text.into(),
            hash: None,
            kind: None,
            min_size: None,
            max_size: None,
            max_hits: 50,
            ttl: None,
        }
    }

    /// A search for the sources of one known file.
    pub fn for_hash(hash: ContentHash) -> Self {
        Query {
            hash: Some(hash),
            max_hits: 1,
            ..Query::words("")
        }
    }

    pub fn check(&self) -> Result<(), QueryError> {
        if self.text.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong(self.text.len()));
        }
        if self.text.trim().is_empty() && self.hash.is_none() {
            return Err(QueryError::Empty);
        }
        Ok(())
    }
}

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("search text of {0} bytes is over {MAX_QUERY_LEN} bytes")]
    TooLong(usize),
    #[error("empty search")]
    Empty,
}

/// Why a hit from another supernode was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HitError {
    #[error("hit name of {0} bytes is over {MAX_NAME_LEN} bytes")]
    NameTooLong(usize),
    #[error("hit with {0} sources, over {MAX_SOURCES_PER_HIT}")]
    TooManySources(usize),
}

/// One file found, with the peers that share it. Hits arrive best first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub hash: ContentHash,
    pub size: u64,
    pub name: String,
    pub kind: FileKind,
    /// Up to [`MAX_SOURCES_PER_HIT`] sources.
    pub sources: Vec<PeerAddr>,
    /// How many sources the answering supernode knows in all.
    pub source_count: u32,
    /// Sources that accept no inbound connections: reach them by asking
    /// the supernode given with each ([`crate::proto::Request::Push`]).
    pub relayed: Vec<RelayedSource>,
}

impl Hit {
    /// Checks a hit from another supernode against the caps our own hits
    /// keep, so a neighbour cannot pass oversized hits on to our leaves.
    pub fn check(&self) -> Result<(), HitError> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(HitError::NameTooLong(self.name.len()));
        }
        let most = self.sources.len().max(self.relayed.len());
        if most > MAX_SOURCES_PER_HIT {
            return Err(HitError::TooManySources(most));
        }
        Ok(())
    }
}

/// Most tags shown with a search result ([`FileTags`]).
pub const MAX_SHOWN_TAGS: usize = 4;
/// Longest tag key shown with a result, in bytes.
pub const MAX_SHOWN_TAG_KEY_LEN: usize = 16;
/// Longest tag value shown with a result, in bytes (longer ones are cut
/// at a character boundary).
pub const MAX_SHOWN_TAG_VALUE_LEN: usize = 96;
/// The tags shown with a result, in this order, when a file has them.
pub const SHOWN_TAG_KEYS: [&str; 6] = ["artist", "title", "album", "year", "genre", "duration"];

/// What a search result shows of a file's tags (artist, title, …): at
/// most [`MAX_SHOWN_TAGS`] short pairs, picked by [`FileTags::shown`] from
/// what its publisher sent. Supernodes give them with the votes on a
/// search's files ([`crate::proto::Response::Notes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTags {
    pub hash: ContentHash,
    pub tags: Vec<(String, String)>,
}

impl FileTags {
    /// The pairs of `meta` a result shows: those of [`SHOWN_TAG_KEYS`], in
    /// that order, values cut to [`MAX_SHOWN_TAG_VALUE_LEN`] bytes, empty
    /// ones left out.
    pub fn shown(meta: &[(String, String)]) -> Vec<(String, String)> {
        let mut shown = Vec::new();
        for key in SHOWN_TAG_KEYS {
            let Some((_, value)) = meta
                .iter()
                .find(|(k, v)| k.eq_ignore_ascii_case(key) && !v.trim().is_empty())
            else {
                continue;
            };
            let mut end = value.trim().len().min(MAX_SHOWN_TAG_VALUE_LEN);
            while !value.trim().is_char_boundary(end) {
                end -= 1;
            }
            shown.push((key.to_string(), value.trim()[..end].to_string()));
            if shown.len() == MAX_SHOWN_TAGS {
                break;
            }
        }
        shown
    }

    /// Whether tags from a stranger keep the bounds above.
    pub fn check(&self) -> bool {
        self.tags.len() <= MAX_SHOWN_TAGS
            && (self.tags.iter())
                .all(|(k, v)| k.len() <= MAX_SHOWN_TAG_KEY_LEN && v.len() <= MAX_SHOWN_TAG_VALUE_LEN)
    }
}

/// A firewalled source and the supernode that can ask it to call out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedSource {
    pub leaf: super::id::PeerId,
    pub via: PeerAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_names() {
        assert_eq!(FileKind::from_name("Song.MP3"), FileKind::Audio);
        assert_eq!(FileKind::from_name("film.mkv"), FileKind::Video);
        assert_eq!(FileKind::from_name("README"), FileKind::Other);
        assert_eq!("Audio".parse::<FileKind>().unwrap(), FileKind::Audio);
        assert!("sound".parse::<FileKind>().is_err());
    }

    #[test]
    fn results_show_a_few_short_tags_in_a_fixed_order() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let long = "é".repeat(100); // 200 bytes
        let meta = [
            pair("comment", "ripped by me"),
            pair("Title", "Feeling Good"),
            pair("artist", " Nina Simone "),
            pair("album", &long),
            pair("year", ""),
            pair("genre", "Jazz"),
            pair("duration", "2:57"),
        ];
        let shown = FileTags::shown(&meta);
        assert_eq!(shown.len(), MAX_SHOWN_TAGS);
        assert_eq!(shown[0], pair("artist", "Nina Simone"));
        assert_eq!(shown[1], pair("title", "Feeling Good"));
        assert_eq!(
            shown[2].1.len(),
            MAX_SHOWN_TAG_VALUE_LEN,
            "cut on a character boundary"
        );
        assert_eq!(shown[3], pair("genre", "Jazz"), "an empty year is left out");
        let tags = FileTags {
            hash: ContentHash([1; 32]),
            tags: shown,
        };
        assert!(tags.check());
        let mut over = tags.clone();
        over.tags.push(pair("duration", "2:57"));
        assert!(!over.check());
    }

    #[test]
    fn entries_are_bounded() {
        let mut entry = FileEntry {
            hash: ContentHash([0; 32]),
            size: 1,
            name: "a".repeat(MAX_NAME_LEN),
            kind: FileKind::Other,
            meta: vec![("artist".into(), "x".into())],
        };
        assert!(entry.check().is_ok());
        entry.name.push('a');
        assert_eq!(entry.check(), Err(PublishError::NameTooLong(MAX_NAME_LEN + 1)));
        entry.name.pop();
        entry.meta.push(("k".into(), "v".repeat(MAX_META_VALUE_LEN + 1)));
        assert!(matches!(entry.check(), Err(PublishError::PairTooLong(_))));
    }
}
