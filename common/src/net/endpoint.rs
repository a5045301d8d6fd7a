//! One QUIC endpoint per node, used both to accept and to dial.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;

use super::identity::{peer_id_of_entry, NodeKey};
use super::membership::{Membership, Network};
use super::tls::{self, CertType};
use super::NetError;
use crate::proto::{PeerAddr, PeerId, ALPN};

/// TLS alert `no_application_protocol` (RFC 8446), as QUIC reports it: what
/// a node answers a peer that speaks none of its ALPN ids (another
/// network, or another protocol version).
fn no_common_protocol(error: &quinn::ConnectionError) -> bool {
    matches!(error, quinn::ConnectionError::ConnectionClosed(close)
        if close.error_code == quinn::TransportErrorCode::crypto(120))
}

/// Transport settings. The defaults suit a desktop node; tests shorten the
/// timeouts to notice dead peers quickly.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// A connection with no traffic for this long is dead. Negotiated: the
    /// shorter of the two sides' values applies.
    pub idle_timeout: Duration,
    /// Ping an otherwise quiet connection this often so it stays alive (and
    /// NAT bindings stay open) while the peer is.
    pub keep_alive: Duration,
    /// Requests one peer may have open on one connection at once.
    pub max_streams_per_connection: u32,
    /// Socket buffer to ask the kernel for. The 208 KiB Linux default drops
    /// packets at QUIC's speeds; the kernel may clamp what we ask for to
    /// `net.core.rmem_max` / `wmem_max`.
    pub udp_buffer_bytes: usize,
    /// Bytes a peer may send on one stream before we read them: large
    /// enough for full speed over long, fast links.
    pub stream_receive_window: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            // A silent peer (a killed leaf, a dead supernode) is noticed
            // within seconds; one ping a second per connection is cheap.
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(1),
            max_streams_per_connection: 64,
            udp_buffer_bytes: 4 << 20,
            stream_receive_window: 8 << 20,
        }
    }
}

impl EndpointConfig {
    fn transport(&self) -> Result<Arc<TransportConfig>, NetError> {
        let mut transport = TransportConfig::default();
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| rustls::Error::General("idle timeout out of range".into()))?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams_per_connection))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window));
        // Search up to the largest UDP payload an Ethernet path carries over
        // IPv4 (quinn stops at 1452 by default): fewer packets, less header
        // per byte. Paths with a smaller MTU are found by the same probing.
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(1472);
        transport.mtu_discovery_config(Some(mtu));
        Ok(Arc::new(transport))
    }
}

/// A node's QUIC endpoint, bound to its key and to one network: the public
/// one, or a private network it proves membership of on every connection.
/// What [`Endpoint::connect_nearest`] found.
#[derive(Debug, Default)]
pub struct Nearest {
    /// The connections kept, shortest round trip first.
    pub kept: Vec<(PeerAddr, quinn::Connection)>,
    /// Candidates that answered but were farther: their connections are closed.
    pub farther: Vec<PeerAddr>,
    /// Candidates that did not answer, and why.
    pub failed: Vec<(PeerAddr, String)>,
}

#[derive(Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    key: NodeKey,
    transport: Arc<TransportConfig>,
    /// `None`: the public network.
    membership: Option<Arc<Membership>>,
    /// A second handle on the listening socket, for hole punching: the
    /// packets must leave from the port our peers know.
    punch_socket: Arc<std::net::UdpSocket>,
}

/// What a hole-punching packet carries. Nothing reads it: it only opens
/// the sender's router towards the peer. It stays under 22 bytes, so a
/// QUIC endpoint that receives it drops it without answering (quinn sends
/// a stateless reset only to datagrams of 22 bytes or more, and version
/// negotiation only to 1,200 or more).
pub const PUNCH_PAYLOAD: &[u8] = b"canopy punch";

fn server_config(
    key: &NodeKey,
    transport: &Arc<TransportConfig>,
    alpn: &[u8],
) -> Result<quinn::ServerConfig, NetError> {
    let mut server = quinn::ServerConfig::with_crypto(tls::quic_server_config(key, alpn)?);
    server.transport_config(transport.clone());
    Ok(server)
}

impl Endpoint {
    /// Binds `listen` in the public network and starts accepting. Must run
    /// inside a tokio runtime.
    pub fn bind(key: NodeKey, listen: SocketAddr, config: &EndpointConfig) -> Result<Self, NetError> {
        Self::bind_in(key, listen, config, None)
    }

    /// Binds `listen` in `network` (`None`: the public network). A private
    /// endpoint speaks only to members: see [`super::membership`].
    pub fn bind_in(
        key: NodeKey,
        listen: SocketAddr,
        config: &EndpointConfig,
        network: Option<Network>,
    ) -> Result<Self, NetError> {
        let transport = config.transport()?;
        let membership = network.map(Membership::new);
        let alpn = membership.as_ref().map_or(ALPN.to_vec(), |m| m.current().alpn());
        let server = server_config(&key, &transport, &alpn)?;

        let socket = udp_socket(listen, config.udp_buffer_bytes)
            .or_else(|error| match ipv4_instead(listen, &error) {
                // A machine without IPv6: the same port on IPv4 alone.
                Some(v4) => {
                    tracing::info!(%error, "no IPv6 here; listening on IPv4 only");
                    udp_socket(v4, config.udp_buffer_bytes)
                }
                None => Err(error),
            })
            .map_err(|source| NetError::Bind { addr: listen, source })?;
        let punch_socket = Arc::new(
            socket
                .try_clone()
                .map_err(|source| NetError::Bind { addr: listen, source })?,
        );
        let inner = quinn::Endpoint::new(
            quinn_config(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| NetError::Bind { addr: listen, source })?;
        Ok(Endpoint {
            inner,
            key,
            transport,
            membership,
            punch_socket,
        })
    }

    /// Sends one hole-punching packet to `to` from the listening port. A
    /// router that forwards only what its machine asked for then lets
    /// `to`'s packets to that port through: `to` can connect to us.
    pub fn punch(&self, to: SocketAddr) -> std::io::Result<()> {
        self.punch_socket
            .send_to(PUNCH_PAYLOAD, self.on_our_socket(to))
            .map(drop)
    }

    /// `to` as our socket takes it: an IPv4 address becomes IPv4-mapped
    /// IPv6 on a dual-stack socket (quinn does the same for connections).
    fn on_our_socket(&self, to: SocketAddr) -> SocketAddr {
        match (self.local_addr(), to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => to,
        }
    }

    /// Sends a relay's bind packet to `to` from the listening port: the
    /// relay learns where our router maps that port, and the router lets
    /// the relay's datagrams back in.
    pub fn bind_relay(
        &self,
        to: SocketAddr,
        packet: &[u8; crate::proto::relay::BIND_LEN],
    ) -> std::io::Result<()> {
        self.punch_socket
            .send_to(packet, self.on_our_socket(to))
            .map(drop)
    }

    /// The private network this endpoint is in (`None`: the public one).
    pub fn membership(&self) -> Option<&Arc<Membership>> {
        self.membership.as_ref()
    }

    /// "network NAME" or "the public network", for messages.
    fn network_label(&self) -> String {
        match &self.membership {
            Some(membership) => format!("network {}", membership.current().name),
            None => "the public network".into(),
        }
    }

    fn alpn(&self) -> Vec<u8> {
        self.membership
            .as_ref()
            .map_or(ALPN.to_vec(), |m| m.current().alpn())
    }

    /// Changes the private network's key or allow-list while running. New
    /// connections use the new key at once; existing ones that no longer
    /// qualify are closed by [`Endpoint::guard`]. Returns whether anything
    /// changed. A public endpoint cannot join a network this way.
    pub fn set_network(&self, network: Network) -> Result<bool, NetError> {
        let Some(membership) = &self.membership else {
            return Err(NetError::Tls(rustls::Error::General(
                "a public endpoint cannot change networks".into(),
            )));
        };
        // The server side first, so no connection under the old key is
        // accepted once the change is announced.
        self.inner
            .set_server_config(Some(server_config(&self.key, &self.transport, &network.alpn())?));
        Ok(membership.set(network))
    }

    /// Checks an accepted connection: its peer id, and in a private network
    /// the allow-list and the membership proof. A caller serves nothing on
    /// the connection before this returns `Ok`.
    pub async fn admit(&self, connection: &quinn::Connection) -> Result<PeerId, NetError> {
        let peer = remote_peer_id(connection)?;
        if let Some(membership) = &self.membership {
            membership.check_as_server(connection, peer).await?;
        }
        Ok(peer)
    }

    /// Runs `work` on `connection` with `peer` to its end, closing the
    /// connection meanwhile if a change of membership revokes it (so `work`
    /// sees its streams fail and cleans up as for any lost peer). In the
    /// public network, just runs `work`.
    pub async fn guard<F: std::future::Future>(
        &self,
        connection: &quinn::Connection,
        peer: PeerId,
        work: F,
    ) -> F::Output {
        let Some(membership) = &self.membership else {
            return work.await;
        };
        let mut work = std::pin::pin!(work);
        let mut revoked = std::pin::pin!(membership.revoked(connection, peer));
        let mut closed = false;
        loop {
            tokio::select! {
                output = &mut work => return output,
                () = &mut revoked, if !closed => closed = true,
            }
        }
    }

    /// The node's key, for what it signs outside TLS.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .local_addr()
            .expect("a bound quinn endpoint knows its address")
    }

    /// This node's own `PEERID@HOST:PORT`.
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr::new(self.peer_id(), self.local_addr())
    }

    /// Dials `peer`; the handshake fails unless the other side holds the key
    /// of `peer.id`.
    pub async fn connect(&self, peer: &PeerAddr) -> Result<quinn::Connection, NetError> {
        self.connect_on(&self.inner, peer).await
    }

    /// Dials `peer` from `socket` rather than the listening port, with our
    /// identity: the socket a birthday punch found a way through
    /// ([`crate::proto::birthday`]). The connection keeps its own small
    /// client-only endpoint alive for as long as it lasts.
    pub async fn connect_from(
        &self,
        socket: std::net::UdpSocket,
        peer: &PeerAddr,
    ) -> Result<quinn::Connection, NetError> {
        let addr = socket.local_addr().unwrap_or(peer.addr);
        let inner = quinn::Endpoint::new(quinn_config(), None, socket, Arc::new(quinn::TokioRuntime))
            .map_err(|source| NetError::Bind { addr, source })?;
        self.connect_on(&inner, peer).await
    }

    fn client_config(&self, peer: &PeerAddr, form: CertType) -> Result<quinn::ClientConfig, NetError> {
        let tls = tls::client_config_with(&self.key, Some(peer.id), &self.alpn(), form)?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(self.transport.clone());
        // The server name is unused: identity is the pinned key, and SNI is off.
        Ok(client)
    }

    async fn connect_on(
        &self,
        inner: &quinn::Endpoint,
        peer: &PeerAddr,
    ) -> Result<quinn::Connection, NetError> {
        // Raw keys first; a server that turns them down (a stack without
        // RFC 7250) gets a second dial offering the X.509 form instead.
        let mut attempt = inner
            .connect_with(
                self.client_config(peer, CertType::RawPublicKey)?,
                peer.addr,
                "canopy",
            )?
            .await;
        if attempt.as_ref().is_err_and(tls::refused_raw_keys) {
            attempt = inner
                .connect_with(self.client_config(peer, CertType::X509)?, peer.addr, "canopy")?
                .await;
        }
        let connection = attempt.map_err(|error| {
            // Our verifier refuses any key but the expected one; say so
            // plainly instead of quoting the TLS alert.
            if error.to_string().contains("ApplicationVerificationFailure") {
                NetError::NotThatPeer {
                    expected: peer.id,
                    addr: peer.addr,
                }
            } else if no_common_protocol(&error) {
                NetError::NoCommonNetwork {
                    peer: peer.id,
                    network: self.network_label(),
                }
            } else {
                NetError::from(error)
            }
        })?;
        let actual = remote_peer_id(&connection)?;
        if actual != peer.id {
            return Err(NetError::WrongPeer {
                expected: peer.id,
                actual,
            });
        }
        if let Some(membership) = &self.membership {
            membership.prove_as_client(&connection, actual).await?;
        }
        Ok(connection)
    }

    /// Dials every candidate at once (each given `timeout`) and keeps the
    /// `keep` that answered with the shortest round trips; the others are
    /// hung up on. Sizing up several peers and keeping the nearest is how
    /// leaves pick supernodes and supernodes pick neighbours: each hop a
    /// search crosses costs a round trip.
    pub async fn connect_nearest(&self, candidates: &[PeerAddr], keep: usize, timeout: Duration) -> Nearest {
        let mut dials = tokio::task::JoinSet::new();
        for &candidate in candidates {
            let endpoint = self.clone();
            dials.spawn(async move {
                let outcome = match tokio::time::timeout(timeout, endpoint.connect(&candidate)).await {
                    Ok(Ok(connection)) => Ok(connection),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("no answer".to_string()),
                };
                (candidate, outcome)
            });
        }
        let mut nearest = Nearest::default();
        let mut measured = Vec::new();
        while let Some(done) = dials.join_next().await {
            let Ok((candidate, outcome)) = done else { continue };
            match outcome {
                Ok(connection) => measured.push(((candidate, connection.clone()), connection.rtt())),
                Err(reason) => nearest.failed.push((candidate, reason)),
            }
        }
        let (kept, farther) = crate::proto::nearest::keep_nearest(measured, keep);
        nearest.kept = kept.into_iter().map(|(kept, _)| kept).collect();
        for ((candidate, connection), _) in farther {
            connection.close(0u32.into(), b"another peer is nearer");
            nearest.farther.push(candidate);
        }
        nearest
    }

    /// The next incoming connection attempt, or `None` once closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.inner.accept().await
    }

    /// Closes every connection and waits until peers were told.
    pub async fn shutdown(&self) {
        self.inner.close(VarInt::from_u32(0), b"node shutting down");
        // Connections still in their handshake (a peer that vanished) would
        // hold us for their whole drain period; a second is plenty for the
        // rest to hear the close.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.wait_idle()).await;
    }
}

/// quinn's endpoint settings for every endpoint of ours: short
/// connection ids.
fn quinn_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(|| Box::new(ShortConnectionIds));
    config
}

/// Connection ids of 4 random bytes instead of quinn's 8. Every packet a
/// peer sends us carries one, so each byte is paid per packet; 4 bytes tell
/// a node's connections apart (quinn draws again on a collision), and the
/// peer's identity is its key, not this id.
struct ShortConnectionIds;

impl quinn::ConnectionIdGenerator for ShortConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&super::random_bytes::<4>())
    }

    fn cid_len(&self) -> usize {
        4
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The id a connected peer proved in the handshake.
pub fn remote_peer_id(connection: &quinn::Connection) -> Result<PeerId, NetError> {
    let identity = connection.peer_identity().ok_or(NetError::NoPeerIdentity)?;
    // quinn hands us the one entry the peer presented: its SPKI under RFC
    // 7250, or its self-signed certificate.
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| NetError::NoPeerIdentity)?;
    let entry = chain.first().ok_or(NetError::NoPeerIdentity)?;
    peer_id_of_entry(entry.as_ref()).ok_or(NetError::NoPeerIdentity)
}

fn udp_socket(listen: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(Protocol::UDP))?;
    if listen.is_ipv6() && listen.ip().is_unspecified() {
        // `[::]` is both families: IPv4 peers arrive as IPv4-mapped IPv6
        // addresses, which [`remote_addr`] turns back into IPv4.
        socket.set_only_v6(false)?;
    }
    // Best effort: a clamped buffer is slower, not broken.
    if let Err(error) = socket.set_recv_buffer_size(buffer) {
        tracing::debug!(%error, "could not raise UDP receive buffer");
    }
    if let Err(error) = socket.set_send_buffer_size(buffer) {
        tracing::debug!(%error, "could not raise UDP send buffer");
    }
    socket.bind(&listen.into())?;
    tracing::debug!(
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
    Ok(socket.into())
}

/// The IPv4 listening address to fall back to when `listen`, the
/// dual-stack `[::]`, cannot be bound for want of IPv6.
fn ipv4_instead(listen: SocketAddr, error: &std::io::Error) -> Option<SocketAddr> {
    let no_ipv6 = matches!(
        error.raw_os_error(),
        Some(libc_codes::EAFNOSUPPORT | libc_codes::EADDRNOTAVAIL | libc_codes::EPROTONOSUPPORT)
    );
    (no_ipv6 && listen.is_ipv6() && listen.ip().is_unspecified())
        .then(|| SocketAddr::from(([0, 0, 0, 0], listen.port())))
}

/// The errno values that mean "no IPv6 on this machine" (Linux's).
mod libc_codes {
    pub const EAFNOSUPPORT: i32 = 97;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const EPROTONOSUPPORT: i32 = 93;
}

/// `addr` with an IPv4-mapped IPv6 address (how a dual-stack socket shows
/// an IPv4 peer) turned back into IPv4: one peer, one way to write it.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Where `connection`'s peer is, IPv4 peers as IPv4.
pub fn remote_addr(connection: &quinn::Connection) -> SocketAddr {
    canonical(connection.remote_address())
}

/// Our address that `connection` reached (for accepted connections),
/// IPv4 as IPv4.
pub fn local_ip(connection: &quinn::Connection) -> Option<std::net::IpAddr> {
    connection.local_ip().map(|ip| ip.to_canonical())
}
