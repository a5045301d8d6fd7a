//! A running node: identity, one QUIC endpoint, what it shares, and the
//! loop that accepts peers.

//!
//! A node composes; it knows nothing of what is served beside it. The
//! metrics endpoint, the desktop app with its download manager, and the
//! HTTP gateway are attached from outside by whoever runs it
//! ([`crate::web::Services`], from `canopy run`), through the accessors
//! here.

use crate::votes::Votes;
use canopy_common::sync::Lock;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use canopy_common::net::{Endpoint, EndpointConfig, NetError, NodeKey};
use canopy_common::proto::{ContentHash, PeerAddr};
use canopy_supernode::{Supernode, SupernodeConfig};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::admission::Admission;
use crate::download::{Download, DownloadOptions, SourceSpec};
use crate::folders::Folders;
use crate::hostcache;
use crate::leaf::{self, LeafSettings, LeafStatus};
use crate::role::{take_supernode_role, Playing, RoleKeeper, HAND_OVER_GRACE};
use crate::searcher::{NodeSide, Searcher};
use crate::serve::serve_connection;
use crate::share::{self, HashCache, ScanStats, ShareError, Shares};
use crate::state::{NodeState, ServeStats, TransferLimits};

/// A leaf session asks its supernode where it sees us this often: one
/// stream round trip on a connection kept open anyway. iroh re-runs its
/// net report about as often; a changed address is then noticed within
/// half a minute.
pub const REOBSERVE_EVERY: Duration = Duration::from_secs(30);

pub use crate::role::ElectionSettings;

/// Everything needed to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Holds the node key and caches.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Folders shared with the network.
    pub share: Vec<PathBuf>,
    pub endpoint: EndpointConfig,
    pub upload: TransferLimits,
    /// Run as a supernode with these settings (`None`: a leaf).
    pub supernode: Option<SupernodeConfig>,
    /// Supernodes a leaf joins (falling back on the ones it knew before).
    pub bootstrap: Vec<PeerAddr>,
    /// How often the shared folders are rescanned for changes (`None`: only at start).
    pub rescan_interval: Option<Duration>,
    /// Supernodes a leaf stays joined to at once (0: none; a one-shot
    /// `canopy get` needs no session to fetch or to serve what it has).
    pub leaf_sessions: usize,
    /// Whether to accept incoming connections at all; `false` behaves as a
    /// node behind a firewall that drops them (`--no-inbound`, tests).
    pub accept_inbound: bool,
    /// Whether peers can connect to this node directly. If not (behind a
    /// home router, as the election's dial-back found), its leaf sessions
    /// say so: it is listed as a relayed source and downloaders ask its
    /// supernode for a push (it connects out to them). It still accepts
    /// the connections that reach it.
    pub reachable: bool,
    /// How often a leaf session asks its supernode where it sees this
    /// node; a changed address has it test its reachability again
    /// ([`crate::reach::recheck`]).
    pub reobserve_every: Duration,
    /// What the election learned of how peers reach this node (dial-back,
    /// the addresses peers saw); the node adds what it learns later.
    pub reachability: crate::reach::Reachability,
    /// For a node whose role was elected: keep re-deciding as the network
    /// changes (a leaf promotes when supernodes run short of slots; a
    /// supernode with few leaves and enough neighbours steps down).
    pub election: Option<ElectionSettings>,
    /// Connections one address or one peer may hold at once.
    pub connection_limits: crate::admission::ConnectionLimits,
    /// The shared folders can be changed while the node runs (by the
    /// desktop app), and the list is kept in the data folder; `false` (as
    /// for `canopy get`): `share` is all there is.
    pub editable_folders: bool,
    /// Be a member of this private network instead of the public one
    /// (`None`: the public network). See [`crate::network`].
    pub network: Option<crate::network::NetworkSettings>,
    /// Vouch, as their publisher, for every file this node shares (a
    /// signed "authentic" vote each; see [`crate::votes`]), so people who
    /// trust this node find its files first.
    pub sign_shares: bool,
}

impl NodeConfig {
    /// A node with default settings.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        NodeConfig {
            data_dir,
            listen,
            share: Vec::new(),
            endpoint: EndpointConfig::default(),
            upload: TransferLimits::default(),
            supernode: None,
            bootstrap: Vec::new(),
            rescan_interval: Some(Duration::from_secs(60)),
            leaf_sessions: 2,
            accept_inbound: true,
            reachable: true,
            reobserve_every: REOBSERVE_EVERY,
            reachability: Default::default(),
            election: None,
            connection_limits: Default::default(),
            editable_folders: false,
            network: None,
            sign_shares: false,
        }
    }

    pub fn sharing(mut self, folder: PathBuf) -> Self {
        self.share.push(folder);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error("cannot start the supernode: {0}")]
    Supernode(#[from] canopy_supernode::SupernodeError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkLoadError),
}

/// A node that is serving.
pub struct Node {
    endpoint: Endpoint,
    context: Arc<NodeState>,
    data_dir: PathBuf,
    scan: ScanStats,
    leaf_status: watch::Receiver<LeafStatus>,
    /// Whether it started with supernodes to join (from flags or the cache).
    knows_supernodes: bool,
    /// The shared folders (changeable at run time by the app).
    folders: Arc<Folders>,
    searcher: Searcher,
    admission: Arc<Admission>,
    /// Background work stopped on shutdown: accepting peers, the leaf
    /// session, rescans.
    tasks: Vec<JoinHandle<()>>,
    /// Work started later (on promotion), also stopped on shutdown.
    later_tasks: Arc<std::sync::Mutex<Vec<AbortHandle>>>,
    /// The user's votes on files and what others' say.
    votes: Arc<Votes>,
}

impl Node {
    /// Loads (or creates) the identity, scans the shared folders and starts
    /// accepting peers.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let key = NodeKey::load_or_create(&config.data_dir)?;
        // A bad key file stops the start: never fall back on the public network.
        let network = config.network.as_ref().map(|n| n.load()).transpose()?;
        let shares = Arc::new(Shares::default());
        let folders = Arc::new(match config.editable_folders {
            true => Folders::load(config.share.clone(), &config.data_dir),
            false => Folders::fixed(config.share.clone()),
        });
        let scan = {
            let (folders, data_dir, shares) =
                (folders.list_for_scan(), config.data_dir.clone(), shares.clone());
            let keep_downloads = config.editable_folders;
            tokio::task::spawn_blocking(move || {
                let mut cache = HashCache::open(&data_dir);
                let scanned = share::scan(&folders, &mut cache, &shares);
                if keep_downloads {
                    let restored = share::restore_downloaded(&data_dir, &shares);
                    if restored > 0 {
                        tracing::info!(restored, "sharing again what this node downloaded before");
                    }
                }
                scanned
            })
            .await
            .expect("scan task panicked")?
        };
        let votes = Votes::open(&config.data_dir, key.clone());
        let endpoint = Endpoint::bind_in(key, config.listen, &config.endpoint, network)?;
        let supernode = match config.supernode.clone() {
            Some(settings) => Some(Supernode::start(settings)?),
            None => None,
        };
        let context = Arc::new(NodeState::new(shares.clone(), &config.upload, supernode.clone()));
        if let Some(membership) = endpoint.membership() {
            let _ = context.membership.set(membership.clone());
        }
        let _ = context.votes.set(votes.clone());
        *context.reach.locked() = config.reachability.clone();
        let admission = Arc::new(Admission::new(config.connection_limits));
        let mut tasks = vec![tokio::spawn(accept_loop(
            endpoint.clone(),
            context.clone(),
            config.accept_inbound,
            admission.clone(),
        ))];
        if let Some(settings) = config.network.clone() {
            tasks.push(tokio::spawn(crate::network::watch(settings, endpoint.clone())));
        }
        if config.rescan_interval.is_some() && !folders.list().is_empty() || config.editable_folders {
            tasks.push(tokio::spawn(rescan_loop(
                folders.clone(),
                config.data_dir.clone(),
                shares.clone(),
                config.rescan_interval,
            )));
        }
        let later_tasks: Arc<std::sync::Mutex<Vec<AbortHandle>>> = Arc::default();
        let mut known = config.bootstrap.clone();
        for cached in hostcache::load(&config.data_dir) {
            if !known.iter().any(|s| s.id == cached.id) {
                known.push(cached);
            }
        }
        let knows_supernodes = !known.is_empty();
        let known_at_start = known.clone();
        let (status, leaf_status) = watch::channel(LeafStatus::default());
        let status = Arc::new(status);
        let links = leaf::SessionLinks::default();
        // How this node's leaf sessions run, whenever it is a leaf.
        let leaf = LeafSettings {
            supernodes: Vec::new(),
            sessions: config.leaf_sessions,
            data_dir: config.data_dir.clone(),
            reachable: config.reachable && config.accept_inbound,
            may_accept: config.accept_inbound,
            reobserve_every: config.reobserve_every,
            links: links.clone(),
        };
        let playing = match &supernode {
            Some(supernode) => {
                let overlay = config
                    .supernode
                    .as_ref()
                    .map(|s| s.overlay.clone())
                    .unwrap_or_default();
                let own_files = take_supernode_role(
                    supernode,
                    overlay,
                    &endpoint,
                    &config.data_dir,
                    &config.bootstrap,
                    &shares,
                );
                let playing = Playing::Supernode {
                    supernode: supernode.clone(),
                    own_files: own_files.abort_handle(),
                };
                tasks.push(own_files);
                playing
            }
            None => {
                let session = leaf.joining(known.clone()).map(|settings| {
                    let task = tokio::spawn(leaf::run(
                        endpoint.clone(),
                        context.clone(),
                        settings,
                        status.clone(),
                    ));
                    let session = task.abort_handle();
                    tasks.push(task);
                    session
                });
                Playing::Leaf { session }
            }
        };
        if let Some(election) = config.election.clone() {
            let keeper = RoleKeeper {
                later_tasks: later_tasks.clone(),
                endpoint: endpoint.clone(),
                context: context.clone(),
                shares: shares.clone(),
                data_dir: config.data_dir.clone(),
                bootstrap: config.bootstrap.clone(),
                known,
                leaf: Some(leaf),
                leaf_status: status,
                supernode_settings: config.supernode.clone().or_else(|| election.supernode.clone()),
            };
            tasks.push(tokio::spawn(keeper.keep(election, playing)));
        }
        tasks.push(tokio::spawn(votes.clone().keep_handing_in(links.clone())));
        if config.sign_shares {
            tasks.push(tokio::spawn(vouch_for_shares(votes.clone(), shares.clone())));
        }
        let searcher = Searcher::of_node(
            endpoint.clone(),
            NodeSide {
                context: context.clone(),
                leaf_status: leaf_status.clone(),
                links,
            },
            known_at_start,
        );
        tracing::debug!(
            peer = %endpoint.peer_addr(),
            files = scan.files,
            bytes = scan.bytes,
            hashed = scan.hashed,
            cached = scan.cached,
            supernode = supernode.is_some(),
            "node started"
        );
        Ok(Node {
            endpoint,
            context,
            data_dir: config.data_dir,
            scan,
            leaf_status,
            knows_supernodes,
            folders,
            searcher,
            admission,
            tasks,
            later_tasks,
            votes,
        })
    }

    /// The user's votes on files, and others' as far as this node knows.
    pub fn votes(&self) -> &Arc<Votes> {
        &self.votes
    }

    /// The shared folders.
    pub fn folders(&self) -> &Arc<Folders> {
        &self.folders
    }

    /// What the node shares and serves, and how it stands: what services
    /// attached beside it read.
    pub fn context(&self) -> &Arc<NodeState> {
        &self.context
    }

    /// How this node asks the network (searches, sources by hash).
    pub fn searcher(&self) -> &Searcher {
        &self.searcher
    }

    /// The connection caps, and how often they refused.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The folder holding this node's key and caches.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The supernode this node runs, while it is one.
    pub fn supernode(&self) -> Option<Arc<Supernode>> {
        self.context.supernode()
    }

    /// Whether it started knowing supernodes (from flags or its cache).
    pub fn knows_supernodes(&self) -> bool {
        self.knows_supernodes
    }

    /// The leaf sessions' state (empty while this node is a supernode).
    pub fn leaf_status(&self) -> watch::Receiver<LeafStatus> {
        self.leaf_status.clone()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `PEERID@HOST:PORT` as bound (an unspecified host stays unspecified).
    pub fn peer_addr(&self) -> PeerAddr {
        self.endpoint.peer_addr()
    }

    pub fn shares(&self) -> &Arc<Shares> {
        &self.context.shares
    }

    pub fn stats(&self) -> &Arc<ServeStats> {
        &self.context.stats
    }

    /// Starts downloading `hash` into `output` from `sources`, serving the
    /// blocks verified so far to other downloaders meanwhile.
    pub fn download(
        &self,
        hash: ContentHash,
        output: &Path,
        sources: Vec<PeerAddr>,
        options: DownloadOptions,
    ) -> Download {
        self.download_from(
            hash,
            output,
            sources.into_iter().map(SourceSpec::from).collect(),
            options,
        )
    }

    /// Like [`Node::download`], with sources that may be reached by push.
    pub fn download_from(
        &self,
        hash: ContentHash,
        output: &Path,
        sources: Vec<SourceSpec>,
        options: DownloadOptions,
    ) -> Download {
        Download::start(
            self.endpoint.clone(),
            self.context.clone(),
            hash,
            output,
            sources,
            options,
        )
    }

    pub fn scan_stats(&self) -> ScanStats {
        self.scan
    }

    /// Leaves the network politely, then shuts down: a supernode first
    /// hands its leaves to other supernodes and closes its links.
    pub async fn leave(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.later_tasks.locked().iter() {
            task.abort();
        }
        if let Some(supernode) = self.context.set_supernode(None) {
            supernode.step_down(HAND_OVER_GRACE).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, closes every connection and waits until peers know.
    /// Services attached beside the node are shut down first by whoever
    /// attached them.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.later_tasks.locked().iter() {
            task.abort();
        }
        self.endpoint.shutdown().await;
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    context: Arc<NodeState>,
    accept_inbound: bool,
    admission: Arc<Admission>,
) {
    while let Some(incoming) = endpoint.accept().await {
        if !accept_inbound {
            // Behaves as a node behind a firewall: peers reach it by push.
            incoming.refuse();
            continue;
        }
        let remote = canopy_common::net::canonical(incoming.remote_address());
        let Some(address_slot) = admission.address(remote.ip()) else {
            tracing::debug!(%remote, "refusing a connection: too many from this address");
            incoming.refuse();
            continue;
        };
        let (context, admission, endpoint) = (context.clone(), admission.clone(), endpoint.clone());
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(%remote, %error, "handshake failed");
                    return;
                }
            };
            // In a private network this waits for the peer's membership
            // proof: nothing is served to a peer that has not proven it.
            let peer = match endpoint.admit(&connection).await {
                Ok(peer) => peer,
                Err(error) => {
                    tracing::debug!(%remote, %error, "connection refused");
                    return;
                }
            };
            let Some(_peer_slot) = admission.peer(peer) else {
                tracing::debug!(%remote, "closing a connection: too many from this peer");
                connection.close(0u32.into(), b"too many connections");
                return;
            };
            context.deliver_push(peer, &connection);
            endpoint
                .guard(&connection, peer, serve_connection(connection.clone(), context))
                .await;
            drop(address_slot);
        });
    }
}

/// Rescans the shared folders now and then (every `interval`, if any) and
/// whenever the list of folders changes, so additions, removals and
/// renames reach the network (the leaf session sends the difference).
async fn rescan_loop(
    folders: Arc<Folders>,
    data_dir: PathBuf,
    shares: Arc<Shares>,
    interval: Option<Duration>,
) {
    let mut changes = folders.subscribe();
    let period = interval.unwrap_or(Duration::from_secs(3600 * 24 * 365));
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = timer.tick(), if interval.is_some() => {}
            _ = shares.rescan_soon.notified() => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        changes.mark_unchanged();
        let (folders, data_dir, shares) = (folders.list_for_scan(), data_dir.clone(), shares.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut cache = HashCache::open(&data_dir);
            share::scan(&folders, &mut cache, &shares)
        })
        .await;
        match result {
            Ok(Ok(stats)) if stats.hashed > 0 => {
                tracing::info!(new = stats.hashed, files = stats.files, "rescanned shares")
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "rescan failed"),
            Err(error) => tracing::warn!(%error, "rescan task failed"),
        }
    }
}

/// How often a publishing node looks for shared files it has not vouched
/// for yet (the folders are rescanned every minute by default).
const VOUCH_EVERY: Duration = Duration::from_secs(60);

/// Vouches for every file this node shares, as it appears ([`NodeConfig::sign_shares`]).
async fn vouch_for_shares(votes: Arc<Votes>, shares: Arc<Shares>) {
    loop {
        let files: Vec<_> = shares.list().iter().map(crate::share::SharedFile::hash).collect();
        let new = votes.vouch_for(&files);
        if new > 0 {
            tracing::info!(files = new, "vouched for shared files as their publisher");
        }
        tokio::time::sleep(VOUCH_EVERY).await;
    }
}
