//! Where someone is reading a file that is still downloading, so the
//! download fetches what they read next before anything else.
//!
//! A player in the browser streams a film from the app while it downloads
//! ([`crate::web::play`]): each of its reads registers a [`Reader`] at the
//! block it needs, and every source's next request starts from there
//! ([`super::scheduler::Scheduler::set_focus`]) instead of from the first
//! missing block. A seek is a new read further on; the reader that moved
//! last wins, because that is the one a person is waiting for.
//!
//! A focus is found by content hash ([`crate::share::Shares::focus`]) and
//! outlives any one run of the download: a player can ask for a file whose
//! download has not started yet (or was paused and resumed) and the run
//! that fetches it sees where the player is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use canopy_common::sync::Lock;

/// The readers of one file.
#[derive(Debug, Default)]
pub struct Focus {
    readers: Mutex<Vec<Position>>,
    next_reader: AtomicU64,
    /// Bumped at every move, to tell which reader moved last.
    clock: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    reader: u64,
    block: u32,
    moved: u64,
}

impl Focus {
    /// A new reader, at `block`; it leaves when dropped.
    pub fn reader(self: &Arc<Self>, block: u32) -> Reader {
        let reader = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let moved = self.clock.fetch_add(1, Ordering::Relaxed);
        self.readers.locked().push(Position { reader, block, moved });
        Reader {
            focus: self.clone(),
            id: reader,
        }
    }

    /// The block the reader who moved last waits for, if anyone reads.
    pub fn current(&self) -> Option<u32> {
        let readers = self.readers.locked();
        readers.iter().max_by_key(|p| p.moved).map(|p| p.block)
    }

    /// Whether anyone reads now.
    pub fn is_watched(&self) -> bool {
        !self.readers.locked().is_empty()
    }
}

/// One reader's place in a file; see [`Focus::reader`].
#[derive(Debug)]
pub struct Reader {
    focus: Arc<Focus>,
    id: u64,
}

impl Reader {
    /// The reader now waits for `block`.
    pub fn move_to(&self, block: u32) {
        let moved = self.focus.clock.fetch_add(1, Ordering::Relaxed);
        let mut readers = self.focus.readers.locked();
        if let Some(position) = readers.iter_mut().find(|p| p.reader == self.id) {
            position.block = block;
            position.moved = moved;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.focus.readers.locked().retain(|p| p.reader != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_who_moved_last_sets_the_focus_and_leaving_clears_it() {
        let focus = Arc::new(Focus::default());
        assert_eq!(focus.current(), None);
        let player = focus.reader(0);
        let prefetch = focus.reader(90);
        assert_eq!(focus.current(), Some(90));
        player.move_to(12);
        assert_eq!(focus.current(), Some(12));
        drop(player);
        assert_eq!(focus.current(), Some(90));
        drop(prefetch);
        assert_eq!(focus.current(), None);
        assert!(!focus.is_watched());
    }
}
