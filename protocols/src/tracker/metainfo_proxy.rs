//! The tracker's metainfo endpoint with its nginx cache in front (reference/kraken.md §1.3).
//!
//! `GET /namespace/{ns}/blobs/{d}/metainfo` goes through nginx (`nginx/config/tracker.go`):
//! `proxy_cache_valid 200 5m; proxy_cache_valid any 1s; proxy_cache_lock on`. Behind it the tracker
//! asks the blob's owners in ring order (`blobclient.clusterClient.GetMetaInfo`). Modelled here:
//!
//! - a cached answer is fresh while `now < cached_at + ttl` (5 min for 200, 1 s for anything else);
//! - a miss while a fetch for the same (namespace, digest) is in flight parks the request behind it
//!   (the cache lock), so concurrent misses cost one origin request;
//! - the fetch asks one owner at a time; `Unreachable` moves to the next owner, `Ready`, `Pending` and
//!   (by default) `NotFound` end it; when every owner is unreachable the answer is `Unreachable`;
//! - the final answer goes to every parked request and into the cache.
//!
//! Not modelled: nginx's `proxy_cache_lock_timeout` (5 s, after which a parked request goes to the
//! upstream itself, uncached) — origins answer metainfo requests at once (202 while they fetch), so a
//! fetch outlives it only when the driver delays origin replies by more than 5 s. The driver turns an
//! origin timeout into `Unreachable`; without an answer a fetch stays in flight.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::announce::MetaInfoReply;
use crate::time::Instant;
use crate::types::Digest;

use super::TrackerOutput;

/// How often expired cache entries are dropped (memory only; expiry itself is checked on every read).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
enum Entry {
    Cached {
        reply: MetaInfoReply,
        expires_at: Instant,
    },
    /// A fetch in flight: `owners[current]` has been asked.
    Fetching {
        owners: Vec<SocketAddr>,
        current: usize,
        /// Request ids parked behind the cache lock, in arrival order.
        waiters: Vec<u64>,
    },
}

/// The cache plus in-flight fetches, keyed by (namespace, digest) like nginx's cache key (the URI).
#[derive(Clone, Debug)]
pub(crate) struct MetaInfoProxy {
    ok_ttl: Duration,
    error_ttl: Duration,
    /// Kraken's current `GetMetaInfo` tries the next owner on every error but 202, 404 included;
    /// false (default) stops at 404 as the reference describes. Either way the answer is 404 when no
    /// owner has the blob; true only costs more origin requests.
    pub(crate) not_found_tries_next_owner: bool,
    entries: BTreeMap<(String, Digest), Entry>,
    next_sweep_at: Instant,
}

impl MetaInfoProxy {
    pub(crate) fn new(ok_ttl: Duration, error_ttl: Duration) -> Self {
        MetaInfoProxy {
            ok_ttl,
            error_ttl,
            not_found_tries_next_owner: true,
            entries: BTreeMap::new(),
            next_sweep_at: Instant::ZERO,
        }
    }

    /// A client request. `owners` is evaluated only on a miss with no fetch in flight.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        request_id: u64,
        namespace: &str,
        digest: Digest,
        owners: impl FnOnce() -> Vec<SocketAddr>,
        out: &mut VecDeque<TrackerOutput>,
    ) {
        self.sweep_if_due(now);
        let key = (namespace.to_owned(), digest);
        match self.entries.get_mut(&key) {
            Some(Entry::Cached { reply, expires_at }) if now < *expires_at => {
                out.push_back(TrackerOutput::MetaInfo { request_id, reply: reply.clone() });
                return;
            }
            Some(Entry::Fetching { waiters, .. }) => {
                waiters.push(request_id);
                return;
            }
            // Expired or absent: fetch.
            _ => {}
        }
        let owners = owners();
        let Some(&first) = owners.first() else {
            // No origin at all: the tracker fails at once, and nginx caches that like any error.
            self.finish(now, key, MetaInfoReply::Unreachable, vec![request_id], out);
            return;
        };
        out.push_back(TrackerOutput::FetchMetaInfo {
            origin: first,
            namespace: namespace.to_owned(),
            digest,
        });
        self.entries.insert(key, Entry::Fetching { owners, current: 0, waiters: vec![request_id] });
    }

    /// An origin's answer. Answers nobody is waiting for (a stale or duplicate reply, or one from an
    /// origin that was not asked) are ignored.
    pub(crate) fn origin_reply(
        &mut self,
        now: Instant,
        namespace: &str,
        digest: Digest,
        origin: SocketAddr,
        reply: MetaInfoReply,
        out: &mut VecDeque<TrackerOutput>,
    ) {
        let key = (namespace.to_owned(), digest);
        let Some(Entry::Fetching { owners, current, waiters }) = self.entries.get_mut(&key) else {
            return;
        };
        if owners.get(*current) != Some(&origin) {
            return;
        }
        let try_next = match reply {
            MetaInfoReply::Unreachable => true,
            MetaInfoReply::NotFound => self.not_found_tries_next_owner,
            MetaInfoReply::Ready(_) | MetaInfoReply::Pending => false,
        };
        if try_next && *current + 1 < owners.len() {
            *current += 1;
            out.push_back(TrackerOutput::FetchMetaInfo {
                origin: owners[*current],
                namespace: namespace.to_owned(),
                digest,
            });
            return;
        }
        let waiters = std::mem::take(waiters);
        self.finish(now, key, reply, waiters, out);
    }

    /// Fetches in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.entries.values().filter(|e| matches!(e, Entry::Fetching { .. })).count()
    }

    fn finish(
        &mut self,
        now: Instant,
        key: (String, Digest),
        reply: MetaInfoReply,
        waiters: Vec<u64>,
        out: &mut VecDeque<TrackerOutput>,
    ) {
        let ttl = if matches!(reply, MetaInfoReply::Ready(_)) { self.ok_ttl } else { self.error_ttl };
        for request_id in waiters {
            out.push_back(TrackerOutput::MetaInfo { request_id, reply: reply.clone() });
        }
        self.entries.insert(key, Entry::Cached { reply, expires_at: now + ttl });
    }

    fn sweep_if_due(&mut self, now: Instant) {
        if now < self.next_sweep_at {
            return;
        }
        self.next_sweep_at = now + SWEEP_INTERVAL;
        self.entries.retain(|_, e| match e {
            Entry::Cached { expires_at, .. } => now < *expires_at,
            Entry::Fetching { .. } => true,
        });
    }
}
