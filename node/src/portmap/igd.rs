//! UPnP-IGD: find the router's port-mapping service (an SSDP search, then
//! its description over HTTP) and call it (SOAP over HTTP). The messages
//! and their parsing are `canopy_common::proto::portmap::upnp`'s; here the
//! sockets and the time limits.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use canopy_common::proto::portmap::upnp::{
    self, find_service, get_request, location, parse_response, soap_outcome, soap_request, Action, Response,
    Service, UpnpError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::{Mapping, Via};

/// How long a router has to answer the search: the `MX` we send, plus
/// the LAN's round trip.
const SEARCH_WITHIN: Duration = Duration::from_millis(1200);
/// How long one HTTP exchange with the router may take.
const HTTP_WITHIN: Duration = Duration::from_secs(2);
/// How many other outside ports we try when ours is taken (another
/// machine of the home runs Canopy too).
const OTHER_PORTS: usize = 3;

/// Why UPnP-IGD gave no mapping.
#[derive(Debug, thiserror::Error)]
pub enum IgdError {
    #[error("no answer to the search within {SEARCH_WITHIN:?}")]
    Silent,
    #[error("{0}")]
    Router(#[from] UpnpError),
    #[error("{what}: no answer within {HTTP_WITHIN:?}")]
    Slow { what: &'static str },
    #[error("{what}: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
}

/// Finds `gateway`'s port-mapping service. Only the gateway's own answers
/// count, naming a description on the gateway itself: a stranger on the
/// LAN cannot point us elsewhere. `ssdp_port` is 1900 but in tests.
pub async fn discover(gateway: Ipv4Addr, ssdp_port: u16) -> Result<Service, IgdError> {
    let io = |what| move |error| IgdError::Io { what, error };
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .await
        .map_err(io("searching"))?;
    let search = upnp::search_request();
    // To the multicast group, as UPnP says, and to the gateway directly:
    // miniupnpd and most routers answer both, and a machine with no
    // multicast route still finds its router.
    let _ = socket.send_to(&search, upnp::SSDP).await;
    socket
        .send_to(&search, (gateway, ssdp_port))
        .await
        .map_err(io("searching"))?;
    let deadline = Instant::now() + SEARCH_WITHIN;
    let mut buffer = vec![0u8; 2048];
    let description_at = loop {
        let (len, from) = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await {
            Err(_) => return Err(IgdError::Silent),
            Ok(Err(error)) => {
                return Err(IgdError::Io {
                    what: "searching",
                    error,
                })
            }
            Ok(Ok(answer)) => answer,
        };
        if from.ip() != gateway {
            continue;
        }
        match location(&buffer[..len]) {
            Ok(url) if *url.host.ip() == gateway => break url,
            Ok(url) => tracing::debug!(%url, "the gateway's search answer points elsewhere"),
            Err(error) => tracing::debug!(%error, "a search answer without a description"),
        }
    };
    let description = http(
        &description_at,
        &get_request(&description_at),
        "fetching the description",
    )
    .await?;
    if description.status != 200 {
        return Err(UpnpError::Status(description.status).into());
    }
    Ok(find_service(
        &String::from_utf8_lossy(&description.body),
        &description_at,
    )?)
}

/// Maps UDP `internal_port` of `client` for `lifetime` through `service`,
/// then asks the outside address. `previous` renews that mapping.
pub async fn map(
    service: &Service,
    client: Ipv4Addr,
    internal_port: u16,
    lifetime: Duration,
    previous: Option<&Mapping>,
) -> Result<Mapping, IgdError> {
    let mut external_port = previous.map_or(internal_port, |m| m.external.port());
    let mut lease = lifetime;
    let mut tries = 0;
    loop {
        let adding = Action::AddPortMapping {
            external_port,
            internal_port,
            client,
            lease,
        };
        match call(service, adding).await {
            Ok(_) => break,
            Err(IgdError::Router(UpnpError::Fault { code, .. }))
                if code == upnp::CONFLICT_IN_MAPPING_ENTRY && tries < OTHER_PORTS && previous.is_none() =>
            {
                tries += 1;
                external_port = other_port(internal_port, tries);
            }
            // Old routers take only permanent mappings; we still delete
            // ours when the node stops.
            Err(IgdError::Router(UpnpError::Fault { code, .. }))
                if code == upnp::ONLY_PERMANENT_LEASES_SUPPORTED && !lease.is_zero() =>
            {
                lease = Duration::ZERO;
            }
            Err(error) => return Err(error),
        }
    }
    let ip = upnp::external_ip(&call(service, Action::GetExternalIpAddress).await?)?;
    Ok(Mapping {
        external: SocketAddrV4::new(ip, external_port),
        internal_port,
        client,
        // A permanent mapping is still renewed now and then, in case the
        // router restarted and forgot it.
        lifetime: if lease.is_zero() { lifetime } else { lease },
        gateway: *service.control.host.ip(),
        via: Via::Upnp {
            service: service.clone(),
        },
    })
}

/// A port above 1024 derived from ours, different for each try.
fn other_port(internal_port: u16, attempt: usize) -> u16 {
    let spread = u32::from(internal_port) + 7919 * attempt as u32;
    (1024 + spread % (65536 - 1024)) as u16
}

/// Deletes `mapping`.
pub async fn release(mapping: &Mapping, service: &Service) -> Result<(), IgdError> {
    call(
        service,
        Action::DeletePortMapping {
            external_port: mapping.external.port(),
        },
    )
    .await
    .map(drop)
}

/// One SOAP call: the answer's body, or the router's fault.
async fn call(service: &Service, action: Action) -> Result<String, IgdError> {
    let response = http(
        &service.control,
        &soap_request(service, action),
        "calling the router",
    )
    .await?;
    Ok(soap_outcome(&response)?)
}

/// One HTTP exchange with the router: `request` to `url`'s host, the
/// answer read whole (bounded by `upnp::MAX_RESPONSE`) within
/// [`HTTP_WITHIN`].
async fn http(url: &upnp::Url, request: &[u8], what: &'static str) -> Result<Response, IgdError> {
    let exchange = async {
        let mut stream = TcpStream::connect(url.host)
            .await
            .map_err(|error| IgdError::Io { what, error })?;
        stream
            .write_all(request)
            .await
            .map_err(|error| IgdError::Io { what, error })?;
        let mut received = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let len = stream
                .read(&mut buffer)
                .await
                .map_err(|error| IgdError::Io { what, error })?;
            received.extend_from_slice(&buffer[..len]);
            if let Some(response) = parse_response(&received, len == 0)? {
                return Ok(response);
            }
        }
    };
    tokio::time::timeout(HTTP_WITHIN, exchange)
        .await
        .map_err(|_| IgdError::Slow { what })?
}
