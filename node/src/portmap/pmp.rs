//! PCP, and NAT-PMP when the gateway speaks only that: UDP exchanges with
//! the gateway's port 5351 (the messages are
//! `canopy_common::proto::portmap::{pcp, natpmp}`'s).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use canopy_common::proto::portmap::{natpmp, pcp};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::{Mapping, Via};

/// Requests are sent again after 250 ms, then 500 ms (RFC 6886's pace).
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Why PCP and NAT-PMP gave no mapping.
#[derive(Debug, thiserror::Error)]
pub enum PmpError {
    #[error("no answer within {0:?}")]
    Silent(Duration),
    #[error("nothing listens on port {0}")]
    Unspoken(u16),
    #[error("PCP: {0}")]
    Pcp(pcp::AnswerError),
    #[error("NAT-PMP: {0}")]
    NatPmp(natpmp::AnswerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Maps UDP `internal_port` of `client` (our address towards the
/// gateway) by PCP, falling back to NAT-PMP, all within `within`.
/// `previous` renews that mapping (same nonce, same outside port).
pub async fn map(
    gateway: SocketAddrV4,
    client: Ipv4Addr,
    internal_port: u16,
    lifetime: Duration,
    previous: Option<&Mapping>,
    within: Duration,
) -> Result<Mapping, PmpError> {
    let deadline = Instant::now() + within;
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    socket.connect(gateway).await?;
    let mapping = |external, lifetime, via| Mapping {
        external,
        internal_port,
        client,
        lifetime,
        gateway: *gateway.ip(),
        via,
    };
    if !matches!(previous.map(|m| &m.via), Some(Via::NatPmp)) {
        let nonce = match previous.map(|m| &m.via) {
            Some(Via::Pcp { nonce }) => *nonce,
            _ => canopy_common::net::random_bytes(),
        };
        let suggested = previous.map(|m| m.external);
        let request = pcp::map_request(client, internal_port, suggested, lifetime, &nonce);
        let answer =
            exchange(
                &socket,
                &[&request],
                deadline,
                gateway.port(),
                |bytes| match pcp::parse_map_answer(bytes, &nonce) {
                    Err(pcp::AnswerError::NotOurs) => None,
                    answer => Some(answer),
                },
            )
            .await?;
        match answer {
            Ok(mapped) => return Ok(mapping(mapped.external, mapped.lifetime, Via::Pcp { nonce })),
            Err(pcp::AnswerError::SpeaksNatPmp) => {
                tracing::debug!(%gateway, "the gateway speaks NAT-PMP, not PCP")
            }
            Err(error) => return Err(PmpError::Pcp(error)),
        }
    }
    // NAT-PMP: two requests, for the outside address and for the port;
    // done when both are answered.
    let asking = natpmp::map_request(internal_port, internal_port, lifetime);
    let requests: [&[u8]; 2] = [&natpmp::external_address_request(), &asking];
    let (mut address, mut mapped) = (None, None);
    let (ip, (port, lifetime)) = exchange(&socket, &requests, deadline, gateway.port(), |bytes| {
        match natpmp::parse_answer(bytes) {
            Ok(natpmp::Answer::ExternalAddress(ip)) => address = Some(ip),
            Ok(natpmp::Answer::Mapped {
                internal,
                external,
                lifetime,
            }) if internal == internal_port => mapped = Some((external, lifetime)),
            Ok(natpmp::Answer::Mapped { .. }) => {}
            Err(error) => return Some(Err(error)),
        }
        address.zip(mapped).map(Ok)
    })
    .await?
    .map_err(PmpError::NatPmp)?;
    Ok(mapping(SocketAddrV4::new(ip, port), lifetime, Via::NatPmp))
}

/// Sends `requests` at RFC 6886's pace until `judge` makes something of
/// an answer (`None`: not yet, keep listening) or `deadline` passes.
async fn exchange<T>(
    socket: &UdpSocket,
    requests: &[&[u8]],
    deadline: Instant,
    port: u16,
    mut judge: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, PmpError> {
    let started = Instant::now();
    let mut retry = FIRST_RETRY;
    let mut buffer = [0u8; pcp::MAX_MESSAGE];
    'sending: loop {
        for request in requests {
            socket.send(request).await?;
        }
        let resend = Instant::now() + retry;
        retry *= 2;
        loop {
            let until = resend.min(deadline);
            let len = match tokio::time::timeout_at(until, socket.recv(&mut buffer)).await {
                Err(_) if until == deadline => return Err(PmpError::Silent(deadline - started)),
                Err(_) => continue 'sending,
                // An ICMP "port unreachable" for an earlier request.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(PmpError::Unspoken(port))
                }
                Ok(Err(error)) => return Err(error.into()),
                Ok(Ok(len)) => len,
            };
            if let Some(judged) = judge(&buffer[..len]) {
                return Ok(judged);
            }
        }
    }
}
