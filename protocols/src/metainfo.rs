//! Torrent metadata (Kraken's `core.MetaInfo`): piece length, CRC32 piece sums, name and length, and
//! the info hash derived from them.
//!
//! ## The bencoding is kept by hand, for Kraken's bytes
//!
//! The info hash names a torrent everywhere (handshakes, announce URLs, the tracker's peer store),
//! and a receiver recomputes it from the metainfo JSON, so shoal's must equal Kraken's byte for byte:
//! SHA-1 over exactly the bytes jackpal/bencode-go writes for Kraken's `info` Go struct. That is a
//! dictionary whose keys bencode-go sorts (`Length`, `Name`, `PieceLength`, `PieceSums`: not the
//! struct's field order, which the JSON form keeps), integers in decimal, the piece sums as a list of
//! integers. The layout is four fixed keys, so the private `bencode` function writes it directly
//! instead of going through a bencode crate, whose key order and integer encoding would need the
//! same pinning.
//!
//! Pinned by the test `metainfo::tests::info_hash_is_sha1_of_sorted_bencode`, whose expected bencoding
//! is written out literally from that rule; no info hash produced by Kraken itself is checked.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::types::{Digest, InfoHash, PieceIndex};

/// The `info` dictionary. Field names follow Kraken's JSON form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Bytes per piece; every piece but the last has exactly this length. [`MetaInfo::new`] refuses 0.
    #[serde(rename = "PieceLength")]
    pub piece_length: u64,
    /// CRC32-IEEE of every piece, in order.
    #[serde(rename = "PieceSums")]
    pub piece_sums: Vec<u32>,
    /// The blob digest as 64 hex characters.
    #[serde(rename = "Name")]
    pub name: String,
    /// The blob's length in bytes.
    #[serde(rename = "Length")]
    pub length: u64,
}

/// Validated metadata for one blob; the info hash is computed once at construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaInfo {
    info: Info,
    digest: Digest,
    info_hash: InfoHash,
}

/// Metadata that is not self-consistent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaInfoError {
    /// The piece length is 0 (or a piece length table is empty or holds a 0).
    #[error("piece length must be positive")]
    ZeroPieceLength,
    /// The piece sums listed are not `ceil(length / piece_length)`.
    #[error(
        "blob of {length} bytes at piece length {piece_length} has {expected} pieces, metainfo lists {got}"
    )]
    PieceCount {
        /// The blob's length in bytes.
        length: u64,
        /// Bytes per piece.
        piece_length: u64,
        /// Pieces the length and piece length give.
        expected: u64,
        /// Piece sums the metainfo lists.
        got: usize,
    },
    /// `Name` is not a 64-character hex SHA-256; holds the name.
    #[error("name is not a sha256 hex digest: {0}")]
    Name(String),
    /// The serialized form is not valid JSON for the structure; holds the parser's message.
    #[error("metainfo JSON: {0}")]
    Json(String),
    /// The blob would have more pieces than a [`PieceIndex`] can number.
    #[error("blob of {length} bytes at piece length {piece_length} has more than 2^32 pieces")]
    TooManyPieces {
        /// The blob's length in bytes.
        length: u64,
        /// Bytes per piece.
        piece_length: u64,
    },
}

impl MetaInfo {
    /// Builds metadata from its parts, checking the piece count.
    pub fn new(info: Info) -> Result<Self, MetaInfoError> {
        if info.piece_length == 0 {
            return Err(MetaInfoError::ZeroPieceLength);
        }
        let expected = info.length.div_ceil(info.piece_length);
        if expected > u64::from(u32::MAX) {
            return Err(MetaInfoError::TooManyPieces {
                length: info.length,
                piece_length: info.piece_length,
            });
        }
        if expected != info.piece_sums.len() as u64 {
            return Err(MetaInfoError::PieceCount {
                length: info.length,
                piece_length: info.piece_length,
                expected,
                got: info.piece_sums.len(),
            });
        }
        let digest = Digest::from_hex(&info.name).map_err(|_| MetaInfoError::Name(info.name.clone()))?;
        let info_hash = InfoHash::of(&bencode(&info));
        Ok(MetaInfo { info, digest, info_hash })
    }

    /// Metadata of real bytes: the digest and every piece's CRC32 are computed.
    pub fn from_blob(blob: &[u8], piece_length: u64) -> Result<Self, MetaInfoError> {
        if piece_length == 0 {
            return Err(MetaInfoError::ZeroPieceLength);
        }
        let piece_sums = blob.chunks(piece_length as usize).map(crc32fast::hash).collect();
        MetaInfo::new(Info {
            piece_length,
            piece_sums,
            name: Digest::of(blob).hex(),
            length: blob.len() as u64,
        })
    }

    /// Metadata of a simulated blob whose bytes never exist: each piece's sum is its content tag
    /// ([`content_tag`]), so a tagged payload passes the same CRC check a real one does.
    pub fn synthetic(digest: Digest, length: u64, piece_length: u64) -> Result<Self, MetaInfoError> {
        if piece_length == 0 {
            return Err(MetaInfoError::ZeroPieceLength);
        }
        let n = length.div_ceil(piece_length);
        if n > u64::from(u32::MAX) {
            return Err(MetaInfoError::TooManyPieces { length, piece_length });
        }
        let piece_sums = (0..n as u32).map(|i| content_tag(&digest, i)).collect();
        MetaInfo::new(Info { piece_length, piece_sums, name: digest.hex(), length })
    }

    /// The `info` dictionary.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The blob's digest, parsed from `Name`.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The torrent's info hash: SHA-1 of the bencoded `info` (see the module doc).
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The blob's length in bytes.
    pub fn length(&self) -> u64 {
        self.info.length
    }

    /// Bytes per piece (the last piece may be shorter).
    pub fn piece_length(&self) -> u64 {
        self.info.piece_length
    }

    /// Number of pieces: `ceil(length / piece_length)`, 0 for an empty blob.
    pub fn num_pieces(&self) -> u32 {
        self.info.piece_sums.len() as u32
    }

    /// Length of piece `i`: the piece length, except the last piece which holds the remainder.
    pub fn piece_len(&self, i: PieceIndex) -> u64 {
        let start = u64::from(i) * self.info.piece_length;
        self.info.piece_length.min(self.info.length.saturating_sub(start))
    }

    /// The CRC32-IEEE of piece `i`, or `None` past the last piece.
    pub fn piece_sum(&self, i: PieceIndex) -> Option<u32> {
        self.info.piece_sums.get(i as usize).copied()
    }

    /// Kraken's serialized form: `{"Info":{…}}`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Wrapper<'a> {
            #[serde(rename = "Info")]
            info: &'a Info,
        }
        serde_json::to_string(&Wrapper { info: &self.info }).expect("plain struct serializes")
    }

    /// Parses Kraken's serialized form and recomputes the info hash, as the receiver does.
    pub fn from_json(s: &str) -> Result<Self, MetaInfoError> {
        #[derive(Deserialize)]
        struct Wrapper {
            #[serde(rename = "Info")]
            info: Info,
        }
        let w: Wrapper = serde_json::from_str(s).map_err(|e| MetaInfoError::Json(e.to_string()))?;
        MetaInfo::new(w.info)
    }
}

/// The content tag of piece `i` of a simulated blob: the CRC32 its bytes are deemed to have.
pub fn content_tag(digest: &Digest, i: PieceIndex) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(digest.as_bytes());
    h.update(&i.to_be_bytes());
    h.finalize()
}

/// Bencode of `info` as jackpal/bencode-go writes the struct: a dictionary with keys sorted
/// (`Length`, `Name`, `PieceLength`, `PieceSums`), the sums as a list of integers.
fn bencode(info: &Info) -> Vec<u8> {
    let mut s = String::with_capacity(64 + info.piece_sums.len() * 12);
    write!(s, "d6:Lengthi{}e4:Name{}:{}", info.length, info.name.len(), info.name).expect("string write");
    write!(s, "11:PieceLengthi{}e9:PieceSumsl", info.piece_length).expect("string write");
    for sum in &info.piece_sums {
        write!(s, "i{sum}e").expect("string write");
    }
    s.push_str("ee");
    s.into_bytes()
}

/// Kraken's `metainfogen.piece_lengths`: blob-size thresholds mapped to piece lengths. The chosen
/// piece length belongs to the largest threshold ≤ the blob size, or to the smallest threshold if
/// the blob is below every threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceLengths(Vec<(u64, u64)>);

impl PieceLengths {
    /// `entries` are (threshold_bytes, piece_length_bytes); they are sorted here. Empty tables and
    /// zero piece lengths are refused, as Kraken's generator refuses an empty configuration.
    pub fn new(mut entries: Vec<(u64, u64)>) -> Result<Self, MetaInfoError> {
        if entries.is_empty() || entries.iter().any(|&(_, p)| p == 0) {
            return Err(MetaInfoError::ZeroPieceLength);
        }
        entries.sort_unstable();
        Ok(PieceLengths(entries))
    }

    /// One piece length for every size.
    pub fn fixed(piece_length: u64) -> Self {
        PieceLengths(vec![(0, piece_length.max(1))])
    }

    /// The (threshold_bytes, piece_length_bytes) entries, sorted by threshold.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// The piece length, in bytes, for a blob of `blob_size` bytes (see the type's doc).
    pub fn select(&self, blob_size: u64) -> u64 {
        self.0.iter().rev().find(|&&(t, _)| t <= blob_size).unwrap_or(&self.0[0]).1
    }
}

impl Default for PieceLengths {
    /// Kraken's shipped origin configuration: 4 MiB pieces for every size (base.yaml `0: 4MB`).
    fn default() -> Self {
        PieceLengths::fixed(4 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;
    const GB: u64 = 1 << 30;

    #[test]
    fn piece_length_selection_matches_kraken_unit_test() {
        let t = PieceLengths::new(vec![(0, MB), (2 * GB, 4 * MB), (4 * GB, 8 * MB)]).unwrap();
        assert_eq!(t.select(GB), MB);
        assert_eq!(t.select(2 * GB), 4 * MB);
        assert_eq!(t.select(3 * GB), 4 * MB);
        assert_eq!(t.select(8 * GB), 8 * MB);
        let above = PieceLengths::new(vec![(10, 7), (20, 9)]).unwrap();
        assert_eq!(above.select(1), 7, "below every threshold takes the smallest");
        assert!(PieceLengths::new(vec![]).is_err());
    }

    #[test]
    fn pieces_and_last_piece_length() {
        let blob: Vec<u8> = (0..10u8).collect();
        let mi = MetaInfo::from_blob(&blob, 4).unwrap();
        assert_eq!(mi.num_pieces(), 3);
        assert_eq!((mi.piece_len(0), mi.piece_len(2)), (4, 2));
        assert_eq!(mi.piece_sum(1), Some(crc32fast::hash(&blob[4..8])));
        assert_eq!(mi.digest(), Digest::of(&blob));
    }

    #[test]
    fn info_hash_is_sha1_of_sorted_bencode() {
        let info = Info { piece_length: 4, piece_sums: vec![1, 2], name: "ab".repeat(32), length: 8 };
        let expected =
            format!("d6:Lengthi8e4:Name64:{}11:PieceLengthi4e9:PieceSumsli1ei2eee", "ab".repeat(32));
        assert_eq!(bencode(&info), expected.as_bytes());
        let mi = MetaInfo::new(info).unwrap();
        assert_eq!(mi.info_hash(), InfoHash::of(expected.as_bytes()));
    }

    #[test]
    fn json_round_trip_and_validation() {
        let mi = MetaInfo::synthetic(Digest::of(b"x"), 10 * MB + 1, 4 * MB).unwrap();
        assert_eq!(mi.num_pieces(), 3);
        let json = mi.to_json();
        assert!(json.starts_with("{\"Info\":{\"PieceLength\":4194304,"));
        assert_eq!(MetaInfo::from_json(&json).unwrap(), mi);
        let bad = json.replace("\"Length\":10485761", "\"Length\":1");
        assert!(matches!(MetaInfo::from_json(&bad), Err(MetaInfoError::PieceCount { .. })));
        assert!(MetaInfo::from_json("{").is_err());
    }
}
