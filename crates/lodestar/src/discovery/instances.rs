//! [`Instances`]: the instances of a snapshot, a persistent sorted map by id.
//!
//! Every change to a service makes a new [`Snapshot`](super::Snapshot), and
//! every watcher keeps the one before it to diff against. Copying a
//! 10,000-instance list on each change, and comparing two such lists, makes
//! one change cost O(N) in every client. Here the records are held in chunks
//! of at most [`CHUNK`] sorted by id, each chunk behind an `Arc`: a new
//! version copies the chunk list (N / 64 pointers) and the one chunk it
//! changes, and two versions share every chunk the change did not touch, so
//! [`Instances::changes`] skips shared chunks by pointer and costs what
//! changed. (The same idea as a persistent B-tree of depth two, as in `im`'s
//! `OrdMap`, without the dependency.)

use std::{cmp::Ordering, collections::HashSet, fmt, sync::Arc};

use crate::{Change, Instance};

/// Most records in one chunk. Small enough that copying one chunk on a change
/// is cheap, large enough that the chunk list of 10,000 instances is short.
const CHUNK: usize = 64;

/// Chunks built from a sorted list start this full, leaving room to grow
/// before the first split.
const FILL: usize = 48;

/// The instances of one service, sorted by id; cheap to clone and to diff.
///
/// # Examples
///
/// ```
/// use lodestar::{Instance, discovery::Instances};
///
/// let mut instances = Instances::default();
/// instances.insert(Instance::new("echo", "b").into());
/// instances.insert(Instance::new("echo", "a").into());
/// let before = instances.clone();
/// instances.remove("b");
///
/// let ids: Vec<_> = before.iter().map(|i| i.id.as_str()).collect();
/// assert_eq!(ids, ["a", "b"]);
/// assert_eq!(instances.changes(&before)[0].kind(), "remove");
/// ```
#[derive(Clone, Default)]
pub struct Instances {
    chunks: Arc<Vec<Arc<Chunk>>>,
    len: usize,
}

/// A run of records sorted by id; never empty while it is in a list.
#[derive(Clone, Debug)]
struct Chunk {
    items: Vec<Arc<Instance>>,
}

/// Iterates over [`Instances`] in id order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    chunks: std::slice::Iter<'a, Arc<Chunk>>,
    current: std::slice::Iter<'a, Arc<Instance>>,
    remaining: usize,
}

// === impl Instances ===

impl Instances {
    /// From records in any order; of records with the same id, the first is kept.
    pub fn from_unsorted(mut items: Vec<Arc<Instance>>) -> Self {
        // Backends keep ordered maps, so this is usually one linear check.
        if !items.is_sorted_by(|a, b| a.id < b.id) {
            items.sort_by(|a, b| a.id.cmp(&b.id));
            items.dedup_by(|a, b| a.id == b.id);
        }
        let len = items.len();
        let chunks = items
            .chunks(FILL)
            .map(|c| Arc::new(Chunk { items: c.to_vec() }))
            .collect();
        Self {
            chunks: Arc::new(chunks),
            len,
        }
    }

    /// The number of instances.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The instance with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Instance>> {
        let chunk = &self.chunks[self.chunk_for(id)?];
        let at = chunk.position(id).ok()?;
        Some(&chunk.items[at])
    }

    /// The instances in id order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            remaining: self.len,
        }
    }

    /// Adds `instance`, or replaces the one with its id; returns the one it
    /// replaced. Copies at most one chunk and the chunk list.
    pub fn insert(&mut self, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        let chunks = Arc::make_mut(&mut self.chunks);
        // The chunk that holds the id, or the last one if the id sorts after all.
        let Some(index) = Self::locate(chunks, &instance.id).or(chunks.len().checked_sub(1)) else {
            chunks.push(Arc::new(Chunk {
                items: vec![instance],
            }));
            self.len = 1;
            return None;
        };
        let chunk = Arc::make_mut(&mut chunks[index]);
        match chunk.position(&instance.id) {
            Ok(at) => return Some(std::mem::replace(&mut chunk.items[at], instance)),
            Err(at) => chunk.items.insert(at, instance),
        }
        self.len += 1;
        if chunk.items.len() > CHUNK {
            let upper = chunk.items.split_off(CHUNK / 2);
            chunks.insert(index + 1, Arc::new(Chunk { items: upper }));
        }
        None
    }

    /// Removes the instance with this id; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Arc<Instance>> {
        let index = self.chunk_for(id)?;
        self.chunks[index].position(id).ok()?;
        let chunks = Arc::make_mut(&mut self.chunks);
        let chunk = Arc::make_mut(&mut chunks[index]);
        let at = chunk.position(id).ok()?;
        let removed = chunk.items.remove(at);
        self.len -= 1;
        if chunk.items.is_empty() {
            chunks.remove(index);
        } else {
            Self::merge_small(chunks, index);
        }
        Some(removed)
    }

    /// What changed from `older` to `self`: adds and updates in id order,
    /// then removals in id order. Chunks the two share are skipped by
    /// pointer, so two versions a few changes apart compare in
    /// O(N / 64 + changes x 64).
    pub fn changes(&self, older: &Instances) -> Vec<Change> {
        if Arc::ptr_eq(&self.chunks, &older.chunks) {
            return Vec::new();
        }
        let ours = Self::chunk_set(&self.chunks);
        let theirs = Self::chunk_set(&older.chunks);
        let new = Self::unshared(&self.chunks, &theirs);
        let old = Self::unshared(&older.chunks, &ours);
        diff_sorted(&new, &old)
    }

    /// The index of the chunk whose range holds `id`, if any does.
    fn chunk_for(&self, id: &str) -> Option<usize> {
        Self::locate(&self.chunks, id)
    }

    /// The first chunk whose last id is at or after `id`.
    fn locate(chunks: &[Arc<Chunk>], id: &str) -> Option<usize> {
        let at = chunks.partition_point(|c| c.last_id() < id);
        (at < chunks.len()).then_some(at)
    }

    /// Merges a chunk that has shrunk below a quarter into a neighbour, so a
    /// service that lost most of its instances does not keep many tiny chunks.
    fn merge_small(chunks: &mut Vec<Arc<Chunk>>, index: usize) {
        if chunks[index].items.len() >= CHUNK / 4 || chunks.len() < 2 {
            return;
        }
        let left = if index + 1 < chunks.len() {
            index
        } else {
            index - 1
        };
        if chunks[left].items.len() + chunks[left + 1].items.len() > CHUNK {
            return;
        }
        let right = chunks.remove(left + 1);
        Arc::make_mut(&mut chunks[left])
            .items
            .extend(right.items.iter().cloned());
    }

    fn chunk_set(chunks: &[Arc<Chunk>]) -> HashSet<*const Chunk> {
        chunks.iter().map(Arc::as_ptr).collect()
    }

    /// The records of the chunks not in `shared`, in id order.
    fn unshared<'a>(
        chunks: &'a [Arc<Chunk>],
        shared: &HashSet<*const Chunk>,
    ) -> Vec<&'a Arc<Instance>> {
        chunks
            .iter()
            .filter(|c| !shared.contains(&Arc::as_ptr(c)))
            .flat_map(|c| c.items.iter())
            .collect()
    }
}

/// Adds and updates, then removals, between two id-sorted lists.
fn diff_sorted(new: &[&Arc<Instance>], old: &[&Arc<Instance>]) -> Vec<Change> {
    let (mut changes, mut removed) = (Vec::new(), Vec::new());
    let (mut n, mut o) = (new.iter().peekable(), old.iter().peekable());
    loop {
        let order = match (n.peek(), o.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.id.cmp(&b.id),
        };
        match order {
            Ordering::Less => changes.extend(n.next().map(|a| Change::Add(Arc::clone(a)))),
            Ordering::Greater => removed.extend(o.next().map(|b| Change::Remove(Arc::clone(b)))),
            Ordering::Equal => {
                let (Some(a), Some(b)) = (n.next(), o.next()) else {
                    break;
                };
                if !Arc::ptr_eq(a, b) && a != b {
                    changes.push(Change::Update(Arc::clone(a)));
                }
            }
        }
    }
    changes.extend(removed);
    changes
}

impl PartialEq for Instances {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && (Arc::ptr_eq(&self.chunks, &other.chunks)
                || self
                    .iter()
                    .zip(other.iter())
                    .all(|(a, b)| Arc::ptr_eq(a, b) || a == b))
    }
}

impl Eq for Instances {}

impl fmt::Debug for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = &'a Arc<Instance>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<Arc<Instance>> for Instances {
    fn from_iter<I: IntoIterator<Item = Arc<Instance>>>(iter: I) -> Self {
        Self::from_unsorted(iter.into_iter().collect())
    }
}

impl FromIterator<Instance> for Instances {
    fn from_iter<I: IntoIterator<Item = Instance>>(iter: I) -> Self {
        iter.into_iter().map(Arc::new).collect()
    }
}

// === impl Chunk ===

impl Chunk {
    fn last_id(&self) -> &str {
        self.items.last().map(|i| i.id.as_str()).unwrap_or_default()
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.items.binary_search_by(|i| i.id.as_str().cmp(id))
    }
}

// === impl Iter ===

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Arc<Instance>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                self.remaining -= 1;
                return Some(item);
            }
            self.current = self.chunks.next()?.items.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn inst(id: &str, version: &str) -> Arc<Instance> {
        Arc::new(Instance::new("s", id).with_version(version))
    }

    fn ids(instances: &Instances) -> Vec<String> {
        instances.iter().map(|i| i.id.clone()).collect()
    }

    #[test]
    fn insert_get_remove_keep_order_across_splits() {
        let mut set = Instances::default();
        for n in (0..500).rev() {
            assert!(set.insert(inst(&format!("{n:04}"), "1")).is_none());
        }
        assert_eq!(set.len(), 500);
        assert!(set.chunks.len() >= 500 / CHUNK);
        let expected: Vec<_> = (0..500).map(|n| format!("{n:04}")).collect();
        assert_eq!(ids(&set), expected);
        assert_eq!(set.get("0250").unwrap().id, "0250");
        assert!(set.get("x").is_none());
        assert_eq!(set.insert(inst("0250", "2")).unwrap().version, "1");
        assert_eq!(set.len(), 500);
        for n in 0..500 {
            assert!(set.remove(&format!("{n:04}")).is_some());
        }
        assert!(set.is_empty());
        assert!(set.chunks.is_empty());
        assert!(set.remove("0001").is_none());
    }

    #[test]
    fn a_change_copies_one_chunk_and_diffs_by_pointer() {
        let base: Instances = (0..10_000).map(|n| inst(&format!("{n:05}"), "1")).collect();
        let mut next = base.clone();
        next.insert(inst("05000", "2"));
        let shared = next
            .chunks
            .iter()
            .filter(|c| base.chunks.iter().any(|b| Arc::ptr_eq(b, c)))
            .count();
        assert_eq!(shared, next.chunks.len() - 1);
        let changes = next.changes(&base);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].kind(), changes[0].instance().version.as_str()),
            ("update", "2")
        );
        assert!(base.changes(&base).is_empty());
    }

    #[test]
    fn from_unsorted_sorts_and_keeps_the_first_of_each_id() {
        let set = Instances::from_unsorted(vec![inst("b", "1"), inst("a", "1"), inst("b", "2")]);
        assert_eq!(ids(&set), ["a", "b"]);
        assert_eq!(set.len(), 2);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put(u16, u8),
        Del(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..300, 0u8..3).prop_map(|(k, v)| Op::Put(k, v)),
            (0u16..300).prop_map(Op::Del),
        ]
    }

    proptest! {
        /// Against a BTreeMap model: contents, order, and the diff between
        /// any two versions equal the naive diff of their contents.
        #[test]
        fn behaves_like_a_sorted_map(
            start in proptest::collection::vec(op(), 0..400),
            more in proptest::collection::vec(op(), 0..40),
        ) {
            let mut model = BTreeMap::new();
            let mut set = Instances::default();
            let apply = |set: &mut Instances, model: &mut BTreeMap<String, Arc<Instance>>, op: &Op| match op {
                Op::Put(k, v) => {
                    let i = inst(&format!("{k:03}"), &v.to_string());
                    prop_assert_eq!(set.insert(i.clone()).is_some(), model.insert(i.id.clone(), i).is_some());
                    Ok(())
                }
                Op::Del(k) => {
                    let id = format!("{k:03}");
                    prop_assert_eq!(set.remove(&id).is_some(), model.remove(&id).is_some());
                    Ok(())
                }
            };
            for op in &start {
                apply(&mut set, &mut model, op)?;
            }
            let (old_set, old_model) = (set.clone(), model.clone());
            for op in &more {
                apply(&mut set, &mut model, op)?;
            }
            prop_assert_eq!(ids(&set), model.keys().cloned().collect::<Vec<_>>());
            prop_assert_eq!(set.len(), model.len());
            prop_assert!(set.chunks.iter().all(|c| !c.items.is_empty() && c.items.len() <= CHUNK));
            let naive = diff_sorted(
                &model.values().collect::<Vec<_>>(),
                &old_model.values().collect::<Vec<_>>(),
            );
            prop_assert_eq!(set.changes(&old_set), naive);
            prop_assert_eq!(set == old_set, set.changes(&old_set).is_empty());
        }
    }
}
