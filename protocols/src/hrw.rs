//! Rendezvous (highest random weight) hashing of blobs onto origins, as Kraken's `lib/hrw` and
//! `lib/hashring` do it (reference/kraken.md §1.7).
//!
//! Placement must match Kraken bit for bit, so that a scenario's origin load is the one Kraken would
//! see for the same digests and origin labels. What Kraken's code does (`lib/hrw/rendezvous.go`,
//! `lib/hashring/ring.go`, `core/digest.go`):
//!
//! - the key is `digest.ShardID()`, the first 4 hex characters, **hex-decoded** before hashing
//!   (`RendezvousHashNode.Score` calls `hex.DecodeString(key)`), so the key bytes are the digest's first
//!   2 raw bytes, not 4 ASCII characters;
//! - the node label's UTF-8 bytes follow the key bytes directly, with no separator (the buffer it
//!   `make`s first is discarded by `append(keyBytes, label...)`);
//! - the hash is spaolacci/murmur3 `New64()` with seed 0, whose `Sum` is h1 of murmur3 x64_128 in
//!   big-endian bytes, read back with `binary.BigEndian.Uint64`: that is [`murmur3_64`];
//! - the low 53 bits make `u = bits / 2^53`; if they are zero, the 8 big-endian bytes of the hash are
//!   hashed once more (`UInt64ToFloat64`); a second zero gives score 0, not a panic;
//! - score = −weight / ln(u) with weight 100 for every node (`hashring._defaultWeight`);
//! - nodes sort by score descending (`sort.Sort(sort.Reverse(..))`, unstable; shoal breaks exact ties
//!   by label so that placement never depends on insertion order).
//!
//! ## murmur3 is kept by hand, for Kraken's placement
//!
//! Placement is only Kraken's if the hash is exactly spaolacci/murmur3's `New64()` with seed 0:
//! h1 of murmur3 x64_128, taken from the big-endian `Sum` bytes, over the key bytes and label as
//! above. The hash is short and must match one Go library bit for bit, so it is written here
//! ([`murmur3_x64_128`], [`murmur3_64`]) rather than taken from a crate whose variant (x86 or x64, 32
//! or 128 bits, which half, which byte order) would need the same pinning.
//!
//! Pinned by `hrw::tests::murmur3_matches_published_vectors` (spaolacci/murmur3's own
//! `murmur_test.go` vectors, h1 and h2, seeds 0, 1 and 0x2a) and
//! `murmur3_passes_smhasher_verification` (SMHasher's 0x6384BA69 check over every tail length);
//! `shard_key_is_decoded_shard_id` pins the key decoding. No test checks a score or an owner order
//! against Kraken's own `hrw`/`hashring` output: the layers above the hash (label concatenation,
//! `UInt64ToFloat64`, −w / ln u, the sort) are tested only for their properties
//! (`score_is_positive_and_deterministic`, `removing_an_origin_moves_only_its_blobs`,
//! `placement_is_balanced`, `locations_skip_unhealthy_nodes`).

use std::collections::BTreeSet;

use crate::types::Digest;

/// Kraken gives every ring node this weight (`lib/hashring/ring.go` `_defaultWeight`).
pub const DEFAULT_WEIGHT: u32 = 100;

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

/// MurmurHash3 x64_128 (Austin Appleby's reference `MurmurHash3_x64_128`): returns (h1, h2).
///
/// Blocks and the tail are read little-endian, as the reference does on x86.
pub fn murmur3_x64_128(data: &[u8], seed: u32) -> (u64, u64) {
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);

    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        let (lo, hi) = block.split_at(8);
        let k1 = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        let k2 = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));

        h1 ^= mix_k1(k1);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }

    // The tail (0..=15 bytes): bytes 8.. feed k2, bytes ..8 feed k1, little-endian.
    let tail = blocks.remainder();
    if tail.len() > 8 {
        let k2 = tail[8..].iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        h2 ^= mix_k2(k2);
    }
    if !tail.is_empty() {
        let k1 = tail[..tail.len().min(8)].iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        h1 ^= mix_k1(k1);
    }

    let len = data.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// spaolacci/murmur3 `Sum64(data)`: the first half (h1) of murmur3 x64_128 with seed 0. Kraken's ring
/// hash.
pub fn murmur3_64(data: &[u8]) -> u64 {
    murmur3_x64_128(data, 0).0
}

fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The ring key of a digest: Kraken's `ShardID()` (4 hex characters) hex-decoded, i.e. the digest's
/// first two bytes. Only 65,536 placements exist.
pub fn shard_key(digest: &Digest) -> [u8; 2] {
    let b = digest.as_bytes();
    [b[0], b[1]]
}

/// The weighted rendezvous score of `label` for `key` (Kraken's `RendezvousHashNode.Score` with
/// `UInt64ToFloat64`). Always finite and ≥ 0.
pub fn score(key: &[u8], label: &str, weight: u32) -> f64 {
    const LOW_53_BITS: u64 = (1 << 53) - 1;
    let mut buf = Vec::with_capacity(key.len() + label.len());
    buf.extend_from_slice(key);
    buf.extend_from_slice(label.as_bytes());
    let h = murmur3_64(&buf);
    let mut bits = h & LOW_53_BITS;
    if bits == 0 {
        // Kraken rehashes the hash's own big-endian bytes once: ln(0) would make every such node
        // score 0 and lose every placement.
        bits = murmur3_64(&h.to_be_bytes()) & LOW_53_BITS;
    }
    let u = bits as f64 / (1u64 << 53) as f64;
    // u < 1, so ln(u) < 0 and the score is positive; u == 0 gives −w/−∞ = 0.
    -f64::from(weight) / u.ln()
}

/// A rendezvous hash ring over node labels (Kraken's `hashring.Ring` with a static host list).
///
/// Membership and health are separate, as in Kraken: membership decides the score order, health only
/// filters it. The caller (a driver, or the origin's health monitor) updates health.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    /// Sorted and deduplicated: Kraken's membership is a set.
    labels: Vec<String>,
    /// Always a subset of `labels`.
    healthy: BTreeSet<String>,
    max_replica: usize,
}

impl Ring {
    /// A ring of `labels` (e.g. `"10.0.0.1:15002"`), every one healthy: Kraken's health filter starts
    /// new nodes healthy.
    pub fn new<I, S>(labels: I, max_replica: usize) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: BTreeSet<String> = labels.into_iter().map(Into::into).collect();
        Ring { labels: set.iter().cloned().collect(), healthy: set, max_replica }
    }

    /// The members, sorted.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Number of members, healthy or not.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if the ring has no member.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Owners per digest when all are healthy (Kraken's `max_replica`).
    pub fn max_replica(&self) -> usize {
        self.max_replica
    }

    /// True if `label` is a member.
    pub fn contains(&self, label: &str) -> bool {
        self.labels.binary_search_by(|l| l.as_str().cmp(label)).is_ok()
    }

    /// True if `label` is a member marked healthy.
    pub fn is_healthy(&self, label: &str) -> bool {
        self.healthy.contains(label)
    }

    /// Marks a member healthy or not. Labels that are not members are ignored.
    pub fn set_healthy(&mut self, label: &str, healthy: bool) -> &mut Self {
        if healthy {
            if self.contains(label) {
                self.healthy.insert(label.to_owned());
            }
        } else {
            self.healthy.remove(label);
        }
        self
    }

    /// Adds a member (healthy). Returns false if it was already a member.
    pub fn add(&mut self, label: &str) -> bool {
        match self.labels.binary_search_by(|l| l.as_str().cmp(label)) {
            Ok(_) => false,
            Err(i) => {
                self.labels.insert(i, label.to_owned());
                self.healthy.insert(label.to_owned());
                true
            }
        }
    }

    /// Removes a member. Returns false if it was not a member.
    pub fn remove(&mut self, label: &str) -> bool {
        match self.labels.binary_search_by(|l| l.as_str().cmp(label)) {
            Ok(i) => {
                self.labels.remove(i);
                self.healthy.remove(label);
                true
            }
            Err(_) => false,
        }
    }

    /// Every member, by score for `digest`, highest first; health is ignored.
    pub fn ordered(&self, digest: &Digest) -> Vec<&str> {
        let key = shard_key(digest);
        let mut scored: Vec<(f64, &str)> =
            self.labels.iter().map(|l| (score(&key, l, DEFAULT_WEIGHT), l.as_str())).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.into_iter().map(|(_, l)| l).collect()
    }

    /// The owners of `digest`, in preference order (Kraken's `Ring.Locations`): the healthy members
    /// among the first `max_replica` by score; if none of those is healthy, the first healthy member
    /// after them; if no member is healthy, the top member regardless of health. Empty only for an
    /// empty ring (Kraken's ring is never empty).
    pub fn locations(&self, digest: &Digest) -> Vec<&str> {
        let ordered = self.ordered(digest);
        if self.healthy.is_empty() {
            return ordered.into_iter().take(1).collect();
        }
        let mut locations = Vec::new();
        for (i, label) in ordered.into_iter().enumerate() {
            if !locations.is_empty() && i >= self.max_replica {
                break;
            }
            if self.healthy.contains(label) {
                locations.push(label);
            }
        }
        locations
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// spaolacci/murmur3 `murmur_test.go` (h64_1, h64_2), which match the reference implementation.
    #[test]
    fn murmur3_matches_published_vectors() {
        let vectors: &[(u32, u64, u64, &str)] = &[
            (0x00, 0x0000000000000000, 0x0000000000000000, ""),
            (0x00, 0xcbd8a7b341bd9b02, 0x5b1e906a48ae1d19, "hello"),
            (0x00, 0x342fac623a5ebc8e, 0x4cdcbc079642414d, "hello, world"),
            (0x00, 0xb89e5988b737affc, 0x664fc2950231b2cb, "19 Jan 2038 at 3:14:07 AM"),
            (0x00, 0xcd99481f9ee902c9, 0x695da1a38987b6e7, "The quick brown fox jumps over the lazy dog."),
            (0x01, 0x4610abe56eff5cb5, 0x51622daa78f83583, ""),
            (0x01, 0xa78ddff5adae8d10, 0x128900ef20900135, "hello"),
            (0x01, 0x8b95f808840725c6, 0x1597ed5422bd493b, "hello, world"),
            (0x01, 0x2a929de9c8f97b2f, 0x56a41d99af43a2db, "19 Jan 2038 at 3:14:07 AM"),
            (0x01, 0xfb3325171f9744da, 0xaaf8b92a5f722952, "The quick brown fox jumps over the lazy dog."),
            (0x2a, 0xf02aa77dfa1b8523, 0xd1016610da11cbb9, ""),
            (0x2a, 0xc4b8b3c960af6f08, 0x2334b875b0efbc7a, "hello"),
            (0x2a, 0xb91864d797caa956, 0xd5d139a55afe6150, "hello, world"),
            (0x2a, 0xfd8f19ebdc8c6b6a, 0xd30fdc310fa08ff9, "19 Jan 2038 at 3:14:07 AM"),
            (0x2a, 0x74f33c659cda5af7, 0x4ec7a891caf316f0, "The quick brown fox jumps over the lazy dog."),
        ];
        for &(seed, h1, h2, s) in vectors {
            assert_eq!(murmur3_x64_128(s.as_bytes(), seed), (h1, h2), "seed {seed:#x} {s:?}");
            if seed == 0 {
                assert_eq!(murmur3_64(s.as_bytes()), h1);
            }
        }
    }

    /// SMHasher's verification code for MurmurHash3_x64_128 (0x6384BA69): hashes of every prefix
    /// length 0..=255 with seed 256 − len, hashed again; covers every tail length.
    #[test]
    fn murmur3_passes_smhasher_verification() {
        let key: Vec<u8> = (0..=255u8).collect();
        let mut hashes = Vec::with_capacity(256 * 16);
        for i in 0..256usize {
            let (h1, h2) = murmur3_x64_128(&key[..i], 256 - i as u32);
            hashes.extend_from_slice(&h1.to_le_bytes());
            hashes.extend_from_slice(&h2.to_le_bytes());
        }
        let (h1, _) = murmur3_x64_128(&hashes, 0);
        assert_eq!(h1 as u32, 0x6384_ba69);
    }

    #[test]
    fn shard_key_is_decoded_shard_id() {
        let d = Digest::of(b"hello");
        assert_eq!(hex::decode(d.shard_id()).unwrap(), shard_key(&d));
    }

    #[test]
    fn score_is_positive_and_deterministic() {
        let s = score(&[0x2c, 0xf2], "10.0.0.1:15002", DEFAULT_WEIGHT);
        assert!(s.is_finite() && s > 0.0);
        assert_eq!(s, score(&[0x2c, 0xf2], "10.0.0.1:15002", DEFAULT_WEIGHT));
        // The label follows the key bytes directly: the same bytes split differently score the same.
        assert_eq!(score(b"ab", "c", 100), score(b"a", "bc", 100));
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:15002", i + 1)).collect()
    }

    fn random_digests(n: usize, seed: u64) -> Vec<Digest> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| Digest::from_raw(rng.random())).collect()
    }

    #[test]
    fn removing_an_origin_moves_only_its_blobs() {
        for n in [3, 5, 8] {
            let all = Ring::new(labels(n), 3);
            let removed = labels(n)[n / 2].clone();
            let mut fewer = all.clone();
            assert!(fewer.remove(&removed));
            for d in random_digests(2000, n as u64) {
                let before = all.locations(&d);
                let after = fewer.locations(&d);
                if before != after {
                    assert!(before.contains(&removed.as_str()), "{d:?}: {before:?} -> {after:?}");
                }
                // Survivors keep their relative order.
                let survivors: Vec<&str> = before.iter().copied().filter(|l| *l != removed).collect();
                assert_eq!(&after[..survivors.len()], &survivors[..]);
                // The full order is the old one without the removed node.
                let full: Vec<&str> = all.ordered(&d).into_iter().filter(|l| *l != removed).collect();
                assert_eq!(fewer.ordered(&d), full);
            }
        }
    }

    #[test]
    fn placement_is_balanced() {
        let n = 6;
        let ring = Ring::new(labels(n), 2);
        let mut primaries: BTreeMap<&str, usize> = BTreeMap::new();
        let mut replicas: BTreeMap<&str, usize> = BTreeMap::new();
        let digests = random_digests(6000, 7);
        for d in &digests {
            let locs = ring.locations(d);
            assert_eq!(locs.len(), 2);
            *primaries.entry(locs[0]).or_default() += 1;
            for l in locs {
                *replicas.entry(l).or_default() += 1;
            }
        }
        assert_eq!(primaries.len(), n);
        for (&label, &count) in &primaries {
            // Expected 1000 each; ±20 % is over 6 standard deviations.
            assert!((800..=1200).contains(&count), "{label} is primary for {count}");
        }
        for (&label, &count) in &replicas {
            assert!((1600..=2400).contains(&count), "{label} owns {count}");
        }
    }

    #[test]
    fn locations_skip_unhealthy_nodes() {
        let mut ring = Ring::new(labels(5), 3);
        let d = Digest::of(b"layer");
        let ordered: Vec<String> = ring.ordered(&d).into_iter().map(str::to_owned).collect();
        assert_eq!(ring.locations(&d), ordered[..3].iter().map(String::as_str).collect::<Vec<_>>());

        // One owner down: the other two remain, no replacement is pulled in.
        ring.set_healthy(&ordered[1], false);
        assert_eq!(ring.locations(&d), vec![ordered[0].as_str(), ordered[2].as_str()]);

        // Every owner down: the first healthy node after them.
        ring.set_healthy(&ordered[0], false).set_healthy(&ordered[2], false);
        assert_eq!(ring.locations(&d), vec![ordered[3].as_str()]);
        ring.set_healthy(&ordered[3], false);
        assert_eq!(ring.locations(&d), vec![ordered[4].as_str()]);

        // Nobody healthy: the top node regardless.
        ring.set_healthy(&ordered[4], false);
        assert_eq!(ring.locations(&d), vec![ordered[0].as_str()]);

        // Recovery, and unknown labels are ignored.
        ring.set_healthy(&ordered[1], true).set_healthy("10.9.9.9:1", true);
        assert_eq!(ring.locations(&d), vec![ordered[1].as_str()]);
        assert!(!ring.is_healthy("10.9.9.9:1"));
        assert!(Ring::new(Vec::<String>::new(), 3).locations(&d).is_empty());
    }
}
