//! Play while downloading: the app's player endpoint,
//! `GET /api/play/HASH?key=KEY&name=NAME`.
//!
//! A browser's `<video>` or `<audio>` element pointed here plays a file
//! this node holds, is still fetching, or has not started to fetch: a file
//! not here yet is added to the downloads (found by a hash search, as a
//! pasted link is), and its bytes are sent as their blocks arrive, each
//! verified against the content hash before a byte of it is served. The
//! player's position steers the download ([`crate::download::focus`]): the
//! blocks it waits for are fetched before any other, so a film starts in
//! seconds and a seek to the last minute fetches the last minute next.
//! eMule's preview and qBittorrent's sequential mode do this by fetching
//! the whole file in order; steering by the player fetches only what is
//! watched first and leaves the rest to the usual order.
//!
//! Only the app's own user reaches this (loopback and the API key, as for
//! the rest of the API; `?key=` because a media element cannot send
//! headers). The public gateway ([`super::gateway`]) never starts a download
//! for a stranger: it serves only complete files.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_common::proto::ContentHash;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gateway::{self, answer_head, media_type, Uploads};
use super::http::{Request, Response};
use crate::download_manager::{Downloads, DownloadsError};
use crate::share::Content;
use crate::state::NodeState;

/// How long a player waits for a file not here yet to have a source that
/// proved its size (a hash search and a first connection take seconds;
/// a browser gives up on its own long before this).
const FIRST_SOURCE_WAIT: Duration = Duration::from_secs(60);
/// How long a player waits for the next block when none arrives at all
/// (the download paused, or lost every source): the answer then ends
/// short, and the player asks again from where it stopped.
const BLOCK_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting player looks whether its block has arrived; a
/// block lookup is a read lock and a bit test.
const POLL: Duration = Duration::from_millis(20);

/// Answers a player's request for `hash`; `name` (from the link or the
/// search result) types the media when the file is not here yet.
pub async fn serve(
    context: Arc<NodeState>,
    downloads: Downloads,
    request: Request,
    hash: ContentHash,
    mut stream: TcpStream,
) {
    if let Err(error) = answer(&context, &downloads, &request, hash, &mut stream).await {
        tracing::debug!(%hash, %error, "player stream ended");
    }
}

async fn answer(
    context: &NodeState,
    downloads: &Downloads,
    request: &Request,
    hash: ContentHash,
    stream: &mut TcpStream,
) -> std::io::Result<()> {
    let complete = |context: &NodeState| context.shares.get(&hash).filter(|f| f.unchanged_on_disk());
    if let Some(file) = complete(context) {
        return gateway::serve_file(context, request, &file, stream, Uploads::Local).await;
    }
    let name = match fetch(downloads, hash, request.param("name").as_deref()) {
        Ok(name) => name,
        Err(refusal) => return refusal.send(stream, request.method == "HEAD").await,
    };
    // The reader stands at the start until the range is known, so a
    // download that starts now fetches the beginning first.
    let focus = context.shares.focus(&hash);
    let reader = focus.reader(0);
    let waited = Instant::now();
    let hashes = loop {
        match context.shares.content(&hash) {
            Some(Content::Partial(file)) => break file.hashes.clone(),
            Some(Content::Complete(file)) => {
                return gateway::serve_file(context, request, &file, stream, Uploads::Local).await;
            }
            None if waited.elapsed() > FIRST_SOURCE_WAIT => {
                let text = "no source has sent this file yet; the download goes on in the app\n";
                return Response::text(504, "Gateway Timeout", text)
                    .send(stream, request.method == "HEAD")
                    .await;
            }
            None => tokio::time::sleep(POLL).await,
        }
    };
    let layout = hashes.layout();
    let Some(head) = answer_head(request, hash, &name, layout.size(), stream).await? else {
        return Ok(());
    };
    gateway::write(stream, head.text.as_bytes()).await?;
    if head.only {
        return stream.shutdown().await;
    }
    let mut at = head.body.start;
    let mut buffer = Vec::new();
    while at < head.body.end {
        let block = (at / layout.block_size()) as u32;
        reader.move_to(block);
        let path = wait_for_block(context, hash, block).await?;
        let block_end = layout.block_range(block).end.min(head.body.end);
        buffer.resize((block_end - at) as usize, 0);
        // Opened for each block: the part file is renamed to the finished
        // file's name when the last block lands, and the finished file may
        // be what the next block is read from.
        let mut file = tokio::fs::File::open(&path).await?;
        file.seek(SeekFrom::Start(at)).await?;
        file.read_exact(&mut buffer).await?;
        gateway::write(stream, &buffer).await?;
        at = block_end;
    }
    stream.shutdown().await
}

/// Makes sure `hash` is being fetched now: added if new, and started at
/// once whatever the queue holds (someone is waiting to watch it: the
/// lowest running download goes back to the queue to make room). Its name,
/// to type the media by.
fn fetch(downloads: &Downloads, hash: ContentHash, name: Option<&str>) -> Result<String, Response> {
    let name_of = |downloads: &Downloads| Some(downloads.get(&hash)?["name"].as_str()?.to_string());
    match downloads.add(hash, name, None) {
        Ok(()) | Err(DownloadsError::Exists(_)) => {}
        // Finished meanwhile: served from the shares.
        Err(DownloadsError::AlreadyHave(_)) => return Ok(name_of(downloads).unwrap_or_else(|| hash.to_hex())),
        Err(error) => return Err(Response::error(507, "Insufficient Storage", error)),
    }
    if let Err(error) = downloads.start_now(&hash) {
        tracing::debug!(%hash, %error, "the player's download did not start at once");
    }
    Ok(name_of(downloads).unwrap_or_else(|| hash.to_hex()))
}

/// Waits until block `block` of `hash` is verified on disk; the file to
/// read it from (the part file, or the finished file).
async fn wait_for_block(
    context: &NodeState,
    hash: ContentHash,
    block: u32,
) -> std::io::Result<std::path::PathBuf> {
    let mut last_change = Instant::now();
    let mut verified_before = None;
    loop {
        match context.shares.content(&hash) {
            Some(Content::Complete(file)) => return Ok(file.path),
            Some(Content::Partial(file)) => {
                let have = file
                    .have
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if have.get(block) {
                    return Ok(file.part.clone());
                }
                let verified = have.count();
                if verified_before != Some(verified) {
                    verified_before = Some(verified);
                    last_change = Instant::now();
                }
            }
            // Between the part file's end and the finished file's start,
            // or a download paused: nothing to read for now.
            None => {}
        }
        if last_change.elapsed() > BLOCK_WAIT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("block {block} did not arrive: the download has not moved for {BLOCK_WAIT:?}"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the app offers to play a file of this name.
pub fn playable(name: &str) -> bool {
    media_type(name).is_some_and(|media| media.starts_with("audio/") || media.starts_with("video/"))
}
