//! Fetching a file by content hash from a peer, verified block by block.
//!
//! 1. Ask the source for the file's size and block layer; check the layer
//!    against the content hash.
//! 2. Fetch the last block first: it proves the claimed size (see
//!    [`BlockHashes::verify`]) before we allocate disk for it.
//! 3. Fetch the remaining blocks with several requests in flight, each on
//!    its own stream. Every block is verified *before* it is written to
//!    `PATH.part`, so no unverified byte ever reaches the disk.
//! 4. Re-check the whole file from disk, then rename it into place.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_common::net::{read_frame, write_frame, Endpoint, NetError};
use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::wire::MAX_BLOCKS_PER_REQUEST;
use canopy_common::proto::{
    ContentError, ContentHash, PeerAddr, Request, Response, MAX_CONTROL_FRAME,
};
use tokio::task::JoinSet;

use crate::fileio::{read_exact_at, write_all_at};
use crate::share::PART_SUFFIX;

/// Tuning for one download.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Requests kept open at once per source.
    pub requests_in_flight: usize,
    /// Bytes asked for per request (rounded to whole blocks).
    pub request_bytes: u64,
    /// Verified bytes so far, for progress displays.
    pub progress: Arc<AtomicU64>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            requests_in_flight: 4,
            request_bytes: 2 << 20,
            progress: Arc::default(),
        }
    }
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub hash: ContentHash,
    pub size: u64,
    pub source: PeerAddr,
    pub path: PathBuf,
    pub elapsed: Duration,
}

impl FetchReport {
    /// Average rate in bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        self.size as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Why a download failed. Each kind maps to a documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach {peer}: {source}")]
    Unreachable {
        peer: PeerAddr,
        #[source]
        source: Box<NetError>,
    },
    #[error("{peer} does not share {hash}")]
    NotFound { peer: PeerAddr, hash: ContentHash },
    #[error("{peer} sent data that failed verification ({error}); nothing unverified was written")]
    Corrupt { peer: PeerAddr, error: ContentError },
    #[error("{peer} broke the protocol: {reason}")]
    Protocol { peer: PeerAddr, reason: String },
    #[error("transfer from {peer} failed: {source}")]
    Transfer {
        peer: PeerAddr,
        #[source]
        source: Box<NetError>,
    },
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the finished file {path} does not match {hash} when read back from disk; it was kept as {path}{PART_SUFFIX}")]
    DiskCheck { path: PathBuf, hash: ContentHash },
}

impl FetchError {
    /// The process exit code `canopy get` uses for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            FetchError::NotFound { .. } => exit::NOT_FOUND,
            FetchError::Unreachable { .. } | FetchError::Transfer { .. } => exit::NETWORK,
            FetchError::Corrupt { .. } | FetchError::Protocol { .. } => exit::VERIFICATION,
            FetchError::Output { .. } | FetchError::DiskCheck { .. } => exit::LOCAL_IO,
        }
    }
}

/// Exit codes of `canopy get`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const OTHER: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const NETWORK: u8 = 4;
    pub const VERIFICATION: u8 = 5;
    pub const LOCAL_IO: u8 = 6;
}

/// `PATH.part`, where a download lives until it is complete and verified.
pub fn part_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

/// Downloads `hash` from `source` into `output`.
pub async fn fetch(
    endpoint: &Endpoint,
    source: PeerAddr,
    hash: ContentHash,
    output: &Path,
    options: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let started = Instant::now();
    let connection =
        endpoint
            .connect(&source)
            .await
            .map_err(|source_error| FetchError::Unreachable {
                peer: source,
                source: Box::new(source_error),
            })?;
    let part = part_path(output);
    let session = Session {
        connection,
        peer: source,
        hash,
        part: part.clone(),
    };
    let hashes = Arc::new(session.block_layer().await?);
    let layout = hashes.layout();

    let output_error = |source| FetchError::Output {
        path: part.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .read(true)
        .truncate(true)
        .open(&part)
        .map_err(output_error)?;
    let file = Arc::new(file);

    let last = layout.block_count() - 1;
    session.blocks(last, 1, &hashes, &file, options).await?;
    file.set_len(layout.size()).map_err(output_error)?;

    let per_request = (options.request_bytes / layout.block_size())
        .clamp(1, u64::from(MAX_BLOCKS_PER_REQUEST)) as u32;
    let mut ranges = (0..last)
        .step_by(per_request as usize)
        .map(|first| (first, per_request.min(last - first)));
    let session = Arc::new(session);
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < options.requests_in_flight.max(1) {
            let Some((first, count)) = ranges.next() else {
                break;
            };
            let (session, hashes, file, options) = (
                session.clone(),
                hashes.clone(),
                file.clone(),
                options.clone(),
            );
            in_flight
                .spawn(async move { session.blocks(first, count, &hashes, &file, &options).await });
        }
        match in_flight.join_next().await {
            Some(result) => result.expect("block task panicked")?,
            None => break,
        }
    }
    session.connection.close(0u32.into(), b"done");

    finish(&part, output, &hashes).await?;
    Ok(FetchReport {
        hash,
        size: layout.size(),
        source,
        path: output.to_path_buf(),
        elapsed: started.elapsed(),
    })
}

/// Syncs, re-verifies from disk and renames the part file into place.
async fn finish(part: &Path, output: &Path, hashes: &Arc<BlockHashes>) -> Result<(), FetchError> {
    let (part, output, hashes) = (part.to_path_buf(), output.to_path_buf(), hashes.clone());
    tokio::task::spawn_blocking(move || {
        let io_error = |source| FetchError::Output {
            path: part.clone(),
            source,
        };
        let file = File::open(&part).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        if !verify_file(&file, &hashes).map_err(io_error)? {
            return Err(FetchError::DiskCheck {
                path: output.clone(),
                hash: hashes.root(),
            });
        }
        std::fs::rename(&part, &output).map_err(|source| FetchError::Output {
            path: output.clone(),
            source,
        })?;
        // Make the rename itself durable.
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    })
    .await
    .expect("finish task panicked")
}

/// Re-verifies every block of `file` on all cores.
pub fn verify_file(file: &File, hashes: &BlockHashes) -> std::io::Result<bool> {
    let layout = hashes.layout();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let count = layout.block_count();
    std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..workers as u32)
            .map(|worker| {
                scope.spawn(move || -> std::io::Result<bool> {
                    let mut buffer = Vec::new();
                    for index in (worker..count).step_by(workers) {
                        buffer.resize(layout.block_len(index) as usize, 0);
                        read_exact_at(file, &mut buffer, layout.block_range(index).start)?;
                        if hashes.verify_block(index, &buffer).is_err() {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                })
            })
            .collect();
        let mut all_good = true;
        for task in tasks {
            all_good &= task.join().expect("verify worker panicked")?;
        }
        Ok(all_good)
    })
}

/// One download's connection to one source.
struct Session {
    connection: quinn::Connection,
    peer: PeerAddr,
    hash: ContentHash,
    part: PathBuf,
}

impl Session {
    fn transfer_error(&self, source: impl Into<NetError>) -> FetchError {
        FetchError::Transfer {
            peer: self.peer,
            source: Box::new(source.into()),
        }
    }

    fn protocol_error(&self, reason: impl Into<String>) -> FetchError {
        FetchError::Protocol {
            peer: self.peer,
            reason: reason.into(),
        }
    }

    /// Sends `request` on a new stream and reads the response header.
    async fn ask(&self, request: &Request) -> Result<(Response, quinn::RecvStream), FetchError> {
        let (mut send, mut recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|e| self.transfer_error(e))?;
        write_frame(&mut send, request)
            .await
            .map_err(|e| self.transfer_error(e))?;
        send.finish().map_err(|e| self.transfer_error(e))?;
        let response = match read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME).await {
            Ok(response) => response,
            Err(NetError::Frame(error)) => {
                return Err(self.protocol_error(format!("bad response frame: {error}")))
            }
            Err(error) => return Err(self.transfer_error(error)),
        };
        match response {
            Response::NotFound { .. } => Err(FetchError::NotFound {
                peer: self.peer,
                hash: self.hash,
            }),
            Response::BadRequest { reason } => {
                Err(self.protocol_error(format!("refused our request: {reason}")))
            }
            response => Ok((response, recv)),
        }
    }

    async fn block_layer(&self) -> Result<BlockHashes, FetchError> {
        let (response, mut recv) = self.ask(&Request::BlockLayer { hash: self.hash }).await?;
        let Response::BlockLayer { size } = response else {
            return Err(
                self.protocol_error(format!("answered a block layer request with {response:?}"))
            );
        };
        // The layout bounds the layer (at most 512 KiB), whatever size is claimed.
        let mut layer = vec![0u8; canopy_common::proto::BlockLayout::for_size(size).layer_len()];
        recv.read_exact(&mut layer)
            .await
            .map_err(|e| self.transfer_error(e))?;
        BlockHashes::verify(self.hash, size, &layer).map_err(|error| FetchError::Corrupt {
            peer: self.peer,
            error,
        })
    }

    /// Fetches, verifies and writes blocks `first..first + count`.
    async fn blocks(
        &self,
        first: u32,
        count: u32,
        hashes: &Arc<BlockHashes>,
        file: &Arc<File>,
        options: &FetchOptions,
    ) -> Result<(), FetchError> {
        let request = Request::Blocks {
            hash: self.hash,
            first,
            count,
        };
        let (response, mut recv) = self.ask(&request).await?;
        if response != (Response::Blocks { first, count }) {
            return Err(self.protocol_error(format!("asked for {request:?}, got {response:?}")));
        }
        let layout = hashes.layout();
        let range = layout.blocks_range(first, count);
        let mut data = vec![0u8; (range.end - range.start) as usize];
        recv.read_exact(&mut data)
            .await
            .map_err(|e| self.transfer_error(e))?;

        let (hashes, file, peer, part) =
            (hashes.clone(), file.clone(), self.peer, self.part.clone());
        let written = data.len() as u64;
        tokio::task::spawn_blocking(move || {
            let mut offset = 0usize;
            for index in first..first + count {
                let len = layout.block_len(index) as usize;
                hashes
                    .verify_block(index, &data[offset..offset + len])
                    .map_err(|error| FetchError::Corrupt { peer, error })?;
                offset += len;
            }
            write_all_at(&file, &data, range.start)
                .map_err(|source| FetchError::Output { path: part, source })
        })
        .await
        .expect("verify task panicked")?;
        options.progress.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }
}
