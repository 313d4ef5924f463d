//! The tracker's task: an HTTP server with Kraken's endpoints over the sans-IO [`Tracker`].
//!
//! - `POST /announce/{infohash}`: the body is an [`AnnounceRequest`] in JSON; the answer is an
//!   [`AnnounceResponse`] (200) or 500 "no peers available".
//! - `GET /namespace/{ns}/blobs/{digest}/metainfo`: 200 with the metainfo JSON, 202 while the
//!   origin fetches the blob, 404 when no origin has it, 503 when none answers. The tracker asks
//!   the blob's owners on their `GET /internal/namespace/{ns}/blobs/{digest}/metainfo`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use shoal_protocols::announce::{AnnounceError, AnnounceRequest, MetaInfoReply};
use shoal_protocols::tracker::{Tracker, TrackerOutput};
use shoal_protocols::{Digest, InfoHash};
use tokio::sync::oneshot;

use super::faults::spawn_local;
use super::peer::{HttpClient, metainfo_reply, metainfo_response, serve_http};
use super::{Ctx, Transport, http, now};
use crate::build::{build_tracker_seeded, incarnation_seed};

struct State<T: Transport> {
    t: T,
    ctx: Rc<Ctx>,
    tracker: RefCell<Tracker>,
    waiters: RefCell<BTreeMap<u64, oneshot::Sender<MetaInfoReply>>>,
    next_request: std::cell::Cell<u64>,
    /// The tracker's HTTP client (metainfo from origins).
    http: HttpClient<T>,
}

/// Runs tracker `index` on `listener` until the run is dropped.
pub(crate) async fn run_tracker<T: Transport>(t: T, ctx: Rc<Ctx>, index: usize, listener: T::Listener) {
    run_tracker_seeded(t, ctx, index, listener, 0).await;
}

/// Runs tracker `index` after its `restarts`-th restart (`[[faults]]` bounce), as a fresh state
/// machine seeded from its seed and that count.
pub(crate) async fn run_tracker_seeded<T: Transport>(
    t: T,
    ctx: Rc<Ctx>,
    index: usize,
    listener: T::Listener,
    restarts: u32,
) {
    let seed = incarnation_seed(&ctx.scenario, "tracker", index, restarts);
    let tracker = build_tracker_seeded(&ctx.scenario, &ctx.addrs.p2p, seed);
    let st = Rc::new(State {
        t: t.clone(),
        ctx: ctx.clone(),
        tracker: RefCell::new(tracker),
        waiters: RefCell::new(BTreeMap::new()),
        next_request: std::cell::Cell::new(0),
        http: HttpClient::new(t.clone(), ctx.clone(), None).for_tracker(index),
    });
    loop {
        let Ok((s, _)) = t.accept(&listener).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let st = st.clone();
        spawn_local(serve_http(s, move |req| {
            let st = st.clone();
            async move { st.handle(req).await }
        }));
    }
}

impl<T: Transport> State<T> {
    async fn handle(self: &Rc<Self>, req: http::Request) -> (u16, Vec<u8>) {
        let Some(segs) = req.segments() else { return (400, b"bad percent-encoding".to_vec()) };
        match (req.method.as_str(), segs.as_slice()) {
            ("POST", [announce, h]) if announce == "announce" => self.announce(h, &req.body),
            ("GET", [ns_kw, ns, blobs, digest, metainfo])
                if ns_kw == "namespace" && blobs == "blobs" && metainfo == "metainfo" =>
            {
                let Ok(digest) = digest.parse::<Digest>() else { return (400, b"bad digest".to_vec()) };
                let reply = self.metainfo(ns, digest).await;
                metainfo_response(&reply)
            }
            _ => (404, b"no such endpoint".to_vec()),
        }
    }

    fn announce(&self, h: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let Ok(h) = InfoHash::from_hex(h) else { return (400, b"bad info hash".to_vec()) };
        let request: AnnounceRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return (400, e.to_string().into_bytes()),
        };
        if request.info_hash != h {
            return (400, b"info hash of the path and body differ".to_vec());
        }
        self.ctx.count_event();
        self.ctx.metrics.borrow_mut().announces += 1;
        let result = self.tracker.borrow_mut().handle_announce(now(&self.t), &request);
        match result {
            Ok(resp) => (200, serde_json::to_vec(&resp).unwrap_or_default()),
            Err(AnnounceError::NoPeers) => (500, b"no peers available".to_vec()),
            Err(AnnounceError::Unreachable) => (503, Vec::new()),
        }
    }

    async fn metainfo(self: &Rc<Self>, namespace: &str, digest: Digest) -> MetaInfoReply {
        self.ctx.count_event();
        self.ctx.metrics.borrow_mut().metainfo_requests += 1;
        let id = self.next_request.get() + 1;
        self.next_request.set(id);
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(id, tx);
        self.tracker.borrow_mut().handle_metainfo_request(now(&self.t), id, namespace, digest);
        self.drain();
        rx.await.unwrap_or(MetaInfoReply::Unreachable)
    }

    fn drain(self: &Rc<Self>) {
        loop {
            let out = self.tracker.borrow_mut().poll_output();
            let Some(out) = out else { break };
            match out {
                TrackerOutput::MetaInfo { request_id, reply } => {
                    if let Some(w) = self.waiters.borrow_mut().remove(&request_id) {
                        let _ = w.send(reply);
                    }
                }
                TrackerOutput::FetchMetaInfo { origin, namespace, digest } => {
                    let st = self.clone();
                    spawn_local(async move { st.ask_origin(origin, namespace, digest).await });
                }
            }
        }
    }

    async fn ask_origin(self: Rc<Self>, origin: SocketAddr, namespace: String, digest: Digest) {
        let http_addr = self
            .ctx
            .addrs
            .p2p
            .origins
            .iter()
            .position(|a| *a == origin)
            .map(|o| self.ctx.addrs.origin_http[o]);
        let reply = match http_addr {
            Some(addr) => {
                let path = format!(
                    "/internal/namespace/{}/blobs/{}/metainfo",
                    http::percent_encode(&namespace),
                    digest.hex()
                );
                let o = self.ctx.node_by_peer.get(&shoal_protocols::PeerId::from_addr(origin)).copied();
                metainfo_reply(self.http.call(addr, o, "GET", &path, b"").await)
            }
            None => MetaInfoReply::Unreachable,
        };
        self.ctx.count_event();
        self.tracker.borrow_mut().handle_origin_metainfo(now(&self.t), &namespace, digest, origin, reply);
        self.drain();
    }
}
