//! Links in and out of the desktop app: what a user pastes (or drops) into
//! the page, read as `canopy:` links or bare content hashes, and the link
//! the app offers to copy for a result, a download or a shared file.
//!
//! The link format itself is `canopy_common::proto::link` (PROTOCOL.md,
//! section 7.6); this module only splits a paste into items, within bounds.

use canopy_common::proto::link::{Link, SCHEME};
use canopy_common::proto::ContentHash;

/// Most items one paste may hold.
pub const MAX_PASTED: usize = 100;
/// How much of a refused item is echoed back in the answer.
pub const ECHO: usize = 80;

/// One item of a paste that is not a link or a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The item as pasted (cut to [`ECHO`] characters).
    pub text: String,
    pub error: String,
}

/// Why a paste as a whole is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasteError {
    #[error("nothing to download: paste canopy: links or content hashes")]
    Empty,
    #[error("{0} links at once; at most {MAX_PASTED}")]
    TooMany(usize),
}

/// Splits a paste into links: items are separated by white space (a link's
/// name is percent-encoded, so it holds none). Each item is a `canopy:` link
/// or a 64-hex-digit content hash; the same content twice is kept once.
/// Returns the links in the order pasted and the items refused, with why.
pub fn parse_pasted(text: &str) -> Result<(Vec<Link>, Vec<Refused>), PasteError> {
    let items: Vec<&str> = text.split_whitespace().collect();
    if items.is_empty() {
        return Err(PasteError::Empty);
    }
    if items.len() > MAX_PASTED {
        return Err(PasteError::TooMany(items.len()));
    }
    let mut links: Vec<Link> = Vec::new();
    let mut refused = Vec::new();
    for item in items {
        // Links copied out of HTML or Markdown often keep their brackets.
        let item = item.trim_matches(|c| matches!(c, '<' | '>' | '"' | '\'' | '(' | ')'));
        match parse_item(item) {
            Ok(link) => {
                if !links.iter().any(|known| known.hash == link.hash) {
                    links.push(link);
                }
            }
            Err(error) => refused.push(Refused {
                text: echo(item),
                error,
            }),
        }
    }
    Ok((links, refused))
}

fn parse_item(item: &str) -> Result<Link, String> {
    let lower = item.get(..SCHEME.len()).map(str::to_ascii_lowercase);
    if lower.as_deref() == Some(SCHEME) {
        let normal = format!("{SCHEME}{}", &item[SCHEME.len()..]);
        return normal.parse::<Link>().map_err(|error| error.to_string());
    }
    item.parse::<ContentHash>()
        .map(Link::new)
        .map_err(|_| "not a canopy: link or a content hash (64 hex digits)".to_string())
}

fn echo(item: &str) -> String {
    if item.chars().count() <= ECHO {
        return item.to_string();
    }
    let mut cut: String = item.chars().take(ECHO).collect();
    cut.push('…');
    cut
}

/// The link the app offers for a file: hash, size and name, no sources
/// (whoever opens it finds them by a hash search, as for a search result).
pub fn link_for(hash: ContentHash, name: Option<&str>, size: Option<u64>) -> String {
    let mut link = Link::new(hash);
    link.size = size;
    link.name = name
        .filter(|name| !name.is_empty())
        .map(|name| cut_name(name).to_string());
    link.to_string()
}

/// A name cut (at a character boundary) to what a link may carry.
fn cut_name(name: &str) -> &str {
    let max = canopy_common::proto::link::MAX_NAME_LEN;
    if name.len() <= max {
        return name;
    }
    let mut end = max;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    #[test]
    fn a_paste_holds_links_and_hashes_separated_by_any_white_space() {
        let other = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        let text = format!(
            "  canopy:{HASH}?size=3&name=a%20b.ogg \n\t{}\r\n<canopy:{other}>  ",
            other.to_uppercase()
        );
        let (links, refused) = parse_pasted(&text).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(links.len(), 2, "the same hash twice is kept once");
        assert_eq!(links[0].hash.to_hex(), HASH);
        assert_eq!(links[0].name.as_deref(), Some("a b.ogg"));
        assert_eq!(links[0].size, Some(3));
        assert_eq!(links[1].hash.to_hex(), other);
        assert_eq!(links[1].name, None);
    }

    #[test]
    fn bad_items_are_refused_one_by_one_with_why() {
        let long = "x".repeat(500);
        let text = format!("canopy:{HASH} canopy:1234 {long} CANOPY:{HASH}?size=big");
        let (links, refused) = parse_pasted(&text).unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].error.contains("hash"), "{refused:?}");
        assert!(refused[1].error.contains("content hash"), "{refused:?}");
        assert!(refused[1].text.chars().count() <= ECHO + 1);
        assert!(refused[2].error.contains("size"), "{refused:?}");
    }

    #[test]
    fn a_paste_is_bounded() {
        assert_eq!(parse_pasted(" \n "), Err(PasteError::Empty));
        let many = vec![HASH; MAX_PASTED + 1].join("\n");
        assert_eq!(parse_pasted(&many), Err(PasteError::TooMany(MAX_PASTED + 1)));
        let enough = vec![HASH; MAX_PASTED].join("\n");
        assert_eq!(parse_pasted(&enough).unwrap().0.len(), 1);
        let too_long = format!("canopy:{HASH}?name={}", "a".repeat(5000));
        let (_, refused) = parse_pasted(&too_long).unwrap();
        assert!(refused[0].error.contains("longer"), "{refused:?}");
    }

    #[test]
    fn offered_links_parse_back_to_what_they_name() {
        let hash: ContentHash = HASH.parse().unwrap();
        let text = link_for(hash, Some("Nina Simone – Live (1968).ogg"), Some(3));
        assert_eq!(
            text,
            format!("canopy:{HASH}?size=3&name=Nina%20Simone%20%E2%80%93%20Live%20%281968%29.ogg")
        );
        let (links, _) = parse_pasted(&text).unwrap();
        assert_eq!(links[0].name.as_deref(), Some("Nina Simone – Live (1968).ogg"));
        assert_eq!(link_for(hash, None, None), format!("canopy:{HASH}"));
        // A name over the limit is cut at a character boundary, still parses.
        let long = "é".repeat(200);
        let (links, refused) = parse_pasted(&link_for(hash, Some(&long), None)).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        assert!(links[0].name.as_ref().unwrap().len() <= 255);
    }
}
