//! A token-bucket rate limiter that is fair between its users.
//!
//! Waiters queue on a FIFO mutex and each takes one chunk's worth of tokens
//! per turn, so concurrent uploads share the rate round-robin instead of
//! the fastest asker taking it all.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: f64,
    burst: f64,
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
        let rate = bytes_per_second.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        RateLimiter {
            bytes_per_second: rate,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                updated: Instant::now(),
            }),
        }
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second as u64
    }

    /// The chunk size callers should take per turn: small enough that the
    /// rate stays smooth and turns rotate often.
    pub fn chunk(&self) -> usize {
        (self.burst as usize).clamp(4 * 1024, 64 * 1024)
    }

    /// Waits until `bytes` may be sent.
    pub async fn acquire(&self, bytes: usize) {
        let bytes = bytes as f64;
        // Holding the lock while sleeping is the point: later callers queue
        // behind this one in FIFO order.
        let mut bucket = self.bucket.lock().await;
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * self.bytes_per_second).min(self.burst.max(bytes));
            bucket.updated = now;
            if bucket.tokens >= bytes {
                bucket.tokens -= bytes;
                return;
            }
            let missing = bytes - bucket.tokens;
            tokio::time::sleep(Duration::from_secs_f64(missing / self.bytes_per_second)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
