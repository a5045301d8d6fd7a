//! Sizing up candidates and keeping the nearest: how leaves pick their
//! supernodes and supernodes their neighbours. A search's first hit is a
//! few supernode hops away and each hop costs a round trip, so nearness is
//! worth a few extra handshakes (docs/QRP.md: near peers of 16 brought the
//! median first hit at 10^6 nodes from 0.52 s to 0.40 s).
//!
//! The real nodes measure round trips with QUIC handshakes
//! (`net::Endpoint::connect_nearest`); the simulator with its latency
//! model. Both keep the nearest the same way.

/// Candidates sized up for each one kept.
pub const SIZE_UP: usize = 16;
/// Candidates sized up at once at most: a node wanting several links sizes
/// them up a few at a time rather than dialling dozens in one burst.
pub const MAX_SIZING_UP: usize = 32;

/// For `wanted` more links: how many to look for now, and how many
/// candidates to size up for them.
pub fn sizing_up(wanted: usize) -> (usize, usize) {
    let now = wanted.min(MAX_SIZING_UP / SIZE_UP);
    (now, now * SIZE_UP)
}

/// Candidates with how far each is (a round trip, a modelled latency).
pub type Measured<T, D> = Vec<(T, D)>;

/// Splits measured candidates into the `keep` nearest (nearest first;
/// equally near ones keep the order given) and the rest.
pub fn keep_nearest<T, D: Ord + Copy>(
    mut measured: Measured<T, D>,
    keep: usize,
) -> (Measured<T, D>, Measured<T, D>) {
    measured.sort_by_key(|&(_, distance)| distance);
    let farther = measured.split_off(keep.min(measured.len()));
    (measured, farther)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_nearest_in_order_and_equals_as_given() {
        let (kept, farther) = keep_nearest(vec![("a", 30), ("b", 10), ("c", 10), ("d", 20)], 2);
        assert_eq!(kept, vec![("b", 10), ("c", 10)]);
        assert_eq!(farther, vec![("d", 20), ("a", 30)]);
        let (kept, farther) = keep_nearest(vec![("a", 1)], 4);
        assert_eq!((kept.len(), farther.len()), (1, 0));
    }

    #[test]
    fn sizing_up_stays_under_the_dial_cap() {
        assert_eq!(sizing_up(1), (1, 16));
        assert_eq!(sizing_up(5), (2, 32));
        assert_eq!(sizing_up(0), (0, 0));
    }
}
