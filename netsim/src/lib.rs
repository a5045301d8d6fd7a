//! The network simulator: Canopy's own sans-IO routing
//! ([`Router`](canopy_common::proto::routing::Router)) and election
//! ([`decide`](canopy_common::proto::election::decide),
//! [`Election`](canopy_common::proto::election::Election)) driven by a
//! discrete-event loop for 10^3–10^6 simulated nodes, so a change to routing
//! is measured at internet scale before it ships.
//!
//! * [`scenario`]: what a run is, read from TOML;
//! * [`population`]: capacities, sessions and files, drawn from the seed;
//! * [`clock`]: virtual time and the event queue;
//! * [`world`]: what the parts below share: the network, the events, the
//!   counters;
//! * [`sim`]: the overlay, churn and the election;
//! * [`search`]: queries, floods, hits and dynamic querying through the
//!   real routers;
//! * [`qrp`]: what the keyword tables say of a query, and what they cost;
//! * [`traversal`]: home routers, and which way each download gets to its
//!   sources through them (the real `nat::path`);
//! * [`pollution`]: decoys, Sybils and index poisoning against possession
//!   checks, signed votes (the real `credence` ranking) and trusted
//!   publishers — a study of its own, with its own figures;
//! * [`metrics`], [`chart`]: figures, CSV and SVG;
//! * [`probe`]: flood one query over a given graph (tests, agreement with
//!   the real network).
//!
//! Dependencies run one way: `sim` → `search` → `qrp` and `traversal` →
//! `world` → `metrics` → `population`, `scenario`, `clock`, `rng` (and
//! `probe` → `sim`); `pollution` stands apart (→ `chart`, `rng`; the
//! scenario holds its `[pollution]` section). `metrics` and `traversal`
//! read a finished run through traits ([`metrics::Run`],
//! [`traversal::Downloads`]) that [`Sim`] implements.
//!
//! Determinism: one seed gives one run. All randomness comes from
//! [`rng::Rng`] streams; nothing iterates a hash map where order matters.

pub mod chart;
pub mod clock;
pub mod live;
pub mod metrics;
pub mod pollution;
pub mod population;
pub mod probe;
pub mod qrp;
pub mod rng;
pub mod scenario;
pub mod search;
pub mod sim;
pub mod traversal;
pub mod world;

pub use metrics::Summary;
pub use scenario::Scenario;
pub use sim::Sim;
pub use traversal::TraversalSummary;

/// Runs a scenario with a seed and returns the simulator (for its CSV) and
/// its summary.
pub fn run(scenario: Scenario, seed: u64) -> (Sim, Summary) {
    let mut sim = Sim::new(scenario, seed);
    sim.run();
    let summary = Summary::of(&sim);
    (sim, summary)
}
