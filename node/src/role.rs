//! The role a node plays, and keeping it right: starting as a supernode
//! (join the overlay, index our own files), and for a node whose role was
//! elected, re-deciding as the network changes ([`RoleKeeper`]).

use canopy_common::sync::Lock;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy_common::net::Endpoint;
use canopy_common::proto::election::{Change, Election, ElectionConfig, Observation, Profile, Role};
use canopy_common::proto::PeerAddr;
use canopy_supernode::{Supernode, SupernodeConfig};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::leaf::{self, LeafSettings, LeafStatus};
use crate::share::Shares;
use crate::state::NodeState;

/// Which role a node takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleChoice {
    /// Measure this machine and its links, and let the election decide.
    Auto,
    /// Join supernodes and publish the shared files to them.
    Leaf,
    /// Index leaves' files, answer and flood searches.
    Supernode,
}

/// Keeps a supernode's own shares in its index, as leaf 0.
async fn index_own_files(supernode: Arc<Supernode>, me: PeerAddr, shares: Arc<Shares>) {
    const OWN: canopy_supernode::LeafId = 0;
    supernode.index().add_leaf(OWN, me);
    let mut published = leaf::Published::new(usize::MAX);
    let mut timer = tokio::time::interval(Duration::from_secs(1));
    loop {
        timer.tick().await;
        let (added, removed) = published.changes(&shares);
        if !removed.is_empty() {
            supernode.index().remove_files(OWN, &removed);
        }
        if !added.is_empty() {
            supernode.index().add_files(OWN, &added);
        }
    }
}

/// Makes this node act as the supernode `supernode`: join the overlay,
/// offer relays for firewalled leaves, index our own files. Returns the
/// task that keeps our own files indexed.
pub fn take_supernode_role(
    supernode: &Arc<Supernode>,
    mut overlay: canopy_supernode::OverlayConfig,
    endpoint: &Endpoint,
    data_dir: &std::path::Path,
    bootstrap: &[PeerAddr],
    shares: &Arc<Shares>,
) -> JoinHandle<()> {
    overlay
        .hosts_path
        .get_or_insert_with(|| data_dir.join("overlay-hosts.txt"));
    supernode.start_overlay(overlay, endpoint.clone(), bootstrap);
    // Searchers reach our firewalled leaves by asking us.
    supernode.index().set_relay_address(endpoint.peer_addr());
    // A supernode answers for its own files from its own index.
    tokio::spawn(index_own_files(
        supernode.clone(),
        endpoint.peer_addr(),
        shares.clone(),
    ))
}

/// The role a node plays right now, and the tasks that make it so.
pub enum Playing {
    Leaf {
        session: Option<AbortHandle>,
    },
    Supernode {
        supernode: Arc<Supernode>,
        own_files: AbortHandle,
    },
}

/// Keeps re-deciding the role of a node whose role was elected (not
/// forced), for as long as it runs. A leaf asks the supernodes it knows how
/// much room they have and promotes itself when they run short; a
/// supernode left with few leaves while it has enough neighbours hands its
/// leaves on and becomes a leaf again. The [`Election`] state machine holds
/// each role for a minimum tenure, so nodes do not flap.
pub struct RoleKeeper {
    /// Where tasks started on a change of role are kept, to stop with the node.
    pub later_tasks: Arc<std::sync::Mutex<Vec<AbortHandle>>>,
    pub endpoint: Endpoint,
    pub context: Arc<NodeState>,
    pub shares: Arc<Shares>,
    pub data_dir: PathBuf,
    /// Supernodes given at start, linked to after a promotion.
    pub bootstrap: Vec<PeerAddr>,
    /// Supernodes we know of: asked for room as a leaf, joined after a demotion.
    pub known: Vec<PeerAddr>,
    /// How the leaf sessions run (`None`: this node keeps none).
    pub leaf: Option<LeafSettings>,
    pub leaf_status: Arc<watch::Sender<LeafStatus>>,
    /// How to run as a supernode after a promotion (`None`: sized to this
    /// machine when it happens).
    pub supernode_settings: Option<SupernodeConfig>,
}

/// Supernodes asked for their room at each observation.
const STATUS_ASKED: usize = 8;
/// Supernodes remembered by the role keeper.
const KNOWN_KEPT: usize = 32;
/// How long a stepping-down supernode waits for its leaves to move on.
pub const HAND_OVER_GRACE: Duration = Duration::from_secs(5);

impl RoleKeeper {
    pub async fn keep(mut self, settings: ElectionSettings, mut playing: Playing) {
        let started = std::time::Instant::now();
        let role = match playing {
            Playing::Leaf { .. } => Role::Leaf,
            Playing::Supernode { .. } => Role::Supernode,
        };
        let mut election = Election::new(settings.rules.clone(), role, started.elapsed());
        let mut tick = tokio::time::interval(settings.observe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let seen = match &playing {
                Playing::Leaf { .. } => self.observe_network().await,
                Playing::Supernode { supernode, .. } => Observation {
                    leaves: supernode.leaf_count() as u32,
                    neighbours: supernode.overlay().map_or(0, |o| o.neighbours().len() as u32),
                    ..Observation::default()
                },
            };
            playing = match (
                election.observe(&settings.profile, &seen, started.elapsed()),
                playing,
            ) {
                (Some(Change::Promote { reason }), Playing::Leaf { session }) => {
                    tracing::info!(%reason, "promoting to supernode");
                    match self.promote(session) {
                        Some(playing) => playing,
                        None => {
                            election = Election::new(settings.rules.clone(), Role::Leaf, started.elapsed());
                            Playing::Leaf {
                                session: self.start_leaf_session(),
                            }
                        }
                    }
                }
                (Some(Change::Demote { reason }), Playing::Supernode { supernode, own_files }) => {
                    tracing::info!(%reason, "stepping down to a leaf");
                    self.demote(supernode, own_files).await
                }
                (_, playing) => playing,
            };
        }
    }

    /// Asks the supernodes we know how full they are.
    async fn observe_network(&mut self) -> Observation {
        for joined in self.leaf_status.borrow().supernodes() {
            if !self.known.iter().any(|k| k.id == joined.id) {
                self.known.push(joined);
            }
        }
        self.known.truncate(KNOWN_KEPT);
        let mut seen = Observation::default();
        for supernode in self.known.iter().take(STATUS_ASKED) {
            match crate::measure::status(&self.endpoint, supernode).await {
                Some((leaves, max_leaves)) => {
                    seen.hints.supernodes += 1;
                    seen.hints.total_slots += u64::from(max_leaves);
                    seen.hints.free_slots += u64::from(max_leaves.saturating_sub(leaves));
                }
                None => seen.hints.silent += 1,
            }
        }
        seen
    }

    /// Becomes a supernode; `None` (still a leaf) if the index cannot start.
    fn promote(&mut self, leaf_session: Option<AbortHandle>) -> Option<Playing> {
        let settings = self
            .supernode_settings
            .clone()
            .unwrap_or_else(|| SupernodeConfig::for_this_machine(Some(self.data_dir.join("index"))));
        let supernode = match Supernode::start(settings.clone()) {
            Ok(supernode) => supernode,
            Err(error) => {
                tracing::warn!(%error, "cannot become a supernode; staying a leaf");
                return None;
            }
        };
        // Our files go into our own index now; the leaf sessions end.
        if let Some(session) = leaf_session {
            session.abort();
        }
        self.leaf_status.send_replace(LeafStatus::default());
        self.context.set_supernode(Some(supernode.clone()));
        let mut bootstrap = self.bootstrap.clone();
        for known in &self.known {
            if !bootstrap.iter().any(|b| b.id == known.id) {
                bootstrap.push(*known);
            }
        }
        let own_files = take_supernode_role(
            &supernode,
            settings.overlay,
            &self.endpoint,
            &self.data_dir,
            &bootstrap,
            &self.shares,
        )
        .abort_handle();
        self.later_tasks.locked().push(own_files.clone());
        Some(Playing::Supernode { supernode, own_files })
    }

    /// Hands the leaves on, leaves the overlay and joins it again as a leaf,
    /// through the supernodes that were our neighbours.
    async fn demote(&mut self, supernode: Arc<Supernode>, own_files: AbortHandle) -> Playing {
        let neighbours = supernode
            .overlay()
            .map(|o| o.referrals(KNOWN_KEPT))
            .unwrap_or_default();
        supernode.step_down(HAND_OVER_GRACE).await;
        own_files.abort();
        self.context.set_supernode(None);
        let mut known = neighbours;
        for old in self.known.drain(..) {
            if !known.iter().any(|k| k.id == old.id) {
                known.push(old);
            }
        }
        known.truncate(KNOWN_KEPT);
        self.known = known;
        Playing::Leaf {
            session: self.start_leaf_session(),
        }
    }

    /// Joins the supernodes we know (and those they tell us of).
    fn start_leaf_session(&self) -> Option<AbortHandle> {
        let settings = self.leaf.as_ref()?.joining(self.known.clone())?;
        self.leaf_status.send_replace(LeafStatus::default());
        let session = tokio::spawn(leaf::run(
            self.endpoint.clone(),
            self.context.clone(),
            settings,
            self.leaf_status.clone(),
        ))
        .abort_handle();
        self.later_tasks.locked().push(session.clone());
        Some(session)
    }
}

/// How a node elected at start-up keeps re-deciding.
#[derive(Debug, Clone)]
pub struct ElectionSettings {
    /// What the start-up probe measured.
    pub profile: Profile,
    pub rules: ElectionConfig,
    /// How often the network is observed.
    pub observe_every: Duration,
    /// How to run as a supernode after a promotion (`None`: sized to this machine).
    pub supernode: Option<SupernodeConfig>,
}
