//! Locking the std mutexes that guard the node's shared maps.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, poisoned or not. A poisoned lock only means another thread
/// panicked while holding it; the maps these mutexes guard stay consistent
/// (every update is a single insert or remove), so the lock is taken
/// rather than the panic spread.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
