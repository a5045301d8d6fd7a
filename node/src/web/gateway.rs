//! The HTTP gateway: `GET /content/HASH` serves a shared file to anything
//! that speaks HTTP (curl, wget, aria2c, a browser), as FastTrack nodes
//! served their files over plain HTTP.
//!
//! Off unless configured (`--gateway HOST:PORT`). The file is found in the
//! node's share table by its content hash and served only while it is
//! unchanged since it was hashed, so what is served is what the hash names;
//! nothing in the request is ever used as a path. `GET` and `HEAD`, one
//! `Range: bytes=` range (206 with `Content-Range`; 416 when it lies past
//! the end; a list of ranges is answered with the whole file), `ETag` (the
//! hash) with `If-None-Match`, and `Content-Disposition` with the file name.
//! Audio, video and raster images are served inline with their media type
//! (by the name's extension), so a browser plays or shows them; anything
//! else is `application/octet-stream` and an attachment.
//! Uploads through the gateway share the node's upload rate cap.

use std::io::SeekFrom;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use canopy_common::proto::ContentHash;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::{status_line, Handler, Request, Response};
use crate::share::SharedFile;
use crate::state::NodeState;

/// Bytes read from disk per write.
const CHUNK: usize = 64 * 1024;
/// A client that takes no chunk for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves shared content by hash.
pub struct Gateway {
    pub context: Arc<NodeState>,
}

impl Handler for Gateway {
    async fn handle(&self, request: Request, mut stream: TcpStream) {
        let head_only = request.method == "HEAD";
        if request.method != "GET" && !head_only {
            let _ = Response::text(405, "Method Not Allowed", "only GET and HEAD\n")
                .with_header("Allow", "GET, HEAD")
                .send(&mut stream, false)
                .await;
            return;
        }
        let Some(hash) = request
            .path
            .strip_prefix("/content/")
            .and_then(|hex| hex.parse::<ContentHash>().ok())
        else {
            let _ = Response::text(404, "Not Found", "ask for /content/HASH (64 hex digits)\n")
                .send(&mut stream, head_only)
                .await;
            return;
        };
        let Some(shared) = self.context.shares.get(&hash).filter(|f| f.unchanged_on_disk()) else {
            let _ = Response::text(404, "Not Found", "this node does not share that content\n")
                .send(&mut stream, head_only)
                .await;
            return;
        };
        if let Err(error) = serve_file(&self.context, &request, &shared, &mut stream, Uploads::Capped).await {
            tracing::debug!(peer = %request.peer, %error, "gateway transfer ended");
        }
    }
}

/// Whether bytes served count against the node's upload cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploads {
    /// Sent to someone else: within the cap, counted as uploaded.
    Capped,
    /// Played on this machine by its own user ([`super::play`]).
    Local,
}

/// Answers `request` (`GET` or `HEAD`, perhaps a `Range`) with `shared`,
/// a complete file this node holds.
pub async fn serve_file(
    context: &NodeState,
    request: &Request,
    shared: &SharedFile,
    stream: &mut TcpStream,
    uploads: Uploads,
) -> std::io::Result<()> {
    let hash = shared.hash();
    let name = shared
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| hash.to_hex());
    let Some(head) = answer_head(request, hash, &name, shared.size, stream).await? else {
        return Ok(());
    };
    let mut file = tokio::fs::File::open(&shared.path).await?;
    write(stream, head.text.as_bytes()).await?;
    if head.only {
        return stream.shutdown().await;
    }
    file.seek(SeekFrom::Start(head.body.start)).await?;
    let mut left = head.body.end - head.body.start;
    let mut buffer = vec![0u8; CHUNK];
    while left > 0 {
        let want = (left as usize).min(CHUNK);
        if let (Uploads::Capped, Some(limiter)) = (uploads, context.limiter.active()) {
            limiter.acquire(want).await;
        }
        file.read_exact(&mut buffer[..want]).await?;
        write(stream, &buffer[..want]).await?;
        if uploads == Uploads::Capped {
            context.stats.bytes_sent.fetch_add(want as u64, Ordering::Relaxed);
        }
        left -= want as u64;
    }
    stream.shutdown().await
}

/// The head of a successful answer, and which bytes its body holds.
pub struct Head {
    pub text: String,
    pub body: Range<u64>,
    /// `HEAD`: no body follows.
    pub only: bool,
}

/// Works out the answer to `request` for `size` bytes of `hash`, named
/// `name`. Answers it at once when no body follows from the content (304
/// for a matching `If-None-Match`, 416 for a range past the end) and
/// returns `None`; otherwise the head to send before the body.
pub async fn answer_head(
    request: &Request,
    hash: ContentHash,
    name: &str,
    size: u64,
    stream: &mut TcpStream,
) -> std::io::Result<Option<Head>> {
    let only = request.method == "HEAD";
    let etag = format!("\"{}\"", hash.to_hex());
    if request
        .header("if-none-match")
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"))
    {
        let mut not_modified = Response::new(304, "Not Modified", "application/octet-stream", "");
        not_modified.headers.push(("ETag", etag));
        not_modified.send(stream, true).await?;
        return Ok(None);
    }
    let range = match request.header("range").map(|text| parse_range(text, size)) {
        None | Some(RangeRequest::Ignored) => None,
        Some(RangeRequest::Unsatisfiable) => {
            Response::text(416, "Range Not Satisfiable", "the range lies past the end\n")
                .with_header("Content-Range", format!("bytes */{size}"))
                .with_header("Accept-Ranges", "bytes")
                .send(stream, only)
                .await?;
            return Ok(None);
        }
        Some(RangeRequest::Satisfiable(range)) => Some(range),
    };
    let (mut text, body) = match &range {
        Some(range) => (
            status_line(206, "Partial Content")
                + &format!(
                    "Content-Range: bytes {}-{}/{size}\r\n",
                    range.start,
                    range.end - 1
                ),
            range.clone(),
        ),
        None => (status_line(200, "OK"), 0..size),
    };
    let media = media_type(name);
    text.push_str(&format!(
        "Content-Type: {}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\
         ETag: {etag}\r\nContent-Disposition: {}\r\nCache-Control: public, max-age=31536000, immutable\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        media.unwrap_or("application/octet-stream"),
        body.end - body.start,
        content_disposition(name, media.is_some())
    ));
    Ok(Some(Head { text, body, only }))
}

pub async fn write(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// One range, clamped to the file.
    Satisfiable(Range<u64>),
    /// A well-formed range that starts past the end (or an empty file).
    Unsatisfiable,
    /// Malformed, not bytes, or several ranges: answered with the whole file.
    Ignored,
}

/// Parses `bytes=A-B`, `bytes=A-` or `bytes=-N`.
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    let number = |text: &str| -> Option<u64> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Satisfiable(size.saturating_sub(n)..size),
            None => RangeRequest::Ignored,
        },
        (start, "") => match number(start) {
            Some(start) if start >= size => RangeRequest::Unsatisfiable,
            Some(start) => RangeRequest::Satisfiable(start..size),
            None => RangeRequest::Ignored,
        },
        (start, end) => match (number(start), number(end)) {
            (Some(start), Some(end)) if start > end => RangeRequest::Ignored,
            (Some(start), Some(_)) if start >= size => RangeRequest::Unsatisfiable,
            (Some(start), Some(end)) => RangeRequest::Satisfiable(start..end.min(size - 1) + 1),
            _ => RangeRequest::Ignored,
        },
    }
}

/// The media type of a file a browser can play or show by itself, by the
/// extension of its name; `None` for anything else. Only audio, video and
/// raster images: nothing that runs script (HTML, SVG, PDF) is served
/// inline, even from the gateway's own origin.
pub fn media_type(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "mp3" => "audio/mpeg",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "weba" => "audio/webm",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "ogv" => "video/ogg",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "avi" => "video/x-msvideo",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        _ => return None,
    })
}

/// `inline` (media a browser plays) or `attachment`, with an ASCII
/// fallback name and the exact name in RFC 5987 form.
fn content_disposition(name: &str, inline: bool) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Satisfiable(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Satisfiable(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Satisfiable(90..100));
        assert_eq!(parse_range("bytes=-500", 100), Satisfiable(0..100));
        assert_eq!(parse_range("bytes=50-500", 100), Satisfiable(50..100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=+1-2", 100), Ignored);
        assert_eq!(parse_range("bytes=99999999999999999999999-", 100), Ignored);
    }

    #[test]
    fn names_are_quoted_safely() {
        assert_eq!(
            content_disposition("a \"b\".mp3", false),
            "attachment; filename=\"a _b_.mp3\"; filename*=UTF-8''a%20%22b%22.mp3"
        );
        assert!(content_disposition("é\r\n", false).starts_with("attachment; filename=\"___"));
        assert!(content_disposition("song.mp3", true).starts_with("inline; filename=\"song.mp3\""));
    }

    #[test]
    fn media_is_typed_by_extension_and_nothing_scriptable_is() {
        assert_eq!(media_type("Song.MP3"), Some("audio/mpeg"));
        assert_eq!(media_type("a.b.ogg"), Some("audio/ogg"));
        assert_eq!(media_type("film.mp4"), Some("video/mp4"));
        assert_eq!(media_type("clip.webm"), Some("video/webm"));
        assert_eq!(media_type("photo.JPEG"), Some("image/jpeg"));
        for other in [
            "page.html",
            "page.htm",
            "logo.svg",
            "doc.pdf",
            "x.js",
            "README",
            "mp3",
            "a.bin",
        ] {
            assert_eq!(media_type(other), None, "{other}");
        }
    }
}
