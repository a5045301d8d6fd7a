//! A node's private network, as configured on disk: the name, the key file
//! and the allow-list (flags and/or a file), re-read while the node runs so
//! that a new key or a changed list takes effect without a restart.
//!
//! Isolation between networks is by construction: a node is in exactly one
//! network (the public one, or one private network), with its own endpoint,
//! port, identity and data folder. `canopy run` starts one node per network
//! it belongs to.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canopy_common::net::{Endpoint, Network};
use canopy_common::proto::network::{parse_allow_list, NetworkError, NetworkKey, NetworkName};
use canopy_common::proto::PeerId;

/// How often the key and allow-list files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Where a private network's membership comes from.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    pub name: NetworkName,
    /// File holding the 64-hex-character key (`None`: membership by allow-list only).
    pub key_file: Option<PathBuf>,
    /// Peer ids admitted, from flags.
    pub allow: Vec<PeerId>,
    /// File of admitted peer ids, one per line (`#` comments).
    pub allow_file: Option<PathBuf>,
    /// How often the files are read again.
    pub reload_every: Duration,
}

/// Why a network's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetworkLoadError {
    #[error(
        "network {0} needs a key (--network-key FILE, or `canopy group new|join` first) or an \
         allow-list (--network-allow)"
    )]
    NoMembershipRule(NetworkName),
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Bad { path: PathBuf, source: NetworkError },
}

impl NetworkSettings {
    /// Settings for network `name` with the key in `key_file`.
    pub fn with_key(name: NetworkName, key_file: PathBuf) -> Self {
        NetworkSettings {
            name,
            key_file: Some(key_file),
            allow: Vec::new(),
            allow_file: None,
            reload_every: RELOAD_EVERY,
        }
    }

    /// Reads the files now.
    pub fn load(&self) -> Result<Network, NetworkLoadError> {
        if self.key_file.is_none() && self.allow.is_empty() && self.allow_file.is_none() {
            return Err(NetworkLoadError::NoMembershipRule(self.name.clone()));
        }
        let key = match &self.key_file {
            Some(path) => {
                let text = read(path, "the network key")?;
                NetworkKey::from_file_text(&text).map_err(|source| NetworkLoadError::Bad {
                    path: path.clone(),
                    source,
                })?
            }
            None => NetworkKey::open(&self.name),
        };
        let allow = if self.allow.is_empty() && self.allow_file.is_none() {
            None
        } else {
            let mut allow: BTreeSet<PeerId> = self.allow.iter().copied().collect();
            if let Some(path) = &self.allow_file {
                let text = read(path, "the allow-list")?;
                allow.extend(parse_allow_list(&text).map_err(|source| NetworkLoadError::Bad {
                    path: path.clone(),
                    source,
                })?);
            }
            Some(allow)
        };
        Ok(Network {
            name: self.name.clone(),
            key,
            allow,
        })
    }
}

fn read(path: &Path, what: &'static str) -> Result<String, NetworkLoadError> {
    // A key file is 64 characters and a list a few KiB: refuse anything
    // huge rather than read it into memory.
    const MAX_FILE: u64 = 1 << 20;
    let error = |source| NetworkLoadError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(error)?.len();
    if size > MAX_FILE {
        return Err(error(std::io::Error::other(format!(
            "larger than {MAX_FILE} bytes"
        ))));
    }
    std::fs::read_to_string(path).map_err(error)
}

/// Re-reads the network's files every `reload_every` and applies changes
/// to `endpoint`. A file that cannot be read or parsed is reported and the
/// membership in force kept: a half-written file must not open the network.
pub async fn watch(settings: NetworkSettings, endpoint: Endpoint) {
    let mut timer = tokio::time::interval(settings.reload_every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        timer.tick().await;
        match settings.load() {
            Ok(network) => {
                last_error = None;
                match endpoint.set_network(network) {
                    Ok(true) => tracing::info!(network = %settings.name, "network key or allow-list changed"),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(network = %settings.name, %error, "cannot apply the change"),
                }
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(network = %settings.name, error = %text, "keeping the membership in force");
                    last_error = Some(text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_load_key_and_lists_and_refuse_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let name: NetworkName = "family".parse().unwrap();
        let mut settings = NetworkSettings::with_key(name.clone(), dir.path().join("network.key"));
        settings.key_file = None;
        assert!(matches!(
            settings.load(),
            Err(NetworkLoadError::NoMembershipRule(_))
        ));

        let key = NetworkKey([3; 32]);
        std::fs::write(dir.path().join("network.key"), key.to_hex()).unwrap();
        settings.key_file = Some(dir.path().join("network.key"));
        let network = settings.load().unwrap();
        assert_eq!(network.key, key);
        assert_eq!(network.allow, None);

        let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
        std::fs::write(dir.path().join("allow.txt"), format!("{b}\n")).unwrap();
        settings.allow = vec![a];
        settings.allow_file = Some(dir.path().join("allow.txt"));
        let network = settings.load().unwrap();
        assert_eq!(network.allow, Some(BTreeSet::from([a, b])));

        std::fs::write(dir.path().join("network.key"), "not a key").unwrap();
        let error = settings.load().unwrap_err().to_string();
        assert!(error.contains("network.key"), "{error}");
    }
}
