//! A download's ledger: which blocks are verified, which are asked for, and
//! the writer they go to, kept in step in one place.
//!
//! Hazard (issue 25, "a download that hangs forever at 16,383 of 16,384
//! blocks"): the scheduler marking a block done and the part writer
//! receiving it are two facts that must never part. A block marked done
//! that never reaches the writer is never asked for again (the scheduler
//! hands out only missing blocks), and the download never completes (its
//! verified bytes never reach the size), with every task idle and no timer
//! left to notice. It happened when a request was cancelled (an endgame
//! duplicate had won its remaining blocks, or its source ended) while it
//! waited for room in the writer's queue *after* marking its block done.
//! Here the only wait comes first ([`Writer::reserve`]); marking the block
//! and handing it over are one step under one lock, with no await between
//! them, so cancelling a delivery at any point leaves its block either done
//! and on its way to disk or still missing.
//!
//! The [`Book`] is the pure half (no I/O, driven by the model tests): the
//! scheduler plus the set of blocks actually handed to the writer, which
//! the coordinator's watchdog compares against the scheduler's `done`.

use canopy_common::sync::Lock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use canopy_common::proto::content::BlockHashes;
use canopy_common::proto::Bitfield;

use super::part::{WriteCommand, Writer};
use super::scheduler::{Received, RequestId, Scheduler};

/// The scheduler and the blocks handed to the writer.
#[derive(Debug)]
pub struct Book {
    scheduler: Scheduler,
    /// Blocks on disk at the start plus every block handed to the writer
    /// since. Must equal the scheduler's `done` at every moment.
    handed: Bitfield,
}

impl Book {
    /// A book for a part file that already holds the verified blocks `done`.
    pub fn new(done: Bitfield) -> Self {
        Book {
            scheduler: Scheduler::new(done.clone()),
            handed: done,
        }
    }

    /// The scheduler, for planning requests, sources' holdings and paces.
    /// Marking blocks done goes through [`Book::commit`] only.
    pub fn scheduler(&mut self) -> &mut Scheduler {
        &mut self.scheduler
    }

    pub fn scheduler_ref(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Records verified block `index`, delivered by `request` (or outside any
    /// request: the tail block that proved the size). When the answer is
    /// [`Received::Fresh`] the block is now done, and the caller must hand it
    /// to the writer and call [`Book::handed_over`] in the same step.
    pub fn commit(&mut self, request: Option<RequestId>, index: u32) -> Received {
        match request {
            Some(id) => self.scheduler.received(id, index),
            None if self.scheduler.is_done(index) => Received::Duplicate,
            None => {
                self.scheduler.mark_done(index);
                Received::Fresh { cancel: Vec::new() }
            }
        }
    }

    /// Records that block `index` is in the writer's queue.
    pub fn handed_over(&mut self, index: u32) {
        self.handed.set(index);
    }

    /// Blocks the scheduler counts as done that were never handed to the
    /// writer: each one is a download that can never finish.
    pub fn lost(&self) -> Vec<u32> {
        let done = self.scheduler.done();
        done.ones().filter(|&block| !self.handed.get(block)).collect()
    }

    /// Puts the books right: blocks marked done but never handed over are
    /// missing again, and the scheduler's own counts are recomputed.
    /// Returns the lost blocks and how many of the scheduler's figures were
    /// wrong.
    pub fn repair(&mut self) -> (Vec<u32>, u32) {
        let lost = self.lost();
        for &block in &lost {
            self.scheduler.forget(block);
        }
        (lost, self.scheduler.audit())
    }
}

/// The writer stopped (an I/O error, reported by the coordinator).
#[derive(Debug)]
pub struct WriterStopped;

/// The [`Book`] behind its lock, the block layer and the part writer: what
/// exists once the first source has proved the file's size.
pub struct Ledger {
    hashes: Arc<BlockHashes>,
    book: Mutex<Book>,
    writer: Writer,
    /// Bytes verified: resumed from the part file plus handed to the writer.
    verified: AtomicU64,
    resumed: u64,
    /// When the first block of this run was verified.
    first_block: std::sync::OnceLock<std::time::Instant>,
}

impl Ledger {
    /// When the first block of this run was verified, if one was.
    pub fn first_block(&self) -> Option<std::time::Instant> {
        self.first_block.get().copied()
    }

    pub fn new(hashes: Arc<BlockHashes>, done: Bitfield, writer: Writer) -> Self {
        let layout = hashes.layout();
        let resumed = done.ones().map(|block| layout.block_len(block)).sum();
        Ledger {
            hashes,
            book: Mutex::new(Book::new(done)),
            writer,
            verified: AtomicU64::new(resumed),
            resumed,
            first_block: std::sync::OnceLock::new(),
        }
    }

    pub fn hashes(&self) -> &Arc<BlockHashes> {
        &self.hashes
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    pub fn book(&self) -> MutexGuard<'_, Book> {
        self.book.locked()
    }

    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Every block is verified and handed to the writer.
    pub fn is_complete(&self) -> bool {
        self.book().scheduler.is_complete() && self.verified() == self.hashes.layout().size()
    }

    /// Hands verified block `index` (from `request`, or `None` for the tail
    /// that proved the size) to the writer and marks it done, as one step.
    ///
    /// Cancel-safe: the only await is for room in the writer's queue, before
    /// anything changes (see the module's hazard note).
    pub async fn deliver(
        &self,
        request: Option<RequestId>,
        index: u32,
        data: Vec<u8>,
    ) -> Result<Received, WriterStopped> {
        if self.book().scheduler.is_done(index) {
            // A duplicate: nothing to write, only the request moves on.
            return Ok(self.book().commit(request, index));
        }
        let slot = self.writer.reserve().await.map_err(|()| WriterStopped)?;
        let mut book = self.book();
        let received = book.commit(request, index);
        if matches!(received, Received::Fresh { .. }) {
            self.first_block.get_or_init(std::time::Instant::now);
            self.verified.fetch_add(data.len() as u64, Ordering::Relaxed);
            slot.send(WriteCommand::Block { index, data });
            book.handed_over(index);
        }
        Ok(received)
    }

    /// The order of issue 25's bug — mark the block done, *then* wait for
    /// room in the writer's queue — kept only so the model tests can show
    /// they tell the two orders apart.
    #[cfg(test)]
    pub async fn deliver_marking_first(
        &self,
        request: Option<RequestId>,
        index: u32,
        data: Vec<u8>,
    ) -> Result<Received, WriterStopped> {
        let received = self.book().commit(request, index);
        if matches!(received, Received::Fresh { .. }) {
            let len = data.len() as u64;
            self.writer
                .send(WriteCommand::Block { index, data })
                .await
                .map_err(|()| WriterStopped)?;
            self.book().handed_over(index);
            self.verified.fetch_add(len, Ordering::Relaxed);
        }
        Ok(received)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use canopy_common::proto::content::{hash_bytes, MIN_BLOCK_SIZE};

    use super::*;

    fn file(blocks: usize) -> (Vec<u8>, Arc<BlockHashes>) {
        let data: Vec<u8> = (0..blocks * MIN_BLOCK_SIZE as usize)
            .map(|i| (i % 251) as u8)
            .collect();
        let hashes = Arc::new(hash_bytes(&data));
        (data, hashes)
    }

    /// The bug of issue 25, replayed: a delivery cancelled while the
    /// writer's queue is full must leave its block missing (to be fetched
    /// again), never done-but-unwritten.
    #[tokio::test]
    async fn a_delivery_cancelled_while_the_writer_is_full_leaves_its_block_missing() {
        let (data, hashes) = file(4);
        let layout = hashes.layout();
        let block = |i: u32| {
            let range = layout.block_range(i);
            data[range.start as usize..range.end as usize].to_vec()
        };
        let (writer, mut queue) = Writer::detached(1);
        let ledger = Ledger::new(hashes.clone(), Bitfield::new(4), writer);
        let request = {
            let mut book = ledger.book();
            book.scheduler().set_have(1, None);
            book.scheduler().next_request(1, 4).expect("a request")
        };
        // Block 0 fills the queue; block 1 has to wait for room.
        assert!(matches!(
            ledger.deliver(Some(request.id), 0, block(0)).await,
            Ok(Received::Fresh { .. })
        ));
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            ledger.deliver(Some(request.id), 1, block(1)),
        )
        .await;
        assert!(waiting.is_err(), "the writer's queue was full");
        // The request is cancelled (its task aborted) and its blocks released.
        ledger.book().scheduler().release(request.id);
        assert!(ledger.book().lost().is_empty());
        assert!(!ledger.book().scheduler_ref().is_done(1));
        assert_eq!(ledger.verified(), layout.block_len(0));
        // Block 1 is asked for again and, once the writer drains, delivered.
        let again = ledger
            .book()
            .scheduler()
            .next_request(1, 4)
            .expect("block 1 again");
        assert_eq!(again.first, 1);
        assert!(matches!(
            queue.recv().await,
            Some(WriteCommand::Block { index: 0, .. })
        ));
        for index in 1..4 {
            ledger.deliver(Some(again.id), index, block(index)).await.unwrap();
            assert!(matches!(queue.recv().await, Some(WriteCommand::Block { index: i, .. }) if i == index));
        }
        assert!(ledger.is_complete());
    }

    #[test]
    fn repair_returns_done_but_unwritten_blocks_to_the_pool() {
        let mut book = Book::new(Bitfield::new(3));
        book.scheduler().set_have(1, None);
        // A block marked done behind the book's back (the old bug).
        book.scheduler().mark_done(1);
        assert_eq!(book.lost(), vec![1]);
        let (lost, wrong) = book.repair();
        assert_eq!((lost, wrong), (vec![1], 0));
        assert!(book.lost().is_empty());
        let request = book.scheduler().next_request(1, 3).unwrap();
        assert_eq!((request.first, request.count), (0, 3));
    }
}
