//! The pollution study, small: the defences must beat "none" by a clear
//! margin, and one seed must give one result.

use canopy_netsim::pollution::{run, Defence, Pollution};

/// 2,000 nodes (300 Sybils, 20 poisoners), 60 titles out over the first
/// day, about 6,700 searches: seconds in a debug build.
fn small() -> Pollution {
    Pollution {
        titles: 60,
        sybil_share: 0.15,
        searches_per_user: 4.0,
        duration_h: 36.0,
        lifetime_h: 8.0,
        ..Pollution::default()
    }
}

#[test]
fn votes_rank_authentic_files_first_far_more_often_than_source_counts() {
    let config = small();
    let [none, possession, _, _, all] = Defence::ALL;
    let none = run(&config, 2_000, 1, none);
    let possession = run(&config, 2_000, 1, possession);
    let all = run(&config, 2_000, 1, all);
    eprintln!(
        "top authentic: none {:.3}, all {:.3}",
        none.top_authentic, all.top_authentic
    );
    assert!(none.searches > 4_000, "{none:?}");
    // Sybil-inflated decoys win on source counts alone for a good share of
    // searches; votes must take back most of it.
    assert!(
        none.top_authentic < 0.9,
        "the scenario must be polluted: {none:?}"
    );
    assert!(
        all.top_authentic > none.top_authentic + 0.08,
        "all {:.3} vs none {:.3}",
        all.top_authentic,
        none.top_authentic
    );
    assert!(all.fakes_before_good < none.fakes_before_good * 0.6);
    // Possession checks drain poisoned entries: far fewer dead downloads.
    assert!(
        possession.failed_per_search < none.failed_per_search * 0.5,
        "{possession:?} {none:?}"
    );
    // Votes cost bytes, bounded by the per-hit cap (nine results at most).
    assert_eq!(none.hit_vote_bytes_per_search, 0.0);
    assert!(all.hit_vote_bytes_per_search > 0.0 && all.hit_votes_per_search <= 8.0 * 9.0);
}

#[test]
fn one_seed_one_result() {
    let config = Pollution {
        titles: 20,
        searches_per_user: 3.0,
        ..small()
    };
    let a = run(&config, 600, 5, Defence::ALL[4]);
    let b = run(&config, 600, 5, Defence::ALL[4]);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    let c = run(&config, 600, 6, Defence::ALL[4]);
    assert_ne!(format!("{a:?}"), format!("{c:?}"));
}

/// The node's channels (pollution.toml): supernode stores asked about the
/// results and the user's own files, swaps on download, and asking the
/// voters met. Asking must add a clear margin over the rest, and the met
/// voters must be asked (messages counted).
#[test]
fn asking_the_voters_met_adds_to_the_nodes_other_channels() {
    let node = Pollution {
        vote_sources_per_hit: 0,
        store_votes: 8,
        gather_own: true,
        exchange_votes: 32,
        ask_trusted: 8,
        ask_met_only: true,
        searches_per_user: 8.0,
        ..small()
    };
    let without = Pollution {
        ask_trusted: 0,
        ..node.clone()
    };
    let votes = Defence::ALL[2];
    let asked = run(&node, 2_000, 1, votes);
    let not_asked = run(&without, 2_000, 1, votes);
    eprintln!(
        "top authentic: asking {:.3}, not asking {:.3}",
        asked.top_authentic, not_asked.top_authentic
    );
    assert!(asked.ask_messages_per_search > 0.0, "{asked:?}");
    assert_eq!(not_asked.ask_messages_per_search, 0.0);
    assert!(
        asked.top_authentic > not_asked.top_authentic + 0.03,
        "asking {:.3} vs not {:.3}",
        asked.top_authentic,
        not_asked.top_authentic
    );
}
