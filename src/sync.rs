//! The library's blocking locks: [`Mutex`] and [`RwLock`], `std::sync`'s without poisoning.
//!
//! The library's critical sections are short and never call user code (processors run
//! outside every lock), so a panic while one of these locks is held can only come from a bug
//! in the library itself. `std`'s answer to such a panic is to poison the lock, after which
//! every `lock().unwrap()` panics too: one bug would spread to every task that touches the
//! lock (through the lease coordinator's, to the whole worker). These wrappers hand out the
//! guard of a poisoned lock as if it were not poisoned, as `parking_lot`'s locks do: the data
//! is as the panicking section left it, and the panic itself is still reported where it
//! happened (a contained task panic, logged). So no library path panics on a lock, and this
//! is the one place that says why.

use std::sync::PoisonError;

pub(crate) use std::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

/// A mutual-exclusion lock whose [`lock`](Mutex::lock) cannot fail (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    /// A new unlocked mutex holding `value`.
    pub(crate) const fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }

    /// The value, consuming the mutex.
    #[allow(dead_code)] // used by some builds only (tests, the testing kit)
    pub(crate) fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Blocks until the lock is held.
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value, through an exclusive borrow (no locking needed).
    #[allow(dead_code)] // used by some builds only (tests, the testing kit)
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A reader-writer lock whose [`read`](RwLock::read) and [`write`](RwLock::write) cannot fail
/// (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct RwLock<T: ?Sized>(std::sync::RwLock<T>);

// Used by the `prometheus` and `cloudwatch` features only.
#[allow(dead_code)]
impl<T> RwLock<T> {
    /// A new unlocked lock holding `value`.
    pub(crate) const fn new(value: T) -> Self {
        RwLock(std::sync::RwLock::new(value))
    }
}

#[allow(dead_code)]
impl<T: ?Sized> RwLock<T> {
    /// Blocks until shared access is held.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until exclusive access is held.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_panic_while_holding_a_lock_does_not_poison_it() {
        let m = Arc::new(Mutex::new(1));
        let rw = Arc::new(RwLock::new(1));
        let (m2, rw2) = (m.clone(), rw.clone());
        let joined = std::thread::spawn(move || {
            let _g = m2.lock();
            let _w = rw2.write();
            panic!("a bug while holding both locks");
        })
        .join();
        assert!(joined.is_err());
        *m.lock() += 1;
        *rw.write() += 1;
        assert_eq!((*m.lock(), *rw.read()), (2, 2));
    }
}
