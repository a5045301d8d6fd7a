//! The last resort for two peers that cannot reach each other: a supernode
//! forwards their UDP datagrams, TURN-like (RFC 8656 in spirit, far
//! simpler). Used when both sit behind routers that give every peer a new
//! port ("symmetric"), where a punched hole is aimed at the wrong port.
//!
//! The QUIC connection stays end to end: the relay forwards datagrams byte
//! for byte and sees only ciphertext; each peer's TLS handshake still
//! checks the other's key, so the relay can neither read nor forge either
//! side. One UDP port per pair tells the pairs apart (a datagram says
//! nothing of which pair it belongs to).
//!
//! The exchange (PROTOCOL §12.2): the downloader asks `Relay { leaf }` and
//! gets a port and a token; it sends **bind packets** (magic + token) to
//! that port from its listening port, which tells the relay its outside
//! address and opens its router; the relay then has the leaf dial the
//! relay's port as if it were the downloader (an ordinary push), and from
//! then on forwards between the two. This module is the pure half: what to
//! do with one datagram.

use std::net::{IpAddr, SocketAddr};

/// A bind packet: `BIND_MAGIC` and the pair's token, 20 bytes. Under 22
/// bytes, so a QUIC endpoint that receives one drops it without answering.
pub const BIND_MAGIC: [u8; 4] = *b"CRB0";
pub const TOKEN_LEN: usize = 16;
pub const BIND_LEN: usize = BIND_MAGIC.len() + TOKEN_LEN;

/// What proves a bind packet comes from the peer that asked: sent to it
/// alone, inside its TLS connection to the supernode.
pub type Token = [u8; TOKEN_LEN];

/// The bind packet for `token`.
pub fn bind_packet(token: &Token) -> [u8; BIND_LEN] {
    let mut packet = [0u8; BIND_LEN];
    packet[..BIND_MAGIC.len()].copy_from_slice(&BIND_MAGIC);
    packet[BIND_MAGIC.len()..].copy_from_slice(token);
    packet
}

/// One relayed pair, as its port sees datagrams.
#[derive(Debug, Clone)]
pub struct RelayPair {
    token: Token,
    /// The asker's IP as the supernode saw its request: binds from
    /// anywhere else are ignored.
    asker_ip: IpAddr,
    /// The leaf's IP as its session comes from: the only IP the other
    /// side may come from.
    leaf_ip: IpAddr,
    asker: Option<SocketAddr>,
    leaf: Option<SocketAddr>,
    forwarded: u64,
    max_bytes: u64,
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid bind: the asker is at this address now. The first one is
    /// the signal to have the leaf dial in.
    Bound {
        first: bool,
    },
    /// Send the datagram on to this address.
    Forward(SocketAddr),
    Drop(Dropped),
}

/// Why a datagram was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// From neither side of the pair (or a bind with the wrong token).
    Stranger,
    /// The other side is not known yet.
    Waiting,
    /// The pair has moved its byte allowance.
    OverAllowance,
}

impl RelayPair {
    pub fn new(token: Token, asker_ip: IpAddr, leaf_ip: IpAddr, max_bytes: u64) -> Self {
        RelayPair {
            token,
            asker_ip,
            leaf_ip,
            asker: None,
            leaf: None,
            forwarded: 0,
            max_bytes,
        }
    }

    /// Bytes forwarded so far, both ways.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// Judges a datagram of `payload` from `from`. A forwarded datagram is
    /// counted against the pair's allowance.
    pub fn on_datagram(&mut self, from: SocketAddr, payload: &[u8]) -> Verdict {
        let is_bind = payload.len() == BIND_LEN
            && payload[..BIND_MAGIC.len()] == BIND_MAGIC
            && payload[BIND_MAGIC.len()..] == self.token;
        if is_bind {
            if from.ip() != self.asker_ip {
                return Verdict::Drop(Dropped::Stranger);
            }
            // The asker's router may move it to another port; its latest
            // bind says where it is.
            let first = self.asker.is_none();
            self.asker = Some(from);
            return Verdict::Bound { first };
        }
        let to = if Some(from) == self.asker {
            match self.leaf {
                Some(leaf) => leaf,
                None => return Verdict::Drop(Dropped::Waiting),
            }
        } else if from.ip() == self.leaf_ip && self.leaf.is_none_or(|leaf| leaf == from) {
            // The leaf dials only once told, which is after the asker bound.
            match self.asker {
                Some(asker) => {
                    self.leaf = Some(from);
                    asker
                }
                None => return Verdict::Drop(Dropped::Waiting),
            }
        } else {
            return Verdict::Drop(Dropped::Stranger);
        };
        let len = payload.len() as u64;
        if self.forwarded + len > self.max_bytes {
            return Verdict::Drop(Dropped::OverAllowance);
        }
        self.forwarded += len;
        Verdict::Forward(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: Token = [7; TOKEN_LEN];

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn pair() -> RelayPair {
        RelayPair::new(
            TOKEN,
            "10.77.0.11".parse().unwrap(),
            "10.77.0.12".parse().unwrap(),
            10_000,
        )
    }

    #[test]
    fn a_bound_pair_forwards_both_ways() {
        let mut pair = pair();
        let asker = at("10.77.0.11:31000");
        let leaf = at("10.77.0.12:52000");
        assert_eq!(
            pair.on_datagram(asker, b"early"),
            Verdict::Drop(Dropped::Stranger)
        );
        assert_eq!(
            pair.on_datagram(leaf, &[0; 1200]),
            Verdict::Drop(Dropped::Waiting)
        );
        assert_eq!(
            pair.on_datagram(asker, &bind_packet(&TOKEN)),
            Verdict::Bound { first: true }
        );
        assert_eq!(
            pair.on_datagram(asker, &bind_packet(&TOKEN)),
            Verdict::Bound { first: false }
        );
        assert_eq!(
            pair.on_datagram(asker, &[0; 1200]),
            Verdict::Drop(Dropped::Waiting)
        );
        assert_eq!(pair.on_datagram(leaf, &[0; 1200]), Verdict::Forward(asker));
        assert_eq!(pair.on_datagram(asker, &[0; 1200]), Verdict::Forward(leaf));
        assert_eq!(pair.forwarded(), 2400);
        // Another port at the leaf's IP is not the leaf.
        assert_eq!(
            pair.on_datagram(at("10.77.0.12:52001"), &[0; 100]),
            Verdict::Drop(Dropped::Stranger)
        );
    }

    #[test]
    fn binds_need_the_token_and_the_askers_address() {
        let mut pair = pair();
        assert_eq!(
            pair.on_datagram(at("10.77.0.11:31000"), &bind_packet(&[8; TOKEN_LEN])),
            Verdict::Drop(Dropped::Stranger)
        );
        assert_eq!(
            pair.on_datagram(at("10.9.9.9:31000"), &bind_packet(&TOKEN)),
            Verdict::Drop(Dropped::Stranger),
            "a stolen token from elsewhere"
        );
    }

    #[test]
    fn the_allowance_ends_forwarding() {
        let mut pair = pair();
        let (asker, leaf) = (at("10.77.0.11:1"), at("10.77.0.12:2"));
        pair.on_datagram(asker, &bind_packet(&TOKEN));
        let mut forwarded = 0;
        while let Verdict::Forward(_) = pair.on_datagram(leaf, &[0; 1000]) {
            forwarded += 1;
        }
        assert_eq!(forwarded, 10);
        assert_eq!(
            pair.on_datagram(leaf, &[0; 1000]),
            Verdict::Drop(Dropped::OverAllowance)
        );
    }

    proptest! {
        /// Whatever arrives, nothing goes anywhere but the two sides, and
        /// never past the allowance.
        #[test]
        fn forwards_only_between_the_two(datagrams in proptest::collection::vec(
            (0u8..4, 0u16..4, proptest::collection::vec(any::<u8>(), 0..1500), any::<bool>()), 0..64)) {
            let mut pair = pair();
            let ips = ["10.77.0.11", "10.77.0.12", "10.1.1.1", "10.77.0.13"];
            for (ip, port, payload, bind) in datagrams {
                let from = SocketAddr::new(ips[ip as usize].parse().unwrap(), 1000 + port);
                let payload = if bind { bind_packet(&TOKEN).to_vec() } else { payload };
                if let Verdict::Forward(to) = pair.on_datagram(from, &payload) {
                    prop_assert!(to.ip() == ips[0].parse::<IpAddr>().unwrap() || to.ip() == ips[1].parse::<IpAddr>().unwrap());
                    prop_assert!(to != from);
                }
                prop_assert!(pair.forwarded() <= 10_000);
            }
        }
    }
}
