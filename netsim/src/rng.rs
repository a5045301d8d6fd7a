//! A small seeded random number generator and the distributions the
//! simulator draws from.
//!
//! Determinism is the point: the same seed must give the same run on any
//! machine, so the generator is written out here (xoshiro256**, seeded
//! through SplitMix64) instead of borrowed from a crate whose stream may
//! change between versions.

/// xoshiro256** (Blackman & Vigna): fast, 256 bits of state, good enough
/// statistics for a simulation.
#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

/// One step of SplitMix64, used to spread a seed over the state and to
/// hash small tuples into well-mixed numbers.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut state = [0; 4];
        for word in &mut state {
            x = splitmix(x);
            *word = x;
        }
        Rng { state }
    }

    /// An independent generator for one purpose (population, churn,
    /// queries...), so adding draws to one stream does not shift the others.
    pub fn stream(seed: u64, purpose: u64) -> Self {
        Rng::new(splitmix(seed ^ splitmix(purpose)))
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.state[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.state[1] << 17;
        self.state[2] ^= self.state[0];
        self.state[3] ^= self.state[1];
        self.state[1] ^= self.state[2];
        self.state[0] ^= self.state[3];
        self.state[2] ^= t;
        self.state[3] = self.state[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1], safe to take the logarithm of.
    fn open_unit(&mut self) -> f64 {
        1.0 - self.unit()
    }

    /// Uniform integer in [0, n), without modulo bias worth noticing (Lemire).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform integer in [low, high].
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.open_unit().ln()
    }

    /// Weibull with `shape` k and `scale` λ: λ·(−ln U)^(1/k).
    pub fn weibull(&mut self, shape: f64, scale: f64) -> f64 {
        scale * (-self.open_unit().ln()).powf(1.0 / shape)
    }

    /// Standard normal (Box–Muller; one of the pair is thrown away for simplicity).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.open_unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma(shape, 1) by Marsaglia & Tsang, with the usual boost for shape < 1.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.open_unit().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.open_unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

/// Draws indices 0..n with probability ∝ 1/(i+1)^α, by binary search in
/// the cumulative table (8 bytes per item: fine up to millions).
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, alpha: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative = Vec::with_capacity(n);
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(alpha);
            cumulative.push(total);
        }
        for value in &mut cumulative {
            *value /= total;
        }
        Zipf { cumulative }
    }

    /// Probability of index `i`.
    pub fn probability(&self, i: usize) -> f64 {
        let below = if i == 0 { 0.0 } else { self.cumulative[i - 1] };
        self.cumulative[i] - below
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(7, 2).next_u64());
    }

    #[test]
    fn distributions_have_their_textbook_moments() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        let mean_exp = (0..n).map(|_| rng.exponential(3.0)).sum::<f64>() / n as f64;
        assert!((mean_exp - 3.0).abs() < 0.05, "{mean_exp}");
        // Weibull(k = 0.5, λ): median λ·(ln 2)^2.
        let mut draws: Vec<f64> = (0..n).map(|_| rng.weibull(0.5, 100.0)).collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[n / 2];
        let expected = 100.0 * std::f64::consts::LN_2.powi(2);
        assert!((median / expected - 1.0).abs() < 0.03, "{median} vs {expected}");
        let mean_gamma = (0..n).map(|_| rng.gamma(3.0)).sum::<f64>() / n as f64;
        assert!((mean_gamma - 3.0).abs() < 0.05, "{mean_gamma}");
        let mean_small = (0..n).map(|_| rng.gamma(0.4)).sum::<f64>() / n as f64;
        assert!((mean_small - 0.4).abs() < 0.02, "{mean_small}");
        let below: Vec<u64> = (0..1000).map(|_| rng.below(3)).collect();
        assert!(below.iter().all(|&x| x < 3) && below.contains(&0) && below.contains(&2));
    }

    #[test]
    fn zipf_favours_the_head_as_the_law_says() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        let n = 100_000;
        for _ in 0..n {
            let i = zipf.sample(&mut rng);
            if i < 3 {
                counts[i] += 1;
            }
        }
        // With α = 1 the first item is twice as likely as the second.
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((ratio - 2.0).abs() < 0.15, "{ratio}");
        assert!((counts[0] as f64 / n as f64 - zipf.probability(0)).abs() < 0.01);
    }
}
