//! The node's long-term key, and the two forms in which TLS presents it.
//!
//! Created on first run as `node.key` in the data directory (mode 0600), and
//! reused on every start after, so a node keeps its [`PeerId`] for life. The
//! file holds the Ed25519 key as PKCS#8 v2 bytes, the form `ring` generates.
//!
//! In the handshake the key goes out either as an RFC 7250 raw public key
//! (its SubjectPublicKeyInfo) or, for stacks without raw keys, inside a
//! self-signed X.509 certificate built here (PROTOCOL.md section 3.2). The
//! certificate is a fixed template around the key and its own signature, so
//! it is assembled by hand rather than with a certificate library.

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

/// DER of the Ed25519 AlgorithmIdentifier (RFC 8410): the certificate's
/// signature algorithm, in both places X.509 names it.
const ED25519_ALGORITHM: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// DER of the attribute type `id-at-commonName` (2.5.4.3).
const COMMON_NAME: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];

/// The certificate's validity: from the Unix epoch (UTCTime, as RFC 5280
/// requires before 2050) to `99991231235959Z`, RFC 5280's "no well-defined
/// expiration date". Fixed, so a key always yields the same certificate.
const NOT_BEFORE: &[u8; 13] = b"700101000000Z";
const NOT_AFTER: &[u8; 15] = b"99991231235959Z";

/// A node's key pair, ready to present in TLS.
#[derive(Clone)]
pub struct NodeKey {
    peer_id: PeerId,
    /// The key as a raw public key: a one-entry chain holding the SPKI.
    certified: Arc<CertifiedKey>,
    /// The same key inside its self-signed X.509 certificate.
    certified_x509: Arc<CertifiedKey>,
    /// The key itself, for what the node signs outside TLS (its votes).
    pair: Arc<Ed25519KeyPair>,
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
        let certificate = vec![CertificateDer::from(self_signed_certificate(&pair))];
        Ok(NodeKey {
            peer_id,
            certified: Arc::new(CertifiedKey::new(chain, signing.clone())),
            certified_x509: Arc::new(CertifiedKey::new(certificate, signing)),
            pair: Arc::new(pair),
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `message` with this key (Ed25519, deterministic). Only
    /// messages that carry their own domain tag are signed this way, so a
    /// signature made for one purpose cannot pass for another (see
    /// [`crate::proto::credence::VOTE_DOMAIN`]).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.pair.sign(message).as_ref());
        signature
    }

    /// The DER of this key's self-signed X.509 certificate, the identity it
    /// presents to a peer that does not negotiate raw public keys.
    pub fn certificate(&self) -> &[u8] {
        self.certified_x509.cert[0].as_ref()
    }

    pub(crate) fn certified(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    pub(crate) fn certified_x509(&self) -> Arc<CertifiedKey> {
        self.certified_x509.clone()
    }
}

/// One DER element: `tag`, then the length of `contents` (short form below
/// 128 bytes, else long form in as few bytes as possible), then `contents`.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// The X.509 v3 certificate a node presents instead of a raw key
/// (PROTOCOL.md section 3.2): serial 1, issuer and subject `CN=<peer id
/// text>`, valid from 1970 with no expiry, the Ed25519 SPKI, no extensions,
/// signed by the key itself. Receivers read only the SPKI; the rest is there
/// so that stock X.509 parsers, which insist on every field, accept it.
fn self_signed_certificate(pair: &Ed25519KeyPair) -> Vec<u8> {
    let peer_id = PeerId(
        pair.public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes"),
    );
    let name = der(
        0x30,
        &der(
            0x31,
            &der(
                0x30,
                &[&COMMON_NAME[..], &der(0x0c, peer_id.to_string().as_bytes())].concat(),
            ),
        ),
    );
    let validity = der(0x30, &[der(0x17, NOT_BEFORE), der(0x18, NOT_AFTER)].concat());
    let tbs = der(
        0x30,
        &[
            &der(0xa0, &der(0x02, &[2]))[..], // version: v3
            &der(0x02, &[1]),                 // serialNumber
            &ED25519_ALGORITHM,
            &name, // issuer
            &validity,
            &name, // subject
            &spki_of(&peer_id),
        ]
        .concat(),
    );
    let signature = pair.sign(&tbs);
    // A BIT STRING's first content byte counts the unused bits of its last byte: none.
    let signature_bits = der(0x03, &[&[0u8][..], signature.as_ref()].concat());
    der(0x30, &[&tbs[..], &ED25519_ALGORITHM, &signature_bits].concat())
}

/// Splits one DER element off `input`: its tag, its contents, and what
/// follows it. `None` for anything that is not definite-length DER with the
/// length in its shortest form.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        // A multi-byte tag: X.509 uses none in the fields read here.
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // 0x80 alone is BER's indefinite length; a TLS certificate entry is
        // under 2^24 bytes, so more than three length bytes is never needed.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 3 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes.iter().fold(0usize, |len, &b| len << 8 | usize::from(b));
        if bytes[0] == 0 || len < 0x80 {
            return None;
        }
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The peer id in an X.509 certificate entry (PROTOCOL.md section 3.2):
/// the certificate's SubjectPublicKeyInfo, which must be an Ed25519 key in
/// exactly the 44-byte form. Nothing else in the certificate is read, not
/// even its signature: the handshake's CertificateVerify, checked against
/// this key, is what proves the peer holds it.
pub fn peer_id_of_certificate(der: &[u8]) -> Option<PeerId> {
    let (0x30, certificate, []) = der_element(der)? else {
        return None;
    };
    let (0x30, mut fields, _signature) = der_element(certificate)? else {
        return None;
    };
    // version is [0] EXPLICIT and optional (absent means v1).
    if let (0xa0, _, rest) = der_element(fields)? {
        fields = rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    for expected in [0x02, 0x30, 0x30, 0x30, 0x30] {
        let (tag, _, rest) = der_element(fields)?;
        if tag != expected {
            return None;
        }
        fields = rest;
    }
    let (_, _, rest) = der_element(fields)?;
    peer_id_of_spki(&fields[..fields.len() - rest.len()])
}

/// The peer id in a certificate entry the handshake accepted, in either
/// form: a raw public key or an X.509 certificate. The two cannot be taken
/// for each other (an SPKI's first element is an AlgorithmIdentifier where a
/// certificate has an INTEGER or `[0]`).
pub fn peer_id_of_entry(der: &[u8]) -> Option<PeerId> {
    peer_id_of_spki(der).or_else(|| peer_id_of_certificate(der))
}

/// The SubjectPublicKeyInfo DER of a peer id's key.
pub(crate) fn spki_of(id: &PeerId) -> Vec<u8> {
    let mut der = Vec::with_capacity(44);
    der.extend_from_slice(&ED25519_SPKI_PREFIX);
    der.extend_from_slice(id.as_bytes());
    der
}

/// The peer id inside an Ed25519 SubjectPublicKeyInfo, if it is exactly
/// the 44-byte form.
pub fn peer_id_of_spki(der: &[u8]) -> Option<PeerId> {
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

    /// The elements of a DER SEQUENCE's contents, each with its header.
    fn elements(mut contents: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !contents.is_empty() {
            let (_, _, rest) = der_element(contents).expect("well-formed DER");
            out.push(contents[..contents.len() - rest.len()].to_vec());
            contents = rest;
        }
        out
    }

    fn contents(element: &[u8]) -> &[u8] {
        der_element(element).expect("well-formed DER").1
    }

    #[test]
    fn certificate_carries_the_key_under_its_own_signature() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::load_or_create(dir.path()).unwrap();
        let der = key.certificate().to_vec();
        assert_eq!(peer_id_of_certificate(&der), Some(key.peer_id()));
        assert_eq!(peer_id_of_entry(&der), Some(key.peer_id()));
        // Ed25519 signs deterministically: one key, one certificate.
        let again = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.certificate(), &der[..]);

        let parts = elements(contents(&der));
        assert_eq!(
            parts.len(),
            3,
            "tbsCertificate, signatureAlgorithm, signatureValue"
        );
        assert_eq!(parts[1], ED25519_ALGORITHM);
        let bits = contents(&parts[2]);
        assert_eq!(bits[0], 0, "no unused bits");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.peer_id().as_bytes())
            .verify(&parts[0], &bits[1..])
            .expect("the certificate is signed by its own key");
        let tbs = elements(contents(&parts[0]));
        assert_eq!(tbs.len(), 7, "version .. subjectPublicKeyInfo, no extensions");
        assert_eq!(tbs[6], spki_of(&key.peer_id()));
        assert_eq!(tbs[3], tbs[5], "self-issued: issuer = subject");
        let cn = format!("{}", key.peer_id());
        assert!(tbs[3].ends_with(cn.as_bytes()));
    }

    #[test]
    fn certificate_parsing_reads_the_spki_and_nothing_else() {
        let key = NodeKey::generate().unwrap();
        let cert = key.certificate().to_vec();
        let parts = elements(contents(&cert));
        let tbs = elements(contents(&parts[0]));
        let rebuild = |tbs: &[Vec<u8>], tail: &[Vec<u8>]| {
            let tbs = der(0x30, &tbs.concat());
            der(0x30, &[vec![tbs], tail.to_vec()].concat().concat())
        };
        assert_eq!(rebuild(&tbs, &parts[1..]), cert, "the test's rebuild is faithful");

        // Other fields are not examined: a v1 certificate (no version), a
        // wrong signature, no signature at all, extensions after the SPKI.
        assert_eq!(
            peer_id_of_certificate(&rebuild(&tbs[1..], &parts[1..])),
            Some(key.peer_id())
        );
        let bad_signature = der(0x03, &[0u8; 65]);
        assert_eq!(
            peer_id_of_certificate(&rebuild(&tbs, &[parts[1].clone(), bad_signature])),
            Some(key.peer_id())
        );
        assert_eq!(peer_id_of_certificate(&rebuild(&tbs, &[])), Some(key.peer_id()));
        let extensions = der(0xa3, &der(0x30, &[]));
        let mut with_extensions = tbs.clone();
        with_extensions.push(extensions);
        assert_eq!(
            peer_id_of_certificate(&rebuild(&with_extensions, &parts[1..])),
            Some(key.peer_id())
        );

        // Refused: bytes after the certificate, a non-minimal or indefinite
        // length, a truncated certificate, a missing field, a key of another type.
        let mut trailing = cert.clone();
        trailing.push(0);
        assert_eq!(peer_id_of_certificate(&trailing), None);
        let mut long_length = vec![0x30, 0x82];
        long_length.extend_from_slice(&(contents(&cert).len() as u16).to_be_bytes());
        long_length.extend_from_slice(contents(&cert));
        assert_eq!(
            peer_id_of_certificate(&long_length),
            Some(key.peer_id()),
            "long form needed here"
        );
        let mut padded = vec![0x30, 0x83, 0x00];
        padded.extend_from_slice(&long_length[2..]);
        assert_eq!(
            peer_id_of_certificate(&padded),
            None,
            "a length with a leading zero byte"
        );
        let mut indefinite = vec![0x30, 0x80];
        indefinite.extend_from_slice(contents(&cert));
        indefinite.extend_from_slice(&[0, 0]);
        assert_eq!(peer_id_of_certificate(&indefinite), None);
        assert_eq!(peer_id_of_certificate(&cert[..cert.len() - 1]), None);
        let mut no_subject = tbs.clone();
        no_subject.remove(5);
        assert_eq!(peer_id_of_certificate(&rebuild(&no_subject, &parts[1..])), None);
        // An ECDSA P-256 SubjectPublicKeyInfo in place of the Ed25519 one.
        let p256 = der(
            0x30,
            &[
                der(
                    0x30,
                    &[
                        der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
                        der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
                    ]
                    .concat(),
                ),
                der(0x03, &[[0u8, 4].as_slice(), &[7u8; 64]].concat()),
            ]
            .concat(),
        );
        let mut other_key = tbs.clone();
        other_key[6] = p256;
        assert_eq!(peer_id_of_certificate(&rebuild(&other_key, &parts[1..])), None);
        // A bare SPKI is not a certificate (but is a raw key).
        let spki = spki_of(&key.peer_id());
        assert_eq!(peer_id_of_certificate(&spki), None);
        assert_eq!(peer_id_of_entry(&spki), Some(key.peer_id()));
    }

    #[test]
    fn spki_round_trips() {
        let key = NodeKey::generate().unwrap();
        assert_eq!(peer_id_of_spki(&spki_of(&key.peer_id())), Some(key.peer_id()));
        assert_eq!(peer_id_of_spki(&[0u8; 44]), None);
    }
}
