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
use crate::downloads::Downloads;
use crate::folders::Folders;
use crate::hostcache;
use crate::leaf::{self, LeafStatus};
use crate::searching::Searcher;
use crate::serve::{serve_connection, ServeContext, ServeStats, TransferLimits};
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
    /// Whether peers can connect to us. A node that cannot (behind a NAT or
    /// firewall it cannot open) says so, and is reached by push instead.
    pub accept_inbound: bool,
    /// For a node whose role was elected: keep re-deciding as the network
    /// changes (a leaf promotes when supernodes run short of slots; a
    /// supernode with few leaves and enough neighbours steps down).
    pub election: Option<ElectionSettings>,
    /// Where to serve metrics for monitoring and `canopy status` (`None`: not at all).
    pub control: Option<SocketAddr>,
    /// What the start-up probe measured, reported in the metrics.
    pub profile: Option<Profile>,
    /// Connections one address or one peer may hold at once.
    pub connection_limits: crate::admission::ConnectionLimits,
    /// Run the desktop app's side of the node: a download manager saving
    /// into this folder, and shared folders the app can change (kept in
    /// the data folder). `None` (as for `canopy get`): neither.
    pub downloads: Option<PathBuf>,
    /// Serve the desktop app (needs `downloads`).
    pub ui: Option<crate::web::UiConfig>,
    /// Serve shared content over HTTP on this address.
    pub gateway: Option<SocketAddr>,
    /// Be a member of this private network instead of the public one
    /// (`None`: the public network). See [`crate::network`].
    pub network: Option<crate::network::NetworkSettings>,
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
            election: None,
            control: None,
            profile: None,
            connection_limits: Default::default(),
            downloads: None,
            ui: None,
            gateway: None,
            network: None,
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
    #[error("cannot serve metrics on {addr}: {source}")]
    Control {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkLoadError),
}

/// A node that is serving.
pub struct Node {
    endpoint: Endpoint,
    context: Arc<ServeContext>,
    scan: ScanStats,
    leaf_status: watch::Receiver<LeafStatus>,
    /// Whether it started with supernodes to join (from flags or the cache).
    knows_supernodes: bool,
    /// The metrics endpoint, while it serves.
    control: Option<(SocketAddr, crate::web::control::ServeTask)>,
    /// The shared folders (changeable at run time by the app).
    folders: Arc<Folders>,
    /// The download manager, for a node run as a desktop app.
    downloads: Option<Downloads>,
    /// The desktop app and the gateway, while they serve.
    ui: Option<crate::web::Served>,
    gateway: Option<crate::web::Served>,
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
        // A bad key file stops the start: never fall back on the public network.
        let network = config.network.as_ref().map(|n| n.load()).transpose()?;
        let shares = Arc::new(Shares::default());
        let folders = Arc::new(match config.downloads {
            Some(_) => Folders::load(config.share.clone(), &config.data_dir),
            None => Folders::fixed(config.share.clone()),
        });
        let scan = {
            let (folders, data_dir, shares) =
                (folders.list_for_scan(), config.data_dir.clone(), shares.clone());
            tokio::task::spawn_blocking(move || {
                let mut cache = HashCache::open(&data_dir);
                share::scan(&folders, &mut cache, &shares)
            })
            .await
            .expect("scan task panicked")?
        };
        let endpoint = Endpoint::bind_in(key, config.listen, &config.endpoint, network)?;
        let supernode = match config.supernode.clone() {
            Some(settings) => Some(Supernode::start(settings)?),
            None => None,
        };
        let context = Arc::new(ServeContext::new(
            shares.clone(),
            &config.upload,
            supernode.clone(),
        ));
        if let Some(membership) = endpoint.membership() {
            let _ = context.membership.set(membership.clone());
        }
        let admission = Arc::new(crate::admission::Admission::new(config.connection_limits));
        let mut tasks = vec![tokio::spawn(accept_loop(
            endpoint.clone(),
            context.clone(),
            config.accept_inbound,
            admission.clone(),
        ))];
        if let Some(settings) = config.network.clone() {
            tasks.push(tokio::spawn(crate::network::watch(settings, endpoint.clone())));
        }
        if config.rescan_interval.is_some() && !folders.list().is_empty() || config.downloads.is_some() {
            tasks.push(tokio::spawn(rescan_loop(
                folders.clone(),
                config.data_dir.clone(),
                shares.clone(),
                config.rescan_interval,
            )));
        }
        let later_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
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
        let playing = match &supernode {
            Some(supernode) => {
                let overlay = config
                    .supernode
                    .as_ref()
                    .map(|s| s.overlay.clone())
                    .unwrap_or_default();
                let own_files = take_supernode_role(supernode, overlay, &endpoint, &config, &shares);
                let playing = Playing::Supernode {
                    supernode: supernode.clone(),
                    own_files: own_files.abort_handle(),
                };
                tasks.push(own_files);
                playing
            }
            None => {
                let mut session = None;
                if !known.is_empty() && config.leaf_sessions > 0 {
                    let settings = leaf::LeafSettings {
                        supernodes: known.clone(),
                        sessions: config.leaf_sessions,
                        data_dir: config.data_dir.clone(),
                        accept_inbound: config.accept_inbound,
                        links: links.clone(),
                    };
                    let task = tokio::spawn(leaf::run(
                        endpoint.clone(),
                        context.clone(),
                        settings,
                        status.clone(),
                    ));
                    session = Some(task.abort_handle());
                    tasks.push(task);
                }
                Playing::Leaf { session }
            }
        };
        if let Some(election) = config.election.clone() {
            let keeper = RoleKeeper {
                later_tasks: later_tasks.clone(),
                endpoint: endpoint.clone(),
                context: context.clone(),
                config: config.clone(),
                shares: shares.clone(),
                known,
                leaf_status: status,
                links: links.clone(),
                supernode_settings: election.supernode.clone(),
            };
            tasks.push(tokio::spawn(keeper.keep(election, playing)));
        }
        let control = match config.control {
            Some(addr) => {
                let view = crate::web::control::NodeView {
                    context: context.clone(),
                    leaf_status: leaf_status.clone(),
                    profile: config.profile.clone(),
                    started: std::time::Instant::now(),
                    admission: admission.clone(),
                };
                Some(
                    crate::web::control::start(addr, &config.data_dir, view)
                        .await
                        .map_err(|source| NodeError::Control { addr, source })?,
                )
            }
            None => None,
        };
        let searcher = Searcher {
            endpoint: endpoint.clone(),
            context: context.clone(),
            leaf_status: leaf_status.clone(),
            links,
            known: known_at_start,
        };
        let downloads = config.downloads.clone().map(|folder| {
            Downloads::start(
                endpoint.clone(),
                context.clone(),
                searcher.clone(),
                &config.data_dir,
                folder,
            )
        });
        let gateway = match config.gateway {
            Some(addr) => Some(
                crate::web::serve_gateway(
                    addr,
                    crate::web::gateway::Gateway {
                        context: context.clone(),
                    },
                )
                .await?,
            ),
            None => None,
        };
        let ui = match (&config.ui, &downloads) {
            (Some(ui), Some(downloads)) => {
                let key = crate::web::auth::load_or_create_key(&config.data_dir).map_err(|source| {
                    crate::web::WebError::Key {
                        path: config.data_dir.join(crate::web::auth::KEY_FILE),
                        source,
                    }
                })?;
                let app = Arc::new(crate::web::api::App::new(crate::web::api::AppParts {
                    key,
                    password: ui.password.clone(),
                    context: context.clone(),
                    leaf_status: leaf_status.clone(),
                    peer: endpoint.peer_addr(),
                    role_reason: ui.role_reason.clone(),
                    downloads: downloads.clone(),
                    folders: folders.clone(),
                    searcher,
                    settings: ui.settings.clone(),
                    settings_file: ui.settings_file.clone(),
                }));
                if let Some(gateway) = &gateway {
                    let _ = app.gateway.set(gateway.addr);
                }
                Some(crate::web::serve_app(ui, app, &config.data_dir).await?)
            }
            _ => None,
        };
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
            knows_supernodes,
            control,
            folders,
            downloads,
            ui,
            gateway,
            tasks,
            later_tasks,
        })
    }

    /// The shared folders.
    pub fn folders(&self) -> &Arc<Folders> {
        &self.folders
    }

    /// The download manager, if this node runs as a desktop app.
    pub fn downloads(&self) -> Option<&Downloads> {
        self.downloads.as_ref()
    }

    /// Where the desktop app is served, if it is.
    pub fn ui_addr(&self) -> Option<SocketAddr> {
        self.ui.as_ref().map(|served| served.addr)
    }

    /// Where the HTTP gateway listens, if it does.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(|served| served.addr)
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

    /// Where metrics are served, if they are.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().map(|(addr, _)| *addr)
    }

    /// Leaves the network politely, then shuts down: a supernode first
    /// hands its leaves to other supernodes and closes its links.
    pub async fn leave(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.later_tasks.lock().expect("tasks lock").iter() {
            task.abort();
        }
        if let Some(supernode) = self.context.set_supernode(None) {
            supernode.step_down(HAND_OVER_GRACE).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, closes every connection and waits until peers know.
    pub async fn shutdown(mut self) {
        if let Some(downloads) = self.downloads.take() {
            // Part files up to date, so the next start resumes with nothing lost.
            downloads.shut_down().await;
        }
        drop(self.ui.take());
        drop(self.gateway.take());
        for task in &self.tasks {
            task.abort();
        }
        for task in self.later_tasks.lock().expect("tasks lock").iter() {
            task.abort();
        }
        self.endpoint.shutdown().await;
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    context: Arc<ServeContext>,
    accept_inbound: bool,
    admission: Arc<crate::admission::Admission>,
) {
    while let Some(incoming) = endpoint.accept().await {
        if !accept_inbound {
            // Behaves as a node behind a firewall: peers reach it by push.
            incoming.refuse();
            continue;
        }
        let remote = incoming.remote_address();
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

/// The role a node plays right now, and the tasks that make it so.
enum Playing {
    Leaf {
        session: Option<tokio::task::AbortHandle>,
    },
    Supernode {
        supernode: Arc<Supernode>,
        own_files: tokio::task::AbortHandle,
    },
}

/// Keeps re-deciding the role of a node whose role was elected (not
/// forced), for as long as it runs. A leaf asks the supernodes it knows how
/// much room they have and promotes itself when they run short; a
/// supernode left with few leaves while it has enough neighbours hands its
/// leaves on and becomes a leaf again. The [`Election`] state machine holds
/// each role for a minimum tenure, so nodes do not flap.
struct RoleKeeper {
    /// Where tasks started on a change of role are kept, to stop with the node.
    later_tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    endpoint: Endpoint,
    context: Arc<ServeContext>,
    config: NodeConfig,
    shares: Arc<Shares>,
    /// Supernodes we know of: asked for room as a leaf, joined after a demotion.
    known: Vec<PeerAddr>,
    leaf_status: Arc<watch::Sender<LeafStatus>>,
    links: leaf::SessionLinks,
    /// How to run as a supernode after a promotion.
    supernode_settings: Option<SupernodeConfig>,
}

/// Supernodes asked for their room at each observation.
const STATUS_ASKED: usize = 8;
/// Supernodes remembered by the role keeper.
const KNOWN_KEPT: usize = 32;
/// How long a stepping-down supernode waits for its leaves to move on.
const HAND_OVER_GRACE: Duration = Duration::from_secs(5);

impl RoleKeeper {
    async fn keep(mut self, settings: ElectionSettings, mut playing: Playing) {
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
            match crate::probe::status(&self.endpoint, supernode).await {
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
    fn promote(&mut self, leaf_session: Option<tokio::task::AbortHandle>) -> Option<Playing> {
        let settings = self
            .config
            .supernode
            .clone()
            .or_else(|| self.supernode_settings.clone())
            .unwrap_or_else(|| SupernodeConfig::for_this_machine(Some(self.config.data_dir.join("index"))));
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
        let mut config = self.config.clone();
        for known in &self.known {
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
        )
        .abort_handle();
        self.later_tasks
            .lock()
            .expect("tasks lock")
            .push(own_files.clone());
        Some(Playing::Supernode { supernode, own_files })
    }

    /// Hands the leaves on, leaves the overlay and joins it again as a leaf,
    /// through the supernodes that were our neighbours.
    async fn demote(&mut self, supernode: Arc<Supernode>, own_files: tokio::task::AbortHandle) -> Playing {
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
    fn start_leaf_session(&self) -> Option<tokio::task::AbortHandle> {
        if self.known.is_empty() || self.config.leaf_sessions == 0 {
            return None;
        }
        self.leaf_status.send_replace(LeafStatus::default());
        let settings = leaf::LeafSettings {
            supernodes: self.known.clone(),
            sessions: self.config.leaf_sessions,
            data_dir: self.config.data_dir.clone(),
            accept_inbound: self.config.accept_inbound,
            links: self.links.clone(),
        };
        let session = tokio::spawn(leaf::run(
            self.endpoint.clone(),
            self.context.clone(),
            settings,
            self.leaf_status.clone(),
        ))
        .abort_handle();
        self.later_tasks.lock().expect("tasks lock").push(session.clone());
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
