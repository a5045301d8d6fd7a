//! A running node: identity, one QUIC endpoint, what it shares, and the
//! loop that accepts peers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::path::Path;
use std::time::Duration;

use canopy_common::net::{Endpoint, EndpointConfig, NetError, NodeKey};
use canopy_common::proto::election::{Change, Election, ElectionConfig, Observation, Profile, Role};
use canopy_common::proto::{ContentHash, PeerAddr};
use canopy_supernode::{Supernode, SupernodeConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::download::{Download, DownloadOptions, SourceSpec};
use crate::hostcache;
use crate::leaf::{self, LeafStatus};
use crate::serve::{serve_connection, ServeContext, ServeStats, UploadLimits};
use crate::share::{self, HashCache, ScanStats, ShareError, Shares};

/// Everything needed to start a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Holds the node key and caches.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Folders shared with the network.
    pub share: Vec<PathBuf>,
    pub endpoint: EndpointConfig,
    pub upload: UploadLimits,
    /// Run as a supernode with these settings (`None`: a leaf).
    pub supernode: Option<SupernodeConfig>,
    /// Supernodes a leaf joins (falling back on the ones it knew before).
    pub bootstrap: Vec<PeerAddr>,
    /// How often the shared folders are rescanned for changes (`None`: only at start).
    pub rescan_interval: Option<Duration>,
    /// Supernodes a leaf stays joined to at once.
    pub leaf_sessions: usize,
    /// Whether peers can connect to us. A node that cannot (behind a NAT or
    /// firewall it cannot open) says so, and is reached by push instead.
    pub accept_inbound: bool,
    /// For a node elected as a leaf: keep watching, and promote when the
    /// network runs short of supernodes.
    pub election: Option<ElectionSettings>,
}

impl NodeConfig {
    /// A node with default settings.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        NodeConfig {
            data_dir,
            listen,
            share: Vec::new(),
            endpoint: EndpointConfig::default(),
            upload: UploadLimits::default(),
            supernode: None,
            bootstrap: Vec::new(),
            rescan_interval: Some(Duration::from_secs(60)),
            leaf_sessions: 2,
            accept_inbound: true,
            election: None,
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
}

/// A node that is serving.
pub struct Node {
    endpoint: Endpoint,
    context: Arc<ServeContext>,
    scan: ScanStats,
    leaf_status: Option<watch::Receiver<LeafStatus>>,
    /// Background work stopped on shutdown: accepting peers, the leaf
    /// session, rescans.
    tasks: Vec<JoinHandle<()>>,
    /// Work started later (on promotion), also stopped on shutdown.
    later_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Node {
    /// Loads (or creates) the identity, scans the shared folders and starts
    /// accepting peers.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let key = NodeKey::load_or_create(&config.data_dir)?;
        let shares = Arc::new(Shares::default());
        let scan = {
            let (folders, data_dir, shares) = (config.share.clone(), config.data_dir.clone(), shares.clone());
            tokio::task::spawn_blocking(move || {
                let mut cache = HashCache::open(&data_dir);
                share::scan(&folders, &mut cache, &shares)
            })
            .await
            .expect("scan task panicked")?
        };
        let endpoint = Endpoint::bind(key, config.listen, &config.endpoint)?;
        let supernode = match config.supernode.clone() {
            Some(settings) => Some(Supernode::start(settings)?),
            None => None,
        };
        let context = Arc::new(ServeContext::new(
            shares.clone(),
            &config.upload,
            supernode.clone(),
        ));
        let mut tasks = vec![tokio::spawn(accept_loop(
            endpoint.clone(),
            context.clone(),
            config.accept_inbound,
        ))];
        if let Some(interval) = config.rescan_interval.filter(|_| !config.share.is_empty()) {
            tasks.push(tokio::spawn(rescan_loop(
                config.share.clone(),
                config.data_dir.clone(),
                shares.clone(),
                interval,
            )));
        }
        let mut leaf_status = None;
        let later_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        match &supernode {
            Some(supernode) => {
                let overlay = config
                    .supernode
                    .as_ref()
                    .map(|s| s.overlay.clone())
                    .unwrap_or_default();
                tasks.push(take_supernode_role(
                    supernode, overlay, &endpoint, &config, &shares,
                ));
            }
            None => {
                let mut supernodes = config.bootstrap.clone();
                for known in hostcache::load(&config.data_dir) {
                    if !supernodes.iter().any(|s| s.id == known.id) {
                        supernodes.push(known);
                    }
                }
                let mut leaf_task = None;
                if !supernodes.is_empty() {
                    let (status, receiver) = watch::channel(LeafStatus::default());
                    leaf_status = Some(receiver);
                    let settings = leaf::LeafSettings {
                        supernodes: supernodes.clone(),
                        sessions: config.leaf_sessions,
                        data_dir: config.data_dir.clone(),
                        accept_inbound: config.accept_inbound,
                    };
                    let session =
                        tokio::spawn(leaf::run(endpoint.clone(), context.clone(), settings, status));
                    leaf_task = Some(session.abort_handle());
                    tasks.push(session);
                }
                if let Some(election) = config.election.clone() {
                    let promotion = Promotion {
                        later_tasks: later_tasks.clone(),
                        endpoint: endpoint.clone(),
                        context: context.clone(),
                        config: config.clone(),
                        shares: shares.clone(),
                        supernodes,
                        leaf_task,
                    };
                    tasks.push(tokio::spawn(promotion.watch(election)));
                }
            }
        }
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
            scan,
            leaf_status,
            tasks,
            later_tasks,
        })
    }

    /// The supernode this node runs, if it is one.
    pub fn supernode(&self) -> Option<&Arc<Supernode>> {
        self.context.supernode.get()
    }

    /// The leaf session's state, if this node is a leaf with supernodes to join.
    pub fn leaf_status(&self) -> Option<watch::Receiver<LeafStatus>> {
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

    /// Stops accepting, closes every connection and waits until peers know.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.later_tasks.lock().expect("tasks lock").iter() {
            task.abort();
        }
        self.endpoint.shutdown().await;
    }
}

async fn accept_loop(endpoint: Endpoint, context: Arc<ServeContext>, accept_inbound: bool) {
    while let Some(incoming) = endpoint.accept().await {
        if !accept_inbound {
            // Behaves as a node behind a firewall: peers reach it by push.
            incoming.refuse();
            continue;
        }
        let context = context.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => {
                    if let Ok(peer) = canopy_common::net::remote_peer_id(&connection) {
                        context.deliver_push(peer, &connection);
                    }
                    serve_connection(connection, context).await
                }
                Err(error) => tracing::debug!(%remote, %error, "handshake failed"),
            }
        });
    }
}

/// Rescans the shared folders now and then so additions, removals and
/// renames reach the network (the leaf session sends the difference).
async fn rescan_loop(folders: Vec<PathBuf>, data_dir: PathBuf, shares: Arc<Shares>, interval: Duration) {
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        timer.tick().await;
        let (folders, data_dir, shares) = (folders.clone(), data_dir.clone(), shares.clone());
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
fn take_supernode_role(
    supernode: &Arc<Supernode>,
    mut overlay: canopy_supernode::OverlayConfig,
    endpoint: &Endpoint,
    config: &NodeConfig,
    shares: &Arc<Shares>,
) -> JoinHandle<()> {
    overlay
        .hosts_path
        .get_or_insert_with(|| config.data_dir.join("overlay-hosts.txt"));
    supernode.start_overlay(overlay, endpoint.clone(), &config.bootstrap);
    // Searchers reach our firewalled leaves by asking us.
    supernode.index().set_relay_address(endpoint.peer_addr());
    // A supernode answers for its own files from its own index.
    tokio::spawn(index_own_files(
        supernode.clone(),
        endpoint.peer_addr(),
        shares.clone(),
    ))
}

/// A leaf elected at start-up that keeps watching whether the network
/// needs it as a supernode, and becomes one when the election says so.
struct Promotion {
    /// Where tasks started on promotion are kept, to stop with the node.
    later_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    endpoint: Endpoint,
    context: Arc<ServeContext>,
    config: NodeConfig,
    shares: Arc<Shares>,
    /// Supernodes to ask how much room they have.
    supernodes: Vec<PeerAddr>,
    leaf_task: Option<tokio::task::AbortHandle>,
}

impl Promotion {
    async fn watch(self, settings: ElectionSettings) {
        let started = std::time::Instant::now();
        let mut election = Election::new(settings.rules, Role::Leaf, started.elapsed());
        let mut tick = tokio::time::interval(settings.observe_every);
        loop {
            tick.tick().await;
            let mut seen = Observation::default();
            for supernode in self.supernodes.iter().take(8) {
                match crate::probe::status(&self.endpoint, supernode).await {
                    Some((leaves, max_leaves)) => {
                        seen.hints.supernodes += 1;
                        seen.hints.total_slots += u64::from(max_leaves);
                        seen.hints.free_slots += u64::from(max_leaves.saturating_sub(leaves));
                    }
                    None => seen.hints.silent += 1,
                }
            }
            if let Some(Change::Promote { reason }) =
                election.observe(&settings.profile, &seen, started.elapsed())
            {
                tracing::info!(%reason, "promoting to supernode");
                self.promote();
                return;
            }
        }
    }

    fn promote(self) {
        let mut settings = SupernodeConfig::for_this_machine(Some(self.config.data_dir.join("index")));
        if let Some(configured) = &self.config.supernode {
            settings = configured.clone();
        }
        let supernode = match Supernode::start(settings.clone()) {
            Ok(supernode) => supernode,
            Err(error) => {
                tracing::warn!(%error, "cannot become a supernode; staying a leaf");
                return;
            }
        };
        if self.context.supernode.set(supernode.clone()).is_err() {
            return;
        }
        // Our files go into our own index now; the old sessions end.
        if let Some(leaf) = &self.leaf_task {
            leaf.abort();
        }
        let mut config = self.config.clone();
        for known in &self.supernodes {
            if !config.bootstrap.iter().any(|b| b.id == known.id) {
                config.bootstrap.push(*known);
            }
        }
        let own_files = take_supernode_role(
            &supernode,
            settings.overlay,
            &self.endpoint,
            &config,
            &self.shares,
        );
        self.later_tasks
            .lock()
            .expect("tasks lock")
            .push(own_files.abort_handle());
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
}
