//! The two identity forms of PROTOCOL.md section 3.2 over real QUIC on
//! loopback: raw public keys between Canopy nodes, self-signed X.509
//! certificates with stacks that lack raw keys, and the certificates a
//! receiver must refuse.
//!
//! The "stock" peers here are plain rustls set up the way an implementer on
//! another stack would be: no certificate-type extensions, the certificate
//! loaded with the ordinary X.509 APIs (which parse it with webpki), and a
//! verifier that compares the webpki-parsed SubjectPublicKeyInfo with the
//! pinned key and checks the handshake signature with webpki too. So these
//! tests also show that the certificate Canopy builds is one a strict X.509
//! parser takes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use canopy_common::net::identity::{peer_id_of_certificate, KEY_FILE};
use canopy_common::net::{remote_peer_id, tls, Endpoint, EndpointConfig, NetError, NodeKey};
use canopy_common::proto::{PeerAddr, PeerId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
const ALPN: &[u8] = b"canopy/0";
const ALERT_BAD_CERTIFICATE: u8 = 42;
const ALERT_DECRYPT_ERROR: u8 = 51;

/// An Ed25519 key as every party here needs it: PKCS#8 for the stock APIs,
/// a rustls signer, and the Canopy [`NodeKey`] loaded from the same bytes.
struct TestKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    node: NodeKey,
    _dir: tempfile::TempDir,
}

impl TestKey {
    fn new() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .unwrap()
            .as_ref()
            .to_vec();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), &pkcs8).unwrap();
        TestKey {
            pair: Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap(),
            node: NodeKey::load_or_create(dir.path()).unwrap(),
            pkcs8,
            _dir: dir,
        }
    }

    fn id(&self) -> PeerId {
        self.node.peer_id()
    }

    fn spki(&self) -> Vec<u8> {
        ed25519_spki(self.pair.public_key().as_ref())
    }

    fn signer(&self) -> Arc<dyn SigningKey> {
        rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(self.pkcs8.clone())).unwrap()
    }

    fn private_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }

    fn certificate(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.node.certificate().to_vec())
    }
}

// ---------------------------------------------------------------------------
// Certificates built by hand, for the hostile cases

fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match contents.len() {
        len @ 0..=0x7f => out.push(len as u8),
        len @ 0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
        len => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(contents);
    out
}

const ED25519_ALGORITHM: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

fn ed25519_spki(key: &[u8]) -> Vec<u8> {
    der(
        0x30,
        &[&ED25519_ALGORITHM[..], &der(0x03, &[&[0u8][..], key].concat())].concat(),
    )
}

fn p256_spki(point: &[u8]) -> Vec<u8> {
    let ec_public_key = der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
    let prime256v1 = der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);
    der(
        0x30,
        &[
            der(0x30, &[ec_public_key, prime256v1].concat()),
            der(0x03, &[&[0u8][..], point].concat()),
        ]
        .concat(),
    )
}

fn name(common_name: &str) -> Vec<u8> {
    let attribute = [der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, common_name.as_bytes())].concat();
    der(0x30, &der(0x31, &der(0x30, &attribute)))
}

/// An X.509 v3 certificate for `spki`, named `subject`, issued by `issuer`
/// and signed with the Ed25519 key `signer`; `ca` adds basicConstraints
/// cA=TRUE.
fn certificate(
    spki: &[u8],
    subject: &str,
    issuer: &str,
    signer: &Ed25519KeyPair,
    ca: bool,
) -> CertificateDer<'static> {
    let validity = der(
        0x30,
        &[der(0x17, b"700101000000Z"), der(0x18, b"99991231235959Z")].concat(),
    );
    let mut tbs = [
        der(0xa0, &der(0x02, &[2])),
        der(0x02, &[7]),
        ED25519_ALGORITHM.to_vec(),
        name(issuer),
        validity,
        name(subject),
        spki.to_vec(),
    ]
    .concat();
    if ca {
        let basic_constraints = der(
            0x30,
            &[
                der(0x06, &[0x55, 0x1d, 0x13]),
                der(0x01, &[0xff]),
                der(0x04, &der(0x30, &der(0x01, &[0xff]))),
            ]
            .concat(),
        );
        tbs.extend_from_slice(&der(0xa3, &der(0x30, &basic_constraints)));
    }
    let tbs = der(0x30, &tbs);
    let signature = signer.sign(&tbs);
    let bits = der(0x03, &[&[0u8][..], signature.as_ref()].concat());
    CertificateDer::from(der(0x30, &[tbs, ED25519_ALGORITHM.to_vec(), bits].concat()))
}

// ---------------------------------------------------------------------------
// Stock peers

/// What a stock stack's application code does with the peer's certificate:
/// exactly one, parsed by its X.509 library, whose key must be Ed25519 (and
/// the pinned one, when there is a pin); the handshake signature checked by
/// the library against that certificate.
#[derive(Debug)]
struct StockVerifier {
    expected: Option<PeerId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl StockVerifier {
    fn new(expected: Option<PeerId>) -> Arc<Self> {
        Arc::new(StockVerifier {
            expected,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(CertificateError::BadEncoding.into());
        }
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let spki = parsed.subject_public_key_info();
        let key = spki
            .as_ref()
            .strip_prefix(
                &[
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ][..],
            )
            .ok_or(CertificateError::BadEncoding)?;
        match self.expected {
            Some(expected) if expected.as_bytes()[..] != key[..] => {
                Err(CertificateError::ApplicationVerificationFailure.into())
            }
            _ => Ok(()),
        }
    }
}

impl ServerCertVerifier for StockVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for StockVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Presents whatever chain and signer a hostile test hands it, as X.509 or
/// (`raw`) as an RFC 7250 raw key.
#[derive(Debug)]
struct Presents {
    key: Arc<CertifiedKey>,
    raw: bool,
}

impl Presents {
    fn new(chain: Vec<CertificateDer<'static>>, signer: Arc<dyn SigningKey>, raw: bool) -> Arc<Self> {
        Arc::new(Presents {
            key: Arc::new(CertifiedKey::new(chain, signer)),
            raw,
        })
    }
}

impl ResolvesClientCert for Presents {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }

    fn only_raw_public_keys(&self) -> bool {
        self.raw
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Presents {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.clone())
    }
}

fn tls13() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

fn quic_client(mut tls: rustls::ClientConfig) -> quinn::ClientConfig {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
}

/// A stock client: the key's certificate through the ordinary client-auth
/// API, no certificate-type extensions, the server pinned to `server`.
fn stock_client(key: &TestKey, server: PeerId) -> quinn::ClientConfig {
    quic_client(
        tls13()
            .dangerous()
            .with_custom_certificate_verifier(StockVerifier::new(Some(server)))
            .with_client_auth_cert(vec![key.certificate()], key.private_der())
            .unwrap(),
    )
}

/// A client that presents `presents`, checking the server as a stock one would.
fn hostile_client(presents: Arc<Presents>, server: PeerId) -> quinn::ClientConfig {
    quic_client(
        tls13()
            .dangerous()
            .with_custom_certificate_verifier(StockVerifier::new(Some(server)))
            .with_client_cert_resolver(presents),
    )
}

fn quic_server(mut tls: rustls::ServerConfig) -> quinn::Endpoint {
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = Arc::new(QuicServerConfig::try_from(tls).unwrap());
    quinn::Endpoint::server(quinn::ServerConfig::with_crypto(crypto), LOOPBACK).unwrap()
}

fn server_tls() -> rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert> {
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(StockVerifier::new(None))
}

/// A server on a stack without raw public keys: X.509 only, its key's
/// certificate through the ordinary single-certificate API.
fn stock_server(key: &TestKey) -> quinn::Endpoint {
    quic_server(
        server_tls()
            .with_single_cert(vec![key.certificate()], key.private_der())
            .unwrap(),
    )
}

fn canopy_endpoint(key: &TestKey) -> Endpoint {
    Endpoint::bind(key.node.clone(), LOOPBACK, &EndpointConfig::default()).unwrap()
}

/// Runs a dial from a quinn client to `server` to its end on both sides:
/// what the client saw, and what the server's accept gave.
async fn dial(
    server: &Endpoint,
    client: quinn::ClientConfig,
) -> (
    Result<quinn::Connection, quinn::ConnectionError>,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let endpoint = quinn::Endpoint::client(LOOPBACK).unwrap();
    let connecting = endpoint
        .connect_with(client, server.local_addr(), "canopy")
        .unwrap();
    let accepting = async { server.accept().await.expect("server open").await };
    let both = async { tokio::join!(connecting, accepting) };
    tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("handshake ends in time")
}

/// The TLS alert a connection was refused with, from either side.
fn alert(error: &quinn::ConnectionError) -> Option<u8> {
    let code = match error {
        quinn::ConnectionError::TransportError(local) => local.code,
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        _ => return None,
    };
    u64::from(code)
        .checked_sub(0x100)
        .and_then(|alert| u8::try_from(alert).ok())
}

/// The one certificate entry a connection's peer presented.
fn presented(connection: &quinn::Connection) -> Vec<u8> {
    let chain = connection
        .peer_identity()
        .expect("an identity")
        .downcast::<Vec<CertificateDer<'static>>>()
        .expect("a chain");
    assert_eq!(chain.len(), 1);
    chain[0].to_vec()
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn a_stock_client_with_an_x509_certificate_is_accepted_as_its_key() {
    let server_key = TestKey::new();
    let client_key = TestKey::new();
    let server = canopy_endpoint(&server_key);
    let (client, accepted) = dial(&server, stock_client(&client_key, server_key.id())).await;
    let client = client.expect("the stock client connects");
    let accepted = accepted.expect("the Canopy server accepts");
    assert_eq!(server.admit(&accepted).await.unwrap(), client_key.id());
    assert_eq!(presented(&accepted), client_key.node.certificate());
    // The server answered in kind: its own certificate, which the client's
    // webpki parsed and pinned.
    assert_eq!(presented(&client), server_key.node.certificate());

    // The connection is usable both ways, not refused after the fact.
    let (mut send, mut recv) = client.open_bi().await.unwrap();
    send.write_all(b"ping").await.unwrap();
    send.finish().unwrap();
    let (mut reply, mut request) = accepted.accept_bi().await.unwrap();
    assert_eq!(request.read_to_end(16).await.unwrap(), b"ping");
    reply.write_all(b"pong").await.unwrap();
    reply.finish().unwrap();
    assert_eq!(recv.read_to_end(16).await.unwrap(), b"pong");
}

#[tokio::test]
async fn canopy_nodes_keep_raw_keys_with_each_other_and_with_raw_only_nodes() {
    let a = TestKey::new();
    let b = TestKey::new();
    let server = canopy_endpoint(&a);
    let client = canopy_endpoint(&b);

    // New to new: raw keys are preferred, so each side sees a bare SPKI.
    let target = server.peer_addr();
    let (dialed, accepted) = tokio::join!(client.connect(&target), async {
        server.accept().await.unwrap().await
    });
    let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
    assert_eq!(remote_peer_id(&dialed).unwrap(), a.id());
    assert_eq!(server.admit(&accepted).await.unwrap(), b.id());
    assert_eq!(presented(&dialed), a.spki());
    assert_eq!(presented(&accepted), b.spki());

    // A node from before the X.509 option, dialing: raw keys only.
    let old_client = quic_client(tls::client_config(&b.node, Some(a.id()), ALPN).unwrap());
    let (dialed, accepted) = dial(&server, old_client).await;
    assert_eq!(remote_peer_id(&dialed.unwrap()).unwrap(), a.id());
    assert_eq!(remote_peer_id(&accepted.unwrap()).unwrap(), b.id());

    // ... and accepting.
    let old_server = quic_server(tls::server_config(&a.node, ALPN).unwrap());
    let target = PeerAddr {
        id: a.id(),
        addr: old_server.local_addr().unwrap(),
    };
    let (dialed, accepted) = tokio::join!(client.connect(&target), async {
        old_server.accept().await.unwrap().await
    });
    let dialed = dialed.unwrap();
    assert_eq!(presented(&dialed), a.spki());
    assert_eq!(remote_peer_id(&accepted.unwrap()).unwrap(), b.id());
}

#[tokio::test]
async fn a_canopy_client_reaches_a_server_that_only_offers_x509() {
    let server_key = TestKey::new();
    let client_key = TestKey::new();
    let stock = stock_server(&server_key);
    let client = canopy_endpoint(&client_key);
    let target = PeerAddr {
        id: server_key.id(),
        addr: stock.local_addr().unwrap(),
    };
    // The first dial (raw keys) is refused; the second, offering X.509, is
    // the one the server accepts.
    let accepting = async {
        loop {
            match stock.accept().await.unwrap().await {
                Ok(connection) => return connection,
                Err(refused) => assert_eq!(alert(&refused), Some(40), "handshake_failure: {refused}"),
            }
        }
    };
    let (dialed, accepted) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(client.connect(&target), accepting)
    })
    .await
    .unwrap();
    let dialed = dialed.expect("the fallback to X.509 connects");
    assert_eq!(remote_peer_id(&dialed).unwrap(), server_key.id());
    assert_eq!(presented(&dialed), server_key.node.certificate());
    // The stock server's webpki took our certificate; its key is the client's.
    assert_eq!(presented(&accepted), client_key.node.certificate());
    assert_eq!(
        peer_id_of_certificate(&presented(&accepted)),
        Some(client_key.id())
    );
}

#[tokio::test]
async fn a_pinned_dial_refuses_an_x509_server_with_another_key() {
    let expected = TestKey::new();
    let impostor = TestKey::new();
    let stock = stock_server(&impostor);
    let client = canopy_endpoint(&TestKey::new());
    let target = PeerAddr {
        id: expected.id(),
        addr: stock.local_addr().unwrap(),
    };
    let _server = tokio::spawn(async move {
        while let Some(incoming) = stock.accept().await {
            let _ = incoming.await;
        }
    });
    let error = tokio::time::timeout(Duration::from_secs(10), client.connect(&target))
        .await
        .unwrap()
        .expect_err("the impostor's certificate holds the wrong key");
    assert!(matches!(error, NetError::NotThatPeer { .. }), "{error}");
}

#[tokio::test]
async fn hostile_client_certificates_are_refused() {
    let server_key = TestKey::new();
    let server = canopy_endpoint(&server_key);
    let key = TestKey::new();
    let other = TestKey::new();
    let ca = TestKey::new();
    let p256_pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new()).unwrap();
    let p256 = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        p256_pkcs8.as_ref(),
        &SystemRandom::new(),
    )
    .unwrap();

    let issued_by_ca = certificate(&key.spki(), "leaf", "canopy ca", &ca.pair, false);
    let ca_certificate = certificate(&ca.spki(), "canopy ca", "canopy ca", &ca.pair, true);
    let cases: Vec<(&str, Arc<Presents>, u8)> = vec![
        (
            "its own certificate twice",
            Presents::new(vec![key.certificate(), key.certificate()], key.signer(), false),
            ALERT_BAD_CERTIFICATE,
        ),
        (
            "a CA-signed chain for its key",
            Presents::new(vec![issued_by_ca.clone(), ca_certificate], key.signer(), false),
            ALERT_BAD_CERTIFICATE,
        ),
        (
            "a certificate for another key (the handshake signed with its own)",
            Presents::new(vec![other.certificate()], key.signer(), false),
            ALERT_DECRYPT_ERROR,
        ),
        (
            "a certificate for another key, signed by its own",
            Presents::new(
                vec![certificate(&other.spki(), "x", "x", &key.pair, false)],
                key.signer(),
                false,
            ),
            ALERT_DECRYPT_ERROR,
        ),
        (
            "a certificate for a P-256 key",
            Presents::new(
                vec![certificate(
                    &p256_spki(p256.public_key().as_ref()),
                    "x",
                    "x",
                    &key.pair,
                    false,
                )],
                key.signer(),
                false,
            ),
            ALERT_BAD_CERTIFICATE,
        ),
        (
            "a certificate passed off as a raw key",
            Presents::new(vec![key.certificate()], key.signer(), true),
            ALERT_BAD_CERTIFICATE,
        ),
        (
            "a raw key passed off as a certificate",
            Presents::new(vec![CertificateDer::from(key.spki())], key.signer(), false),
            ALERT_BAD_CERTIFICATE,
        ),
    ];
    for (what, presents, refusal) in cases {
        let (_, accepted) = dial(&server, hostile_client(presents, server_key.id())).await;
        let error = accepted.expect_err(what);
        assert_eq!(alert(&error), Some(refusal), "{what}: {error}");
    }

    // The same server still takes the honest certificate of a key that
    // has a CA-signed one too: only the single self-presented form counts.
    let honest = Presents::new(vec![key.certificate()], key.signer(), false);
    let (_, accepted) = dial(&server, hostile_client(honest, server_key.id())).await;
    assert_eq!(remote_peer_id(&accepted.unwrap()).unwrap(), key.id());
    // A lone CA-issued certificate for the key is accepted as that key, its
    // issuer ignored: the handshake signature is the proof.
    let lone = Presents::new(vec![issued_by_ca], key.signer(), false);
    let (_, accepted) = dial(&server, hostile_client(lone, server_key.id())).await;
    assert_eq!(remote_peer_id(&accepted.unwrap()).unwrap(), key.id());
}

#[tokio::test]
async fn hostile_x509_servers_are_refused() {
    let server_key = TestKey::new();
    let other = TestKey::new();
    let client = canopy_endpoint(&TestKey::new());
    let cases: Vec<(&str, Arc<Presents>, u8)> = vec![
        (
            "two certificates",
            Presents::new(
                vec![server_key.certificate(), server_key.certificate()],
                server_key.signer(),
                false,
            ),
            ALERT_BAD_CERTIFICATE,
        ),
        (
            "a certificate for the pinned key, the handshake signed by another",
            Presents::new(vec![server_key.certificate()], other.signer(), false),
            ALERT_DECRYPT_ERROR,
        ),
    ];
    for (what, presents, refusal) in cases {
        let hostile = quic_server(server_tls().with_cert_resolver(presents));
        let target = PeerAddr {
            id: server_key.id(),
            addr: hostile.local_addr().unwrap(),
        };
        let server = tokio::spawn(async move {
            while let Some(incoming) = hostile.accept().await {
                let _ = incoming.await;
            }
        });
        let error = tokio::time::timeout(Duration::from_secs(10), client.connect(&target))
            .await
            .unwrap()
            .expect_err(what);
        let NetError::Connection(error) = &error else {
            panic!("{what}: {error}");
        };
        assert_eq!(alert(error), Some(refusal), "{what}: {error}");
        server.abort();
    }
}
