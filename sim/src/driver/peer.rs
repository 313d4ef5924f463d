//! The task of an agent or origin: its state machine, its listener and its connections.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shoal_protocols::agent::Agent;
use shoal_protocols::announce::{AnnounceError, AnnounceRequest, AnnounceResponse, MetaInfoReply};
use shoal_protocols::origin::Origin;
use shoal_protocols::peer::{ConnId, Event, Output};
use shoal_protocols::wire::{self, Chunk, Decoder, DecoderLimits};
use shoal_protocols::{Digest, Instant, Message, MetaInfo, Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::faults::{self, spawn_local};
use super::store::{AgentFile, BlobBytes, file_matches};
use super::{Ctx, Transport, http, now, sleep_until};
use crate::build::{build_agent, build_origin};
use crate::output::Source;

/// Bytes per socket read and per payload write: small enough that a host's connections interleave
/// on its token buckets, large enough to keep per-chunk overhead low.
const CHUNK: usize = 64 * 1024;

/// How long an HTTP exchange with a tracker or origin may take before it is abandoned (the agent's
/// own timeouts decide what that means).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An input for a node's task.
pub(crate) enum Input<S> {
    Accepted(S, SocketAddr),
    Dialed {
        conn: ConnId,
        stream: Option<S>,
    },
    Message {
        conn: ConnId,
        msg: Message,
    },
    Closed {
        conn: ConnId,
    },
    Announce {
        id: u64,
        result: Result<AnnounceResponse, AnnounceError>,
    },
    MetaInfo {
        id: u64,
        reply: MetaInfoReply,
    },
    /// A piece payload an agent's reader wrote to disk as it arrived, or held (blobs on disk): its
    /// header, the CRC32 of its bytes, and where the bytes are.
    Piece {
        conn: ConnId,
        index: u32,
        offset: u64,
        len: u64,
        crc: u32,
        held: Held,
    },
    /// A completed download's file was hashed ([`NodeDriver::verify_completed_file`]): whether
    /// it matches its digest, or why it could not be read.
    Verified {
        digest: Digest,
        stats: shoal_protocols::peer::dispatch::DownloadStats,
        result: Result<bool, String>,
    },
    /// The origin's metainfo endpoint.
    OriginMetaInfo {
        namespace: String,
        digest: Digest,
        reply: oneshot::Sender<MetaInfoReply>,
    },
}

enum WriteCmd {
    Send(Message),
    /// A piece served from a file (blobs on disk): the message's payload is tagged with the
    /// piece's length and CRC32, and the writer puts the file's bytes from `at` in its place.
    Stored {
        msg: Message,
        from: StoredPiece,
        at: u64,
    },
    Close,
}

/// An agent's files and pieces when blobs are on disk, shared by its task and its readers.
///
/// A piece's bytes are written to the agent's file as they arrive, at the piece's offset, by the
/// one connection that claimed the piece; the node then checks the piece (CRC32) as it checks any.
/// A piece the agent holds is never overwritten: its bytes are only counted (a duplicate), and a
/// piece another connection is already writing is held in memory and written only if the node takes
/// it. So a bad piece can only land where no good copy is, and is written over when the piece comes
/// again.
#[derive(Default)]
pub(crate) struct DiskState {
    files: BTreeMap<u32, Rc<AgentFile>>,
    claims: BTreeMap<(u32, u32), Claim>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// A connection is writing the piece into the file.
    Writing,
    /// The node holds the piece: its bytes in the file are good.
    Held,
}

impl DiskState {
    /// Agent `node`'s file of `blob`, created on first use; a failure fails the run.
    fn file(&mut self, ctx: &Ctx, node: u32, blob: u32) -> Option<Rc<AgentFile>> {
        if let Some(f) = self.files.get(&blob) {
            return Some(f.clone());
        }
        let dir = ctx.data_dir.as_deref()?;
        match AgentFile::create(dir, node, &ctx.blobs[blob as usize]) {
            Ok(f) => Some(self.files.entry(blob).or_insert(Rc::new(f)).clone()),
            Err(e) => {
                ctx.fail_run(format!(
                    "agent {node}: creating its file of blob {} in {}: {e}",
                    ctx.blobs[blob as usize].digest,
                    dir.display()
                ));
                None
            }
        }
    }
}

/// Where a received piece's bytes are ([`Input::Piece`]).
pub(crate) enum Held {
    /// In the agent's file at the piece's offset, under this connection's claim.
    Written(ClaimGuard),
    /// In memory: another connection was writing the same piece.
    Bytes(Bytes),
    /// Counted, not kept: the agent holds the piece already, or the header does not fit the blob.
    Dropped,
}

/// A connection's claim to write a piece; released when dropped unless the node took the piece.
pub(crate) struct ClaimGuard {
    disk: Rc<RefCell<DiskState>>,
    key: (u32, u32),
}

impl ClaimGuard {
    /// The node took the piece: its bytes in the file are the agent's.
    fn keep(self) {
        self.disk.borrow_mut().claims.insert(self.key, Claim::Held);
        std::mem::forget(self);
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let mut d = self.disk.borrow_mut();
        if d.claims.get(&self.key) == Some(&Claim::Writing) {
            d.claims.remove(&self.key);
        }
    }
}

/// A piece payload a reader is receiving (blobs on disk).
struct Receiving {
    index: u32,
    offset: u64,
    len: u64,
    done: u64,
    crc: crc32fast::Hasher,
    into: Into,
}

enum Into {
    File { file: Rc<AgentFile>, at: u64, claim: ClaimGuard },
    Memory(Vec<u8>),
    Nowhere,
}

impl Receiving {
    fn start(
        ctx: &Ctx,
        disk: &Rc<RefCell<DiskState>>,
        node: u32,
        blob: Option<u32>,
        index: u32,
        offset: u64,
        len: u64,
    ) -> Receiving {
        let into = match blob {
            Some(b) => {
                let data = &ctx.blobs[b as usize];
                let m = &data.metainfo;
                // Only a whole piece of this blob is written; the node refuses anything else.
                let fits = index < m.num_pieces() && offset == 0 && len == m.piece_len(index);
                let claim = disk.borrow().claims.get(&(b, index)).copied();
                match (fits, claim) {
                    (false, _) | (true, Some(Claim::Held)) => Into::Nowhere,
                    (true, Some(Claim::Writing)) => Into::Memory(Vec::with_capacity(len as usize)),
                    (true, None) => {
                        let file = disk.borrow_mut().file(ctx, node, b);
                        match file {
                            Some(file) => {
                                disk.borrow_mut().claims.insert((b, index), Claim::Writing);
                                let claim = ClaimGuard { disk: disk.clone(), key: (b, index) };
                                Into::File { file, at: data.piece_offset(index), claim }
                            }
                            None => Into::Nowhere,
                        }
                    }
                }
            }
            None => Into::Nowhere,
        };
        Receiving { index, offset, len, done: 0, crc: crc32fast::Hasher::new(), into }
    }

    fn data(&mut self, ctx: &Ctx, bytes: &[u8]) {
        self.crc.update(bytes);
        match &mut self.into {
            Into::File { file, at, .. } => {
                if let Err(e) = file.write_piece(*at + self.done, bytes) {
                    ctx.fail_run(format!("writing piece {} to {}: {e}", self.index, file.path.display()));
                }
            }
            Into::Memory(v) => v.extend_from_slice(bytes),
            Into::Nowhere => {}
        }
        self.done += bytes.len() as u64;
    }

    fn end<S>(self, conn: ConnId) -> Input<S> {
        let held = match self.into {
            Into::File { claim, .. } => Held::Written(claim),
            Into::Memory(v) => Held::Bytes(v.into()),
            Into::Nowhere => Held::Dropped,
        };
        Input::Piece {
            conn,
            index: self.index,
            offset: self.offset,
            len: self.len,
            crc: self.crc.finalize(),
            held,
        }
    }
}

/// The file a piece is read from when blobs are on disk.
enum StoredPiece {
    /// The run's generated blob (an origin's backend), by blob index.
    Origin(u32),
    /// The uploading agent's own file of the blob.
    Agent(Rc<AgentFile>),
}

/// The driver's side of one connection.
struct Conn {
    /// The writer task's queue; `None` while dialling.
    writer: Option<mpsc::UnboundedSender<WriteCmd>>,
    /// Messages sent before the dial finished.
    queued: Vec<WriteCmd>,
    reader: Option<JoinHandle<()>>,
    /// The remote network node and the blob, once a handshake names them.
    remote: Option<u32>,
    blob: Option<u32>,
}

/// An agent's or origin's state machine.
#[derive(Debug)]
pub(crate) enum Node {
    Agent(Box<Agent>),
    Origin(Box<Origin>),
}

impl Node {
    /// Network node `node` of the run: agent `node`, or origin `node - agents`. Building an origin
    /// hashes its blobs, so socket engines build nodes before their clock starts.
    pub(crate) fn build(ctx: &Ctx, node: u32, now: Instant) -> Node {
        let agents = ctx.agents();
        if node < agents {
            Node::Agent(Box::new(build_agent(&ctx.scenario, node as usize, &ctx.addrs.p2p, now)))
        } else {
            let o = (node - agents) as usize;
            Node::Origin(Box::new(build_origin(&ctx.scenario, o, &ctx.addrs.p2p, ctx.backend(), now)))
        }
    }

    fn handle_accept(&mut self, now: Instant, remote: SocketAddr) -> ConnId {
        match self {
            Node::Agent(a) => a.handle_accept(now, remote),
            Node::Origin(o) => o.handle_accept(now, remote),
        }
    }
    fn handle_message(&mut self, now: Instant, conn: ConnId, msg: Message) {
        match self {
            Node::Agent(a) => a.handle_message(now, conn, msg),
            Node::Origin(o) => o.handle_message(now, conn, msg),
        }
    }
    fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        match self {
            Node::Agent(a) => a.handle_closed(now, conn),
            Node::Origin(o) => o.handle_closed(now, conn),
        }
    }
    fn poll_timeout(&self) -> Instant {
        match self {
            Node::Agent(a) => a.poll_timeout(),
            Node::Origin(o) => o.poll_timeout(),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Node::Agent(a) => a.handle_timeout(now),
            Node::Origin(o) => o.handle_timeout(now),
        }
    }
    fn poll_output(&mut self) -> Option<Output> {
        match self {
            Node::Agent(a) => a.poll_output(),
            Node::Origin(o) => o.poll_output(),
        }
    }
    fn poll_event(&mut self) -> Option<Event> {
        match self {
            Node::Agent(a) => a.poll_event(),
            Node::Origin(o) => o.poll_event(),
        }
    }
}

/// Runs network node `node` (`state`, built by [`Node::build`]) on `listener` until the run is
/// dropped. `http` is an origin's HTTP listener.
pub(crate) async fn run_node<T: Transport>(
    t: T,
    ctx: Rc<Ctx>,
    node: u32,
    mut state: Node,
    listener: T::Listener,
    http: Option<T::Listener>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Input<T::Stream>>();
    let delays = ctx.emulate_latency.then(|| Rc::new(DelayQueue::default()));
    let _pump = delays.clone().map(|q| spawn_local(delay_pump(t.clone(), ctx.clone(), node, q, tx.clone())));
    let _listener = spawn_local(accept_loop(t.clone(), listener, tx.clone()));
    let _http = http.map(|l| spawn_local(origin_http(t.clone(), l, tx.clone())));
    // This host's pulls, in time order; `ctx.next_pull` says which have started.
    let ctx2 = ctx.clone();
    let no_pulls = (Vec::new(), std::cell::Cell::new(0));
    let (pulls, next_pull) = match (ctx2.pulls_by_host.get(node as usize), ctx2.next_pull.get(node as usize))
    {
        (Some(p), Some(n)) => (p, n),
        _ => (&no_pulls.0, &no_pulls.1),
    };
    let http = Rc::new(HttpClient::new(t.clone(), ctx.clone(), Some(node)));
    let disk = Rc::new(RefCell::new(DiskState::default()));
    let mut d = NodeDriver { t, ctx, node, tx, delays, http, conns: BTreeMap::new(), disk };
    loop {
        let pull_at = pulls.get(next_pull.get()).map_or(Instant::FAR_FUTURE, |p| p.0);
        let deadline = state.poll_timeout().min(pull_at);
        let input = tokio::select! {
            biased;
            input = rx.recv() => input,
            _ = sleep_until(&d.t, deadline) => None,
        };
        let now = now(&d.t);
        d.ctx.count_event();
        match input {
            Some(input) => d.input(&mut state, now, input),
            None => {
                while let Some(&(at, image)) = pulls.get(next_pull.get()) {
                    if at > now {
                        break;
                    }
                    next_pull.set(next_pull.get() + 1);
                    d.pull(&mut state, now, image);
                }
                if state.poll_timeout() <= now {
                    state.handle_timeout(now);
                }
            }
        }
        d.drain(&mut state, now);
    }
}

async fn accept_loop<T: Transport>(t: T, listener: T::Listener, tx: mpsc::UnboundedSender<Input<T::Stream>>) {
    loop {
        match t.accept(&listener).await {
            Ok((s, remote)) => {
                if tx.send(Input::Accepted(s, remote)).is_err() {
                    return;
                }
            }
            // Out of descriptors or a reset before accept: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// `GET /internal/namespace/{ns}/blobs/{digest}/metainfo` on an origin's HTTP port.
async fn origin_http<T: Transport>(t: T, listener: T::Listener, tx: mpsc::UnboundedSender<Input<T::Stream>>) {
    loop {
        let Ok((s, _)) = t.accept(&listener).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let tx = tx.clone();
        spawn_local(serve_http(s, move |req: http::Request| {
            let tx = tx.clone();
            async move {
                match req.segments().as_deref() {
                    Some([internal, ns_kw, ns, blobs, digest, metainfo])
                        if req.method == "GET"
                            && internal == "internal"
                            && ns_kw == "namespace"
                            && blobs == "blobs"
                            && metainfo == "metainfo" =>
                    {
                        match digest.parse::<Digest>() {
                            Ok(digest) => {
                                let (reply, rx) = oneshot::channel();
                                let _ =
                                    tx.send(Input::OriginMetaInfo { namespace: ns.clone(), digest, reply });
                                match rx.await {
                                    Ok(r) => metainfo_response(&r),
                                    Err(_) => (503, Vec::new()),
                                }
                            }
                            Err(e) => (400, e.to_string().into_bytes()),
                        }
                    }
                    _ => (404, b"no such endpoint".to_vec()),
                }
            }
        }));
    }
}

/// The HTTP status and body of a metainfo answer.
pub(crate) fn metainfo_response(r: &MetaInfoReply) -> (u16, Vec<u8>) {
    match r {
        MetaInfoReply::Ready(mi) => (200, mi.to_json().into_bytes()),
        other => (other.status(), Vec::new()),
    }
}

/// The metainfo answer an HTTP response carries.
pub(crate) fn metainfo_reply(resp: std::io::Result<http::Response>) -> MetaInfoReply {
    match resp {
        Ok(r) if r.status == 200 => std::str::from_utf8(&r.body)
            .ok()
            .and_then(|s| MetaInfo::from_json(s).ok())
            .map_or(MetaInfoReply::Unreachable, MetaInfoReply::Ready),
        Ok(r) if r.status == 202 => MetaInfoReply::Pending,
        Ok(r) if r.status == 404 => MetaInfoReply::NotFound,
        _ => MetaInfoReply::Unreachable,
    }
}

/// How long an idle kept-alive HTTP connection is reused: Kraken's nginx, in front of trackers
/// and origins, closes connections idle for 65 s (`keepalive_timeout 65`).
pub(crate) const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(65);

/// Idle connections kept per server, as Go's `http.Transport` (`DefaultMaxIdleConnsPerHost`).
const HTTP_MAX_IDLE: usize = 2;

/// Opens a connection from network node `from` to `to` (`None`: a tracker) at `addr`, and waits
/// what the transport leaves out of TCP's connect round trip ([`Ctx::connect_wait`]).
async fn connect<T: Transport>(
    t: &T,
    ctx: &Ctx,
    from: Option<u32>,
    to: Option<u32>,
    addr: SocketAddr,
) -> std::io::Result<T::Stream> {
    faults::dial_crosses(ctx, from, to).await?;
    let s = t.connect(addr).await?;
    sleep_nonzero(ctx.connect_wait(from, to)).await;
    Ok(s)
}

/// An HTTP client that keeps connections alive, as Kraken's Go clients do: a call reuses an idle
/// connection to its server when one has been idle less than [`HTTP_IDLE_TIMEOUT`], and
/// otherwise connects first (paying TCP's round trip); at most [`HTTP_MAX_IDLE`] idle connections
/// are kept per server. A reused connection that fails (the server closed it) is retried once on
/// a new one.
pub(crate) struct HttpClient<T: Transport> {
    t: T,
    ctx: Rc<Ctx>,
    /// The client's network node; `None`: a tracker.
    me: Option<u32>,
    /// The tracker the client is, if it is one (the link its calls cross).
    tracker: Option<usize>,
    /// Per server: idle connections and when each went idle.
    idle: RefCell<BTreeMap<SocketAddr, Vec<Idle<T::Stream>>>>,
}

/// An idle kept-alive connection and when it went idle.
type Idle<S> = (S, Duration);

impl<T: Transport> HttpClient<T> {
    pub(crate) fn new(t: T, ctx: Rc<Ctx>, me: Option<u32>) -> Self {
        HttpClient { t, ctx, me, tracker: None, idle: RefCell::new(BTreeMap::new()) }
    }

    /// The client of tracker `index`.
    pub(crate) fn for_tracker(mut self, index: usize) -> Self {
        self.tracker = Some(index);
        self
    }

    /// One HTTP exchange with `server` (its network node; `None`: a tracker) at `addr`, bounded by
    /// [`HTTP_TIMEOUT`]. Where the driver emulates latency, the request and the response each
    /// wait one latency.
    pub(crate) async fn call(
        &self,
        addr: SocketAddr,
        server: Option<u32>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<http::Response> {
        let (ctx, me) = (&self.ctx, self.me);
        let ends = faults::http_ends(ctx, me, self.tracker, server, addr);
        let call = async {
            sleep_nonzero(ctx.one_way(me, server)).await;
            faults::request_crosses(ctx, ends, self.has_idle(addr)).await?;
            let reused = match self.take(addr) {
                Some(mut s) => exchange(&mut s, addr, method, path, body).await.ok().map(|r| (s, r)),
                None => None,
            };
            let (s, r) = match reused {
                Some(done) => done,
                None => {
                    let mut s = connect(&self.t, ctx, me, server, addr).await?;
                    let r = exchange(&mut s, addr, method, path, body).await?;
                    (s, r)
                }
            };
            sleep_nonzero(ctx.one_way(server, me)).await;
            faults::reply_crosses(ctx, ends).await;
            self.put(addr, s);
            Ok(r)
        };
        tokio::time::timeout(HTTP_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP timeout")))
    }

    fn has_idle(&self, addr: SocketAddr) -> bool {
        self.idle.borrow().get(&addr).is_some_and(|c| !c.is_empty())
    }

    fn take(&self, addr: SocketAddr) -> Option<T::Stream> {
        let now = self.t.now();
        let mut idle = self.idle.borrow_mut();
        let conns = idle.get_mut(&addr)?;
        conns.retain(|(_, since)| now < *since + HTTP_IDLE_TIMEOUT);
        conns.pop().map(|(s, _)| s)
    }

    fn put(&self, addr: SocketAddr, s: T::Stream) {
        let now = self.t.now();
        let mut idle = self.idle.borrow_mut();
        let conns = idle.entry(addr).or_default();
        conns.retain(|(_, since)| now < *since + HTTP_IDLE_TIMEOUT);
        if conns.len() < HTTP_MAX_IDLE {
            conns.push((s, now));
        }
    }
}

/// One request and its response on an open connection.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<http::Response> {
    http::write_request(s, method, &addr.to_string(), path, body).await?;
    http::read_response(s).await
}

/// Serves HTTP requests on one kept-alive connection until the client closes it, sends a
/// malformed request, or leaves it idle for [`HTTP_IDLE_TIMEOUT`]; each request is answered
/// within [`HTTP_TIMEOUT`] or the connection is dropped.
pub(crate) async fn serve_http<S, F, Fut>(mut s: S, mut handle: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: FnMut(http::Request) -> Fut,
    Fut: std::future::Future<Output = (u16, Vec<u8>)>,
{
    loop {
        let req = match tokio::time::timeout(HTTP_IDLE_TIMEOUT, http::read_request(&mut s)).await {
            Ok(Ok(req)) => Ok(req),
            // The client closed, or reset, between requests.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return;
            }
            Ok(Err(e)) => Err(e),
            Err(_) => return,
        };
        let answer = async {
            let ok = req.is_ok();
            let (status, body) = match req {
                Ok(req) => handle(req).await,
                Err(e) => (400, e.to_string().into_bytes()),
            };
            http::write_response(&mut s, status, &body).await.is_ok() && ok
        };
        if !tokio::time::timeout(HTTP_TIMEOUT, answer).await.unwrap_or(false) {
            return;
        }
    }
}

struct NodeDriver<T: Transport> {
    t: T,
    ctx: Rc<Ctx>,
    node: u32,
    tx: mpsc::UnboundedSender<Input<T::Stream>>,
    /// Where the driver emulates latency: the node's inputs on their way.
    delays: Option<Rc<DelayQueue<T::Stream>>>,
    /// The node's HTTP client (an agent's announces and metainfo requests).
    http: Rc<HttpClient<T>>,
    conns: BTreeMap<ConnId, Conn>,
    /// An agent's files and pieces, when blobs are on disk.
    disk: Rc<RefCell<DiskState>>,
}

impl<T: Transport> NodeDriver<T> {
    fn pull(&mut self, state: &mut Node, now: Instant, image: u32) {
        let Node::Agent(agent) = state else { return };
        let ctx = &self.ctx;
        let blobs = ctx.metrics.borrow_mut().start_pull(&ctx.scenario, self.node, image, now);
        let namespace = &ctx.scenario.workload.images[image as usize].name;
        for b in blobs {
            agent.handle_download(now, namespace, ctx.blobs[b as usize].digest);
        }
    }

    fn input(&mut self, state: &mut Node, now: Instant, input: Input<T::Stream>) {
        match input {
            Input::Accepted(stream, remote) => {
                let conn = state.handle_accept(now, remote);
                self.conns.insert(
                    conn,
                    Conn { writer: None, queued: Vec::new(), reader: None, remote: None, blob: None },
                );
                self.start_conn(conn, stream);
            }
            Input::Dialed { conn, stream } => match stream {
                Some(stream) if self.conns.contains_key(&conn) => self.start_conn(conn, stream),
                Some(_) => {}
                None => {
                    if self.conns.remove(&conn).is_some() {
                        state.handle_closed(now, conn);
                    }
                }
            },
            Input::Message { conn, msg } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                if let Message::Bitfield(hs) = &msg {
                    c.remote = self.ctx.node_by_peer.get(&hs.peer_id).copied();
                    c.blob = self.ctx.blob_by_digest.get(&hs.digest).copied();
                }
                let (remote, blob) = (c.remote, c.blob);
                if let Message::PiecePayload { payload, .. } = &msg {
                    self.payload_delivered(now, remote, blob, payload.len());
                }
                state.handle_message(now, conn, msg);
            }
            Input::Piece { conn, index, offset, len, crc, held } => {
                let Some(c) = self.conns.get(&conn) else { return };
                let (remote, blob) = (c.remote, c.blob);
                self.payload_delivered(now, remote, blob, len);
                self.take_piece(state, now, conn, blob, (index, offset, len, crc), held);
            }
            Input::Closed { conn } => {
                tracing::debug!(at = %now, node = self.node, ?conn, "closed by the remote end");
                if let Some(c) = self.conns.remove(&conn) {
                    self.stop(conn, c);
                    state.handle_closed(now, conn);
                }
            }
            Input::Announce { id, result } => {
                if let Node::Agent(a) = state {
                    a.handle_announce_response(now, id, result);
                }
            }
            Input::MetaInfo { id, reply } => {
                if let Node::Agent(a) = state {
                    a.handle_metainfo_response(now, id, reply);
                }
            }
            Input::Verified { digest, stats, result } => match result {
                Ok(true) => self.record(now, Event::DownloadComplete { digest, stats }),
                Ok(false) => self.record(
                    now,
                    Event::DownloadFailed {
                        digest,
                        error: shoal_protocols::peer::DownloadError::DigestMismatch,
                        stats,
                    },
                ),
                Err(why) => self.ctx.fail_run(why),
            },
            Input::OriginMetaInfo { namespace, digest, reply } => {
                if let Node::Origin(o) = state {
                    let _ = reply.send(o.handle_metainfo_request(now, &namespace, digest));
                }
            }
        }
    }

    /// Counts a piece payload that arrived from `remote` (for a download of `blob`).
    fn payload_delivered(&self, now: Instant, remote: Option<u32>, blob: Option<u32>, len: u64) {
        let Some(from) = remote else { return };
        let agents = self.ctx.agents();
        let source = if from >= agents {
            Source::Origin
        } else {
            Source::Peer(self.ctx.net.locality(from, self.node))
        };
        let host = (self.node < agents).then_some(self.node).zip(blob);
        let sc = &self.ctx.scenario;
        let zone = |n: u32| {
            let n = n as usize;
            match n.checked_sub(sc.topology.hosts.len()) {
                None => sc.topology.hosts[n].place.zone,
                Some(o) => sc.origins[o].place.zone,
            }
        };
        let cross_zone = sc.topology.zones.is_some() && zone(from) != zone(self.node);
        self.ctx.metrics.borrow_mut().payload_delivered(now, host, source, cross_zone, len);
    }

    /// Hands a piece the reader received to the node as a tagged payload carrying the CRC32 of its
    /// bytes (the node checks it against the metainfo as it checks real bytes); once the node has
    /// taken it, the bytes in the file are the agent's (or are written there, when they were held).
    fn take_piece(
        &mut self,
        state: &mut Node,
        now: Instant,
        conn: ConnId,
        blob: Option<u32>,
        (index, offset, len, crc): (u32, u64, u64, u32),
        held: Held,
    ) {
        let msg = Message::PiecePayload { index, offset, payload: Payload::Tagged { len, tag: crc } };
        let digest = blob.map(|b| self.ctx.blobs[b as usize].digest);
        let holds = |state: &Node| match (state, &digest) {
            (Node::Agent(a), Some(d)) => a.bitfield(d).is_some_and(|b| index < b.len() && b.get(index)),
            _ => false,
        };
        let before = holds(state);
        state.handle_message(now, conn, msg);
        let taken = !before && holds(state);
        match (held, blob) {
            (Held::Written(claim), _) if taken => claim.keep(),
            (Held::Bytes(bytes), Some(b)) if taken => {
                let at = self.ctx.blobs[b as usize].piece_offset(index) + offset;
                let file = self.disk.borrow_mut().file(&self.ctx, self.node, b);
                if let Some(file) = file {
                    if let Err(e) = file.write_piece(at, &bytes) {
                        self.ctx.fail_run(format!("writing piece {index} to {}: {e}", file.path.display()));
                    }
                    self.disk.borrow_mut().claims.insert((b, index), Claim::Held);
                }
            }
            (Held::Dropped, _) if taken => self.ctx.fail_run(format!(
                "agent {}: took piece {index} whose bytes were not kept (a driver bug)",
                self.node
            )),
            // Refused or a duplicate: a claim is released as it drops.
            _ => {}
        }
    }

    /// When blobs are on disk, a completed download's file is hashed (SHA-256, on a blocking
    /// thread, so that the node's thread goes on moving bytes; Kraken's agents hash on their own
    /// cores too), and the download is recorded when the hash is known: complete, or failed
    /// (`content does not match its digest`) — `quirks.verify_blob_sha256`. Returns the event when
    /// there is nothing to hash.
    fn verify_completed_file(&self, ev: Event) -> Option<Event> {
        let Event::DownloadComplete { digest, stats } = ev else { return Some(ev) };
        let file =
            self.ctx.blob_by_digest.get(&digest).and_then(|b| self.disk.borrow().files.get(b).cloned());
        let (true, true, Some(file)) =
            (self.ctx.data_dir.is_some(), self.ctx.scenario.protocol.agent.quirks.verify_blob_sha256, file)
        else {
            return Some(Event::DownloadComplete { digest, stats });
        };
        let (path, tx) = (file.path.clone(), self.tx.clone());
        spawn_local(async move {
            let hashed =
                tokio::task::spawn_blocking(move || file_matches(&path, &digest).map_err(|e| (e, path)));
            let result = match hashed.await {
                Ok(Ok(ok)) => Ok(ok),
                Ok(Err((e, path))) => Err(format!("reading {} to check its digest: {e}", path.display())),
                Err(e) => Err(format!("checking the digest of blob {digest}: {e}")),
            };
            let _ = tx.send(Input::Verified { digest, stats, result });
        });
        None
    }

    /// Records a download's end in the run's metrics.
    fn record(&self, now: Instant, ev: Event) {
        let digest = match &ev {
            Event::DownloadComplete { digest, .. } | Event::DownloadFailed { digest, .. } => *digest,
        };
        let Some(&blob) = self.ctx.blob_by_digest.get(&digest) else { return };
        self.ctx.metrics.borrow_mut().download_event(self.node, blob, now, ev);
        self.ctx.last_end.set(self.ctx.last_end.get().max(now));
    }

    /// Starts the reader and writer tasks of an established connection and flushes what was queued.
    fn start_conn(&mut self, conn: ConnId, stream: T::Stream) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let (r, w) = tokio::io::split(stream);
        let (wtx, wrx) = mpsc::unbounded_channel();
        for cmd in c.queued.drain(..) {
            let _ = wtx.send(cmd);
        }
        c.writer = Some(wtx);
        let limits = DecoderLimits {
            max_payload: self.ctx.max_piece,
            max_pieces: 1 << 24,
            accept_tagged: false,
            ..DecoderLimits::default()
        };
        // An agent's reader writes pieces to disk as they arrive, when blobs are on disk.
        let disk = (self.ctx.data_dir.is_some() && self.node < self.ctx.agents()).then(|| self.disk.clone());
        c.reader = Some(spawn_local(reader(
            self.t.clone(),
            self.ctx.clone(),
            self.node,
            conn,
            r,
            Sink { tx: self.tx.clone(), delays: self.delays.clone() },
            limits,
            disk,
        )));
        spawn_local(writer(self.t.clone(), self.ctx.clone(), self.node, w, wrx));
    }

    fn drain(&mut self, state: &mut Node, now: Instant) {
        while let Some(out) = state.poll_output() {
            self.output(out);
        }
        while let Some(ev) = state.poll_event() {
            if let Some(ev) = self.verify_completed_file(ev) {
                self.record(now, ev);
            }
        }
    }

    fn output(&mut self, out: Output) {
        match out {
            Output::Dial { conn, addr } => {
                tracing::debug!(at = %now(&self.t), node = self.node, %addr, ?conn, "dial");
                self.conns.insert(
                    conn,
                    Conn { writer: None, queued: Vec::new(), reader: None, remote: None, blob: None },
                );
                let (t, tx, ctx, me) = (self.t.clone(), self.tx.clone(), self.ctx.clone(), Some(self.node));
                let to = self.ctx.node_by_peer.get(&shoal_protocols::PeerId::from_addr(addr)).copied();
                spawn_local(async move {
                    let stream = tokio::time::timeout(HTTP_TIMEOUT, connect(&t, &ctx, me, to, addr))
                        .await
                        .ok()
                        .and_then(Result::ok);
                    let _ = tx.send(Input::Dialed { conn, stream });
                });
            }
            Output::Send { conn, message } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                self.ctx.metrics.borrow_mut().message_sent(message.kind(), message.wire_len());
                let cmd = match message {
                    Message::PiecePayload { index, payload: Payload::Tagged { .. }, .. }
                        if self.ctx.data_dir.is_some() =>
                    {
                        // Blobs on disk: the piece is read from this node's file of the blob.
                        let from = match (c.blob, self.node < self.ctx.agents()) {
                            (Some(b), false) => Some(StoredPiece::Origin(b)),
                            (Some(b), true) => {
                                self.disk.borrow().files.get(&b).cloned().map(StoredPiece::Agent)
                            }
                            (None, _) => None,
                        };
                        let Some(from) = from else {
                            tracing::warn!(node = self.node, ?conn, index, "no file to serve a piece from");
                            return;
                        };
                        let blob = c.blob.expect("a file was found for it");
                        let at = self.ctx.blobs[blob as usize].piece_offset(index);
                        WriteCmd::Stored { msg: message, from, at }
                    }
                    message => WriteCmd::Send(message),
                };
                match &c.writer {
                    Some(w) => {
                        let _ = w.send(cmd);
                    }
                    None => c.queued.push(cmd),
                }
            }
            Output::Close { conn } => {
                tracing::debug!(at = %now(&self.t), node = self.node, ?conn, "close");
                if let Some(c) = self.conns.remove(&conn) {
                    self.stop(conn, c);
                }
            }
            Output::Announce { id, tracker, request } => {
                let (http, tx) = (self.http.clone(), self.tx.clone());
                spawn_local(async move {
                    let result = announce(&http, tracker, &request).await;
                    let _ = tx.send(Input::Announce { id, result });
                });
            }
            Output::FetchMetaInfo { id, tracker, namespace, digest } => {
                let (http, tx) = (self.http.clone(), self.tx.clone());
                spawn_local(async move {
                    let path = format!(
                        "/namespace/{}/blobs/{}/metainfo",
                        http::percent_encode(&namespace),
                        digest.hex()
                    );
                    let reply = metainfo_reply(http.call(tracker, None, "GET", &path, b"").await);
                    let _ = tx.send(Input::MetaInfo { id, reply });
                });
            }
        }
    }
}

async fn sleep_nonzero(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

impl<T: Transport> NodeDriver<T> {
    /// Ends a connection the node no longer knows: the writer sends what it has, then closes; the
    /// reader stops at once, and what it read but had not yet delivered is dropped.
    fn stop(&self, conn: ConnId, c: Conn) {
        if let Some(w) = c.writer {
            let _ = w.send(WriteCmd::Close);
        }
        if let Some(r) = c.reader {
            r.abort();
        }
        if let Some(q) = &self.delays {
            q.forget(conn);
        }
    }
}

/// The inputs a node's connections have read, each held until its emulated arrival time and
/// handed to the node in order of that time (where the driver emulates latency).
///
/// One queue per node rather than one timer per connection, because tokio's timers tick in whole
/// milliseconds: every delay that ends within the same millisecond wakes at the same tick, in the
/// timer wheel's order, which would erase a scenario's sub-millisecond jitter (`agree-16`:
/// 1 ms ± 0.5 ms) and hand the node its handshakes in the order they were read. Kraken's
/// connection admission is first come, first served, so that order decides which hosts get
/// connection slots when every host dials at once.
pub(crate) struct DelayQueue<S> {
    items: RefCell<Queued<S>>,
    seq: Cell<u64>,
    /// Wakes the pump when an input is queued.
    queued: Notify,
}

impl<S> Default for DelayQueue<S> {
    fn default() -> Self {
        DelayQueue { items: RefCell::new(BTreeMap::new()), seq: Cell::new(0), queued: Notify::new() }
    }
}

impl<S> DelayQueue<S> {
    /// Queues what `conn` read from network node `remote` (`None`: not yet known), due at `due`.
    fn push(&self, due: Instant, conn: ConnId, remote: Option<u32>, input: Input<S>) {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        self.items.borrow_mut().insert((due, seq), (conn, remote, input));
        self.queued.notify_one();
    }

    /// The earliest input due by `now`, and the network node it came from.
    fn pop_due(&self, now: Instant) -> Option<(Option<u32>, Input<S>)> {
        let mut items = self.items.borrow_mut();
        let (&(due, _), _) = items.first_key_value()?;
        if due > now {
            return None;
        }
        items.pop_first().map(|(_, (_, remote, input))| (remote, input))
    }

    fn next_due(&self) -> Option<Instant> {
        self.items.borrow().first_key_value().map(|(&(due, _), _)| due)
    }

    /// Drops what a connection read but the node has not yet received.
    fn forget(&self, conn: ConnId) {
        self.items.borrow_mut().retain(|_, (c, _, _)| *c != conn);
    }
}

/// (arrival time, sequence number) → the connection, the network node it is from, and what it read.
type Queued<S> = BTreeMap<(Instant, u64), (ConnId, Option<u32>, Input<S>)>;

/// Hands node `node` its delayed inputs as they come due, earliest first. Each is judged by the
/// link it crosses as it arrives ([`faults::Links`]): let through, dropped across a partition, or
/// held until a `release` hands it over.
async fn delay_pump<T: Transport>(
    t: T,
    ctx: Rc<Ctx>,
    node: u32,
    q: Rc<DelayQueue<T::Stream>>,
    tx: mpsc::UnboundedSender<Input<T::Stream>>,
) {
    let mut held = faults::Held::default();
    loop {
        let changed = ctx.links.changed();
        for input in held.released(&ctx.links) {
            if tx.send(input).is_err() {
                return;
            }
        }
        match q.next_due() {
            None => {
                tokio::select! {
                    _ = q.queued.notified() => {}
                    _ = changed => {}
                }
            }
            Some(due) if due > now(&t) => {
                tokio::select! {
                    _ = sleep_until(&t, due) => {}
                    _ = q.queued.notified() => {}
                    _ = changed => {}
                }
            }
            Some(_) => {
                while let Some((remote, input)) = q.pop_due(now(&t)) {
                    let Some(input) = held.arrive(&ctx.links, remote, node, input) else { continue };
                    if tx.send(input).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Where a reader puts what it reads: straight to the node, or through its delay queue.
struct Sink<S> {
    tx: mpsc::UnboundedSender<Input<S>>,
    delays: Option<Rc<DelayQueue<S>>>,
}

async fn announce<T: Transport>(
    http: &HttpClient<T>,
    tracker: SocketAddr,
    request: &AnnounceRequest,
) -> Result<AnnounceResponse, AnnounceError> {
    let body = serde_json::to_vec(request).map_err(|_| AnnounceError::Unreachable)?;
    let path = format!("/announce/{}", request.info_hash.hex());
    match http.call(tracker, None, "POST", &path, &body).await {
        Ok(r) if r.status == 200 => serde_json::from_slice(&r.body).map_err(|_| AnnounceError::Unreachable),
        Ok(r) if r.status == 500 => Err(AnnounceError::NoPeers),
        _ => Err(AnnounceError::Unreachable),
    }
}

/// Reads a connection: bytes pay the host's download bucket, then go through the decoder. Where
/// the driver emulates latency, each message reaches the node one latency after it was read, in
/// order, through the node's [`DelayQueue`]. With `disk` (an agent, blobs on disk) piece payloads
/// are written to the agent's file as they arrive ([`DiskState`]) and reach the node as
/// [`Input::Piece`].
#[allow(clippy::too_many_arguments)]
async fn reader<T: Transport>(
    t: T,
    ctx: Rc<Ctx>,
    node: u32,
    conn: ConnId,
    mut r: tokio::io::ReadHalf<T::Stream>,
    sink: Sink<T::Stream>,
    limits: DecoderLimits,
    disk: Option<Rc<RefCell<DiskState>>>,
) {
    let mut remote: Option<u32> = None;
    let mut blob: Option<u32> = None;
    let mut receiving: Option<Receiving> = None;
    let mut last_due = Instant::ZERO;
    let mut send = |msg: Input<T::Stream>, remote: Option<u32>| -> bool {
        match &sink.delays {
            Some(q) => {
                // A connection's messages keep their order (TCP).
                let due = (now(&t) + ctx.one_way(remote, Some(node))).max(last_due);
                last_due = due;
                q.push(due, conn, remote, msg);
                true
            }
            None => sink.tx.send(msg).is_ok(),
        }
    };
    let mut dec = Decoder::new(limits);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let wait = ctx.buckets[node as usize].1.reserve(t.now(), n as u64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        dec.feed(&buf[..n]);
        let failed = loop {
            let chunk = match &disk {
                Some(_) => dec.next_chunk(),
                None => dec.next_message().map(|m| m.map(Chunk::Message)),
            };
            match chunk {
                Ok(Some(Chunk::Message(msg))) => {
                    if let Message::Bitfield(hs) = &msg {
                        remote = ctx.node_by_peer.get(&hs.peer_id).copied();
                        blob = ctx.blob_by_digest.get(&hs.digest).copied();
                    }
                    if !send(Input::Message { conn, msg }, remote) {
                        return;
                    }
                }
                Ok(Some(Chunk::PayloadStart { index, offset, len })) => {
                    let disk = disk.as_ref().expect("only next_chunk streams");
                    receiving = Some(Receiving::start(&ctx, disk, node, blob, index, offset, len));
                }
                Ok(Some(Chunk::PayloadData(bytes))) => {
                    if let Some(rx) = receiving.as_mut() {
                        rx.data(&ctx, &bytes);
                    }
                }
                Ok(Some(Chunk::PayloadEnd)) => {
                    if let Some(rx) = receiving.take()
                        && !send(rx.end(conn), remote)
                    {
                        return;
                    }
                }
                Ok(None) => break false,
                // Garbage, an oversized frame or a tagged payload: the connection ends here.
                Err(_) => break true,
            }
        };
        if failed {
            break;
        }
    }
    // Ended by the stream, not stopped by the node: the node learns of it after what was read.
    send(Input::Closed { conn }, remote);
}

/// Writes a connection: payload bytes pay the host's upload bucket, chunk by chunk.
async fn writer<T: Transport>(
    t: T,
    ctx: Rc<Ctx>,
    node: u32,
    mut w: tokio::io::WriteHalf<T::Stream>,
    mut rx: mpsc::UnboundedReceiver<WriteCmd>,
) {
    let mut head = Vec::with_capacity(256);
    // Where pieces read from a file pass on their way to the socket; allocated at the first one.
    let mut buf = Vec::new();
    while let Some(cmd) = rx.recv().await {
        let (msg, stored) = match cmd {
            WriteCmd::Send(m) => (m, None),
            WriteCmd::Stored { msg, from, at } => (msg, Some((from, at))),
            WriteCmd::Close => break,
        };
        head.clear();
        // A message the codec refuses (an oversized handshake) cannot be sent: close instead.
        let framed = match stored {
            None => wire::encode_header(&msg, &mut head),
            Some(_) => wire::encode_real_header(&msg, &mut head),
        };
        if framed.is_err() {
            break;
        }
        if w.write_all(&head).await.is_err() {
            return;
        }
        let sent = match (msg, stored) {
            (Message::PiecePayload { payload: Payload::Bytes(bytes), .. }, _) => {
                write_payload(&t, &ctx, node, &mut w, bytes).await
            }
            (Message::PiecePayload { payload, .. }, Some((from, at))) => {
                if buf.is_empty() {
                    buf = vec![0u8; CHUNK];
                }
                write_stored(&t, &ctx, node, &mut w, &from, at, payload.len(), &mut buf).await
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Writes `len` bytes of a piece read from a file at `at`, chunk by chunk through `buf`, each chunk
/// paying the host's upload bucket. A file that cannot be read fails the run (and the connection).
#[allow(clippy::too_many_arguments)]
async fn write_stored<T: Transport>(
    t: &T,
    ctx: &Ctx,
    node: u32,
    w: &mut tokio::io::WriteHalf<T::Stream>,
    from: &StoredPiece,
    at: u64,
    len: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let (file, path) = match from {
        StoredPiece::Agent(f) => (&f.file, &f.path),
        StoredPiece::Origin(b) => match &ctx.blobs[*b as usize].bytes {
            BlobBytes::File { file, path } => (file, path),
            BlobBytes::Memory(_) => unreachable!("stored pieces are served only when blobs are on disk"),
        },
    };
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(file, chunk, at + done) {
            ctx.fail_run(format!("reading a piece from {}: {e}", path.display()));
            return Err(e);
        }
        let wait = ctx.buckets[node as usize].0.reserve(t.now(), n as u64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        w.write_all(chunk).await?;
        done += n as u64;
    }
    Ok(())
}

async fn write_payload<T: Transport>(
    t: &T,
    ctx: &Ctx,
    node: u32,
    w: &mut tokio::io::WriteHalf<T::Stream>,
    bytes: Bytes,
) -> std::io::Result<()> {
    for chunk in bytes.chunks(CHUNK) {
        let wait = ctx.buckets[node as usize].0.reserve(t.now(), chunk.len() as u64);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        w.write_all(chunk).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(conn: u64) -> (ConnId, Input<()>) {
        (ConnId(conn), Input::Closed { conn: ConnId(conn) })
    }

    fn conn_of(input: Input<()>) -> u64 {
        match input {
            Input::Closed { conn } => conn.0,
            _ => unreachable!("only closes are queued here"),
        }
    }

    #[test]
    fn delayed_inputs_come_out_in_due_order_not_read_order() {
        let q = DelayQueue::<()>::default();
        let at = |us: u64| Instant::from_nanos(us * 1_000);
        // Read in this order, all due within the same millisecond (one tokio timer tick).
        for (due, conn) in [(1_400, 1), (1_100, 2), (1_250, 3), (1_100, 4), (1_300, 5), (2_600, 6)] {
            let (c, input) = closed(conn);
            q.push(at(due), c, None, input);
        }
        // A connection the node stopped delivers nothing more.
        q.forget(ConnId(5));
        assert!(q.pop_due(at(1_099)).is_none());
        assert_eq!(q.next_due(), Some(at(1_100)));
        let out: Vec<u64> = std::iter::from_fn(|| q.pop_due(at(2_000))).map(|(_, i)| conn_of(i)).collect();
        // Earliest first; equal times keep the order they were read in.
        assert_eq!(out, [2, 4, 3, 1]);
        assert_eq!(q.next_due(), Some(at(2_600)));
    }
}
