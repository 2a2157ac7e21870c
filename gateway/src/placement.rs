//! Where blocks live: a pure function of the object and the block index.
//!
//! Replica `k` of block `i` of an object with seed `x` and stripe width `n`
//! lives on ring slot `(x + i + k) mod n`: the first replica goes round-robin
//! from a hash of the path, each further replica on the next slot.

use sha2::{Digest, Sha256};
use tessera_meta::ObjectRef;

/// The slot of replica `k` of block `index`.
pub fn slot(object: &ObjectRef, index: u64, k: u32) -> u32 {
    object.slot(index, k)
}

/// The slots holding block `index`, first replica first (`r` capped at the width).
pub fn replicas(object: &ObjectRef, index: u64, r: u32) -> impl Iterator<Item = u32> + '_ {
    (0..r.min(object.width.max(1))).map(move |k| slot(object, index, k))
}

/// The placement seed of a new file: 64 bits of SHA-256 of its path.
pub fn seed_for_path(path: &str) -> u64 {
    let d = Sha256::digest(path.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(seed: u64, width: u32) -> ObjectRef {
        ObjectRef { id: 1, seed, width }
    }

    #[test]
    fn round_robin_from_the_seed() {
        let o = obj(7, 3); // 7 mod 3 = 1
        let firsts: Vec<u32> = (0..6).map(|i| slot(&o, i, 0)).collect();
        assert_eq!(firsts, [1, 2, 0, 1, 2, 0]);
        let seconds: Vec<u32> = (0..3).map(|i| slot(&o, i, 1)).collect();
        assert_eq!(seconds, [2, 0, 1]);
    }

    #[test]
    fn replicas_are_distinct_and_capped() {
        for seed in [0, 1, 5, u64::MAX, u64::MAX - 1] {
            for width in 1..8u32 {
                let o = obj(seed, width);
                for i in [0u64, 1, 2, 1000, u64::MAX] {
                    let r: Vec<u32> = replicas(&o, i, 3).collect();
                    assert_eq!(r.len(), 3.min(width) as usize);
                    let mut d = r.clone();
                    d.sort();
                    d.dedup();
                    assert_eq!(d.len(), r.len(), "seed {seed} width {width} index {i}");
                    assert!(r.iter().all(|s| *s < width));
                }
            }
        }
    }

    #[test]
    fn load_is_even_over_slots() {
        let o = obj(seed_for_path("/some/file"), 3);
        let mut per_slot = [0u32; 3];
        for i in 0..3000u64 {
            for s in replicas(&o, i, 2) {
                per_slot[s as usize] += 1;
            }
        }
        assert_eq!(per_slot, [2000; 3]);
    }

    #[test]
    fn roles_and_counts_per_slot_agree_with_placement() {
        for seed in [0, 1, 5, 1 << 40, u64::MAX] {
            for width in 1..6u32 {
                let o = obj(seed, width);
                for r in 1..4u32 {
                    for s in 0..width + 1 {
                        for i in 0..20u64 {
                            let by_slot = (0..r.min(width)).find(|&k| slot(&o, i, k) == s);
                            assert_eq!(o.role_on(s, i, r), by_slot, "{seed} {width} {r} {i}");
                        }
                        for (a, b) in [(0u64, 0u64), (0, 1), (3, 17), (7, 7 + width as u64)] {
                            let want = (a..b).filter(|&i| o.role_on(s, i, r).is_some()).count();
                            assert_eq!(o.blocks_on(s, a..b, r), want as u64);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn seeds_depend_on_the_path() {
        assert_ne!(seed_for_path("/a"), seed_for_path("/b"));
        assert_eq!(seed_for_path("/a"), seed_for_path("/a"));
    }
}
