//! The typed exchanges between agents and trackers (reference/kraken.md §4.5, §5) and between trackers
//! and origins (§1.3). Real drivers carry them over HTTP; the simulated engines pass them as values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metainfo::MetaInfo;
use crate::policy::dragonfly::{DragonflyAnswer, DragonflyReport};
use crate::types::{Digest, InfoHash, PeerInfo};

/// `POST /announce/{infohash}`: an agent tells the tracker it takes part in a torrent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceRequest {
    /// The blob the torrent carries; the tracker places its owning origins by it.
    pub digest: Digest,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The announcing peer, with `complete` set once it has every piece.
    pub peer: PeerInfo,
    /// shoal extension: a Dragonfly peer's progress and load (absent for Kraken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dragonfly: Option<DragonflyReport>,
}

/// The tracker's answer: whom to dial, and when to announce again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// Peers to dial, in the handout policy's order, the owning origins included; empty for a seeder.
    /// Under Dragonfly, the parents (or origins) the decision names.
    pub peers: Vec<PeerInfo>,
    /// Kraken sends the interval as int64 nanoseconds.
    pub interval_ns: u64,
    /// shoal extension: the Dragonfly scheduler's decision (absent for Kraken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dragonfly: Option<DragonflyAnswer>,
}

impl AnnounceResponse {
    /// `interval_ns` as a [`Duration`].
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }
}

/// Why an announce produced no handout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The tracker had neither peers nor origins (Kraken's 500 "no peers available").
    #[error("no peers available")]
    NoPeers,
    /// The request did not reach a tracker or timed out.
    #[error("tracker unreachable")]
    Unreachable,
}

/// The answer to `GET /namespace/{ns}/blobs/{digest}/metainfo`, from an origin or through a tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaInfoReply {
    /// 200: the blob's metainfo.
    Ready(MetaInfo),
    /// 202: the origin is fetching the blob from its backend; poll again.
    Pending,
    /// 404: no backend has the blob.
    NotFound,
    /// The request did not reach a server or timed out.
    Unreachable,
}

impl MetaInfoReply {
    /// The HTTP status Kraken would send.
    pub fn status(&self) -> u16 {
        match self {
            MetaInfoReply::Ready(_) => 200,
            MetaInfoReply::Pending => 202,
            MetaInfoReply::NotFound => 404,
            MetaInfoReply::Unreachable => 503,
        }
    }
}
