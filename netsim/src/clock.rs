//! Virtual time and the event queue.
//!
//! Time is an integer count of microseconds, so sums are exact and a run
//! replays bit for bit. Events due at the same instant leave the queue in
//! the order they were scheduled (a sequence number breaks ties), never in
//! an order that depends on the heap's internals.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Microseconds since the start of the run.
pub type Time = u64;

/// A time that never comes.
pub const NEVER: Time = Time::MAX;

pub fn seconds(s: f64) -> Time {
    (s * 1e6).round() as Time
}

pub fn millis(ms: f64) -> Time {
    (ms * 1e3).round() as Time
}

pub fn as_duration(t: Time) -> Duration {
    Duration::from_micros(t)
}

pub fn as_seconds(t: Time) -> f64 {
    t as f64 / 1e6
}

struct Scheduled<E> {
    at: Time,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    // Reversed: BinaryHeap is a max-heap, we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The future, earliest first.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled<E>>,
    seq: u64,
    now: Time,
    peak: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            peak: 0,
        }
    }
}

impl<E> EventQueue<E> {
    pub fn now(&self) -> Time {
        self.now
    }

    /// Schedules `event` at `at` (the past is taken as now).
    pub fn at(&mut self, at: Time, event: E) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            event,
        });
        self.peak = self.peak.max(self.heap.len());
    }

    /// The next event, advancing the clock to it.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let next = self.heap.pop()?;
        self.now = next.at;
        Some((next.at, next.event))
    }

    /// Events handled or pending so far.
    pub fn scheduled(&self) -> u64 {
        self.seq
    }

    /// Most events pending at once.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_scheduling_order() {
        let mut queue = EventQueue::default();
        queue.at(30, "c");
        queue.at(10, "a");
        queue.at(30, "d");
        queue.at(10, "b");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, vec![(10, "a"), (10, "b"), (30, "c"), (30, "d")]);
        assert_eq!(queue.now(), 30);
        queue.at(5, "late");
        assert_eq!(queue.pop(), Some((30, "late")), "the past is now");
    }
}
