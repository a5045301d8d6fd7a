//! Keyword routing and dynamic querying in whole runs: they must save
//! query messages without losing files, and stay deterministic.

use canopy_netsim::{run, Scenario};

fn canopy(nodes: u32) -> Scenario {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/canopy.toml")).unwrap();
    let mut s = Scenario::parse(&text).unwrap();
    s.nodes = nodes;
    s.queries.count = 300;
    s.queries.warmup_s = 300.0;
    s
}

#[test]
fn tables_and_dynamic_querying_send_fewer_queries_and_find_as_much() {
    let plain = canopy(6_000);
    let mut qrp = plain.clone();
    qrp.router.keyword_tables = true;
    qrp.router.dynamic = true;
    qrp.router.dynamic_max_ttl = 4;
    // Tables of the last hop only: a rare file needs the whole TTL.
    qrp.router.dynamic_broadcast_past_tables = 4;
    qrp.router.dynamic_max_widening_ttl = 4;
    let (_, before) = run(plain, 5);
    let (_, after) = run(qrp.clone(), 5);
    assert_eq!(before.routed_share, 0.0);
    assert!(after.routed_share > 0.0, "{after:?}");
    assert!(
        after.query_messages < before.query_messages,
        "{} vs {}",
        after.query_messages,
        before.query_messages
    );
    assert!(after.success_rare >= before.success_rare, "{after:?}");
    assert_eq!(format!("{after:?}"), format!("{:?}", run(qrp, 5).1));
}

#[test]
fn tables_alone_only_trim_the_last_hop() {
    let plain = canopy(6_000);
    let mut tables = plain.clone();
    tables.router.keyword_tables = true;
    let (_, before) = run(plain, 6);
    let (_, after) = run(tables, 6);
    // Same floods up to the last hop, so at least the same supernodes
    // answer (a pruned copy no longer takes a seen-cache slot that a
    // longer-lived copy could have used)...
    assert!(after.success_rare >= before.success_rare, "{after:?}");
    assert!(after.recall_popular >= before.recall_popular, "{after:?}");
    // ...for fewer messages.
    assert!(after.query_messages < before.query_messages, "{after:?}");
}

#[test]
fn horizon_tables_route_nearly_every_copy_and_lose_nothing() {
    let plain = canopy(6_000);
    let mut horizon = plain.clone();
    horizon.router.keyword_tables = true;
    horizon.router.table_levels = 3;
    horizon.router.dynamic = true;
    let (_, before) = run(plain, 7);
    let (_, after) = run(horizon, 7);
    assert!(after.routed_share >= 0.95, "{after:?}");
    assert!(
        after.query_messages * 2.0 < before.query_messages,
        "{after:?} vs {before:?}"
    );
    assert!(after.success_rare >= before.success_rare, "{after:?}");
}
