//! Proof-of-possession checks: a supernode asks each joined leaf, now and
//! then, for one random 1 KiB chunk of one of the files it publishes, with
//! the chaining values that prove it ([`canopy_common::proto::possession`]).
//! A wrong or missing answer takes that file out of the index; a few in a
//! row drop the leaf and keep it out for a while. Index poisoning (entries
//! for files nobody holds) then lasts seconds, not the session.
//!
//! Cheap for an honest leaf: one disk read of a block and ~1.7 KB on the
//! wire per check, one check a minute. A leaf that answers slowly ties up
//! nothing but its own check: one at a time per leaf, each with a deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use canopy_common::net::{ask, random_bytes, NetError};
use canopy_common::proto::possession::{self, chunk_count, ProofError};
use canopy_common::proto::{ContentHash, Request, Response};

/// How a supernode checks what its leaves publish.
#[derive(Debug, Clone)]
pub struct PossessionConfig {
    /// Check at all (`--no-possession-checks` turns it off, for a private
    /// network of trusted machines or a benchmark of fake leaves).
    pub enabled: bool,
    /// A leaf's first check comes this long after it joined: it publishes
    /// its list first.
    pub first_after: Duration,
    /// Then one check per leaf this often.
    pub every: Duration,
    /// After a failed check, the next one comes this soon: a poisoning
    /// leaf is found out in seconds.
    pub after_failure: Duration,
    /// Strikes in a row that drop the leaf: a wrong proof, a wrong size or
    /// no answer is two, "I do not hold it" one (an honest leaf whose
    /// files changed on disk says so until its rescan catches up, while a
    /// liar soon runs out of files it can admit to). Three lies, or six
    /// admissions, in a row with no check passed between.
    pub strikes: u32,
    /// A dropped leaf may not join again for this long.
    pub ban: Duration,
}

impl Default for PossessionConfig {
    fn default() -> Self {
        PossessionConfig {
            enabled: true,
            first_after: Duration::from_secs(3),
            every: Duration::from_secs(600),
            after_failure: Duration::from_secs(2),
            strikes: 6,
            ban: Duration::from_secs(600),
        }
    }
}

/// How long a leaf has to answer one check: a block read from disk and a
/// round trip.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters for operators (`canopy status`, metrics).
#[derive(Debug, Default)]
pub struct PossessionStats {
    pub passed: AtomicU64,
    pub failed: AtomicU64,
    /// Entries taken out of the index because their check failed.
    pub entries_dropped: AtomicU64,
    /// Leaves dropped (and kept out) for failing checks in a row.
    pub leaves_dropped: AtomicU64,
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("it does not hold the file")]
    NotHeld,
    #[error("no answer within {CHECK_TIMEOUT:?}")]
    Silent,
    #[error("the exchange failed: {0}")]
    Net(#[from] NetError),
    #[error("it answered {0}")]
    Unexpected(String),
    #[error("it says the file is {said} bytes, it published {published}")]
    WrongSize { said: u64, published: u64 },
    #[error("its proof does not hold: {0}")]
    Proof(#[from] ProofError),
}

/// Asks the leaf at the other end of `connection` for a random chunk of
/// file `hash` (published as `size` bytes) and checks the proof.
pub async fn check(connection: &quinn::Connection, hash: ContentHash, size: u64) -> Result<(), CheckError> {
    let chunk = u64::from_le_bytes(random_bytes()) % chunk_count(size);
    let answer = tokio::time::timeout(CHECK_TIMEOUT, ask(connection, &Request::Prove { hash, chunk }))
        .await
        .map_err(|_| CheckError::Silent)??;
    match answer {
        Response::Proof {
            size: said,
            data,
            proof,
        } => {
            if said != size {
                return Err(CheckError::WrongSize {
                    said,
                    published: size,
                });
            }
            if proof.len() > possession::MAX_PROOF_LEN {
                return Err(ProofError::ProofLength {
                    expected: possession::MAX_PROOF_LEN,
                    got: proof.len(),
                }
                .into());
            }
            possession::verify(hash, size, chunk, &data, &proof)?;
            Ok(())
        }
        Response::NotFound { .. } => Err(CheckError::NotHeld),
        other => Err(CheckError::Unexpected(format!("{other:?}"))),
    }
}

/// A record of one leaf's checks: strikes since its last passed check.
#[derive(Debug, Default)]
pub struct Strikes {
    in_a_row: u32,
}

impl Strikes {
    /// Records a check's outcome; whether the leaf is now to be dropped.
    pub fn record(&mut self, outcome: &Result<(), CheckError>, config: &PossessionConfig) -> bool {
        self.in_a_row = match outcome {
            Ok(()) => 0,
            Err(CheckError::NotHeld) => self.in_a_row + 1,
            Err(_) => self.in_a_row + 2,
        };
        self.in_a_row >= config.strikes
    }

    /// When the next check is due after this outcome.
    pub fn next_after(&self, config: &PossessionConfig) -> Duration {
        match self.in_a_row {
            0 => config.every,
            _ => config.after_failure,
        }
    }
}

/// Counts one outcome in `stats`.
pub fn count(stats: &PossessionStats, passed: bool) {
    let counter = if passed { &stats.passed } else { &stats.failed };
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_lies_or_six_admissions_in_a_row_drop_a_leaf_and_a_pass_forgives() {
        let config = PossessionConfig::default();
        let lie = Err(CheckError::Proof(ProofError::Mismatch));
        let not_held = Err(CheckError::NotHeld);
        let mut strikes = Strikes::default();
        assert!(!strikes.record(&lie, &config));
        assert_eq!(strikes.next_after(&config), config.after_failure);
        assert!(!strikes.record(&lie, &config));
        assert!(!strikes.record(&Ok(()), &config));
        assert_eq!(strikes.next_after(&config), config.every);
        assert!(!strikes.record(&lie, &config));
        assert!(!strikes.record(&lie, &config));
        assert!(strikes.record(&lie, &config));

        let mut strikes = Strikes::default();
        for _ in 0..5 {
            assert!(!strikes.record(&not_held, &config));
        }
        assert!(strikes.record(&not_held, &config));

        let mut strikes = Strikes::default();
        for _ in 0..2 {
            assert!(!strikes.record(&not_held, &config));
        }
        assert!(!strikes.record(&Err(CheckError::Silent), &config));
        assert!(!strikes.record(&not_held, &config));
        assert!(strikes.record(&not_held, &config));
    }
}
