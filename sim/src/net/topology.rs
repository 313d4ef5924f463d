//! Hosts, racks, pods and zones; the path, latency and locality of a host pair.
//!
//! Groups nest: rack ⊂ pod ⊂ zone. Every level is optional, per host: a host may sit in a rack with
//! no pod, or in a zone with no rack. Building a [`Topology`] checks that the nesting is consistent
//! (all hosts of a rack share one pod and one zone, all hosts of a pod share one zone), so "the
//! lowest group two hosts share" is well defined.
//!
//! Latency model: `base_latency` is the one-way host-to-host delay when no group boundary is
//! crossed (NIC, cable, top-of-rack switch). Each group has a `latency`: the one-way delay of its
//! link to the level above. A path crossing a group's boundary pays it once on the way out (the
//! source's group, with its uplink) and once on the way in (the destination's group, with its
//! downlink). So two hosts in different racks of one pod are `base + rack_a.latency +
//! rack_b.latency` apart.

use std::fmt;
use std::time::Duration;

use super::{MAX_PATH_LEN, ResourceId};

/// A level of grouping, from the smallest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Rack,
    Pod,
    Zone,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Rack, Level::Pod, Level::Zone];

    const fn index(self) -> usize {
        match self {
            Level::Rack => 0,
            Level::Pod => 1,
            Level::Zone => 2,
        }
    }
}

/// The smallest group containing both ends of a transfer. The engine counts bytes by locality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Locality {
    /// Source and destination are the same host (loopback: crosses no resource).
    Host,
    Rack,
    Pod,
    Zone,
    /// The two hosts share no group.
    Global,
}

/// One host. Capacities in bytes per second; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSpec {
    pub upload_bytes_per_s: u64,
    pub download_bytes_per_s: u64,
    pub rack: Option<u32>,
    pub pod: Option<u32>,
    pub zone: Option<u32>,
}

/// A rack, pod or zone. Capacities in bytes per second; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupSpec {
    /// Capacity for traffic leaving the group.
    pub uplink_bytes_per_s: u64,
    /// Capacity for traffic entering the group.
    pub downlink_bytes_per_s: u64,
    /// One-way delay of the group's link to the level above (see the module doc).
    pub latency: Duration,
}

/// The description a [`Topology`] is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologySpec {
    /// One-way host-to-host latency inside the smallest group (or between ungrouped hosts).
    pub base_latency: Duration,
    pub hosts: Vec<HostSpec>,
    pub racks: Vec<GroupSpec>,
    pub pods: Vec<GroupSpec>,
    pub zones: Vec<GroupSpec>,
}

impl TopologySpec {
    /// `hosts` identical ungrouped hosts: the pure hose model.
    pub fn flat(hosts: usize, upload_bytes_per_s: u64, download_bytes_per_s: u64, latency: Duration) -> Self {
        let host = HostSpec { upload_bytes_per_s, download_bytes_per_s, ..HostSpec::default() };
        TopologySpec { base_latency: latency, hosts: vec![host; hosts], ..TopologySpec::default() }
    }

    pub fn build(self) -> Result<Topology, TopologyError> {
        Topology::new(self)
    }

    fn groups(&self, level: Level) -> &[GroupSpec] {
        match level {
            Level::Rack => &self.racks,
            Level::Pod => &self.pods,
            Level::Zone => &self.zones,
        }
    }
}

/// Why a [`TopologySpec`] was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologyError {
    /// A host names a group that does not exist.
    UnknownGroup { host: u32, level: Level, group: u32 },
    /// Two hosts of one group disagree on the enclosing group at a higher level.
    InconsistentNesting { host: u32, level: Level, group: u32, outer: Level },
    /// More resources than a `u32` index can hold.
    TooLarge,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::UnknownGroup { host, level, group } => {
                write!(f, "host {host} names {level:?} {group}, which is not defined")
            }
            TopologyError::InconsistentNesting { host, level, group, outer } => write!(
                f,
                "host {host} is in {level:?} {group} but in a different {outer:?} from the group's other hosts"
            ),
            TopologyError::TooLarge => write!(f, "topology has more than 2^32 resources"),
        }
    }
}

impl std::error::Error for TopologyError {}

/// What a resource is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    HostUpload(u32),
    HostDownload(u32),
    Uplink(Level, u32),
    Downlink(Level, u32),
}

/// The resources a flow crosses, in order, with the one-way latency and locality of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    resources: [ResourceId; MAX_PATH_LEN],
    len: u8,
    pub latency: Duration,
    pub locality: Locality,
}

impl Path {
    pub fn resources(&self) -> &[ResourceId] {
        &self.resources[..usize::from(self.len)]
    }

    fn push(&mut self, r: ResourceId) {
        // Invariant: a path has at most 2 host resources and 2 per level, i.e. MAX_PATH_LEN.
        self.resources[usize::from(self.len)] = r;
        self.len += 1;
    }
}

/// A built, validated topology. Resource layout: host `h` has upload `2h` and download `2h + 1`;
/// then for each level (rack, pod, zone) and group `g`, uplink and downlink side by side.
#[derive(Clone, Debug)]
pub struct Topology {
    spec: TopologySpec,
    /// First resource id of each level's groups.
    level_base: [u32; 3],
    resource_count: u32,
}

impl Topology {
    pub fn new(spec: TopologySpec) -> Result<Self, TopologyError> {
        let count = |n: usize| u32::try_from(n).ok().and_then(|n| n.checked_mul(2));
        let mut next = count(spec.hosts.len()).ok_or(TopologyError::TooLarge)?;
        let mut level_base = [0; 3];
        for level in Level::ALL {
            level_base[level.index()] = next;
            let n = count(spec.groups(level).len()).ok_or(TopologyError::TooLarge)?;
            next = next.checked_add(n).ok_or(TopologyError::TooLarge)?;
        }
        // Validate group indices, then nesting: the first host seen in a group fixes the group's
        // enclosing groups; every later host must agree.
        let mut outer_of: [Vec<Option<[Option<u32>; 3]>>; 3] =
            Level::ALL.map(|level| vec![None; spec.groups(level).len()]);
        for (h, host) in spec.hosts.iter().enumerate() {
            let host_id = h as u32; // fits: checked by `count` above
            let membership = [host.rack, host.pod, host.zone];
            for level in Level::ALL {
                let Some(group) = membership[level.index()] else { continue };
                let Some(seen) = outer_of[level.index()].get_mut(group as usize) else {
                    return Err(TopologyError::UnknownGroup { host: host_id, level, group });
                };
                match seen {
                    None => *seen = Some(membership),
                    Some(first) => {
                        for outer in Level::ALL.into_iter().filter(|o| *o > level) {
                            if first[outer.index()] != membership[outer.index()] {
                                return Err(TopologyError::InconsistentNesting {
                                    host: host_id,
                                    level,
                                    group,
                                    outer,
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(Topology { spec, level_base, resource_count: next })
    }

    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    pub fn host_count(&self) -> usize {
        self.spec.hosts.len()
    }

    pub fn resource_count(&self) -> usize {
        self.resource_count as usize
    }

    pub fn host_upload(&self, host: u32) -> ResourceId {
        ResourceId(2 * host)
    }

    pub fn host_download(&self, host: u32) -> ResourceId {
        ResourceId(2 * host + 1)
    }

    /// The uplink of group `group` at `level` (traffic leaving it), e.g. a rack's ToR uplink.
    pub fn uplink(&self, level: Level, group: u32) -> ResourceId {
        ResourceId(self.level_base[level.index()] + 2 * group)
    }

    /// The downlink of group `group` at `level` (traffic entering it).
    pub fn downlink(&self, level: Level, group: u32) -> ResourceId {
        ResourceId(self.level_base[level.index()] + 2 * group + 1)
    }

    pub fn resource_kind(&self, r: ResourceId) -> ResourceKind {
        let mut kind = if r.0.is_multiple_of(2) {
            ResourceKind::HostUpload(r.0 / 2)
        } else {
            ResourceKind::HostDownload(r.0 / 2)
        };
        for level in Level::ALL {
            let base = self.level_base[level.index()];
            if r.0 >= base {
                let group = (r.0 - base) / 2;
                kind = if (r.0 - base).is_multiple_of(2) {
                    ResourceKind::Uplink(level, group)
                } else {
                    ResourceKind::Downlink(level, group)
                };
            }
        }
        kind
    }

    /// Capacity of every resource in bytes per second, indexed by [`ResourceId`]; 0 = unlimited.
    pub fn capacities(&self) -> Vec<u64> {
        let mut caps = Vec::with_capacity(self.resource_count());
        for host in &self.spec.hosts {
            caps.push(host.upload_bytes_per_s);
            caps.push(host.download_bytes_per_s);
        }
        for level in Level::ALL {
            for group in self.spec.groups(level) {
                caps.push(group.uplink_bytes_per_s);
                caps.push(group.downlink_bytes_per_s);
            }
        }
        caps
    }

    fn membership(&self, host: u32) -> [Option<u32>; 3] {
        let h = &self.spec.hosts[host as usize];
        [h.rack, h.pod, h.zone]
    }

    /// The smallest group containing both hosts.
    ///
    /// # Panics
    /// If either host index is out of range.
    pub fn locality(&self, src: u32, dst: u32) -> Locality {
        if src == dst {
            return Locality::Host;
        }
        let (a, b) = (self.membership(src), self.membership(dst));
        match Level::ALL.into_iter().find(|l| a[l.index()].is_some() && a[l.index()] == b[l.index()]) {
            Some(Level::Rack) => Locality::Rack,
            Some(Level::Pod) => Locality::Pod,
            Some(Level::Zone) => Locality::Zone,
            None => Locality::Global,
        }
    }

    /// The resources a flow from `src` to `dst` crosses, in order: src upload, the uplinks of the
    /// source's groups below the smallest shared group (rack, pod, zone), the matching downlinks
    /// of the destination's groups (zone, pod, rack), dst download. A host sending to itself
    /// crosses nothing and has zero latency.
    ///
    /// # Panics
    /// If either host index is out of range.
    pub fn path(&self, src: u32, dst: u32) -> Path {
        let locality = self.locality(src, dst);
        let mut path =
            Path { resources: [ResourceId(0); MAX_PATH_LEN], len: 0, latency: Duration::ZERO, locality };
        if locality == Locality::Host {
            return path;
        }
        // Levels strictly below the shared one are crossed.
        let crossed = match locality {
            Locality::Host | Locality::Rack => 0,
            Locality::Pod => 1,
            Locality::Zone => 2,
            Locality::Global => 3,
        };
        let (a, b) = (self.membership(src), self.membership(dst));
        path.latency = self.spec.base_latency;
        path.push(self.host_upload(src));
        for level in &Level::ALL[..crossed] {
            if let Some(g) = a[level.index()] {
                path.push(self.uplink(*level, g));
                path.latency += self.spec.groups(*level)[g as usize].latency;
            }
        }
        for level in Level::ALL[..crossed].iter().rev() {
            if let Some(g) = b[level.index()] {
                path.push(self.downlink(*level, g));
                path.latency += self.spec.groups(*level)[g as usize].latency;
            }
        }
        path.push(self.host_download(dst));
        path
    }
}
