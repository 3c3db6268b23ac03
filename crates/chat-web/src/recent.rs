//! A bounded map of values an input node read recently from the replicated data (session
//! versions, whom a `name#tag` names), each kept with the time it was read. An entry older than
//! the map's lifetime never answers. When the map is full, stale entries are swept, and if none
//! is stale it starts again empty: a bound on memory, not an eviction policy, since a miss only
//! costs a read.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct RecentReads<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    lifetime: Duration,
    max: usize,
}

impl<K: Eq + Hash, V: Clone> RecentReads<K, V> {
    pub(crate) fn new(lifetime: Duration, max: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            lifetime,
            max: max.max(1),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<K, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value stored for `key`, if it was read within the lifetime.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let entries = self.entries();
        let (value, at) = entries.get(key)?;
        (at.elapsed() < self.lifetime).then(|| value.clone())
    }

    /// Stores `value` as read now, unless a value read within the lifetime is stored that
    /// `keep` prefers (say, one that reflects a newer epoch).
    pub(crate) fn insert_unless(&self, key: K, value: V, keep: impl FnOnce(&V) -> bool) {
        let now = Instant::now();
        let mut entries = self.entries();
        if let Some((current, at)) = entries.get(&key) {
            if now.duration_since(*at) < self.lifetime && keep(current) {
                return;
            }
        } else if entries.len() >= self.max {
            let lifetime = self.lifetime;
            entries.retain(|_, (_, at)| now.duration_since(*at) < lifetime);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(key, (value, now));
    }

    /// Stores `value` as read now.
    pub(crate) fn insert(&self, key: K, value: V) {
        self.insert_unless(key, value, |_| false);
    }

    /// Forgets `key`.
    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_answers_within_its_lifetime_only() {
        let recent: RecentReads<String, u64> = RecentReads::new(Duration::from_millis(50), 8);
        recent.insert("a".to_owned(), 1);
        assert_eq!(recent.get("a"), Some(1));
        assert_eq!(recent.get("b"), None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while recent.get("a").is_some() {
            assert!(Instant::now() < deadline, "the entry never aged");
            std::thread::yield_now();
        }
        recent.insert("a".to_owned(), 2);
        recent.remove("a");
        assert_eq!(recent.get("a"), None);
    }

    #[test]
    fn a_preferred_fresh_value_stays() {
        let recent: RecentReads<u8, u64> = RecentReads::new(Duration::from_secs(60), 8);
        recent.insert(1, 10);
        recent.insert_unless(1, 5, |current| *current > 5);
        assert_eq!(recent.get(&1), Some(10));
        recent.insert_unless(1, 20, |current| *current > 20);
        assert_eq!(recent.get(&1), Some(20));
    }

    #[test]
    fn a_full_map_starts_again_rather_than_grow() {
        let recent: RecentReads<u32, u32> = RecentReads::new(Duration::from_secs(60), 4);
        for key in 0..4 {
            recent.insert(key, key);
        }
        recent.insert(4, 4);
        assert_eq!(recent.get(&4), Some(4));
        assert!(recent.entries().len() <= 4);
        assert_eq!(
            recent.get(&0),
            None,
            "nothing was stale, so everything went"
        );
    }
}
