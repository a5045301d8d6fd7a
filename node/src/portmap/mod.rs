//! A forwarded port on the home router. With it, a node behind a router
//! is dialed like a public one and may serve as a supernode.
//!
//! The node asks in every way routers understand, at once: PCP (falling
//! back to NAT-PMP) and UPnP-IGD. PCP wins when both answer — one UDP
//! exchange, and its nonce keeps others from touching our mapping — so
//! UPnP only searches while PCP is asked, and maps only if PCP fails:
//! never two mappings of one port.
//!
//! Nothing waits long on it: a gateway that answers nothing costs about a
//! second, a machine with no default gateway nothing at all. A mapping is
//! renewed at half its lifetime and deleted when the node stops; if the
//! node is killed, the router drops it when the lifetime runs out.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use canopy_common::proto::portmap::{pcp, upnp::Service, Protocol, LIFETIME, PCP_PORT};
use canopy_common::sync::Lock;

mod igd;
mod pmp;

pub use igd::IgdError;
pub use pmp::PmpError;

/// How long PCP and NAT-PMP have, in all. RFC 6886 retries from 250 ms up
/// for a minute; a node starting up cannot wait that long, and a gateway
/// on the LAN answers within milliseconds.
const PMP_WITHIN: Duration = Duration::from_secs(1);
/// The standard SSDP port.
const SSDP_PORT: u16 = 1900;

/// A port the router forwards to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Where peers reach us: the router's outside address and port.
    pub external: SocketAddrV4,
    pub internal_port: u16,
    /// Our address on the router's side.
    pub client: Ipv4Addr,
    pub lifetime: Duration,
    pub gateway: Ipv4Addr,
    /// How it was made, so that it is renewed and deleted the same way.
    pub via: Via,
}

/// The protocol a mapping was made with, and what renewing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Pcp { nonce: pcp::Nonce },
    NatPmp,
    Upnp { service: Service },
}

impl Mapping {
    pub fn protocol(&self) -> Protocol {
        match self.via {
            Via::Pcp { .. } => Protocol::Pcp,
            Via::NatPmp => Protocol::NatPmp,
            Via::Upnp { .. } => Protocol::UpnpIgd,
        }
    }
}

/// Why there is no mapping.
#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    #[error("no default gateway (not behind a home router)")]
    NoGateway,
    #[error("the gateway {gateway} maps no port (PCP/NAT-PMP: {pmp}; UPnP-IGD: {igd})")]
    Refused {
        gateway: Ipv4Addr,
        pmp: PmpError,
        igd: IgdError,
    },
    #[error("cannot ask the gateway: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a gateway listens; the standard ports but in tests.
#[derive(Debug, Clone, Copy)]
struct Gateway {
    ip: Ipv4Addr,
    pcp_port: u16,
    ssdp_port: u16,
}

impl Gateway {
    fn standard(ip: Ipv4Addr) -> Self {
        Gateway {
            ip,
            pcp_port: PCP_PORT,
            ssdp_port: SSDP_PORT,
        }
    }
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
    map_at(Gateway::standard(gateway), internal_port).await
}

async fn map_at(gateway: Gateway, internal_port: u16) -> Result<Mapping, PortmapError> {
    let client = local_ip_towards(gateway.ip).await?;
    let searching = tokio::spawn(igd::discover(gateway.ip, gateway.ssdp_port));
    let pcp_at = SocketAddrV4::new(gateway.ip, gateway.pcp_port);
    let pmp = match pmp::map(pcp_at, client, internal_port, LIFETIME, None, PMP_WITHIN).await {
        Ok(mapping) => {
            searching.abort();
            return Ok(mapping);
        }
        Err(error) => error,
    };
    let found = searching.await.expect("the search does not panic");
    let mapped = match found {
        Ok(service) => igd::map(&service, client, internal_port, LIFETIME, None).await,
        Err(error) => Err(error),
    };
    mapped.map_err(|igd| PortmapError::Refused {
        gateway: gateway.ip,
        pmp,
        igd,
    })
}

/// Our address on the link towards `gateway`: what the router sees as us.
async fn local_ip_towards(gateway: Ipv4Addr) -> std::io::Result<Ipv4Addr> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    socket.connect((gateway, 9)).await?;
    match socket.local_addr()? {
        SocketAddr::V4(local) => Ok(*local.ip()),
        SocketAddr::V6(_) => Err(std::io::Error::other("no IPv4 address towards the gateway")),
    }
}

/// Renews `mapping` the way it was made (`lifetime` zero deletes it).
async fn renew(mapping: &Mapping, pcp_port: u16, lifetime: Duration) -> Result<Mapping, String> {
    match &mapping.via {
        Via::Upnp { service } if lifetime.is_zero() => igd::release(mapping, service)
            .await
            .map(|()| mapping.clone())
            .map_err(|error| error.to_string()),
        Via::Upnp { service } => igd::map(
            service,
            mapping.client,
            mapping.internal_port,
            lifetime,
            Some(mapping),
        )
        .await
        .map_err(|error| error.to_string()),
        Via::Pcp { .. } | Via::NatPmp => {
            let gateway = SocketAddrV4::new(mapping.gateway, pcp_port);
            pmp::map(
                gateway,
                mapping.client,
                mapping.internal_port,
                lifetime,
                Some(mapping),
                PMP_WITHIN,
            )
            .await
            .map_err(|error| error.to_string())
        }
    }
}

/// A mapping kept alive: renewed at half its lifetime until released.
pub struct Kept {
    renewing: tokio::task::JoinHandle<()>,
    /// The latest renewal's: the router may move the port.
    current: std::sync::Arc<std::sync::Mutex<Mapping>>,
}

impl Kept {
    pub fn new(mapping: Mapping) -> Self {
        let current = std::sync::Arc::new(std::sync::Mutex::new(mapping.clone()));
        let renewing = tokio::spawn({
            let current = current.clone();
            let mut mapping = mapping;
            async move {
                loop {
                    tokio::time::sleep((mapping.lifetime / 2).max(Duration::from_secs(30))).await;
                    match renew(&mapping, PCP_PORT, LIFETIME).await {
                        Ok(renewed) => {
                            if renewed.external != mapping.external {
                                tracing::warn!(was = %mapping.external, now = %renewed.external, "the router moved our forwarded port");
                            }
                            mapping = renewed;
                            *current.locked() = mapping.clone();
                        }
                        Err(error) => {
                            tracing::warn!(%error, "could not renew the forwarded port; trying again in a minute");
                            mapping.lifetime = Duration::from_secs(120);
                        }
                    }
                }
            }
        });
        Kept { renewing, current }
    }

    pub fn mapping(&self) -> Mapping {
        self.current.locked().clone()
    }

    /// Stops renewing and asks the router to delete the mapping.
    pub async fn release(self) {
        self.renewing.abort();
        let m = self.mapping();
        match renew(&m, PCP_PORT, Duration::ZERO).await {
            Ok(_) => tracing::info!(external = %m.external, via = %m.protocol(), "forwarded port released"),
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

    /// A gateway on loopback answering PCP and NAT-PMP like miniupnpd,
    /// or NAT-PMP only (answering PCP's version 2 with "unsupported
    /// version"). Returns its port.
    async fn pmp_gateway(pcp: bool) -> u16 {
        let gateway = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = gateway.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1100];
            loop {
                let (len, from) = gateway.recv_from(&mut buffer).await.unwrap();
                let answer: Vec<u8> = match &buffer[..len] {
                    [2, 1, ..] if pcp && len == 60 => {
                        let mut answer = buffer[..60].to_vec();
                        answer[1] = 0x81;
                        answer[44..60]
                            .copy_from_slice(&Ipv4Addr::new(10, 77, 0, 11).to_ipv6_mapped().octets());
                        answer.copy_within(40..42, 42);
                        answer
                    }
                    [2, ..] => vec![0, 129, 0, 1, 0, 0, 0, 1],
                    [0, 0] => vec![0, 128, 0, 0, 0, 0, 0, 1, 10, 77, 0, 11],
                    [0, 1, 0, 0, a, b, ..] => {
                        vec![0, 129, 0, 0, 0, 0, 0, 1, *a, *b, *a, *b, 0, 0, 0x1c, 0x20]
                    }
                    _ => continue,
                };
                gateway.send_to(&answer, from).await.unwrap();
            }
        });
        port
    }

    /// A port nothing listens on (UDP: the kernel answers ICMP).
    fn closed_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn on_loopback(pcp_port: u16, ssdp_port: u16) -> Gateway {
        Gateway {
            ip: Ipv4Addr::LOCALHOST,
            pcp_port,
            ssdp_port,
        }
    }

    #[tokio::test]
    async fn pcp_is_asked_first_and_nat_pmp_when_the_gateway_speaks_only_that() {
        let pcp = pmp_gateway(true).await;
        let mapping = map_at(on_loopback(pcp, closed_port()), 4663).await.unwrap();
        assert_eq!(mapping.protocol(), Protocol::Pcp);
        assert_eq!(mapping.external, "10.77.0.11:4663".parse().unwrap());
        assert_eq!(mapping.lifetime, LIFETIME);
        renew(&mapping, pcp, Duration::ZERO).await.unwrap();

        let natpmp = pmp_gateway(false).await;
        let mapping = map_at(on_loopback(natpmp, closed_port()), 4663).await.unwrap();
        assert_eq!(mapping.protocol(), Protocol::NatPmp);
        assert_eq!(mapping.external, "10.77.0.11:4663".parse().unwrap());
    }

    /// A UPnP-IGD router on loopback: SSDP on UDP, description and SOAP
    /// over HTTP. Its first AddPortMapping is refused as taken (another
    /// machine has the port), as a busy home's router would. Returns its
    /// SSDP port and the SOAP actions it was asked.
    async fn igd_gateway() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = http.local_addr().unwrap().port();
        let ssdp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ssdp_port = ssdp.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buffer = [0u8; 2048];
            loop {
                let (len, from) = ssdp.recv_from(&mut buffer).await.unwrap();
                if buffer[..len].starts_with(b"M-SEARCH") {
                    let answer = format!("HTTP/1.1 200 OK\r\nST: x\r\nLOCATION: http://127.0.0.1:{http_port}/rootDesc.xml\r\n\r\n");
                    ssdp.send_to(answer.as_bytes(), from).await.unwrap();
                }
            }
        });
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = http.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Our client sends the whole request, then waits.
                let whole = |request: &[u8]| {
                    String::from_utf8_lossy(request).contains("</s:Envelope>")
                        || request.starts_with(b"GET") && request.ends_with(b"\r\n\r\n")
                };
                while !whole(&request) {
                    let len = stream.read(&mut buffer).await.unwrap();
                    if len == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..len]);
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let action = request
                    .split("#")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("GET")
                    .to_string();
                let first_add = action == "AddPortMapping" && !log.lock().unwrap().contains(&action);
                log.lock().unwrap().push(action.clone());
                let (status, body) = match action.as_str() {
                    "GET" => ("200 OK", "<root><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl/IPConn</controlURL></service></serviceList></device></root>".to_string()),
                    "AddPortMapping" if first_add => ("500 Internal Server Error", "<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>".to_string()),
                    "GetExternalIPAddress" => ("200 OK", "<s:Envelope><s:Body><u:GetExternalIPAddressResponse><NewExternalIPAddress>10.77.0.12</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>".to_string()),
                    _ => ("200 OK", "<s:Envelope><s:Body/></s:Envelope>".to_string()),
                };
                // Chunked, as some routers answer.
                let answer = format!(
                    "HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (ssdp_port, asked)
    }

    #[tokio::test]
    async fn upnp_igd_maps_when_pcp_is_not_spoken_and_moves_off_a_taken_port() {
        let (ssdp, asked) = igd_gateway().await;
        let mapping = map_at(on_loopback(closed_port(), ssdp), 4663).await.unwrap();
        assert_eq!(mapping.protocol(), Protocol::UpnpIgd);
        assert_eq!(*mapping.external.ip(), Ipv4Addr::new(10, 77, 0, 12));
        assert_ne!(mapping.external.port(), 4663, "4663 was taken");
        assert_eq!(mapping.internal_port, 4663);
        renew(&mapping, closed_port(), Duration::ZERO).await.unwrap();
        assert_eq!(
            *asked.lock().unwrap(),
            [
                "GET",
                "AddPortMapping",
                "AddPortMapping",
                "GetExternalIPAddress",
                "DeletePortMapping"
            ]
        );
    }

    /// A gateway that answers nothing at all costs about a second, and
    /// the error says what each protocol found.
    #[tokio::test]
    async fn a_silent_gateway_costs_a_second_and_says_why() {
        let silent_pcp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent_ssdp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        let error = map_at(
            on_loopback(
                silent_pcp.local_addr().unwrap().port(),
                silent_ssdp.local_addr().unwrap().port(),
            ),
            4663,
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().contains("PCP/NAT-PMP: no answer within")
                && error.to_string().contains("UPnP-IGD: no answer to the search"),
            "{error}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
}
