//! Measuring this node for the election: its machine (sysinfo), its
//! bandwidth (timed transfers with known peers, both ways) and whether
//! others can reach it (a peer dials back from a fresh port).
//!
//! Serving probes costs bandwidth, so a node answers one probe at a time
//! and each peer at most once per [`PROBE_COOLDOWN`].

use canopy_common::sync::Lock;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use canopy_common::net::{read_frame, write_frame, Endpoint, EndpointConfig, NetError, NodeKey};
use canopy_common::proto::election::{NetworkHints, Profile};
use canopy_common::proto::frame::MAX_CONTROL_FRAME;
use canopy_common::proto::nat::Observation;
use canopy_common::proto::wire::MAX_PROBE_BYTES;
use canopy_common::proto::{PeerAddr, PeerId, Request, Response};
use quinn::{RecvStream, SendStream};
use tokio::sync::Semaphore;

use crate::ratelimit::RateLimiter;

/// How often one peer may probe us.
pub const PROBE_COOLDOWN: Duration = Duration::from_secs(10);
/// Bytes moved each way per probe.
pub const PROBE_BYTES: u32 = 4 << 20;
/// A probe never takes longer than this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
/// Each direction is timed for at most this long.
const PROBE_TIME: Duration = Duration::from_secs(3);

/// Dial-backs served at once.
const MAX_DIAL_BACKS: usize = 8;
/// The probe kind of a dial-back in [`ProbeGate`]'s records.
const DIAL_BACK: u8 = 2;

/// Admission for probes we serve.
#[derive(Debug)]
pub struct ProbeGate {
    /// Bandwidth probes, one at a time: two at once would each measure half.
    running: Semaphore,
    /// Dial-backs at once. They move no bulk data, so they do not wait for
    /// a bandwidth probe (a refused dial-back leaves a node not knowing
    /// whether it is reachable); each one opens a throwaway endpoint,
    /// hence a bound.
    dial_backs: Semaphore,
    /// When each peer last ran each kind of probe.
    last: Mutex<HashMap<(PeerId, u8), Instant>>,
}

impl Default for ProbeGate {
    fn default() -> Self {
        ProbeGate {
            running: Semaphore::new(1),
            dial_backs: Semaphore::new(MAX_DIAL_BACKS),
            last: Mutex::default(),
        }
    }
}

impl ProbeGate {
    /// Whether `peer` may run probe `kind` now; records the attempt.
    fn admit(&self, peer: PeerId, kind: u8) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let now = Instant::now();
        let mut last = self.last.locked();
        last.retain(|_, when| now.duration_since(*when) < PROBE_COOLDOWN);
        if last.contains_key(&(peer, kind)) {
            return None;
        }
        let gate = match kind {
            DIAL_BACK => &self.dial_backs,
            _ => &self.running,
        };
        let permit = gate.try_acquire().ok()?;
        last.insert((peer, kind), now);
        Some(permit)
    }
}

/// Serves one probe request (the stream is still open for reading).
pub async fn serve(
    peer: PeerAddr,
    request: &Request,
    send: &mut SendStream,
    recv: &mut RecvStream,
    gate: &ProbeGate,
    limiter: Option<&RateLimiter>,
    network: Option<canopy_common::net::Network>,
) -> Result<(), NetError> {
    let kind = match request {
        Request::ProbeDown { .. } => 0,
        Request::ProbeUp { .. } => 1,
        _ => DIAL_BACK,
    };
    let Some(_permit) = gate.admit(peer.id, kind) else {
        return write_frame(
            send,
            &Response::Busy {
                retry_after_ms: PROBE_COOLDOWN.as_millis() as u32,
            },
        )
        .await;
    };
    match *request {
        Request::ProbeDown { bytes } => {
            write_frame(send, &Response::ProbeData).await?;
            let mut left = bytes.min(MAX_PROBE_BYTES) as usize;
            let chunk = Bytes::from(vec![0u8; 64 << 10]);
            while left > 0 {
                let piece = chunk.slice(..left.min(chunk.len()));
                if let Some(limiter) = limiter {
                    limiter.acquire(piece.len()).await;
                }
                left -= piece.len();
                send.write_chunk(piece).await?;
            }
            Ok(())
        }
        Request::ProbeUp { bytes } => {
            // We time what arrives, from the first byte, for a few seconds
            // at most: on a slow link the prober's queued data would take
            // far longer to drain than is worth waiting.
            let mut left = bytes.min(MAX_PROBE_BYTES) as usize;
            let mut first: Option<Instant> = None;
            let mut received = 0u64;
            while left > 0 && first.is_none_or(|t| t.elapsed() < PROBE_TIME) {
                let deadline = PROBE_TIME.saturating_sub(first.map_or(Duration::ZERO, |t| t.elapsed()));
                match tokio::time::timeout(
                    deadline.max(Duration::from_millis(10)),
                    recv.read_chunk(left, true),
                )
                .await
                {
                    Ok(Ok(Some(chunk))) => {
                        first.get_or_insert_with(Instant::now);
                        left -= chunk.bytes.len();
                        received += chunk.bytes.len() as u64;
                    }
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(error)) => return Err(error.into()),
                }
            }
            let _ = recv.stop(0u32.into());
            let micros = first.map_or(0, |t| t.elapsed().as_micros() as u64);
            write_frame(
                send,
                &Response::ProbeReceived {
                    bytes: received,
                    micros,
                },
            )
            .await
        }
        Request::DialBack => {
            let reachable = dial_back(peer, network).await;
            write_frame(send, &Response::DialBack { reachable }).await
        }
        _ => Ok(()),
    }
}

/// Tries to reach `peer` from a fresh port, as a stranger would (in a
/// private network, a stranger that holds the key: a network run on an
/// allow-list alone admits no fresh key, so its nodes read as unreachable).
pub(crate) async fn dial_back(peer: PeerAddr, network: Option<canopy_common::net::Network>) -> bool {
    let bind: SocketAddr = match peer.addr {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("valid"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("valid"),
    };
    let Ok(key) = NodeKey::generate() else {
        return false;
    };
    let Ok(stranger) = Endpoint::bind_in(key, bind, &EndpointConfig::default(), network) else {
        return false;
    };
    let reached = matches!(
        tokio::time::timeout(Duration::from_secs(3), stranger.connect(&peer)).await,
        Ok(Ok(_))
    );
    stranger.shutdown().await;
    reached
}

/// The machine, from sysinfo. Bandwidth and reachability are left for
/// [`measure`].
pub fn machine() -> Profile {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let (memory_total, memory_available) = match sysinfo::System::new() {
        Ok(mut system) => {
            system.refresh_memory();
            (system.total_memory(), system.available_memory())
        }
        Err(_) => (0, 0),
    };
    Profile {
        cores,
        memory_total,
        memory_available,
        uptime: sysinfo::System::uptime()
            .map(Duration::from_secs)
            .unwrap_or_default(),
        os: sysinfo::System::long_os_version()
            .or_else(|_| sysinfo::System::name())
            .unwrap_or_else(|_| std::env::consts::OS.to_string()),
        upload: None,
        download: None,
        reachable: None,
    }
}

/// What the probes found.
#[derive(Debug, Default)]
pub struct Measured {
    pub upload: Option<u64>,
    pub download: Option<u64>,
    pub reachable: Option<bool>,
    pub hints: NetworkHints,
    /// Where the peers probed saw our packets come from.
    pub observations: canopy_common::proto::nat::Observations,
    /// The port our router forwards to us, or why there is none (`None`:
    /// not asked: we have a global address).
    pub mapping: Option<Result<crate::portmap::Mapping, crate::portmap::PortmapError>>,
    /// Per peer: who, and what it measured or what went wrong.
    pub peers: Vec<(PeerAddr, PeerProbe)>,
}

/// Upload and download rates measured with one peer, or why not.
pub type PeerProbe = Result<(u64, u64), ProbeError>;

/// Why probing one peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect: {0}")]
    Connect(#[source] NetError),
    #[error("cannot open a stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("the probe stream broke: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("cannot finish the request: {0}")]
    Finish(#[from] quinn::ClosedStream),
    #[error("busy with another probe")]
    Busy,
    #[error("no probe bytes arrived")]
    NothingArrived,
    #[error("unexpected answer {0:?}")]
    Unexpected(Box<Response>),
    #[error("timed out")]
    TimedOut,
}

/// Probes up to three of `peers`: bandwidth both ways, reachability, and
/// (from supernodes) how much room the network has. Our own upload goes
/// through `limiter`, as all our uploads do.
pub async fn measure(endpoint: &Endpoint, peers: &[PeerAddr], limiter: Option<&RateLimiter>) -> Measured {
    let mut measured = Measured::default();
    let mut uploads = Vec::new();
    let mut downloads = Vec::new();
    for peer in peers.iter().take(3) {
        let outcome = tokio::time::timeout(
            PROBE_TIMEOUT * 3,
            probe_one(endpoint, peer, limiter, &mut measured),
        )
        .await;
        let outcome = outcome.unwrap_or(Err(ProbeError::TimedOut));
        if outcome.is_err() && measured.peers.iter().all(|(known, _)| known.id != peer.id) {
            measured.hints.silent += 1;
        }
        if let Ok((up, down)) = outcome {
            uploads.push(up);
            downloads.push(down);
        }
        measured.peers.push((*peer, outcome));
    }
    // The best link we found is what we can offer.
    measured.upload = uploads.into_iter().max();
    measured.download = downloads.into_iter().max();
    measured
}

async fn probe_one(
    endpoint: &Endpoint,
    peer: &PeerAddr,
    limiter: Option<&RateLimiter>,
    measured: &mut Measured,
) -> Result<(u64, u64), ProbeError> {
    let connection = endpoint.connect(peer).await.map_err(ProbeError::Connect)?;
    let ask = |request: Request| {
        let connection = connection.clone();
        async move {
            let (mut send, recv) = connection.open_bi().await?;
            write_frame(&mut send, &request).await?;
            Ok::<_, ProbeError>((send, recv))
        }
    };

    // Status first: cheap, and tells us what the network needs.
    let (mut send, mut recv) = ask(Request::Status).await?;
    send.finish()?;
    if let Ok(Response::Status {
        supernode: true,
        leaves,
        max_leaves,
        ..
    }) = read_frame(&mut recv, MAX_CONTROL_FRAME).await
    {
        measured.hints.supernodes += 1;
        measured.hints.total_slots += u64::from(max_leaves);
        measured.hints.free_slots += u64::from(max_leaves.saturating_sub(leaves));
    }

    // Where this peer sees us: with two peers, what our router does. A
    // node from before `Observe` resets the stream; that costs nothing.
    let (mut send, mut recv) = ask(Request::Observe).await?;
    send.finish()?;
    if let Ok(Response::Observed { addr }) = read_frame(&mut recv, MAX_CONTROL_FRAME).await {
        measured
            .observations
            .add(observation(&connection, endpoint, addr));
    }

    // Reachability, once, while the link is idle (a handshake queued behind
    // probe bytes on a slow link could miss its deadline): a stranger's
    // port dials our address.
    if measured.reachable.is_none() {
        let (mut send, mut recv) = ask(Request::DialBack).await?;
        send.finish()?;
        if let Ok(Response::DialBack { reachable }) = read_frame(&mut recv, MAX_CONTROL_FRAME).await {
            measured.reachable = Some(reachable);
        }
    }

    // Download: the peer sends, we time it.
    let started = Instant::now();
    let (mut send, mut recv) = ask(Request::ProbeDown { bytes: PROBE_BYTES }).await?;
    send.finish()?;
    match read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME).await? {
        Response::ProbeData => {}
        Response::Busy { .. } => return Err(ProbeError::Busy),
        other => return Err(ProbeError::Unexpected(Box::new(other))),
    }
    let mut received = 0usize;
    while started.elapsed() < PROBE_TIME {
        match recv.read_chunk(usize::MAX, true).await? {
            Some(chunk) => received += chunk.bytes.len(),
            None => break,
        }
    }
    let download = (received as f64 / started.elapsed().as_secs_f64()) as u64;
    let _ = recv.stop(0u32.into());

    // Upload: we send until the peer, which times what arrives, answers.
    let (mut send, mut recv) = ask(Request::ProbeUp { bytes: PROBE_BYTES }).await?;
    let sending = async {
        let chunk = Bytes::from(vec![0u8; 64 << 10]);
        let mut left = PROBE_BYTES as usize;
        while left > 0 {
            let piece = chunk.slice(..left.min(chunk.len()));
            if let Some(limiter) = limiter {
                limiter.acquire(piece.len()).await;
            }
            left -= piece.len();
            if send.write_chunk(piece).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
        // Keep the stream open until the answer has come.
        std::future::pending::<()>().await;
    };
    let answer = tokio::select! {
        answer = read_frame::<Response>(&mut recv, MAX_CONTROL_FRAME) => answer?,
        _ = sending => unreachable!("the sender waits for the answer"),
    };
    let upload = match answer {
        Response::ProbeReceived { bytes, micros } if micros > 0 => {
            (bytes as f64 * 1e6 / micros as f64) as u64
        }
        Response::ProbeReceived { .. } => return Err(ProbeError::NothingArrived),
        Response::Busy { .. } => return Err(ProbeError::Busy),
        other => return Err(ProbeError::Unexpected(Box::new(other))),
    };

    connection.close(0u32.into(), b"probed");
    Ok((upload, download))
}

/// A supernode's `(leaves, max_leaves)`, or `None` if it is none or silent.
pub async fn status(endpoint: &Endpoint, peer: &PeerAddr) -> Option<(u32, u32)> {
    let ask = async {
        let connection = endpoint.connect(peer).await.ok()?;
        let answer = canopy_common::net::ask(&connection, &Request::Status).await.ok();
        connection.close(0u32.into(), b"done");
        match answer? {
            Response::Status {
                supernode: true,
                leaves,
                max_leaves,
                ..
            } => Some((leaves, max_leaves)),
            _ => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
}
/// Measures this machine and its links from `listen` (the address the
/// node will use, so reachability is tested where it matters), and decides
/// its role. In a private network (`network`), the peers probed are
/// members and the probes prove membership like any connection.
pub async fn elect(
    data_dir: &std::path::Path,
    listen: SocketAddr,
    peers: &[PeerAddr],
    max_upload_rate: Option<u64>,
    thresholds: &canopy_common::proto::election::Thresholds,
    never_supernode: bool,
    network: Option<canopy_common::net::Network>,
) -> Result<
    (
        Profile,
        Measured,
        canopy_common::proto::election::Decision,
        SocketAddr,
    ),
    ElectError,
> {
    let key = NodeKey::load_or_create(data_dir).map_err(ElectError::Key)?;
    let endpoint =
        Endpoint::bind_in(key, listen, &EndpointConfig::default(), network).map_err(ElectError::Bind)?;
    // Keep the port that was picked, so the node itself gets the same one.
    let bound = endpoint.local_addr();
    // Complete the handshakes of peers dialing back to test reachability.
    let answering = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        if endpoint.admit(&connection).await.is_ok() {
                            let _ = connection.closed().await;
                        }
                    }
                });
            }
        })
    };
    // Behind a router, ask it to forward our port first, so the dial-back
    // tests the mapping.
    let mapping = match canopy_common::proto::nat::is_global(bound.ip()) {
        true => None,
        false => Some(crate::portmap::map(bound.port()).await),
    };
    if let Some(Ok(mapping)) = &mapping {
        tracing::info!(external = %mapping.external, "the router forwards our port");
    }
    let limiter = max_upload_rate.map(RateLimiter::new);
    let mut measured = measure(&endpoint, peers, limiter.as_ref()).await;
    measured.mapping = mapping;
    answering.abort();
    endpoint.shutdown().await;
    drop(endpoint);
    let mut profile = machine();
    profile.upload = measured.upload;
    profile.download = measured.download;
    profile.reachable = measured.reachable;
    let decision =
        canopy_common::proto::election::decide(&profile, &measured.hints, thresholds, never_supernode);
    Ok((profile, measured, decision, bound))
}

/// A peer's report of where our packets come from (`seen`), over
/// `connection` from `endpoint`.
pub fn observation(connection: &quinn::Connection, endpoint: &Endpoint, seen: SocketAddr) -> Observation {
    let bound = endpoint.local_addr();
    let remote = canopy_common::net::remote_addr(connection);
    // quinn knows the local IP of accepted connections only; for ours, the
    // bound IP, or the one the kernel picks towards the peer.
    let ip = canopy_common::net::local_ip(connection)
        .or_else(|| Some(bound.ip()).filter(|ip| !ip.is_unspecified()))
        .or_else(|| source_ip_towards(remote))
        .unwrap_or(bound.ip());
    Observation {
        observer: remote.ip(),
        seen,
        local: SocketAddr::new(ip, bound.port()),
    }
}

/// The source IP the kernel would use to send to `remote` (a connected
/// UDP socket sends nothing until asked to).
pub(crate) fn source_ip_towards(remote: SocketAddr) -> Option<std::net::IpAddr> {
    let any: SocketAddr = match remote {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(remote).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Why the election could not measure.
#[derive(Debug, thiserror::Error)]
pub enum ElectError {
    #[error("cannot load the node's key")]
    Key(#[source] NetError),
    #[error("cannot open the node's UDP port")]
    Bind(#[source] NetError),
}
