//! The tracker as a sans-IO state machine (reference/kraken.md §5, §1.3).
//!
//! Two services:
//!
//! - **announce** ([`Tracker::handle_announce`]), answered synchronously: the tracker upserts the
//!   announcing peer, then returns up to `announce_limit` random peers of the torrent plus, on top, the
//!   origins that own the blob on the rendezvous ring, ordered by the handout policy;
//! - **metainfo** ([`Tracker::handle_metainfo_request`]), proxied to the owning origins behind an
//!   nginx-style cache: the tracker asks the driver to fetch ([`TrackerOutput::FetchMetaInfo`]), the
//!   driver feeds the origin's answer back ([`Tracker::handle_origin_metainfo`]), and every answer,
//!   from the cache or not, comes out as [`TrackerOutput::MetaInfo`].
//!
//! Locality: the driver may tell the tracker where every peer sits ([`Tracker::set_places`]); the
//! `topology` and `naive_locality` handout policies read it ([`TopologyHandout`],
//! [`NaiveLocalityHandout`]).
//!
//! After every input the driver drains [`Tracker::poll_output`] until it returns `None`. The tracker
//! has no timers: peer expiry and cache expiry are checked against the `now` of each input.
//!
//! Kraken's quirk kept by default: the announcing peer is stored before the sample is drawn and is
//! never filtered out (Kraken compares pointers, so its filter never matches), so a peer may receive
//! itself; agents drop themselves by peer id. [`Tracker::set_exclude_requester`] is the fix. A
//! consequence: with the quirk, an incomplete peer always gets at least itself, so
//! [`AnnounceError::NoPeers`] only happens with `announce_limit = 0` and no origin.

mod handout;
mod metainfo_proxy;
mod peer_store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use handout::{
    CompletenessHandout, DefaultHandout, HandoutContext, Location, NaiveLocalityHandout, PeerHandout, Places,
    TopologyHandout, distance, from_config, from_tracker_config,
};
pub use peer_store::{PeerStore, SWEEP_INTERVAL};

use crate::announce::{AnnounceError, AnnounceRequest, AnnounceResponse, MetaInfoReply};
use crate::config::TrackerConfig;
use crate::hrw::Ring;
use crate::policy::dragonfly::DragonflyConfig;
use crate::policy::dragonfly::scheduler::DragonflyScheduler;
use crate::time::{Instant, ms};
use crate::types::{Digest, InfoHash, PeerInfo};
use metainfo_proxy::MetaInfoProxy;

/// What the tracker asks of its driver, or answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackerOutput {
    /// Send `GET /internal/namespace/{namespace}/blobs/{digest}/metainfo` to `origin`, then call
    /// [`Tracker::handle_origin_metainfo`] with its answer (`Unreachable` on a network error or
    /// timeout).
    FetchMetaInfo {
        /// The owning origin to ask.
        origin: SocketAddr,
        /// The blob's namespace, as the client gave it.
        namespace: String,
        /// The blob.
        digest: Digest,
    },
    /// The answer to the metainfo request `request_id`.
    MetaInfo {
        /// The id the driver gave [`Tracker::handle_metainfo_request`].
        request_id: u64,
        /// The metainfo, or why there is none yet.
        reply: MetaInfoReply,
    },
}

/// The tracker node.
pub struct Tracker {
    config: TrackerConfig,
    rng: ChaCha8Rng,
    peers: PeerStore,
    /// Ring label (`addr.to_string()`) → the origin as handed out.
    origins: BTreeMap<String, PeerInfo>,
    ring: Ring,
    handout: Box<dyn PeerHandout>,
    /// Where each peer sits, for the locality policies (empty unless the driver sets it).
    places: Places,
    exclude_requester: bool,
    metainfo: MetaInfoProxy,
    outputs: VecDeque<TrackerOutput>,
    /// Set when the policy is Dragonfly: the tracker is its central scheduler.
    dragonfly: Option<DragonflyScheduler>,
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("origins", &self.origins.len())
            .field("torrents", &self.peers.torrents())
            .field("handout", &self.handout)
            .field("outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker that knows `origins` (their `PeerInfo`, as the origin store would learn them from
    /// `/internal/peercontext`), places blobs on them with `max_replica` owners each, and draws all its
    /// randomness from `seed`. The handout policy is `config.handout_policy`.
    ///
    /// Each origin's ring label is its `addr` formatted as `ip:port` (`[ip]:port` for IPv6, as Go's
    /// `JoinHostPort`); duplicates by address are merged. Every origin starts healthy.
    pub fn new(config: TrackerConfig, origins: Vec<PeerInfo>, max_replica: usize, seed: u64) -> Tracker {
        let origins: BTreeMap<String, PeerInfo> = origins
            .into_iter()
            .map(|o| (o.addr.to_string(), PeerInfo { origin: true, complete: true, ..o }))
            .collect();
        let ring = Ring::new(origins.keys().cloned(), max_replica);
        Tracker {
            rng: ChaCha8Rng::seed_from_u64(seed),
            peers: PeerStore::new(ms(config.peer_ttl_ms)),
            origins,
            ring,
            handout: from_tracker_config(&config),
            places: Places::new(),
            exclude_requester: false,
            metainfo: MetaInfoProxy::new(
                ms(config.metainfo_cache_ttl_ms),
                ms(config.metainfo_error_cache_ttl_ms),
            ),
            outputs: VecDeque::new(),
            dragonfly: None,
            config,
        }
    }

    /// Replaces the handout policy (BitTorrent-, Dragonfly- or topology-aware ones).
    pub fn set_handout(&mut self, handout: Box<dyn PeerHandout>) -> &mut Self {
        self.handout = handout;
        self
    }

    /// Makes this tracker Dragonfly's central scheduler: announces register and report, answers
    /// carry parents (see [`crate::policy::dragonfly`]).
    pub fn set_dragonfly(&mut self, config: DragonflyConfig) -> &mut Self {
        self.dragonfly = Some(DragonflyScheduler::new(config));
        self
    }

    /// The Dragonfly scheduler, if [`Tracker::set_dragonfly`] made this tracker one.
    pub fn dragonfly(&self) -> Option<&DragonflyScheduler> {
        self.dragonfly.as_ref()
    }

    /// The Dragonfly scheduler, mutably (drivers set host locations on it).
    pub fn dragonfly_mut(&mut self) -> Option<&mut DragonflyScheduler> {
        self.dragonfly.as_mut()
    }

    /// Tells the tracker where each peer sits (by listening address), for the topology-aware handout
    /// policies. Addresses not in the map are of unknown place. Replaces any earlier map.
    pub fn set_places(&mut self, places: Places) -> &mut Self {
        self.places = places;
        self
    }

    /// True leaves the announcing peer out of its own handout (shoal's fix of Kraken's pointer
    /// comparison). Default false: Kraken's behaviour.
    pub fn set_exclude_requester(&mut self, exclude: bool) -> &mut Self {
        self.exclude_requester = exclude;
        self
    }

    /// True (the default) makes a 404 from one owner try the next, as Kraken's current
    /// `clusterClient.GetMetaInfo` does (it stops only at success or 202). False stops at the first
    /// 404, which saves origin requests and gives the same final answer.
    pub fn set_metainfo_not_found_tries_next_owner(&mut self, try_next: bool) -> &mut Self {
        self.metainfo.not_found_tries_next_owner = try_next;
        self
    }

    /// Marks an origin healthy or not on the ring (from the driver's health checks). Unknown addresses
    /// are ignored.
    pub fn set_origin_healthy(&mut self, origin: SocketAddr, healthy: bool) -> &mut Self {
        self.ring.set_healthy(&origin.to_string(), healthy);
        self
    }

    /// The configuration the tracker was built with.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// The origin ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The origins that own `digest`, in ring order, as handed out.
    pub fn owners(&self, digest: &Digest) -> Vec<PeerInfo> {
        self.ring.locations(digest).into_iter().filter_map(|l| self.origins.get(l).cloned()).collect()
    }

    /// Live peers stored for `info_hash`.
    pub fn peer_count(&self, now: Instant, info_hash: &InfoHash) -> usize {
        self.peers.len(now, info_hash)
    }

    /// Metainfo fetches waiting for an origin's answer.
    pub fn metainfo_fetches_in_flight(&self) -> usize {
        self.metainfo.in_flight()
    }

    /// `POST /announce/{infohash}`. Synchronous: the answer needs no I/O.
    pub fn handle_announce(
        &mut self,
        now: Instant,
        request: &AnnounceRequest,
    ) -> Result<AnnounceResponse, AnnounceError> {
        self.peers.update(now, request.info_hash, &request.peer);
        let interval_ns = ms(self.config.announce_interval_ms).as_nanos();
        let interval_ns = u64::try_from(interval_ns).unwrap_or(u64::MAX);
        let owners = self.dragonfly.is_some().then(|| self.owners(&request.digest));
        if let (Some(owners), Some(df)) = (owners, self.dragonfly.as_mut()) {
            let interval_ns = df.config().report_interval_ms.saturating_mul(1_000_000);
            return Ok(df.announce(&mut self.rng, request, &owners, interval_ns));
        }
        if request.peer.complete {
            // A seeder needs nobody (Kraken returns no handout, only the interval).
            return Ok(AnnounceResponse { peers: Vec::new(), interval_ns, dragonfly: None });
        }

        let limit = self.handout.sample_limit(self.config.announce_limit);
        let mut peers = self.peers.sample(now, &request.info_hash, limit, &mut self.rng);
        if self.exclude_requester {
            peers.retain(|p| p.peer_id != request.peer.peer_id);
        }
        // Origins come on top of the limit, not within it.
        peers.extend(self.owners(&request.digest));
        if peers.is_empty() {
            return Err(AnnounceError::NoPeers);
        }

        let requester = PeerInfo { origin: false, ..request.peer.clone() };
        let ctx = HandoutContext {
            now,
            requester: &requester,
            info_hash: &request.info_hash,
            digest: &request.digest,
            places: &self.places,
            announce_limit: self.config.announce_limit,
        };
        self.handout.order(&mut self.rng, &ctx, &mut peers);
        Ok(AnnounceResponse { peers, interval_ns, dragonfly: None })
    }

    /// `GET /namespace/{namespace}/blobs/{digest}/metainfo` from a client; the answer comes out as
    /// [`TrackerOutput::MetaInfo`] with `request_id` (at once on a cache hit).
    pub fn handle_metainfo_request(
        &mut self,
        now: Instant,
        request_id: u64,
        namespace: &str,
        digest: Digest,
    ) {
        let ring = &self.ring;
        let origins = &self.origins;
        let owners =
            || ring.locations(&digest).into_iter().filter_map(|l| origins.get(l).map(|o| o.addr)).collect();
        self.metainfo.request(now, request_id, namespace, digest, owners, &mut self.outputs);
    }

    /// An origin's answer to a [`TrackerOutput::FetchMetaInfo`]. Unsolicited or stale answers are
    /// ignored.
    pub fn handle_origin_metainfo(
        &mut self,
        now: Instant,
        namespace: &str,
        digest: Digest,
        origin: SocketAddr,
        reply: MetaInfoReply,
    ) {
        self.metainfo.origin_reply(now, namespace, digest, origin, reply, &mut self.outputs);
    }

    /// The next output, in the order produced.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<TrackerOutput> {
        self.outputs.pop_front()
    }

    /// Always `None`: the tracker has no timers (expiry is checked lazily on input). Present so that
    /// drivers run every node with the same loop.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
