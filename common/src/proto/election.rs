//! Who carries the network: the supernode election, as pure functions.
//!
//! A node measures itself ([`Profile`]), hears what the network needs
//! ([`NetworkHints`]), and [`decide`] turns both into a role with a reason
//! a person can read. At run time [`Election`] re-decides as the network
//! changes, with hysteresis so nodes do not flap. No clock is read here:
//! time comes in as arguments, so the simulator runs the same rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node's role in the two-tier network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Leaf,
    Supernode,
}

/// What a node knows about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub cores: u32,
    pub memory_total: u64,
    pub memory_available: u64,
    pub uptime: Duration,
    pub os: String,
    /// Measured upload rate in bytes per second (`None`: nobody to measure against).
    pub upload: Option<u64>,
    /// Measured download rate in bytes per second.
    pub download: Option<u64>,
    /// Whether a peer could dial back to our advertised address.
    pub reachable: Option<bool>,
}

/// What the network says it needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkHints {
    /// Supernodes we know of.
    pub supernodes: u32,
    /// Free leaf slots those supernodes advertise, in all.
    pub free_slots: u64,
    /// Leaf slots they have in all.
    pub total_slots: u64,
    /// Supernodes we were told of that did not answer.
    pub silent: u32,
}

impl NetworkHints {
    /// Whether supernodes are running short of room for leaves.
    pub fn short_of_slots(&self, threshold: f64) -> bool {
        self.supernodes > 0 && (self.free_slots as f64) < threshold * self.total_slots as f64
    }
}

/// What it takes to be a supernode. Configurable; these defaults ask for a
/// modest broadband machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub min_cores: u32,
    pub min_memory: u64,
    /// Bytes per second.
    pub min_upload: u64,
    /// Bytes per second.
    pub min_download: u64,
    /// Promote when free slots fall below this share of all slots.
    pub short_of_slots: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_cores: 2,
            min_memory: 2 << 30,
            min_upload: 5_000_000 / 8,
            min_download: 5_000_000 / 8,
            short_of_slots: 0.1,
        }
    }
}

/// A role and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub role: Role,
    pub reason: String,
}

fn mbit(bytes_per_second: u64) -> String {
    format!("{:.1} Mbit/s", bytes_per_second as f64 * 8.0 / 1e6)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Why this machine cannot be a supernode, if it cannot: every reason,
/// so a user can fix them all at once ("upload 0.8 Mbit/s < 5.0 Mbit/s;
/// other peers cannot connect to it").
pub fn disqualified(profile: &Profile, thresholds: &Thresholds) -> Option<String> {
    let mut reasons = Vec::new();
    if profile.cores < thresholds.min_cores {
        reasons.push(format!("{} core(s) < {}", profile.cores, thresholds.min_cores));
    }
    if profile.memory_total < thresholds.min_memory {
        reasons.push(format!(
            "memory {} < {}",
            gib(profile.memory_total),
            gib(thresholds.min_memory)
        ));
    }
    if let Some(upload) = profile.upload.filter(|&up| up < thresholds.min_upload) {
        reasons.push(format!(
            "upload {} < {}",
            mbit(upload),
            mbit(thresholds.min_upload)
        ));
    }
    if let Some(download) = profile.download.filter(|&down| down < thresholds.min_download) {
        reasons.push(format!(
            "download {} < {}",
            mbit(download),
            mbit(thresholds.min_download)
        ));
    }
    if profile.reachable == Some(false) {
        reasons.push("other peers cannot connect to it".into());
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// The start-up decision.
pub fn decide(
    profile: &Profile,
    hints: &NetworkHints,
    thresholds: &Thresholds,
    never_supernode: bool,
) -> Decision {
    let leaf = |reason: String| Decision {
        role: Role::Leaf,
        reason,
    };
    let supernode = |reason: String| Decision {
        role: Role::Supernode,
        reason,
    };
    if never_supernode {
        return leaf("set never to become a supernode".into());
    }
    if let Some(why) = disqualified(profile, thresholds) {
        return leaf(why);
    }
    let measured = match profile.upload {
        Some(upload) => format!("upload {} ≥ {}", mbit(upload), mbit(thresholds.min_upload)),
        None => "no peer to measure bandwidth against".into(),
    };
    if hints.supernodes == 0 && hints.silent > 0 {
        return leaf(format!(
            "none of the {} known supernodes answered; it will keep trying them as a leaf",
            hints.silent
        ));
    }
    if hints.supernodes == 0 {
        return supernode(format!(
            "no supernode is known and this machine qualifies ({measured})"
        ));
    }
    if hints.short_of_slots(thresholds.short_of_slots) {
        return supernode(format!(
            "the network is short of leaf slots ({} of {} free) and this machine qualifies ({measured})",
            hints.free_slots, hints.total_slots
        ));
    }
    leaf(format!(
        "it qualifies ({measured}), but the {} supernode(s) asked have room ({} of {} slots free)",
        hints.supernodes, hints.free_slots, hints.total_slots
    ))
}

/// Timers of the run-time election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub thresholds: Thresholds,
    pub never_supernode: bool,
    /// Least time in a role before it may change (no flapping).
    pub min_tenure: Duration,
    /// How long the network must look short of slots before a leaf promotes.
    pub shortage_for: Duration,
    /// A supernode with fewer leaves than this for `idle_for` demotes...
    pub few_leaves: u32,
    pub idle_for: Duration,
    /// ...if it has at least this many neighbours to take its leaves.
    pub enough_neighbours: u32,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            thresholds: Thresholds::default(),
            never_supernode: false,
            min_tenure: Duration::from_secs(600),
            shortage_for: Duration::from_secs(60),
            few_leaves: 5,
            idle_for: Duration::from_secs(1800),
            enough_neighbours: 3,
        }
    }
}

/// What the node observes now and then.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation {
    pub hints: NetworkHints,
    /// Our leaves, when we are a supernode.
    pub leaves: u32,
    /// Our neighbour supernodes, when we are one.
    pub neighbours: u32,
}

/// A change of role the node should carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Promote {
        reason: String,
    },
    /// Hand leaves to other supernodes first, then become a leaf.
    Demote {
        reason: String,
    },
}

/// The run-time election of one node.
#[derive(Debug, Clone)]
pub struct Election {
    config: ElectionConfig,
    role: Role,
    since: Duration,
    /// When the current reason for change was first seen.
    pressure_since: Option<Duration>,
}

impl Election {
    pub fn new(config: ElectionConfig, role: Role, now: Duration) -> Self {
        Election {
            config,
            role,
            since: now,
            pressure_since: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Feeds an observation; returns a change once its reason has held long
    /// enough and the current role has been held at least `min_tenure`.
    pub fn observe(&mut self, profile: &Profile, seen: &Observation, now: Duration) -> Option<Change> {
        let config = &self.config;
        let (pressured, needed_for) = match self.role {
            Role::Leaf => (
                !config.never_supernode
                    && disqualified(profile, &config.thresholds).is_none()
                    && seen.hints.short_of_slots(config.thresholds.short_of_slots),
                config.shortage_for,
            ),
            Role::Supernode => (
                seen.leaves < config.few_leaves && seen.neighbours >= config.enough_neighbours,
                config.idle_for,
            ),
        };
        if !pressured {
            self.pressure_since = None;
            return None;
        }
        let since = *self.pressure_since.get_or_insert(now);
        if now.saturating_sub(since) < needed_for || now.saturating_sub(self.since) < config.min_tenure {
            return None;
        }
        self.pressure_since = None;
        self.since = now;
        Some(match self.role {
            Role::Leaf => {
                self.role = Role::Supernode;
                Change::Promote {
                    reason: format!(
                        "supernodes ran short of slots ({} of {} free)",
                        seen.hints.free_slots, seen.hints.total_slots
                    ),
                }
            }
            Role::Supernode => {
                self.role = Role::Leaf;
                Change::Demote {
                    reason: format!(
                        "only {} leaves while {} neighbours can take them",
                        seen.leaves, seen.neighbours
                    ),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(upload_mbit: f64) -> Profile {
        Profile {
            cores: 4,
            memory_total: 8 << 30,
            memory_available: 4 << 30,
            uptime: Duration::from_secs(3600),
            os: "Linux".into(),
            upload: Some((upload_mbit * 1e6 / 8.0) as u64),
            download: Some(50_000_000 / 8),
            reachable: Some(true),
        }
    }

    fn hints(supernodes: u32, free: u64, total: u64) -> NetworkHints {
        NetworkHints {
            supernodes,
            free_slots: free,
            total_slots: total,
            silent: 0,
        }
    }

    #[test]
    fn slow_or_unreachable_machines_are_leaves_and_say_why() {
        let t = Thresholds::default();
        let slow = decide(&machine(0.8), &hints(0, 0, 0), &t, false);
        assert_eq!(slow.role, Role::Leaf);
        assert_eq!(slow.reason, "upload 0.8 Mbit/s < 5.0 Mbit/s");
        let mut hidden = machine(50.0);
        hidden.reachable = Some(false);
        assert!(decide(&hidden, &hints(0, 0, 0), &t, false)
            .reason
            .contains("cannot connect"));
        let mut slow_and_hidden = machine(0.8);
        slow_and_hidden.reachable = Some(false);
        assert_eq!(
            decide(&slow_and_hidden, &hints(0, 0, 0), &t, false).reason,
            "upload 0.8 Mbit/s < 5.0 Mbit/s; other peers cannot connect to it",
            "every reason is given"
        );
        let mut small = machine(50.0);
        small.cores = 1;
        assert_eq!(decide(&small, &hints(0, 0, 0), &t, false).role, Role::Leaf);
        assert_eq!(decide(&machine(50.0), &hints(0, 0, 0), &t, true).role, Role::Leaf);
    }

    #[test]
    fn first_node_and_shortage_make_supernodes() {
        let t = Thresholds::default();
        let first = decide(&machine(50.0), &hints(0, 0, 0), &t, false);
        assert_eq!(first.role, Role::Supernode);
        assert!(first.reason.contains("no supernode is known"), "{}", first.reason);
        let mut unmeasured = machine(50.0);
        unmeasured.upload = None;
        assert_eq!(
            decide(&unmeasured, &hints(0, 0, 0), &t, false).role,
            Role::Supernode
        );
        let short = decide(&machine(50.0), &hints(3, 5, 300), &t, false);
        assert_eq!(short.role, Role::Supernode);
        let unanswered = NetworkHints {
            silent: 2,
            ..hints(0, 0, 0)
        };
        assert_eq!(decide(&machine(50.0), &unanswered, &t, false).role, Role::Leaf);
        let roomy = decide(&machine(50.0), &hints(3, 200, 300), &t, false);
        assert_eq!(roomy.role, Role::Leaf);
        assert!(roomy.reason.contains("have room"), "{}", roomy.reason);
    }

    #[test]
    fn promotion_waits_for_a_lasting_shortage_and_tenure() {
        let config = ElectionConfig {
            min_tenure: Duration::from_secs(100),
            shortage_for: Duration::from_secs(10),
            ..ElectionConfig::default()
        };
        let mut election = Election::new(config, Role::Leaf, Duration::ZERO);
        let short = Observation {
            hints: hints(2, 1, 200),
            ..Observation::default()
        };
        let s = Duration::from_secs;
        assert_eq!(
            election.observe(&machine(50.0), &short, s(50)),
            None,
            "tenure not served"
        );
        let roomy = Observation {
            hints: hints(2, 150, 200),
            ..Observation::default()
        };
        assert_eq!(election.observe(&machine(50.0), &roomy, s(100)), None);
        assert_eq!(
            election.observe(&machine(50.0), &short, s(105)),
            None,
            "shortage too young"
        );
        assert!(matches!(
            election.observe(&machine(50.0), &short, s(115)),
            Some(Change::Promote { .. })
        ));
        assert_eq!(election.role(), Role::Supernode);
        // A slow machine never promotes.
        let mut slow = Election::new(ElectionConfig::default(), Role::Leaf, Duration::ZERO);
        for minute in 0..1000 {
            assert_eq!(slow.observe(&machine(1.0), &short, s(minute * 60)), None);
        }
    }

    #[test]
    fn no_flapping_when_the_network_wavers() {
        let config = ElectionConfig {
            min_tenure: Duration::from_secs(300),
            shortage_for: Duration::from_secs(60),
            idle_for: Duration::from_secs(600),
            ..ElectionConfig::default()
        };
        let mut election = Election::new(config, Role::Leaf, Duration::ZERO);
        let mut changes = 0;
        // Every 30 s the network flips between short and roomy, for a day.
        for step in 0..2880u64 {
            let short = step % 2 == 0;
            let seen = Observation {
                hints: if short {
                    hints(2, 1, 200)
                } else {
                    hints(2, 150, 200)
                },
                leaves: if short { 2 } else { 40 },
                neighbours: 4,
            };
            if election
                .observe(&machine(50.0), &seen, Duration::from_secs(step * 30))
                .is_some()
            {
                changes += 1;
            }
        }
        assert_eq!(changes, 0, "a wavering network must not flip roles");
    }

    #[test]
    fn an_idle_supernode_with_neighbours_demotes() {
        let config = ElectionConfig {
            min_tenure: Duration::from_secs(60),
            idle_for: Duration::from_secs(120),
            ..ElectionConfig::default()
        };
        let mut election = Election::new(config, Role::Supernode, Duration::ZERO);
        let idle = Observation {
            hints: hints(5, 500, 600),
            leaves: 1,
            neighbours: 4,
        };
        let lonely = Observation {
            neighbours: 1,
            ..idle
        };
        let s = Duration::from_secs;
        assert_eq!(
            election.observe(&machine(50.0), &lonely, s(500)),
            None,
            "no one to hand leaves to"
        );
        assert_eq!(election.observe(&machine(50.0), &idle, s(600)), None);
        assert!(matches!(
            election.observe(&machine(50.0), &idle, s(720)),
            Some(Change::Demote { .. })
        ));
    }
}
