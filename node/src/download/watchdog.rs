//! Noticing a download that has stopped moving: a pure state machine fed
//! readings by the coordinator's tick.
//!
//! Two jobs. For the user: a download with no new verified bytes for
//! [`SHOW_STALLED`] is shown as stalled, with the reason, instead of a frozen
//! bar. For robustness: a download that is incomplete, has a source it could
//! ask and has not moved for a while is **re-planned** (the ledger and the
//! scheduler's books checked and put right, orphaned requests released,
//! every source woken), so even a bug nobody has found yet costs seconds,
//! not forever. Re-planning a download that was only waiting is harmless.

use std::time::{Duration, Instant};

/// No new verified bytes for this long: shown as stalled. qBittorrent shows
/// "stalled" as soon as nothing flows; a few seconds of quiet are common
/// (a source's stall timeout is 3 s), so we wait a little longer.
pub const SHOW_STALLED: Duration = Duration::from_secs(10);
/// Re-plan when nothing has moved for this long with *nothing in flight*:
/// a source with room always asks for work within a few hundred
/// milliseconds, so this state should never last.
pub const REPLAN_IDLE: Duration = Duration::from_secs(5);
/// Re-plan when nothing has moved for this long although requests are in
/// flight: past every per-block patience a live source is given (its
/// stall timeout, or four times its usual pace), so those requests should
/// have been abandoned and reassigned by now.
pub const REPLAN_BUSY: Duration = Duration::from_secs(60);

/// What the coordinator sees on one tick.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub verified: u64,
    pub complete: bool,
    /// Blocks requested and not yet delivered.
    pub in_flight: u32,
    /// Sources that could be asked for blocks now: connected, the size
    /// known, neither busy (their retry timer is armed) nor connecting.
    pub live_sources: usize,
}

/// What to do about a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified bytes grew since the last reading, or the download has
    /// nothing to wait for.
    Moving,
    /// No progress yet, but not for long enough to act.
    Quiet,
    /// Re-plan now.
    Replan,
}

#[derive(Debug)]
pub struct Watchdog {
    verified: u64,
    /// When verified bytes last grew (or the download started).
    since: Instant,
    /// The last re-plan in the current quiet spell.
    replanned: Option<Instant>,
}

impl Watchdog {
    pub fn new(now: Instant) -> Self {
        Watchdog {
            verified: 0,
            since: now,
            replanned: None,
        }
    }

    pub fn observe(&mut self, now: Instant, reading: Reading) -> Verdict {
        if reading.verified != self.verified {
            self.verified = reading.verified;
            self.since = now;
            self.replanned = None;
            return Verdict::Moving;
        }
        if reading.complete || reading.live_sources == 0 {
            return Verdict::Quiet;
        }
        let patience = if reading.in_flight == 0 {
            REPLAN_IDLE
        } else {
            REPLAN_BUSY
        };
        let last = self.replanned.unwrap_or(self.since);
        if now.saturating_duration_since(last) >= patience {
            self.replanned = Some(now);
            Verdict::Replan
        } else {
            Verdict::Quiet
        }
    }

    /// How long nothing has moved, once that is long enough to show.
    pub fn stalled_for(&self, now: Instant) -> Option<Duration> {
        let quiet = now.saturating_duration_since(self.since);
        (quiet >= SHOW_STALLED).then_some(quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(verified: u64, in_flight: u32, live_sources: usize) -> Reading {
        Reading {
            verified,
            complete: false,
            in_flight,
            live_sources,
        }
    }

    #[test]
    fn replans_a_quiet_download_with_nothing_in_flight_and_again_later() {
        let start = Instant::now();
        let mut dog = Watchdog::new(start);
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(dog.observe(at(1), reading(100, 0, 2)), Verdict::Moving);
        assert_eq!(dog.observe(at(5), reading(100, 0, 2)), Verdict::Quiet);
        assert_eq!(dog.observe(at(6), reading(100, 0, 2)), Verdict::Replan);
        assert_eq!(dog.observe(at(7), reading(100, 0, 2)), Verdict::Quiet);
        assert_eq!(dog.observe(at(11), reading(100, 0, 2)), Verdict::Replan);
        assert_eq!(dog.stalled_for(at(11)), Some(Duration::from_secs(10)));
        assert_eq!(dog.observe(at(12), reading(200, 0, 2)), Verdict::Moving);
        assert_eq!(dog.stalled_for(at(12)), None);
    }

    #[test]
    fn requests_in_flight_get_more_patience_and_no_sources_none_at_all() {
        let start = Instant::now();
        let mut dog = Watchdog::new(start);
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(dog.observe(at(30), reading(0, 4, 1)), Verdict::Quiet);
        assert_eq!(dog.observe(at(60), reading(0, 4, 1)), Verdict::Replan);
        assert_eq!(dog.observe(at(200), reading(0, 0, 0)), Verdict::Quiet);
        let done = Reading {
            complete: true,
            ..reading(0, 0, 3)
        };
        assert_eq!(dog.observe(at(300), done), Verdict::Quiet);
    }
}
