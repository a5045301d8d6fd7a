//! Length-prefixed postcard frames for control messages.
//!
//! A frame is a 4-byte big-endian body length followed by the postcard body.
//! The length is checked against a hard cap *before* any buffer is sized
//! from it, so a peer cannot make us allocate by announcing a huge frame.
//! The decoder is sans-IO: hand it whatever bytes have arrived and it says
//! "need more", "here is a message", or why the bytes are unacceptable.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest control frame body we send or accept.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;
/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("frame has {0} bytes left over after its message")]
    TrailingBytes(usize),
    #[error("frame is not in canonical form (e.g. an over-long integer)")]
    NonCanonical,
}

/// Encodes `message` as one frame (prefix and body).
pub fn encode<T: Serialize>(message: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; LEN_PREFIX];
    frame = postcard::to_extend(message, frame)?;
    let len = frame.len() - LEN_PREFIX;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    frame[..LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Bytes a message wrapping a list may add around the list itself (its
/// variant tag, the list's length, small fields such as a query id).
pub const ENVELOPE_ALLOWANCE: usize = 64;

/// Splits `items` into batches that each fit one frame of at most `max`
/// bytes once wrapped in a message (see [`ENVELOPE_ALLOWANCE`]), keeping
/// their order. Counting items per frame is not enough: entries within
/// every field cap vary from tens of bytes to kilobytes. An item that
/// cannot fit even alone is left out (the field caps make that impossible
/// for every message we send).
pub fn batches<T: Serialize + Clone>(items: &[T], max: usize) -> Vec<Vec<T>> {
    let budget = max.saturating_sub(ENVELOPE_ALLOWANCE);
    let mut batches = Vec::new();
    let (mut batch, mut used) = (Vec::new(), 0);
    for item in items {
        let Ok(size) = postcard::to_allocvec(item).map(|bytes| bytes.len()) else {
            continue;
        };
        if size > budget {
            continue;
        }
        if used + size > budget {
            batches.push(std::mem::take(&mut batch));
            used = 0;
        }
        batch.push(item.clone());
        used += size;
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Reads the body length from a prefix, refusing anything over `max`.
pub fn body_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a complete frame body. Every byte must belong to the message,
/// and the bytes must be the one canonical encoding of it: postcard accepts
/// over-long varints, and letting two byte strings mean one message would
/// make frames unfit to hash, sign or compare.
pub fn decode_body<T: Serialize + DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (message, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    if postcard::to_allocvec(&message)? != body {
        return Err(FrameError::NonCanonical);
    }
    Ok(message)
}

/// Decodes the first frame in `buf`: `Ok(None)` if more bytes are needed,
/// otherwise the message and how many bytes it used.
pub fn decode<T: Serialize + DeserializeOwned>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = body_len(prefix.try_into().expect("slice of LEN_PREFIX"), max)?;
    let Some(body) = buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, LEN_PREFIX + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::Request;
    use crate::proto::ContentHash;

    #[test]
    fn batches_of_the_largest_legal_entries_each_fit_one_frame() {
        use crate::proto::search::{FileEntry, FileKind, LeafUpdate, MAX_META_KEY_LEN, MAX_META_PAIRS};
        use crate::proto::search::{MAX_META_VALUE_LEN, MAX_NAME_LEN};
        let largest = |i: u8| FileEntry {
            hash: ContentHash([i; 32]),
            size: u64::MAX,
            name: "n".repeat(MAX_NAME_LEN),
            kind: FileKind::Audio,
            meta: vec![("k".repeat(MAX_META_KEY_LEN), "v".repeat(MAX_META_VALUE_LEN)); MAX_META_PAIRS],
        };
        let entries: Vec<FileEntry> = (0..100).map(largest).collect();
        assert!(
            entries.iter().all(|e| e.check().is_ok()),
            "each entry is within its caps"
        );
        // A hundred of them in one frame would not fit.
        assert!(encode(
            &LeafUpdate::Add {
                files: entries.clone()
            },
            MAX_CONTROL_FRAME
        )
        .is_err());
        let batches = batches(&entries, MAX_CONTROL_FRAME);
        assert!(batches.len() > 1);
        for files in &batches {
            encode(&LeafUpdate::Add { files: files.clone() }, MAX_CONTROL_FRAME).expect("each batch fits");
        }
        let rejoined: Vec<FileEntry> = batches.concat();
        assert_eq!(rejoined, entries, "nothing lost, order kept");
    }

    #[test]
    fn oversize_prefix_is_refused_before_reading_the_body() {
        let prefix = (MAX_CONTROL_FRAME as u32 + 1).to_be_bytes();
        assert_eq!(
            decode::<Request>(&prefix, MAX_CONTROL_FRAME),
            Err(FrameError::TooLarge {
                len: MAX_CONTROL_FRAME + 1,
                max: MAX_CONTROL_FRAME
            })
        );
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let frame = encode(
            &Request::BlockLayer {
                hash: ContentHash([1; 32]),
            },
            1024,
        )
        .unwrap();
        for cut in 0..frame.len() {
            assert_eq!(decode::<Request>(&frame[..cut], 1024), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_and_trailing_bytes_are_typed_errors() {
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode::<Request>(&garbage, 1024),
            Err(FrameError::Malformed(_))
        ));

        let mut frame = encode(
            &Request::BlockLayer {
                hash: ContentHash([1; 32]),
            },
            1024,
        )
        .unwrap();
        frame.push(0);
        let len = (frame.len() - LEN_PREFIX) as u32;
        frame[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode::<Request>(&frame, 1024), Err(FrameError::TrailingBytes(1)));
    }

    #[test]
    fn over_long_integers_are_refused() {
        // Found by the fuzzer: `Blocks { first: 0, count: 122 }` with the
        // count written as two varint bytes (0xfa 0x00) instead of one (0x7a).
        use crate::proto::wire::Response;
        let canonical = [0, 0, 0, 3, 1, 0, 0x7a];
        assert_eq!(
            decode::<Response>(&canonical, 1024).unwrap().unwrap().0,
            Response::Blocks { first: 0, count: 122 }
        );
        let over_long = [0, 0, 0, 4, 1, 0, 0xfa, 0];
        assert_eq!(
            decode::<Response>(&over_long, 1024),
            Err(FrameError::NonCanonical)
        );
    }

    #[test]
    fn encoder_respects_the_cap() {
        let big = crate::proto::wire::Response::BadRequest {
            reason: "x".repeat(100),
        };
        assert!(matches!(encode(&big, 10), Err(FrameError::TooLarge { .. })));
    }
}
