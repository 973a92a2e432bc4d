//! Consistent hashing on the request's hash key, by Maglev.
//!
//! Maglev (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4) fills a lookup table of prime
//! size `M` by letting each candidate claim, in turn, its next free slot in
//! its own permutation of the table. A pick is one hash and one table read;
//! each candidate owns `M / n` slots give or take one; when a candidate
//! leaves, its slots go to the others and few other slots change hands, so
//! a key keeps its endpoint unless it has to move. `M` is at least 100 n
//! up to 65,537 (Envoy's default), so the spread stays within a few percent.
//!
//! Hashes are FNV-1a with a SplitMix64 finalizer over instance ids and keys:
//! stable across processes and versions, so every client sends a key to the
//! same instance. Requests without a key are spread at random. Weights are
//! not used.

use crate::balance::{Candidates, Context, Picker, Policy};

/// Table sizes for small sets: primes at least 100 n.
const SIZES: [usize; 5] = [307, 1031, 4099, 16411, 65537];
const OFFSET_SEED: u64 = 0x6c6f_6465_7374_6172;
const SKIP_SEED: u64 = 0x6d61_676c_6576_2121;

/// Consistent hash (Maglev) on the request's hash key; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsistentHash;

#[derive(Debug)]
struct Maglev {
    table: Vec<u32>,
}

// === impl ConsistentHash ===

impl Policy for ConsistentHash {
    fn name(&self) -> &str {
        "consistent_hash"
    }

    fn picker(&self, candidates: &Candidates) -> Box<dyn Picker> {
        let ids: Vec<&str> = candidates.iter().map(|c| c.id()).collect();
        Box::new(Maglev {
            table: populate(&ids, table_size(ids.len())),
        })
    }
}

// === impl Maglev ===

impl Picker for Maglev {
    fn pick(&self, cx: &Context<'_>) -> usize {
        match cx.hash_key() {
            Some(key) => {
                let slot = (hash(key.as_bytes(), 0) % self.table.len() as u64) as usize;
                self.table[slot] as usize
            }
            None => cx.random(cx.len()),
        }
    }
}

/// The Maglev table size for `n` candidates: prime, larger than `n`.
pub(crate) fn table_size(n: usize) -> usize {
    let wanted = n.saturating_mul(100);
    SIZES
        .into_iter()
        .find(|&m| m >= wanted)
        .unwrap_or_else(|| next_prime(n.saturating_mul(8).max(65537)))
}

/// Maglev's population (the paper's Pseudocode 1): candidates take turns
/// claiming the next free slot of their permutation `offset + j * skip`.
pub(crate) fn populate(ids: &[&str], m: usize) -> Vec<u32> {
    let mut table = vec![u32::MAX; m];
    if ids.is_empty() {
        return table;
    }
    let m64 = m as u64;
    let skips: Vec<u64> = ids
        .iter()
        .map(|id| hash(id.as_bytes(), SKIP_SEED) % (m64 - 1) + 1)
        .collect();
    let mut positions: Vec<u64> = ids
        .iter()
        .map(|id| hash(id.as_bytes(), OFFSET_SEED) % m64)
        .collect();
    let mut filled = 0;
    while filled < m {
        for (i, position) in positions.iter_mut().enumerate() {
            while table[*position as usize] != u32::MAX {
                *position = (*position + skips[i]) % m64;
            }
            table[*position as usize] = i as u32;
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    table
}

/// FNV-1a 64 (Fowler, Noll, Vo) then the SplitMix64 finalizer, which FNV's
/// weak low bits need before a modulo.
pub(crate) fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn next_prime(from: usize) -> usize {
    (from..)
        .find(|&n| n > 1 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("echo-{i}")).collect()
    }

    fn lookup(table: &[u32], names: &[String], key: &str) -> String {
        let slot = (hash(key.as_bytes(), 0) % table.len() as u64) as usize;
        names[table[slot] as usize].clone()
    }

    #[test]
    fn slots_are_shared_evenly() {
        let names = ids(10);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let m = table_size(10);
        assert_eq!(m, 1031);
        let table = populate(&refs, m);
        for i in 0..10u32 {
            let owned = table.iter().filter(|&&t| t == i).count();
            assert!((103..=104).contains(&owned), "{owned}");
        }
    }

    #[test]
    fn sizes_are_prime_and_large_enough() {
        for n in [1, 3, 100, 1000, 10_000, 100_000] {
            let m = table_size(n);
            assert!(m > n && next_prime(m) == m, "{n} -> {m}");
        }
    }

    #[test]
    fn a_leaving_candidate_moves_about_one_nth_of_keys() {
        let names = ids(10);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let before = populate(&refs, 1031);
        let kept: Vec<String> = names.iter().filter(|n| *n != "echo-3").cloned().collect();
        let kept_refs: Vec<&str> = kept.iter().map(String::as_str).collect();
        let after = populate(&kept_refs, 1031);
        let keys = 20_000;
        let moved = (0..keys)
            .map(|k| format!("user-{k}"))
            .filter(|k| lookup(&before, &names, k) != lookup(&after, &kept, k))
            .count();
        let share = moved as f64 / keys as f64;
        assert!((0.08..0.13).contains(&share), "{share}");
    }
}
