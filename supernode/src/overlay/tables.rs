//! Keyword tables: sending neighbours what changed in ours, and our degree.

use super::*;

impl Overlay {
    /// Sends neighbours what changed in our tables, and our degree if it
    /// changed. An update that cannot be queued makes that link start
    /// over with resets, so a neighbour never holds a table we did not send.
    pub(super) fn send_tables(&self) {
        if !self.config.keyword_routing {
            return;
        }
        let updates = self.index.horizon().locked().updates_to_send();
        let mut lost = HashSet::new();
        for (to, level, update, more) in updates {
            if lost.contains(&to) {
                continue;
            }
            let message = OverlayMessage::KeywordTable { level, update, more };
            let bytes = encoded_len(&message);
            if self.send_to(to, message) {
                self.stats.table_bytes_sent.fetch_add(bytes, Ordering::Relaxed);
            } else {
                lost.insert(to);
            }
        }
        if !lost.is_empty() {
            let mut horizon = self.index.horizon().locked();
            for peer in &lost {
                horizon.resend(peer);
            }
        }
        let mut state = self.state();
        let degree = state.degree();
        for neighbour in state.neighbours.values_mut() {
            if neighbour.tables
                && neighbour.degree_sent != degree
                && neighbour
                    .outbox
                    .try_send(OverlayMessage::Degree { neighbours: degree })
                    .is_ok()
            {
                neighbour.degree_sent = degree;
            }
        }
    }
}
