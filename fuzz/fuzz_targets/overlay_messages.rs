//! What a neighbour supernode sends on an overlay link: queries, hits, host
//! lists, keyword tables, its degree and votes with hits. Decoding, the caps checks, the
//! flooding router and the keyword horizon must take any bytes without a
//! panic, and the router must stay within its bounds.
#![no_main]

use std::time::Duration;

use canopy_common::proto::frame::{decode, encode, MAX_CONTROL_FRAME};
use canopy_common::proto::qrp::horizon::{Horizon, HorizonConfig};
use canopy_common::proto::routing::{Origin, Router, RouterConfig};
use canopy_common::proto::wire::{LinkNotice, OverlayMessage};
use canopy_common::proto::{PeerId, Query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((notice, used))) = decode::<LinkNotice>(data, MAX_CONTROL_FRAME) {
        assert_eq!(encode(&notice, MAX_CONTROL_FRAME).unwrap(), &data[..used]);
    }
    let Ok(Some((message, used))) = decode::<OverlayMessage>(data, MAX_CONTROL_FRAME) else {
        return;
    };
    assert_eq!(encode(&message, MAX_CONTROL_FRAME).unwrap(), &data[..used]);
    let config = RouterConfig {
        max_entries: 4,
        ..RouterConfig::default()
    };
    let max_ttl = config.max_ttl;
    let mut router = Router::new(config);
    let neighbours = [PeerId([1; 32]), PeerId([2; 32])];
    let now = Duration::from_secs(1);
    match message {
        OverlayMessage::Query(query) => {
            let _ = query.query.check();
            let id = query.id;
            for action in router.on_query(Origin::Neighbour(neighbours[0]), query, &neighbours, now) {
                if let canopy_common::proto::routing::Action::Forward { query, .. } = action {
                    assert!(query.ttl < max_ttl, "a forwarded TTL is capped");
                }
            }
            let _ = router.on_local_hits(id, Vec::new(), now);
        }
        OverlayMessage::Hits { id, hits } => {
            for hit in &hits {
                let _ = hit.check();
            }
            // Hits for a query never seen are dropped.
            assert!(router.on_hits(neighbours[1], id, hits, now).is_empty());
        }
        OverlayMessage::Supernodes { .. } => {}
        OverlayMessage::KeywordTable { level, update, more } => {
            let _ = update.check();
            let mut horizon = Horizon::new(HorizonConfig {
                levels: 3,
                log2_bits: 12,
            })
            .unwrap();
            horizon.link_up(neighbours[0]).unwrap();
            horizon.link_up(neighbours[1]).unwrap();
            // Twice: the second lands on whatever the first left.
            for _ in 0..2 {
                let _ = horizon.on_update(neighbours[0], level, &update, more);
            }
            // Whatever it holds now, routing by it and passing it on must not panic.
            for ttl in 0..4 {
                let _ = horizon.decide(neighbours[0], &Query::words("any words"), ttl);
            }
            let _ = horizon.reach(&neighbours[0], &Query::words("any"));
            let _ = horizon.updates_to_send();
        }
        OverlayMessage::Degree { .. } => {}
        OverlayMessage::HitNotes { id, votes, tags } => {
            // Checking any bytes as a vote or as tags never panics; notes
            // for a query never seen have nowhere to go.
            for vote in &votes {
                let _ = vote.verify(1_800_000_000);
            }
            for file in &tags {
                let _ = file.check();
            }
            assert_eq!(router.origin_of(id, now), None);
        }
    }
    assert!(router.len() <= 4);
});
