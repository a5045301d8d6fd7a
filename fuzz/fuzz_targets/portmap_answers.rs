//! What a home router (or anything on the LAN answering from its address)
//! sends back when a node asks for a port: NAT-PMP and PCP datagrams, SSDP
//! search answers, HTTP answers read in any number of pieces, device
//! descriptions and SOAP bodies. Every parser ends in an answer or an
//! error, never a panic or an unbounded allocation, and a control URL
//! always points at the router that answered.
#![no_main]

use std::net::Ipv4Addr;

use canopy_common::proto::portmap::{natpmp, pcp, upnp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = natpmp::parse_answer(data);
    let _ = pcp::parse_map_answer(data, &[7; 12]);
    let _ = upnp::location(data);
    // The answer arriving in two pieces, then closed.
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let _ = upnp::parse_response(&data[..cut], false);
    if let Ok(Some(response)) = upnp::parse_response(data, true) {
        assert!(response.body.len() <= upnp::MAX_RESPONSE);
        let _ = upnp::soap_outcome(&response);
    }
    let text = String::from_utf8_lossy(data);
    let router = upnp::Url::parse("http://192.168.1.1:5000/rootDesc.xml").expect("a valid URL");
    if let Ok(service) = upnp::find_service(&text, &router) {
        assert_eq!(*service.control.host.ip(), Ipv4Addr::new(192, 168, 1, 1));
        let _ = upnp::soap_request(&service, upnp::Action::GetExternalIpAddress);
    }
    let _ = upnp::external_ip(&text);
});
