//! What a relay port receives from anyone on the internet: any sequence of
//! datagrams from any addresses is judged without panicking, forwarded only
//! between the pair's two sides, and never past the pair's allowance.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use canopy_common::proto::relay::{bind_packet, RelayPair, Verdict};
use libfuzzer_sys::fuzz_target;

const ASKER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const LEAF: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const ALLOWANCE: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let token = [9u8; 16];
    let mut pair = RelayPair::new(token, ASKER, LEAF, ALLOWANCE);
    // Each datagram: one byte picks the sender (IP and port), one its
    // length, then that many bytes (a length of 255 sends the bind packet).
    let mut rest = data;
    while let [who, len, tail @ ..] = rest {
        let ip = [ASKER, LEAF, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))][(*who % 3) as usize];
        let from = SocketAddr::new(ip, 1000 + u16::from(*who / 3 % 4));
        let (payload, after) = match *len {
            255 => (bind_packet(&token).to_vec(), tail),
            n => {
                let n = (n as usize).min(tail.len());
                (tail[..n].to_vec(), &tail[n..])
            }
        };
        if let Verdict::Forward(to) = pair.on_datagram(from, &payload) {
            assert!(to.ip() == ASKER || to.ip() == LEAF);
            assert_ne!(to, from);
        }
        assert!(pair.forwarded() <= ALLOWANCE);
        rest = after;
    }
});
