//! Scenario files: everything a run depends on besides the seed, in TOML.
//!
//! Every field has a default, so a scenario file states only what makes it
//! different (see `netsim/scenarios/`). Unknown keys are errors: a typo must
//! not silently fall back to a default.

use canopy_common::proto::birthday::{success_chance, HARD_PORTS, PROBES};
use canopy_common::proto::nat::RouterKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Nodes online at once (churn keeps the population near this).
    pub nodes: u32,
    pub seed: u64,
    pub topology: Topology,
    pub supernodes: Supernodes,
    pub population: Population,
    pub churn: Churn,
    pub files: Files,
    pub queries: Queries,
    pub latency: Latency,
    pub router: RouterSettings,
    /// Home routers and the ways downloads get through them (`[nat]`);
    /// `None`: not modelled, and `population.firewalled` says who fails
    /// the election's dial-back.
    pub nat: Option<Nat>,
    /// Decoys, Sybils, poisoning and the defences against them
    /// (`[pollution]`, [`crate::pollution`]); `None`: not modelled. A
    /// scenario with it runs the pollution study instead of the overlay.
    pub pollution: Option<crate::pollution::Pollution>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "unnamed".into(),
            description: String::new(),
            nodes: 10_000,
            seed: 1,
            topology: Topology::default(),
            supernodes: Supernodes::default(),
            population: Population::default(),
            churn: Churn::default(),
            files: Files::default(),
            queries: Queries::default(),
            latency: Latency::default(),
            router: RouterSettings::default(),
            nat: None,
            pollution: None,
        }
    }
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn is_flat(&self) -> bool {
        self.topology.kind == TopologyKind::Flat
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyKind {
    /// Gnutella 0.4: every node routes.
    Flat,
    /// FastTrack and Canopy: supernodes route, leaves hang off them.
    TwoTier,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    pub kind: TopologyKind,
    /// Each router keeps at least this many overlay neighbours (topping up
    /// when one leaves)...
    pub degree_min: u32,
    /// ...and accepts at most this many.
    pub degree_max: u32,
    /// TTL given to new queries (the router's `default_ttl`).
    pub ttl: u8,
    /// Highest TTL a router accepts (the router's `max_ttl`).
    pub max_ttl: u8,
    /// Delay before a router that lost a neighbour dials a new one, seconds.
    pub maintain_s: f64,
    /// A router looking for a neighbour sizes up this many with room and
    /// links to the one with the shortest round trip (1: the first found).
    pub closest_of: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            kind: TopologyKind::TwoTier,
            degree_min: 4,
            degree_max: 8,
            ttl: 7,
            max_ttl: 7,
            maintain_s: 1.0,
            closest_of: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Canopy: `common::proto::election::decide` at arrival, then the
    /// run-time `Election` state machine.
    Election,
    /// FastTrack-style: a node with enough capacity that is reachable becomes
    /// a supernode when the network runs short of leaf slots.
    Capacity,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Supernodes {
    pub selection: Selection,
    /// Capacity mode: leaf slots per supernode, drawn uniformly in this range.
    pub leaves_min: u32,
    pub leaves_max: u32,
    /// Capacity mode: least capacity level (index into the ladder) to qualify.
    pub min_level: u8,
    /// Supernodes each leaf keeps a session with (Canopy: 2, FastTrack: 1).
    pub sessions: u32,
    /// Seconds for a leaf to notice that a supernode vanished without a word
    /// (the QUIC idle timeout; TCP keep-alive for FastTrack).
    pub detect_s: f64,
    /// Share of departures that close their connections (noticed at once).
    pub graceful_share: f64,
    /// Election mode: seconds between run-time observations.
    pub observe_every_s: f64,
    /// Election mode: scale the election's timers (tenure, shortage, idle)
    /// by this factor (1.0 = the defaults shipped in `ElectionConfig`).
    pub election_timer_scale: f64,
    /// A leaf looking for a supernode sizes up this many with room and
    /// joins the one with the shortest round trip (1: the first found).
    pub closest_of: u32,
    /// A leaf sends its searches to whichever of its supernodes has the
    /// shortest round trip (false: the first joined).
    pub search_via_nearest: bool,
}

impl Default for Supernodes {
    fn default() -> Self {
        Supernodes {
            selection: Selection::Election,
            leaves_min: 10,
            leaves_max: 150,
            min_level: 2,
            sessions: 2,
            detect_s: 10.0,
            graceful_share: 0.5,
            observe_every_s: 30.0,
            election_timer_scale: 1.0,
            closest_of: 1,
            search_via_nearest: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Population {
    /// Capacity ladder: (multiple of the base capacity, share of peers).
    pub ladder: Vec<(f64, f64)>,
    /// Share of peers that share no files.
    pub free_riders: f64,
    /// Share of peers nobody can dial (NAT, firewall).
    pub firewalled: f64,
    /// Upload of a 1× peer, kbit/s (the rest scale with the ladder).
    pub base_upload_kbit: f64,
    /// Query messages a 1× peer processes per second.
    pub base_rate: f64,
    /// A message that would wait longer than this in a node's queue is dropped.
    pub max_queue_s: f64,
}

impl Default for Population {
    fn default() -> Self {
        Population {
            // Gia (Chawathe et al. 2003) from Saroiu et al. 2002's measurements.
            ladder: vec![
                (1.0, 0.20),
                (10.0, 0.45),
                (100.0, 0.30),
                (1000.0, 0.049),
                (10000.0, 0.001),
            ],
            free_riders: 0.25,
            firewalled: 0.35,
            base_upload_kbit: 64.0,
            base_rate: 10.0,
            max_queue_s: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionModel {
    /// Nobody leaves.
    None,
    Weibull,
    Exponential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Churn {
    pub model: SessionModel,
    pub median_session_min: f64,
    pub weibull_shape: f64,
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            model: SessionModel::Weibull,
            median_session_min: 60.0,
            weibull_shape: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replication {
    /// Replicas ∝ query popularity (what uncoordinated downloading gives).
    Proportional,
    /// Replicas ∝ √popularity (Cohen & Shenker's optimum for random search).
    SquareRoot,
    /// The same number of replicas for every file.
    Uniform,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Files {
    /// Distinct files with Zipf popularity.
    pub catalogue: u32,
    pub zipf_alpha: f64,
    pub replication: Replication,
    /// Mean replicas per catalogue file, counted over every node that will
    /// ever be online in the run (those offline at a given moment hold
    /// replicas nobody can reach then).
    pub mean_replicas: f64,
    /// Further files held by exactly one node, for the "rare" metrics.
    pub rare: u32,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            catalogue: 20_000,
            zipf_alpha: 0.8,
            replication: Replication::Proportional,
            mean_replicas: 10.0,
            rare: 2_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Queries {
    pub count: u32,
    /// Queries per second across the network (Poisson arrivals).
    pub rate_per_s: f64,
    /// Share of queries that look for a rare (single-replica) file.
    pub rare_share: f64,
    /// Simulated seconds before the first query, for churn to settle.
    pub warmup_s: f64,
    /// A query's figures are taken this long after it starts.
    pub window_s: f64,
}

impl Default for Queries {
    fn default() -> Self {
        Queries {
            count: 2_000,
            rate_per_s: 5.0,
            rare_share: 0.2,
            warmup_s: 900.0,
            window_s: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// One-way latency of each node pair, uniform in this range.
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            min_ms: 50.0,
            max_ms: 500.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSettings {
    /// The router's `entry_lifetime`, seconds.
    pub entry_lifetime_s: f64,
    /// The router's forwarding cap, queries a second (`None`: no cap), as
    /// a real supernode keeps it.
    pub max_forwarded_per_second: Option<u32>,
    /// The router's `max_entries`.
    pub max_entries: usize,
    /// Keyword routing on the last hop ([`canopy_common::proto::qrp`]),
    /// with tables modelled by [`crate::qrp::TableModel`].
    pub keyword_tables: bool,
    /// Size of a supernode's table, as a power of two bits.
    pub table_log2_bits: u8,
    /// Levels of keyword table a router sends (1: its own, checked on the
    /// last hop only, as Gnutella's QRP; `k`: also every router within
    /// `k − 1` hops, checked on the last `k` hops).
    pub table_levels: u8,
    /// The leaf's supernode runs the search as a
    /// [`canopy_common::proto::dynamic::DynamicQuery`] instead of one flood.
    pub dynamic: bool,
    /// Dynamic querying: stop at this many sources found.
    pub target_results: u32,
    /// Dynamic querying: stop this long after the start, seconds.
    pub dynamic_time_limit_s: f64,
    /// Dynamic querying: time allowed per hop before the next step, seconds.
    pub wait_per_hop_s: f64,
    /// Dynamic querying: largest TTL of a copy (0: the topology's `max_ttl`).
    pub dynamic_max_ttl: u8,
    /// Dynamic querying: hops of broadcast past the neighbours' tables
    /// while nothing is found (`DynamicConfig::broadcast_past_tables`).
    pub dynamic_broadcast_past_tables: u8,
    /// Dynamic querying: largest TTL once a result is in
    /// (`DynamicConfig::max_widening_ttl`).
    pub dynamic_max_widening_ttl: u8,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            entry_lifetime_s: 60.0,
            max_forwarded_per_second: Some(canopy_common::proto::routing::DEFAULT_MAX_FORWARDED_PER_SECOND),
            max_entries: 100_000,
            keyword_tables: false,
            table_log2_bits: 20,
            table_levels: 1,
            dynamic: false,
            target_results: 150,
            dynamic_time_limit_s: 25.0,
            wait_per_hop_s: 1.2,
            dynamic_max_ttl: 0,
            dynamic_broadcast_past_tables: 1,
            dynamic_max_widening_ttl: 2,
        }
    }
}

/// Which kind of home router each node sits behind, and what a download
/// needs to reach its sources through them ([`crate::traversal`]).
///
/// With this section the router decides who passes the election's
/// dial-back (public and mapped homes do, cone and symmetric ones do not),
/// in place of `population.firewalled`, so supernodes are always public or
/// mapped, as the real election makes them. The kinds are drawn from their
/// own random stream: every other draw of the population is the same as
/// without the section.
///
/// The default shares combine three published measurements; which figure
/// comes from where, and which are assumptions, is in docs/NAT.md ("In the
/// simulator"):
/// * **public 10 %**: Maier, Schneider & Feldmann, "NAT usage in
///   Residential Broadband Networks", PAM 2011: more than 90 % of 20,000
///   DSL lines reach the internet through a NAT gateway;
/// * **symmetric 16 %**: Ford, Srisuresh & Kegel, "Peer-to-Peer
///   Communication Across Network Address Translators", USENIX ATC 2005:
///   about 82 % of the NATs tested support UDP hole punching, so 18 % of
///   the 90 % behind one do not;
/// * **cone 64 %**: Halkes & Pouwelse, "UDP NAT and Firewall Puncturing in
///   the Wild", IFIP Networking 2011 (Tribler peers): approximately 64 % of
///   all peers are behind a NAT or firewall that should allow punching;
/// * **mapped 10 %**: the remainder, an assumption; a bound is all that
///   was found (DiCioccio et al., "Probe and Pray", PAM 2012: no UPnP data
///   at all from most of 120,000 homes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nat {
    /// Share of nodes with no router: dialed by anyone.
    pub public: f64,
    /// Share behind an endpoint-independent ("cone") router without a
    /// port mapping: reached by push or a punch.
    pub cone: f64,
    /// Share behind an endpoint-dependent ("symmetric") router: reached
    /// by push, by a birthday punch from or to a cone, or through a relay.
    pub symmetric: f64,
    /// Share behind a router that forwards the node's port on request
    /// (PCP, NAT-PMP or UPnP-IGD): dialed like a public node.
    pub mapped: f64,
    /// Chance that a plain punch (two cone routers) gets through (timing,
    /// lost packets, routers that filter more than they should); a failed
    /// one falls back to the relay, as the real downloader does after a
    /// second. Halkes & Pouwelse 2011: more than 80 % of attempts between
    /// peers whose routers allow it succeed.
    pub punch_success: f64,
    /// Chance that a birthday punch (a cone router meeting a symmetric one,
    /// `canopy_common::proto::birthday`) gets through; a failed one falls
    /// back to the relay as a failed plain punch does. The default is the
    /// probes' arithmetic alone ([`Nat::birthday_two_rounds`]): two rounds
    /// of 1,024 probes at 256 open ports, 1 − (1 − 98.3 %)² = 99.97 %. It
    /// assumes the symmetric router picks each new outside port uniformly
    /// at random from 1024–65535 (Linux `masquerade random`, the test bed's
    /// `sym`) and opens all 256 on one outside IP; and unlike
    /// `punch_success` it counts no failure of timing, lost packets or
    /// stricter filtering (docs/NAT.md, "In the simulator").
    pub birthday_success: f64,
    /// Size of a downloaded file in bytes, for relayed bytes: an
    /// assumption, the size of the tagged music file the simulator's hits
    /// are encoded with (4.5 MiB).
    pub file_bytes: f64,
    /// Sources one download connects to at once, the first hits first
    /// (`DownloadOptions::max_sources` in the node: 32).
    pub sources_at_once: u32,
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            public: 0.10,
            cone: 0.64,
            symmetric: 0.16,
            mapped: 0.10,
            punch_success: 0.8,
            birthday_success: Nat::birthday_two_rounds(),
            file_bytes: 4_718_592.0,
            sources_at_once: 32,
        }
    }
}

impl Nat {
    /// The chance that at least one of the easy side's two rounds of
    /// [`PROBES`] lands on one of the hard side's [`HARD_PORTS`], the
    /// rounds independent: 1 − (1 − [`success_chance`])². The node sprays
    /// two rounds (`node/src/birthday.rs`), the second in case the first
    /// left before the hard side's ports were open.
    pub fn birthday_two_rounds() -> f64 {
        let miss = 1.0 - success_chance(HARD_PORTS, PROBES);
        1.0 - miss * miss
    }

    /// The share of `kind`, normalised so the four add up to one.
    pub fn share(&self, kind: RouterKind) -> f64 {
        let total = self.public + self.cone + self.symmetric + self.mapped;
        let share = match kind {
            RouterKind::Public => self.public,
            RouterKind::Cone => self.cone,
            RouterKind::Symmetric => self.symmetric,
            RouterKind::Mapped => self.mapped,
        };
        if total > 0.0 {
            share / total
        } else {
            0.0
        }
    }

    /// One node's router, for a uniform draw `unit` in [0, 1).
    pub fn kind_at(&self, unit: f64) -> RouterKind {
        let mut left = unit;
        for kind in RouterKind::ALL {
            let share = self.share(kind);
            if left < share {
                return kind;
            }
            left -= share;
        }
        // Rounding, or no shares at all: the last kind with any share.
        RouterKind::ALL
            .into_iter()
            .rev()
            .find(|&kind| self.share(kind) > 0.0)
            .unwrap_or(RouterKind::Public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_states_only_what_differs_and_typos_are_errors() {
        let scenario = Scenario::parse(
            "name = \"x\"\nnodes = 50\n[topology]\nkind = \"flat\"\nttl = 3\n[churn]\nmodel = \"none\"\n",
        )
        .unwrap();
        assert_eq!(scenario.nodes, 50);
        assert!(scenario.is_flat());
        assert_eq!(scenario.topology.ttl, 3);
        assert_eq!(scenario.topology.degree_max, 8);
        assert_eq!(scenario.churn.model, SessionModel::None);
        assert!(Scenario::parse("nodez = 5").is_err());
        assert!(Scenario::parse("[topology]\nkind = \"mesh\"").is_err());
    }

    #[test]
    fn a_nat_section_turns_home_routers_on_with_its_defaults() {
        assert_eq!(Scenario::parse("nodes = 5").unwrap().nat, None);
        let nat = Scenario::parse("[nat]\nsymmetric = 0.5\n").unwrap().nat.unwrap();
        assert_eq!(nat.symmetric, 0.5);
        assert_eq!(nat.cone, Nat::default().cone);
        assert!(Scenario::parse("[nat]\nsymetric = 0.5\n").is_err());
        // The defaults add up to one, and draws fall in the right kind.
        let nat = Nat::default();
        let total: f64 = RouterKind::ALL.iter().map(|&k| nat.share(k)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(nat.kind_at(0.05), RouterKind::Public);
        assert_eq!(nat.kind_at(0.5), RouterKind::Cone);
        assert_eq!(nat.kind_at(0.8), RouterKind::Symmetric);
        assert_eq!(nat.kind_at(0.95), RouterKind::Mapped);
        let only_cones = Nat {
            public: 0.0,
            symmetric: 0.0,
            mapped: 0.0,
            ..Nat::default()
        };
        assert!([0.0, 0.5, 0.999_999]
            .iter()
            .all(|&u| only_cones.kind_at(u) == RouterKind::Cone));
    }

    #[test]
    fn a_birthday_punch_gets_two_rounds_of_the_probes_chance() {
        let once = success_chance(HARD_PORTS, PROBES);
        let twice = Nat::default().birthday_success;
        assert!((0.98..0.99).contains(&once), "{once}");
        assert!((0.9996..0.9998).contains(&twice), "{twice}");
        assert!((1.0 - twice - (1.0 - once).powi(2)).abs() < 1e-15);
        let nat = Scenario::parse("[nat]\nbirthday_success = 0.5\n")
            .unwrap()
            .nat
            .unwrap();
        assert_eq!((nat.birthday_success, nat.punch_success), (0.5, 0.8));
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 3);
    }
}
