//! The part file: where a download lives until it is whole.
//!
//! Verified blocks are written to `PATH.part` by one writer thread. Every
//! [`CHECKPOINT_INTERVAL`] (or [`CHECKPOINT_BYTES`]) it makes the written
//! blocks durable (`fdatasync`) and only *then* records them in
//! `PATH.part.state`, replaced atomically. A crash or `kill -9` therefore
//! loses at most the blocks written since the last checkpoint, never a
//! block the state file claims.
//!
//! On resume the blocks the state file lists are verified again from disk
//! before they are trusted; with no usable state file every block of an
//! existing part file is checked, so nothing verified is ever thrown away.

use canopy_common::sync::{Lock, ReadWrite};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::resume::{decode_state, encode_state};
use canopy_common::proto::Bitfield;
use tokio::sync::{mpsc, oneshot};

use crate::fileio::{read_exact_at, write_all_at, write_atomically};
use crate::share::PART_SUFFIX;

/// Longest time written blocks wait before they are made durable.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Most bytes written blocks may amount to before they are made durable.
pub const CHECKPOINT_BYTES: u64 = 32 << 20;

/// `PATH.part`, where a download lives until it is complete and verified.
pub fn part_path(output: &Path) -> PathBuf {
    with_suffix(output, PART_SUFFIX)
}

/// `PATH.part.state`, the list of durable verified blocks.
pub fn state_path(output: &Path) -> PathBuf {
    with_suffix(output, ".part.state")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens (or creates) the part file for `hashes` and returns it with the
/// blocks it already holds, each verified from disk.
pub fn open(output: &Path, hashes: &BlockHashes) -> std::io::Result<(File, Bitfield)> {
    let layout = hashes.layout();
    let part = part_path(output);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)?;
    let existing_len = file.metadata()?.len();
    let blocks = layout.block_count();
    let candidates = match read_state(&state_path(output), hashes) {
        Some(done) => done,
        None if existing_len > 0 => {
            tracing::info!(path = %part.display(), "no usable state file; checking every block of the part file");
            Bitfield::full(blocks)
        }
        None => Bitfield::new(blocks),
    };
    file.set_len(layout.size())?;
    let done = verify_blocks(&file, hashes, &candidates)?;
    if done.count() < candidates.count() && existing_len > 0 {
        tracing::info!(
            kept = done.count(),
            checked = candidates.count(),
            "part file blocks that failed re-verification will be fetched again"
        );
    }
    Ok((file, done))
}

fn read_state(path: &Path, hashes: &BlockHashes) -> Option<Bitfield> {
    let bytes = std::fs::read(path).ok()?;
    match decode_state(&bytes, hashes.root(), &hashes.layout()) {
        Ok(done) => Some(done),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring the download state file; the part file is checked instead");
            None
        }
    }
}

/// The subset of `candidates` whose bytes in `file` verify, checked on all cores.
pub fn verify_blocks(file: &File, hashes: &BlockHashes, candidates: &Bitfield) -> std::io::Result<Bitfield> {
    let layout = hashes.layout();
    let indices: Vec<u32> = candidates.ones().collect();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let results = std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..workers)
            .map(|worker| {
                let indices = &indices;
                scope.spawn(move || -> std::io::Result<Vec<u32>> {
                    let mut good = Vec::new();
                    let mut buffer = Vec::new();
                    for &index in indices.iter().skip(worker).step_by(workers) {
                        buffer.resize(layout.block_len(index) as usize, 0);
                        read_exact_at(file, &mut buffer, layout.block_range(index).start)?;
                        if hashes.verify_block(index, &buffer).is_ok() {
                            good.push(index);
                        }
                    }
                    Ok(good)
                })
            })
            .collect();
        tasks
            .into_iter()
            .map(|task| task.join().expect("verify worker panicked"))
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    let mut done = Bitfield::new(layout.block_count());
    for index in results.into_iter().flatten() {
        done.set(index);
    }
    Ok(done)
}

/// What the download tells the writer.
pub enum WriteCommand {
    /// A verified block to write.
    Block { index: u32, data: Vec<u8> },
    /// Time passed: checkpoint if one is due.
    Tick,
    /// Checkpoint now (the download is stopping) and say when done.
    Flush(oneshot::Sender<()>),
    /// Every block is written: make it durable, re-verify the whole file and
    /// move it into place.
    Finish(oneshot::Sender<std::io::Result<bool>>),
}

/// Handle to the writer thread. The thread ends when every handle is
/// dropped, or on the first I/O error, which [`Writer::error`] then reports.
pub struct Writer {
    commands: mpsc::Sender<WriteCommand>,
    failure: Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl Writer {
    /// Starts the writer for `output`. `have` is the set of blocks written
    /// so far, shared with the upload side so other downloaders can fetch
    /// them from us while we are still downloading.
    pub fn start(
        output: &Path,
        file: File,
        hashes: Arc<BlockHashes>,
        durable: Bitfield,
        have: Arc<RwLock<Bitfield>>,
    ) -> Writer {
        let (commands, receiver) = mpsc::channel(64);
        let failure = Arc::new(std::sync::Mutex::new(None));
        let mut state = WriterState {
            output: output.to_path_buf(),
            file,
            hashes,
            durable,
            pending: Vec::new(),
            pending_bytes: 0,
            last_checkpoint: Instant::now(),
            have,
        };
        let failure_slot = failure.clone();
        std::thread::Builder::new()
            .name("canopy-part-writer".into())
            .spawn(move || {
                if let Err(error) = state.run(receiver) {
                    tracing::warn!(%error, "part file writer stopped");
                    *failure_slot.locked() = Some(error);
                }
            })
            .expect("spawn writer thread");
        Writer { commands, failure }
    }

    /// Sends a command; `Err` means the writer stopped (see [`Writer::error`]).
    pub async fn send(&self, command: WriteCommand) -> Result<(), ()> {
        self.commands.send(command).await.map_err(|_| ())
    }

    /// Waits for room in the writer's queue. The returned slot sends
    /// without waiting, so whoever holds one can record a block as handed
    /// over and hand it over in one step, with no await (no point where the
    /// task can be cancelled) in between. `Err`: the writer stopped.
    pub async fn reserve(&self) -> Result<WriteSlot<'_>, ()> {
        self.commands.reserve().await.map(WriteSlot).map_err(|_| ())
    }

    /// A writer with no thread behind it, for tests that need to control
    /// when the queue drains: the caller reads the commands.
    #[cfg(test)]
    pub fn detached(queue: usize) -> (Writer, mpsc::Receiver<WriteCommand>) {
        let (commands, receiver) = mpsc::channel(queue);
        let failure = Arc::new(std::sync::Mutex::new(None));
        (Writer { commands, failure }, receiver)
    }

    /// Whether the writer thread has stopped (normally only after an error).
    pub fn is_stopped(&self) -> bool {
        self.commands.is_closed()
    }

    /// The error that stopped the writer, if any.
    pub fn error(&self) -> Option<std::io::Error> {
        self.failure.locked().take()
    }
}

/// Room for one command in the writer's queue (see [`Writer::reserve`]).
pub struct WriteSlot<'a>(mpsc::Permit<'a, WriteCommand>);

impl WriteSlot<'_> {
    /// Queues `command` at once; never waits.
    pub fn send(self, command: WriteCommand) {
        self.0.send(command);
    }
}

struct WriterState {
    output: PathBuf,
    file: File,
    hashes: Arc<BlockHashes>,
    durable: Bitfield,
    pending: Vec<u32>,
    pending_bytes: u64,
    last_checkpoint: Instant,
    have: Arc<RwLock<Bitfield>>,
}

impl WriterState {
    fn run(&mut self, mut commands: mpsc::Receiver<WriteCommand>) -> std::io::Result<()> {
        while let Some(command) = commands.blocking_recv() {
            match command {
                WriteCommand::Block { index, data } => {
                    let offset = self.hashes.layout().block_range(index).start;
                    write_all_at(&self.file, &data, offset)?;
                    self.have.write_locked().set(index);
                    self.pending.push(index);
                    self.pending_bytes += data.len() as u64;
                    if self.pending_bytes >= CHECKPOINT_BYTES
                        || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
                    {
                        self.checkpoint()?;
                    }
                }
                WriteCommand::Tick => {
                    if !self.pending.is_empty() && self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                        self.checkpoint()?;
                    }
                }
                WriteCommand::Flush(reply) => {
                    if !self.pending.is_empty() {
                        self.checkpoint()?;
                    }
                    let _ = reply.send(());
                }
                WriteCommand::Finish(reply) => {
                    let result = self.finish();
                    let failed = result.is_err();
                    let _ = reply.send(result);
                    if failed {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes pending blocks durable, then records them.
    fn checkpoint(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        for index in self.pending.drain(..) {
            self.durable.set(index);
        }
        self.pending_bytes = 0;
        self.last_checkpoint = Instant::now();
        let bytes = encode_state(self.hashes.root(), &self.hashes.layout(), &self.durable);
        write_atomically(&state_path(&self.output), &bytes)
    }

    /// Returns `Ok(false)` if the file on disk does not verify as a whole.
    fn finish(&mut self) -> std::io::Result<bool> {
        self.checkpoint()?;
        let all = Bitfield::full(self.hashes.layout().block_count());
        if verify_blocks(&self.file, &self.hashes, &all)? != all {
            return Ok(false);
        }
        std::fs::rename(part_path(&self.output), &self.output)?;
        let _ = std::fs::remove_file(state_path(&self.output));
        // Make the rename itself durable.
        if let Some(parent) = self.output.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::content::{hash_bytes, MIN_BLOCK_SIZE};

    fn sample(blocks: usize) -> Vec<u8> {
        (0..blocks * MIN_BLOCK_SIZE as usize + 99)
            .map(|i| (i % 241) as u8)
            .collect()
    }

    #[test]
    fn resume_trusts_only_blocks_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("file.bin");
        let data = sample(6);
        let hashes = hash_bytes(&data);
        let layout = hashes.layout();

        // Blocks 1 and 4 are on disk; block 4 is damaged.
        let (file, done) = open(&output, &hashes).unwrap();
        assert_eq!(done.count(), 0);
        for index in [1u32, 4] {
            let range = layout.block_range(index);
            let mut bytes = data[range.start as usize..range.end as usize].to_vec();
            if index == 4 {
                bytes[7] ^= 1;
            }
            write_all_at(&file, &bytes, range.start).unwrap();
        }
        drop(file);
        // No state file: every block is checked and only block 1 survives.
        let (_, done) = open(&output, &hashes).unwrap();
        assert_eq!(done.ones().collect::<Vec<_>>(), vec![1]);
    }

    #[tokio::test]
    async fn checkpoints_record_only_durable_blocks_and_finish_renames() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("file.bin");
        let data = sample(4);
        let hashes = Arc::new(hash_bytes(&data));
        let layout = hashes.layout();
        let (file, done) = open(&output, &hashes).unwrap();
        let have = Arc::new(RwLock::new(done.clone()));
        let writer = Writer::start(&output, file, hashes.clone(), done, have.clone());
        let block =
            |i: u32| data[layout.block_range(i).start as usize..layout.block_range(i).end as usize].to_vec();

        writer
            .send(WriteCommand::Block {
                index: 0,
                data: block(0),
            })
            .await
            .unwrap();
        writer
            .send(WriteCommand::Block {
                index: 2,
                data: block(2),
            })
            .await
            .unwrap();
        tokio::time::sleep(CHECKPOINT_INTERVAL + Duration::from_millis(50)).await;
        writer.send(WriteCommand::Tick).await.unwrap();
        // The state file is written by the writer thread; wait for it.
        let state = state_path(&output);
        for _ in 0..100 {
            if read_state(&state, &hashes).map(|d| d.count()) == Some(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            read_state(&state, &hashes).unwrap().ones().collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(have.read().unwrap().count(), 2);

        for index in [1, 3, 4] {
            writer
                .send(WriteCommand::Block {
                    index,
                    data: block(index),
                })
                .await
                .unwrap();
        }
        let (reply, result) = oneshot::channel();
        writer.send(WriteCommand::Finish(reply)).await.unwrap();
        assert!(result.await.unwrap().unwrap());
        assert!(writer.error().is_none());
        assert_eq!(std::fs::read(&output).unwrap(), data);
        assert!(!part_path(&output).exists() && !state.exists());
    }
}
