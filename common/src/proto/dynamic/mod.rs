//! Dynamic querying: search only as far as the results require.
//!
//! A flood at a fixed TTL costs the same for a file a thousand peers hold
//! as for one held by a single peer, and is too short for the rare one or
//! far too long for the popular one. Dynamic querying (Gnutella's, from
//! LimeWire) lets the leaf's own supernode run the search in steps:
//!
//! 1. **probe**: the query goes at once to the few neighbours whose keyword
//!    tables put a match nearest ([`Reach::Within`]), with just the TTL that
//!    reaches it ([`DynamicConfig::probe_fanout`], at least
//!    [`DynamicConfig::probe_ttl`]); without tables, to the first few at
//!    the probe TTL;
//! 2. **estimate**: results per supernode searched so far, where the number
//!    searched is estimated from each neighbour's degree `d`: a copy sent
//!    with TTL `t` reaches about `1 + (d−1) + … + (d−1)^t` supernodes
//!    ([`reach`]) — pruned by tables or not, they were searched;
//! 3. **widen**: one neighbour at a time, nearest match first, with the
//!    smallest TTL whose reach is expected to bring the missing results
//!    (never less than what reaches its match), shared among the
//!    neighbours not yet asked; with no result yet, the largest TTL (a rare
//!    file gets the whole horizon);
//! 4. **stop** at [`DynamicConfig::target_results`] results, at the time
//!    limit, or when every neighbour worth asking has been asked.
//!
//! A neighbour whose tables rule out everything they cover
//! ([`Reach::Beyond`]) is asked only while nothing at all has been found,
//! and then with a TTL that goes past what its tables cover: once a result
//! is in, what lies past every table is not worth a broadcast, and widening
//! stays close ([`DynamicConfig::max_widening_ttl`]).
//!
//! If asking one neighbour per step could not finish before the time
//! limit, each step asks as many as needed to fit: a search for a rare file
//! still covers every neighbour in time.
//!
//! Sans-IO like [`super::routing`]: the caller feeds results and the time
//! and sends the probes it is told to, as [`super::routing::FloodQuery`]s
//! with the query's one id (so a supernode reached twice drops the copy).

use std::time::Duration;

use super::id::PeerId;

#[derive(Debug, Clone)]
pub struct DynamicConfig {
    /// Stop once this many results are in.
    pub target_results: u32,
    /// Stop this long after the start, whatever came in.
    pub time_limit: Duration,
    /// Neighbours asked in the first probe.
    pub probe_fanout: usize,
    /// TTL of the first probe's copies (1: the neighbours and theirs).
    pub probe_ttl: u8,
    /// Largest TTL a copy may carry (a neighbour lowers larger ones anyway).
    pub max_ttl: u8,
    /// Time allowed for one hop out and back before the next step; a copy
    /// with TTL `t` is given `(t + 1)` of these.
    pub wait_per_hop: Duration,
    /// Degree assumed for a neighbour whose degree is not known.
    pub assumed_degree: u32,
    /// Largest TTL of a widening step once a result is in. The first probe
    /// went straight to the nearest matches, however far the tables saw
    /// them; widening looks for more sources of what was found, which the
    /// tables route to close by, and a longer copy mostly finds duplicates
    /// of the same file for many more messages.
    pub max_widening_ttl: u8,
    /// Hops a copy is broadcast past a neighbour's tables when they rule
    /// out everything they cover ([`Reach::Beyond`]) and nothing has been
    /// found yet: 1 asks it with the TTL its tables end at, so only the
    /// hop to it is unchecked and its neighbours' tables route the rest.
    /// More finds files past the tables for a flood's cost.
    pub broadcast_past_tables: u8,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            target_results: 150,
            time_limit: Duration::from_secs(30),
            probe_fanout: 3,
            probe_ttl: 1,
            max_ttl: 4,
            wait_per_hop: Duration::from_millis(1200),
            assumed_degree: 8,
            max_widening_ttl: 2,
            broadcast_past_tables: 1,
        }
    }
}

/// A neighbour the search may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub peer: PeerId,
    /// Its number of supernode neighbours, if it told us (0: unknown).
    pub degree: u32,
    /// What its keyword tables say about the query.
    pub reach: Reach,
}

/// How far past a neighbour the nearest match may be, by its keyword
/// tables ([`super::qrp::horizon`]). Level `k` of a neighbour's tables
/// covers every supernode within `k` hops past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// No tables from it: anything may be anywhere.
    Unknown,
    /// Its level-`k` table is the first that may match: a copy needs TTL
    /// `k` on arrival there to get to the match.
    Within(u8),
    /// It sent `n` levels and none matches: nothing within `n − 1` hops
    /// past it, so a copy is useful only with TTL `n` or more.
    Beyond(u8),
}

impl Reach {
    /// Whether a copy arriving with `ttl` can find anything the tables
    /// have not ruled out.
    pub fn worth_asking(self, ttl: u8) -> bool {
        match self {
            Reach::Unknown => true,
            Reach::Within(level) => ttl >= level,
            Reach::Beyond(levels) => ttl >= levels,
        }
    }
}

/// What the caller should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the query to `to` with this TTL.
    Probe { to: PeerId, ttl: u8 },
    /// The search is over; ignore later results for the leaf's count but
    /// keep routing them back (the router does).
    Finish(Finish),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The target number of results came in.
    Enough,
    /// The time limit passed.
    TimeLimit,
    /// Every neighbour was asked and given time to answer.
    Exhausted,
}

/// Supernodes a copy with TTL `ttl` reaches through a neighbour of degree
/// `degree`, on a tree-like overlay: `Σ_{i=0..=ttl} (degree−1)^i`.
pub fn reach(degree: u32, ttl: u8) -> f64 {
    let branching = f64::from(degree.saturating_sub(1).max(1));
    (0..=i32::from(ttl)).map(|hop| branching.powi(hop)).sum()
}

/// One search run by the leaf's supernode.
#[derive(Debug, Clone)]
pub struct DynamicQuery {
    config: DynamicConfig,
    /// Neighbours not asked yet, in the order they will be.
    waiting: Vec<Neighbour>,
    results: u32,
    /// Supernodes searched so far, estimated (1: this one).
    searched: f64,
    probes_sent: u32,
    deadline: Duration,
    next_step: Duration,
    finished: Option<Finish>,
}

impl DynamicQuery {
    /// Starts a search at `now`. Results from this supernode's own index
    /// should be fed in with [`Self::on_results`] like any others.
    pub fn start(config: DynamicConfig, neighbours: Vec<Neighbour>, now: Duration) -> (Self, Vec<Step>) {
        let mut waiting = neighbours;
        // Nearest match first, then the unknown, then those ruled out; the
        // stable sort keeps the caller's order within each. Popped from the
        // end.
        waiting.sort_by_key(|neighbour| match neighbour.reach {
            Reach::Within(level) => u16::from(level),
            Reach::Unknown => 0x100,
            Reach::Beyond(_) => 0x200,
        });
        waiting.reverse();
        let mut query = DynamicQuery {
            deadline: now + config.time_limit,
            next_step: now,
            waiting,
            results: 0,
            searched: 1.0,
            probes_sent: 0,
            finished: None,
            config,
        };
        let ttl = query.config.probe_ttl.min(query.config.max_ttl);
        // The first probe goes to the nearest matches only (all at the
        // same level, up to the fan-out); a neighbour whose tables rule out
        // everything waits for the widening.
        let nearest = query.waiting.last().map(|next| next.reach);
        let fanout = query
            .waiting
            .iter()
            .rev()
            .take(query.config.probe_fanout.max(1))
            .take_while(|neighbour| {
                Some(neighbour.reach) == nearest && !matches!(neighbour.reach, Reach::Beyond(_))
            })
            .count();
        if fanout == 0 {
            // No table points anywhere: straight to the widening.
            let steps = query.on_tick(now);
            return (query, steps);
        }
        let mut steps = Vec::new();
        query.ask(fanout, ttl, now, &mut steps);
        (query, steps)
    }

    /// `count` more results (new files, from anywhere, including our own index).
    pub fn on_results(&mut self, count: u32, now: Duration) -> Vec<Step> {
        if self.finished.is_some() {
            return Vec::new();
        }
        self.results = self.results.saturating_add(count);
        if self.results >= self.config.target_results {
            return vec![self.finish(Finish::Enough)];
        }
        self.on_tick(now)
    }

    /// The time passes: maybe the next step. Call at [`Self::next_wakeup`].
    pub fn on_tick(&mut self, now: Duration) -> Vec<Step> {
        if self.finished.is_some() {
            return Vec::new();
        }
        if now >= self.deadline {
            return vec![self.finish(Finish::TimeLimit)];
        }
        if now < self.next_step {
            return Vec::new();
        }
        if self.results > 0 {
            // Past every table there is only a broadcast; with results in,
            // not worth it.
            self.waiting
                .retain(|neighbour| !matches!(neighbour.reach, Reach::Beyond(_)));
        }
        if self.waiting.is_empty() {
            return vec![self.finish(Finish::Exhausted)];
        }
        let mut ttl = self.next_ttl();
        if self.results > 0 {
            // The nearest matches are in: more sources are sought close by.
            ttl = ttl.min(self.config.max_widening_ttl);
        }
        let step_time = self.config.wait_per_hop * (u32::from(ttl) + 1);
        let steps_left = ((self.deadline - now).as_secs_f64() / step_time.as_secs_f64())
            .floor()
            .max(1.0);
        let count = (self.waiting.len() as f64 / steps_left).ceil() as usize;
        let mut steps = Vec::new();
        self.ask(count, ttl, now, &mut steps);
        steps
    }

    /// When to call [`Self::on_tick`] next (`None` once finished).
    pub fn next_wakeup(&self) -> Option<Duration> {
        self.finished.is_none().then(|| self.next_step.min(self.deadline))
    }

    pub fn results(&self) -> u32 {
        self.results
    }

    /// Supernodes searched so far, as estimated from degrees.
    pub fn searched(&self) -> f64 {
        self.searched
    }

    /// Copies sent so far.
    pub fn probes_sent(&self) -> u32 {
        self.probes_sent
    }

    pub fn finished(&self) -> Option<Finish> {
        self.finished
    }

    /// The TTL for the next neighbour: the smallest whose reach should
    /// bring this neighbour's share of the missing results.
    fn next_ttl(&self) -> u8 {
        let max_ttl = self.config.max_ttl;
        if self.results == 0 {
            return max_ttl;
        }
        let per_supernode = f64::from(self.results) / self.searched;
        let missing = f64::from(self.config.target_results.saturating_sub(self.results));
        let share = missing / per_supernode / self.waiting.len().max(1) as f64;
        let degree = self.degree(self.waiting.last().map_or(0, |next| next.degree));
        (0..=max_ttl)
            .find(|&ttl| reach(degree, ttl) >= share)
            .unwrap_or(max_ttl)
    }

    fn degree(&self, told: u32) -> u32 {
        if told == 0 {
            self.config.assumed_degree
        } else {
            told
        }
    }

    /// Asks up to `count` waiting neighbours at `ttl` and schedules the
    /// next step after their answers had time to come back.
    fn ask(&mut self, count: usize, ttl: u8, now: Duration, steps: &mut Vec<Step>) {
        let mut asked = 0;
        let mut longest = ttl;
        while asked < count {
            let Some(neighbour) = self.waiting.pop() else {
                break;
            };
            // Never less than what reaches what its tables point at; past
            // the tables, only as far as a broadcast is allowed.
            let ttl = match neighbour.reach {
                Reach::Within(level) => ttl.max(level),
                Reach::Beyond(levels) => {
                    let past = self.config.broadcast_past_tables.max(1) - 1;
                    ttl.clamp(levels, levels.saturating_add(past))
                }
                Reach::Unknown => ttl,
            }
            .min(self.config.max_ttl);
            // Searched either way: its tables vouch for what they rule out.
            self.searched += reach(self.degree(neighbour.degree), ttl);
            if !neighbour.reach.worth_asking(ttl) {
                continue;
            }
            steps.push(Step::Probe {
                to: neighbour.peer,
                ttl,
            });
            self.probes_sent += 1;
            asked += 1;
            longest = longest.max(ttl);
        }
        self.next_step = now + self.config.wait_per_hop * (u32::from(longest) + 1);
    }

    fn finish(&mut self, reason: Finish) -> Step {
        self.finished = Some(reason);
        Step::Finish(reason)
    }
}

#[cfg(test)]
mod tests;
