//! A small memo of successful results keyed by strings: dashboards and autoscalers send
//! the same queries again and again, and some of their parts (parsing the query,
//! compiling or validating a regex) cost more than evaluating a one-series query, the
//! more so on a server whose caches other work has cooled.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Keeps results whose keys add up to at most `budget` bytes, each key at most
/// `max_key` bytes; when a new key would go over, it starts over (the set a client
/// repeats is small, and a clear needs no bookkeeping per hit). The budget is in key
/// bytes because what is kept grows with its key (a parsed query with its text), and
/// any client can send keys. Failures are not kept: computing them again gives the
/// same error.
pub(crate) struct Memo<V> {
    map: OnceLock<Mutex<Kept<V>>>,
    budget: usize,
    max_key: usize,
}

struct Kept<V> {
    map: HashMap<String, V>,
    key_bytes: usize,
}

impl<V> Default for Kept<V> {
    fn default() -> Self {
        Kept { map: HashMap::new(), key_bytes: 0 }
    }
}

impl<V: Clone> Memo<V> {
    pub(crate) const fn new(budget: usize, max_key: usize) -> Self {
        Memo { map: OnceLock::new(), budget, max_key }
    }

    /// The kept value of `key`, or `compute(key)`, kept when it succeeds.
    pub(crate) fn get_or_try<E>(
        &self,
        key: &str,
        compute: impl FnOnce(&str) -> Result<V, E>,
    ) -> Result<V, E> {
        if key.len() > self.max_key {
            return compute(key);
        }
        let kept = self.map.get_or_init(Default::default);
        // A poisoned lock only means that another thread panicked while holding it; the
        // map is still whole.
        let lock = || kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = lock().map.get(key) {
            return Ok(v.clone());
        }
        let v = compute(key)?;
        let mut kept = lock();
        if kept.key_bytes + key.len() > self.budget {
            kept.map.clear();
            kept.key_bytes = 0;
        }
        if kept.map.insert(key.to_owned(), v.clone()).is_none() {
            kept.key_bytes += key.len();
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
        const BUDGET: usize = 100;
        const MAX_KEY: usize = 30;
        static MEMO: Memo<usize> = Memo::new(BUDGET, MAX_KEY);
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
        // Keys of 20 bytes after "abc": four fit the budget, the fifth starts over.
        for i in 0..6 {
            MEMO.get_or_try(&format!("{i:020}"), len).unwrap();
            let kept = MEMO.map.get().unwrap().lock().unwrap();
            assert!(kept.key_bytes <= BUDGET);
            assert_eq!(kept.key_bytes, kept.map.keys().map(String::len).sum::<usize>());
        }
        let kept = MEMO.map.get().unwrap().lock().unwrap();
        assert_eq!(kept.map.len(), 2, "the fifth key started over, the sixth joined it");
    }
}
