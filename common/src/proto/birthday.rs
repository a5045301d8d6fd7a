//! Punching through a router that gives every peer a new port
//! ("symmetric", endpoint-dependent mapping) when the other side's router
//! keeps one port ("cone"): the birthday paradox, as Tailscale does it.
//!
//! A plain punch needs each side to know the port the other's packets
//! will come from. Behind a symmetric router that port is chosen at random
//! for each peer, so nobody can know it. Instead the symmetric side (the
//! **hard** side) opens [`HARD_PORTS`] sockets and sends a packet from
//! each towards the cone side's one outside address: its router opens
//! that many random outside ports, each for the cone side only. The cone
//! side (the **easy** side) then sends [`PROBES`] packets from its
//! listening port to random ports of the hard side's outside IP. A probe
//! that lands on one of the open ports reaches one hard-side socket — and
//! the easy side's router, having sent to that port, now lets its answer
//! in. Whoever dials then dials from (or to) exactly that port.
//!
//! With `h` open ports among `n` = 64,512 and `p` probes, the chance that
//! none lands is `(1 - h/n)^p`: 256 ports and 1,024 probes land 98.3 % of
//! the time ([`success_chance`]), against ~0 for a plain punch. Two
//! symmetric routers defeat it (neither side knows a port to aim at): that
//! pair takes the relay.
//!
//! Who does what is decided by the source's supernode, which knows both
//! sides' routers ([`plan`]): the downloader says its own in
//! `Request::Traverse`, a leaf said its own in `Request::Traits` when it
//! joined. A leaf that never said (an older one) gets only the orders it
//! has always understood.

use serde::{Deserialize, Serialize};

/// Sockets the hard side opens. Tailscale's figure; each costs one
/// conntrack entry on the router for up to 30 s.
pub const HARD_PORTS: usize = 256;
/// Probes the easy side sends: 12 bytes each, 12 KiB in all.
pub const PROBES: usize = 1024;
/// The ports a Linux masquerade (and most routers) maps unprivileged
/// source ports into.
pub const FIRST_PORT: u16 = 1024;

/// Leaf feature: it understands `SessionNotice::Birthday`.
pub const FEATURE_BIRTHDAY: u32 = 1;

/// What a leaf tells its supernode about itself after joining, so the
/// supernode can plan punches with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traits {
    /// Its router gives every peer a new port (as far as it knows).
    pub symmetric: bool,
    /// `FEATURE_*` bits it speaks; unknown bits are ignored.
    pub features: u32,
}

/// The downloader's part in reaching a firewalled leaf, as its supernode
/// plans it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plan {
    /// A plain punch: send a few packets to the leaf's address from the
    /// listening port; the leaf dials us.
    Punch,
    /// We are the easy side: send [`PROBES`] packets to random ports of
    /// the leaf's IP from the listening port; the leaf dials us from the
    /// socket one of them reaches.
    Spray,
    /// We are the hard side: open [`HARD_PORTS`] sockets towards the
    /// leaf's address; when the leaf's probe reaches one, dial the leaf
    /// from it.
    Open,
    /// No punch can work (both routers symmetric, or the leaf cannot take
    /// part): ask for the relay straight away.
    Relay,
}

/// What the supernode tells the leaf to do for a downloader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafOrder {
    /// `SessionNotice::Push`: dial the downloader.
    Push,
    /// `SessionNotice::Birthday { spray: true }`.
    Spray,
    /// `SessionNotice::Birthday { spray: false }`.
    Open,
    /// Nothing now (the relay will have the leaf dial it).
    Nothing,
}

/// What a downloader says of itself when it asks for a way to a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downloader {
    /// Its router gives every peer a new port (as far as it knows).
    pub symmetric: bool,
    /// Connections get in unasked (no router, or a forwarded port): the
    /// leaf may simply dial it.
    pub accepts: bool,
}

/// Who does what, from what the downloader and the leaf said of
/// themselves (`None`: the leaf said nothing, an older one).
pub fn plan(downloader: Downloader, leaf: Option<Traits>) -> (Plan, LeafOrder) {
    if downloader.accepts {
        // The leaf's call gets in; our packets towards it cost nothing.
        return (Plan::Punch, LeafOrder::Push);
    }
    let downloader_symmetric = downloader.symmetric;
    let birthday = leaf.filter(|t| t.features & FEATURE_BIRTHDAY != 0);
    let leaf_symmetric = leaf.is_some_and(|t| t.symmetric);
    match (downloader_symmetric, leaf_symmetric, birthday.is_some()) {
        (true, true, _) => (Plan::Relay, LeafOrder::Nothing),
        (false, false, _) => (Plan::Punch, LeafOrder::Push),
        (true, false, true) => (Plan::Open, LeafOrder::Spray),
        (false, true, true) => (Plan::Spray, LeafOrder::Open),
        // The leaf cannot take part: as before, a punch where our side
        // allows one (the leaf's own router may yet let it through), else
        // the relay.
        (true, false, false) => (Plan::Relay, LeafOrder::Nothing),
        (false, true, false) => (Plan::Punch, LeafOrder::Push),
    }
}

/// The chance that at least one of `probes` random probes lands on one of
/// `open` random ports among the [`FIRST_PORT`]`..=65535` range.
pub fn success_chance(open: usize, probes: usize) -> f64 {
    let range = f64::from(u16::MAX - FIRST_PORT + 1);
    1.0 - (1.0 - open as f64 / range).powi(probes as i32)
}

/// [`PROBES`] distinct ports in `FIRST_PORT..=65535`, in a random order
/// drawn from `seed` (the caller brings the randomness).
pub fn probe_ports(seed: u64) -> Vec<u16> {
    let range = u32::from(u16::MAX - FIRST_PORT) + 1;
    // A random odd multiplier and offset walk the range without repeats
    // (an affine map is a bijection modulo 2^16; values outside the range
    // are skipped).
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let multiplier = (next() as u32 | 1) & 0xFFFF;
    let offset = next() as u32 & 0xFFFF;
    (0..=0xFFFFu32)
        .map(|i| (i.wrapping_mul(multiplier).wrapping_add(offset)) & 0xFFFF)
        .filter(|&value| value < range)
        .take(PROBES)
        .map(|value| (value + u32::from(FIRST_PORT)) as u16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NEW: Traits = Traits {
        symmetric: false,
        features: FEATURE_BIRTHDAY,
    };
    const NEW_SYMMETRIC: Traits = Traits {
        symmetric: true,
        features: FEATURE_BIRTHDAY,
    };

    const BEHIND_CONE: Downloader = Downloader {
        symmetric: false,
        accepts: false,
    };
    const BEHIND_SYMMETRIC: Downloader = Downloader {
        symmetric: true,
        accepts: false,
    };

    #[test]
    fn a_downloader_that_accepts_connections_is_simply_dialed() {
        let public = Downloader {
            symmetric: false,
            accepts: true,
        };
        assert_eq!(plan(public, Some(NEW_SYMMETRIC)), (Plan::Punch, LeafOrder::Push));
        assert_eq!(plan(public, None), (Plan::Punch, LeafOrder::Push));
    }

    #[test]
    fn the_symmetric_side_opens_and_the_cone_side_sprays() {
        assert_eq!(plan(BEHIND_CONE, Some(NEW)), (Plan::Punch, LeafOrder::Push));
        assert_eq!(plan(BEHIND_SYMMETRIC, Some(NEW)), (Plan::Open, LeafOrder::Spray));
        assert_eq!(
            plan(BEHIND_CONE, Some(NEW_SYMMETRIC)),
            (Plan::Spray, LeafOrder::Open)
        );
        assert_eq!(
            plan(BEHIND_SYMMETRIC, Some(NEW_SYMMETRIC)),
            (Plan::Relay, LeafOrder::Nothing)
        );
    }

    #[test]
    fn an_older_leaf_gets_only_what_it_understands() {
        assert_eq!(plan(BEHIND_CONE, None), (Plan::Punch, LeafOrder::Push));
        assert_eq!(plan(BEHIND_SYMMETRIC, None), (Plan::Relay, LeafOrder::Nothing));
        let old = Traits {
            symmetric: true,
            features: 0,
        };
        assert_eq!(plan(BEHIND_CONE, Some(old)), (Plan::Punch, LeafOrder::Push));
        assert_eq!(
            plan(BEHIND_SYMMETRIC, Some(old)),
            (Plan::Relay, LeafOrder::Nothing)
        );
    }

    #[test]
    fn the_chosen_sizes_land_nearly_always() {
        let chance = success_chance(HARD_PORTS, PROBES);
        assert!((0.98..0.99).contains(&chance), "{chance}");
        assert!(
            success_chance(1, 12) < 0.001,
            "a plain punch at a symmetric router"
        );
    }

    proptest! {
        #[test]
        fn probe_ports_are_distinct_and_in_range(seed: u64) {
            let ports = probe_ports(seed);
            prop_assert_eq!(ports.len(), PROBES);
            prop_assert!(ports.iter().all(|&port| port >= FIRST_PORT));
            let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
            prop_assert_eq!(distinct.len(), PROBES);
        }
    }

    /// Simulated: ports a symmetric router picks at random, probes from
    /// `probe_ports`; the measured rate matches the formula.
    #[test]
    fn probes_land_as_often_as_the_formula_says() {
        let mut landed = 0;
        let trials = 400u64;
        for trial in 0..trials {
            let open: std::collections::HashSet<u16> = probe_ports(trial.wrapping_mul(7919) ^ 0xABCD)
                .into_iter()
                .take(HARD_PORTS)
                .collect();
            if probe_ports(trial).iter().any(|port| open.contains(port)) {
                landed += 1;
            }
        }
        let rate = landed as f64 / trials as f64;
        assert!(rate > 0.95, "{rate}");
    }
}
