//! Checks a [`RawScenario`] and turns it into the [`Scenario`] the engines consume.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use shoal_protocols::Digest;
use shoal_protocols::config::Policy;

use super::Reference;
use super::error::FieldError;
use super::protocol::{self, Role};
use super::ranges::{self, ExtremeValue};
use super::raw::{
    ArrivalKind, FaultVerb, RawArrival, RawFault, RawNodeSet, RawPlacement, RawPullers, RawScenario,
};
use super::{
    Arrival, Blob, Fault, Group, Host, Image, Level, NodeSet, Origin, Place, Protocol, Pull, PullGroup,
    Scenario, Topology, Workload,
};

type R<T> = Result<T, FieldError>;

fn p(segments: &[&str]) -> Vec<String> {
    segments.iter().map(|s| s.to_string()).collect()
}

fn count(v: i64, path: &[&str], what: &str) -> R<usize> {
    if v < 1 {
        return Err(FieldError::new(path, format!("must be at least 1 ({what}), got {v}")));
    }
    usize::try_from(v).map_err(|_| FieldError::new(path, "too large"))
}

fn seconds(v: f64, path: &[&str], allow_zero: bool) -> R<Duration> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) {
        let need = if allow_zero { "a finite number ≥ 0" } else { "a finite number > 0" };
        return Err(FieldError::new(path, format!("must be {need}, got {v}")));
    }
    Duration::try_from_secs_f64(v).map_err(|_| FieldError::new(path, "too large"))
}

fn millis(v: f64, path: &[&str]) -> R<Duration> {
    if !v.is_finite() || !(0.0..1e12).contains(&v) {
        return Err(FieldError::new(path, format!("must be a finite number ≥ 0, got {v}")));
    }
    Ok(Duration::from_nanos((v * 1e6).round() as u64))
}

fn positive_rate(v: u64, path: &[&str]) -> R<u64> {
    if v == 0 {
        return Err(FieldError::new(path, "must be positive"));
    }
    Ok(v)
}

/// A level's uplink and latency fields as written.
struct Uplink {
    uplink: Option<u64>,
    oversubscription: Option<f64>,
    latency_ms: f64,
}

/// One level of the hierarchy: how many children per group, the uplink (given, from
/// oversubscription, or unlimited), the crossing latency. `full_child_capacity` is the downstream
/// capacity of one child (a host's NIC, or a lower group's uplink), used by `oversubscription`.
fn level(
    name: &str,
    children: usize,
    per_group: usize,
    spec: Uplink,
    full_child_capacity: Option<u64>,
    parents_of_children: &mut Vec<Option<usize>>,
) -> R<Level> {
    let Uplink { uplink, oversubscription, latency_ms } = spec;
    let uplink_bytes_per_s = match (uplink, oversubscription) {
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                &["topology", name, "oversubscription"],
                "give uplink_bytes_per_s or oversubscription, not both",
            ));
        }
        (Some(u), None) => Some(positive_rate(u, &["topology", name, "uplink_bytes_per_s"])?),
        (None, Some(r)) => {
            if !r.is_finite() || r <= 0.0 {
                return Err(FieldError::new(
                    &["topology", name, "oversubscription"],
                    format!("must be > 0, got {r}"),
                ));
            }
            match full_child_capacity {
                // Rounded down to whole bytes per second.
                Some(c) => Some(((c as f64 * per_group as f64) / r).floor().max(1.0) as u64),
                None => {
                    return Err(FieldError::new(
                        &["topology", name, "oversubscription"],
                        "the level below has unlimited uplinks, so there is nothing to oversubscribe",
                    ));
                }
            }
        }
        (None, None) => None,
    };
    let n_groups = children.div_ceil(per_group);
    let groups = (0..n_groups)
        .map(|g| Group {
            members: g * per_group..((g + 1) * per_group).min(children),
            uplink_bytes_per_s,
            parent: None,
        })
        .collect();
    parents_of_children.clear();
    parents_of_children.extend((0..children).map(|c| Some(c / per_group)));
    Ok(Level { latency: millis(latency_ms, &["topology", name, "latency_ms"])?, groups })
}

/// Every numeric field of the scenario's own tables against its range (`ranges::SCENARIO`), before
/// anything is allocated from them.
fn check_ranges(raw: &RawScenario, ex: &mut Vec<ExtremeValue>) -> R<()> {
    use ranges::check_scenario as c;
    c(&["limits", "max_sim_time_s"], raw.limits.max_sim_time_s, ex)?;
    let t = &raw.topology;
    c(&["topology", "hosts"], t.hosts, ex)?;
    c(&["topology", "upload_bytes_per_s"], t.upload_bytes_per_s.0, ex)?;
    c(&["topology", "download_bytes_per_s"], t.download_bytes_per_s.0, ex)?;
    c(&["topology", "latency_ms"], t.latency_ms, ex)?;
    c(&["topology", "latency_jitter_ms"], t.latency_jitter_ms, ex)?;
    let levels = [
        (
            "racks",
            t.racks.as_ref().map(|l| {
                (
                    Some(("hosts_per_rack", l.hosts_per_rack)),
                    None,
                    l.uplink_bytes_per_s,
                    l.oversubscription,
                    l.latency_ms,
                )
            }),
        ),
        (
            "pods",
            t.pods.as_ref().map(|l| {
                (
                    Some(("racks_per_pod", l.racks_per_pod)),
                    None,
                    l.uplink_bytes_per_s,
                    l.oversubscription,
                    l.latency_ms,
                )
            }),
        ),
        (
            "zones",
            t.zones.as_ref().map(|l| {
                (
                    l.pods_per_zone.map(|v| ("pods_per_zone", v)),
                    l.count.map(|v| ("count", v)),
                    l.uplink_bytes_per_s,
                    l.oversubscription,
                    l.latency_ms,
                )
            }),
        ),
    ];
    for (name, level) in levels {
        let Some((per, count, uplink, over, latency)) = level else { continue };
        for (field, v) in per.into_iter().chain(count) {
            c(&["topology", name, field], v, ex)?;
        }
        if let Some(u) = uplink {
            c(&["topology", name, "uplink_bytes_per_s"], u.0, ex)?;
        }
        if let Some(o) = over {
            c(&["topology", name, "oversubscription"], o, ex)?;
        }
        c(&["topology", name, "latency_ms"], latency, ex)?;
    }
    let o = &raw.origins;
    c(&["origins", "count"], o.count, ex)?;
    if let Some(u) = o.upload_bytes_per_s {
        c(&["origins", "upload_bytes_per_s"], u.0, ex)?;
    }
    if let Some(d) = o.download_bytes_per_s {
        c(&["origins", "download_bytes_per_s"], d.0, ex)?;
    }
    c(&["trackers", "count"], raw.trackers.count, ex)?;
    for (i, b) in raw.workload.blobs.iter().enumerate() {
        c(&["workload", "blobs", &i.to_string(), "size"], b.size.0, ex)?;
    }
    for (i, pull) in raw.workload.pulls.iter().enumerate() {
        let i = i.to_string();
        c(&["workload", "pulls", &i, "start_s"], pull.start_s, ex)?;
        let a = &pull.arrival;
        if let Some(w) = a.waves {
            c(&["workload", "pulls", &i, "arrival", "waves"], w, ex)?;
        }
        if let Some(v) = a.interval_s {
            c(&["workload", "pulls", &i, "arrival", "interval_s"], v, ex)?;
        }
        if let Some(v) = a.rate_per_s {
            c(&["workload", "pulls", &i, "arrival", "rate_per_s"], v, ex)?;
        }
    }
    for (i, f) in raw.faults.iter().enumerate() {
        c(&["faults", &i.to_string(), "at_s"], f.at_s, ex)?;
    }
    if let Some(r) = &raw.reference {
        for (field, v) in [("p50_s", r.p50_s), ("p99_s", r.p99_s), ("p99_9_s", r.p99_9_s)] {
            if let Some(v) = v {
                c(&["reference", field], v, ex)?;
            }
        }
    }
    Ok(())
}

pub fn resolve(raw: RawScenario, source: &str) -> R<Scenario> {
    if raw.name.trim().is_empty() {
        return Err(FieldError::new(&["name"], "must not be empty"));
    }
    let ex = &mut Vec::new();
    check_ranges(&raw, ex)?;
    let max_sim_time = seconds(raw.limits.max_sim_time_s, &["limits", "max_sim_time_s"], false)?;

    let mut protocol = Protocol {
        policy: raw.protocol.policy,
        agent: protocol::scheduler(raw.protocol.agent, &["protocol", "agent"], Role::Agent, ex)?,
        origin_scheduler: protocol::scheduler(
            raw.protocol.origin_scheduler,
            &["protocol", "origin_scheduler"],
            Role::Origin,
            ex,
        )?,
        tracker: protocol::tracker(raw.protocol.tracker, &["protocol", "tracker"], ex)?,
        origin: protocol::origin(raw.protocol.origin, &["protocol", "origin"], ex)?,
        bittorrent: protocol::bittorrent(raw.protocol.bittorrent, &["protocol", "bittorrent"], ex)?,
        dragonfly: protocol::dragonfly(
            raw.protocol.dragonfly,
            raw.protocol.policy,
            &["protocol", "dragonfly"],
            ex,
        )?,
    };
    if protocol.policy == Policy::BitTorrent {
        // The policy reaches every node through its configuration: choking and piece order in the
        // schedulers of agents and origins (origins are the initial seeds), numwant in the trackers.
        let bt = protocol.bittorrent.clone();
        bt.apply_scheduler(&mut protocol.agent);
        bt.apply_scheduler(&mut protocol.origin_scheduler);
        bt.apply_tracker(&mut protocol.tracker);
    }

    // Topology.
    let t = raw.topology;
    let n_hosts = count(t.hosts, &["topology", "hosts"], "agent hosts")?;
    // What the policy fixes (e.g. origin_only: a handout of origins only); see `Policy::configure`.
    let policy = protocol.policy;
    policy.configure(n_hosts, &mut protocol.agent, &mut protocol.origin_scheduler, &mut protocol.tracker);
    let nic_up = positive_rate(t.upload_bytes_per_s.0, &["topology", "upload_bytes_per_s"])?;
    let nic_down = positive_rate(t.download_bytes_per_s.0, &["topology", "download_bytes_per_s"])?;
    let (up, down) = limited(nic_up, nic_down, &protocol.agent);
    let mut hosts: Vec<Host> = (0..n_hosts)
        .map(|_| Host { place: Place::default(), upload_bytes_per_s: up, download_bytes_per_s: down })
        .collect();
    let mut parents = Vec::new();
    let racks = match t.racks {
        None => None,
        Some(r) => {
            let per = count(r.hosts_per_rack, &["topology", "racks", "hosts_per_rack"], "hosts per rack")?;
            let rack_nic = nic_up.max(nic_down);
            let l = level(
                "racks",
                n_hosts,
                per,
                Uplink {
                    uplink: r.uplink_bytes_per_s.map(|x| x.0),
                    oversubscription: r.oversubscription,
                    latency_ms: r.latency_ms,
                },
                Some(rack_nic),
                &mut parents,
            )?;
            for (h, rack) in hosts.iter_mut().zip(&parents) {
                h.place.rack = *rack;
            }
            Some(l)
        }
    };
    let pods = match (t.pods, &racks) {
        (None, _) => None,
        (Some(_), None) => return Err(FieldError::new(&["topology", "pods"], "pods need [topology.racks]")),
        (Some(pd), Some(racks)) => {
            let per = count(pd.racks_per_pod, &["topology", "pods", "racks_per_pod"], "racks per pod")?;
            let child_cap = racks.groups[0].uplink_bytes_per_s.or_else(|| {
                let hosts_per_rack = racks.groups[0].members.len() as u64;
                Some(nic_up.max(nic_down) * hosts_per_rack)
            });
            let l = level(
                "pods",
                racks.groups.len(),
                per,
                Uplink {
                    uplink: pd.uplink_bytes_per_s.map(|x| x.0),
                    oversubscription: pd.oversubscription,
                    latency_ms: pd.latency_ms,
                },
                child_cap,
                &mut parents,
            )?;
            Some(l)
        }
    };
    let mut racks = racks;
    if let (Some(racks), Some(_)) = (&mut racks, &pods) {
        for (g, parent) in racks.groups.iter_mut().zip(&parents) {
            g.parent = *parent;
        }
    }
    let zones = match (t.zones, &pods) {
        (None, _) => None,
        (Some(_), None) => return Err(FieldError::new(&["topology", "zones"], "zones need [topology.pods]")),
        (Some(z), Some(pods)) => {
            let n_pods = pods.groups.len();
            let per = match (z.pods_per_zone, z.count) {
                (Some(_), Some(_)) => {
                    return Err(FieldError::new(
                        &["topology", "zones", "count"],
                        "give pods_per_zone or count, not both",
                    ));
                }
                (None, None) => {
                    return Err(FieldError::new(&["topology", "zones"], "give pods_per_zone or count"));
                }
                (Some(v), None) => count(v, &["topology", "zones", "pods_per_zone"], "pods per zone")?,
                (None, Some(c)) => {
                    let c = count(c, &["topology", "zones", "count"], "zones")?;
                    let per = n_pods.div_ceil(c);
                    if n_pods.div_ceil(per) != c {
                        return Err(FieldError::new(
                            &["topology", "zones", "count"],
                            format!("{n_pods} pods cannot be split into {c} zones; use pods_per_zone"),
                        ));
                    }
                    per
                }
            };
            let child_cap = pods.groups[0].uplink_bytes_per_s;
            let l = level(
                "zones",
                n_pods,
                per,
                Uplink {
                    uplink: z.uplink_bytes_per_s.map(|x| x.0),
                    oversubscription: z.oversubscription,
                    latency_ms: z.latency_ms,
                },
                child_cap,
                &mut parents,
            )?;
            Some(l)
        }
    };
    let mut pods = pods;
    if let (Some(pods), Some(_)) = (&mut pods, &zones) {
        for (g, parent) in pods.groups.iter_mut().zip(&parents) {
            g.parent = *parent;
        }
    }
    let mut topology = Topology {
        hosts: Vec::new(),
        latency: millis(t.latency_ms, &["topology", "latency_ms"])?,
        latency_jitter: millis(t.latency_jitter_ms, &["topology", "latency_jitter_ms"])?,
        racks,
        pods,
        zones,
    };
    for h in &mut hosts {
        h.place = topology.place_of_rack(h.place.rack);
    }
    topology.hosts = hosts;

    // Origins and trackers.
    let o = raw.origins;
    let n_origins = count(o.count, &["origins", "count"], "without an origin no host can get a first copy")?;
    let o_up = o.upload_bytes_per_s.ok_or_else(|| {
        FieldError::new(&["origins", "upload_bytes_per_s"], "missing (origins' upload capacity)")
    })?;
    let o_up = positive_rate(o_up.0, &["origins", "upload_bytes_per_s"])?;
    let o_down = o
        .download_bytes_per_s
        .map_or(Ok(o_up), |d| positive_rate(d.0, &["origins", "download_bytes_per_s"]))?;
    let (o_up, o_down) = limited(o_up, o_down, &protocol.origin_scheduler);
    let origin_place = match o.placement {
        RawPlacement::Separate => Place::default(),
        RawPlacement::Rack(r) => {
            let n_racks = topology.racks.as_ref().map_or(0, |l| l.groups.len());
            if r < 0 || r as usize >= n_racks {
                return Err(FieldError::new(
                    &["origins", "placement", "rack"],
                    format!("no rack {r}: there are {n_racks} racks (numbered from 0)"),
                ));
            }
            topology.place_of_rack(Some(r as usize))
        }
    };
    let origins = (0..n_origins)
        .map(|_| Origin { place: origin_place, upload_bytes_per_s: o_up, download_bytes_per_s: o_down })
        .collect();
    let trackers = count(raw.trackers.count, &["trackers", "count"], "agents announce to a tracker")?;

    let workload = workload(raw.workload, &topology, raw.seed, &protocol, ex)?;
    let faults = faults(raw.faults, (n_hosts, n_origins, trackers), max_sim_time)?;
    Ok(Scenario {
        extremes: std::mem::take(ex),
        faults,
        name: raw.name,
        description: raw.description,
        source: source.to_string(),
        seed: raw.seed,
        max_sim_time,
        topology,
        origins,
        trackers,
        workload,
        protocol,
        overrides: Vec::new(),
        reference: raw.reference.map(|r| Reference {
            source: r.source,
            p50_s: r.p50_s,
            p99_s: r.p99_s,
            p99_9_s: r.p99_9_s,
        }),
    })
}

/// Checks `[[faults]]` against the node counts (hosts, origins, trackers) and the run's time limit,
/// and sorts them by time.
fn faults(raw: Vec<RawFault>, counts: (usize, usize, usize), limit: Duration) -> R<Vec<Fault>> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, f) in raw.into_iter().enumerate() {
        let i = i.to_string();
        let at = seconds(f.at_s, &["faults", &i, "at_s"], true)?;
        if at >= limit {
            return Err(FieldError::new(
                &["faults", &i, "at_s"],
                format!(
                    "{} s is not before the end of the run (limits.max_sim_time_s = {} s)",
                    f.at_s,
                    limit.as_secs_f64()
                ),
            ));
        }
        let link = !matches!(f.verb, FaultVerb::Crash | FaultVerb::Bounce);
        let verb = format!("{:?}", f.verb).to_lowercase();
        let (nodes, peers) = if link {
            for (name, given) in [
                ("hosts", f.hosts.is_some()),
                ("origins", f.origins.is_some()),
                ("trackers", f.trackers.is_some()),
            ] {
                if given {
                    return Err(FieldError::new(
                        &["faults", &i, name],
                        format!("{verb} applies to links: name the two sides as a = {{ … }} and b = {{ … }}"),
                    ));
                }
            }
            let side = |s: Option<RawNodeSet>, name: &str| -> R<NodeSet> {
                let s = s.ok_or_else(|| {
                    FieldError::new(
                        &["faults", &i, name],
                        format!("missing: {verb} needs two node sets, a = {{ hosts = […] }} and b = {{ … }}"),
                    )
                })?;
                let set = node_set(s.hosts, s.origins, s.trackers, counts, &["faults", &i, name])?;
                if set.is_empty() {
                    return Err(FieldError::new(&["faults", &i, name], "names no node"));
                }
                Ok(set)
            };
            let (a, b) = (side(f.a, "a")?, side(f.b, "b")?);
            let overlap = |x: &[usize], y: &[usize]| x.iter().find(|n| y.contains(n)).copied();
            for (name, x, y) in [
                ("hosts", &a.hosts, &b.hosts),
                ("origins", &a.origins, &b.origins),
                ("trackers", &a.trackers, &b.trackers),
            ] {
                if let Some(n) = overlap(x, y) {
                    return Err(FieldError::new(
                        &["faults", &i, "b", name],
                        format!("{n} is also in a: the two sides must not share a node"),
                    ));
                }
            }
            (a, b)
        } else {
            for (name, given) in [("a", f.a.is_some()), ("b", f.b.is_some())] {
                if given {
                    return Err(FieldError::new(
                        &["faults", &i, name],
                        format!("{verb} applies to nodes: list them in hosts, origins and trackers"),
                    ));
                }
            }
            let set = node_set(
                f.hosts.unwrap_or_default(),
                f.origins.unwrap_or_default(),
                f.trackers.unwrap_or_default(),
                counts,
                &["faults", &i],
            )?;
            if set.is_empty() {
                return Err(FieldError::new(
                    &["faults", &i],
                    format!("{verb} names no node: give hosts, origins or trackers"),
                ));
            }
            (set, NodeSet::default())
        };
        out.push(Fault { at, verb: f.verb, nodes, peers });
    }
    out.sort_by_key(|f| f.at);
    Ok(out)
}

/// Node indices checked against the counts (hosts, origins, trackers), sorted, without repeats.
fn node_set(
    hosts: Vec<i64>,
    origins: Vec<i64>,
    trackers: Vec<i64>,
    (n_hosts, n_origins, n_trackers): (usize, usize, usize),
    path: &[&str],
) -> R<NodeSet> {
    let check = |v: Vec<i64>, name: &str, n: usize| -> R<Vec<usize>> {
        let mut out = BTreeSet::new();
        for (k, x) in v.into_iter().enumerate() {
            if x < 0 || x as u64 >= n as u64 {
                let mut p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                p.push(name.to_string());
                p.push(k.to_string());
                return Err(FieldError::at(
                    p,
                    format!("no {} {x}: there are {n} (numbered from 0)", name.trim_end_matches('s')),
                ));
            }
            out.insert(x as usize);
        }
        Ok(out.into_iter().collect())
    };
    Ok(NodeSet {
        hosts: check(hosts, "hosts", n_hosts)?,
        origins: check(origins, "origins", n_origins)?,
        trackers: check(trackers, "trackers", n_trackers)?,
    })
}

/// A host's usable rates: its NIC, capped by the scheduler's token-bucket limiter when enabled.
fn limited(up: u64, down: u64, s: &shoal_protocols::config::SchedulerConfig) -> (u64, u64) {
    let b = &s.conn.bandwidth;
    if !b.enable {
        return (up, down);
    }
    (up.min((b.egress_bits_per_s / 8).max(1)), down.min((b.ingress_bits_per_s / 8).max(1)))
}

fn workload(
    w: super::raw::RawWorkload,
    topology: &Topology,
    seed: u64,
    protocol: &Protocol,
    extremes: &mut Vec<ExtremeValue>,
) -> R<Workload> {
    let n_hosts = topology.hosts.len();
    let mut blobs: Vec<Blob> = Vec::new();
    let mut blob_ix: BTreeMap<String, usize> = BTreeMap::new();
    for (i, b) in w.blobs.into_iter().enumerate() {
        let path = |f: &str| p(&["workload", "blobs", &i.to_string(), f]);
        if b.name.is_empty() {
            return Err(FieldError::at(path("name"), "must not be empty"));
        }
        if blob_ix.insert(b.name.clone(), i).is_some() {
            return Err(FieldError::at(path("name"), format!("blob {:?} is defined twice", b.name)));
        }
        if b.size.0 == 0 {
            return Err(FieldError::at(path("size"), "must be positive"));
        }
        let piece = protocol.origin.piece_lengths.select(b.size.0);
        let pieces = b.size.0.div_ceil(piece);
        if pieces > ranges::PIECES_MAX {
            return Err(FieldError::at(
                path("size"),
                format!(
                    "{pieces} pieces of {piece} bytes: a blob may have at most {} pieces (raise \
                     protocol.origin.piece_length)",
                    ranges::PIECES_MAX
                ),
            ));
        }
        if pieces > ranges::PIECES_EXTREME {
            extremes.push(ExtremeValue {
                field: path("size").join("."),
                at: None,
                message: format!(
                    "{pieces} pieces of {piece} bytes is legal but extreme (above {}): every agent and \
                     connection keeps a bitfield of them and every piece is a transfer, so the run costs \
                     far more memory and events than its bytes suggest (raise protocol.origin.piece_length)",
                    ranges::PIECES_EXTREME
                ),
            });
        }
        let digest = Digest::of(format!("shoal blob {}", b.name).as_bytes());
        blobs.push(Blob { name: b.name, size: b.size.0, digest });
    }
    let mut images: Vec<Image> = Vec::new();
    let mut image_ix: BTreeMap<String, usize> = BTreeMap::new();
    for (i, im) in w.images.into_iter().enumerate() {
        let path = |f: &str| p(&["workload", "images", &i.to_string(), f]);
        if im.name.is_empty() {
            return Err(FieldError::at(path("name"), "must not be empty"));
        }
        if blob_ix.contains_key(&im.name) {
            return Err(FieldError::at(path("name"), format!("{:?} is also a blob name", im.name)));
        }
        if image_ix.insert(im.name.clone(), i).is_some() {
            return Err(FieldError::at(path("name"), format!("image {:?} is defined twice", im.name)));
        }
        if im.layers.is_empty() {
            return Err(FieldError::at(path("layers"), "an image needs at least one layer"));
        }
        let mut layers = Vec::new();
        for (j, l) in im.layers.iter().enumerate() {
            let lp = p(&["workload", "images", &i.to_string(), "layers", &j.to_string()]);
            let &b =
                blob_ix.get(l).ok_or_else(|| FieldError::at(lp.clone(), format!("unknown blob {l:?}")))?;
            if layers.contains(&b) {
                return Err(FieldError::at(lp, format!("blob {l:?} is listed twice")));
            }
            layers.push(b);
        }
        images.push(Image { name: im.name, layers });
    }
    if w.pulls.is_empty() {
        return Err(FieldError::new(&["workload", "pulls"], "no pulls: nothing would happen"));
    }
    let mut groups = Vec::new();
    let mut pulls = Vec::new();
    for (gi, pull) in w.pulls.into_iter().enumerate() {
        let g = gi.to_string();
        let path = |f: &str| p(&["workload", "pulls", &g, f]);
        let image = match (image_ix.get(&pull.image), blob_ix.get(&pull.image)) {
            (Some(&i), _) => i,
            // A blob pulled alone is an image of one layer, named after the blob.
            (None, Some(&b)) => {
                images.push(Image { name: pull.image.clone(), layers: vec![b] });
                image_ix.insert(pull.image.clone(), images.len() - 1);
                images.len() - 1
            }
            (None, None) => {
                return Err(FieldError::at(path("image"), format!("unknown image or blob {:?}", pull.image)));
            }
        };
        let pullers: Vec<usize> = match pull.pullers {
            RawPullers::All => (0..n_hosts).collect(),
            RawPullers::Count(c) => {
                if c < 1 || c as u64 > n_hosts as u64 {
                    return Err(FieldError::at(
                        path("pullers"),
                        format!("must be \"all\" or between 1 and the {n_hosts} hosts, got {c}"),
                    ));
                }
                // Evenly spaced over the host indices, so a subset spreads across racks.
                let c = c as usize;
                (0..c).map(|k| k * n_hosts / c).collect()
            }
            RawPullers::Group(level_name, g) => {
                let (level, index) = match level_name {
                    "racks" => (&topology.racks, 0),
                    "pods" => (&topology.pods, 1),
                    _ => (&topology.zones, 2),
                };
                let n_groups = level.as_ref().map_or(0, |l| l.groups.len());
                if g < 0 || g as u64 >= n_groups as u64 {
                    return Err(FieldError::at(
                        path("pullers"),
                        format!("no {level_name} {g}: there are {n_groups} (numbered from 0)"),
                    ));
                }
                topology.host_range(index, g as usize).collect()
            }
        };
        let start = seconds(pull.start_s, &["workload", "pulls", &g, "start_s"], true)?;
        let arrival = arrival(&pull.arrival, &g)?;
        let times = arrival_times(&arrival, start, &pullers, seed, gi as u64);
        for (&host, at) in pullers.iter().zip(times) {
            pulls.push(Pull { host, image, at, group: gi });
        }
        groups.push(PullGroup { image, pullers, arrival, start });
    }
    pulls.sort_by_key(|x| (x.at, x.host, x.group));
    Ok(Workload { blobs, images, groups, pulls })
}

fn arrival(a: &RawArrival, g: &str) -> R<Arrival> {
    let path = |f: &str| p(&["workload", "pulls", g, "arrival", f]);
    let only = |present: bool, field: &str, kind: &str| -> R<()> {
        if present {
            return Err(FieldError::at(path(field), format!("{field} is only for kind = \"{kind}\"")));
        }
        Ok(())
    };
    Ok(match a.kind {
        ArrivalKind::AllAtOnce => {
            only(a.waves.is_some(), "waves", "waves")?;
            only(a.interval_s.is_some(), "interval_s", "waves")?;
            only(a.rate_per_s.is_some(), "rate_per_s", "poisson")?;
            Arrival::AllAtOnce
        }
        ArrivalKind::Waves => {
            only(a.rate_per_s.is_some(), "rate_per_s", "poisson")?;
            let w = a.waves.ok_or_else(|| FieldError::at(path("waves"), "missing (number of waves)"))?;
            let waves = u32::try_from(w)
                .ok()
                .filter(|&w| w >= 1)
                .ok_or_else(|| FieldError::at(path("waves"), format!("must be at least 1, got {w}")))?;
            let i = a
                .interval_s
                .ok_or_else(|| FieldError::at(path("interval_s"), "missing (seconds between waves)"))?;
            let interval = seconds(i, &["workload", "pulls", g, "arrival", "interval_s"], true)?;
            Arrival::Waves { waves, interval }
        }
        ArrivalKind::Poisson => {
            only(a.waves.is_some(), "waves", "waves")?;
            only(a.interval_s.is_some(), "interval_s", "waves")?;
            let r = a
                .rate_per_s
                .ok_or_else(|| FieldError::at(path("rate_per_s"), "missing (arrivals per second)"))?;
            if !r.is_finite() || r <= 0.0 {
                return Err(FieldError::at(path("rate_per_s"), format!("must be > 0, got {r}")));
            }
            Arrival::Poisson { rate_per_s: r }
        }
    })
}

/// When each puller (in `pullers` order) starts. Waves deal pullers round-robin (puller k joins
/// wave k mod waves) so every wave spreads across racks. Poisson arrivals are exponential gaps from
/// `start`, handed to the pullers in a seeded random order; the generator is ChaCha8 seeded with the
/// scenario seed on stream 1 + the pull group's index, so adding a group leaves others unchanged.
fn arrival_times(a: &Arrival, start: Duration, pullers: &[usize], seed: u64, group: u64) -> Vec<Duration> {
    match *a {
        Arrival::AllAtOnce => vec![start; pullers.len()],
        Arrival::Waves { waves, interval } => {
            // Saturating: an absurd interval must not panic; max_sim_time ends the run anyway.
            (0..pullers.len())
                .map(|k| start.saturating_add(interval.saturating_mul(k as u32 % waves)))
                .collect()
        }
        Arrival::Poisson { rate_per_s } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(1 + group);
            let mut order: Vec<usize> = (0..pullers.len()).collect();
            order.shuffle(&mut rng);
            let mut times = vec![start; pullers.len()];
            let mut t = 0.0f64;
            for k in order {
                // 1 − u lies in (0, 1], so the logarithm is finite.
                t += -(1.0 - rng.random::<f64>()).ln() / rate_per_s;
                times[k] = start.saturating_add(Duration::from_nanos((t * 1e9).round() as u64));
            }
            times
        }
    }
}

impl Topology {
    /// The place of a node in rack `rack` (or outside every rack).
    pub(crate) fn place_of_rack(&self, rack: Option<usize>) -> Place {
        let pod = rack.and_then(|r| self.racks.as_ref()?.groups[r].parent);
        let zone = pod.and_then(|p| self.pods.as_ref()?.groups[p].parent);
        Place { rack, pod, zone }
    }

    /// Hosts of a pod or zone, as a range of host indices.
    pub(crate) fn host_range(&self, level: usize, group: usize) -> Range<usize> {
        let mut r = match level {
            0 => return self.racks.as_ref().map_or(0..0, |l| l.groups[group].members.clone()),
            1 => self.pods.as_ref().map_or(0..0, |l| l.groups[group].members.clone()),
            _ => self.zones.as_ref().map_or(0..0, |l| l.groups[group].members.clone()),
        };
        for lower in (0..level).rev() {
            let l = [&self.racks, &self.pods][lower].as_ref().expect("levels below exist");
            r = l.groups[r.start].members.start..l.groups[r.end - 1].members.end;
        }
        r
    }
}

/// Distinct blobs each host pulls, in blob order.
pub(crate) fn blobs_per_host(w: &Workload, n_hosts: usize) -> Vec<BTreeSet<usize>> {
    let mut out = vec![BTreeSet::new(); n_hosts];
    for pull in &w.pulls {
        out[pull.host].extend(w.images[pull.image].layers.iter().copied());
    }
    out
}
