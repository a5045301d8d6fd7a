//! Argument groups several commands share: where the data folder is, which
//! network to talk in and which supernodes to ask, the election's
//! thresholds, transfer caps.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use canopy_common::proto::network::{NetworkError, NetworkName};
use canopy_common::proto::PeerAddr;
use clap::Args;

use crate::state::TransferLimits;
use crate::units::parse_bytes;

/// Parses `PEERID@HOST:PORT`, resolving HOST if it is a name.
pub fn parse_peer_addr(text: &str) -> Result<PeerAddr, String> {
    let (id, host_port) = PeerAddr::split(text).map_err(|e| e.to_string())?;
    if !host_port.contains(':') {
        return Err(format!("{host_port:?} has no port: write PEERID@HOST:PORT"));
    }
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host_port:?} resolves to no address"))?;
    Ok(PeerAddr::new(id, addr))
}

/// Parses a group's name (1 to 32 of a-z, 0-9 and '-').
pub fn parse_group_name(text: &str) -> Result<NetworkName, String> {
    text.parse().map_err(|e: NetworkError| e.to_string())
}

#[derive(Args)]
pub struct DataDir {
    /// Folder for this node's key and caches (default: the platform data
    /// folder, e.g. ~/.local/share/canopy). Use one per node to run several
    /// side by side.
    #[arg(long, env = "CANOPY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDir {
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => dirs::data_dir()
                .map(|dir| dir.join("canopy"))
                .context("no platform data folder is known here; pass --data-dir DIR"),
        }
    }
}

#[derive(Args)]
pub struct NetworkArgs {
    /// A supernode to join or ask, as PEERID@HOST:PORT; repeat for several.
    /// Supernodes reached before are remembered in the data folder and
    /// tried too.
    #[arg(long, value_name = "PEERID@HOST:PORT", value_parser = parse_peer_addr)]
    pub bootstrap: Vec<PeerAddr>,
    /// Ask inside this private group (joined with `canopy group new|join`)
    /// instead of the public network: its key, its members and this node's
    /// identity in it.
    #[arg(long, value_name = "NAME", value_parser = parse_group_name)]
    pub network: Option<NetworkName>,
}

/// Where a one-shot command talks: its data folder, its network and the
/// supernodes to ask.
pub struct CommandNetwork {
    pub data_dir: PathBuf,
    pub network: Option<crate::network::NetworkSettings>,
    pub supernodes: Vec<PeerAddr>,
}

impl CommandNetwork {
    /// The network as it is on disk now.
    pub fn membership(&self) -> anyhow::Result<Option<canopy_common::net::Network>> {
        Ok(self.network.as_ref().map(|n| n.load()).transpose()?)
    }
}

impl NetworkArgs {
    /// The data folder, network and supernodes for `data_dir`: the public
    /// network's, or with --network, the group's.
    pub fn resolve(&self, data_dir: PathBuf) -> anyhow::Result<CommandNetwork> {
        let Some(name) = &self.network else {
            return Ok(CommandNetwork {
                supernodes: self.supernodes(&data_dir),
                data_dir,
                network: None,
            });
        };
        let group = crate::groups::open(&data_dir, name)?;
        let mut supernodes = self.supernodes(&group.dir);
        for member in group.settings.members() {
            if !supernodes.iter().any(|s| s.id == member.id) {
                supernodes.push(member);
            }
        }
        Ok(CommandNetwork {
            network: Some(group.network_settings()),
            data_dir: group.dir,
            supernodes,
        })
    }

    /// The given supernodes, then the remembered ones.
    pub fn supernodes(&self, data_dir: &Path) -> Vec<PeerAddr> {
        let mut supernodes = self.bootstrap.clone();
        for known in crate::hostcache::load(data_dir) {
            if !supernodes.iter().any(|s| s.id == known.id) {
                supernodes.push(known);
            }
        }
        supernodes
    }
}

/// What the election asks of a machine before it may be a supernode.
#[derive(Args)]
pub struct ElectionArgs {
    /// Never become a supernode, whatever the election says (for metered
    /// or slow links).
    #[arg(long)]
    pub never_supernode: bool,
    /// Least measured upload, in Mbit/s, for a supernode.
    #[arg(long, value_name = "MBIT", default_value_t = 5.0)]
    pub supernode_min_upload: f64,
    /// Least measured download, in Mbit/s, for a supernode.
    #[arg(long, value_name = "MBIT", default_value_t = 5.0)]
    pub supernode_min_download: f64,
    /// Least memory for a supernode (K, M, G as for rates).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes, default_value = "2G")]
    pub supernode_min_memory: u64,
    /// Least CPU cores for a supernode.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub supernode_min_cores: u32,
}

impl ElectionArgs {
    pub fn thresholds(&self) -> canopy_common::proto::election::Thresholds {
        let bytes_per_second = |mbit: f64| (mbit.max(0.0) * 1e6 / 8.0) as u64;
        canopy_common::proto::election::Thresholds {
            min_cores: self.supernode_min_cores,
            min_memory: self.supernode_min_memory,
            min_upload: bytes_per_second(self.supernode_min_upload),
            min_download: bytes_per_second(self.supernode_min_download),
            ..Default::default()
        }
    }
}

#[derive(Args)]
pub struct TransferArgs {
    /// Cap on the total upload rate, in bytes per second; K, M and G mean
    /// KiB, MiB and GiB (2M = 2 MiB/s). Shared fairly between everyone
    /// fetching from us. Without it, uploads are not capped.
    #[arg(long, value_name = "RATE", value_parser = parse_bytes)]
    pub max_upload_rate: Option<u64>,
    /// Cap on the download rate, as for uploads.
    #[arg(long, value_name = "RATE", value_parser = parse_bytes)]
    pub max_download_rate: Option<u64>,
    /// Block requests served at once; more are told to retry later.
    #[arg(long, value_name = "N", default_value_t = TransferLimits::default().upload_slots)]
    pub upload_slots: usize,
}

impl TransferArgs {
    pub fn limits(&self) -> TransferLimits {
        TransferLimits {
            max_upload_rate: self.max_upload_rate,
            upload_slots: self.upload_slots,
            max_download_rate: self.max_download_rate,
        }
    }
}
