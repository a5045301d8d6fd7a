//! Relaying for pairs of peers that cannot reach each other (both behind
//! routers that give every peer a new port): one UDP port per pair,
//! forwarding datagrams byte for byte between the two. The rules for each
//! datagram are `canopy_common::proto::relay`'s; this is the IO and the
//! volunteer's caps: how many pairs, how many bytes each, how fast in all.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_common::net::random_bytes;
use canopy_common::proto::budget::TokenBucket;
use canopy_common::proto::relay::{Dropped, RelayPair, Token, Verdict};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

/// What a supernode's volunteer allows its relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Whether this supernode relays at all.
    pub enabled: bool,
    /// Pairs relayed at once; more are refused with the reason.
    pub max_pairs: usize,
    /// Bytes one pair may move through the relay, both ways together.
    pub max_bytes_per_pair: u64,
    /// Relayed bytes per second over all pairs (`None`: as fast as they
    /// go), shared evenly among the pairs.
    pub max_rate: Option<u64>,
    /// A pair with no datagram for this long is closed.
    pub idle: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            max_pairs: 64,
            // A film or two: relaying is the last resort, not a CDN.
            max_bytes_per_pair: 2 << 30,
            max_rate: None,
            // QUIC pings every second on a live connection (ours keep
            // alive at 1 s); 30 s of silence is a pair that has ended.
            idle: Duration::from_secs(30),
        }
    }
}

/// The asker has this long to send its first bind packet.
const BIND_WAIT: Duration = Duration::from_secs(5);
/// The largest datagram forwarded (QUIC sends at most ~1,500).
const MAX_DATAGRAM: usize = 2048;

/// What the relay has done, for metrics.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Pairs open now.
    pub open: AtomicUsize,
    pub opened: AtomicU64,
    pub refused: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped: AtomicU64,
}

/// A pair's port, open and waiting for the asker's bind packets.
#[derive(Debug)]
pub struct Allocation {
    pub port: u16,
    pub token: Token,
    /// Fires at the asker's first valid bind packet: time to have the leaf
    /// dial in.
    pub bound: oneshot::Receiver<()>,
}

/// Why a relay was refused.
#[derive(Debug, thiserror::Error)]
pub enum RelayRefusal {
    #[error("this supernode does not relay")]
    Off,
    #[error("relay full: {0} pairs")]
    Full(usize),
    #[error("cannot open a relay port: {0}")]
    Socket(#[source] std::io::Error),
}

/// The relay of one supernode.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    stats: Arc<RelayStats>,
}

impl Relay {
    pub fn new(config: RelayConfig) -> Self {
        Relay {
            config,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Opens a pair's port on `bind_ip` for the asker at `asker_ip` and
    /// the leaf at `leaf_ip`. It closes by itself: no bind within 5 s, no
    /// datagram for the idle time, or the byte allowance spent.
    pub async fn open(
        &self,
        bind_ip: IpAddr,
        asker_ip: IpAddr,
        leaf_ip: IpAddr,
    ) -> Result<Allocation, RelayRefusal> {
        if !self.config.enabled {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(RelayRefusal::Off);
        }
        let max = self.config.max_pairs;
        let reserved = self
            .stats
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            });
        if reserved.is_err() {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(RelayRefusal::Full(max));
        }
        let slot = PairSlot(self.stats.clone());
        let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0))
            .await
            .map_err(RelayRefusal::Socket)?;
        let port = socket.local_addr().map_err(RelayRefusal::Socket)?.port();
        let token: Token = random_bytes();
        let pair = RelayPair::new(token, asker_ip, leaf_ip, self.config.max_bytes_per_pair);
        let (bound_tx, bound) = oneshot::channel();
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(port, asker = %asker_ip, leaf = %leaf_ip, "relay pair opened");
        tokio::spawn(forward(socket, pair, bound_tx, self.config.clone(), slot));
        Ok(Allocation { port, token, bound })
    }
}

/// A pair's place among the open ones, given back when dropped.
struct PairSlot(Arc<RelayStats>);

impl Drop for PairSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Forwards one pair's datagrams until it ends.
async fn forward(
    socket: UdpSocket,
    mut pair: RelayPair,
    bound_tx: oneshot::Sender<()>,
    config: RelayConfig,
    slot: PairSlot,
) {
    let stats = &slot.0;
    let started = Instant::now();
    let mut bound_tx = Some(bound_tx);
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    // Each pair gets an even share of the relay's rate; the bucket is made
    // anew when the number of pairs changes.
    let mut shared_by = 0usize;
    let mut bucket: Option<TokenBucket> = None;
    let end = loop {
        let wait = match bound_tx {
            Some(_) => BIND_WAIT.saturating_sub(started.elapsed()),
            None => config.idle,
        };
        let (len, from) = match tokio::time::timeout(wait, socket.recv_from(&mut buffer)).await {
            Err(_) if bound_tx.is_some() => break "no bind packet",
            Err(_) => break "idle",
            // An ICMP error from an earlier send (a side went away): the
            // socket is fine.
            Ok(Err(error)) => {
                tracing::debug!(%error, "relay socket error");
                continue;
            }
            Ok(Ok(received)) => received,
        };
        match pair.on_datagram(from, &buffer[..len]) {
            Verdict::Bound { first } => {
                if first {
                    if let Some(tx) = bound_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            Verdict::Forward(to) => {
                if let Some(rate) = config.max_rate {
                    let pairs = stats.open.load(Ordering::Acquire).max(1);
                    if pairs != shared_by || bucket.is_none() {
                        shared_by = pairs;
                        let share = rate as f64 / pairs as f64;
                        // A tenth of a second's worth, at least a few datagrams.
                        bucket = Some(TokenBucket::full(
                            share,
                            (share / 10.0).max(8.0 * 1500.0),
                            started.elapsed(),
                        ));
                    }
                    let allowed = bucket
                        .as_mut()
                        .is_some_and(|b| b.take(len as f64, started.elapsed()));
                    if !allowed {
                        // Dropped, as a full router queue would: QUIC slows down.
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                if socket.send_to(&buffer[..len], to).await.is_ok() {
                    stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
            Verdict::Drop(Dropped::OverAllowance) => break "byte allowance spent",
            Verdict::Drop(_) => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    tracing::info!(
        port = socket.local_addr().map(|a| a.port()).unwrap_or(0),
        forwarded = pair.forwarded(),
        reason = end,
        "relay pair closed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_common::proto::relay::bind_packet;

    async fn udp() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    #[tokio::test]
    async fn a_pair_forwards_after_the_bind_and_frees_its_place_when_idle() {
        let relay = Relay::new(RelayConfig {
            max_pairs: 1,
            idle: Duration::from_millis(300),
            ..Default::default()
        });
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let allocation = relay.open(localhost, localhost, localhost).await.unwrap();
        assert!(
            matches!(
                relay.open(localhost, localhost, localhost).await,
                Err(RelayRefusal::Full(1))
            ),
            "one pair at most"
        );
        let relay_addr = SocketAddr::new(localhost, allocation.port);
        let (asker, leaf) = (udp().await, udp().await);
        asker
            .send_to(&bind_packet(&allocation.token), relay_addr)
            .await
            .unwrap();
        allocation.bound.await.expect("the bind was seen");
        leaf.send_to(b"hello from the leaf, a QUIC packet", relay_addr)
            .await
            .unwrap();
        let mut buffer = [0u8; 64];
        let (len, from) = asker.recv_from(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..len], b"hello from the leaf, a QUIC packet");
        assert_eq!(from, relay_addr, "the asker sees only the relay");
        asker.send_to(b"and back", relay_addr).await.unwrap();
        let (len, _) = leaf.recv_from(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..len], b"and back");
        assert_eq!(relay.stats().bytes.load(Ordering::Relaxed), 42);

        // Silent for the idle time: the pair closes and its place is free.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(relay.stats().open.load(Ordering::Relaxed), 0);
        assert!(relay.open(localhost, localhost, localhost).await.is_ok());
    }

    #[tokio::test]
    async fn a_relay_turned_off_says_so() {
        let relay = Relay::new(RelayConfig {
            enabled: false,
            ..Default::default()
        });
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let refusal = relay.open(localhost, localhost, localhost).await.unwrap_err();
        assert_eq!(refusal.to_string(), "this supernode does not relay");
        assert_eq!(relay.stats().refused.load(Ordering::Relaxed), 1);
    }
}
