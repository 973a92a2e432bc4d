//! [`Metadata`]: an instance's free-form entries, a small sorted map.
//!
//! A watcher holds one record per instance, thousands of them, each with a
//! handful of entries. A `BTreeMap` allocates a node for eleven entries
//! (over 500 bytes) even for two; a sorted `Vec` holds what is there. Lookups
//! are a binary search, and a record's entries are few, so nothing is lost.

use std::{collections::BTreeMap, fmt, ops::Index, slice};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap,
};

/// An instance's metadata: string keys and values, sorted by key, each key
/// at most once. It reads like a `BTreeMap<String, String>` (`get`,
/// `insert`, `remove`, `iter` in key order) and serializes as a JSON object.
///
/// # Examples
///
/// ```
/// use lodestar::instance::Metadata;
///
/// let mut metadata: Metadata = [("zone", "z1"), ("color", "blue")].into_iter().collect();
/// assert_eq!(metadata.get("color").map(String::as_str), Some("blue"));
/// assert_eq!(metadata.insert("zone".into(), "z2".into()).as_deref(), Some("z1"));
/// assert_eq!(serde_json::to_string(&metadata).unwrap(), r#"{"color":"blue","zone":"z2"}"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metadata {
    /// Sorted by key, keys unique.
    entries: Vec<(String, String)>,
}

/// Iterates over [`Metadata`] in key order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    inner: slice::Iter<'a, (String, String)>,
}

// === impl Metadata ===

impl Metadata {
    /// No entry.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        let at = self.position(key).ok()?;
        Some(&self.entries[at].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, value)),
            Err(at) => {
                self.entries.insert(at, (key, value));
                None
            }
        }
    }

    /// The value of `key`, set to `default()` first if it has none (what
    /// `map.entry(key).or_insert_with(default)` does on a `BTreeMap`).
    pub fn get_or_insert_with(
        &mut self,
        key: String,
        default: impl FnOnce() -> String,
    ) -> &mut String {
        let at = match self.position(&key) {
            Ok(at) => at,
            Err(at) => {
                self.entries.insert(at, (key, default()));
                at
            }
        };
        &mut self.entries[at].1
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.position(key).ok()?;
        Some(self.entries.remove(at).1)
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut String) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.entries.iter(),
        }
    }

    /// The keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in their keys' order.
    pub fn values(&self) -> impl Iterator<Item = &String> + '_ {
        self.entries.iter().map(|(_, v)| v)
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// From entries in any order; of entries with the same key, the last
    /// wins (as inserting them one by one would). O(n log n), so a record
    /// with many entries costs no more to read than to sort.
    fn from_entries(mut entries: Vec<(String, String)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: equal keys keep their order, the last one last.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(later, kept);
                }
                same
            });
        }
        entries.shrink_to_fit();
        Self { entries }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Index<&str> for Metadata {
    type Output = String;

    /// The value of `key`.
    ///
    /// # Panics
    ///
    /// Panics when `key` has no value, as `BTreeMap`'s index does.
    fn index(&self, key: &str) -> &String {
        self.get(key)
            .unwrap_or_else(|| panic!("no metadata entry {key:?}"))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_entries(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> Extend<(K, V)> for Metadata {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.extend(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
        *self = Self::from_entries(entries);
    }
}

impl IntoIterator for Metadata {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a String, &'a String);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        Self {
            entries: map.into_iter().collect(),
        }
    }
}

impl From<Metadata> for BTreeMap<String, String> {
    fn from(metadata: Metadata) -> Self {
        metadata.entries.into_iter().collect()
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Metadata {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> Visitor<'de> for Entries {
            type Value = Metadata;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
                // The hint is the input's claim; cap it, as serde does.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(Metadata::from_entries(entries))
            }
        }

        deserializer.deserialize_map(Entries)
    }
}

// === impl Iter ===

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a String, &'a String);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|(k, v)| (k, v))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_a_sorted_map() {
        let mut m = Metadata::new();
        assert_eq!(m.insert("b".into(), "1".into()), None);
        assert_eq!(m.insert("a".into(), "2".into()), None);
        assert_eq!(m.insert("c".into(), "3".into()), None);
        assert_eq!(m.insert("b".into(), "4".into()).as_deref(), Some("1"));
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(m.get("b").map(String::as_str), Some("4"));
        assert_eq!(&m["c"], "3");
        assert!(m.contains_key("a") && !m.contains_key("z"));
        assert_eq!(m.get_or_insert_with("a".into(), || "x".into()), "2");
        assert_eq!(m.get_or_insert_with("aa".into(), || "x".into()), "x");
        assert_eq!(m.remove("aa").as_deref(), Some("x"));
        assert_eq!(m.remove("a").as_deref(), Some("2"));
        assert_eq!(m.remove("a"), None);
        assert_eq!(m.len(), 2);
        m.retain(|k, _| k != "c");
        assert_eq!(format!("{m:?}"), r#"{"b": "4"}"#);
    }

    #[test]
    fn of_repeated_keys_the_last_wins_as_in_a_btreemap() {
        let pairs = [("z", "1"), ("a", "1"), ("z", "2"), ("m", "1"), ("z", "3")];
        let ours: Metadata = pairs.into_iter().collect();
        let theirs: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(BTreeMap::from(ours.clone()), theirs);
        assert_eq!(ours, Metadata::from(theirs));

        let mut extended = Metadata::from([("a", "0"), ("q", "0")]);
        extended.extend(pairs);
        assert_eq!(
            extended
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            ["a=1", "m=1", "q=0", "z=3"]
        );
    }

    #[test]
    fn json_as_an_object_in_key_order() {
        let m: Metadata =
            serde_json::from_str(r#"{"zone":"z1","color":"blue","zone":"z2"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"color":"blue","zone":"z2"}"#
        );
        for bad in [r#"{"a":1}"#, r#"["a","b"]"#, r#""a""#, r#"{"a":null}"#] {
            assert!(serde_json::from_str::<Metadata>(bad).is_err(), "{bad}");
        }
    }
}
