//! The node's long-term key.
//!
//! Created on first run as `node.key` in the data directory (mode 0600), and
//! reused on every start after, so a node keeps its [`PeerId`] for life. The
//! file holds the Ed25519 key as PKCS#8 v2 bytes, the form `ring` generates.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::NetError;
use crate::proto::PeerId;

/// File name of the key inside a data directory.
pub const KEY_FILE: &str = "node.key";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): what a raw
/// public key looks like in TLS (RFC 7250) is this prefix plus the 32 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A node's key pair, ready to present in TLS.
#[derive(Clone)]
pub struct NodeKey {
    peer_id: PeerId,
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.peer_id)
    }
}

impl NodeKey {
    /// A fresh key that lives only in memory (tests, one-shot demos).
    pub fn generate() -> Result<Self, NetError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| rustls::Error::General("Ed25519 key generation failed".into()))?;
        Self::from_pkcs8(pkcs8.as_ref()).map_err(|reason| NetError::KeyInvalid {
            path: PathBuf::from("<memory>"),
            reason,
        })
    }

    /// Loads `dir/node.key`, creating it (and `dir`) on first run.
    pub fn load_or_create(dir: &Path) -> Result<Self, NetError> {
        let path = dir.join(KEY_FILE);
        let key_file_error = |source| NetError::KeyFile {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(bytes) => Self::from_pkcs8(&bytes).map_err(|reason| NetError::KeyInvalid {
                path: path.clone(),
                reason,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(key_file_error)?;
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| rustls::Error::General("Ed25519 key generation failed".into()))?;
                write_private(&path, pkcs8.as_ref()).map_err(key_file_error)?;
                Self::from_pkcs8(pkcs8.as_ref()).map_err(|reason| NetError::KeyInvalid {
                    path: path.clone(),
                    reason,
                })
            }
            Err(error) => Err(key_file_error(error)),
        }
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| e.to_string())?;
        let peer_id = PeerId(
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| "public key is not 32 bytes".to_string())?,
        );
        let signing = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.to_vec()))
            .map_err(|e| e.to_string())?;
        // Under RFC 7250 the "certificate chain" is one entry: our SPKI.
        let chain = vec![CertificateDer::from(spki_of(&peer_id))];
        Ok(NodeKey {
            peer_id,
            certified: Arc::new(CertifiedKey::new(chain, signing)),
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub(crate) fn certified(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

/// The SubjectPublicKeyInfo DER of a peer id's key.
pub(crate) fn spki_of(id: &PeerId) -> Vec<u8> {
    let mut der = Vec::with_capacity(44);
    der.extend_from_slice(&ED25519_SPKI_PREFIX);
    der.extend_from_slice(id.as_bytes());
    der
}

/// The peer id inside an Ed25519 SubjectPublicKeyInfo, if it is one.
pub(crate) fn peer_id_of_spki(der: &[u8]) -> Option<PeerId> {
    let key = der.strip_prefix(&ED25519_SPKI_PREFIX)?;
    Some(PeerId(key.try_into().ok()?))
}

/// Writes a secret so that no other user can ever read it: the file is
/// created with mode 0600 rather than chmod-ed after the fact, and synced
/// before it is renamed into place so a crash leaves the old state or the
/// new, never half a key.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("key.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeKey::load_or_create(dir.path()).unwrap();
        let second = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.peer_id(), second.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = NodeKey::load_or_create(&dir.path().join("other")).unwrap();
        assert_ne!(first.peer_id(), other.peer_id());
    }

    #[test]
    fn damaged_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        let error = NodeKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(error, NetError::KeyInvalid { .. }), "{error}");
        assert!(error.to_string().contains("move it aside"));
    }

    #[test]
    fn spki_round_trips() {
        let key = NodeKey::generate().unwrap();
        assert_eq!(peer_id_of_spki(&spki_of(&key.peer_id())), Some(key.peer_id()));
        assert_eq!(peer_id_of_spki(&[0u8; 44]), None);
    }
}
