//! How other peers reach a node that may sit behind a home router: what
//! they see of it, what kind of router that tells, and which of its
//! addresses may be told to whom. Pure: the node feeds it what it learns
//! (`Response::Observed`, `Response::PunchReady`, the election's dial-back),
//! and reads back one verdict for its banner, `canopy status` and the app.
//!
//! The terms are RFC 4787's. A router *maps* a machine's private address
//! and port to an outside one. With **endpoint-independent mapping** (EIM,
//! loosely "cone") the outside port is the same towards every peer, so the
//! port one peer sees is the port every peer will see, and a hole punched
//! towards a peer's address meets that peer's packets. With
//! **endpoint-dependent mapping** (EDM, "symmetric") every peer sees a
//! different port: a punch aimed at the port the supernode saw misses.
//! iroh decides the same way, from two reports that differ
//! (`net_report::Report::update`, `mapping_varies_by_dest`).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// Observations kept: the newest win. A handful of observers decides the
/// router's kind; more only repeat it.
pub const MAX_OBSERVATIONS: usize = 16;

/// One peer's view of us: where our packets come from as it sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The observer's address (its IP tells observers apart).
    pub observer: IpAddr,
    /// Our address as it sees it.
    pub seen: SocketAddr,
    /// Our own end of that connection, when the socket knows it (with an
    /// unspecified IP when it does not).
    pub local: SocketAddr,
}

/// What lies between this node and the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// No observation yet.
    Unknown,
    /// A router rewrites our address, but it takes two observers to tell
    /// how it maps.
    Translated,
    /// Peers see our own address: no router rewrites it.
    None,
    /// Endpoint-independent mapping ("cone"): one outside port towards
    /// every peer. Hole punching works.
    EndpointIndependent,
    /// Endpoint-dependent mapping ("symmetric"): a new outside port per
    /// peer. Punching by address alone fails.
    EndpointDependent,
}

impl NatKind {
    /// A short name for people and metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            NatKind::Unknown => "unknown",
            NatKind::Translated => "unknown-kind",
            NatKind::None => "none",
            NatKind::EndpointIndependent => "cone",
            NatKind::EndpointDependent => "symmetric",
        }
    }
}

/// How other peers get a connection to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Nothing measured yet (no peer to ask).
    Unknown,
    /// They dial it: a stranger's fresh port got through.
    Direct,
    /// They dial it, on a port its router forwards (NAT-PMP), and a
    /// stranger's fresh port got through.
    Mapped,
    /// Its supernode arranges a hole punch: the downloader opens its own
    /// router towards this node while this node dials it.
    Punch,
    /// Its router gives every peer another port, so a plain punch misses:
    /// peers that accept connections reach it by push, peers behind
    /// one-port routers by a birthday punch (`crate::proto::birthday`),
    /// the rest through its supernode's relay. (The name and its metrics
    /// label `push` are from before the last two.)
    PushOnly,
}

impl Reach {
    pub fn label(self) -> &'static str {
        match self {
            Reach::Unknown => "unknown",
            Reach::Direct => "direct",
            Reach::Mapped => "mapped",
            Reach::Punch => "punch",
            Reach::PushOnly => "push",
        }
    }
}

/// What peers have told this node about its address, newest last.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    list: VecDeque<Observation>,
}

impl Observations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one observation. Returns whether the outside addresses
    /// changed (a new one appeared): the node then checks its reachability
    /// again, as its router may have restarted or its network changed.
    pub fn add(&mut self, observation: Observation) -> bool {
        let new = !self.list.iter().any(|o| o.seen == observation.seen);
        // One entry per observer: its latest view is the one that counts.
        self.list.retain(|o| o.observer != observation.observer);
        if self.list.len() == MAX_OBSERVATIONS {
            self.list.pop_front();
        }
        self.list.push_back(observation);
        new
    }

    /// How many different peers have said where they see us.
    pub fn observers(&self) -> usize {
        self.list.len()
    }

    /// Our outside addresses as peers see them, newest first, each once.
    pub fn outside(&self) -> Vec<SocketAddr> {
        let mut seen: Vec<SocketAddr> = Vec::new();
        for observation in self.list.iter().rev() {
            if !seen.contains(&observation.seen) {
                seen.push(observation.seen);
            }
        }
        seen
    }

    /// The router's kind, as far as the observations tell.
    pub fn kind(&self) -> NatKind {
        let Some(newest) = self.list.back() else {
            return NatKind::Unknown;
        };
        let own = |o: &Observation| !o.local.ip().is_unspecified() && o.seen == o.local;
        if own(newest) {
            return NatKind::None;
        }
        // Only observations made from the same local port compare: a port
        // chosen anew (a restart) says nothing about the router.
        let same_socket: Vec<&Observation> = self
            .list
            .iter()
            .filter(|o| o.local.port() == newest.local.port())
            .collect();
        if same_socket.len() < 2 {
            return match newest.local.ip().is_unspecified() {
                true => NatKind::Unknown,
                false => NatKind::Translated,
            };
        }
        match same_socket.iter().all(|o| o.seen.port() == newest.seen.port()) {
            true => NatKind::EndpointIndependent,
            false => NatKind::EndpointDependent,
        }
    }
}

/// How peers reach this node, from the dial-back test (`Some(true)`: a
/// stranger's fresh port got through; `None`: no peer could run it) and
/// the router's kind. A node whose router's kind is unknown is offered for
/// punching: most home routers map endpoint-independently, and a failed
/// punch costs one push's wait. Without a dial-back, a router that
/// rewrites our address is taken to filter too, as home routers do: better
/// a punch that was not needed than a source nobody can reach.
pub fn reach(dial_back: Option<bool>, kind: NatKind) -> Reach {
    match (dial_back, kind) {
        (Some(true), _) => Reach::Direct,
        (_, NatKind::EndpointDependent) => Reach::PushOnly,
        (Some(false), _) | (None, NatKind::Translated | NatKind::EndpointIndependent) => Reach::Punch,
        (None, NatKind::None) => Reach::Direct,
        (None, NatKind::Unknown) => Reach::Unknown,
    }
}

/// Whether `ip` means the same machine to anyone on the internet: not
/// private, loopback, link-local, shared (CGNAT), documentation or
/// unspecified.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b); // RFC 6598, carrier-grade NAT
            let benchmarking = a == 198 && (b == 18 || b == 19); // RFC 2544
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || shared
                || benchmarking
                || a == 0
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            let unique_local = first & 0xfe00 == 0xfc00; // fc00::/7
            let link_local = first & 0xffc0 == 0xfe80; // fe80::/10
            let documentation = first == 0x2001 && v6.segments()[1] == 0x0db8;
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || unique_local
                || link_local
                || documentation)
        }
    }
}

/// Whether our address `addr` may be told to a peer at `to`. An address
/// that only means something inside a home (or on this machine) is never
/// told to a peer outside it: at best useless, at worst it points the
/// peer at another machine that happens to use the same private range. A
/// peer that is itself at such an address is on the same local network
/// (or a test bed), where it works.
pub fn publishable(addr: SocketAddr, to: IpAddr) -> bool {
    !addr.ip().is_unspecified() && (is_global(addr.ip()) || !is_global(to))
}

/// Our address `addr` as it may be told to a peer at `to`: itself where
/// [`publishable`], else only its port (with the unspecified address; the
/// peer knows our IP from our packets).
pub fn shown_to(addr: SocketAddr, to: IpAddr) -> SocketAddr {
    match publishable(addr, to) {
        true => addr,
        false => match addr {
            SocketAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port())),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, addr.port())),
        },
    }
}

/// Most addresses of its other IP family a leaf may offer its supernode
/// (`Request::Addresses`): a home has one global IPv6 address in use, and
/// perhaps a temporary one beside it.
pub const MAX_OTHER_ADDRESSES: usize = 2;
/// Padding the offer must carry per address. The supernode dials each
/// address back (a QUIC Initial of 1,200 bytes, resent for up to 3 s:
/// about 4 KB): an asker cannot make it send more to an address than the
/// asker sent it, as AutoNAT v2 asks a client for "dial data" before it
/// dials an address other than the one it sees.
pub const PADDING_PER_ADDRESS: usize = 4096;

/// Why a supernode will not test a leaf's offered addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("{0} addresses offered, at most {MAX_OTHER_ADDRESSES}")]
    TooMany(usize),
    #[error("{got} bytes of padding, {wanted} needed")]
    TooLittlePadding { got: usize, wanted: usize },
    #[error("{0} is not a global address")]
    NotGlobal(SocketAddr),
    #[error("{0} is of the family the session already tests")]
    SameFamily(SocketAddr),
}

/// Checks a leaf's offer of addresses of its other family (the session
/// with its supernode comes from `session`): each global, of the other
/// family (the session's own address is tested by the ordinary dial-back),
/// few, and paid for with padding. The addresses to test, each once.
pub fn check_offer(
    addrs: &[SocketAddr],
    padding: usize,
    session: SocketAddr,
) -> Result<Vec<SocketAddr>, OfferError> {
    if addrs.len() > MAX_OTHER_ADDRESSES {
        return Err(OfferError::TooMany(addrs.len()));
    }
    let wanted = addrs.len() * PADDING_PER_ADDRESS;
    if padding < wanted {
        return Err(OfferError::TooLittlePadding { got: padding, wanted });
    }
    let mut checked = Vec::new();
    for &addr in addrs {
        if !is_global(addr.ip()) || addr.port() == 0 {
            return Err(OfferError::NotGlobal(addr));
        }
        if addr.is_ipv4() == session.is_ipv4() {
            return Err(OfferError::SameFamily(addr));
        }
        if !checked.contains(&addr) {
            checked.push(addr);
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_offer_of_other_addresses_is_bounded_paid_for_and_of_the_other_family() {
        let session = at("198.51.100.7:4663");
        let v6 = at("[2a0b:77:1::2]:4663");
        assert_eq!(check_offer(&[v6], 4096, session), Ok(vec![v6]));
        assert_eq!(check_offer(&[v6, v6], 8192, session), Ok(vec![v6]));
        assert_eq!(check_offer(&[], 0, session), Ok(vec![]));
        assert_eq!(
            check_offer(&[v6], 4095, session),
            Err(OfferError::TooLittlePadding {
                got: 4095,
                wanted: 4096
            })
        );
        assert_eq!(
            check_offer(&[v6; 3], 1 << 16, session),
            Err(OfferError::TooMany(3))
        );
        let private = at("[fd00::2]:4663");
        assert_eq!(
            check_offer(&[private], 4096, session),
            Err(OfferError::NotGlobal(private))
        );
        let same = at("203.0.113.9:4663");
        assert_eq!(
            check_offer(&[same], 4096, session),
            Err(OfferError::NotGlobal(same))
        );
        let other_v4 = at("8.8.4.4:4663");
        assert_eq!(
            check_offer(&[other_v4], 4096, session),
            Err(OfferError::SameFamily(other_v4))
        );
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn observed(observer: &str, seen: &str, local: &str) -> Observation {
        Observation {
            observer: observer.parse().unwrap(),
            seen: at(seen),
            local: at(local),
        }
    }

    #[test]
    fn one_outside_port_towards_two_peers_is_a_cone() {
        let mut seen = Observations::new();
        assert!(seen.add(observed("10.77.0.2", "10.77.0.11:4663", "192.168.1.2:4663")));
        assert_eq!(
            seen.kind(),
            NatKind::Translated,
            "one observer cannot tell the kind"
        );
        assert_eq!(
            reach(None, seen.kind()),
            Reach::Punch,
            "no dial-back, but a router"
        );
        assert!(!seen.add(observed("10.77.0.3", "10.77.0.11:4663", "192.168.1.2:4663")));
        assert_eq!(seen.kind(), NatKind::EndpointIndependent);
        assert_eq!(seen.outside(), vec![at("10.77.0.11:4663")]);
        assert_eq!(reach(Some(false), seen.kind()), Reach::Punch);
    }

    #[test]
    fn a_new_port_per_peer_is_symmetric() {
        let mut seen = Observations::new();
        seen.add(observed("10.77.0.2", "10.77.0.11:31000", "0.0.0.0:4663"));
        assert!(seen.add(observed("10.77.0.3", "10.77.0.11:52011", "0.0.0.0:4663")));
        assert_eq!(seen.kind(), NatKind::EndpointDependent);
        assert_eq!(seen.outside().len(), 2);
        assert_eq!(reach(Some(false), seen.kind()), Reach::PushOnly);
    }

    #[test]
    fn seen_at_our_own_address_is_no_nat() {
        let mut seen = Observations::new();
        seen.add(observed("203.0.113.9", "198.51.100.7:4663", "198.51.100.7:4663"));
        assert_eq!(seen.kind(), NatKind::None);
        assert_eq!(reach(Some(true), seen.kind()), Reach::Direct);
    }

    #[test]
    fn a_restart_on_another_port_starts_the_comparison_over() {
        let mut seen = Observations::new();
        seen.add(observed("10.77.0.2", "10.77.0.11:31000", "0.0.0.0:4663"));
        seen.add(observed("10.77.0.3", "10.77.0.11:40000", "0.0.0.0:5000"));
        assert_eq!(seen.kind(), NatKind::Unknown);
    }

    #[test]
    fn an_observer_counts_once_and_the_list_stays_bounded() {
        let mut seen = Observations::new();
        for port in 0..100u16 {
            seen.add(observed(
                "10.77.0.2",
                &format!("10.77.0.11:{}", 1000 + port),
                "0.0.0.0:4663",
            ));
        }
        assert_eq!(seen.observers(), 1);
        for host in 0..100u8 {
            seen.add(observed(
                &format!("10.1.0.{host}"),
                "10.77.0.11:4663",
                "0.0.0.0:4663",
            ));
        }
        assert_eq!(seen.observers(), MAX_OBSERVATIONS);
    }

    #[test]
    fn private_addresses_stay_home() {
        let home = at("192.168.1.2:4663");
        assert!(!publishable(home, "8.8.8.8".parse().unwrap()));
        assert!(publishable(home, "192.168.1.7".parse().unwrap()), "same home");
        assert!(
            publishable(at("127.0.0.1:4663"), "127.0.0.1".parse().unwrap()),
            "tests on loopback"
        );
        assert!(!publishable(at("0.0.0.0:4663"), "127.0.0.1".parse().unwrap()));
        assert!(
            !publishable(at("100.64.3.4:4663"), "8.8.8.8".parse().unwrap()),
            "CGNAT"
        );
        assert!(!publishable(at("[fe80::1]:4663"), "2a00::1".parse().unwrap()));
        assert!(!publishable(
            at("[::ffff:10.0.0.1]:4663"),
            "8.8.8.8".parse().unwrap()
        ));
        assert!(publishable(at("8.8.4.4:4663"), "8.8.8.8".parse().unwrap()));
        assert!(publishable(at("[2a00:1450::1]:4663"), "2a00::1".parse().unwrap()));
        assert_eq!(shown_to(home, "8.8.8.8".parse().unwrap()), at("0.0.0.0:4663"));
        assert_eq!(shown_to(home, "192.168.1.7".parse().unwrap()), home);
    }

    proptest! {
        /// Whatever the addresses, a non-global one never goes to a global peer.
        #[test]
        fn no_private_address_reaches_a_global_peer(addr in any::<SocketAddr>(), to in any::<IpAddr>()) {
            if publishable(addr, to) && is_global(to) {
                prop_assert!(is_global(addr.ip()));
            }
        }

        /// The verdict never panics and the list never outgrows its bound.
        #[test]
        fn observations_stay_bounded(list in proptest::collection::vec(
            (any::<IpAddr>(), any::<SocketAddr>(), any::<SocketAddr>()), 0..64)) {
            let mut seen = Observations::new();
            for (observer, seen_at, local) in list {
                seen.add(Observation { observer, seen: seen_at, local });
                prop_assert!(seen.observers() <= MAX_OBSERVATIONS);
                let _ = reach(Some(false), seen.kind());
            }
        }
    }
}

// Which way a download reaches its source.
//
// The rule below is the one the real downloader follows
// (`node/src/download/source.rs`, `Source::run` and `Source::through`),
// written as one pure function of the two routers so the simulator runs
// it over a whole population (`netsim/src/traversal.rs`), and tested pair
// by pair against the table in docs/NAT.md.

/// What lies between a machine and the internet, as far as reaching it
/// goes: the four homes of the test bed (`bench/nat.sh`) and of the
/// simulator. Every kind with a router filters as home routers do
/// (RFC 4787 address-and-port-dependent filtering: only an answer to a
/// packet sent to exactly that address and port gets in); they differ in
/// how they map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouterKind {
    /// No router: the machine's own address is global, and anyone may dial it.
    Public,
    /// Endpoint-independent mapping (nftables `masquerade`): one outside
    /// port towards every peer, so a punched hole meets the peer's packets.
    Cone,
    /// Endpoint-dependent mapping (`masquerade random`): a new outside
    /// port per peer, so the port its supernode saw is not the port a
    /// peer's packets come from or go to.
    Symmetric,
    /// A cone whose router forwards the node's port on request (PCP,
    /// NAT-PMP or UPnP-IGD: `common::proto::portmap`): dialed like a
    /// public machine.
    Mapped,
}

impl RouterKind {
    /// Every kind, in the order tables list them.
    pub const ALL: [RouterKind; 4] = [
        RouterKind::Public,
        RouterKind::Cone,
        RouterKind::Symmetric,
        RouterKind::Mapped,
    ];

    /// A short name for tables and CSV.
    pub fn label(self) -> &'static str {
        match self {
            RouterKind::Public => "public",
            RouterKind::Cone => "cone",
            RouterKind::Symmetric => "symmetric",
            RouterKind::Mapped => "mapped",
        }
    }

    /// Whether a stranger's connection gets in: what the election's
    /// dial-back finds. Only such a node may be a supernode, and only such
    /// a source is listed at its address and dialed.
    pub fn accepts_connections(self) -> bool {
        matches!(self, RouterKind::Public | RouterKind::Mapped)
    }

    /// What the node's own observations make of its router
    /// ([`Observations::kind`] once two peers have said where they see it).
    pub fn nat_kind(self) -> NatKind {
        match self {
            RouterKind::Public => NatKind::None,
            RouterKind::Cone | RouterKind::Mapped => NatKind::EndpointIndependent,
            RouterKind::Symmetric => NatKind::EndpointDependent,
        }
    }

    /// How the node says peers reach it: [`reach`] of its dial-back and
    /// its router's kind.
    pub fn reach(self) -> Reach {
        reach(Some(self.accepts_connections()), self.nat_kind())
    }

    /// What a downloader behind this router says of itself when it asks
    /// for a way to a leaf (`Request::Traverse`).
    pub fn as_downloader(self) -> super::birthday::Downloader {
        super::birthday::Downloader {
            symmetric: self.nat_kind() == NatKind::EndpointDependent,
            accepts: self.accepts_connections(),
        }
    }

    /// What a current leaf behind this router tells its supernode
    /// (`Request::Traits`).
    pub fn as_leaf(self) -> super::birthday::Traits {
        super::birthday::Traits {
            symmetric: self.nat_kind() == NatKind::EndpointDependent,
            features: super::birthday::FEATURE_BIRTHDAY,
        }
    }
}

/// The way a downloader's connection to a source got through (the
/// `"path"` that `canopy get --json` prints for each source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    /// The downloader dialed the source at its listed address.
    Direct,
    /// The source dialed the downloader, asked by its supernode; the
    /// downloader's router (if any) let it in unasked.
    Pushed,
    /// The source dialed the downloader through a hole the downloader's
    /// packets had opened in its own router.
    Punched,
    /// The source's supernode forwarded the datagrams between the two.
    Relayed,
}

impl Path {
    /// Every way, cheapest first: the order the downloader tries them in.
    pub const ALL: [Path; 4] = [Path::Direct, Path::Pushed, Path::Punched, Path::Relayed];

    pub fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Pushed => "pushed",
            Path::Punched => "punched",
            Path::Relayed => "relayed",
        }
    }
}

/// Which way a downloader behind `downloader` gets a connection to a
/// source behind `source`, trying the ways in the real downloader's order:
///
/// 1. A source that accepts connections is listed at its address, and
///    the downloader dials it: **direct**, whatever the downloader's router.
/// 2. Any other source is listed through its supernode, which plans the
///    way from both routers ([`birthday::plan`](super::birthday::plan)).
///    A downloader that accepts connections is simply called: the source
///    dials the downloader's address as the supernode saw it, and it gets
///    in unasked: **pushed**.
/// 3. Otherwise the call gets in only through a punched hole, which needs
///    at least one of the two routers to keep one outside port towards
///    every peer. **Both** do: a plain punch, the downloader's packets
///    leaving from the port the supernode saw towards the port the
///    supernode saw of the source, whose call leaves from that port
///    towards that one. **Exactly one** does: a **birthday punch**
///    ([`super::birthday`]): the symmetric (hard) side opens 256 ports
///    towards the cone (easy) side's one outside address, the easy side
///    sprays two rounds of 1,024 probes at random ports of the hard side's
///    IP, and the hard side dials from the port a probe reached, whichever
///    side downloads. Either way: **punched**.
/// 4. Both routers symmetric: neither side knows a port to aim at, and the
///    supernode plans the relay straight away: **relayed**.
///
/// This is the way the routers allow; a punch may still fail (a plain one
/// by timing, lost packets or a router that filters more than it should,
/// a birthday one when no probe lands), and the downloader then takes the
/// relay, as it does after a second: the simulator rolls those dice. The
/// leaf is taken to speak birthday punching (`Request::Traits` with
/// `FEATURE_BIRTHDAY`); an older one takes part in plain punches only, so
/// with it a cone and a symmetric router are relayed.
///
/// Where it differs from the node: a downloader behind a mapped router
/// says it accepts connections, so it is pushed to (while it sends a
/// plain punch's packets, whatever the source's router) and `get --json`
/// says `"punched"` (it tells the two apart by whether the supernode sees
/// its own address); the source's call gets in through the forwarded port
/// whether or not the punch packets went out, so here that is **pushed**,
/// the way that let it in.
pub fn path(downloader: RouterKind, source: RouterKind) -> Path {
    let keeps_one_port = |kind: RouterKind| kind.nat_kind() == NatKind::EndpointIndependent;
    if source.accepts_connections() {
        Path::Direct
    } else if downloader.accepts_connections() {
        Path::Pushed
    } else if keeps_one_port(downloader) || keeps_one_port(source) {
        // Both: a plain punch; one: a birthday punch.
        Path::Punched
    } else {
        Path::Relayed
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;
    use RouterKind::{Cone, Mapped, Public, Symmetric};

    /// docs/NAT.md, "Which pairs transfer today" (measured in the test
    /// bed), plus the row of a downloader behind a mapped router. Cone ↔
    /// symmetric is a birthday punch, either way round.
    #[test]
    fn every_pair_of_homes_takes_the_documented_way() {
        use Path::{Direct as D, Punched as X, Pushed as P, Relayed as R};
        //                      source: public cone symmetric mapped
        let table = [
            (Public, [D, P, P, D]),
            (Cone, [D, X, X, D]),
            (Symmetric, [D, X, R, D]),
            (Mapped, [D, P, P, D]),
        ];
        for (downloader, row) in table {
            for (source, expected) in RouterKind::ALL.into_iter().zip(row) {
                assert_eq!(
                    path(downloader, source),
                    expected,
                    "{} downloading from {}",
                    downloader.label(),
                    source.label()
                );
            }
        }
    }

    #[test]
    fn kinds_say_what_the_nodes_own_verdicts_say() {
        assert_eq!(Public.reach(), Reach::Direct);
        assert_eq!(Mapped.reach(), Reach::Direct);
        assert_eq!(Cone.reach(), Reach::Punch);
        assert_eq!(Symmetric.reach(), Reach::PushOnly);
        // What a node's observations conclude is what the kind says.
        let seen_from = |kind: RouterKind| {
            let mut seen = Observations::new();
            let local: SocketAddr = match kind {
                Public => "198.51.100.7:4663",
                _ => "192.168.1.2:4663",
            }
            .parse()
            .unwrap();
            for (peer, outside_port) in [("203.0.113.1", 31000), ("203.0.113.2", 52011)] {
                let port = match kind {
                    Symmetric => outside_port,
                    _ => 4663,
                };
                seen.add(Observation {
                    observer: peer.parse().unwrap(),
                    seen: SocketAddr::new("198.51.100.7".parse().unwrap(), port),
                    local,
                });
            }
            seen.kind()
        };
        for kind in RouterKind::ALL {
            assert_eq!(seen_from(kind), kind.nat_kind(), "{}", kind.label());
        }
    }

    #[test]
    fn a_source_that_accepts_connections_is_dialed_and_no_other() {
        for downloader in RouterKind::ALL {
            for source in RouterKind::ALL {
                assert_eq!(
                    path(downloader, source) == Path::Direct,
                    source.accepts_connections()
                );
            }
        }
    }

    #[test]
    fn punching_works_both_ways_round_or_not_at_all() {
        for a in RouterKind::ALL {
            for b in RouterKind::ALL {
                assert_eq!(
                    path(a, b) == Path::Punched,
                    path(b, a) == Path::Punched,
                    "{} and {}",
                    a.label(),
                    b.label()
                );
            }
        }
    }

    #[test]
    fn the_relay_is_needed_exactly_when_two_symmetric_routers_meet() {
        for a in RouterKind::ALL {
            for b in RouterKind::ALL {
                let both_symmetric = a == Symmetric && b == Symmetric;
                assert_eq!(
                    path(a, b) == Path::Relayed,
                    both_symmetric,
                    "{} and {}",
                    a.label(),
                    b.label()
                );
            }
        }
    }

    /// What the source's supernode plans (`birthday::plan`, from what the
    /// downloader and a current leaf say of their routers) and what `path`
    /// says of the same two routers tell one story, pair by pair: a source
    /// that accepts connections is dialed without asking its supernode; a
    /// downloader that accepts them is pushed to; a plain punch between
    /// two cones; a birthday punch, the symmetric side opening ports and
    /// the cone side spraying, exactly between a cone and a symmetric
    /// router; the relay from the start exactly when no punch can work.
    #[test]
    fn path_and_the_supernodes_plan_tell_the_same_story() {
        use super::super::birthday::{plan, LeafOrder, Plan};
        let mut birthdays = 0;
        for downloader in RouterKind::ALL {
            for source in RouterKind::ALL {
                let way = path(downloader, source);
                let pair = format!("{} downloading from {}", downloader.label(), source.label());
                if source.accepts_connections() {
                    assert_eq!(way, Path::Direct, "{pair}");
                    continue;
                }
                let (ours, theirs) = plan(downloader.as_downloader(), Some(source.as_leaf()));
                let birthday = (downloader == Cone && source == Symmetric)
                    || (downloader == Symmetric && source == Cone);
                match (ours, theirs) {
                    (Plan::Punch, LeafOrder::Push) if downloader.accepts_connections() => {
                        assert_eq!(way, Path::Pushed, "{pair}")
                    }
                    (Plan::Punch, LeafOrder::Push) => {
                        assert_eq!((downloader, source), (Cone, Cone), "{pair}: a plain punch");
                        assert_eq!(way, Path::Punched, "{pair}");
                    }
                    // The symmetric side opens, the cone side sprays.
                    (Plan::Open, LeafOrder::Spray) | (Plan::Spray, LeafOrder::Open) => {
                        assert!(birthday, "{pair}: a birthday punch");
                        assert_eq!(ours == Plan::Open, downloader == Symmetric, "{pair}");
                        assert_eq!(way, Path::Punched, "{pair}");
                        birthdays += 1;
                    }
                    (Plan::Relay, LeafOrder::Nothing) => {
                        assert_eq!(way, Path::Relayed, "{pair}")
                    }
                    other => panic!("{pair}: an unexpected plan {other:?}"),
                }
                assert_eq!(birthday, matches!(ours, Plan::Open | Plan::Spray), "{pair}");
            }
        }
        assert_eq!(birthdays, 2, "cone → symmetric and symmetric → cone");
    }

    /// A better router on either side never makes the way worse: the
    /// order of [`Path::ALL`] is the order of cost.
    #[test]
    fn a_better_router_never_makes_the_way_worse() {
        let rank = |kind: RouterKind| match kind {
            Symmetric => 0,
            Cone => 1,
            Public | Mapped => 2,
        };
        for a in RouterKind::ALL {
            for b in RouterKind::ALL {
                for better in RouterKind::ALL.into_iter().filter(|&k| rank(k) >= rank(a)) {
                    assert!(path(better, b) <= path(a, b));
                    assert!(path(b, better) <= path(b, a));
                }
            }
        }
    }
}
