//! Private groups on disk: set up in a minute, run beside the public network.
//!
//! A group lives in its own folder, `DATA_DIR/networks/NAME/`:
//!
//! | file | what |
//! |---|---|
//! | `network.key` | the group's secret, 64 hex characters (mode 0600) |
//! | `allow.txt` | optional: peer ids admitted, one per line (then the key alone is not enough) |
//! | `group.toml` | the port, the folders shared with the group, the role, members to join through |
//! | `node.key`, caches, index | this node's identity and state *in this group*, apart from the public network's |
//!
//! `canopy run` starts one node per group folder next to the public one,
//! each on its own port with its own identity: nothing is shared between
//! them, so nothing can cross. Editing `network.key` or `allow.txt` takes
//! effect while the node runs.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use canopy_common::net::NodeKey;
use canopy_common::proto::network::{Invite, NetworkKey, NetworkName};
use canopy_common::proto::PeerAddr;

use crate::network::NetworkSettings;
use crate::role::RoleChoice;
use crate::NodeConfig;
use canopy_supernode::SupernodeConfig;

/// Folder of the groups inside a data folder.
pub const NETWORKS_DIR: &str = "networks";
/// A group's key file.
pub const KEY_FILE: &str = "network.key";
/// A group's optional allow-list.
pub const ALLOW_FILE: &str = "allow.txt";
/// A group's settings.
pub const GROUP_FILE: &str = "group.toml";
/// The folder shared with a group unless told otherwise.
pub const SHARED_DIR: &str = "shared";
/// First port tried for a group (4663 is the public node, 4664 the app,
/// 4665 the gateway in the example config).
pub const FIRST_GROUP_PORT: u16 = 4670;

/// What `group.toml` holds.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupSettings {
    /// UDP address this node listens on in the group.
    pub listen: SocketAddr,
    /// Folders shared with the group (and nobody else).
    #[serde(default)]
    pub share: Vec<PathBuf>,
    /// Role in the group.
    pub role: RoleChoice,
    /// Members to join through, as PEERID@IP:PORT.
    #[serde(default)]
    pub bootstrap: Vec<String>,
}

impl GroupSettings {
    fn to_toml(&self) -> String {
        let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
        let list = |items: Vec<String>| items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(", ");
        let role = match self.role {
            RoleChoice::Auto => "auto",
            RoleChoice::Leaf => "leaf",
            RoleChoice::Supernode => "supernode",
        };
        format!(
            "# This node's settings in one private group (see `canopy group --help`).\n\
             # UDP address for the group's traffic: its own port, apart from the public network.\n\
             listen = {}\n\
             # Folders shared with the group, and only with it.\n\
             share = [{}]\n\
             # leaf, supernode or auto. A group needs at least one supernode online.\n\
             role = {}\n\
             # Members to join through, PEERID@IP:PORT (from the invite).\n\
             bootstrap = [{}]\n",
            quote(&self.listen.to_string()),
            list(self.share.iter().map(|p| p.display().to_string()).collect()),
            quote(role),
            list(self.bootstrap.clone()),
        )
    }

    /// The bootstrap members that parse (a bad line is reported, not fatal).
    pub fn members(&self) -> Vec<PeerAddr> {
        self.bootstrap
            .iter()
            .filter_map(|text| match text.parse() {
                Ok(addr) => Some(addr),
                Err(error) => {
                    tracing::warn!(%text, %error, "ignoring a bad bootstrap entry in group.toml");
                    None
                }
            })
            .collect()
    }
}

/// A group this node belongs to, as found on disk.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: NetworkName,
    /// `DATA_DIR/networks/NAME`: this node's data folder in the group.
    pub dir: PathBuf,
    pub settings: GroupSettings,
}

impl Group {
    /// The folders shared with the group, for people: "a, b".
    pub fn shared_folders(&self) -> String {
        self.settings
            .share
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Where the group's membership comes from: the key file (if there is
    /// one) and `allow.txt` (if there is one), re-read while running.
    pub fn network_settings(&self) -> NetworkSettings {
        let key_file = self.dir.join(KEY_FILE);
        let allow_file = self.dir.join(ALLOW_FILE);
        NetworkSettings {
            name: self.name.clone(),
            key_file: key_file.exists().then_some(key_file),
            allow: Vec::new(),
            allow_file: allow_file.exists().then_some(allow_file),
            reload_every: crate::network::RELOAD_EVERY,
        }
    }

    /// The node that runs this group: `base`'s limits and habits, with the
    /// group's own folder, port, shares, members and membership. Role
    /// `auto` means a supernode while it knows no member to join, else a
    /// leaf (groups are small: no election).
    pub fn node_config(&self, base: &NodeConfig) -> NodeConfig {
        let mut config = NodeConfig::new(self.dir.clone(), self.settings.listen);
        config.share = self
            .settings
            .share
            .iter()
            .filter(|dir| dir.is_dir())
            .cloned()
            .collect();
        config.bootstrap = self.settings.members();
        config.endpoint = base.endpoint.clone();
        config.upload = base.upload.clone();
        config.accept_inbound = base.accept_inbound;
        // Behind the same router as the public node's port.
        config.reachable = base.reachable;
        config.leaf_sessions = base.leaf_sessions;
        config.rescan_interval = base.rescan_interval;
        config.connection_limits = base.connection_limits;
        config.network = Some(self.network_settings());
        let supernode = match self.settings.role {
            RoleChoice::Supernode => true,
            RoleChoice::Leaf => false,
            RoleChoice::Auto => config.bootstrap.is_empty(),
        };
        if supernode {
            config.supernode = Some(SupernodeConfig::for_this_machine(Some(self.dir.join("index"))));
        }
        config
    }

    /// This node's address in the group, as members elsewhere reach it.
    pub fn own_address(&self, host: IpAddr) -> anyhow::Result<PeerAddr> {
        let key = NodeKey::load_or_create(&self.dir)?;
        Ok(PeerAddr::new(
            key.peer_id(),
            SocketAddr::new(host, self.settings.listen.port()),
        ))
    }

    /// An invite to this group: its name, key, and this node plus the
    /// members it joins through.
    pub fn invite(&self, host: IpAddr) -> anyhow::Result<Invite> {
        let key_file = self.dir.join(KEY_FILE);
        let text = fs::read_to_string(&key_file)
            .with_context(|| format!("group {} has no key ({})", self.name, key_file.display()))?;
        let key = NetworkKey::from_file_text(&text).with_context(|| format!("{}", key_file.display()))?;
        let mut members = vec![self.own_address(host)?];
        for member in self.settings.members() {
            if !members.iter().any(|m| m.id == member.id) {
                members.push(member);
            }
        }
        members.truncate(canopy_common::proto::network::MAX_INVITE_MEMBERS);
        Ok(Invite {
            name: self.name.clone(),
            key,
            members,
        })
    }
}

fn group_dir(data_dir: &Path, name: &NetworkName) -> PathBuf {
    data_dir.join(NETWORKS_DIR).join(name.as_str())
}

/// Loads group `name` from `data_dir`.
pub fn open(data_dir: &Path, name: &NetworkName) -> anyhow::Result<Group> {
    let dir = group_dir(data_dir, name);
    let path = dir.join(GROUP_FILE);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "this node is not in group {name} (no {}); `canopy group new {name}` makes it, \
             `canopy group join INVITE` joins it",
            path.display()
        )
    })?;
    let settings: GroupSettings =
        toml::from_str(&text).map_err(|error| anyhow::anyhow!("bad {}: {error}", path.display()))?;
    Ok(Group {
        name: name.clone(),
        dir,
        settings,
    })
}

/// Every group this node belongs to, by name. A damaged group folder is
/// reported and skipped.
pub fn list(data_dir: &Path) -> Vec<Group> {
    let Ok(entries) = fs::read_dir(data_dir.join(NETWORKS_DIR)) else {
        return Vec::new();
    };
    let mut groups: Vec<Group> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<NetworkName>().ok())
        .filter_map(|name| match open(data_dir, &name) {
            Ok(group) => Some(group),
            Err(error) => {
                tracing::warn!(%name, error = %format!("{error:#}"), "skipping a group");
                None
            }
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    groups
}

/// Options for creating or joining a group.
#[derive(Debug, Clone, Default)]
pub struct GroupOptions {
    /// UDP port for the group (`None`: the first free one from 4670 among
    /// this node's groups).
    pub port: Option<u16>,
    /// Folders to share with the group (`None`: `DATA_DIR/networks/NAME/shared`).
    pub share: Vec<PathBuf>,
}

fn next_port(data_dir: &Path) -> u16 {
    let taken: Vec<u16> = list(data_dir).iter().map(|g| g.settings.listen.port()).collect();
    (FIRST_GROUP_PORT..u16::MAX)
        .find(|port| !taken.contains(port))
        .unwrap_or(FIRST_GROUP_PORT)
}

fn write_group(
    data_dir: &Path,
    name: &NetworkName,
    key: &NetworkKey,
    options: &GroupOptions,
    role: RoleChoice,
    bootstrap: Vec<PeerAddr>,
) -> anyhow::Result<Group> {
    let dir = group_dir(data_dir, name);
    let port = options.port.unwrap_or_else(|| next_port(data_dir));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let share = if options.share.is_empty() {
        let shared = dir.join(SHARED_DIR);
        fs::create_dir_all(&shared).with_context(|| format!("cannot create {}", shared.display()))?;
        vec![shared]
    } else {
        options.share.clone()
    };
    write_private(&dir.join(KEY_FILE), &format!("{}\n", key.to_hex()))?;
    // This node's identity in the group, apart from its public one.
    NodeKey::load_or_create(&dir)?;
    let settings = GroupSettings {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        share,
        role,
        bootstrap: bootstrap.iter().map(ToString::to_string).collect(),
    };
    let path = dir.join(GROUP_FILE);
    fs::write(&path, settings.to_toml()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Group {
        name: name.clone(),
        dir,
        settings,
    })
}

/// `canopy group new NAME`: a fresh key, this node as the group's first
/// supernode. Refuses to overwrite a group that exists.
pub fn create(data_dir: &Path, name: &NetworkName, options: &GroupOptions) -> anyhow::Result<Group> {
    if group_dir(data_dir, name).join(KEY_FILE).exists() {
        bail!("group {name} exists already; `canopy group invite {name}` prints its invite");
    }
    let key = NetworkKey(canopy_common::net::random_bytes());
    write_group(data_dir, name, &key, options, RoleChoice::Supernode, Vec::new())
}

/// `canopy group rekey NAME`: a fresh key for a group this node is in, to
/// cut off whoever held the old one. Running nodes switch within seconds;
/// members get the new key from the new invite.
pub fn rekey(data_dir: &Path, name: &NetworkName) -> anyhow::Result<Group> {
    let group = open(data_dir, name)?;
    let key = NetworkKey(canopy_common::net::random_bytes());
    write_private(&group.dir.join(KEY_FILE), &format!("{}\n", key.to_hex()))?;
    Ok(group)
}

/// `canopy group join INVITE`: stores the key and the members to join
/// through, so that `canopy run` joins the group as a leaf. Joining again
/// (with a newer invite) replaces the key and the members and keeps the
/// rest.
pub fn join(data_dir: &Path, invite: &Invite, options: &GroupOptions) -> anyhow::Result<Group> {
    let mut options = options.clone();
    let mut role = RoleChoice::Leaf;
    if let Ok(existing) = open(data_dir, &invite.name) {
        options.port = options.port.or(Some(existing.settings.listen.port()));
        if options.share.is_empty() {
            options.share = existing.settings.share;
        }
        role = existing.settings.role;
    }
    write_group(
        data_dir,
        &invite.name,
        &invite.key,
        &options,
        role,
        invite.members.clone(),
    )
}

/// Writes a secret readable by its owner only (mode 0600 from creation).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// The address other machines most likely reach this one at: the source
/// address the routing table picks for the outside world. Connecting a
/// UDP socket sends nothing; it only asks the kernel for a route. Falls
/// back on loopback when there is no route.
pub fn likely_host() -> IpAddr {
    let routed = || -> std::io::Result<IpAddr> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        // A documentation address (RFC 5737): only the route matters.
        socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
        Ok(socket.local_addr()?.ip())
    };
    routed()
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_invite_join_round_trip_on_disk() {
        let alice = tempfile::tempdir().unwrap();
        let bob = tempfile::tempdir().unwrap();
        let name: NetworkName = "family".parse().unwrap();
        let group = create(alice.path(), &name, &GroupOptions::default()).unwrap();
        assert_eq!(group.settings.listen.port(), FIRST_GROUP_PORT);
        assert_eq!(group.settings.role, RoleChoice::Supernode);
        assert!(group.settings.share[0].is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(group.dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(create(alice.path(), &name, &GroupOptions::default()).is_err());

        let host: IpAddr = "192.0.2.7".parse().unwrap();
        let invite = open(alice.path(), &name).unwrap().invite(host).unwrap();
        let text = invite.to_string();
        let invite: Invite = text.parse().unwrap();
        assert_eq!(invite.members.len(), 1);
        assert_eq!(invite.members[0].addr, SocketAddr::new(host, FIRST_GROUP_PORT));

        let joined = join(bob.path(), &invite, &GroupOptions::default()).unwrap();
        assert_eq!(joined.settings.role, RoleChoice::Leaf);
        assert_eq!(joined.settings.members(), invite.members);
        let alices = open(alice.path(), &name)
            .unwrap()
            .network_settings()
            .load()
            .unwrap();
        let bobs = list(bob.path())[0].network_settings().load().unwrap();
        assert_eq!(alices, bobs, "both hold the same key");
        // Bob is a different node in the group than Alice.
        assert_ne!(
            NodeKey::load_or_create(&joined.dir).unwrap().peer_id(),
            invite.members[0].id
        );
        // A new key replaces the old one for this node only.
        let before = open(alice.path(), &name)
            .unwrap()
            .network_settings()
            .load()
            .unwrap();
        rekey(alice.path(), &name).unwrap();
        let after = open(alice.path(), &name)
            .unwrap()
            .network_settings()
            .load()
            .unwrap();
        assert_ne!(before.key, after.key);
        assert_eq!(bobs.key, before.key);
        // A second group takes the next port.
        let other: NetworkName = "work".parse().unwrap();
        let second = create(alice.path(), &other, &GroupOptions::default()).unwrap();
        assert_eq!(second.settings.listen.port(), FIRST_GROUP_PORT + 1);
        assert_eq!(list(alice.path()).len(), 2);
    }

    #[test]
    fn a_missing_group_says_how_to_make_one() {
        let data = tempfile::tempdir().unwrap();
        let error = open(data.path(), &"x".parse().unwrap()).unwrap_err().to_string();
        assert!(error.contains("canopy group new x"), "{error}");
    }
}
