//! A small map kept as one sorted, shared allocation: for the little maps that every
//! endpoint carries (port name -> number), where a `BTreeMap` would allocate a whole node
//! (hundreds of bytes) per entry count of one or two. Clones share the entries, so the
//! endpoints of a ServiceEntry that name the same ports can hold one map.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Sorted by key, keys unique; the reading API of `BTreeMap`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SortedMap<K, V>(Arc<[(K, V)]>);

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap(Arc::new([]))
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaced (the entries are copied: maps are
    /// built once and then read).
    pub fn insert(&mut self, key: K, value: V) -> Option<V>
    where
        K: Clone,
        V: Clone,
    {
        let mut v: Vec<(K, V)> = self.0.to_vec();
        let old = match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut v[i].1, value)),
            Err(i) => {
                v.insert(i, (key, value));
                None
            }
        };
        self.0 = Arc::from(v);
        old
    }

    /// `self`, holding the entries of `other` instead when they are equal (one allocation for both).
    pub fn share(&mut self, other: &SortedMap<K, V>)
    where
        V: PartialEq,
    {
        if !Arc::ptr_eq(&self.0, &other.0) && self.0 == other.0 {
            self.0 = other.0.clone();
        }
    }

    /// Makes the maps (`map` of each of `items`) that equal the previous item's share its
    /// allocation: lists of endpoints usually name the same ports.
    pub fn share_consecutive<T>(items: &mut [T], map: impl Fn(&mut T) -> &mut SortedMap<K, V>)
    where
        V: PartialEq,
    {
        for i in 1..items.len() {
            let (done, rest) = items.split_at_mut(i);
            map(&mut rest[0]).share(map(&mut done[i - 1]));
        }
    }
}

impl<K, V> SortedMap<K, V> {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }
}

/// Like `BTreeMap`'s: for a key given twice, the last value wins.
impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut v: Vec<(K, V)> = iter.into_iter().collect();
        // Stable: equal keys keep their order, and the last of them is kept below.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(K, V)> = Vec::with_capacity(v.len());
        for e in v {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        SortedMap(Arc::from(out))
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for SortedMap<K, V> {
    fn from(a: [(K, V); N]) -> Self {
        a.into_iter().collect()
    }
}

impl<'a, K, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_btree_map() {
        let m: SortedMap<String, u32> =
            [("b".to_string(), 2), ("a".to_string(), 1), ("b".to_string(), 3)].into_iter().collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("b"), Some(&3), "the last value of a repeated key wins");
        assert_eq!(m.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
        let mut m = m;
        assert_eq!(m.insert("c".into(), 4), None);
        assert_eq!(m.insert("a".into(), 5), Some(1));
        assert_eq!(m.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(), [("a", 5), ("b", 3), ("c", 4)]);
        assert!(m.contains_key("c") && !m.contains_key("d"));
        assert!(SortedMap::<String, u32>::new().is_empty());
        let mut other: SortedMap<String, u32> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
        other.share(&m);
        assert!(Arc::ptr_eq(&other.0, &m.0) && other == m);
    }

    #[test]
    fn consecutive_equal_maps_share_one_allocation() {
        let map = |v: u32| -> SortedMap<String, u32> { [("http".to_string(), v)].into_iter().collect() };
        let mut items = vec![map(1), map(1), map(2), map(2), map(1)];
        SortedMap::share_consecutive(&mut items, |m| m);
        assert!(Arc::ptr_eq(&items[0].0, &items[1].0) && Arc::ptr_eq(&items[2].0, &items[3].0));
        assert!(!Arc::ptr_eq(&items[1].0, &items[2].0) && !Arc::ptr_eq(&items[3].0, &items[4].0));
        assert_eq!(items.iter().map(|m| m.get("http").copied()).collect::<Vec<_>>(), [1, 1, 2, 2, 1].map(Some));
    }
}
