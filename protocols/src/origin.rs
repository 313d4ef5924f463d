//! The origin: an accept-only seeder that serves blobs from its backend (reference/kraken.md §6).
//!
//! An origin never dials and never announces. A blob is served once it is in the origin's cache; a
//! handshake or metainfo request for a blob the backend has but the cache lacks starts a backend fetch
//! (latency plus size over bandwidth, [`OriginConfig::backend_fetch_time`]) and is refused (the
//! handshake) or answered 202 (metainfo) until the fetch completes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::announce::MetaInfoReply;
use crate::config::{OriginConfig, SchedulerConfig};
use crate::message::Message;
use crate::metainfo::MetaInfo;
use crate::peer::{ConnId, Event, Output, Scheduler};
use crate::time::Instant;
use crate::types::{Digest, PeerId, PeerInfo};

/// A blob in the backend: real bytes, or a size whose pieces are simulated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobContent {
    /// Simulated: pieces travel as tagged payloads ([`crate::metainfo::content_tag`]).
    Synthetic {
        /// The blob's size in bytes.
        size: u64,
    },
    /// Real bytes; the digest must be their SHA-256 or the blob is never served.
    Bytes(Bytes),
    /// Real bytes the driver keeps outside the state machine (on disk), described by their
    /// metainfo (the piece length must be the one the origin's `piece_lengths` select). Pieces are
    /// served as [`Payload::Tagged`](crate::Payload) carrying the piece's real CRC32, and the driver
    /// writes the bytes in their place ([`crate::wire::encode_real_header`]).
    Stored(MetaInfo),
}

impl BlobContent {
    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            BlobContent::Synthetic { size } => *size,
            BlobContent::Bytes(b) => b.len() as u64,
            BlobContent::Stored(m) => m.length(),
        }
    }
}

#[derive(Debug)]
struct Cached {
    metainfo: MetaInfo,
    blob: Option<Bytes>,
}

/// An origin server.
#[derive(Debug)]
pub struct Origin {
    sched: Scheduler,
    config: OriginConfig,
    backend: BTreeMap<Digest, BlobContent>,
    cache: BTreeMap<Digest, Cached>,
    /// Backend fetches in progress, with their completion time.
    fetching: BTreeMap<Digest, Instant>,
}

impl Origin {
    /// An origin listening on `addr` whose backend holds `backend`. With `config.warm_cache` every
    /// blob starts cached.
    pub fn new(
        now: Instant,
        scheduler: SchedulerConfig,
        config: OriginConfig,
        addr: SocketAddr,
        backend: BTreeMap<Digest, BlobContent>,
        seed: u64,
    ) -> Self {
        let me = PeerInfo { peer_id: PeerId::from_addr(addr), addr, origin: true, complete: true };
        let mut o = Origin {
            sched: Scheduler::new(now, scheduler, me, seed),
            config,
            backend,
            cache: BTreeMap::new(),
            fetching: BTreeMap::new(),
        };
        if o.config.warm_cache {
            let digests: Vec<Digest> = o.backend.keys().copied().collect();
            for d in digests {
                o.cache_blob(d);
            }
        }
        o
    }

    /// This origin as trackers hand it out.
    pub fn peer_info(&self) -> PeerInfo {
        self.sched.me.clone()
    }

    /// True if `digest` is in the cache (servable now, metainfo answered 200).
    pub fn is_cached(&self, digest: &Digest) -> bool {
        self.cache.contains_key(digest)
    }

    /// Generates metainfo for a backend blob and puts it in the cache (Kraken's origins generate
    /// metainfo when a blob enters the cache).
    fn cache_blob(&mut self, digest: Digest) {
        let Some(content) = self.backend.get(&digest) else { return };
        let piece_length = self.config.piece_lengths.select(content.size());
        let (metainfo, blob) = match content {
            BlobContent::Synthetic { size } => (MetaInfo::synthetic(digest, *size, piece_length), None),
            BlobContent::Bytes(b) => (MetaInfo::from_blob(b, piece_length), Some(b.clone())),
            BlobContent::Stored(m) if m.piece_length() == piece_length => (Ok(m.clone()), None),
            // Cut at another piece length than the origin's: never served.
            BlobContent::Stored(_) => return self.drop_backend(digest),
        };
        // A backend entry whose bytes do not hash to its digest, or whose size cannot be cut into
        // pieces, is never served.
        match metainfo {
            Ok(m) if m.digest() == digest => {
                self.cache.insert(digest, Cached { metainfo: m, blob });
            }
            _ => self.drop_backend(digest),
        }
    }

    fn drop_backend(&mut self, digest: Digest) {
        self.backend.remove(&digest);
    }

    /// Starts a backend fetch unless one is running.
    fn refresh(&mut self, now: Instant, digest: Digest) {
        if self.fetching.contains_key(&digest) {
            return;
        }
        if let Some(content) = self.backend.get(&digest) {
            let done = now + self.config.backend_fetch_time(content.size());
            self.fetching.insert(digest, done);
        }
    }

    /// `GET /internal/namespace/{ns}/blobs/{digest}/metainfo`.
    pub fn handle_metainfo_request(
        &mut self,
        now: Instant,
        _namespace: &str,
        digest: Digest,
    ) -> MetaInfoReply {
        if let Some(c) = self.cache.get(&digest) {
            return MetaInfoReply::Ready(c.metainfo.clone());
        }
        if !self.backend.contains_key(&digest) {
            return MetaInfoReply::NotFound;
        }
        self.refresh(now, digest);
        MetaInfoReply::Pending
    }

    /// A connection arrived; the opener's handshake must follow within the handshake timeout.
    pub fn handle_accept(&mut self, now: Instant, _remote: SocketAddr) -> ConnId {
        self.sched.accept(now)
    }

    /// A message arrived on a connection. A handshake for an uncached blob is refused and starts a
    /// backend fetch; one that does not match the cached metainfo is refused.
    pub fn handle_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        let Some(unknown) = self.sched.handle_message(now, conn, msg) else { return };
        let hs = unknown.handshake;
        let Some(c) = self.cache.get(&hs.digest) else {
            // Not cached: start a backend fetch and fail this handshake; the agent blacklists us for
            // a while and tries again on a later announce.
            self.refresh(now, hs.digest);
            self.sched.refuse(now, conn, &hs);
            return;
        };
        // The scheduler has no control for this info hash (or it would have handled the handshake):
        // create one, unless the handshake does not describe the cached blob.
        if c.metainfo.info_hash() != hs.info_hash || hs.bitfield.len() != c.metainfo.num_pieces() {
            self.sched.refuse(now, conn, &hs);
            return;
        }
        let (metainfo, blob) = (c.metainfo.clone(), c.blob.clone());
        let d = self.sched.new_seeder(now, metainfo, blob);
        self.sched.add_torrent(hs.namespace.clone(), d);
        self.sched.accept_handshake(now, conn, *hs);
        // Origins never announce.
        self.sched.completed.clear();
    }

    /// A connection closed from the other side.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        self.sched.handle_closed(now, conn);
    }

    /// The next time [`Origin::handle_timeout`] has work: a scheduler timer or a backend fetch's end.
    pub fn poll_timeout(&self) -> Instant {
        let fetch = self.fetching.values().min().copied().unwrap_or(Instant::FAR_FUTURE);
        self.sched.poll_timeout().min(fetch)
    }

    /// Runs what is due at `now`: the scheduler's timers, and caches the blobs whose backend fetch ended.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sched.handle_timeout(now);
        let done: Vec<Digest> = self.fetching.iter().filter(|(_, t)| **t <= now).map(|(d, _)| *d).collect();
        for d in done {
            self.fetching.remove(&d);
            self.cache_blob(d);
        }
        self.sched.completed.clear();
        self.sched.removed.clear();
    }

    /// The next thing the driver must do, in the order produced.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.sched.out.pop_front()
    }

    /// Origins report no downloads; kept for a uniform driver loop.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.sched.events.pop_front()
    }
}
