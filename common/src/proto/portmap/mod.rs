//! Asking the home router to forward a port to us, in the three ways home
//! routers understand — the same three qBittorrent and iroh speak:
//!
//! - [`pcp`], the Port Control Protocol (RFC 6887): one UDP exchange with
//!   the gateway's port 5351 that maps a port and names the outside address.
//! - [`natpmp`], NAT-PMP (RFC 6886), PCP's predecessor on the same port:
//!   Apple's routers, and what a PCP server falls back to.
//! - [`upnp`], UPnP Internet Gateway Device: SSDP multicast discovery, an
//!   XML description fetched over HTTP, then SOAP calls. Most consumer
//!   routers speak this one, many of them nothing else.
//!
//! With a port forwarded, a node behind a router is reachable like a public
//! one: peers dial it, and it may serve as a supernode.
//!
//! Pure: the bytes of the requests and what an answer means. The gateway
//! is remote input — anything on the LAN can answer from its address, and
//! a router's firmware is rarely careful — so every answer is parsed
//! strictly and bounded, with a fuzz target (`portmap_answers`).

use std::time::Duration;

pub mod natpmp;
pub mod pcp;
pub mod upnp;

/// How long we ask a mapping to last; renewed at half-life. RFC 6886
/// recommends two hours, and PCP and UPnP leases are asked for the same.
pub const LIFETIME: Duration = Duration::from_secs(7200);

/// The gateway's port for PCP and NAT-PMP.
pub const PCP_PORT: u16 = 5351;

/// Which protocol got a mapping: said in `canopy probe`, `status` and the
/// app, so a user knows what their router answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pcp,
    NatPmp,
    UpnpIgd,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::UpnpIgd => "UPnP-IGD",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
