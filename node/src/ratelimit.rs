//! A token-bucket rate limiter that is fair between its users.
//!
//! Waiters queue on a FIFO mutex and each takes one chunk's worth of tokens
//! per turn, so concurrent uploads share the rate round-robin instead of
//! the fastest asker taking it all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// The rate may change while the limiter is in use (the desktop app's
/// settings); `0` means unlimited, and then [`RateLimiter::active`] is `None`.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter for `bytes_per_second`, allowing bursts of up to 100 ms
    /// worth (at least 16 KiB) so small transfers are not delayed.
    pub fn new(bytes_per_second: u64) -> Self {
        Self::optional(Some(bytes_per_second.max(1)))
    }

    /// A limiter for `bytes_per_second`, or one that does not limit (`None`)
    /// until [`RateLimiter::set_rate`] gives it a rate.
    pub fn optional(bytes_per_second: Option<u64>) -> Self {
        let limiter = RateLimiter {
            bytes_per_second: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                updated: Instant::now(),
            }),
        };
        limiter.set_rate(bytes_per_second);
        limiter
    }

    /// Changes the rate (`None`: unlimited) from now on.
    pub fn set_rate(&self, bytes_per_second: Option<u64>) {
        self.bytes_per_second
            .store(bytes_per_second.map_or(0, |rate| rate.max(1)), Ordering::Relaxed);
    }

    /// This limiter if it limits now.
    pub fn active(&self) -> Option<&RateLimiter> {
        (self.bytes_per_second() > 0).then_some(self)
    }

    /// The rate now (0: unlimited).
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second.load(Ordering::Relaxed)
    }

    /// Bursts of up to 100 ms worth (at least 16 KiB) pass at once.
    fn burst(rate: f64) -> f64 {
        (rate / 10.0).max(16.0 * 1024.0)
    }

    /// The chunk size callers should take per turn: small enough that the
    /// rate stays smooth and turns rotate often.
    pub fn chunk(&self) -> usize {
        (Self::burst(self.bytes_per_second() as f64) as usize).clamp(4 * 1024, 64 * 1024)
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: usize) {
        let bytes = bytes as f64;
        // Holding the lock while sleeping is the point: later callers queue
        // behind this one in FIFO order.
        let mut bucket = self.bucket.lock().await;
        loop {
            let rate = self.bytes_per_second() as f64;
            if rate == 0.0 {
                return;
            }
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(Self::burst(rate).max(bytes));
            bucket.updated = now;
            if bucket.tokens >= bytes {
                bucket.tokens -= bytes;
                return;
            }
            let missing = bytes - bucket.tokens;
            // At most a second at a time, so a raised rate is felt soon.
            tokio::time::sleep(Duration::from_secs_f64((missing / rate).min(1.0))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_rate_can_change_and_be_lifted() {
        let limiter = RateLimiter::optional(None);
        assert!(limiter.active().is_none());
        let started = Instant::now();
        limiter.acquire(10 << 20).await;
        assert!(started.elapsed() < Duration::from_millis(50));
        limiter.set_rate(Some(100_000));
        assert_eq!(limiter.active().map(RateLimiter::bytes_per_second), Some(100_000));
        let started = Instant::now();
        limiter.acquire(16 * 1024).await; // the burst
        limiter.acquire(30_000).await;
        let took = started.elapsed();
        assert!(
            took > Duration::from_millis(200) && took < Duration::from_millis(600),
            "{took:?}"
        );
        limiter.set_rate(None);
        assert!(limiter.active().is_none());
    }

    #[tokio::test]
    async fn holds_the_rate_and_shares_it_fairly() {
        let limiter = Arc::new(RateLimiter::new(1_000_000));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut sent = 0usize;
                while started.elapsed() < Duration::from_millis(600) {
                    limiter.acquire(limiter.chunk()).await;
                    sent += limiter.chunk();
                }
                sent
            }));
        }
        let mut totals = Vec::new();
        for task in tasks {
            totals.push(task.await.unwrap());
        }
        let total: usize = totals.iter().sum();
        let rate = total as f64 / started.elapsed().as_secs_f64();
        assert!(rate < 1_250_000.0 && rate > 700_000.0, "rate {rate}");
        let (a, b) = (totals[0] as f64, totals[1] as f64);
        assert!((a - b).abs() / (a + b) < 0.2, "unfair split {totals:?}");
    }
}
