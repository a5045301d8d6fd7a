//! UPnP Internet Gateway Device, the way most consumer routers forward
//! ports: a multicast SSDP search finds the router and the address of its
//! XML description; the description names the control URL of its
//! `WANIPConnection` (or `WANPPPConnection`) service; SOAP calls over
//! HTTP to that URL add, renew and delete a mapping and read the outside
//! address.
//!
//! Only the little of HTTP and XML those four exchanges need, written
//! here rather than pulled in (an HTTP client, a URL parser and an XML
//! tree would triple the build for three requests), and bounded because
//! the router is remote input: an answer is at most [`MAX_RESPONSE`]
//! bytes, URLs must name the router by IPv4 address, and a control URL
//! pointing anywhere but the router that answered is refused, so a
//! stranger on the LAN cannot send our requests elsewhere.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Where SSDP searches go (UPnP Device Architecture 1.1 §1.3.2).
pub const SSDP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// Any gateway device; version 2 devices answer a search for version 1.
pub const SEARCH_TARGET: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
/// The most we read of any answer. Real descriptions are 2–30 KiB.
pub const MAX_RESPONSE: usize = 64 << 10;
/// The name our mappings carry in the router's list.
pub const DESCRIPTION: &str = "canopy";

/// The SSDP search, sent by UDP to [`SSDP`] (and to the gateway itself).
/// `MX: 1`: devices answer within a second.
pub fn search_request() -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {SSDP}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: {SEARCH_TARGET}\r\n\r\n"
    )
    .into_bytes()
}

/// Why UPnP-IGD gave no mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpnpError {
    #[error("the search answer is not HTTP or has no LOCATION")]
    NoLocation,
    #[error("{0:?} is no http:// URL with an IPv4 address")]
    Url(String),
    #[error("the description names no WANIPConnection or WANPPPConnection service")]
    NoService,
    #[error("the control URL points at {control}, not at the router {router}")]
    Elsewhere { control: Ipv4Addr, router: Ipv4Addr },
    #[error("malformed HTTP answer: {0}")]
    Http(&'static str),
    #[error("the answer is longer than {MAX_RESPONSE} bytes")]
    TooLong,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the router refused: error {code} ({})", fault_meaning(*.code, description))]
    Fault { code: u16, description: String },
    #[error("the answer lacks {0}")]
    Missing(&'static str),
}

/// What a UPnP error code means to a user (UPnP IGD:1 WANIPConnection
/// spec, §2.4.16).
fn fault_meaning(code: u16, description: &str) -> String {
    let meaning = match code {
        606 => "not authorized: UPnP port mapping is turned off or restricted on the router",
        718 => "the port is mapped to another machine already",
        725 => "the router only takes permanent mappings",
        728 => "the router's mapping table is full",
        729 => "the port conflicts with another mapping mechanism",
        _ => return description.to_string(),
    };
    meaning.to_string()
}

/// UPnP's error codes a caller acts on.
pub const CONFLICT_IN_MAPPING_ENTRY: u16 = 718;
pub const ONLY_PERMANENT_LEASES_SUPPORTED: u16 = 725;

/// An `http://a.b.c.d:port/path` URL: the only kind a router's answers
/// may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: SocketAddrV4,
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, UpnpError> {
        let bad = || UpnpError::Url(text.chars().take(120).collect());
        let text = text.trim();
        let rest = without_scheme(text).ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let host = match authority.parse::<SocketAddrV4>() {
            Ok(host) => host,
            Err(_) => SocketAddrV4::new(authority.parse().map_err(|_| bad())?, 80),
        };
        if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(bad());
        }
        Ok(Url {
            host,
            path: path.to_string(),
        })
    }

    /// `reference` (absolute, absolute path, or relative) read against
    /// this URL.
    pub fn join(&self, reference: &str) -> Result<Url, UpnpError> {
        let reference = reference.trim();
        if without_scheme(reference).is_some() {
            return Url::parse(reference);
        }
        let path = match reference.starts_with('/') {
            true => reference.to_string(),
            // Relative to our folder; a parsed path always starts with '/'.
            false => format!("{}{reference}", &self.path[..=self.path.rfind('/').unwrap_or(0)]),
        };
        Url::parse(&format!("http://{}{path}", self.host))
    }
}

/// `text` after its `http://` (any case), if it starts with one.
fn without_scheme(text: &str) -> Option<&str> {
    text.get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &text[7..])
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.host, self.path)
    }
}

/// The description's address, from an answer to [`search_request`]
/// (an HTTP response sent over UDP).
pub fn location(answer: &[u8]) -> Result<Url, UpnpError> {
    let text = std::str::from_utf8(answer).map_err(|_| UpnpError::NoLocation)?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.") || status.split(' ').nth(1) != Some("200") {
        return Err(UpnpError::NoLocation);
    }
    let url = lines
        .take_while(|line| !line.is_empty())
        .find_map(|line| header(line, "location"))
        .ok_or(UpnpError::NoLocation)?;
    Url::parse(url)
}

/// The value of `line` if it is the header `name` (any case).
fn header<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (key, value) = line.split_once(':')?;
    key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
}

/// The router's port-mapping service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// E.g. `urn:schemas-upnp-org:service:WANIPConnection:1`: SOAP calls
    /// name it.
    pub service_type: String,
    pub control: Url,
}

/// The port-mapping service in a device description fetched from
/// `location`: `WANIPConnection` (version 2 first) or, on DSL routers,
/// `WANPPPConnection`.
pub fn find_service(description: &str, location: &Url) -> Result<Service, UpnpError> {
    // IGD:1 descriptions may name a base for relative URLs.
    let base = match elements(description, "URLBase").next() {
        Some(base) if !base.trim().is_empty() => Url::parse(base)?,
        _ => location.clone(),
    };
    let rank = |service_type: &str| {
        ["WANIPConnection:2", "WANIPConnection:1", "WANPPPConnection:1"]
            .iter()
            .position(|kind| service_type.ends_with(kind))
    };
    let (_, service_type, control) = elements(description, "service")
        .filter_map(|service| {
            let service_type = elements(service, "serviceType").next()?.trim();
            let control = elements(service, "controlURL").next()?;
            Some((rank(service_type)?, service_type, control))
        })
        .min_by_key(|(rank, ..)| *rank)
        .ok_or(UpnpError::NoService)?;
    let control = base.join(control)?;
    if control.host.ip() != location.host.ip() {
        return Err(UpnpError::Elsewhere {
            control: *control.host.ip(),
            router: *location.host.ip(),
        });
    }
    Ok(Service {
        service_type: service_type.to_string(),
        control,
    })
}

/// The contents of each element named `name` (any namespace prefix), in
/// document order; not nested ones of the same name. Enough XML for
/// device descriptions and SOAP answers, which have no CDATA or comments
/// where we look.
fn elements<'a>(xml: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = xml;
    std::iter::from_fn(move || loop {
        let open = rest.find('<')?;
        rest = &rest[open + 1..];
        let tag_end = rest.find(|c: char| c == '>' || c == '/' || c.is_whitespace())?;
        let tag = &rest[..tag_end];
        if tag.starts_with(['/', '?', '!']) || tag.rsplit(':').next() != Some(name) {
            continue;
        }
        let start_end = rest.find('>')?;
        if rest[..start_end].ends_with('/') {
            rest = &rest[start_end + 1..];
            return Some("");
        }
        let content = &rest[start_end + 1..];
        let close = format!("</{tag}>");
        let Some(end) = content.find(&close) else {
            rest = "";
            return None;
        };
        rest = &content[end + close.len()..];
        return Some(&content[..end]);
    })
}

/// An HTTP GET of `url`, closing after the answer.
pub fn get_request(url: &Url) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.host
    )
    .into_bytes()
}

/// What we ask the router's service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    GetExternalIpAddress,
    /// Adds or, for the same client and port, renews. A lease of zero is
    /// permanent (for routers that take nothing else).
    AddPortMapping {
        external_port: u16,
        internal_port: u16,
        client: Ipv4Addr,
        lease: Duration,
    },
    DeletePortMapping {
        external_port: u16,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::GetExternalIpAddress => "GetExternalIPAddress",
            Action::AddPortMapping { .. } => "AddPortMapping",
            Action::DeletePortMapping { .. } => "DeletePortMapping",
        }
    }

    /// The arguments, in the order the service description lists them
    /// (some routers insist).
    fn arguments(&self) -> Vec<(&'static str, String)> {
        match *self {
            Action::GetExternalIpAddress => vec![],
            Action::AddPortMapping {
                external_port,
                internal_port,
                client,
                lease,
            } => vec![
                ("NewRemoteHost", String::new()),
                ("NewExternalPort", external_port.to_string()),
                ("NewProtocol", "UDP".into()),
                ("NewInternalPort", internal_port.to_string()),
                ("NewInternalClient", client.to_string()),
                ("NewEnabled", "1".into()),
                ("NewPortMappingDescription", DESCRIPTION.into()),
                (
                    "NewLeaseDuration",
                    lease.as_secs().min(u64::from(u32::MAX)).to_string(),
                ),
            ],
            Action::DeletePortMapping { external_port } => vec![
                ("NewRemoteHost", String::new()),
                ("NewExternalPort", external_port.to_string()),
                ("NewProtocol", "UDP".into()),
            ],
        }
    }
}

/// The HTTP POST carrying `action` to `service`.
pub fn soap_request(service: &Service, action: Action) -> Vec<u8> {
    let name = action.name();
    let kind = &service.service_type;
    let arguments: String = action
        .arguments()
        .iter()
        .map(|(key, value)| format!("<{key}>{value}</{key}>"))
        .collect();
    let body = format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{name} xmlns:u=\"{kind}\">{arguments}</u:{name}></s:Body></s:Envelope>\r\n"
    );
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
         SOAPAction: \"{kind}#{name}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        service.control.path,
        service.control.host,
        body.len()
    )
    .into_bytes()
}

/// An HTTP answer, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Parses the bytes read so far of an HTTP answer. `Ok(None)`: not
/// complete yet, read on (never once `closed`: the peer closed, so what
/// came is all there is). Handles `Content-Length`, chunked and
/// close-delimited bodies.
pub fn parse_response(bytes: &[u8], closed: bool) -> Result<Option<Response>, UpnpError> {
    if bytes.len() > MAX_RESPONSE {
        return Err(UpnpError::TooLong);
    }
    let incomplete = |what| {
        if closed {
            Err(UpnpError::Http(what))
        } else {
            Ok(None)
        }
    };
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return incomplete("the headers never end");
    };
    let head =
        std::str::from_utf8(&bytes[..head_end]).map_err(|_| UpnpError::Http("headers are not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    if !words.next().is_some_and(|version| version.starts_with("HTTP/1.")) {
        return Err(UpnpError::Http("no HTTP/1.x status line"));
    }
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(UpnpError::Http("no status code"))?;
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        if let Some(value) = header(line, "content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| UpnpError::Http("bad Content-Length"))?,
            );
        } else if let Some(value) = header(line, "transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = &bytes[head_end + 4..];
    let body = if chunked {
        match dechunk(body)? {
            Some(body) => body,
            None => return incomplete("the chunks never end"),
        }
    } else if let Some(length) = length {
        if length > MAX_RESPONSE {
            return Err(UpnpError::TooLong);
        }
        match body.get(..length) {
            Some(body) => body.to_vec(),
            None => return incomplete("the body is shorter than its Content-Length"),
        }
    } else if closed {
        body.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// A chunked body's bytes, or `None` while the last chunk has not come.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, UpnpError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| UpnpError::Http("bad chunk size"))?;
        // Chunk extensions follow a ';'.
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| UpnpError::Http("bad chunk size"))?;
        if size > MAX_RESPONSE {
            return Err(UpnpError::TooLong);
        }
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        let Some(chunk) = rest.get(..size) else {
            return Ok(None);
        };
        body.extend_from_slice(chunk);
        rest = match rest.get(size..size + 2) {
            Some(b"\r\n") => &rest[size + 2..],
            Some(_) => return Err(UpnpError::Http("a chunk overruns its size")),
            None => return Ok(None),
        };
    }
}

/// The outcome of a SOAP call: the answer's body on success, the router's
/// UPnP error otherwise.
pub fn soap_outcome(response: &Response) -> Result<String, UpnpError> {
    let body = String::from_utf8_lossy(&response.body).into_owned();
    if response.status == 200 {
        return Ok(body);
    }
    let code = elements(&body, "errorCode")
        .next()
        .and_then(|code| code.trim().parse().ok());
    match code {
        Some(code) => Err(UpnpError::Fault {
            code,
            description: elements(&body, "errorDescription")
                .next()
                .unwrap_or_default()
                .trim()
                .chars()
                .take(200)
                .collect(),
        }),
        None => Err(UpnpError::Status(response.status)),
    }
}

/// The outside address in a `GetExternalIPAddress` answer's body.
pub fn external_ip(body: &str) -> Result<Ipv4Addr, UpnpError> {
    elements(body, "NewExternalIPAddress")
        .next()
        .and_then(|ip| ip.trim().parse().ok())
        .ok_or(UpnpError::Missing("NewExternalIPAddress"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// miniupnpd 2.3's description, shortened to what matters.
    const DESCRIPTION_XML: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337"><specVersion><major>1</major><minor>1</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><controlURL>/ctl/CmnIfCfg</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>"#;

    fn location() -> Url {
        Url::parse("http://192.168.1.1:40411/rootDesc.xml").unwrap()
    }

    #[test]
    fn a_search_answer_gives_the_description_address() {
        let answer = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
                       USN: uuid:3d3c::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n\
                       Location: http://192.168.1.1:40411/rootDesc.xml\r\n\r\n";
        assert_eq!(super::location(answer), Ok(location()));
        assert_eq!(
            super::location(b"NOTIFY * HTTP/1.1\r\n\r\n"),
            Err(UpnpError::NoLocation)
        );
        assert!(matches!(
            super::location(b"HTTP/1.1 200 OK\r\nLOCATION: http://router.lan/desc.xml\r\n\r\n"),
            Err(UpnpError::Url(_))
        ));
        let search = String::from_utf8(search_request()).unwrap();
        assert!(search.starts_with("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"));
        assert!(search.ends_with("\r\n\r\n"));
    }

    #[test]
    fn urls_are_read_and_joined() {
        let base = location();
        assert_eq!(
            base.join("/ctl/IPConn").unwrap().to_string(),
            "http://192.168.1.1:40411/ctl/IPConn"
        );
        assert_eq!(
            base.join("ctl/IPConn").unwrap().to_string(),
            "http://192.168.1.1:40411/ctl/IPConn"
        );
        assert_eq!(
            base.join("http://192.168.1.1:5000/x").unwrap().to_string(),
            "http://192.168.1.1:5000/x"
        );
        assert_eq!(
            Url::parse("HTTP://10.0.0.1").unwrap().to_string(),
            "http://10.0.0.1:80/"
        );
        assert!(Url::parse("https://10.0.0.1/").is_err());
        assert!(Url::parse("http://10.0.0.1/a b").is_err());
        assert!(Url::parse("http://[::1]/").is_err());
        assert!(
            base.join("ééééx/ctl").is_ok(),
            "multibyte text where a scheme would be: relative, no panic"
        );
    }

    #[test]
    fn the_description_names_the_connection_service() {
        let service = find_service(DESCRIPTION_XML, &location()).unwrap();
        assert_eq!(
            service.service_type,
            "urn:schemas-upnp-org:service:WANIPConnection:2"
        );
        assert_eq!(service.control.to_string(), "http://192.168.1.1:40411/ctl/IPConn");

        let ppp = "<root><URLBase>http://192.168.1.1:49000</URLBase><service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>\
                   <controlURL>/upnp/control/WANPPPConn1</controlURL></service></root>";
        let service = find_service(ppp, &location()).unwrap();
        assert_eq!(
            service.control.to_string(),
            "http://192.168.1.1:49000/upnp/control/WANPPPConn1"
        );

        let elsewhere = DESCRIPTION_XML.replace(
            "<controlURL>/ctl/IPConn",
            "<controlURL>http://10.9.9.9/ctl/IPConn",
        );
        assert_eq!(
            find_service(&elsewhere, &location()),
            Err(UpnpError::Elsewhere {
                control: Ipv4Addr::new(10, 9, 9, 9),
                router: Ipv4Addr::new(192, 168, 1, 1)
            })
        );
        assert_eq!(
            find_service("<root><service/></root>", &location()),
            Err(UpnpError::NoService)
        );
    }

    #[test]
    fn soap_requests_carry_the_action_and_its_arguments() {
        let service = find_service(DESCRIPTION_XML, &location()).unwrap();
        let add = String::from_utf8(soap_request(
            &service,
            Action::AddPortMapping {
                external_port: 4663,
                internal_port: 4663,
                client: Ipv4Addr::new(192, 168, 1, 2),
                lease: Duration::from_secs(7200),
            },
        ))
        .unwrap();
        assert!(add.starts_with("POST /ctl/IPConn HTTP/1.1\r\nHost: 192.168.1.1:40411\r\n"));
        assert!(
            add.contains("SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping\"\r\n")
        );
        assert!(add.contains(
            "<NewRemoteHost></NewRemoteHost><NewExternalPort>4663</NewExternalPort><NewProtocol>UDP</NewProtocol>\
             <NewInternalPort>4663</NewInternalPort><NewInternalClient>192.168.1.2</NewInternalClient>"
        ));
        let (head, body) = add.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn answers_are_read_whole_in_any_framing() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse_response(&full[..30], false),
            Ok(None),
            "headers not yet over"
        );
        assert_eq!(parse_response(&full[..40], false), Ok(None), "body not yet over");
        assert_eq!(
            parse_response(full, false).unwrap().unwrap(),
            Response {
                status: 200,
                body: b"hello".to_vec()
            }
        );
        assert_eq!(
            parse_response(&full[..40], true),
            Err(UpnpError::Http("the body is shorter than its Content-Length"))
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked, false).unwrap().unwrap().body, b"hello");
        assert_eq!(parse_response(&chunked[..55], false), Ok(None));
        let closed = b"HTTP/1.0 500 Internal Server Error\r\n\r\n<errorCode>718</errorCode>";
        assert_eq!(parse_response(closed, false), Ok(None));
        let response = parse_response(closed, true).unwrap().unwrap();
        assert_eq!(response.status, 500);
        assert!(matches!(
            soap_outcome(&response),
            Err(UpnpError::Fault { code: 718, .. })
        ));
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_RESPONSE + 1);
        assert_eq!(parse_response(huge.as_bytes(), false), Err(UpnpError::TooLong));
        assert_eq!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", true),
            Err(UpnpError::Http("no HTTP/1.x status line"))
        );
    }

    #[test]
    fn soap_answers_give_the_address_or_the_fault() {
        let ok = Response {
            status: 200,
            body: b"<s:Envelope><s:Body><u:GetExternalIPAddressResponse xmlns:u=\"x\">\
                    <NewExternalIPAddress>10.77.0.11</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>"
                .to_vec(),
        };
        assert_eq!(
            external_ip(&soap_outcome(&ok).unwrap()),
            Ok(Ipv4Addr::new(10, 77, 0, 11))
        );
        let fault = Response {
            status: 500,
            body: b"<s:Envelope><s:Body><s:Fault><faultcode>s:Client</faultcode><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\">\
                    <errorCode>606</errorCode><errorDescription>Action not authorized</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
                .to_vec(),
        };
        assert_eq!(
            soap_outcome(&fault).unwrap_err().to_string(),
            "the router refused: error 606 (not authorized: UPnP port mapping is turned off or restricted on the router)"
        );
        assert_eq!(
            soap_outcome(&Response {
                status: 404,
                body: vec![]
            }),
            Err(UpnpError::Status(404))
        );
        assert_eq!(
            external_ip("<NewExternalIPAddress></NewExternalIPAddress>"),
            Err(UpnpError::Missing("NewExternalIPAddress"))
        );
    }

    proptest! {
        /// Whatever a router (or a stranger on the LAN) answers, every
        /// parser ends without a panic, and a parsed control URL always
        /// points at the router that answered.
        #[test]
        fn any_answer_parses_safely(bytes in proptest::collection::vec(any::<u8>(), 0..512), closed: bool) {
            let _ = super::location(&bytes);
            let _ = parse_response(&bytes, closed);
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(service) = find_service(&text, &location()) {
                prop_assert_eq!(*service.control.host.ip(), Ipv4Addr::new(192, 168, 1, 1));
            }
            let _ = external_ip(&text);
        }

        #[test]
        fn descriptions_with_noise_still_parse(noise in "[<>/a-zA-Z: ]{0,40}") {
            let noisy = DESCRIPTION_XML.replace("<deviceList>", &format!("{noise}<deviceList>"));
            let _ = find_service(&noisy, &location());
        }
    }
}
