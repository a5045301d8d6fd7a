//! A running node: identity, one QUIC endpoint, what it shares, and the
//! loop that accepts peers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::path::Path;
use std::time::Duration;

use canopy_common::net::{Endpoint, EndpointConfig, NetError, NodeKey};
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
        match &supernode {
            Some(supernode) => {
                let mut overlay = config
                    .supernode
                    .as_ref()
                    .map(|s| s.overlay.clone())
                    .unwrap_or_default();
                overlay
                    .hosts_path
                    .get_or_insert_with(|| config.data_dir.join("overlay-hosts.txt"));
                supernode.start_overlay(overlay, endpoint.clone(), &config.bootstrap);
                // Searchers reach our firewalled leaves by asking us.
                supernode.index().set_relay_address(endpoint.peer_addr());
                // A supernode answers for its own files from its own index.
                tasks.push(tokio::spawn(index_own_files(
                    supernode.clone(),
                    endpoint.peer_addr(),
                    shares.clone(),
                )));
            }
            None => {
                let mut supernodes = config.bootstrap.clone();
                for known in hostcache::load(&config.data_dir) {
                    if !supernodes.iter().any(|s| s.id == known.id) {
                        supernodes.push(known);
                    }
                }
                if !supernodes.is_empty() {
                    let (status, receiver) = watch::channel(LeafStatus::default());
                    leaf_status = Some(receiver);
                    let settings = leaf::LeafSettings {
                        supernodes,
                        sessions: config.leaf_sessions,
                        data_dir: config.data_dir.clone(),
                        accept_inbound: config.accept_inbound,
                    };
                    let session = leaf::run(endpoint.clone(), context.clone(), settings, status);
                    tasks.push(tokio::spawn(session));
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
        })
    }

    /// The supernode this node runs, if it is one.
    pub fn supernode(&self) -> Option<&Arc<Supernode>> {
        self.context.supernode.as_ref()
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
