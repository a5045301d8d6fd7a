//! Shareable `canopy:` links.
//!
//! ```text
//! canopy:<64 hex hash>?size=<bytes>&name=<percent-encoded name>&src=<PEERID@IP:PORT>&src=…
//! ```
//!
//! Only the hash is required; it alone decides what is fetched, so a link
//! with a wrong name or size cannot make a download accept other bytes.
//! Unknown parameters are ignored so later versions can add some.

use std::fmt;
use std::str::FromStr;

use super::id::{ContentHash, PeerAddr};

pub const SCHEME: &str = "canopy:";
/// Longest link accepted.
pub const MAX_LINK_LEN: usize = 4096;
/// Longest file name a link may carry, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most sources a link may carry.
pub const MAX_LINK_SOURCES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub hash: ContentHash,
    pub size: Option<u64>,
    pub name: Option<String>,
    pub sources: Vec<PeerAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("a link starts with {SCHEME}")]
    Scheme,
    #[error("link is longer than {MAX_LINK_LEN} characters")]
    TooLong,
    #[error("bad content hash in link: {0}")]
    Hash(String),
    #[error("bad {key} in link: {value:?}")]
    Param { key: &'static str, value: String },
}

impl Link {
    pub fn new(hash: ContentHash) -> Self {
        Link {
            hash,
            size: None,
            name: None,
            sources: Vec::new(),
        }
    }

    /// The name as a safe file name in the current folder: no separators,
    /// no parent references, no control characters. `None` if nothing
    /// usable is left.
    pub fn file_name(&self) -> Option<String> {
        let name = self.name.as_ref()?;
        let cleaned: String = name
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let cleaned = cleaned.trim().trim_start_matches('.').to_string();
        (!cleaned.is_empty()).then_some(cleaned)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.hash)?;
        let mut separator = '?';
        let mut param = |f: &mut fmt::Formatter<'_>, key: &str, value: &str| {
            let result = write!(f, "{separator}{key}={value}");
            separator = '&';
            result
        };
        if let Some(size) = self.size {
            param(f, "size", &size.to_string())?;
        }
        if let Some(name) = &self.name {
            param(f, "name", &percent_encode(name))?;
        }
        for source in &self.sources {
            param(f, "src", &source.to_string())?;
        }
        Ok(())
    }
}

impl FromStr for Link {
    type Err = LinkError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_LINK_LEN {
            return Err(LinkError::TooLong);
        }
        let rest = text.strip_prefix(SCHEME).ok_or(LinkError::Scheme)?;
        let (hash, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hash = hash.parse().map_err(|_| LinkError::Hash(hash.to_string()))?;
        let mut link = Link::new(hash);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |key: &'static str| LinkError::Param {
                key,
                value: value.to_string(),
            };
            match key {
                "size" => link.size = Some(value.parse().map_err(|_| bad("size"))?),
                "name" => {
                    let name = percent_decode(value).ok_or_else(|| bad("name"))?;
                    if name.len() > MAX_NAME_LEN {
                        return Err(bad("name"));
                    }
                    link.name = Some(name);
                }
                "src" => {
                    if link.sources.len() >= MAX_LINK_SOURCES {
                        return Err(bad("src"));
                    }
                    link.sources.push(value.parse().map_err(|_| bad("src"))?);
                }
                _ => {}
            }
        }
        Ok(link)
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (as a space); `None` if an escape is
/// malformed or the result is not UTF-8. Shared with the node's HTTP server.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::PeerId;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn links_round_trip(hash in any::<[u8; 32]>(), size in proptest::option::of(any::<u64>()),
                            name in proptest::option::of("\\PC{0,60}"), port in any::<u16>()) {
            let link = Link {
                hash: ContentHash(hash),
                size,
                name,
                sources: vec![PeerAddr::new(PeerId(hash), ([127, 0, 0, 1], port).into())],
            };
            prop_assert_eq!(link.to_string().parse::<Link>().unwrap(), link);
        }

        #[test]
        fn parsing_never_panics(text in "canopy:\\PC{0,200}") {
            let _ = text.parse::<Link>();
        }
    }

    #[test]
    fn names_become_safe_file_names() {
        let mut link = Link::new(ContentHash([0; 32]));
        link.name = Some("../../etc/passwd".into());
        assert_eq!(link.file_name().unwrap(), "_.._etc_passwd");
        link.name = Some("..".into());
        assert_eq!(link.file_name(), None);
        link.name = Some("Song – Ünïcode.ogg".into());
        assert_eq!(link.file_name().unwrap(), "Song – Ünïcode.ogg");
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        assert_eq!("magnet:?xt=1".parse::<Link>(), Err(LinkError::Scheme));
        assert!(matches!("canopy:abc".parse::<Link>(), Err(LinkError::Hash(_))));
        let hash = ContentHash([1; 32]);
        assert!(matches!(
            format!("canopy:{hash}?size=big").parse::<Link>(),
            Err(LinkError::Param { key: "size", .. })
        ));
        let ok: Link = format!("canopy:{hash}?future=1&name=a%20b").parse().unwrap();
        assert_eq!(ok.name.as_deref(), Some("a b"));
    }
}
