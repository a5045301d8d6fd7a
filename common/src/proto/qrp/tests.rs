use proptest::prelude::*;

use super::*;
use crate::proto::frame::{encode, MAX_CONTROL_FRAME};
use crate::proto::{ContentHash, FileKind};

fn file(name: &str) -> FileEntry {
    FileEntry {
        hash: ContentHash([7; 32]),
        size: 1,
        name: name.into(),
        kind: FileKind::Other,
        meta: vec![],
    }
}

/// `count` distinct made-up words, starting at `first`.
fn made_up_words(first: usize, count: usize) -> Vec<String> {
    (first..first + count).map(|n| format!("w{n:x}q")).collect()
}

fn table_of(log2_bits: u8, words: &[String]) -> KeywordTable {
    let mut table = KeywordTable::new(log2_bits).unwrap();
    for word in words {
        table.insert_word(word);
    }
    table
}

/// Share of `probes` (words never inserted) that `table` claims to hold.
fn false_positive_rate(table: &KeywordTable, probes: &[String]) -> f64 {
    let hits = probes
        .iter()
        .filter(|word| table.contains_key(WordKey::of(word)))
        .count();
    hits as f64 / probes.len() as f64
}

#[test]
fn word_positions_are_a_fixed_function_of_the_word() {
    // Pinned: these bits are the wire format. If this fails, every peer's
    // tables change meaning; bump HASH_CONTEXT's version on purpose only.
    let key = WordKey::of("canopy");
    assert_eq!(key, WordKey::of("canopy"));
    assert_eq!(
        key.positions(16).collect::<Vec<_>>(),
        PINNED_CANOPY_POSITIONS_16.to_vec()
    );
}

const PINNED_CANOPY_POSITIONS_16: [usize; 2] = [12010, 26407];

#[test]
fn a_file_matches_queries_for_its_words_and_not_others() {
    let mut table = KeywordTable::new(DEFAULT_LOG2_BITS).unwrap();
    table.insert_file(&file("Nina Simone - Feeling Good.ogg"));
    assert!(table.may_match(&Query::words("feeling GOOD")));
    assert!(table.may_match(&Query::words("simone ogg")));
    assert!(!table.may_match(&Query::words("feeling bad")));
    // Words that cannot rule anything out.
    assert!(table.may_match(&Query::words("a")));
    assert!(table.may_match(&Query::for_hash(ContentHash([1; 32]))));
}

proptest! {
    #[test]
    fn no_false_negatives(
        names in prop::collection::vec("[A-Za-zÀ-ÿ0-9 ._-]{1,60}", 1..40),
        pick in any::<prop::sample::Index>(),
        log2_bits in MIN_LOG2_BITS..=MAX_LOG2_BITS,
    ) {
        let files: Vec<FileEntry> = names.iter().map(|name| file(name)).collect();
        let table = KeywordTable::of_files(log2_bits, &files).unwrap();
        let chosen = &files[pick.index(files.len())];
        // Any query made of the file's own words, in any case.
        let query = Query::words(chosen.name.to_uppercase());
        prop_assert!(table.may_match(&query));
        for word in keywords::file_words(chosen) {
            prop_assert!(table.may_match(&Query::words(word)));
        }
    }

    #[test]
    fn folding_equals_building_small(
        words in prop::collection::vec("[a-z]{2,12}", 0..200),
        from in 12u8..=MAX_LOG2_BITS,
        down in 0u8..6,
    ) {
        let to = from.saturating_sub(down).max(MIN_LOG2_BITS);
        prop_assert_eq!(table_of(from, &words).fold_to(to), table_of(to, &words));
    }

    #[test]
    fn updates_turn_any_table_into_any_other(
        before in prop::collection::vec("[a-z]{2,8}", 0..300),
        after in prop::collection::vec("[a-z]{2,8}", 0..300),
    ) {
        let old = table_of(12, &before);
        let new = table_of(12, &after);
        let mut patched = old.clone();
        for update in new.updates_since(Some(&old)) {
            patched.apply(&update).unwrap();
        }
        prop_assert_eq!(&patched, &new);
        prop_assert_eq!(KeywordTable::from_updates(&new.updates_since(None)).unwrap(), new);
    }
}

#[test]
fn union_holds_both_and_folds_to_the_smaller() {
    let mut big = table_of(18, &made_up_words(0, 100));
    let small = table_of(12, &made_up_words(100, 100));
    big.union(&small);
    assert_eq!(big.log2_bits(), 12);
    assert_eq!(big, table_of(12, &made_up_words(0, 200)));
}

#[test]
fn measured_false_positive_rates_stay_near_theory() {
    let probes = made_up_words(10_000_000, 20_000);
    // (table size, words shared): a leaf, a supernode with ~100 leaves'
    // distinct words, a busy supernode.
    for (log2_bits, count) in [(16, 2_000), (16, 10_000), (20, 50_000), (20, 200_000)] {
        let table = table_of(log2_bits, &made_up_words(0, count));
        let fill = table.fill();
        let measured = false_positive_rate(&table, &probes);
        let bits = (1u64 << log2_bits) as f64;
        let theory_fill = 1.0 - (-(POSITIONS_PER_WORD as f64) * count as f64 / bits).exp();
        println!(
            "2^{log2_bits} bits ({} B), {count} words: fill {fill:.3} (theory {theory_fill:.3}), \
             one-word false positives {:.4} (fill² {:.4})",
            table.byte_len(),
            measured,
            fill * fill
        );
        assert!((fill - theory_fill).abs() < 0.01, "fill {fill} vs {theory_fill}");
        assert!(
            (measured - fill * fill).abs() < 0.01 + fill * fill * 0.1,
            "{measured}"
        );
    }
}

#[test]
fn postcard_round_trip_and_refusal_of_bad_tables() {
    let table = table_of(DEFAULT_LOG2_BITS, &made_up_words(0, 500));
    let bytes = postcard::to_allocvec(&table).unwrap();
    assert_eq!(postcard::from_bytes::<KeywordTable>(&bytes).unwrap(), table);

    let wrong_length = RawTable {
        log2_bits: 12,
        words: vec![0; 3],
    };
    let bytes = postcard::to_allocvec(&wrong_length).unwrap();
    assert!(postcard::from_bytes::<KeywordTable>(&bytes).is_err());
    let too_big = RawTable {
        log2_bits: MAX_LOG2_BITS + 1,
        words: vec![0; (1 << (MAX_LOG2_BITS + 1)) / 64],
    };
    let bytes = postcard::to_allocvec(&too_big).unwrap();
    assert!(postcard::from_bytes::<KeywordTable>(&bytes).is_err());
    assert_eq!(
        KeywordTable::new(MIN_LOG2_BITS - 1),
        Err(TableError::Size(MIN_LOG2_BITS - 1))
    );
}

fn run(start: u32, words: &[u64]) -> WordRun {
    WordRun {
        start,
        xor_le: words.iter().flat_map(|word| word.to_le_bytes()).collect(),
    }
}

#[test]
fn updates_are_bounded_and_fit_a_control_frame() {
    // The densest case: every word of the largest table set. One run per
    // update, 8 bytes a word.
    let full = KeywordTable {
        log2_bits: MAX_LOG2_BITS,
        words: vec![u64::MAX; (1 << MAX_LOG2_BITS) / 64],
    };
    let updates = full.updates_since(None);
    assert!(updates[0].reset && updates[1..].iter().all(|update| !update.reset));
    let mut sent = 0;
    for update in &updates {
        assert!(update.cost() <= MAX_UPDATE_COST);
        let bytes = encode(update, MAX_CONTROL_FRAME).unwrap().len();
        assert!(bytes <= update.cost() + 16, "{bytes} vs cost {}", update.cost());
        sent += bytes;
    }
    assert!(sent < full.byte_len() + 64 * updates.len(), "{sent}");
    assert_eq!(KeywordTable::from_updates(&updates).unwrap(), full);
    // The worst case for overhead: every other word changed, one run each.
    let mut alternate = full.clone();
    alternate.words.iter_mut().step_by(2).for_each(|word| *word = 0);
    for update in alternate.updates_since(Some(&full)) {
        assert!(update.cost() <= MAX_UPDATE_COST);
        assert!(encode(&update, MAX_CONTROL_FRAME).is_ok());
    }
    // Nothing changed: nothing to send. An empty table still starts a link.
    assert!(full.updates_since(Some(&full)).is_empty());
    let empty = KeywordTable::new(12).unwrap();
    assert_eq!(empty.updates_since(None).len(), 1);
}

#[test]
fn bad_updates_are_refused_and_change_nothing() {
    let mut table = table_of(12, &made_up_words(0, 10));
    let before = table.clone();
    let update = |runs: Vec<WordRun>| TableUpdate {
        log2_bits: 12,
        reset: false,
        runs,
    };
    let out_of_range = update(vec![run(63, &[1, 1])]);
    assert!(matches!(
        table.apply(&out_of_range),
        Err(TableError::IndexOutOfRange { .. })
    ));
    let overlapping = update(vec![run(3, &[1, 1]), run(4, &[1])]);
    assert!(matches!(
        table.apply(&overlapping),
        Err(TableError::MalformedRun { start: 4 })
    ));
    let ragged = update(vec![WordRun {
        start: 0,
        xor_le: vec![1; 7],
    }]);
    assert!(matches!(
        table.apply(&ragged),
        Err(TableError::MalformedRun { start: 0 })
    ));
    let costly = TableUpdate {
        log2_bits: MAX_LOG2_BITS,
        reset: true,
        runs: vec![run(0, &vec![1; MAX_UPDATE_COST / 8])],
    };
    assert!(matches!(table.apply(&costly), Err(TableError::TooCostly(_))));
    let other_size = TableUpdate {
        log2_bits: 13,
        reset: false,
        runs: vec![],
    };
    assert!(matches!(
        table.apply(&other_size),
        Err(TableError::SizeMismatch { .. })
    ));
    assert_eq!(table, before);
    assert!(KeywordTable::from_updates(&[update(vec![run(0, &[1])])]).is_err());
}

#[test]
fn what_a_supernode_table_costs_to_send() {
    // A supernode of ~100 leaves sharing ~50 000 distinct words, in a
    // 2^20-bit table: the first table, then one new file of 4 words.
    let mut counts = KeywordCounts::new(MAX_LOG2_BITS).unwrap();
    for word in made_up_words(0, 50_000) {
        counts.add(&[WordKey::of(&word)]);
    }
    let first: usize = counts
        .table()
        .updates_since(None)
        .iter()
        .map(|update| encode(update, MAX_CONTROL_FRAME).unwrap().len())
        .sum();
    println!(
        "2^20-bit table of 50 000 words: {first} bytes to send first (raw {}), fill {:.3}",
        counts.table().byte_len(),
        counts.table().fill()
    );
    assert!(first <= counts.table().byte_len() + 1024);
}

#[test]
fn an_incremental_change_is_small() {
    let mut counts = KeywordCounts::new(DEFAULT_LOG2_BITS).unwrap();
    for n in 0..1000 {
        counts.add(&WordKey::of_file(&file(&format!("track {n} of the album w{n}"))));
    }
    let sent = counts.table().clone();
    counts.add(&WordKey::of_file(&file("Brand New Song.mp3")));
    let updates = counts.table().updates_since(Some(&sent));
    let bytes: usize = updates
        .iter()
        .map(|update| encode(update, MAX_CONTROL_FRAME).unwrap().len())
        .sum();
    println!(
        "one new file of 4 words: {bytes} bytes on the wire vs {} for the table",
        sent.byte_len()
    );
    assert!(bytes < 100, "{bytes}");
}

#[test]
fn counts_forget_a_file_only_when_no_other_file_has_its_words() {
    let mut counts = KeywordCounts::new(DEFAULT_LOG2_BITS).unwrap();
    let keep = WordKey::of_file(&file("Nina Simone - Feeling Good.ogg"));
    let gone = WordKey::of_file(&file("Nina Simone - Sinnerman.ogg"));
    counts.add(&keep);
    counts.add(&gone);
    counts.remove(&gone);
    let mut expected = KeywordTable::new(DEFAULT_LOG2_BITS).unwrap();
    expected.insert_file(&file("Nina Simone - Feeling Good.ogg"));
    assert_eq!(counts.table(), &expected);
    assert!(counts.table().may_match(&Query::words("nina")));
    assert!(!counts.table().may_match(&Query::words("sinnerman")));
}
