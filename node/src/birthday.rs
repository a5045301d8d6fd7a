//! The two sides of a birthday punch (`canopy_common::proto::birthday`
//! says why it works): the easy side sprays probes at random ports of the
//! hard side's IP; the hard side holds many ports open towards the easy
//! side and dials from the one a probe reaches. Used by downloaders and by
//! leaves alike: which side is which depends only on the routers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use canopy_common::net::{random_bytes, Endpoint, PUNCH_PAYLOAD};
use canopy_common::proto::birthday::{probe_ports, HARD_PORTS};
use canopy_common::proto::PeerAddr;
use tokio::net::UdpSocket;

/// How long the hard side keeps its ports open for a probe: the easy
/// side's two rounds, and slack for slow links.
pub const HARD_WAIT: Duration = Duration::from_secs(4);
/// The hard side sends again from every port this often: a first packet
/// lost, or dropped by a router that was not ready, is not the end.
const HARD_RESEND: Duration = Duration::from_millis(500);
/// Probes go out in bursts of 32 every 8 ms: 1,024 in about a quarter of
/// a second, gentle on the routers' connection tables.
const BURST: usize = 32;
const BURST_GAP: Duration = Duration::from_millis(8);
/// A second round, on other ports, in case the first began before the
/// hard side's ports were open.
const ROUNDS: usize = 2;
const ROUND_GAP: Duration = Duration::from_millis(600);

/// The easy side: probes from our listening port to random ports of
/// `hard`, two rounds. The hard side dials us; our endpoint takes the call.
pub async fn spray(endpoint: &Endpoint, hard: IpAddr) {
    for round in 0..ROUNDS {
        if round > 0 {
            tokio::time::sleep(ROUND_GAP).await;
        }
        for burst in probe_ports(u64::from_le_bytes(random_bytes())).chunks(BURST) {
            for &port in burst {
                if let Err(error) = endpoint.punch(SocketAddr::new(hard, port)) {
                    tracing::debug!(%error, "birthday probe not sent");
                }
            }
            tokio::time::sleep(BURST_GAP).await;
        }
    }
}

/// The hard side: opens [`HARD_PORTS`] sockets towards `easy`, and when a
/// probe from the easy side's IP reaches one, dials `easy` from it (at
/// the address the probe came from). `None` if none is reached within
/// [`HARD_WAIT`] or the dial fails.
pub async fn open_and_dial(endpoint: &Endpoint, easy: PeerAddr) -> Option<quinn::Connection> {
    let (socket, from) = match tokio::time::timeout(HARD_WAIT, open(easy.addr)).await {
        Ok(Ok(Some(reached))) => reached,
        Ok(Ok(None)) | Err(_) => {
            tracing::debug!(easy = ?easy, "no birthday probe reached us");
            return None;
        }
        Ok(Err(error)) => {
            tracing::info!(%error, "cannot open ports for a birthday punch");
            return None;
        }
    };
    tracing::debug!(from = %from, port = ?socket.local_addr().ok(), "a birthday probe reached us");
    match endpoint.connect_from(socket, &PeerAddr::new(easy.id, from)).await {
        Ok(connection) => Some(connection),
        Err(error) => {
            tracing::info!(easy = ?easy, %error, "a birthday punch found a port, but the dial failed");
            None
        }
    }
}

/// Opens the ports and waits for the first probe: the socket it reached,
/// and where it came from.
async fn open(easy: SocketAddr) -> std::io::Result<Option<(std::net::UdpSocket, SocketAddr)>> {
    let any: IpAddr = match easy {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..HARD_PORTS {
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
        waiting.spawn(async move {
            let mut buffer = [0u8; 64];
            loop {
                if let Err(error) = socket.send_to(PUNCH_PAYLOAD, easy).await {
                    tracing::debug!(%error, "birthday opening packet not sent");
                }
                let heard = tokio::time::timeout(HARD_RESEND, socket.recv_from(&mut buffer)).await;
                if let Ok(Ok((len, from))) = heard {
                    // Only the easy side's probes count: anyone else's
                    // packet is no way through to it.
                    if from.ip() == easy.ip() && &buffer[..len] == PUNCH_PAYLOAD {
                        return socket.into_std().map(|socket| (socket, from));
                    }
                }
            }
        });
    }
    // Dropping the set closes every other port.
    while let Some(finished) = waiting.join_next().await {
        if let Ok(reached) = finished {
            return reached.map(Some);
        }
    }
    Ok(None)
}

/// Birthday punches a leaf takes part in at once, at most.
const MAX_RUNNING: usize = 2;
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One running birthday punch, counted until dropped.
pub struct Running(());

impl Running {
    /// `None` if two are running already.
    pub fn start() -> Option<Running> {
        use std::sync::atomic::Ordering;
        RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < MAX_RUNNING).then_some(running + 1)
            })
            .ok()
            .map(|_| Running(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
