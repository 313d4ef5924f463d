//! The physical lower bound on distribution time (DESIGN.md §7, reference/simulation.md §3).
//!
//! A fluid-model bound: no schedule of any protocol can finish every pull sooner. With F_i the
//! distinct bytes host i pulls (the union of its images' blobs), D the distinct bytes pulled by
//! anyone, u_s the origins' total upload, and sums over the hosts that pull something:
//!
//! - origin upload: D / u_s — every byte leaves the origins at least once;
//! - host download: max_i F_i / d_i — each host receives its own bytes (Kumar–Ross's F / d_min);
//! - aggregate upload: Σ F_i / (u_s + Σ u_i) — every received byte was uploaded by someone. Hosts
//!   that pull nothing are left out: in the protocols modelled they never hold data.
//! - for each rack, pod or zone S with a finite uplink C_in and no origin inside (the cut bound):
//!   D_S / C_in, at least one copy of each byte S needs crosses the uplink; and
//!   Σ_{i∈S} F_i / (C_in + Σ_{i∈S} u_i), every byte S receives crosses the uplink or was uploaded
//!   inside S. Only the largest of each, over the groups of a level, is listed.
//!
//! With every host pulling the same image these are exactly Kumar–Ross's terms and the rack cut
//! bound. All pulls are taken to start together; with staggered arrivals the host-download term
//! still bounds each host's own time, the others bound the makespan from the first arrival. Pieces,
//! latency and protocol overhead are not included (the bound is for efficiency = bound / achieved).
//!
//! Units: all quantities are exact bytes and bytes per second from the resolved scenario; decimal
//! versus binary units only exist in the input strings. Seconds are f64.

use std::fmt;

use super::Scenario;
use super::resolve::blobs_per_host;

/// One named term of the bound.
#[derive(Clone, Debug, PartialEq)]
pub struct BoundTerm {
    /// What limits, e.g. `host download` or `rack cut (rack 3, 40 hosts)`.
    pub name: String,
    pub formula: &'static str,
    pub seconds: f64,
}

/// The lower bound and its terms; `t_min_s()` is the largest term.
#[derive(Clone, Debug, PartialEq)]
pub struct LowerBound {
    pub scenario: String,
    /// Hosts that pull at least one blob.
    pub pulling_hosts: usize,
    /// max_i F_i.
    pub max_bytes_per_host: u64,
    /// Σ_i F_i.
    pub total_bytes: u64,
    /// The flat terms first (origin upload, host download, aggregate upload), then cut terms.
    pub terms: Vec<BoundTerm>,
    /// Index of the binding (largest) term; the first one on ties.
    pub binding: usize,
}

impl LowerBound {
    /// T_min in seconds.
    pub fn t_min_s(&self) -> f64 {
        self.terms[self.binding].seconds
    }

    pub fn binding_term(&self) -> &BoundTerm {
        &self.terms[self.binding]
    }

    /// The term with this name, if present.
    pub fn term(&self, name: &str) -> Option<&BoundTerm> {
        self.terms.iter().find(|t| t.name == name)
    }

    /// bound / achieved, in (0, 1] for any valid run.
    pub fn efficiency(&self, achieved_s: f64) -> f64 {
        self.t_min_s() / achieved_s
    }
}

pub(super) fn lower_bound(s: &Scenario) -> LowerBound {
    let hosts = &s.topology.hosts;
    let per_host_blobs = blobs_per_host(&s.workload, hosts.len());
    let size = |b: &usize| s.workload.blobs[*b].size;
    let f: Vec<u64> = per_host_blobs.iter().map(|set| set.iter().map(size).sum()).collect();
    let pulling: Vec<usize> = (0..hosts.len()).filter(|&i| f[i] > 0).collect();
    let distinct: std::collections::BTreeSet<usize> = per_host_blobs.iter().flatten().copied().collect();
    let d_all: u64 = distinct.iter().map(size).sum();
    let u_s: u64 = s.origins.iter().map(|o| o.upload_bytes_per_s).sum();
    let total: u64 = f.iter().sum();
    let u_hosts: u64 = pulling.iter().map(|&i| hosts[i].upload_bytes_per_s).sum();

    let mut terms = vec![
        BoundTerm { name: "origin upload".into(), formula: "D / u_s", seconds: d_all as f64 / u_s as f64 },
        BoundTerm {
            name: "host download".into(),
            formula: "max F_i / d_i",
            seconds: pulling
                .iter()
                .map(|&i| f[i] as f64 / hosts[i].download_bytes_per_s as f64)
                .fold(0.0, f64::max),
        },
        BoundTerm {
            name: "aggregate upload".into(),
            formula: "ΣF_i / (u_s + Σu_i)",
            seconds: total as f64 / (u_s as f64 + u_hosts as f64),
        },
    ];

    let levels = [("rack", &s.topology.racks), ("pod", &s.topology.pods), ("zone", &s.topology.zones)];
    for (li, (what, level)) in levels.iter().enumerate() {
        let Some(level) = level else { continue };
        let mut copy: Option<BoundTerm> = None;
        let mut cut: Option<BoundTerm> = None;
        for (g, group) in level.groups.iter().enumerate() {
            let Some(c_in) = group.uplink_bytes_per_s else { continue };
            let members = s.topology.host_range(li, g);
            let origin_inside =
                s.origins.iter().any(|o| [o.place.rack, o.place.pod, o.place.zone][li] == Some(g));
            if origin_inside {
                continue;
            }
            let in_s: Vec<usize> = members.filter(|&i| f[i] > 0).collect();
            if in_s.is_empty() {
                continue;
            }
            let needed: std::collections::BTreeSet<usize> =
                in_s.iter().flat_map(|&i| per_host_blobs[i].iter().copied()).collect();
            let d_s: u64 = needed.iter().map(size).sum();
            let b_s: u64 = in_s.iter().map(|&i| f[i]).sum();
            let u_in: u64 = in_s.iter().map(|&i| hosts[i].upload_bytes_per_s).sum();
            let label = format!("{what} {g}, {} hosts", in_s.len());
            let one = BoundTerm {
                name: format!("{what} ingress ({label})"),
                formula: "D_S / C_in",
                seconds: d_s as f64 / c_in as f64,
            };
            let all = BoundTerm {
                name: format!("{what} cut ({label})"),
                formula: "ΣF_S / (C_in + Σu_S)",
                seconds: b_s as f64 / (c_in as f64 + u_in as f64),
            };
            if copy.as_ref().is_none_or(|t| one.seconds > t.seconds) {
                copy = Some(one);
            }
            if cut.as_ref().is_none_or(|t| all.seconds > t.seconds) {
                cut = Some(all);
            }
        }
        terms.extend(copy);
        terms.extend(cut);
    }

    let mut binding = 0;
    for (i, t) in terms.iter().enumerate() {
        if t.seconds > terms[binding].seconds {
            binding = i;
        }
    }
    LowerBound {
        scenario: s.name.clone(),
        pulling_hosts: pulling.len(),
        max_bytes_per_host: f.iter().copied().max().unwrap_or(0),
        total_bytes: total,
        terms,
        binding,
    }
}

impl fmt::Display for LowerBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lower bound for {}: {} pulling hosts, up to {} B per host, {} B in all",
            self.scenario, self.pulling_hosts, self.max_bytes_per_host, self.total_bytes
        )?;
        let name_w = self.terms.iter().map(|t| t.name.chars().count()).max().unwrap_or(0).max(5);
        let formula_w = self.terms.iter().map(|t| t.formula.chars().count()).max().unwrap_or(0);
        writeln!(f, "  {:name_w$}  {:formula_w$}  {:>10}", "term", "formula", "seconds")?;
        for (i, t) in self.terms.iter().enumerate() {
            let mark = if i == self.binding { "  <- binds" } else { "" };
            writeln!(f, "  {:name_w$}  {:formula_w$}  {:>10.3}{mark}", t.name, t.formula, t.seconds)?;
        }
        writeln!(f, "  {:name_w$}  {:formula_w$}  {:>10.3}", "T_min", "", self.t_min_s())?;
        write!(
            f,
            "units: exact bytes and bytes/s (decimal or binary only in the input); fluid model: pieces, \
             latency and protocol overhead not included"
        )
    }
}
