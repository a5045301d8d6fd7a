//! `canopy run`'s settings, from four places in order of precedence:
//! command-line flags, then `CANOPY_*` environment variables, then a TOML
//! config file, then built-in defaults. Every setting has the same name in
//! all three: `--max-leaves`, `CANOPY_MAX_LEAVES`, `max-leaves = ...`.
//!
//! The file is optional: `--config FILE` (or `CANOPY_CONFIG`) names one, and
//! without it `canopy.toml` in the platform's config folder (e.g.
//! `~/.config/canopy/canopy.toml`) is read if it exists. Unknown keys and bad
//! values are errors that name the key and the line. `deploy/canopy.toml`
//! documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use canopy_common::proto::election::Thresholds;
use canopy_common::proto::network::NetworkName;
use canopy_common::proto::{PeerAddr, PeerId};
use serde::{Deserialize, Deserializer};

use crate::role::RoleChoice;
use crate::units::parse_bytes;

/// The port a node listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 4663;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The flags of `canopy run`. Options left out fall back on the
/// environment, the config file, then the default named in the help.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A TOML file of settings (keys as the flags, without the dashes in
    /// front: `max-leaves = 200`). Flags and CANOPY_* variables win over it.
    #[arg(long, env = "CANOPY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder for this node's key and caches [default: the platform data
    /// folder, e.g. ~/.local/share/canopy].
    #[arg(long, env = "CANOPY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A folder to share, scanned recursively; repeat for several. Hidden
    /// files and partial downloads (*.part) are not shared.
    #[arg(
        long = "share",
        env = "CANOPY_SHARE",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub share: Vec<PathBuf>,
    /// UDP address to listen on [default: `[::]:4663`, IPv6 and IPv4 together; `0.0.0.0:4663`
    /// where the machine has no IPv6].
    #[arg(long, env = "CANOPY_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// auto: measure cores, memory, bandwidth (against known peers) and
    /// reachability, and become a supernode if this machine qualifies and
    /// the network needs one (see `canopy probe`); it keeps re-deciding
    /// while it runs. leaf: join supernodes and publish the shared files.
    /// supernode: index leaves' files and answer their searches [default: auto].
    #[arg(long, env = "CANOPY_ROLE", value_enum)]
    pub role: Option<RoleChoice>,
    /// A supernode to join, as PEERID@HOST:PORT; repeat for several.
    /// Supernodes reached before are remembered and tried too.
    #[arg(long, env = "CANOPY_BOOTSTRAP", value_name = "PEERID@HOST:PORT", value_delimiter = ',', value_parser = super::parse_peer_addr)]
    pub bootstrap: Vec<PeerAddr>,
    /// Leaves a supernode serves at once [default: 100 per GiB of memory].
    #[arg(long, env = "CANOPY_MAX_LEAVES", value_name = "N")]
    pub max_leaves: Option<usize>,
    /// As a supernode: neighbour supernodes to keep linked [default: 4].
    #[arg(long, env = "CANOPY_NEIGHBOURS", value_name = "N")]
    pub neighbours: Option<usize>,
    /// As a supernode: neighbour supernodes accepted at most [default:
    /// 8, or twice --neighbours].
    #[arg(long, env = "CANOPY_MAX_NEIGHBOURS", value_name = "N")]
    pub max_neighbours: Option<usize>,
    /// As a supernode: queries passed on to neighbours per second at most;
    /// more are answered from our index only [default: 200].
    #[arg(long, env = "CANOPY_MAX_QUERIES_FORWARDED", value_name = "N")]
    pub max_queries_forwarded: Option<u32>,
    /// As a supernode: searches one peer may start per second (bursts of
    /// twice as many); more are told to wait. Raise it for a benchmark's
    /// single asker or a gateway searching for many people [default: 5].
    #[arg(long, env = "CANOPY_MAX_SEARCHES_PER_PEER", value_name = "N", value_parser = positive_rate)]
    pub max_searches_per_peer: Option<f64>,
    /// As a supernode: exchange keyword tables with neighbours, send each
    /// query only where its words may be, and widen leaves' searches only
    /// as far as results require; `--keyword-routing false` floods as
    /// before [default: true].
    #[arg(long, env = "CANOPY_KEYWORD_ROUTING", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub keyword_routing: Option<bool>,
    /// As a supernode with keyword routing: a leaf's search stops widening
    /// once this many files are found [default: 150].
    #[arg(long, env = "CANOPY_SEARCH_TARGET", value_name = "N")]
    pub search_target: Option<u32>,
    /// As a supernode with keyword routing: levels of keyword tables, 1 to
    /// 8; tables route query copies with up to this many hops to go
    /// [default: 5].
    #[arg(long, env = "CANOPY_TABLE_LEVELS", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub table_levels: Option<u8>,
    /// As a supernode: memory and disk the index may use (about 512 bytes
    /// per file indexed); publishes beyond it are refused [default: 1G].
    #[arg(long, env = "CANOPY_INDEX_BUDGET", value_name = "SIZE", value_parser = parse_bytes)]
    pub index_budget: Option<u64>,
    /// As a supernode: never relay for pairs of peers that cannot reach
    /// each other (both behind routers that give every peer a new port).
    /// Relaying costs the supernode's bandwidth; the peers' connection
    /// stays encrypted end to end.
    #[arg(long, env = "CANOPY_NO_RELAY")]
    pub no_relay: bool,
    /// As a supernode: do not check that leaves hold what they publish (a
    /// random 1 KiB chunk and its proof against the hash, one check per
    /// leaf every ten minutes; a leaf failing several in a row is dropped).
    /// For a private network of trusted machines, or a benchmark.
    #[arg(long, env = "CANOPY_NO_POSSESSION_CHECKS")]
    pub no_possession_checks: bool,
    /// As a supernode: pairs relayed at once; more are refused, with the
    /// reason [default: 64].
    #[arg(long, env = "CANOPY_MAX_RELAY_PAIRS", value_name = "N")]
    pub max_relay_pairs: Option<usize>,
    /// As a supernode: relayed bytes per second over all pairs, shared
    /// evenly between them; K, M and G as for --max-upload-rate [default:
    /// none].
    #[arg(long, env = "CANOPY_MAX_RELAY_RATE", value_name = "RATE", value_parser = parse_bytes)]
    pub max_relay_rate: Option<u64>,
    /// As a leaf: supernodes to stay joined to at once [default: 2].
    #[arg(long, env = "CANOPY_SUPERNODES", value_name = "N")]
    pub supernodes: Option<usize>,
    /// Never become a supernode, whatever the election says (for metered
    /// or slow links).
    #[arg(long, env = "CANOPY_NEVER_SUPERNODE")]
    pub never_supernode: bool,
    /// This node cannot accept connections (behind a NAT or firewall it
    /// cannot open): downloaders reach it by push through its supernode.
    #[arg(long, env = "CANOPY_NO_INBOUND")]
    pub no_inbound: bool,
    /// Do not look for other Canopy nodes on the local network at start,
    /// nor answer theirs (UDP multicast on 239.255.77.77:4664; only on the
    /// public network, and only when listening on every interface).
    #[arg(long, env = "CANOPY_NO_LAN_DISCOVERY")]
    pub no_lan_discovery: bool,
    /// Vouch, as their publisher, for every file you share: each gets a
    /// vote signed with this node's key, so people who trust you (canopy
    /// trust YOUR-ID) find your files marked and first. For artists,
    /// labels and archives sharing what they made; never needed to share.
    #[arg(long, env = "CANOPY_SIGN_SHARES")]
    pub sign_shares: bool,
    /// Seconds between a leaf's looks at the address its supernode sees
    /// it at (a changed one has the node test its reachability again).
    /// For test beds that change a router's address; the default suits
    /// every real network.
    #[arg(long, env = "CANOPY_REOBSERVE_EVERY", value_name = "SECS", hide = true)]
    pub reobserve_every: Option<u64>,
    /// Least measured upload for a supernode, in Mbit/s [default: 5].
    #[arg(long, env = "CANOPY_SUPERNODE_MIN_UPLOAD", value_name = "MBIT")]
    pub supernode_min_upload: Option<f64>,
    /// Least measured download for a supernode, in Mbit/s [default: 5].
    #[arg(long, env = "CANOPY_SUPERNODE_MIN_DOWNLOAD", value_name = "MBIT")]
    pub supernode_min_download: Option<f64>,
    /// Least memory for a supernode (K, M, G suffixes) [default: 2G].
    #[arg(long, env = "CANOPY_SUPERNODE_MIN_MEMORY", value_name = "SIZE", value_parser = parse_bytes)]
    pub supernode_min_memory: Option<u64>,
    /// Least CPU cores for a supernode [default: 2].
    #[arg(long, env = "CANOPY_SUPERNODE_MIN_CORES", value_name = "N")]
    pub supernode_min_cores: Option<u32>,
    /// Seconds between rescans of the shared folders, 0 for only at start
    /// [default: 60].
    #[arg(long, env = "CANOPY_RESCAN_INTERVAL", value_name = "SECONDS")]
    pub rescan_interval: Option<u64>,
    /// Cap on the total upload rate, in bytes per second; K, M and G mean
    /// KiB, MiB and GiB (2M = 2 MiB/s), shared fairly between requesters
    /// [default: none].
    #[arg(long, env = "CANOPY_MAX_UPLOAD_RATE", value_name = "RATE", value_parser = parse_bytes)]
    pub max_upload_rate: Option<u64>,
    /// Cap on the total download rate, as for uploads [default: none].
    #[arg(long, env = "CANOPY_MAX_DOWNLOAD_RATE", value_name = "RATE", value_parser = parse_bytes)]
    pub max_download_rate: Option<u64>,
    /// Connections one IP address may hold at once; more are refused
    /// [default: 64].
    #[arg(long, env = "CANOPY_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Block requests served at once; more are told to retry later [default: 64].
    #[arg(long, env = "CANOPY_UPLOAD_SLOTS", value_name = "N")]
    pub upload_slots: Option<usize>,
    /// Serve Prometheus metrics (series named canopy_*) and status on this
    /// TCP address, e.g. 127.0.0.1:9466 [default: a free port on loopback,
    /// recorded in the data folder for `canopy status`].
    #[arg(long, env = "CANOPY_METRICS", value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Log lines as text or as JSON objects [default: text].
    #[arg(long, env = "CANOPY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Where the desktop app saves downloads [default: the platform's
    /// download folder, e.g. ~/Downloads].
    #[arg(long, env = "CANOPY_DOWNLOAD_DIR", value_name = "DIR")]
    pub download_dir: Option<PathBuf>,
    /// Downloads the desktop app runs at once, 1 to 50; more wait in its
    /// queue, in the list's order, and start as running ones finish.
    /// Changeable in the app while it runs [default: 3].
    #[arg(long, env = "CANOPY_MAX_ACTIVE_DOWNLOADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=50))]
    pub max_active_downloads: Option<u16>,
    /// Serve the desktop app (the web page in your browser) on this TCP
    /// address. On the default, a taken port falls back to a free one; any
    /// address other than loopback needs --ui-password [default: 127.0.0.1:4664].
    #[arg(long, env = "CANOPY_UI_LISTEN", value_name = "HOST:PORT")]
    pub ui_listen: Option<SocketAddr>,
    /// Password for the desktop app from other machines (HTTP Basic, any
    /// user name); without it the app answers only on loopback [default: none].
    #[arg(long, env = "CANOPY_UI_PASSWORD", value_name = "PASSWORD")]
    pub ui_password: Option<String>,
    /// Do not serve the desktop app (a headless node or supernode).
    #[arg(long, env = "CANOPY_NO_UI")]
    pub no_ui: bool,
    /// Open the desktop app in the browser once the node runs.
    #[arg(long, env = "CANOPY_OPEN")]
    pub open: bool,
    /// Serve shared files over plain HTTP on this TCP address, as
    /// GET /content/HASH with Range support, for curl, wget, aria2c and
    /// browsers [default: off].
    #[arg(long, env = "CANOPY_GATEWAY", value_name = "HOST:PORT")]
    pub gateway: Option<SocketAddr>,
    /// Run in this private network only, instead of the public network
    /// and the groups this node joined: members only, on every connection.
    /// Its key, allow-list and members default to those stored by `canopy
    /// group new|join NAME`, and its data to DATA_DIR/networks/NAME
    /// [default: the public network, plus every joined group].
    #[arg(long, env = "CANOPY_NETWORK", value_name = "NAME", value_parser = parse_network_name)]
    pub network: Option<NetworkName>,
    /// With --network: the file holding the network's key (64 hex
    /// characters). Changes to it take effect while running [default:
    /// DATA_DIR/networks/NAME/network.key].
    #[arg(long, env = "CANOPY_NETWORK_KEY", value_name = "FILE", requires = "network")]
    pub network_key: Option<PathBuf>,
    /// With --network: admit only these peer ids (comma-separated); with no
    /// key, the list alone decides [default: anyone with the key].
    #[arg(long, env = "CANOPY_NETWORK_ALLOW", value_name = "PEERID,...", value_delimiter = ',', value_parser = parse_peer_id, requires = "network")]
    pub network_allow: Vec<PeerId>,
    /// With --network: a file of admitted peer ids, one per line (#
    /// comments), re-read while running [default:
    /// DATA_DIR/networks/NAME/allow.txt if it exists].
    #[arg(
        long,
        env = "CANOPY_NETWORK_ALLOW_FILE",
        value_name = "FILE",
        requires = "network"
    )]
    pub network_allow_file: Option<PathBuf>,
}

fn parse_network_name(text: &str) -> Result<NetworkName, String> {
    text.parse()
        .map_err(|e: canopy_common::proto::network::NetworkError| e.to_string())
}

fn parse_peer_id(text: &str) -> Result<PeerId, String> {
    text.trim()
        .parse()
        .map_err(|e: canopy_common::proto::IdError| e.to_string())
}

/// The same settings as read from a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    pub data_dir: Option<PathBuf>,
    pub share: Option<Vec<PathBuf>>,
    pub listen: Option<SocketAddr>,
    pub role: Option<RoleChoice>,
    #[serde(default, deserialize_with = "peer_list")]
    pub bootstrap: Option<Vec<PeerAddr>>,
    pub max_leaves: Option<usize>,
    pub neighbours: Option<usize>,
    pub max_neighbours: Option<usize>,
    pub max_queries_forwarded: Option<u32>,
    pub max_searches_per_peer: Option<f64>,
    pub keyword_routing: Option<bool>,
    pub search_target: Option<u32>,
    pub table_levels: Option<u8>,
    #[serde(default, deserialize_with = "byte_size")]
    pub index_budget: Option<u64>,
    pub no_relay: Option<bool>,
    pub no_possession_checks: Option<bool>,
    pub no_lan_discovery: Option<bool>,
    pub sign_shares: Option<bool>,
    pub max_relay_pairs: Option<usize>,
    #[serde(default, deserialize_with = "byte_size")]
    pub max_relay_rate: Option<u64>,
    pub supernodes: Option<usize>,
    pub never_supernode: Option<bool>,
    pub no_inbound: Option<bool>,
    pub supernode_min_upload: Option<f64>,
    pub supernode_min_download: Option<f64>,
    #[serde(default, deserialize_with = "byte_size")]
    pub supernode_min_memory: Option<u64>,
    pub supernode_min_cores: Option<u32>,
    pub rescan_interval: Option<u64>,
    #[serde(default, deserialize_with = "byte_size")]
    pub max_upload_rate: Option<u64>,
    #[serde(default, deserialize_with = "byte_size")]
    pub max_download_rate: Option<u64>,
    pub upload_slots: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub metrics: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub download_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "active_limit")]
    pub max_active_downloads: Option<u16>,
    pub ui_listen: Option<SocketAddr>,
    pub ui_password: Option<String>,
    pub no_ui: Option<bool>,
    pub open: Option<bool>,
    pub gateway: Option<SocketAddr>,
    #[serde(default, deserialize_with = "network_name")]
    pub network: Option<NetworkName>,
    pub network_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "peer_ids")]
    pub network_allow: Option<Vec<PeerId>>,
    pub network_allow_file: Option<PathBuf>,
}

impl FileSettings {
    /// These settings with `over`'s values in place wherever it has one
    /// (the desktop app's saved changes over the config file).
    pub fn overlaid_with(self, over: FileSettings) -> FileSettings {
        FileSettings {
            data_dir: over.data_dir.or(self.data_dir),
            share: over.share.or(self.share),
            listen: over.listen.or(self.listen),
            role: over.role.or(self.role),
            bootstrap: over.bootstrap.or(self.bootstrap),
            max_leaves: over.max_leaves.or(self.max_leaves),
            neighbours: over.neighbours.or(self.neighbours),
            max_neighbours: over.max_neighbours.or(self.max_neighbours),
            max_queries_forwarded: over.max_queries_forwarded.or(self.max_queries_forwarded),
            max_searches_per_peer: over.max_searches_per_peer.or(self.max_searches_per_peer),
            keyword_routing: over.keyword_routing.or(self.keyword_routing),
            search_target: over.search_target.or(self.search_target),
            table_levels: over.table_levels.or(self.table_levels),
            index_budget: over.index_budget.or(self.index_budget),
            no_relay: over.no_relay.or(self.no_relay),
            no_possession_checks: over.no_possession_checks.or(self.no_possession_checks),
            no_lan_discovery: over.no_lan_discovery.or(self.no_lan_discovery),
            sign_shares: over.sign_shares.or(self.sign_shares),
            max_relay_pairs: over.max_relay_pairs.or(self.max_relay_pairs),
            max_relay_rate: over.max_relay_rate.or(self.max_relay_rate),
            supernodes: over.supernodes.or(self.supernodes),
            never_supernode: over.never_supernode.or(self.never_supernode),
            no_inbound: over.no_inbound.or(self.no_inbound),
            supernode_min_upload: over.supernode_min_upload.or(self.supernode_min_upload),
            supernode_min_download: over.supernode_min_download.or(self.supernode_min_download),
            supernode_min_cores: over.supernode_min_cores.or(self.supernode_min_cores),
            supernode_min_memory: over.supernode_min_memory.or(self.supernode_min_memory),
            rescan_interval: over.rescan_interval.or(self.rescan_interval),
            max_upload_rate: over.max_upload_rate.or(self.max_upload_rate),
            max_download_rate: over.max_download_rate.or(self.max_download_rate),
            upload_slots: over.upload_slots.or(self.upload_slots),
            max_connections_per_address: over
                .max_connections_per_address
                .or(self.max_connections_per_address),
            metrics: over.metrics.or(self.metrics),
            log_format: over.log_format.or(self.log_format),
            download_dir: over.download_dir.or(self.download_dir),
            max_active_downloads: over.max_active_downloads.or(self.max_active_downloads),
            ui_listen: over.ui_listen.or(self.ui_listen),
            ui_password: over.ui_password.or(self.ui_password),
            no_ui: over.no_ui.or(self.no_ui),
            open: over.open.or(self.open),
            gateway: over.gateway.or(self.gateway),
            network: over.network.or(self.network),
            network_key: over.network_key.or(self.network_key),
            network_allow: over.network_allow.or(self.network_allow),
            network_allow_file: over.network_allow_file.or(self.network_allow_file),
        }
    }

    /// Parses a config file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<FileSettings> {
        toml::from_str(text).map_err(|error| {
            // toml's message names the line, column and offending key.
            anyhow::anyhow!("bad config file {}: {error}", origin.display())
        })
    }

    /// Puts the changes saved by the desktop app (`ui-settings.toml` in the
    /// data folder that `data_dir`, else these settings, name) over these
    /// settings. A damaged file is reported and ignored: it must not stop the node.
    pub fn with_app_changes(self, data_dir: Option<&Path>) -> FileSettings {
        let Some(data_dir) = data_dir
            .map(Path::to_path_buf)
            .or_else(|| self.data_dir.clone())
            .or_else(default_data_dir)
        else {
            return self;
        };
        let path = data_dir.join(crate::web::settings::SETTINGS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return self;
        };
        match Self::parse(&text, &path) {
            Ok(changes) => self.overlaid_with(changes),
            Err(error) => {
                tracing::warn!(%error, "ignoring the settings saved by the desktop app");
                self
            }
        }
    }

    /// Reads `explicit`, or the platform's `canopy.toml` if it exists.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<(FileSettings, Option<PathBuf>)> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => match dirs::config_dir().map(|dir| dir.join("canopy").join("canopy.toml")) {
                Some(path) if path.is_file() => path,
                _ => return Ok((FileSettings::default(), None)),
            },
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Ok((Self::parse(&text, &path)?, Some(path)))
    }
}

/// Everything `canopy run` needs, every source merged.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub share: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub role: RoleChoice,
    pub bootstrap: Vec<PeerAddr>,
    pub max_leaves: Option<usize>,
    pub neighbours: usize,
    pub max_neighbours: usize,
    pub max_queries_forwarded: u32,
    pub max_searches_per_peer: f64,
    pub keyword_routing: bool,
    pub search_target: u32,
    pub table_levels: u8,
    pub index_budget: u64,
    pub no_relay: bool,
    pub no_possession_checks: bool,
    pub no_lan_discovery: bool,
    pub sign_shares: bool,
    pub max_relay_pairs: usize,
    pub max_relay_rate: Option<u64>,
    pub supernodes: usize,
    pub never_supernode: bool,
    pub no_inbound: bool,
    pub reobserve_every: Duration,
    pub thresholds: Thresholds,
    pub rescan_interval: Option<Duration>,
    pub max_upload_rate: Option<u64>,
    pub max_download_rate: Option<u64>,
    pub upload_slots: usize,
    pub max_connections_per_address: usize,
    pub metrics: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub download_dir: PathBuf,
    /// Downloads the desktop app runs at once (1 to 50).
    pub max_active_downloads: usize,
    pub ui_listen: SocketAddr,
    /// Whether `ui_listen` was chosen (a taken port is then an error).
    pub ui_listen_chosen: bool,
    pub ui_password: Option<String>,
    pub no_ui: bool,
    pub open: bool,
    pub gateway: Option<SocketAddr>,
    /// The one private network to run in (`None`: the public network plus
    /// every joined group).
    pub network: Option<NetworkChoice>,
    /// Where that network's membership is read from, once resolved
    /// against the data folder by `canopy run`.
    pub network_settings: Option<crate::network::NetworkSettings>,
}

/// `--network` and its companions, merged.
#[derive(Debug, Clone)]
pub struct NetworkChoice {
    pub name: NetworkName,
    pub key_file: Option<PathBuf>,
    pub allow: Vec<PeerId>,
    pub allow_file: Option<PathBuf>,
}

/// Where the desktop app listens unless told otherwise.
pub const DEFAULT_UI_PORT: u16 = 4664;

impl RunSettings {
    /// Merges flags (with the environment, which clap has already applied)
    /// over the config file, over the defaults.
    pub fn resolve(args: RunArgs, file: FileSettings, config_file: Option<PathBuf>) -> anyhow::Result<Self> {
        let data_dir = match args.data_dir.or(file.data_dir) {
            Some(dir) => dir,
            None => {
                default_data_dir().context("no platform data folder is known here; pass --data-dir DIR")?
            }
        };
        let neighbours = args.neighbours.or(file.neighbours).unwrap_or(4).max(1);
        let mbit = |rate: f64| (rate.max(0.0) * 1e6 / 8.0) as u64;
        let defaults = Thresholds::default();
        let thresholds = Thresholds {
            min_upload: args
                .supernode_min_upload
                .or(file.supernode_min_upload)
                .map_or(defaults.min_upload, mbit),
            min_download: args
                .supernode_min_download
                .or(file.supernode_min_download)
                .map_or(defaults.min_download, mbit),
            min_memory: args
                .supernode_min_memory
                .or(file.supernode_min_memory)
                .unwrap_or(defaults.min_memory),
            min_cores: args
                .supernode_min_cores
                .or(file.supernode_min_cores)
                .unwrap_or(defaults.min_cores),
            ..defaults
        };
        let rescan = args.rescan_interval.or(file.rescan_interval).unwrap_or(60);
        let download_dir = match args.download_dir.or(file.download_dir) {
            Some(dir) => dir,
            None => dirs::download_dir().unwrap_or_else(|| data_dir.join("downloads")),
        };
        let ui_listen = args.ui_listen.or(file.ui_listen);
        Ok(RunSettings {
            config_file,
            data_dir,
            share: non_empty_or(args.share, file.share),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([0u16; 8], DEFAULT_PORT))),
            role: args.role.or(file.role).unwrap_or(RoleChoice::Auto),
            bootstrap: non_empty_or(args.bootstrap, file.bootstrap),
            max_leaves: args.max_leaves.or(file.max_leaves),
            neighbours,
            max_neighbours: args
                .max_neighbours
                .or(file.max_neighbours)
                .unwrap_or((neighbours * 2).max(8))
                .max(1),
            max_queries_forwarded: args
                .max_queries_forwarded
                .or(file.max_queries_forwarded)
                .unwrap_or(200),
            max_searches_per_peer: args
                .max_searches_per_peer
                .or(file.max_searches_per_peer)
                .unwrap_or(canopy_common::proto::budget::SEARCHES_PER_SECOND),
            keyword_routing: args.keyword_routing.or(file.keyword_routing).unwrap_or(true),
            search_target: args.search_target.or(file.search_target).unwrap_or(150).max(1),
            table_levels: args.table_levels.or(file.table_levels).unwrap_or(5).clamp(1, 8),
            index_budget: args.index_budget.or(file.index_budget).unwrap_or(1 << 30),
            no_relay: args.no_relay || file.no_relay.unwrap_or(false),
            no_possession_checks: args.no_possession_checks || file.no_possession_checks.unwrap_or(false),
            no_lan_discovery: args.no_lan_discovery || file.no_lan_discovery.unwrap_or(false),
            sign_shares: args.sign_shares || file.sign_shares.unwrap_or(false),
            max_relay_pairs: args.max_relay_pairs.or(file.max_relay_pairs).unwrap_or(64),
            max_relay_rate: args.max_relay_rate.or(file.max_relay_rate),
            supernodes: args.supernodes.or(file.supernodes).unwrap_or(2).max(1),
            never_supernode: args.never_supernode || file.never_supernode.unwrap_or(false),
            no_inbound: args.no_inbound || file.no_inbound.unwrap_or(false),
            reobserve_every: args.reobserve_every.map_or(crate::node::REOBSERVE_EVERY, |secs| {
                Duration::from_secs(secs.max(1))
            }),
            thresholds,
            rescan_interval: (rescan > 0).then(|| Duration::from_secs(rescan)),
            max_upload_rate: args.max_upload_rate.or(file.max_upload_rate),
            max_download_rate: args.max_download_rate.or(file.max_download_rate),
            upload_slots: args
                .upload_slots
                .or(file.upload_slots)
                .unwrap_or(crate::state::TransferLimits::default().upload_slots)
                .max(1),
            max_connections_per_address: args
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .unwrap_or(crate::admission::ConnectionLimits::default().per_address)
                .max(1),
            metrics: args.metrics.or(file.metrics),
            log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            download_dir,
            max_active_downloads: usize::from(
                args.max_active_downloads
                    .or(file.max_active_downloads)
                    .unwrap_or(crate::download_manager::DEFAULT_MAX_ACTIVE as u16),
            )
            .clamp(1, crate::download_manager::MAX_ACTIVE_LIMIT),
            ui_listen: ui_listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], DEFAULT_UI_PORT))),
            ui_listen_chosen: ui_listen.is_some(),
            ui_password: args.ui_password.or(file.ui_password).filter(|p| !p.is_empty()),
            no_ui: args.no_ui || file.no_ui.unwrap_or(false),
            open: args.open || file.open.unwrap_or(false),
            gateway: args.gateway.or(file.gateway),
            network: args.network.or(file.network).map(|name| NetworkChoice {
                name,
                key_file: args.network_key.or(file.network_key),
                allow: non_empty_or(args.network_allow, file.network_allow),
                allow_file: args.network_allow_file.or(file.network_allow_file),
            }),
            network_settings: None,
        })
    }
}

/// The platform's data folder for Canopy, e.g. `~/.local/share/canopy`.
fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("canopy"))
}

/// A list from the flags if any were given, else from the file.
fn non_empty_or<T>(flags: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags
    }
}

/// `["PEERID@HOST:PORT", ...]`, each checked as the flag checks it.
fn peer_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<PeerAddr>>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| super::parse_peer_addr(text).map_err(serde::de::Error::custom))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A network name, checked as the flag checks it.
fn network_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<NetworkName>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_network_name(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `["PEERID", ...]`, each checked as the flag checks it.
fn peer_ids<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<PeerId>>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| parse_peer_id(text).map_err(serde::de::Error::custom))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A byte count or rate: a number, or a string with a K, M or G suffix.
/// `max-active-downloads`: 1 to 50, as the flag takes it.
fn active_limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let limit = u16::deserialize(deserializer)?;
    if (1..=50).contains(&limit) {
        Ok(Some(limit))
    } else {
        Err(serde::de::Error::custom(format!("{limit} is not from 1 to 50")))
    }
}

fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Number(bytes) => Ok(Some(bytes)),
        Size::Text(text) => parse_bytes(&text).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A rate: a positive, finite number.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

#[cfg(test)]
mod tests {
    /// What the desktop app saves is a config layer `canopy run` reads.
    #[test]
    fn the_apps_saved_settings_parse_as_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::web::settings::SETTINGS_FILE);
        let change: crate::web::settings::Change = serde_json::from_str(
            r#"{"download-dir": "/tmp/dl \"x\"", "max-upload-rate": 1000, "role": "leaf", "gateway": "127.0.0.1:8080"}"#,
        )
        .unwrap();
        let mut saved = crate::web::settings::EditableSettings::default();
        change.apply(&mut saved);
        crate::web::settings::save(&path, &saved).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        FileSettings::parse(&text, &path).expect("a valid config layer");
    }

    use super::*;

    fn parse(text: &str) -> anyhow::Result<FileSettings> {
        FileSettings::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn a_full_file_parses_with_units() {
        let file = parse(
            "share = [\"/srv/music\"]\nmax-leaves = 300\nmax-upload-rate = \"2M\"\nmax-download-rate = 4096\n\
             index-budget = \"256M\"\nrole = \"supernode\"\nlog-format = \"json\"\n",
        )
        .unwrap();
        assert_eq!(file.max_leaves, Some(300));
        assert_eq!(file.max_upload_rate, Some(2 << 20));
        assert_eq!(file.max_download_rate, Some(4096));
        assert_eq!(file.index_budget, Some(256 << 20));
        assert_eq!(file.role, Some(RoleChoice::Supernode));
        assert_eq!(file.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let unknown = parse("max-leaves = 3\nmax-leafs = 4\n").unwrap_err().to_string();
        assert!(unknown.contains("line 2"), "{unknown}");
        assert!(unknown.contains("max-leafs"), "{unknown}");
        let wrong_type = parse("\n\nmax-leaves = \"many\"\n").unwrap_err().to_string();
        assert!(wrong_type.contains("line 3"), "{wrong_type}");
        assert!(wrong_type.contains("max-leaves"), "{wrong_type}");
        let bad_rate = parse("max-upload-rate = \"fast\"\n").unwrap_err().to_string();
        assert!(
            bad_rate.contains("line 1") && bad_rate.contains("max-upload-rate"),
            "{bad_rate}"
        );
        let too_many = parse("max-active-downloads = 500\n").unwrap_err().to_string();
        assert!(too_many.contains("max-active-downloads"), "{too_many}");
        assert_eq!(
            parse("max-active-downloads = 5\n").unwrap().max_active_downloads,
            Some(5)
        );
        let bad_peer = parse("bootstrap = [\"nobody@1.2.3.4:5\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            bad_peer.contains("line 1") && bad_peer.contains("bootstrap"),
            "{bad_peer}"
        );
    }

    /// The example in deploy/ documents every setting `canopy run` has,
    /// and its values (the commented-out ones too) parse.
    #[test]
    fn the_example_config_documents_every_setting() {
        use clap::Args;
        let example = include_str!("../../../deploy/canopy.toml");
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(key, _)| !key.contains(' ')) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        parse(&uncommented).expect("the example parses with every key set");
        let command = RunArgs::augment_args(clap::Command::new("run"));
        for argument in command.get_arguments() {
            let Some(key) = argument.get_long() else { continue };
            // Hidden flags are for test beds, not for the config file.
            if key == "config" || argument.is_hide_set() {
                continue;
            }
            assert!(
                uncommented
                    .lines()
                    .any(|line| line.starts_with(&format!("{key} = "))),
                "deploy/canopy.toml does not document {key}"
            );
        }
    }

    #[test]
    fn the_apps_saved_changes_sit_between_the_file_and_the_flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let data = tempfile::tempdir().unwrap();
        std::fs::write(
            data.path().join(crate::web::settings::SETTINGS_FILE),
            "max-upload-rate = 1000\nrole = \"leaf\"\ndownload-dir = \"/in\"\n",
        )
        .unwrap();
        let file = parse("max-upload-rate = 5\nrole = \"supernode\"\nmax-leaves = 7\n").unwrap();
        let file = file.with_app_changes(Some(data.path()));
        let cli = Cli::parse_from(["canopy", "--role", "auto"]);
        let settings = RunSettings::resolve(cli.run, file, None).unwrap();
        assert_eq!(settings.max_upload_rate, Some(1000), "the app wins over the file");
        assert_eq!(settings.role, RoleChoice::Auto, "flags win over the app");
        assert_eq!(settings.max_leaves, Some(7), "the file still counts");
        assert_eq!(settings.download_dir, PathBuf::from("/in"));
        // A damaged file is ignored.
        std::fs::write(data.path().join(crate::web::settings::SETTINGS_FILE), "role = 3").unwrap();
        let file = parse("max-leaves = 7\n")
            .unwrap()
            .with_app_changes(Some(data.path()));
        assert_eq!(file.role, None);
        assert_eq!(file.max_leaves, Some(7));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let file = parse("max-leaves = 300\nneighbours = 6\nshare = [\"/a\"]\ndata-dir = \"/d\"\n").unwrap();
        let cli = Cli::parse_from(["canopy", "--max-leaves", "10", "--share", "/b"]);
        let settings = RunSettings::resolve(cli.run, file, None).unwrap();
        assert_eq!(settings.max_leaves, Some(10));
        assert_eq!(settings.neighbours, 6);
        assert_eq!(settings.max_neighbours, 12);
        assert_eq!(settings.share, vec![PathBuf::from("/b")]);
        assert_eq!(settings.data_dir, PathBuf::from("/d"));
        assert_eq!(settings.listen.port(), DEFAULT_PORT);
        assert_eq!(settings.max_queries_forwarded, 200);
        assert!(settings.keyword_routing);
        assert_eq!((settings.search_target, settings.table_levels), (150, 5));
        assert_eq!(settings.max_searches_per_peer, 5.0, "a person's pace");
    }

    #[test]
    fn the_search_budget_per_peer_is_a_positive_rate() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let file = parse("max-searches-per-peer = 50\n").unwrap();
        let settings = RunSettings::resolve(Cli::parse_from(["canopy"]).run, file, None).unwrap();
        assert_eq!(settings.max_searches_per_peer, 50.0);
        let cli = Cli::parse_from(["canopy", "--max-searches-per-peer", "1000"]);
        let settings = RunSettings::resolve(cli.run, parse("").unwrap(), None).unwrap();
        assert_eq!(settings.max_searches_per_peer, 1000.0);
        for bad in ["0", "-3", "inf", "many"] {
            assert!(
                Cli::try_parse_from(["canopy", "--max-searches-per-peer", bad]).is_err(),
                "{bad}"
            );
        }
    }
}
