//! Replays a random flow churn of the main scenario's shape through the network model and prints
//! its speed, then the incremental solver's error against the full one on a smaller instance.
//!
//! Shape: `--hosts` hosts with 300 MB/s up and down, flat (hose) topology, 4 MiB flows; with
//! `--rack-hosts N` the hosts sit in racks of N whose uplink and downlink carry N × 300 MB/s
//! divided by `--oversubscription` (the shape of `scenarios/racks-2600.toml` with 40 and 4). Every host
//! has at most 10 outbound and 10 inbound flows; `--per-host` flows per host on average are kept
//! in flight by starting a new one (random source with a free outbound slot, random destination
//! with a free inbound slot) whenever one ends, until `--flows` flows have completed.
//!
//! ```text
//! cargo run --release -p shoal-sim --example net_churn -- [--hosts 2600] [--flows 2000000]
//!     [--per-host 9.5] [--tolerance 1e-3] [--seed 1] [--check-hosts 300] [--check-flows 200000]
//!     [--rack-hosts 0] [--oversubscription 4]
//!     [--check-every 97] [--fail-above REL]
//! ```
//!
//! The first part times the incremental solver at full scale (CPU time of the thread, so other
//! jobs on the machine inflate it less); the second compares it with the full solver every
//! `--check-every` events on `--check-hosts` hosts; the last times both solvers there.
//!
//! Debugging aids for the comparison: `--fail-above REL` stops at the first rate error above REL
//! and prints the flows without a bottleneck; `NET_CHURN_CHECK_FROM=<event>` checks every event
//! after that one; `NET_CHURN_VALIDATE=<rel>` also checks that every flow has a bottleneck;
//! `NET_CHURN_WATCH=<r,r,…>` prints the rates on those resources at each check.

use std::time::Instant as WallClock;

use shoal_protocols::Instant;
use shoal_sim::net::{GroupSpec, Network, Solver, Topology, TopologySpec};

const SLOTS_PER_HOST: u32 = 10;
const FLOW_BYTES: u64 = 4 << 20;
const HOST_BYTES_PER_S: u64 = 300_000_000;

/// The churn's seeded generator (ChaCha8, as the simulator's own).
struct Rng(rand_chacha::ChaCha8Rng);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        rand::Rng::random_range(&mut self.0, 0..n)
    }
}

struct Args {
    hosts: u32,
    flows: u64,
    per_host: f64,
    tolerance: f64,
    seed: u64,
    check_hosts: u32,
    check_flows: u64,
    check_every: u64,
    fail_above: f64,
    rack_hosts: u32,
    oversubscription: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        hosts: 2600,
        flows: 2_000_000,
        per_host: 9.5,
        tolerance: Solver::DEFAULT_TOLERANCE,
        seed: 1,
        check_hosts: 300,
        check_flows: 200_000,
        check_every: 97,
        fail_above: f64::INFINITY,
        rack_hosts: 0,
        oversubscription: 4.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--hosts" => a.hosts = value.parse().map_err(|e| bad(&e))?,
            "--flows" => a.flows = value.parse().map_err(|e| bad(&e))?,
            "--per-host" => a.per_host = value.parse().map_err(|e| bad(&e))?,
            "--tolerance" => a.tolerance = value.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = value.parse().map_err(|e| bad(&e))?,
            "--check-hosts" => a.check_hosts = value.parse().map_err(|e| bad(&e))?,
            "--check-flows" => a.check_flows = value.parse().map_err(|e| bad(&e))?,
            "--check-every" => a.check_every = value.parse().map_err(|e| bad(&e))?,
            "--fail-above" => a.fail_above = value.parse().map_err(|e| bad(&e))?,
            "--rack-hosts" => a.rack_hosts = value.parse().map_err(|e| bad(&e))?,
            "--oversubscription" => a.oversubscription = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.per_host <= 0.0 || a.per_host >= f64::from(SLOTS_PER_HOST) || a.hosts < 2 {
        return Err(format!("need --hosts >= 2 and 0 < --per-host < {SLOTS_PER_HOST}"));
    }
    if a.oversubscription.is_nan() || a.oversubscription <= 0.0 {
        return Err("need --oversubscription > 0".into());
    }
    Ok(a)
}

/// The churn driver: free outbound and inbound slots, one entry per free slot.
struct Churn {
    topo: Topology,
    free_out: Vec<u32>,
    free_in: Vec<u32>,
    rng: Rng,
    events: u64,
    completed: u64,
}

impl Churn {
    fn new(hosts: u32, seed: u64, rack_hosts: u32, oversubscription: f64) -> Self {
        let mut spec =
            TopologySpec::flat(hosts as usize, HOST_BYTES_PER_S, HOST_BYTES_PER_S, Default::default());
        if rack_hosts > 0 {
            let link = (f64::from(rack_hosts) * HOST_BYTES_PER_S as f64 / oversubscription) as u64;
            spec.racks = vec![
                GroupSpec {
                    uplink_bytes_per_s: link,
                    downlink_bytes_per_s: link,
                    ..GroupSpec::default()
                };
                hosts.div_ceil(rack_hosts) as usize
            ];
            for (h, host) in spec.hosts.iter_mut().enumerate() {
                host.rack = Some(h as u32 / rack_hosts);
            }
        }
        let topo = spec.build().expect("racks of consecutive hosts are a valid topology");
        let slots: Vec<u32> =
            (0..hosts).flat_map(|h| std::iter::repeat_n(h, SLOTS_PER_HOST as usize)).collect();
        Churn { topo, free_out: slots.clone(), free_in: slots, rng: Rng::new(seed), events: 0, completed: 0 }
    }

    /// Starts one flow between random free slots (source ≠ destination).
    fn start_one(&mut self, net: &mut Network, now: Instant) {
        let src = self.free_out.swap_remove(self.rng.below(self.free_out.len()));
        let mut pick = self.rng.below(self.free_in.len());
        // Hosts have many free inbound slots between them; a few retries find another host.
        for _ in 0..16 {
            if self.free_in[pick] != src {
                break;
            }
            pick = self.rng.below(self.free_in.len());
        }
        if self.free_in[pick] == src {
            self.free_out.push(src);
            return;
        }
        let dst = self.free_in.swap_remove(pick);
        let token = (u64::from(src) << 32) | u64::from(dst);
        net.start_flow(now, self.topo.path(src, dst).resources(), FLOW_BYTES, token);
        self.events += 1;
    }

    fn fill(&mut self, net: &mut Network, target: usize, now: Instant) {
        while net.active_flows() < target {
            self.start_one(net, now);
        }
    }

    /// Runs until `flows` completions, calling `check` after every event batch.
    fn run(
        &mut self,
        net: &mut Network,
        target: usize,
        flows: u64,
        mut check: impl FnMut(&mut Network, u64),
    ) {
        if net.active_flows() == 0 {
            self.fill(net, target, Instant::ZERO);
        }
        let mut ended = 0usize;
        while self.completed < flows {
            let Some(now) = net.next_completion() else { break };
            // Pop everything due now before starting replacements (the model's contract).
            while let Some(done) = net.pop_completed(now) {
                self.free_out.push((done.token >> 32) as u32);
                self.free_in.push(done.token as u32);
                self.events += 1;
                self.completed += 1;
                ended += 1;
            }
            for _ in 0..ended {
                self.start_one(net, now);
            }
            ended = 0;
            check(net, self.events);
        }
    }
}

/// CPU time of this thread in nanoseconds (Linux `schedstat`), so a loaded machine inflates the
/// numbers less than wall time does; falls back to 0 (then use the wall-clock figures).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn speed(args: &Args, hosts: u32, flows: u64, solver: Solver) {
    let target = (f64::from(hosts) * args.per_host) as usize;
    let mut churn = Churn::new(hosts, args.seed, args.rack_hosts, args.oversubscription);
    let mut net = Network::new(&churn.topo.capacities(), solver);
    // Work per batch of simultaneous events (usually one end and one start), to see the tail.
    let mut per_batch = Vec::new();
    let (wall0, cpu0) = (WallClock::now(), cpu_ns());
    churn.fill(&mut net, target, Instant::ZERO);
    let (fill_wall, fill_cpu) = (wall0.elapsed().as_secs_f64(), (cpu_ns() - cpu0) as f64 * 1e-9);
    let fill_events = churn.events;
    let s0 = net.stats();
    let mut last = s0.flows_resolved;
    let (wall, cpu0) = (WallClock::now(), cpu_ns());
    // The second half of the run, once the synchronised start has spread out: (cpu ns, events).
    let mut half = None;
    churn.run(&mut net, target, flows, |net, events| {
        if half.is_none() && events >= fill_events + flows {
            half = Some((cpu_ns(), events));
        }
        let now = net.stats().flows_resolved;
        per_batch.push(now - last);
        last = now;
    });
    let secs = wall.elapsed().as_secs_f64();
    let cpu = (cpu_ns() - cpu0) as f64 * 1e-9;
    let events = churn.events - fill_events;
    let (half_cpu, half_events) = half.unwrap_or((cpu0, fill_events));
    let steady_us = (cpu_ns() - half_cpu) as f64 * 1e-3 / (churn.events - half_events).max(1) as f64;
    per_batch.sort_unstable();
    let q = |p: f64| per_batch.get(((per_batch.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(0);
    let total: u64 = per_batch.iter().sum();
    let top1: u64 = per_batch[per_batch.len() - per_batch.len() / 100..].iter().sum();
    let stats = net.stats();
    let sim = net.now();
    println!(
        "{solver:?}: hosts={hosts} concurrent={target} flows_completed={} sim_time={sim}",
        churn.completed
    );
    println!(
        "  initial burst: {fill_events} starts at t=0 in {fill_wall:.2}s wall, {fill_cpu:.2}s cpu ({:.2} us/start)",
        fill_cpu * 1e6 / fill_events.max(1) as f64
    );
    println!(
        "  churn: events={events} wall={secs:.2}s cpu={cpu:.2}s events/s(cpu)={:.0} us/event(cpu)={:.3} us/event(wall)={:.3}",
        events as f64 / cpu,
        cpu * 1e6 / events as f64,
        secs * 1e6 / events as f64,
    );
    println!("  second half of the churn: us/event(cpu)={steady_us:.3}");
    println!(
        "  per solve: flows_resolved={:.1} rate_changes={:.1} heap_pushes={:.1} scans={:.1} refills={:.4}",
        (stats.flows_resolved - s0.flows_resolved) as f64 / (stats.solves - s0.solves) as f64,
        (stats.rate_changes - s0.rate_changes) as f64 / (stats.solves - s0.solves) as f64,
        (stats.heap_pushes - s0.heap_pushes) as f64 / (stats.solves - s0.solves) as f64,
        (stats.scans - s0.scans) as f64 / (stats.solves - s0.solves) as f64,
        (stats.refills - s0.refills) as f64 / (stats.solves - s0.solves) as f64,
    );
    println!(
        "  flows re-solved per batch: p50={} p90={} p99={} max={}; the top 1% of batches do {:.0}% of the work",
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0),
        100.0 * top1 as f64 / total.max(1) as f64
    );
    let moved = net.bytes_moved(sim);
    println!(
        "  bytes_moved={:.3e} mean throughput={:.1}% of aggregate upload",
        moved,
        100.0 * moved / (sim.as_secs_f64() * f64::from(hosts) * HOST_BYTES_PER_S as f64)
    );
}

fn accuracy(args: &Args) {
    let hosts = args.check_hosts;
    let target = (f64::from(hosts) * args.per_host) as usize;
    let mut churn = Churn::new(hosts, args.seed, args.rack_hosts, args.oversubscription);
    let solver = Solver::Incremental { tolerance: args.tolerance };
    let mut net = Network::new(&churn.topo.capacities(), solver);
    let mut errors = Vec::new();
    // Debugging aid: with --fail-above, `NET_CHURN_CHECK_FROM=<event>` checks every event after it.
    let check_from: u64 =
        std::env::var("NET_CHURN_CHECK_FROM").ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    let watch: Vec<u32> = std::env::var("NET_CHURN_WATCH")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let validate: Option<f64> = std::env::var("NET_CHURN_VALIDATE").ok().and_then(|v| v.parse().ok());
    let mut next_check = args.check_every;
    churn.run(&mut net, target, args.check_flows, |net, events| {
        if events < next_check && events < check_from {
            return;
        }
        next_check = events + args.check_every;
        for r in &watch {
            let r = shoal_sim::net::ResourceId(*r);
            let mut rates = net.rates_on(r).to_vec();
            rates.sort_by(f64::total_cmp);
            eprintln!("event {events} watch {r:?} load {} rates {rates:?}", net.load(r));
        }
        if let Some(rel) = validate {
            let bad = net.unbottlenecked_flows(rel);
            if !bad.is_empty() {
                eprintln!("event {events}: {} flows without a bottleneck at {rel:e}", bad.len());
                for bad in bad {
                    eprintln!("  no bottleneck: {bad:?} rate {:?}", net.rate(bad));
                    for r in net.flow_path(bad).unwrap_or_default() {
                        let mut rates = net.rates_on(r).to_vec();
                        rates.sort_by(f64::total_cmp);
                        eprintln!("    {r:?} cap {:?} load {} rates {rates:?}", net.capacity(r), net.load(r));
                    }
                }
                std::process::exit(1);
            }
        }
        for (id, want) in net.reference_rates() {
            let got = net.rate(id).unwrap_or(0.0);
            let err = (got - want).abs() / want;
            if err > args.fail_above {
                eprintln!("event {events}: flow {id:?} rate {got} max-min {want} (error {err:e})");
                for bad in net.unbottlenecked_flows(1e-6) {
                    eprintln!("  no bottleneck: {bad:?} rate {:?}", net.rate(bad));
                    for r in net.flow_path(bad).unwrap_or_default() {
                        let mut rates = net.rates_on(r).to_vec();
                        rates.sort_by(f64::total_cmp);
                        eprintln!("    {r:?} cap {:?} load {} rates {rates:?}", net.capacity(r), net.load(r));
                    }
                }
                std::process::exit(1);
            }
            errors.push(err);
        }
    });
    errors.sort_by(f64::total_cmp);
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    println!(
        "accuracy {solver:?} vs Full: hosts={hosts} flows_completed={} samples={} (every {} events)",
        churn.completed,
        errors.len(),
        args.check_every
    );
    println!(
        "  relative rate error: max={:.3e} p99.9={:.3e} p99={:.3e} p50={:.3e} mean={:.3e}",
        errors.last().copied().unwrap_or(0.0),
        percentile(&errors, 0.999),
        percentile(&errors, 0.99),
        percentile(&errors, 0.5),
        mean
    );
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("net_churn: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "seed={} per_host={} flow_bytes={FLOW_BYTES} host_bytes_per_s={HOST_BYTES_PER_S} rack_hosts={} oversubscription={}",
        args.seed, args.per_host, args.rack_hosts, args.oversubscription
    );
    speed(&args, args.hosts, args.flows, Solver::Incremental { tolerance: args.tolerance });
    if args.check_flows > 0 {
        accuracy(&args);
        // The full solver's cost on the small instance, for scale.
        speed(&args, args.check_hosts, args.check_flows / 10, Solver::Full);
        speed(
            &args,
            args.check_hosts,
            args.check_flows / 10,
            Solver::Incremental { tolerance: args.tolerance },
        );
    }
}
