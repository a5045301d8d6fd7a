//! A running node: identity, one QUIC endpoint, what it shares, and the
//! loop that accepts peers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::path::Path;

use canopy_common::net::{Endpoint, EndpointConfig, NetError, NodeKey};
use canopy_common::proto::{ContentHash, PeerAddr};
use tokio::task::JoinHandle;

use crate::download::{Download, DownloadOptions};
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
}

/// A node that is serving.
pub struct Node {
    endpoint: Endpoint,
    context: Arc<ServeContext>,
    scan: ScanStats,
    accept_loop: JoinHandle<()>,
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
        let context = Arc::new(ServeContext::new(shares, &config.upload));
        let accept_loop = tokio::spawn(accept_loop(endpoint.clone(), context.clone()));
        tracing::debug!(
            peer = %endpoint.peer_addr(),
            files = scan.files,
            bytes = scan.bytes,
            hashed = scan.hashed,
            cached = scan.cached,
            "node started"
        );
        Ok(Node {
            endpoint,
            context,
            scan,
            accept_loop,
        })
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
        self.accept_loop.abort();
        self.endpoint.shutdown().await;
    }
}

async fn accept_loop(endpoint: Endpoint, context: Arc<ServeContext>) {
    while let Some(incoming) = endpoint.accept().await {
        let context = context.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => serve_connection(connection, context).await,
                Err(error) => tracing::debug!(%remote, %error, "handshake failed"),
            }
        });
    }
}
