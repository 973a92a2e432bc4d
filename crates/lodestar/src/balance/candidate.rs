//! One pickable endpoint ([`Candidate`]) and the id-ordered sets of them a
//! route resolves to ([`Candidates`]).
//!
//! A set is a persistent sequence: chunks of candidates behind `Arc`s. A new
//! table that changes one member of a set copies that member's chunk and the
//! list of chunks, and shares every other chunk with the table before, so a
//! change costs O(chunk + n / chunk) rather than O(n) (the same idea as the
//! chunked vectors of Clojure and `im`, one level deep).

use std::{ops::Index, sync::Arc};

use crate::{
    Instance,
    balance::{feedback::Feedback, load::Load},
};

/// Members per chunk at most. A set this small is one chunk, and an index is
/// one array access; larger sets find the chunk by binary search.
const CHUNK: usize = 1024;

/// An instance as the policies see it, with its weight and its live load.
#[derive(Debug)]
pub struct Candidate {
    instance: Arc<Instance>,
    weight: u32,
    pub(crate) load: Arc<Load>,
    pub(crate) feedback: Arc<Feedback>,
}

/// The candidates one route resolves to, in instance-id order; never empty
/// when a policy sees it.
///
/// Cheap to clone (the chunks are shared). Index with `[i]` or
/// [`get`](Self::get), or iterate.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    chunks: Vec<Arc<Vec<Arc<Candidate>>>>,
    /// `ends[c]` is one past the index of chunk `c`'s last member.
    ends: Vec<usize>,
}

/// The candidates of a [`Candidates`] in id order.
#[derive(Debug)]
pub struct CandidatesIter<'a> {
    chunks: std::slice::Iter<'a, Arc<Vec<Arc<Candidate>>>>,
    current: std::slice::Iter<'a, Arc<Candidate>>,
    left: usize,
}

// === impl Candidate ===

impl Candidate {
    pub(crate) fn new(
        instance: Arc<Instance>,
        weight: u32,
        load: Arc<Load>,
        feedback: Arc<Feedback>,
    ) -> Self {
        Self {
            instance,
            weight,
            load,
            feedback,
        }
    }

    /// The instance record.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.instance.id
    }

    /// The balancing weight: the instance's `weight` metadata, or
    /// [`DEFAULT_WEIGHT`](crate::instance::DEFAULT_WEIGHT) when absent or
    /// invalid.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Requests picked on it and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.load.in_flight()
    }
}

// === impl Candidates ===

impl Candidates {
    /// The number of candidates.
    pub fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All candidates as one slice, when they fit in one chunk (sets of up
    /// to 1,024): what the pick path indexes directly.
    pub(crate) fn as_slice(&self) -> Option<&[Arc<Candidate>]> {
        match self.chunks.as_slice() {
            [only] => Some(only),
            [] => Some(&[]),
            _ => None,
        }
    }

    /// The candidate at `index`, if in range.
    pub fn get(&self, index: usize) -> Option<&Arc<Candidate>> {
        match self.chunks.as_slice() {
            [only] => only.get(index),
            _ => {
                let chunk = self.ends.partition_point(|&end| end <= index);
                let start = self.start(chunk);
                self.chunks.get(chunk)?.get(index - start)
            }
        }
    }

    /// The candidates in id order.
    pub fn iter(&self) -> CandidatesIter<'_> {
        CandidatesIter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            left: self.len(),
        }
    }

    /// Builds a set from candidates already in id order.
    #[cfg(test)]
    fn from_sorted(members: impl IntoIterator<Item = Arc<Candidate>>) -> Self {
        let mut set = Self::default();
        let mut chunk = Vec::new();
        for member in members {
            chunk.push(member);
            if chunk.len() == CHUNK {
                set.push_chunk(std::mem::take(&mut chunk));
            }
        }
        if !chunk.is_empty() {
            set.push_chunk(chunk);
        }
        set
    }

    /// Inserts `member` at its place in id order, replacing a member with the
    /// same id. Copies one chunk if another set shares it.
    pub(crate) fn insert(&mut self, member: Arc<Candidate>) {
        if self.chunks.is_empty() {
            self.push_chunk(vec![member]);
            return;
        }
        if self.append(&member) {
            return;
        }
        let chunk = self.chunk_for(member.id());
        let members = Arc::make_mut(&mut self.chunks[chunk]);
        match members.binary_search_by(|m| m.id().cmp(member.id())) {
            Ok(at) => {
                members[at] = member;
                return;
            }
            Err(at) => members.insert(at, member),
        }
        if members.len() > CHUNK {
            let upper = members.split_off(members.len() / 2);
            self.chunks.insert(chunk + 1, Arc::new(upper));
        }
        self.reindex(chunk);
    }

    /// Appends `member` if it sorts after every member (a set filled in id
    /// order, as from a first snapshot, never searches); false otherwise.
    fn append(&mut self, member: &Arc<Candidate>) -> bool {
        let Some(last) = self.chunks.last_mut() else {
            return false;
        };
        if last.last().is_none_or(|m| m.id() >= member.id()) {
            return false;
        }
        if last.len() >= CHUNK {
            self.push_chunk(vec![member.clone()]);
        } else {
            Arc::make_mut(last).push(member.clone());
            if let Some(end) = self.ends.last_mut() {
                *end += 1;
            }
        }
        true
    }

    /// Removes the member with this id; false if there is none.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        if self.chunks.is_empty() {
            return false;
        }
        let chunk = self.chunk_for(id);
        let Ok(at) = self.chunks[chunk].binary_search_by(|m| m.id().cmp(id)) else {
            return false;
        };
        let members = Arc::make_mut(&mut self.chunks[chunk]);
        members.remove(at);
        if members.is_empty() {
            self.chunks.remove(chunk);
        } else {
            self.merge_small(chunk);
        }
        self.reindex(chunk.saturating_sub(1));
        true
    }

    /// The chunk that holds `id`, or should: the first whose last member is
    /// not below it, else the last.
    fn chunk_for(&self, id: &str) -> usize {
        let after = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|m| m.id() < id));
        after.min(self.chunks.len().saturating_sub(1))
    }

    /// Folds chunk `c` into a neighbour when both fit in one, so a set that
    /// shrank does not keep many tiny chunks (and slow lookups).
    fn merge_small(&mut self, c: usize) {
        if self.chunks[c].len() >= CHUNK / 4 {
            return;
        }
        let with = if c + 1 < self.chunks.len() {
            c + 1
        } else {
            c.wrapping_sub(1)
        };
        let Some(other) = self.chunks.get(with) else {
            return;
        };
        if self.chunks[c].len() + other.len() > CHUNK {
            return;
        }
        let (low, high) = (c.min(with), c.max(with));
        let moved = self.chunks.remove(high);
        Arc::make_mut(&mut self.chunks[low]).extend(moved.iter().cloned());
    }

    fn push_chunk(&mut self, chunk: Vec<Arc<Candidate>>) {
        let end = self.len() + chunk.len();
        self.chunks.push(Arc::new(chunk));
        self.ends.push(end);
    }

    /// Recomputes `ends` from chunk `from` on.
    fn reindex(&mut self, from: usize) {
        self.ends.truncate(from);
        let mut end = self.start(from);
        for chunk in &self.chunks[from..] {
            end += chunk.len();
            self.ends.push(end);
        }
    }

    /// The index of chunk `c`'s first member.
    fn start(&self, c: usize) -> usize {
        c.checked_sub(1).map_or(0, |before| self.ends[before])
    }
}

impl Index<usize> for Candidates {
    type Output = Arc<Candidate>;

    /// The candidate at `index`; panics when out of range, as slices do.
    fn index(&self, index: usize) -> &Arc<Candidate> {
        match self.get(index) {
            Some(candidate) => candidate,
            None => panic!("index {index} out of range for {} candidates", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a Candidates {
    type Item = &'a Arc<Candidate>;
    type IntoIter = CandidatesIter<'a>;

    fn into_iter(self) -> CandidatesIter<'a> {
        self.iter()
    }
}

// === impl CandidatesIter ===

impl<'a> Iterator for CandidatesIter<'a> {
    type Item = &'a Arc<Candidate>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(next) = self.current.next() {
                self.left -= 1;
                return Some(next);
            }
            self.current = self.chunks.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for CandidatesIter<'_> {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::balance::load::Ewma;

    fn candidate(id: u32) -> Arc<Candidate> {
        let instance = Instance::new("echo", format!("i{id:06}"));
        let ewma = Ewma::new(Duration::from_millis(30), Duration::from_secs(10));
        let load = Load::new(ewma, 1, true);
        Arc::new(Candidate::new(
            Arc::new(instance),
            100,
            Arc::new(load),
            Arc::new(Feedback::detached()),
        ))
    }

    fn ids(set: &Candidates) -> Vec<String> {
        set.iter().map(|c| c.id().to_string()).collect()
    }

    proptest! {
        /// Any sequence of inserts and removes leaves the same members, in
        /// the same order, as a sorted set would; indexing agrees with
        /// iteration; an older copy is never changed by a newer one.
        #[test]
        fn behaves_like_a_sorted_set(
            start in prop::collection::btree_set(0u32..5_000, 0..3_000),
            ops in prop::collection::vec((any::<bool>(), 0u32..5_000), 0..400),
        ) {
            let mut set = Candidates::from_sorted(start.iter().map(|&i| candidate(i)));
            let mut model = start.clone();
            let frozen = set.clone();
            for (insert, id) in ops {
                if insert {
                    set.insert(candidate(id));
                    model.insert(id);
                } else {
                    prop_assert_eq!(set.remove(&format!("i{id:06}")), model.remove(&id));
                }
            }
            let expected: Vec<String> = model.iter().map(|i| format!("i{i:06}")).collect();
            prop_assert_eq!(ids(&set), expected.clone());
            prop_assert_eq!(set.len(), expected.len());
            prop_assert_eq!(set.iter().len(), expected.len());
            for (i, id) in expected.iter().enumerate() {
                prop_assert_eq!(set[i].id(), id.as_str());
            }
            prop_assert!(set.get(expected.len()).is_none());
            let before: Vec<String> = start.iter().map(|i| format!("i{i:06}")).collect();
            prop_assert_eq!(ids(&frozen), before);
        }
    }

    #[test]
    fn a_change_copies_one_chunk_and_shares_the_rest() {
        let set = Candidates::from_sorted((0..10 * CHUNK as u32).map(candidate));
        let mut next = set.clone();
        next.remove("i000005");
        let shared = set
            .chunks
            .iter()
            .zip(&next.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, 9);
    }
}
