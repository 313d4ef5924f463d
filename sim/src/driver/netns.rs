//! `--net netns`: the real engine's nodes in Linux network namespaces, on links the kernel shapes.
//!
//! Every node of a run (agents, then origins, then trackers) gets its own namespace
//! `shoal-<pid>-<run>-<n>` holding `lo` and `eth0`, one end of a veth pair whose other end (`v<n>`)
//! is a port of the bridge `br0` in the run's own namespace `shoal-<pid>-<run>-br`. Node `n` has
//! the address 198.18.0.0 + n + 1 in 198.18.0.0/15 (RFC 2544's benchmarking range) and no route
//! anywhere else: nothing is created outside the namespaces the run made, and no traffic leaves
//! them. Each host's (and origin's) upload is an htb qdisc on its `eth0`; its download an htb
//! qdisc on an ifb device (`ifb0`) that `eth0`'s ingress redirects to; each has one class per
//! peer so that peers share the link equally (see `htb` below for why). TCP's congestion control then
//! shares the bandwidth within those limits, so the driver's token buckets are not applied.
//!
//! What the kernel here cannot do: it has no netem (nor fq, fq_codel, sfq), so delay and jitter
//! cannot come from tc; the driver's delay line keeps adding the scenario's latency
//! ([`Ctx::emulate_latency`](super::Ctx)), as on loopback. Shared rack, pod and zone uplinks are
//! not shaped: a scenario with uplink capacities is refused.
//!
//! Sockets belong to the namespace they were created in. One helper thread ([`Sockets`]) moves
//! itself into a node's namespace (`setns`) and creates an unbound non-blocking TCP socket there
//! for each bind or dial; the runtime thread never changes namespace and drives every socket with
//! tokio as usual. Each node has its own transport value knowing its namespace; all share the
//! run's clock.
//!
//! Set-up and teardown run `ip` and `tc` (iproute2) commands planned by [`Plan`] (pure, tested).
//! [`Network`] deletes every namespace it created when dropped: at the end of the run, after an
//! error, on a panic, and after Ctrl-C (the run loop's stop flag ends the run normally). Deleting
//! a namespace deletes the links and qdiscs inside it. A process killed outright (a second Ctrl-C,
//! SIGKILL) leaves its namespaces; the next `--net netns` run deletes those of dead processes.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::scenario::Scenario;

/// How the real engine's nodes reach each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Net {
    /// All nodes on 127.0.0.1 in the caller's namespace; the driver's token buckets shape
    /// bandwidth.
    #[default]
    Loopback,
    /// One network namespace per node on a bridge, bandwidth shaped by tc.
    Netns,
}

impl Net {
    /// The flags that select this mode on `shoal run` (empty for the default).
    pub fn cli_flags(self) -> &'static str {
        match self {
            Net::Loopback => "",
            Net::Netns => " --net netns",
        }
    }
}

/// The first address of the range: 198.18.0.0/15.
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Prefix length of the range (and of every node's address).
const PREFIX_LEN: u32 = 15;
/// Most nodes one run can address (the range less its network and broadcast addresses).
pub const MAX_NODES: usize = (1 << (32 - PREFIX_LEN)) - 2;

/// Each peer class's queue, as time at the link's full rate, in milliseconds (a `bfifo`): what a
/// queue on a real switch port or NIC might hold.
const QUEUE_MS: u64 = 20;
/// The link's buckets (htb's `burst` and `cburst`), as time at its rate, in milliseconds (at
/// least [`MIN_BURST_BYTES`]).
const BURST_MS: u64 = 2;
/// Smallest bucket: one 64 KiB GSO packet must fit.
const MIN_BURST_BYTES: u64 = 64 * 1024;
/// Bytes a peer class sends per round when classes share the link (htb's `quantum`, equal for
/// all, so backlogged peers get equal shares).
const QUANTUM_BYTES: u64 = 64 * 1024;
/// A full TCP segment on the wire (Ethernet 14 + IPv4 20 + TCP 20 + timestamps 12 + payload
/// 1448 bytes, what tc counts) against the payload it carries: links are shaped at the scenario's
/// rate × [`WIRE_BYTES`] / [`PAYLOAD_BYTES`], so that TCP's payload moves at the scenario's rate,
/// the rate the des engine gives payload bytes. Without it, every transfer is 4.6 % slower.
pub const WIRE_BYTES: u64 = 1514;
/// See [`WIRE_BYTES`].
pub const PAYLOAD_BYTES: u64 = 1448;
/// Rates above this (100 Gbit/s, ten times what a veth pair carries here) are left unshaped: the
/// kernel's shapers keep their buckets in time units, which round to nothing at terabit rates.
pub const MAX_SHAPED_BYTES_PER_S: u64 = 12_500_000_000;

/// Node `n`'s address: 198.18.0.0 + n + 1, or `None` past the range.
pub fn node_addr(n: usize) -> Option<Ipv4Addr> {
    if n >= MAX_NODES {
        return None;
    }
    Some(Ipv4Addr::from(BASE + n as u32 + 1))
}

/// Whether `ip` is in 198.18.0.0/15.
pub fn in_range(ip: Ipv4Addr) -> bool {
    u32::from(ip) >> (32 - PREFIX_LEN) == BASE >> (32 - PREFIX_LEN)
}

/// One command of a plan: `ip` or `tc`, its arguments and, for a batch (`tc -batch -`), the
/// lines it reads on stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub program: &'static str,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

impl Cmd {
    fn new(program: &'static str, args: &[&str]) -> Cmd {
        Cmd { program, args: args.iter().map(|a| a.to_string()).collect(), stdin: None }
    }

    /// The namespace this command creates (`ip netns add NAME`), if any.
    pub fn creates_namespace(&self) -> Option<&str> {
        match (self.program, self.args.as_slice()) {
            ("ip", [netns, add, name]) if netns == "netns" && add == "add" => Some(name.as_str()),
            _ => None,
        }
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.program, self.args.join(" "))
    }
}

/// One node's namespace and link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLink {
    pub namespace: String,
    pub addr: Ipv4Addr,
    /// Egress rate; 0 (or above [`MAX_SHAPED_BYTES_PER_S`]) is unshaped.
    pub upload_bytes_per_s: u64,
    /// Ingress rate; 0 (or above [`MAX_SHAPED_BYTES_PER_S`]) is unshaped.
    pub download_bytes_per_s: u64,
}

/// The namespaces, links and qdiscs of one run, and the commands that make and remove them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `shoal-<pid>-<run>-`: every namespace of the run starts with it.
    pub prefix: String,
    /// The namespace of the bridge.
    pub bridge: String,
    /// Agents, then origins, then trackers.
    pub nodes: Vec<NodeLink>,
}

impl Plan {
    /// The plan for a scenario's nodes under `prefix`. Refuses shared uplinks (not shaped) and
    /// more nodes than the address range holds.
    pub fn for_scenario(prefix: &str, s: &Scenario) -> Result<Plan, String> {
        let levels = [("racks", &s.topology.racks), ("pods", &s.topology.pods), ("zones", &s.topology.zones)];
        for (name, level) in levels {
            if level.as_ref().is_some_and(|l| l.groups.iter().any(|g| g.uplink_bytes_per_s.is_some())) {
                return Err(format!(
                    "{}: --net netns shapes each host's own link only, and the scenario's {name} have uplink \
                     capacities (topology.{name}.uplink_bytes_per_s), which it does not shape; remove them, \
                     or use --engine des (or --engine real without --net netns, which ignores them too)",
                    s.source
                ));
            }
        }
        let rates = s
            .topology
            .hosts
            .iter()
            .map(|h| (h.upload_bytes_per_s, h.download_bytes_per_s))
            .chain(s.origins.iter().map(|o| (o.upload_bytes_per_s, o.download_bytes_per_s)))
            .chain((0..s.trackers).map(|_| (0, 0)));
        Plan::new(prefix, rates)
    }

    /// The plan for nodes with these (upload, download) rates.
    pub fn new(prefix: &str, rates: impl IntoIterator<Item = (u64, u64)>) -> Result<Plan, String> {
        let mut nodes = Vec::new();
        for (n, (up, down)) in rates.into_iter().enumerate() {
            let addr = node_addr(n).ok_or_else(|| {
                format!("--net netns: more than {MAX_NODES} nodes do not fit in 198.18.0.0/15")
            })?;
            nodes.push(NodeLink {
                namespace: format!("{prefix}{n}"),
                addr,
                upload_bytes_per_s: up,
                download_bytes_per_s: down,
            });
        }
        Ok(Plan { prefix: prefix.to_string(), bridge: format!("{prefix}br"), nodes })
    }

    /// Every command that builds the run's network, in order.
    pub fn setup(&self) -> Vec<Cmd> {
        let br = self.bridge.as_str();
        let mut cmds = vec![
            Cmd::new("ip", &["netns", "add", br]),
            Cmd::new("ip", &["-n", br, "link", "add", "br0", "type", "bridge"]),
            Cmd::new("ip", &["-n", br, "link", "set", "br0", "up"]),
        ];
        for (n, node) in self.nodes.iter().enumerate() {
            let ns = node.namespace.as_str();
            let port = format!("v{n}");
            let addr = format!("{}/{PREFIX_LEN}", node.addr);
            cmds.extend([
                Cmd::new("ip", &["netns", "add", ns]),
                Cmd::new(
                    "ip",
                    &["-n", br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns],
                ),
                Cmd::new("ip", &["-n", br, "link", "set", &port, "master", "br0", "up"]),
                Cmd::new("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]),
                Cmd::new("ip", &["-n", ns, "link", "set", "lo", "up"]),
                Cmd::new("ip", &["-n", ns, "link", "set", "eth0", "up"]),
            ]);
            let shaped = |r: u64| r > 0 && r <= MAX_SHAPED_BYTES_PER_S;
            let peers: Vec<Ipv4Addr> =
                self.nodes.iter().enumerate().filter(|&(m, _)| m != n).map(|(_, p)| p.addr).collect();
            if shaped(node.upload_bytes_per_s) {
                cmds.push(htb(ns, "eth0", node.upload_bytes_per_s, "dst", &peers));
            }
            if shaped(node.download_bytes_per_s) {
                cmds.extend([
                    Cmd::new("ip", &["-n", ns, "link", "add", "ifb0", "type", "ifb"]),
                    Cmd::new("ip", &["-n", ns, "link", "set", "ifb0", "up"]),
                    Cmd::new("tc", &["-n", ns, "qdisc", "add", "dev", "eth0", "handle", "ffff:", "ingress"]),
                    Cmd::new(
                        "tc",
                        &[
                            "-n", ns, "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "all",
                            "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                            "ifb0",
                        ],
                    ),
                    htb(ns, "ifb0", node.download_bytes_per_s, "src", &peers),
                ]);
            }
        }
        cmds
    }

    /// The commands that remove namespaces `created` (in reverse order of creation: nodes, then
    /// the bridge). Deleting a namespace deletes its links, and a veth's peer with it.
    pub fn teardown(created: &[String]) -> Vec<Cmd> {
        created.iter().rev().map(|ns| Cmd::new("ip", &["netns", "delete", ns])).collect()
    }
}

/// `dev`'s link in namespace `ns` at `bytes_per_s`, shared fairly among `peers` (one `tc -batch`).
///
/// The kernel here has no fair-queueing qdisc (fq, fq_codel, sfq), and one FIFO (tbf) lets a
/// few flows take most of a link. So the link is an htb class with one child class per peer
/// (matched by `dir`, the packet's `dst` on egress or `src` on ingress), each guaranteed an equal
/// part of the rate and allowed all of it, with equal quanta: backlogged peers share the link
/// equally and an idle peer's part goes to the others, as the des engine's max-min sharing does
/// for one flow per pair. Anything else (ARP) goes to one more such class.
fn htb(ns: &str, dev: &str, payload_bytes_per_s: u64, dir: &str, peers: &[Ipv4Addr]) -> Cmd {
    let bytes_per_s = payload_bytes_per_s.saturating_mul(WIRE_BYTES) / PAYLOAD_BYTES;
    let bits = |b: u64| format!("{}bit", b.saturating_mul(8).max(8));
    let rate = bits(bytes_per_s);
    let burst = (bytes_per_s.saturating_mul(BURST_MS) / 1000).max(MIN_BURST_BYTES);
    let share = bits(bytes_per_s / (peers.len() as u64 + 1));
    let limit = (bytes_per_s.saturating_mul(QUEUE_MS) / 1000).max(2 * MIN_BURST_BYTES);
    let mut lines = vec![
        format!("qdisc add dev {dev} root handle 1: htb default 2"),
        format!(
            "class add dev {dev} parent 1: classid 1:1 htb rate {rate} ceil {rate} burst {burst} cburst {burst}"
        ),
    ];
    // Class 1:2 takes what matches no peer; peer k is class 1:(k + 0x10) (minors are hex).
    for (k, peer) in std::iter::once(None).chain(peers.iter().map(Some)).enumerate() {
        let minor = if k == 0 { 2 } else { k + 0xf };
        lines.push(format!(
            "class add dev {dev} parent 1:1 classid 1:{minor:x} htb rate {share} ceil {rate} burst {burst} cburst \
             {burst} quantum {QUANTUM_BYTES}"
        ));
        lines.push(format!("qdisc add dev {dev} parent 1:{minor:x} bfifo limit {limit}"));
        if let Some(ip) = peer {
            lines.push(format!(
                "filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip {dir} {ip}/32 flowid 1:{minor:x}"
            ));
        }
    }
    let mut cmd = Cmd::new("tc", &["-n", ns, "-batch", "-"]);
    cmd.stdin = Some(lines.join("\n") + "\n");
    cmd
}

/// Runs one command; a failure says what ran and what it printed on stderr.
fn run_cmd(cmd: &Cmd) -> Result<(), String> {
    let spawn = |cmd: &Cmd| -> io::Result<std::process::Output> {
        use std::io::Write;
        let stdin =
            if cmd.stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() };
        let mut child = Command::new(cmd.program)
            .args(&cmd.args)
            .stdin(stdin)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let (Some(text), Some(mut pipe)) = (&cmd.stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    };
    let out = spawn(cmd).map_err(|e| format!("--net netns: running `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "--net netns: `{cmd}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Checks that `--net netns` can work here before anything is created: root, and iproute2's `ip`
/// and `tc`.
pub fn preflight() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("--net netns needs Linux (reading /proc/self/status: {e})"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    if euid != Some(0) {
        return Err(
            "--net netns creates network namespaces, veth pairs and tc qdiscs, which needs root: run as root \
             (e.g. with sudo), or use --net loopback (the default)"
                .to_string(),
        );
    }
    for program in ["ip", "tc"] {
        match Command::new(program).arg("-V").stdin(std::process::Stdio::null()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "--net netns needs iproute2's `{program}`: `{program} -V` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "--net netns needs iproute2's `{program}` on PATH (apt-get install iproute2): {e}"
                ));
            }
        }
    }
    Ok(())
}

/// The names of every namespace `ip netns list` shows.
pub fn namespaces() -> Result<Vec<String>, String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running `ip netns list`: {e}"))?;
    if !out.status.success() {
        return Err(format!("`ip netns list` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    // Lines are `NAME` or `NAME (id: N)`.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The pid in a run's namespace name `shoal-<pid>-…`.
pub fn owner_pid(namespace: &str) -> Option<u32> {
    let rest = namespace.strip_prefix("shoal-")?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Deletes the namespaces left by runs of processes that no longer exist (killed before they
/// could clean up). Returns how many it deleted.
pub fn remove_stale() -> Result<usize, String> {
    let me = std::process::id();
    let mut removed = 0;
    for ns in namespaces()? {
        let Some(pid) = owner_pid(&ns) else { continue };
        if pid == me || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        run_cmd(&Cmd::new("ip", &["netns", "delete", &ns]))?;
        removed += 1;
    }
    Ok(removed)
}

/// Runs of this process so far (namespaces of concurrent runs get different prefixes).
static RUNS: AtomicU32 = AtomicU32::new(0);

/// A run's network: created by [`Network::create`], deleted on drop.
#[derive(Debug)]
pub struct Network {
    plan: Plan,
    /// Namespaces created so far, in order.
    created: Vec<String>,
    sockets: Option<Arc<Sockets>>,
}

impl Network {
    /// Checks the machine ([`preflight`]), removes stale namespaces and builds the scenario's
    /// network. On an error, what was created is deleted before it returns.
    pub fn create(s: &Scenario) -> Result<Network, String> {
        preflight()?;
        let prefix = format!("shoal-{}-{}-", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
        let plan = Plan::for_scenario(&prefix, s)?;
        match remove_stale() {
            Ok(0) => {}
            Ok(n) => tracing::info!(namespaces = n, "removed namespaces of earlier runs that were killed"),
            Err(e) => tracing::warn!("removing stale namespaces: {e}"),
        }
        Network::from_plan(plan)
    }

    /// Builds the network of `plan` (root needed). On an error, the namespaces it created are
    /// deleted before it returns; a namespace it did not create (a name taken) is left alone.
    pub fn from_plan(plan: Plan) -> Result<Network, String> {
        let started = std::time::Instant::now();
        let mut net = Network { plan, created: Vec::new(), sockets: None };
        for cmd in net.plan.setup() {
            run_cmd(&cmd)?;
            if let Some(ns) = cmd.creates_namespace() {
                net.created.push(ns.to_string());
            }
        }
        let names: Vec<String> = net.plan.nodes.iter().map(|n| n.namespace.clone()).collect();
        net.sockets = Some(Arc::new(Sockets::start(&names)?));
        tracing::info!(
            nodes = net.plan.nodes.len(),
            prefix = %net.plan.prefix,
            setup_ms = started.elapsed().as_millis() as u64,
            "network namespaces ready"
        );
        Ok(net)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Node `n`'s address.
    pub fn addr(&self, n: usize) -> Option<Ipv4Addr> {
        self.plan.nodes.get(n).map(|l| l.addr)
    }

    /// What node `n`'s transport needs to make sockets in its namespace.
    pub fn node(&self, n: usize) -> Option<NodeNet> {
        let sockets = self.sockets.clone()?;
        Some(NodeNet { sockets, node: n, addr: self.addr(n)? })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // The helper thread sits in a namespace: it must leave (exit) before the deletes, or that
        // namespace would outlive its name.
        if let Some(s) = &self.sockets {
            s.stop();
        }
        for cmd in Plan::teardown(&self.created) {
            if let Err(e) = run_cmd(&cmd) {
                // The namespace may not exist (its `ip netns add` failed); anything else is worth
                // saying, and the next run removes what is left.
                tracing::warn!("teardown: {e}");
            }
        }
        tracing::info!(prefix = %self.plan.prefix, "network namespaces deleted");
    }
}

/// A request to the helper thread: a socket in node `.0`'s namespace.
type Request = (usize, mpsc::SyncSender<io::Result<socket2::Socket>>);

/// The helper thread that creates sockets in the nodes' namespaces.
pub struct Sockets {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets").finish_non_exhaustive()
    }
}

impl Sockets {
    /// Opens every namespace of `names` (`/run/netns/NAME`) on a new thread that then serves
    /// requests until [`Sockets::stop`].
    fn start(names: &[String]) -> Result<Sockets, String> {
        let files = names
            .iter()
            .map(|n| {
                File::open(format!("/run/netns/{n}")).map_err(|e| format!("opening /run/netns/{n}: {e}"))
            })
            .collect::<Result<Vec<File>, String>>()?;
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("shoal-netns".to_string())
            .spawn(move || serve(files, rx))
            .map_err(|e| format!("starting the namespace helper thread: {e}"))?;
        Ok(Sockets { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// A new non-blocking TCP socket in node `n`'s namespace.
    fn socket(&self, n: usize) -> io::Result<socket2::Socket> {
        let gone = || io::Error::other("the namespace helper thread has stopped");
        let (reply, answer) = mpsc::sync_channel(1);
        {
            let tx = self.tx.lock().map_err(|_| gone())?;
            tx.as_ref().ok_or_else(gone)?.send((n, reply)).map_err(|_| gone())?;
        }
        // Creating a socket takes microseconds; the bound only guards against a wedged thread.
        answer.recv_timeout(Duration::from_secs(10)).map_err(|_| gone())?
    }

    /// Ends the helper thread and waits for it.
    fn stop(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::warn!("the namespace helper thread panicked");
        }
    }
}

/// The helper thread: moves into the requested namespace (only when it changes) and creates a
/// socket there.
fn serve(files: Vec<File>, rx: mpsc::Receiver<Request>) {
    let mut current: Option<usize> = None;
    while let Ok((n, reply)) = rx.recv() {
        let _ = reply.send(socket_in(&files, &mut current, n));
    }
}

/// A non-blocking TCP socket in namespace `files[n]`; `current` is the thread's namespace.
fn socket_in(files: &[File], current: &mut Option<usize>, n: usize) -> io::Result<socket2::Socket> {
    let file = files.get(n).ok_or_else(|| io::Error::other(format!("no namespace for node {n}")))?;
    if *current != Some(n) {
        *current = None;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        *current = Some(n);
    }
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A node's view of the run's network: its namespace and address.
#[derive(Clone, Debug)]
pub struct NodeNet {
    sockets: Arc<Sockets>,
    node: usize,
    addr: Ipv4Addr,
}

impl NodeNet {
    fn socket(&self) -> io::Result<TcpSocket> {
        Ok(TcpSocket::from_std_stream(self.sockets.socket(self.node)?.into()))
    }

    /// A new socket in the node's namespace, to bind to `addr`, which must be the node's own
    /// address.
    pub fn socket_for(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        if addr.ip() != self.addr {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{addr} is not node {}'s address {}", self.node, self.addr),
            ));
        }
        self.socket()
    }

    /// Listens on `addr`, which must be the node's own address, in its namespace.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let s = self.socket_for(addr)?;
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        s.listen(1024)
    }

    /// Connects from the node's namespace to `addr`, which must be in the run's range.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        match addr.ip() {
            std::net::IpAddr::V4(ip) if in_range(ip) => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{addr} is not in the run's network 198.18.0.0/15"),
                ));
            }
        }
        self.socket()?.connect(addr).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn addresses_fill_the_benchmarking_range() {
        assert_eq!(node_addr(0), Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(node_addr(255), Some(Ipv4Addr::new(198, 18, 1, 0)));
        assert_eq!(node_addr(MAX_NODES - 1), Some(Ipv4Addr::new(198, 19, 255, 254)));
        assert_eq!(node_addr(MAX_NODES), None);
        assert!(in_range(Ipv4Addr::new(198, 19, 255, 254)));
        assert!(!in_range(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(!in_range(Ipv4Addr::LOCALHOST));
        assert!(Plan::new("p-", std::iter::repeat_n((0, 0), MAX_NODES + 1)).is_err());
    }

    #[test]
    fn the_plan_builds_a_bridge_and_one_shaped_namespace_per_node() {
        // A host at 50 MB/s both ways, and a tracker (unshaped).
        let plan = Plan::new("shoal-7-0-", [(50_000_000, 50_000_000), (0, 0)]).unwrap();
        assert_eq!(plan.bridge, "shoal-7-0-br");
        let setup = plan.setup();
        let want = [
            "ip netns add shoal-7-0-br",
            "ip -n shoal-7-0-br link add br0 type bridge",
            "ip -n shoal-7-0-br link set br0 up",
            "ip netns add shoal-7-0-0",
            "ip -n shoal-7-0-br link add v0 type veth peer name eth0 netns shoal-7-0-0",
            "ip -n shoal-7-0-br link set v0 master br0 up",
            "ip -n shoal-7-0-0 addr add 198.18.0.1/15 dev eth0",
            "ip -n shoal-7-0-0 link set lo up",
            "ip -n shoal-7-0-0 link set eth0 up",
            "tc -n shoal-7-0-0 -batch -",
            "ip -n shoal-7-0-0 link add ifb0 type ifb",
            "ip -n shoal-7-0-0 link set ifb0 up",
            "tc -n shoal-7-0-0 qdisc add dev eth0 handle ffff: ingress",
            "tc -n shoal-7-0-0 filter add dev eth0 parent ffff: protocol all u32 match u32 0 0 action mirred \
             egress redirect dev ifb0",
            "tc -n shoal-7-0-0 -batch -",
            "ip netns add shoal-7-0-1",
            "ip -n shoal-7-0-br link add v1 type veth peer name eth0 netns shoal-7-0-1",
            "ip -n shoal-7-0-br link set v1 master br0 up",
            "ip -n shoal-7-0-1 addr add 198.18.0.2/15 dev eth0",
            "ip -n shoal-7-0-1 link set lo up",
            "ip -n shoal-7-0-1 link set eth0 up",
        ];
        assert_eq!(lines(&setup), want);
        // Egress: the link (50 MB/s of TCP payload: 52.28 MB/s on the wire), a class for what
        // matches no peer, and one class per peer (the tracker at 198.18.0.2), each with an equal
        // part of the rate and allowed all of it.
        let batch = |dev: &str, dir: &str| {
            [
                format!("qdisc add dev {dev} root handle 1: htb default 2"),
                format!("class add dev {dev} parent 1: classid 1:1 htb rate 418232040bit ceil 418232040bit burst 104558 cburst 104558"),
                format!("class add dev {dev} parent 1:1 classid 1:2 htb rate 209116016bit ceil 418232040bit burst 104558 cburst 104558 quantum 65536"),
                format!("qdisc add dev {dev} parent 1:2 bfifo limit 1045580"),
                format!("class add dev {dev} parent 1:1 classid 1:10 htb rate 209116016bit ceil 418232040bit burst 104558 cburst 104558 quantum 65536"),
                format!("qdisc add dev {dev} parent 1:10 bfifo limit 1045580"),
                format!("filter add dev {dev} parent 1: protocol ip prio 1 u32 match ip {dir} 198.18.0.2/32 flowid 1:10"),
            ]
            .join("\n")
                + "\n"
        };
        assert_eq!(setup[9].stdin.as_deref(), Some(batch("eth0", "dst").as_str()));
        // Ingress: the same on the ifb device, by source.
        assert_eq!(setup[14].stdin.as_deref(), Some(batch("ifb0", "src").as_str()));
        // Every namespace is created by the plan and under its prefix; teardown deletes them in
        // reverse order.
        let created: Vec<String> =
            setup.iter().filter_map(|c| c.creates_namespace()).map(String::from).collect();
        assert_eq!(created, ["shoal-7-0-br", "shoal-7-0-0", "shoal-7-0-1"]);
        assert!(created.iter().all(|n| n.starts_with(&plan.prefix) && owner_pid(n) == Some(7)));
        assert_eq!(
            lines(&Plan::teardown(&created)),
            ["ip netns delete shoal-7-0-1", "ip netns delete shoal-7-0-0", "ip netns delete shoal-7-0-br"]
        );
        // A slow link still gets a bucket that holds a 64 KiB packet.
        let slow = Plan::new("p-", [(1_000_000, 0)]).unwrap().setup();
        let stdin: Vec<&str> = slow.iter().filter_map(|c| c.stdin.as_deref()).collect();
        assert_eq!(stdin.len(), 1);
        assert!(stdin[0].contains("htb rate 8364640bit ceil 8364640bit burst 65536 cburst 65536\n"));
        assert!(!slow.iter().any(|c| c.args.contains(&"ifb0".to_string())));
        // Beyond 100 Gbit/s a link is left unshaped.
        let fast = Plan::new("p-", [(MAX_SHAPED_BYTES_PER_S + 1, MAX_SHAPED_BYTES_PER_S)]).unwrap().setup();
        let stdin: Vec<&str> = fast.iter().filter_map(|c| c.stdin.as_deref()).collect();
        assert_eq!(stdin.len(), 1);
        assert!(stdin[0].starts_with(
            "qdisc add dev ifb0 root handle 1: htb default 2\nclass add dev ifb0 parent 1: \
             classid 1:1 htb rate 104558011048bit ceil 104558011048bit burst 26139502"
        ));
    }

    #[test]
    fn stale_namespaces_are_recognised_by_their_pid() {
        assert_eq!(owner_pid("shoal-1234-0-5"), Some(1234));
        assert_eq!(owner_pid("shoal-1234-2-br"), Some(1234));
        assert_eq!(owner_pid("shoal-x-1"), None);
        assert_eq!(owner_pid("other-1234-1"), None);
        assert_eq!(owner_pid("shoal-1234"), None);
    }
}
