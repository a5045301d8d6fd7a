//! Budgets: a rate with a burst, the one shape every cap in Canopy takes.
//!
//! Sans-IO like the rest of `proto`: time is whatever `now` the caller
//! passes (a supernode's uptime, the simulator's clock), so the simulator
//! runs the same caps as real supernodes.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Searches one searcher (a leaf, or any peer asking) may start per second
/// at one supernode, and in a burst: a person types a few searches a
/// minute; a storm from one peer must not starve the others.
pub const SEARCHES_PER_SECOND: f64 = 5.0;
pub const SEARCH_BURST: f64 = 10.0;
/// Searchers whose budgets a supernode keeps at once.
pub const MAX_SEARCHERS: usize = 100_000;

/// Pushes and hole punches one peer may ask of one supernode per second,
/// and in a burst: each makes a leaf dial out (and, for a punch, makes the
/// asker's packets meet it), so a flood from one peer must not turn the
/// supernode's leaves into a cannon. A download asks once per source.
pub const PUNCHES_PER_SECOND: f64 = 2.0;
pub const PUNCH_BURST: f64 = 5.0;
/// Askers whose punch budgets a supernode keeps at once.
pub const MAX_PUNCHERS: usize = 10_000;

/// A token bucket: refills at `rate` tokens a second up to `burst`; a cost
/// is taken only when the bucket holds it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Duration,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: f64, burst: f64, now: Duration) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes `cost` tokens if the bucket holds them after refilling to
    /// `now`; `false` takes nothing. A `now` before the last one counts as
    /// no time passed.
    pub fn take(&mut self, cost: f64, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = self.updated.max(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// When the bucket was last used.
    pub fn updated(&self) -> Duration {
        self.updated
    }
}

/// One [`TokenBucket`] per key (a searcher, a neighbour), made full on
/// first use. Bounded: past `max_keys`, keys idle long enough to be full
/// again are forgotten (a full bucket is what a new key gets anyway).
#[derive(Debug, Clone)]
pub struct Budgets<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
}

impl<K: Eq + Hash> Budgets<K> {
    pub fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        Budgets {
            rate,
            burst,
            max_keys,
            buckets: HashMap::new(),
        }
    }

    /// Takes `cost` from `key`'s bucket; see [`TokenBucket::take`].
    pub fn take(&mut self, key: K, cost: f64, now: Duration) -> bool {
        if self.buckets.len() >= self.max_keys {
            let refill = Duration::from_secs_f64(self.burst / self.rate.max(f64::MIN_POSITIVE));
            self.buckets
                .retain(|_, bucket| now.saturating_sub(bucket.updated()) < refill);
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(rate, burst, now))
            .take(cost, now)
    }

    /// Keys with a bucket now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut bucket = TokenBucket::full(5.0, 10.0, at(0));
        assert_eq!((0..12).filter(|_| bucket.take(1.0, at(0))).count(), 10);
        assert!(!bucket.take(1.0, at(100)), "half a token after 100 ms");
        assert!(bucket.take(1.0, at(200)));
        // Refills stop at the burst.
        assert_eq!((0..20).filter(|_| bucket.take(1.0, at(60_000))).count(), 10);
        // A cost larger than what is held takes nothing.
        let mut bytes = TokenBucket::full(1000.0, 4000.0, at(0));
        assert!(!bytes.take(5000.0, at(0)));
        assert!(bytes.take(4000.0, at(0)));
        // Time running backwards refills nothing.
        assert!(!bytes.take(1.0, at(0)));
    }

    #[test]
    fn budgets_are_per_key_and_bounded() {
        let mut budgets = Budgets::new(5.0, 10.0, 3);
        assert_eq!((0..11).filter(|_| budgets.take("storm", 1.0, at(0))).count(), 10);
        assert!(
            budgets.take("calm", 1.0, at(0)),
            "one key's storm leaves the others alone"
        );
        budgets.take("a", 1.0, at(0));
        // Full: keys idle for a whole refill (2 s) are forgotten first.
        assert!(budgets.take("b", 1.0, at(5_000)));
        assert!(budgets.len() <= 2, "{}", budgets.len());
    }
}
