//! A forwarded port on the home router, asked for over NAT-PMP (the
//! messages are `canopy_common::proto::portmap`'s). With it, a node behind
//! a router is dialed like a public one and may serve as a supernode.
//!
//! Nothing waits long on it: a gateway that does not answer within a
//! second (most home routers that speak only UPnP-IGD), or a machine with
//! no default gateway, just means no mapping. A mapping is renewed at
//! half its lifetime and deleted when the node stops; if the node is
//! killed, the router drops it when the lifetime runs out.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use canopy_common::proto::portmap::{
    external_address_request, map_request, parse_answer, Answer, AnswerError, LIFETIME, NATPMP_PORT,
};
use tokio::net::UdpSocket;

/// How long the gateway has to answer, in all. RFC 6886 retries from
/// 250 ms up for a minute; a node starting up cannot wait that long, and a
/// gateway on the LAN answers within milliseconds.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Requests are sent again after 250 ms, then 500 ms (RFC 6886's pace).
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// A port the router forwards to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Where peers reach us: the router's external address and port.
    pub external: SocketAddrV4,
    pub internal_port: u16,
    pub lifetime: Duration,
    pub gateway: Ipv4Addr,
}

/// Why there is no mapping.
#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    #[error("no default gateway (not behind a home router)")]
    NoGateway,
    #[error("the gateway {0} did not answer NAT-PMP within {ANSWER_WITHIN:?}")]
    Silent(Ipv4Addr),
    #[error("the gateway {0} does not speak NAT-PMP")]
    Unspoken(Ipv4Addr),
    #[error("the gateway {gateway}: {error}")]
    Answer { gateway: Ipv4Addr, error: AnswerError },
    #[error("cannot ask the gateway: {0}")]
    Io(#[from] std::io::Error),
}

/// The IPv4 default gateway from the kernel's routing table (Linux;
/// elsewhere `None`).
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    gateway_in(&table)
}

/// The default route's gateway in `/proc/net/route`'s text: destination
/// `00000000`, the gateway in hex, in the machine's byte order.
fn gateway_in(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway) = (fields.get(1)?, fields.get(2)?);
        if *destination != "00000000" {
            return None;
        }
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        // The kernel printed the address's bytes read as a native u32.
        let ip = Ipv4Addr::from(raw.to_ne_bytes());
        (!ip.is_unspecified()).then_some(ip)
    })
}

/// Asks the default gateway to forward UDP `internal_port` (the same port
/// outside, if it can).
pub async fn map(internal_port: u16) -> Result<Mapping, PortmapError> {
    let gateway = default_gateway().ok_or(PortmapError::NoGateway)?;
    request(gateway, internal_port, LIFETIME).await
}

/// One exchange with `gateway`: the external address and the mapping
/// (`lifetime` zero deletes it).
async fn request(gateway: Ipv4Addr, internal_port: u16, lifetime: Duration) -> Result<Mapping, PortmapError> {
    request_at(gateway, NATPMP_PORT, internal_port, lifetime).await
}

/// [`request`] to a gateway listening on `port` (tests use another).
async fn request_at(
    gateway: Ipv4Addr,
    port: u16,
    internal_port: u16,
    lifetime: Duration,
) -> Result<Mapping, PortmapError> {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    socket.connect((gateway, port)).await?;
    let asking = map_request(internal_port, internal_port, lifetime);
    let (mut address, mut mapped) = (None, None);
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let mut retry = FIRST_RETRY;
    let mut buffer = [0u8; 64];
    'sending: loop {
        if address.is_none() {
            socket.send(&external_address_request()).await?;
        }
        if mapped.is_none() {
            socket.send(&asking).await?;
        }
        let resend = tokio::time::Instant::now() + retry;
        retry *= 2;
        loop {
            let until = resend.min(deadline);
            let len = match tokio::time::timeout_at(until, socket.recv(&mut buffer)).await {
                Err(_) if until == deadline => return Err(PortmapError::Silent(gateway)),
                Err(_) => continue 'sending,
                // An ICMP "port unreachable" for an earlier request.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(PortmapError::Unspoken(gateway))
                }
                Ok(Err(error)) => return Err(error.into()),
                Ok(Ok(len)) => len,
            };
            match parse_answer(&buffer[..len]) {
                Ok(Answer::ExternalAddress(ip)) => address = Some(ip),
                Ok(Answer::Mapped {
                    internal,
                    external,
                    lifetime,
                }) if internal == internal_port => mapped = Some((external, lifetime)),
                Ok(Answer::Mapped { .. }) => {}
                Err(error) => return Err(PortmapError::Answer { gateway, error }),
            }
            if let (Some(ip), Some((port, lifetime))) = (address, mapped) {
                return Ok(Mapping {
                    external: SocketAddrV4::new(ip, port),
                    internal_port,
                    lifetime,
                    gateway,
                });
            }
        }
    }
}

/// A mapping kept alive: renewed at half its lifetime until released.
pub struct Kept {
    renewing: tokio::task::JoinHandle<()>,
    mapping: Mapping,
}

impl Kept {
    pub fn new(mapping: Mapping) -> Self {
        let renewing = tokio::spawn(async move {
            let mut lifetime = mapping.lifetime;
            loop {
                tokio::time::sleep((lifetime / 2).max(Duration::from_secs(30))).await;
                match request(mapping.gateway, mapping.internal_port, LIFETIME).await {
                    Ok(renewed) => {
                        if renewed.external != mapping.external {
                            tracing::warn!(was = %mapping.external, now = %renewed.external, "the router moved our forwarded port");
                        }
                        lifetime = renewed.lifetime;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not renew the forwarded port; trying again in a minute");
                        lifetime = Duration::from_secs(120);
                    }
                }
            }
        });
        Kept { renewing, mapping }
    }

    pub fn mapping(&self) -> Mapping {
        self.mapping
    }

    /// Stops renewing and asks the router to delete the mapping.
    pub async fn release(self) {
        self.renewing.abort();
        let m = self.mapping;
        match request(m.gateway, m.internal_port, Duration::ZERO).await {
            Ok(_) => tracing::info!(external = %m.external, "forwarded port released"),
            Err(error) => tracing::debug!(%error, "could not release the forwarded port"),
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.renewing.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_gateway_is_read_from_the_routing_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        // 0101A8C0 is 192.168.1.1 in a little-endian machine's order.
        if cfg!(target_endian = "little") {
            assert_eq!(gateway_in(table), Some(Ipv4Addr::new(192, 168, 1, 1)));
        }
        assert_eq!(
            gateway_in("Iface\tDestination\tGateway\n"),
            None,
            "no default route"
        );
    }

    /// A gateway on loopback that answers like miniupnpd, and one that is
    /// not there at all.
    #[tokio::test]
    async fn a_mapping_needs_both_answers_and_a_silent_gateway_costs_a_second() {
        let gateway = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = gateway.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            loop {
                let (len, from) = gateway.recv_from(&mut buffer).await.unwrap();
                let answer: Vec<u8> = match &buffer[..len] {
                    [0, 0] => vec![0, 128, 0, 0, 0, 0, 0, 1, 10, 77, 0, 11],
                    [0, 1, 0, 0, a, b, ..] => {
                        vec![0, 129, 0, 0, 0, 0, 0, 1, *a, *b, *a, *b, 0, 0, 0x1c, 0x20]
                    }
                    _ => continue,
                };
                gateway.send_to(&answer, from).await.unwrap();
            }
        });
        let mapping = request_at(Ipv4Addr::LOCALHOST, port, 4663, LIFETIME)
            .await
            .unwrap();
        assert_eq!(mapping.external, "10.77.0.11:4663".parse().unwrap());
        assert_eq!(mapping.lifetime, LIFETIME);

        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        let error = request_at(
            Ipv4Addr::LOCALHOST,
            silent.local_addr().unwrap().port(),
            4663,
            LIFETIME,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, PortmapError::Silent(_)), "{error}");
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
}
