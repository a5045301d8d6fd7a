//! Mutual authentication with the node's Ed25519 key, presented either as an
//! RFC 7250 raw public key or inside a self-signed X.509 certificate.
//!
//! Each side proves it holds the private half of its key by signing the TLS
//! 1.3 handshake. There is no authority to trust: the dialer pins the peer id
//! it expects and the acceptor learns the caller's id from the handshake. The
//! certificate form exists for TLS stacks without raw public keys (Go's,
//! msquic, aioquic, …); a receiver reads only the key out of it, so both
//! forms prove exactly the same thing (PROTOCOL.md section 3.2).
//!
//! **Why the server is not one rustls config.** rustls 0.23 decides each
//! certificate type from a yes/no that takes no ClientHello
//! ([`ResolvesServerCert::only_raw_public_keys`] for the server's,
//! [`ClientCertVerifier::requires_raw_public_keys`] for the client's): a
//! config that says yes refuses a client that does not offer raw keys, and
//! one that says no refuses a client that offers *only* raw keys (every
//! Canopy node before this change). So the server is a quinn crypto config
//! ([`quic_server_config`]) that reads the two certificate-type extensions of
//! each ClientHello itself and starts that connection's TLS session from the
//! one of four rustls configs that matches. The rustls session still parses
//! and checks the whole ClientHello; the early look only picks a config.
//!
//! **Why the client tries twice.** A rustls client can offer raw keys alone
//! or X.509 alone, never both in one ClientHello. A Canopy client offers raw
//! keys (so nodes that know nothing else still accept it), and when the
//! server turns that down ([`refused_raw_keys`]) dials again offering X.509.
//!
//! Session resumption is off. A resumed TLS 1.3 handshake runs none of the
//! verifier callbacks, so identity would rest on a ticket instead of a
//! fresh signature.

use std::any::Any;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::crypto::{
    ExportKeyingMaterialError, HeaderKey, KeyPair, Keys, PacketKey, ServerConfig as _, Session,
};
use quinn::{ConnectionId, Side};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::TransportError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, PeerIncompatible, SignatureScheme};

use super::identity::{peer_id_of_certificate, peer_id_of_spki, spki_of, NodeKey};
use crate::proto::PeerId;

/// The two ways a key can travel in the handshake (the TLS
/// `CertificateType` values Canopy uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertType {
    /// RFC 7250: the key's SubjectPublicKeyInfo alone. Preferred.
    RawPublicKey,
    /// The key inside a self-signed X.509 certificate, for stacks without
    /// raw public keys.
    X509,
}

impl CertType {
    /// Both, in Canopy's order of preference.
    pub const ALL: [CertType; 2] = [CertType::RawPublicKey, CertType::X509];

    fn index(self) -> usize {
        match self {
            CertType::RawPublicKey => 0,
            CertType::X509 => 1,
        }
    }
}

/// TLS `CertificateType` code of RawPublicKey (RFC 7250 section 3).
const RAW_PUBLIC_KEY_CODE: u8 = 2;
/// Extension numbers of `client_certificate_type` and
/// `server_certificate_type` (RFC 7250 section 3).
const CLIENT_CERTIFICATE_TYPE: u16 = 19;
const SERVER_CERTIFICATE_TYPE: u16 = 20;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks the peer's certificate entry in both directions: one entry, in the
/// form the handshake negotiated, holding an Ed25519 key, and (when dialing
/// a named peer) the key we expect.
#[derive(Debug)]
struct PeerVerifier {
    expected: Option<PeerId>,
    /// The form this handshake negotiated. rustls hands the verifier bare
    /// DER either way; without this an X.509 handshake would also take a
    /// bare SPKI, which no peer following section 3.2 sends.
    form: CertType,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(expected: Option<PeerId>, form: CertType) -> Arc<Self> {
        Arc::new(PeerVerifier {
            expected,
            form,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    fn peer_id(&self, entry: &CertificateDer<'_>) -> Result<PeerId, rustls::Error> {
        let id = match self.form {
            CertType::RawPublicKey => peer_id_of_spki(entry.as_ref()),
            CertType::X509 => peer_id_of_certificate(entry.as_ref()),
        };
        id.ok_or_else(|| CertificateError::BadEncoding.into())
    }

    fn check_key(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        // One entry only: a chain would suggest an authority vouches for
        // the key, and none does.
        if !intermediates.is_empty() {
            return Err(CertificateError::BadEncoding.into());
        }
        let actual = self.peer_id(end_entity)?;
        match self.expected {
            Some(expected) if expected != actual => {
                Err(CertificateError::ApplicationVerificationFailure.into())
            }
            _ => Ok(()),
        }
    }

    /// The handshake signature, checked against the key in the entry; for a
    /// certificate that is its SPKI, whatever key signed the certificate.
    fn check_signature(
        &self,
        message: &[u8],
        entry: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let spki = spki_of(&self.peer_id(entry)?);
        verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(spki.as_slice()),
            signature,
            &self.algorithms,
        )
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check_key(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _key: &CertificateDer<'_>,
        _signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        key: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, key, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.form == CertType::RawPublicKey
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check_key(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _key: &CertificateDer<'_>,
        _signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        key: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_signature(message, key, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.form == CertType::RawPublicKey
    }
}

/// Our own key, in one form, for either side of the handshake.
#[derive(Debug)]
struct Presents {
    key: Arc<CertifiedKey>,
    form: CertType,
}

impl Presents {
    fn new(key: &NodeKey, form: CertType) -> Arc<Self> {
        let key = match form {
            CertType::RawPublicKey => key.certified(),
            CertType::X509 => key.certified_x509(),
        };
        Arc::new(Presents { key, form })
    }
}

impl ResolvesServerCert for Presents {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }

    fn only_raw_public_keys(&self) -> bool {
        self.form == CertType::RawPublicKey
    }
}

impl ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }

    fn only_raw_public_keys(&self) -> bool {
        self.form == CertType::RawPublicKey
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// TLS config for accepting with the raw-key form on both sides, the only
/// one Canopy nodes spoke before the X.509 alternative.
pub fn server_config(key: &NodeKey, alpn: &[u8]) -> Result<rustls::ServerConfig, rustls::Error> {
    server_config_with(key, alpn, CertType::RawPublicKey, CertType::RawPublicKey)
}

/// TLS config for accepting with fixed forms: we present `ours`, the client
/// must present `theirs`. Speaks only `alpn` (`canopy/0`, or a private
/// network's id). A node accepts with [`quic_server_config`], which picks
/// among these per connection.
pub fn server_config_with(
    key: &NodeKey,
    alpn: &[u8],
    ours: CertType,
    theirs: CertType,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(PeerVerifier::new(None, theirs))
        .with_cert_resolver(Presents::new(key, ours));
    config.alpn_protocols = vec![alpn.to_vec()];
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// TLS config for dialing `expected` (or anyone, with `None`) offering raw
/// keys only, both ways: the first attempt of every Canopy dial. Built per
/// dial: the expected id lives in the verifier, typed, with no room for one
/// dial's expectation to leak into another's. Offers only `alpn`.
pub fn client_config(
    key: &NodeKey,
    expected: Option<PeerId>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, rustls::Error> {
    client_config_with(key, expected, alpn, CertType::RawPublicKey)
}

/// TLS config for dialing with `form` on both sides. With
/// [`CertType::X509`] it sends no certificate-type extension at all, which
/// is what a stack that has never heard of RFC 7250 expects.
pub fn client_config_with(
    key: &NodeKey,
    expected: Option<PeerId>,
    alpn: &[u8],
    form: CertType,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(PeerVerifier::new(expected, form))
        .with_client_cert_resolver(Presents::new(key, form));
    config.alpn_protocols = vec![alpn.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_sni = false;
    Ok(config)
}

/// Whether a dial that offered raw keys failed because the server would not
/// take them, so that offering X.509 instead may succeed: a
/// `handshake_failure` alert (40) from either side, which is what rustls
/// sends on a certificate-type mismatch and what our client sends when a
/// server that knows nothing of RFC 7250 answers with X.509 anyway, or an
/// `unsupported_certificate` alert (43), which RFC 7250 section 4.2 asks of
/// a server that supports none of the offered types.
pub fn refused_raw_keys(error: &quinn::ConnectionError) -> bool {
    let alert = |code: quinn::TransportErrorCode| {
        [40, 43]
            .into_iter()
            .any(|alert| code == quinn::TransportErrorCode::crypto(alert))
    };
    match error {
        quinn::ConnectionError::ConnectionClosed(close) => alert(close.error_code),
        quinn::ConnectionError::TransportError(local) => alert(local.code),
        _ => false,
    }
}

/// What the certificate-type extensions of a ClientHello ask for.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// The hello is not complete yet.
    Incomplete,
    /// Not a ClientHello we can read; rustls will say what is wrong with it.
    Unreadable,
    /// The form to present and the form to require of the client.
    Forms { ours: CertType, theirs: CertType },
}

/// The largest ClientHello we wait for before choosing; rustls refuses
/// handshake messages above 64 KiB anyway.
const MAX_CLIENT_HELLO: usize = 0xffff;

/// Reads the two certificate-type extensions (RFC 7250) out of the first
/// bytes of the CRYPTO stream, which in QUIC start with the bare ClientHello
/// handshake message (RFC 9001 section 4). Each side's form is the raw key
/// whenever the client lists it, whatever its order, and X.509 otherwise,
/// including when the extension is absent (TLS's default).
fn read_offer(crypto: &[u8]) -> Offer {
    let Some((&kind, rest)) = crypto.split_first() else {
        return Offer::Incomplete;
    };
    if kind != 1 {
        return Offer::Unreadable;
    }
    let Some(len) = rest.get(..3) else {
        return Offer::Incomplete;
    };
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    if len > MAX_CLIENT_HELLO {
        return Offer::Unreadable;
    }
    match rest[3..].get(..len) {
        None => Offer::Incomplete,
        Some(body) => {
            client_hello_forms(body).map_or(Offer::Unreadable, |(ours, theirs)| Offer::Forms { ours, theirs })
        }
    }
}

/// The forms a ClientHello body (RFC 8446 section 4.1.2) asks for, as
/// (server's, client's).
fn client_hello_forms(body: &[u8]) -> Option<(CertType, CertType)> {
    let mut reader = Reader(body);
    reader.take(2 + 32)?; // legacy_version, random
    let session_id = usize::from(reader.u8()?);
    reader.take(session_id)?;
    let suites = usize::from(reader.u16()?);
    reader.take(suites)?;
    let compression = usize::from(reader.u8()?);
    reader.take(compression)?;
    let mut server = CertType::X509;
    let mut client = CertType::X509;
    if reader.0.is_empty() {
        return Some((server, client));
    }
    let extensions_len = usize::from(reader.u16()?);
    let mut extensions = Reader(reader.take(extensions_len)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = usize::from(extensions.u16()?);
        let data = extensions.take(len)?;
        if kind == CLIENT_CERTIFICATE_TYPE || kind == SERVER_CERTIFICATE_TYPE {
            let mut list = Reader(data);
            let count = usize::from(list.u8()?);
            let types = list.take(count)?;
            let form = if types.contains(&RAW_PUBLIC_KEY_CODE) {
                CertType::RawPublicKey
            } else {
                CertType::X509
            };
            if kind == CLIENT_CERTIFICATE_TYPE {
                client = form;
            } else {
                server = form;
            }
        }
    }
    Some((server, client))
}

/// A cursor over bytes that fails instead of running past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }
}

/// The four fixed-form configs, indexed `[ours][theirs]`.
struct ChoosingServer {
    configs: [[Arc<QuicServerConfig>; 2]; 2],
}

impl ChoosingServer {
    fn config(&self, ours: CertType, theirs: CertType) -> &Arc<QuicServerConfig> {
        &self.configs[ours.index()][theirs.index()]
    }

    /// The config used before the ClientHello is read, and for one that
    /// cannot be read: raw keys both ways, what every Canopy node sends.
    fn default_config(&self) -> &Arc<QuicServerConfig> {
        self.config(CertType::RawPublicKey, CertType::RawPublicKey)
    }
}

/// QUIC server crypto that accepts either certificate form on each side,
/// choosing per connection from the ClientHello. What a node listens with.
pub fn quic_server_config(
    key: &NodeKey,
    alpn: &[u8],
) -> Result<Arc<dyn quinn::crypto::ServerConfig>, rustls::Error> {
    let quic = |ours, theirs| -> Result<Arc<QuicServerConfig>, rustls::Error> {
        let tls = server_config_with(key, alpn, ours, theirs)?;
        QuicServerConfig::try_from(tls)
            .map(Arc::new)
            .map_err(|e| rustls::Error::General(format!("no QUIC-capable cipher suite: {e}")))
    };
    use CertType::{RawPublicKey as Raw, X509};
    Ok(Arc::new(ChoosingServer {
        configs: [
            [quic(Raw, Raw)?, quic(Raw, X509)?],
            [quic(X509, Raw)?, quic(X509, X509)?],
        ],
    }))
}

impl quinn::crypto::ServerConfig for ChoosingServer {
    // Initial keys and Retry tags depend on the QUIC version and connection
    // ids only, never on certificates: any of the four gives the same.
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, quinn::crypto::UnsupportedVersion> {
        self.default_config().initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.default_config().retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(self: Arc<Self>, version: u32, params: &TransportParameters) -> Box<dyn Session> {
        let session = self.default_config().clone().start_session(version, params);
        Box::new(ChoosingSession {
            server: self,
            version,
            params: *params,
            hello: Some(Vec::new()),
            session,
        })
    }
}

/// A server-side session that holds the ClientHello back until it is
/// complete, then hands it to a TLS session of the matching config. Until
/// then `session` is a default-config session that has read nothing, so
/// every question quinn asks meanwhile gets the answer of a fresh session.
struct ChoosingSession {
    server: Arc<ChoosingServer>,
    version: u32,
    params: TransportParameters,
    /// The CRYPTO bytes so far, until the choice is made.
    hello: Option<Vec<u8>>,
    session: Box<dyn Session>,
}

impl Session for ChoosingSession {
    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        let Some(hello) = self.hello.as_mut() else {
            return self.session.read_handshake(buf);
        };
        hello.extend_from_slice(buf);
        let (ours, theirs) = match read_offer(hello) {
            Offer::Incomplete => return Ok(false),
            Offer::Forms { ours, theirs } => (ours, theirs),
            Offer::Unreadable => (CertType::RawPublicKey, CertType::RawPublicKey),
        };
        let hello = self.hello.take().unwrap_or_default();
        if (ours, theirs) != (CertType::RawPublicKey, CertType::RawPublicKey) {
            self.session = self
                .server
                .config(ours, theirs)
                .clone()
                .start_session(self.version, &self.params);
        }
        self.session.read_handshake(&hello)
    }

    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.session.initial_keys(dst_cid, side)
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.session.handshake_data()
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.session.peer_identity()
    }

    fn early_crypto(&self) -> Option<(Box<dyn HeaderKey>, Box<dyn PacketKey>)> {
        self.session.early_crypto()
    }

    fn early_data_accepted(&self) -> Option<bool> {
        self.session.early_data_accepted()
    }

    fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.session.transport_parameters()
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        self.session.write_handshake(buf)
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.session.next_1rtt_keys()
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.session.is_valid_retry(orig_dst_cid, header, payload)
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.session.export_keying_material(output, label, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello handshake message with the given extensions (type,
    /// data), the fixed fields filled with plausible bytes.
    fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[32]);
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        let mut block = Vec::new();
        for (kind, data) in extensions {
            block.extend_from_slice(&kind.to_be_bytes());
            block.extend_from_slice(&(data.len() as u16).to_be_bytes());
            block.extend_from_slice(data);
        }
        body.extend_from_slice(&(block.len() as u16).to_be_bytes());
        body.extend_from_slice(&block);
        let mut message = vec![1];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        message
    }

    fn types(list: &[u8]) -> Vec<u8> {
        let mut data = vec![list.len() as u8];
        data.extend_from_slice(list);
        data
    }

    #[test]
    fn raw_keys_are_chosen_whenever_listed() {
        use CertType::{RawPublicKey as Raw, X509};
        let cases = [
            (vec![], (X509, X509)),
            (
                vec![
                    (SERVER_CERTIFICATE_TYPE, types(&[2])),
                    (CLIENT_CERTIFICATE_TYPE, types(&[2])),
                ],
                (Raw, Raw),
            ),
            (vec![(SERVER_CERTIFICATE_TYPE, types(&[0, 2]))], (Raw, X509)),
            (vec![(CLIENT_CERTIFICATE_TYPE, types(&[2, 0]))], (X509, Raw)),
            (
                vec![
                    (SERVER_CERTIFICATE_TYPE, types(&[0])),
                    (CLIENT_CERTIFICATE_TYPE, types(&[0])),
                ],
                (X509, X509),
            ),
            // Other extensions around them are skipped.
            (
                vec![
                    (16, vec![0, 9, 8, b'c', b'a', b'n', b'o', b'p', b'y', b'/', b'0']),
                    (SERVER_CERTIFICATE_TYPE, types(&[2])),
                    (57, vec![1, 2, 3]),
                ],
                (Raw, X509),
            ),
        ];
        for (extensions, (ours, theirs)) in cases {
            assert_eq!(
                read_offer(&hello(&extensions)),
                Offer::Forms { ours, theirs },
                "{extensions:?}"
            );
        }
    }

    #[test]
    fn a_hello_is_read_only_once_complete() {
        let whole = hello(&[(SERVER_CERTIFICATE_TYPE, types(&[2]))]);
        for cut in 0..whole.len() {
            assert_eq!(read_offer(&whole[..cut]), Offer::Incomplete, "cut at {cut}");
        }
        assert!(matches!(read_offer(&whole), Offer::Forms { .. }));
    }

    #[test]
    fn malformed_hellos_are_left_to_rustls() {
        let whole = hello(&[(SERVER_CERTIFICATE_TYPE, types(&[2]))]);
        // Not a ClientHello.
        let mut wrong_kind = whole.clone();
        wrong_kind[0] = 2;
        assert_eq!(read_offer(&wrong_kind), Offer::Unreadable);
        // An extension that runs past the block.
        let mut overrun = hello(&[(SERVER_CERTIFICATE_TYPE, vec![5, 2])]);
        assert_eq!(read_offer(&overrun), Offer::Unreadable);
        overrun.truncate(10);
        assert_eq!(read_offer(&overrun), Offer::Incomplete);
        // A declared length beyond what we wait for.
        assert_eq!(read_offer(&[1, 0x01, 0x00, 0x00]), Offer::Unreadable);
    }
}
