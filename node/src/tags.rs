//! Tags inside shared files, published as metadata so searches can match an
//! artist or album, not just a file name.
//!
//! Reads ID3v1 (the 128-byte trailer of MP3 files) and the text frames of
//! ID3v2.3/2.4 (the header most MP3s carry today). Anything unreadable
//! simply yields no tags.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use canopy_common::proto::search::{MAX_META_PAIRS, MAX_META_VALUE_LEN};

/// ID3v2 frames we publish, and the names we publish them under.
const ID3V2_FRAMES: [(&[u8; 4], &str); 5] = [
    (b"TIT2", "title"),
    (b"TPE1", "artist"),
    (b"TALB", "album"),
    (b"TYER", "year"),
    (b"TDRC", "year"),
];
/// Most bytes of an ID3v2 tag we read.
const MAX_ID3V2_LEN: usize = 64 * 1024;

/// Tags of the file at `path` (empty if it has none we read).
pub fn read(path: &Path) -> Vec<(String, String)> {
    let is_mp3 = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("mp3"));
    if !is_mp3 {
        return Vec::new();
    }
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let mut tags = id3v2(&mut file).unwrap_or_default();
    if tags.is_empty() {
        tags = id3v1(&mut file).unwrap_or_default();
    }
    tags.retain(|(_, value)| !value.is_empty());
    for (_, value) in &mut tags {
        truncate(value, MAX_META_VALUE_LEN);
    }
    tags.truncate(MAX_META_PAIRS);
    tags
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

fn latin1(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end]
        .iter()
        .map(|&b| b as char)
        .collect::<String>()
        .trim()
        .to_string()
}

fn id3v1(file: &mut File) -> Option<Vec<(String, String)>> {
    let len = file.metadata().ok()?.len();
    if len < 128 {
        return None;
    }
    file.seek(SeekFrom::End(-128)).ok()?;
    let mut tag = [0u8; 128];
    file.read_exact(&mut tag).ok()?;
    if &tag[..3] != b"TAG" {
        return None;
    }
    Some(vec![
        ("title".into(), latin1(&tag[3..33])),
        ("artist".into(), latin1(&tag[33..63])),
        ("album".into(), latin1(&tag[63..93])),
        ("year".into(), latin1(&tag[93..97])),
    ])
}

fn id3v2(file: &mut File) -> Option<Vec<(String, String)>> {
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut header = [0u8; 10];
    file.read_exact(&mut header).ok()?;
    if &header[..3] != b"ID3" || !(3..=4).contains(&header[3]) {
        return None;
    }
    let version = header[3];
    let size = syncsafe(&header[6..10]).min(MAX_ID3V2_LEN);
    let mut body = vec![0u8; size];
    file.read_exact(&mut body).ok()?;
    let mut tags = Vec::new();
    let mut at = 0;
    while at + 10 <= body.len() {
        let id = &body[at..at + 4];
        if id[0] == 0 {
            break; // padding
        }
        let frame_len = if version == 4 {
            syncsafe(&body[at + 4..at + 8])
        } else {
            u32::from_be_bytes(body[at + 4..at + 8].try_into().ok()?) as usize
        };
        let start = at + 10;
        let end = start.checked_add(frame_len)?.min(body.len());
        if let Some((_, name)) = ID3V2_FRAMES.iter().find(|(frame, _)| frame.as_slice() == id) {
            if let Some(text) = decode_text(&body[start..end]) {
                tags.push((name.to_string(), text));
            }
        }
        at = end;
    }
    Some(tags)
}

fn syncsafe(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 7) | usize::from(b & 0x7f))
}

/// An ID3v2 text frame: an encoding byte, then the text.
fn decode_text(frame: &[u8]) -> Option<String> {
    let (&encoding, text) = frame.split_first()?;
    let decoded = match encoding {
        0 => latin1(text),
        3 => String::from_utf8_lossy(text)
            .trim_end_matches('\0')
            .trim()
            .to_string(),
        1 | 2 => {
            let (units, big_endian) = match text {
                [0xfe, 0xff, rest @ ..] => (rest, true),
                [0xff, 0xfe, rest @ ..] => (rest, false),
                rest => (rest, encoding == 2),
            };
            let words: Vec<u16> = units
                .chunks_exact(2)
                .map(|pair| {
                    if big_endian {
                        u16::from_be_bytes([pair[0], pair[1]])
                    } else {
                        u16::from_le_bytes([pair[0], pair[1]])
                    }
                })
                .take_while(|&unit| unit != 0)
                .collect();
            String::from_utf16_lossy(&words).trim().to_string()
        }
        _ => return None,
    };
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_id3v1_and_id3v2() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("old.mp3");
        let mut bytes = vec![0u8; 1000];
        let mut tag = vec![0u8; 128];
        tag[..3].copy_from_slice(b"TAG");
        tag[3..8].copy_from_slice(b"Title");
        tag[33..44].copy_from_slice(b"Nina Simone");
        bytes.extend(tag);
        std::fs::write(&v1, bytes).unwrap();
        let tags = read(&v1);
        assert!(
            tags.contains(&("artist".into(), "Nina Simone".into())),
            "{tags:?}"
        );

        let v2 = dir.path().join("new.mp3");
        let mut frame = vec![3u8];
        frame.extend_from_slice("Björk".as_bytes());
        let mut body = b"TPE1".to_vec();
        body.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&frame);
        let mut file = b"ID3\x03\x00\x00".to_vec();
        file.extend_from_slice(&[0, 0, 0, body.len() as u8]);
        file.extend_from_slice(&body);
        file.extend_from_slice(&[0xff; 100]);
        std::fs::write(&v2, file).unwrap();
        assert_eq!(read(&v2), vec![("artist".to_string(), "Björk".to_string())]);

        let not_audio = dir.path().join("x.txt");
        std::fs::write(&not_audio, b"TAG").unwrap();
        assert!(read(&not_audio).is_empty());
    }
}
