//! Locks that outlive a panic elsewhere.
//!
//! A `std` lock is *poisoned* when a thread panics while holding it, and
//! every later `lock().expect(…)` then panics too: one bug in one peer's
//! task would spread to every task touching the same state (a node's
//! shares, a supernode's sessions), turning one failed request into a dead
//! node. The data behind our locks is changed in short steps that leave it
//! usable, so, as `parking_lot` does, we take it as it is.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] that never fails.
pub trait Lock<T: ?Sized> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Lock<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that never fail.
pub trait ReadWrite<T: ?Sized> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> ReadWrite<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_holding_the_lock_does_not_spread() {
        let shared = std::sync::Arc::new(Mutex::new(1));
        let holder = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = holder.locked();
            panic!("a bug in one task");
        })
        .join();
        assert!(shared.is_poisoned());
        *shared.locked() += 1;
        assert_eq!(*shared.locked(), 2);
        let table = RwLock::new(vec![1]);
        table.write_locked().push(2);
        assert_eq!(table.read_locked().len(), 2);
    }
}
