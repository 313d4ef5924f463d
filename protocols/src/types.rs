//! Identifiers shared by every node: blob digests, info hashes, peer ids, namespaces and peer records.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

/// Index of a piece within a torrent.
pub type PieceIndex = u32;

/// Equality and order for a 20-byte id, as its bytes' lexicographic order, computed on three
/// big-endian words (the same order, without a `memcmp` call): peer ids and info hashes key the
/// hottest maps of every node.
macro_rules! word_ordered {
    ($t:ident) => {
        impl $t {
            #[inline]
            fn words(&self) -> (u64, u64, u32) {
                let b = &self.0;
                let w = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                (w(0), w(8), u32::from_be_bytes(b[16..20].try_into().expect("4 bytes")))
            }
        }

        impl PartialEq for $t {
            #[inline]
            fn eq(&self, other: &Self) -> bool {
                self.words() == other.words()
            }
        }

        impl Eq for $t {}

        // Hashes the bytes, as a derived `Hash` would: consistent with `eq` above (equal words are
        // equal bytes), and with the hashes of earlier builds.
        impl std::hash::Hash for $t {
            #[inline]
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.hash(state);
            }
        }

        impl PartialOrd for $t {
            #[inline]
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $t {
            #[inline]
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.words().cmp(&other.words())
            }
        }
    };
}

/// A blob's content address: the SHA-256 of its bytes. Displayed as `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest with these 32 SHA-256 bytes.
    pub const fn from_raw(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// The 32 raw SHA-256 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-character lowercase hex form, without the `sha256:` prefix (Kraken's `Name`).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Kraken's shard id: the first 4 hex characters, the key of every hash ring.
    pub fn shard_id(&self) -> String {
        hex::encode(&self.0[..2])
    }

    /// Parses the bare 64-character hex form.
    pub fn from_hex(s: &str) -> Result<Self, ParseIdError> {
        parse_hex::<32>(s).map(Digest).ok_or(ParseIdError::Digest)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}…", &self.hex()[..12])
    }
}

impl FromStr for Digest {
    type Err = ParseIdError;
    /// Accepts `sha256:<hex>` or the bare hex.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::from_hex(s.strip_prefix("sha256:").unwrap_or(s))
    }
}

/// A torrent's identity: SHA-1 of the bencoded `info` dictionary (see [`crate::metainfo`]).
/// Ordered as its bytes are.
#[derive(Clone, Copy)]
pub struct InfoHash([u8; 20]);

word_ordered!(InfoHash);

impl InfoHash {
    /// The info hash with these 20 SHA-1 bytes.
    pub const fn from_raw(bytes: [u8; 20]) -> Self {
        InfoHash(bytes)
    }

    /// The SHA-1 of `data`: for a torrent, its bencoded `info` dictionary.
    pub fn of(data: &[u8]) -> Self {
        InfoHash(Sha1::digest(data).into())
    }

    /// The 20 raw SHA-1 bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The 40-character lowercase hex form (as sent in URLs and handshakes).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 40-character hex form.
    pub fn from_hex(s: &str) -> Result<Self, ParseIdError> {
        parse_hex::<20>(s).map(InfoHash).ok_or(ParseIdError::InfoHash)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({}…)", &self.hex()[..10])
    }
}

/// A peer's 20-byte identity, sent as 40-character hex. Ordered as its bytes are.
#[derive(Clone, Copy)]
pub struct PeerId([u8; 20]);

word_ordered!(PeerId);

impl PeerId {
    /// The peer id with these 20 bytes.
    pub const fn from_raw(bytes: [u8; 20]) -> Self {
        PeerId(bytes)
    }

    /// Kraken's `addr_hash` factory (used by agents and origins in base.yaml): SHA-1 of `"ip:port"`.
    pub fn from_addr(addr: SocketAddr) -> Self {
        PeerId(Sha1::digest(format!("{}:{}", addr.ip(), addr.port()).as_bytes()).into())
    }

    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The 40-character lowercase hex form.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 40-character hex form.
    pub fn from_hex(s: &str) -> Result<Self, ParseIdError> {
        parse_hex::<20>(s).map(PeerId).ok_or(ParseIdError::PeerId)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({}…)", &self.hex()[..8])
    }
}

/// An identifier string that did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// A digest was not 64 hex characters (after an optional `sha256:`).
    #[error("a digest is 64 hex characters, optionally prefixed by `sha256:`")]
    Digest,
    /// An info hash was not 40 hex characters.
    #[error("an info hash is 40 hex characters")]
    InfoHash,
    /// A peer id was not 40 hex characters.
    #[error("a peer id is 40 hex characters")]
    PeerId,
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// What a tracker knows of a peer and hands out (Kraken's `core.PeerInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's identity.
    pub peer_id: PeerId,
    /// The address the peer listens on for P2P connections.
    pub addr: SocketAddr,
    /// True for origins: they are dialled with the origin pipeline limit.
    pub origin: bool,
    /// True once the peer has every piece (a seeder); origins are handed out complete.
    pub complete: bool,
}

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PeerId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for InfoHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for InfoHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        InfoHash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The word comparison orders ids exactly as their bytes: maps keyed by ids iterate in the
        /// order they always have, so outputs do not move.
        #[test]
        fn ids_order_and_equal_as_their_bytes(
            a in proptest::array::uniform20(proptest::prelude::any::<u8>()),
            b in proptest::array::uniform20(proptest::prelude::any::<u8>()),
            prefix in 0usize..20,
        ) {
            // Shared prefixes of every length, so that each word boundary decides some cases.
            let mut b = b;
            b[..prefix].copy_from_slice(&a[..prefix]);
            proptest::prop_assert_eq!(PeerId::from_raw(a).cmp(&PeerId::from_raw(b)), a.cmp(&b));
            proptest::prop_assert_eq!(PeerId::from_raw(a) == PeerId::from_raw(b), a == b);
            proptest::prop_assert_eq!(InfoHash::from_raw(a).cmp(&InfoHash::from_raw(b)), a.cmp(&b));
            proptest::prop_assert_eq!(InfoHash::from_raw(a) == InfoHash::from_raw(b), a == b);
            proptest::prop_assert_eq!(PeerId::from_raw(a).cmp(&PeerId::from_raw(a)), std::cmp::Ordering::Equal);
        }
    }

    #[test]
    fn digest_round_trips_through_text() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_string(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(d.shard_id(), "2cf2");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.hex().parse::<Digest>().unwrap(), d);
        assert!("sha256:zz".parse::<Digest>().is_err());
    }

    #[test]
    fn peer_id_is_sha1_of_ip_port() {
        let id = PeerId::from_addr("127.0.0.1:8080".parse().unwrap());
        assert_eq!(id.as_bytes(), &<[u8; 20]>::from(Sha1::digest(b"127.0.0.1:8080")));
        assert_eq!(PeerId::from_hex(&id.hex()).unwrap(), id);
    }
}
