//! A fixed-length set of piece indices, with Kraken's wire encoding (willf/bitset `MarshalBinary`).

use std::fmt;

use crate::types::PieceIndex;

/// Which pieces a peer has.
///
/// Wire form: a big-endian `u64` bit length N, then ⌈N/64⌉ big-endian `u64` words; bit i lives in word
/// i/64 at position i%64 (least significant first).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bitfield {
    len: u32,
    words: Vec<u64>,
    ones: u32,
}

impl Bitfield {
    /// All pieces missing.
    pub fn new(len: u32) -> Self {
        Bitfield { len, words: vec![0; words_for(len)], ones: 0 }
    }

    /// All pieces present.
    pub fn full(len: u32) -> Self {
        let mut b = Bitfield::new(len);
        b.set_all();
        b
    }

    /// Number of pieces the bitfield covers (its bit length N).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True for a bitfield of length 0 (not one with no piece present: see [`Bitfield::count_ones`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces present.
    pub fn count_ones(&self) -> u32 {
        self.ones
    }

    /// True if every piece is present (also for length 0).
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `i` is present; out-of-range indices are absent.
    pub fn get(&self, i: PieceIndex) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Marks piece `i` present and returns whether it was absent. Out-of-range indices are ignored.
    pub fn set(&mut self, i: PieceIndex) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let bit = 1 << (i % 64);
        let was_absent = *w & bit == 0;
        *w |= bit;
        self.ones += u32::from(was_absent);
        was_absent
    }

    /// Marks every piece present; bits past the length stay clear.
    pub fn set_all(&mut self) {
        for w in &mut self.words {
            *w = u64::MAX;
        }
        if let Some(last) = self.words.last_mut() {
            let tail = self.len % 64;
            if tail != 0 {
                *last = (1u64 << tail) - 1;
            }
        }
        self.ones = self.len;
    }

    /// Present pieces, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = PieceIndex> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| word_ones(wi, w))
    }

    /// Pieces present here and absent in `other`, ascending. Both must have the same length.
    pub fn iter_missing_from<'a>(&'a self, other: &'a Bitfield) -> impl Iterator<Item = PieceIndex> + 'a {
        let theirs = other.words.iter().chain(std::iter::repeat(&0));
        self.words.iter().zip(theirs).enumerate().flat_map(|(wi, (&a, &b))| word_ones(wi, a & !b))
    }

    /// [`Bitfield::iter_missing_from`], from piece `start` on (skipping whole words before it).
    pub fn iter_missing_from_at<'a>(
        &'a self,
        other: &'a Bitfield,
        start: PieceIndex,
    ) -> impl Iterator<Item = PieceIndex> + 'a {
        let w0 = ((start / 64) as usize).min(self.words.len());
        let theirs = other.words.get(w0..).unwrap_or(&[]).iter().chain(std::iter::repeat(&0));
        self.words[w0..]
            .iter()
            .zip(theirs)
            .enumerate()
            .flat_map(move |(k, (&a, &b))| word_ones(w0 + k, a & !b))
            .filter(move |&i| i >= start)
    }

    /// Encoded size in bytes: 8 + 8·⌈N/64⌉.
    pub fn encoded_len(&self) -> usize {
        8 + 8 * self.words.len()
    }

    /// The wire form (see the type's doc): the bit length, then the words, all big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&u64::from(self.len).to_be_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Parses the wire form. Refuses a length that disagrees with the number of words, a bit set past
    /// the length, or more than `max_len` bits (the caller knows the torrent's piece count).
    pub fn from_bytes(bytes: &[u8], max_len: u32) -> Result<Self, BitfieldError> {
        let (head, rest) = bytes.split_first_chunk::<8>().ok_or(BitfieldError::Truncated)?;
        let len = u64::from_be_bytes(*head);
        if len > u64::from(max_len) {
            return Err(BitfieldError::TooLong { len, max: max_len });
        }
        let len = len as u32;
        let n = words_for(len);
        if rest.len() != 8 * n {
            return Err(BitfieldError::WordCount { len, bytes: rest.len() });
        }
        let words: Vec<u64> =
            rest.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().expect("chunks of 8"))).collect();
        if let Some(&last) = words.last() {
            let tail = len % 64;
            if tail != 0 && last >> tail != 0 {
                return Err(BitfieldError::BitPastEnd);
            }
        }
        let ones = words.iter().map(|w| w.count_ones()).sum();
        Ok(Bitfield { len, words, ones })
    }
}

/// The set bits of word `wi`, as piece indices, ascending.
fn word_ones(wi: usize, mut w: u64) -> impl Iterator<Item = PieceIndex> {
    std::iter::from_fn(move || {
        if w == 0 {
            return None;
        }
        let bit = w.trailing_zeros();
        w &= w - 1;
        Some(wi as u32 * 64 + bit)
    })
}

fn words_for(len: u32) -> usize {
    len.div_ceil(64) as usize
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

/// A bitfield that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// Fewer than the 8 bytes of the length header.
    #[error("bitfield shorter than its 8-byte length header")]
    Truncated,
    /// The bit length exceeds the caller's limit.
    #[error("bitfield of {len} bits exceeds the limit of {max}")]
    TooLong {
        /// The bit length the header gives.
        len: u64,
        /// The caller's limit, in bits.
        max: u32,
    },
    /// The bytes after the header are not the 8·⌈len/64⌉ the length needs.
    #[error("bitfield of {len} bits carries {bytes} bytes of words")]
    WordCount {
        /// The bit length the header gives.
        len: u32,
        /// Bytes of words that follow the header.
        bytes: usize,
    },
    /// A bit at or past the length is set in the last word.
    #[error("bitfield has a bit set past its length")]
    BitPastEnd,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::new(130);
        assert!(b.set(0));
        assert!(b.set(129));
        assert!(!b.set(129));
        assert!(!b.set(130));
        assert!(b.get(0) && b.get(129) && !b.get(1) && !b.get(500));
        assert_eq!(b.count_ones(), 2);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 129]);
        let full = Bitfield::full(130);
        assert!(full.is_full());
        assert_eq!(full.iter_missing_from(&b).count(), 128);
    }

    #[test]
    fn missing_from_at_is_missing_from_past_start() {
        let (mut a, mut b) = (Bitfield::new(300), Bitfield::new(200));
        for i in (0..300).filter(|i| i % 3 != 1) {
            a.set(i);
        }
        for i in (0..200).filter(|i| i % 5 == 0) {
            b.set(i);
        }
        for start in [0, 1, 63, 64, 65, 127, 128, 199, 200, 255, 299, 300, 1000] {
            let want: Vec<_> = a.iter_missing_from(&b).filter(|&i| i >= start).collect();
            assert_eq!(a.iter_missing_from_at(&b, start).collect::<Vec<_>>(), want, "start {start}");
        }
    }

    #[test]
    fn wire_form_matches_willf_bitset() {
        let mut b = Bitfield::new(65);
        b.set(0);
        b.set(64);
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), 8 + 16);
        assert_eq!(&bytes[..8], &65u64.to_be_bytes());
        assert_eq!(&bytes[8..16], &1u64.to_be_bytes());
        assert_eq!(&bytes[16..], &1u64.to_be_bytes());
        assert_eq!(Bitfield::from_bytes(&bytes, 65).unwrap(), b);
        assert!(Bitfield::from_bytes(&bytes, 64).is_err());
        assert!(Bitfield::from_bytes(&bytes[..20], 65).is_err());
        let mut bad = bytes.clone();
        bad[16] = 0x80;
        assert_eq!(Bitfield::from_bytes(&bad, 65), Err(BitfieldError::BitPastEnd));
    }
}
