//! The words a file can be found by, exactly as the supernode's index sees them.
//!
//! Keyword routing tables ([`super::qrp`]) must agree with the index on
//! what a "word" is: if the table hashed `Beyoncé` while the index folded
//! it to `beyonce`, a neighbour would prune a query its index could have
//! answered (a false negative, which routing must never have). So the
//! normalisation lives here, in `common`, and is a copy of the index's
//! tantivy analyzer (`supernode/src/index.rs`), step for step:
//!
//! 1. split on every character that is not alphanumeric (Unicode
//!    `char::is_alphanumeric`, as tantivy's `SimpleTokenizer`);
//! 2. drop pieces of [`MAX_WORD_BYTES`] bytes or more, measured *before*
//!    folding (tantivy's `RemoveLongFilter::limit(40)`);
//! 3. lower-case character by character (tantivy's `LowerCaser`, which
//!    ignores the final-sigma rule);
//! 4. fold to ASCII with the index's own table (`fold_table`, generated
//!    from tantivy's `AsciiFoldingFilter`).
//!
//! Routing adds one rule of its own: words shorter than [`MIN_WORD_CHARS`]
//! characters are left out of tables (they are in nearly every table and
//! would only fill it). A query word that short can therefore not rule a
//! neighbour out, and [`query_words`] leaves it out too; that costs a
//! little precision, never a result.
//!
//! The supernode's index tokenizes with [`pieces`] and [`normalise`] (a
//! small tantivy `Tokenizer` in `supernode/src/index.rs`), so the two agree
//! by construction.

mod fold_table;

use super::search::{FileEntry, Query};

/// Pieces this long in bytes (before folding) or longer are not words.
pub const MAX_WORD_BYTES: usize = 40;
/// Words shorter than this many characters stay out of routing tables.
pub const MIN_WORD_CHARS: usize = 2;

/// The index's words of `text`: lower-case, ASCII-folded, in order, with
/// repeats. Includes one-character words (the index keeps them).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    pieces(text).map(|(_, piece)| normalise(piece))
}

/// The raw pieces of `text` that become words, with their byte offsets:
/// steps 1 and 2 above. [`normalise`] makes each one a word. The index's
/// tokenizer is built on this pair, so it and the tables cannot disagree.
pub fn pieces(text: &str) -> impl Iterator<Item = (usize, &str)> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|piece| !piece.is_empty() && piece.len() < MAX_WORD_BYTES)
        .map(move |piece| (piece.as_ptr() as usize - text.as_ptr() as usize, piece))
}

/// Steps 3 and 4 above: one piece from [`pieces`] lower-cased and folded.
pub fn normalise(piece: &str) -> String {
    normalise_piece(piece)
}

/// The words routing tables carry for `text`: [`words`] without the short ones.
pub fn routing_words(text: &str) -> impl Iterator<Item = String> + '_ {
    words(text).filter(|word| word.chars().count() >= MIN_WORD_CHARS)
}

/// Every routing word of a shared file: its name and its metadata values,
/// the same text the index stores for it. Sorted, without repeats.
pub fn file_words(file: &FileEntry) -> Vec<String> {
    let mut all: Vec<String> = routing_words(&file.name)
        .chain(file.meta.iter().flat_map(|(_, value)| routing_words(value)))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The routing words a query needs every one of, or `None` when its words
/// cannot rule anyone out (a search by hash alone, or only short words).
pub fn query_words(query: &Query) -> Option<Vec<String>> {
    let mut all: Vec<String> = routing_words(&query.text).collect();
    all.sort_unstable();
    all.dedup();
    (!all.is_empty()).then_some(all)
}

fn normalise_piece(piece: &str) -> String {
    let mut lower = String::with_capacity(piece.len());
    if piece.is_ascii() {
        lower.push_str(&piece.to_ascii_lowercase());
        return lower;
    }
    for c in piece.chars() {
        lower.extend(c.to_lowercase());
    }
    let mut folded = String::with_capacity(lower.len());
    for c in lower.chars() {
        match fold(c) {
            Some(ascii) => folded.push_str(ascii),
            None => folded.push(c),
        }
    }
    folded
}

/// The ASCII text the index folds `c` to, if any.
fn fold(c: char) -> Option<&'static str> {
    if c.is_ascii() {
        return None;
    }
    fold_table::FOLDS
        .binary_search_by_key(&c, |&(from, _)| from)
        .ok()
        .map(|at| fold_table::FOLDS[at].1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ContentHash, FileKind};

    fn all(text: &str) -> Vec<String> {
        words(text).collect()
    }

    #[test]
    fn splits_lowers_and_folds_like_the_index() {
        assert_eq!(
            all("Beyoncé - Déjà_Vu (Live).MP3"),
            ["beyonce", "deja", "vu", "live", "mp3"]
        );
        assert_eq!(all("Straße ÆON œuvre"), ["strasse", "aeon", "oeuvre"]);
        // Non-Latin letters are alphanumeric: kept, lower-cased, not folded.
        assert_eq!(all("ΣΟΦΙΑ 東京 2024"), ["σοφια", "東京", "2024"]);
        // Fullwidth letters fold to ASCII.
        assert_eq!(all("ＡＢＣ"), ["abc"]);
    }

    #[test]
    fn long_pieces_are_measured_in_bytes_before_folding() {
        let ascii_39 = "a".repeat(39);
        assert_eq!(all(&format!("{ascii_39} {}", "b".repeat(40))), [ascii_39]);
        // 20 × 'é' is 40 bytes: dropped, though it would fold to 20 bytes.
        assert!(all(&"é".repeat(20)).is_empty());
    }

    #[test]
    fn routing_words_skip_single_characters_and_queries_may_be_unconstrained() {
        assert_eq!(routing_words("a b cd Ü").collect::<Vec<_>>(), ["cd"]);
        assert_eq!(query_words(&Query::words("x Y")), None);
        assert_eq!(query_words(&Query::for_hash(ContentHash([1; 32]))), None);
        assert_eq!(
            query_words(&Query::words("Live live LIVE Paris")),
            Some(vec!["live".to_string(), "paris".to_string()])
        );
    }

    #[test]
    fn a_file_is_found_by_its_name_and_metadata_values_not_keys() {
        let file = FileEntry {
            hash: ContentHash([0; 32]),
            size: 1,
            name: "Feeling Good.ogg".into(),
            kind: FileKind::Audio,
            meta: vec![("artist".into(), "Nina Simone".into())],
        };
        assert_eq!(file_words(&file), ["feeling", "good", "nina", "ogg", "simone"]);
    }

    #[test]
    fn pieces_carry_their_byte_offsets() {
        let text = "Déjà_Vu  x";
        let found: Vec<(usize, &str)> = pieces(text).collect();
        assert_eq!(found, [(0, "Déjà"), (7, "Vu"), (11, "x")]);
        for (offset, piece) in found {
            assert_eq!(&text[offset..offset + piece.len()], piece);
        }
    }

    #[test]
    fn the_fold_table_is_sorted_and_folds_to_ascii() {
        assert!(fold_table::FOLDS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(fold_table::FOLDS
            .iter()
            .all(|(from, to)| !from.is_ascii() && to.is_ascii()));
    }
}
