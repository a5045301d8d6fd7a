//! Membership of a private network, enforced on live QUIC connections.
//!
//! An endpoint bound to a [`Network`] offers only that network's ALPN id,
//! so outsiders fail the TLS handshake. Right after the handshake both sides
//! prove the key over the TLS exporter on the connection's first stream
//! ([`Membership::prove_as_client`], [`Membership::check_as_server`]); a node accepts no request on
//! a connection until that proof checks, and closes it with
//! [`NOT_A_MEMBER`] otherwise. The bytes are in `proto::network`.
//!
//! The membership can change while the node runs ([`Membership::set`]): a
//! new key means a new ALPN id for new connections, and connections made
//! under the old key, or with peers dropped from the allow-list, are
//! closed by whoever holds them through [`Membership::revoked`].

use crate::sync::ReadWrite;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::NetError;
use crate::proto::network::{
    self, alpn, client_proof, server_proof, NetworkKey, NetworkName, EXPORTER_LABEL, EXPORTER_LEN, PROOF_LEN,
};
use crate::proto::PeerId;

/// Application error code a node closes a connection with when the peer is
/// not (or no longer) a member of its network.
pub const NOT_A_MEMBER: u32 = 0x10;
/// How long each side waits for the other's proof.
pub const PROOF_TIMEOUT: Duration = Duration::from_secs(5);

/// A private network as this node knows it right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: NetworkName,
    /// The secret, or [`NetworkKey::open`] for an allow-list-only network.
    pub key: NetworkKey,
    /// Peer ids admitted (`None`: anyone who proves the key).
    pub allow: Option<BTreeSet<PeerId>>,
}

impl Network {
    /// The ALPN id members speak.
    pub fn alpn(&self) -> Vec<u8> {
        alpn(&self.name, &self.key)
    }

    /// Whether the allow-list (if any) admits `peer`.
    pub fn admits(&self, peer: &PeerId) -> bool {
        self.allow.as_ref().is_none_or(|allow| allow.contains(peer))
    }

    fn refusal(&self) -> Vec<u8> {
        format!("not a member of network {}", self.name).into_bytes()
    }
}

/// The network an endpoint belongs to, changeable at run time.
#[derive(Debug)]
pub struct Membership {
    current: RwLock<Arc<Network>>,
    /// Bumped on every change, so holders of connections re-check them.
    changes: watch::Sender<u64>,
    /// Peers refused (bad proof, not on the list) so far, for metrics and tests.
    pub refused: std::sync::atomic::AtomicU64,
}

impl Membership {
    pub fn new(network: Network) -> Arc<Self> {
        Arc::new(Membership {
            current: RwLock::new(Arc::new(network)),
            changes: watch::channel(0).0,
            refused: Default::default(),
        })
    }

    pub fn current(&self) -> Arc<Network> {
        self.current.read_locked().clone()
    }

    /// Replaces the network's key and allow-list (the name stays). Returns
    /// whether anything changed.
    pub fn set(&self, network: Network) -> bool {
        let mut current = self.current.write_locked();
        if **current == network {
            return false;
        }
        *current = Arc::new(network);
        drop(current);
        self.changes.send_modify(|generation| *generation += 1);
        true
    }

    /// Whether `connection` (with `peer`) still belongs: it was made under
    /// the current key (its ALPN id is the current one) and the allow-list
    /// still admits the peer.
    pub fn still_admits(&self, connection: &quinn::Connection, peer: &PeerId) -> bool {
        let network = self.current();
        negotiated_alpn(connection).as_deref() == Some(network.alpn().as_slice()) && network.admits(peer)
    }

    /// Resolves once a change of membership revokes `connection`, after
    /// closing it with [`NOT_A_MEMBER`]. Holders of long-lived connections
    /// race their work against it.
    pub async fn revoked(&self, connection: &quinn::Connection, peer: PeerId) {
        let mut changes = self.changes.subscribe();
        // A change may have landed while the connection was being admitted.
        let mut first = true;
        loop {
            if !first && changes.changed().await.is_err() {
                return std::future::pending().await;
            }
            first = false;
            if !self.still_admits(connection, &peer) {
                self.count_refusal();
                connection.close(NOT_A_MEMBER.into(), &self.current().refusal());
                tracing::info!(%peer, "closed a connection: the peer is no longer a member");
                return;
            }
        }
    }

    fn count_refusal(&self) {
        self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn refuse(&self, connection: &quinn::Connection, network: &Network, peer: PeerId) -> NetError {
        self.count_refusal();
        connection.close(NOT_A_MEMBER.into(), &network.refusal());
        NetError::NotAMember {
            peer,
            network: network.name.to_string(),
        }
    }

    /// The dialing side, after the handshake: checks the peer against the
    /// allow-list, sends our proof on the first stream and checks theirs.
    pub async fn prove_as_client(
        &self,
        connection: &quinn::Connection,
        peer: PeerId,
    ) -> Result<(), NetError> {
        let network = self.current();
        if !network.admits(&peer) {
            return Err(self.refuse(connection, &network, peer));
        }
        let exporter = exporter(connection)?;
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await?;
            send.write_all(&client_proof(&network.key, &exporter)).await?;
            send.finish()?;
            let mut answer = [0u8; PROOF_LEN];
            recv.read_exact(&mut answer).await?;
            Ok::<_, NetError>(answer)
        };
        let answer = match tokio::time::timeout(PROOF_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return Err(refused_by(error, peer, &network.name)),
            Err(_) => {
                connection.close(NOT_A_MEMBER.into(), b"no membership proof in time");
                return Err(NetError::ProofTimeout { peer });
            }
        };
        if !network::proofs_match(&server_proof(&network.key, &exporter), &answer) {
            return Err(self.refuse(connection, &network, peer));
        }
        Ok(())
    }

    /// The accepting side, after the handshake: checks the ALPN id and the
    /// allow-list, then waits for the caller's proof on its first stream
    /// and answers with ours. Nothing else on the connection is read first.
    pub async fn check_as_server(
        &self,
        connection: &quinn::Connection,
        peer: PeerId,
    ) -> Result<(), NetError> {
        let network = self.current();
        let current_alpn = network.alpn();
        if negotiated_alpn(connection).as_deref() != Some(current_alpn.as_slice()) || !network.admits(&peer) {
            return Err(self.refuse(connection, &network, peer));
        }
        let exporter = exporter(connection)?;
        let exchange = async {
            let (send, mut recv) = connection.accept_bi().await?;
            let mut proof = [0u8; PROOF_LEN];
            recv.read_exact(&mut proof).await?;
            Ok::<_, NetError>((send, proof))
        };
        let (mut send, proof) = match tokio::time::timeout(PROOF_TIMEOUT, exchange).await {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                self.count_refusal();
                connection.close(NOT_A_MEMBER.into(), b"no membership proof in time");
                return Err(NetError::ProofTimeout { peer });
            }
        };
        if !network::proofs_match(&client_proof(&network.key, &exporter), &proof) {
            return Err(self.refuse(connection, &network, peer));
        }
        send.write_all(&server_proof(&network.key, &exporter)).await?;
        send.finish()?;
        Ok(())
    }
}

/// The ALPN id the handshake settled on.
pub fn negotiated_alpn(connection: &quinn::Connection) -> Option<Vec<u8>> {
    connection
        .handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

fn exporter(connection: &quinn::Connection) -> Result<[u8; EXPORTER_LEN], NetError> {
    let mut out = [0u8; EXPORTER_LEN];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| NetError::Tls(rustls::Error::General("TLS exporter unavailable".into())))?;
    Ok(out)
}

/// Turns the other side closing on us with [`NOT_A_MEMBER`] into an error
/// that says so.
fn refused_by(error: NetError, peer: PeerId, network: &NetworkName) -> NetError {
    let connection_error = match &error {
        NetError::Connection(e) => Some(e),
        NetError::Read(quinn::ReadError::ConnectionLost(e)) => Some(e),
        NetError::Write(quinn::WriteError::ConnectionLost(e)) => Some(e),
        _ => None,
    };
    match connection_error {
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == quinn::VarInt::from_u32(NOT_A_MEMBER) =>
        {
            NetError::RefusedBy {
                peer,
                network: format!("network {network}"),
            }
        }
        _ => error,
    }
}
