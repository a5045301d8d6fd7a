//! Model tests of a download's bookkeeping: random interleavings of what
//! sources and the part writer can do, run against the real scheduler, the
//! real ledger and the real re-plan. The ledger's hand-off is polled by
//! hand, so a cancellation (an endgame cancel, a source that ends) can land
//! exactly at its await point, as in issue 25's hang.
//!
//! The model, one step at a time:
//! * sources join late (still hashing, or "not found" first and offered
//!   again later), some hold only part of the file and gain blocks, paces
//!   change;
//! * a source with room plans a request ([`Scheduler::plan`], the rules the
//!   real source tasks follow);
//! * a request's next block arrives and is handed to the writer, whose
//!   queue is small and drains only when the model says so;
//! * a request stalls (released; only while it reads, as the real per-block
//!   timeout does), a source fails (all its requests cancelled), a fresh
//!   block cancels requests holding only finished blocks (endgame).
//!
//! After the random steps the sources behave (every source that can, asks;
//! every block asked for arrives; the writer drains), and the download must
//! finish. At every quiet point the liveness invariant must hold: an
//! incomplete download with a live source has a request in flight or gets
//! one when a source asks.
//!
//! [`Scheduler::plan`]: super::scheduler::Scheduler::plan

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use canopy_common::proto::content::{hash_bytes, BlockHashes, MIN_BLOCK_SIZE};
use canopy_common::proto::Bitfield;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::sync::mpsc;

use super::ledger::{Ledger, WriterStopped};
use super::part::{WriteCommand, Writer};
use super::scheduler::{Assignment, Received, SourceId};

const BLOCKS: u32 = 24;
const SOURCES: usize = 4;
const REQUESTS_PER_SOURCE: usize = 3;
const WRITER_QUEUE: usize = 2;

/// A file of [`BLOCKS`] blocks and its hashes, made once.
fn file() -> &'static (Vec<u8>, Arc<BlockHashes>) {
    static FILE: OnceLock<(Vec<u8>, Arc<BlockHashes>)> = OnceLock::new();
    FILE.get_or_init(|| {
        let data: Vec<u8> = (0..u64::from(BLOCKS) * MIN_BLOCK_SIZE)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let hashes = Arc::new(hash_bytes(&data));
        (data, hashes)
    })
}

fn block(index: u32) -> Vec<u8> {
    let (data, hashes) = file();
    let range = hashes.layout().block_range(index);
    data[range.start as usize..range.end as usize].to_vec()
}

/// Which hand-off the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// [`Ledger::deliver`]: wait for room, then mark and hand over at once.
    Ledger,
    /// The order of issue 25's bug: mark, then wait for room.
    MarkThenSend,
}

type Handoff = Pin<Box<dyn Future<Output = Result<Received, WriterStopped>>>>;

struct Request {
    assignment: Assignment,
    next: u32,
    /// A hand-off of block `next` that is waiting for room in the queue.
    handoff: Option<Handoff>,
}

impl Request {
    fn end(&self) -> u32 {
        self.assignment.first + self.assignment.count
    }
}

struct Source {
    live: bool,
    /// `None`: holds the whole file.
    have: Option<Bitfield>,
    requests: Vec<Request>,
}

#[derive(Debug, Clone)]
enum Step {
    Plan { source: usize, max_blocks: u32 },
    Arrive { source: usize, request: usize },
    Drain,
    Stall { source: usize, request: usize },
    Fail { source: usize },
    Join { source: usize },
    Pace { source: usize, blocks_per_second: u8 },
    Gain { source: usize, block: u32 },
}

fn step() -> impl Strategy<Value = Step> {
    let source = 0..SOURCES;
    prop_oneof![
        4 => (source.clone(), 1..8u32).prop_map(|(source, max_blocks)| Step::Plan { source, max_blocks }),
        8 => (source.clone(), 0..REQUESTS_PER_SOURCE).prop_map(|(source, request)| Step::Arrive { source, request }),
        3 => Just(Step::Drain),
        1 => (source.clone(), 0..REQUESTS_PER_SOURCE).prop_map(|(source, request)| Step::Stall { source, request }),
        1 => source.clone().prop_map(|source| Step::Fail { source }),
        2 => source.clone().prop_map(|source| Step::Join { source }),
        1 => (source.clone(), 1..40u8).prop_map(|(source, blocks_per_second)| Step::Pace { source, blocks_per_second }),
        1 => (source, 0..BLOCKS).prop_map(|(source, block)| Step::Gain { source, block }),
    ]
}

/// How each source starts: live or not yet (hashing, or "not found"
/// first), and a bit mask of the blocks it holds if it is partial. Source 0
/// always holds the whole file, so finishing is always possible.
fn sources() -> impl Strategy<Value = Vec<(bool, Option<u32>)>> {
    proptest::collection::vec((any::<bool>(), proptest::option::of(any::<u32>())), SOURCES)
}

struct Model {
    order: Order,
    ledger: Arc<Ledger>,
    queue: mpsc::Receiver<WriteCommand>,
    written: Bitfield,
    sources: Vec<Source>,
}

impl Model {
    fn new(order: Order, starts: &[(bool, Option<u32>)], resumed: u32) -> Self {
        let hashes = file().1.clone();
        let (writer, queue) = Writer::detached(WRITER_QUEUE);
        let mut done = Bitfield::new(BLOCKS);
        for index in (0..BLOCKS).filter(|i| resumed & (1 << i) != 0) {
            done.set(index);
        }
        let ledger = Arc::new(Ledger::new(hashes, done.clone(), writer));
        let sources = starts
            .iter()
            .enumerate()
            .map(|(index, &(live, mask))| Source {
                live,
                have: mask.filter(|_| index > 0).map(|mask| {
                    let mut have = Bitfield::new(BLOCKS);
                    for block in (0..BLOCKS).filter(|b| mask & (1 << b) != 0) {
                        have.set(block);
                    }
                    have
                }),
                requests: Vec::new(),
            })
            .collect();
        let mut model = Model {
            order,
            ledger,
            queue,
            written: done,
            sources,
        };
        for source in 0..SOURCES {
            if model.sources[source].live {
                model.register(source);
            }
        }
        model
    }

    fn register(&mut self, source: usize) {
        let have = self.sources[source].have.clone();
        self.ledger.book().scheduler().set_have(source as SourceId, have);
    }

    fn run(&mut self, step: &Step) {
        match *step {
            Step::Plan { source, max_blocks } => {
                self.plan(source, max_blocks);
            }
            Step::Arrive { source, request } => {
                let count = self.sources[source].requests.len();
                if self.sources[source].live && count > 0 {
                    self.arrive(source, request % count);
                }
            }
            Step::Drain => self.drain_one(),
            Step::Stall { source, request } => {
                let requests = &self.sources[source].requests;
                // The per-block timeout covers reading a block, not the
                // hand-off: only a reading request can stall.
                if let Some(index) = (!requests.is_empty())
                    .then(|| request % requests.len())
                    .filter(|&i| requests[i].handoff.is_none())
                {
                    let stalled = self.sources[source].requests.remove(index);
                    self.ledger.book().scheduler().release(stalled.assignment.id);
                }
            }
            Step::Fail { source } => self.fail(source),
            Step::Join { source } => {
                if !self.sources[source].live {
                    self.sources[source].live = true;
                    self.register(source);
                }
            }
            Step::Pace {
                source,
                blocks_per_second,
            } => {
                if self.sources[source].live {
                    self.ledger.book().scheduler().set_pace(
                        source as SourceId,
                        f64::from(blocks_per_second),
                        0.01,
                    );
                }
            }
            Step::Gain { source, block } => {
                if let Some(have) = &mut self.sources[source].have {
                    have.set(block);
                    if self.sources[source].live {
                        self.register(source);
                    }
                }
            }
        }
    }

    /// Returns whether a request was planned.
    fn plan(&mut self, source: usize, max_blocks: u32) -> bool {
        let in_flight = self.sources[source].requests.len();
        if !self.sources[source].live || in_flight >= REQUESTS_PER_SOURCE {
            return false;
        }
        let planned = self
            .ledger
            .book()
            .scheduler()
            .plan(source as SourceId, in_flight, max_blocks);
        let Some(assignment) = planned else {
            return false;
        };
        self.sources[source].requests.push(Request {
            assignment,
            next: assignment.first,
            handoff: None,
        });
        true
    }

    /// The next block of one request arrives (or its waiting hand-off is
    /// polled again).
    fn arrive(&mut self, source: usize, index: usize) {
        let request = &mut self.sources[source].requests[index];
        let id = request.assignment.id;
        let handoff = request.handoff.get_or_insert_with(|| {
            let (ledger, block_index) = (self.ledger.clone(), request.next);
            match self.order {
                Order::Ledger => {
                    Box::pin(async move { ledger.deliver(Some(id), block_index, block(block_index)).await })
                }
                Order::MarkThenSend => Box::pin(async move {
                    ledger
                        .deliver_marking_first(Some(id), block_index, block(block_index))
                        .await
                }),
            }
        });
        let Poll::Ready(outcome) = handoff.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
            return;
        };
        request.handoff = None;
        request.next += 1;
        let finished = request.next == request.end();
        let received = outcome.expect("the model's writer never stops");
        if finished {
            self.sources[source].requests.remove(index);
        }
        if let Received::Fresh { cancel } = received {
            for cancelled in cancel.into_iter().filter(|&other| other != id) {
                self.cancel(cancelled);
            }
        }
    }

    /// Cancels request `id` wherever it is: released, its task (and any
    /// hand-off it is waiting in) dropped.
    fn cancel(&mut self, id: u64) {
        self.ledger.book().scheduler().release(id);
        for source in &mut self.sources {
            source.requests.retain(|request| request.assignment.id != id);
        }
    }

    fn fail(&mut self, source: usize) {
        if self.sources[source].live {
            self.sources[source].live = false;
            self.sources[source].requests.clear();
            self.ledger.book().scheduler().remove_source(source as SourceId);
        }
    }

    fn drain_one(&mut self) {
        if let Ok(WriteCommand::Block { index, data }) = self.queue.try_recv() {
            assert_eq!(data, block(index), "the writer got block {index}'s bytes");
            self.written.set(index);
        }
    }

    fn in_flight(&self) -> usize {
        self.sources.iter().map(|s| s.requests.len()).sum()
    }

    /// After the random steps: source 0 is (back) online and everyone
    /// behaves. Returns `Err` with the state if the download cannot finish.
    fn finish(&mut self, repair: bool) -> Result<(), String> {
        if !self.sources[0].live {
            self.sources[0].live = true;
            self.register(0);
        }
        for _round in 0..4 * BLOCKS {
            // The writer drains and waiting hand-offs go through (room goes
            // to them in the order they began to wait, so each is polled).
            loop {
                while self.queue.try_recv().map(|command| self.take(command)).is_ok() {}
                let waiting: Vec<u64> = self
                    .sources
                    .iter()
                    .flat_map(|source| source.requests.iter())
                    .filter(|r| r.handoff.is_some())
                    .map(|r| r.assignment.id)
                    .collect();
                if waiting.is_empty() {
                    break;
                }
                for id in waiting {
                    if let Some((source, index)) = self.find(id) {
                        self.arrive(source, index);
                    }
                }
            }
            if self.ledger.is_complete() {
                return if self.written.is_full() {
                    Ok(())
                } else {
                    Err(format!(
                        "complete, but the writer got only {} blocks",
                        self.written.count()
                    ))
                };
            }
            // The watchdog: its tick compares the ledger with the scheduler.
            if repair {
                self.ledger.book().repair();
            }
            let mut planned = false;
            for source in 0..SOURCES {
                while self.plan(source, 4) {
                    planned = true;
                }
            }
            if !planned && self.in_flight() == 0 {
                let book = self.ledger.book();
                return Err(format!(
                    "stuck: incomplete ({} of {BLOCKS} done, {} verified bytes), a live source holds every block, \
                     nothing in flight and no source gets work; lost blocks {:?}",
                    book.scheduler_ref().done().count(),
                    self.ledger.verified(),
                    book.lost(),
                ));
            }
            // Every request delivers one block (hand-offs that must wait,
            // wait for the next round's drain).
            for source in 0..SOURCES {
                let mut index = 0;
                while index < self.sources[source].requests.len() {
                    let before = self.sources[source].requests.len();
                    self.arrive(source, index);
                    if self.sources[source].requests.len() == before {
                        index += 1;
                    }
                }
            }
        }
        Err("did not finish within the rounds allowed".into())
    }

    /// Where request `id` is: its source and its place in that source's list.
    fn find(&self, id: u64) -> Option<(usize, usize)> {
        self.sources.iter().enumerate().find_map(|(source, s)| {
            s.requests
                .iter()
                .position(|r| r.assignment.id == id)
                .map(|index| (source, index))
        })
    }

    fn take(&mut self, command: WriteCommand) {
        if let WriteCommand::Block { index, .. } = command {
            self.written.set(index);
        }
    }
}

/// Runs `steps` and then the finish; `Err` on any broken promise.
fn check(
    order: Order,
    repair: bool,
    starts: &[(bool, Option<u32>)],
    resumed: u32,
    steps: &[Step],
) -> Result<(), String> {
    let mut model = Model::new(order, starts, resumed);
    for step in steps {
        model.run(step);
        if order == Order::Ledger {
            let lost = model.ledger.book().lost();
            if !lost.is_empty() {
                return Err(format!(
                    "after {step:?}: blocks done but never handed to the writer: {lost:?}"
                ));
            }
        }
        let size = file().1.layout().size();
        if model.ledger.verified() > size {
            return Err(format!(
                "after {step:?}: {} verified bytes of {size}",
                model.ledger.verified()
            ));
        }
    }
    model.finish(repair)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

type Case = (Vec<(bool, Option<u32>)>, u32, Vec<Step>);

fn cases() -> impl Strategy<Value = Case> {
    (
        sources(),
        // Resumed blocks: mostly none, sometimes a few.
        prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
        proptest::collection::vec(step(), 0..300),
    )
}

#[test]
fn every_interleaving_finishes_and_no_block_is_lost() {
    runner(512)
        .run(&cases(), |(starts, resumed, steps)| {
            check(Order::Ledger, false, &starts, resumed, &steps).map_err(TestCaseError::fail)
        })
        .unwrap();
}

/// The model has teeth: with issue 25's order (mark, then wait for the
/// writer) it finds an interleaving that can never finish.
#[test]
fn the_model_finds_issue_25s_hang_in_the_old_order() {
    let found = runner(2048).run(&cases(), |(starts, resumed, steps)| {
        check(Order::MarkThenSend, false, &starts, resumed, &steps).map_err(TestCaseError::fail)
    });
    let Err(failure) = found else {
        panic!("the model found no hang in the old order");
    };
    assert!(failure.to_string().contains("stuck"), "{failure}");
}

/// Even with that bug in place, the watchdog's re-plan (compare the ledger
/// with the scheduler, return lost blocks to the pool) lets every
/// interleaving finish.
#[test]
fn the_watchdogs_replan_rescues_the_old_order() {
    runner(512)
        .run(&cases(), |(starts, resumed, steps)| {
            check(Order::MarkThenSend, true, &starts, resumed, &steps).map_err(TestCaseError::fail)
        })
        .unwrap();
}
