//! A small memo of successful results keyed by short strings: dashboards and
//! autoscalers send the same queries again and again, and some of their parts (parsing
//! the query, compiling or validating a regex) cost more than evaluating a one-series
//! query, the more so on a server whose caches other work has cooled.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Keeps up to `capacity` results of keys up to `max_key` bytes; when full, it starts
/// over (the set a client repeats is small, and a clear needs no bookkeeping per hit).
/// Failures are not kept: computing them again gives the same error.
pub(crate) struct Memo<V> {
    map: OnceLock<Mutex<HashMap<String, V>>>,
    capacity: usize,
    max_key: usize,
}

impl<V: Clone> Memo<V> {
    pub(crate) const fn new(capacity: usize, max_key: usize) -> Self {
        Memo { map: OnceLock::new(), capacity, max_key }
    }

    /// The kept value of `key`, or `compute(key)`, kept when it succeeds.
    pub(crate) fn get_or_try<E>(
        &self,
        key: &str,
        compute: impl FnOnce(&str) -> Result<V, E>,
    ) -> Result<V, E> {
        let map = self.map.get_or_init(Default::default);
        // A poisoned lock only means that another thread panicked while holding it; the
        // map is still whole.
        let lock = || map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = lock().get(key) {
            return Ok(v.clone());
        }
        let v = compute(key)?;
        if key.len() <= self.max_key {
            let mut map = lock();
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(key.to_owned(), v.clone());
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn computes_once_per_kept_key_and_never_keeps_failures() {
        const CAPACITY: usize = 128;
        const MAX_KEY: usize = 1024;
        static MEMO: Memo<usize> = Memo::new(CAPACITY, MAX_KEY);
        let calls = Cell::new(0);
        let len = |k: &str| -> Result<usize, String> {
            calls.set(calls.get() + 1);
            if k.starts_with('!') {
                Err(format!("bad {k}"))
            } else {
                Ok(k.len())
            }
        };
        assert_eq!(MEMO.get_or_try("abc", len), Ok(3));
        assert_eq!(MEMO.get_or_try("abc", len), Ok(3));
        assert_eq!(calls.get(), 1);
        assert!(MEMO.get_or_try("!x", len).is_err());
        assert!(MEMO.get_or_try("!x", len).is_err());
        assert_eq!(calls.get(), 3);
        let long = "y".repeat(MAX_KEY + 1);
        assert_eq!(MEMO.get_or_try(&long, len), Ok(MAX_KEY + 1));
        assert_eq!(MEMO.get_or_try(&long, len), Ok(MAX_KEY + 1));
        assert_eq!(calls.get(), 5, "keys over MAX_KEY are computed every time");
        for i in 0..CAPACITY + 1 {
            MEMO.get_or_try(&i.to_string(), len).unwrap();
        }
        assert!(MEMO.map.get().unwrap().lock().unwrap().len() <= CAPACITY);
    }
}
