//! Every input the `scenario` fuzz target (sim/fuzz) ever flagged, run through the same steps as
//! the target: load, bound, sizing, a des run bounded to 4096 events, its report. A file in
//! `tests/fuzz/` is a finding; the test fails if any of them panics.
//!
//! - `timeout-dragonfly-concurrent-pieces-500.toml` (2026-12-04): a Dragonfly scenario with
//!   `concurrent_pieces = 500` took over 1 s for 4096 events (10 s on the fuzzer's build): the
//!   client's piece fill rescanned every piece already asked for on each new request (500² scans of
//!   the request table per fill). Fixed by a cursor in `Dispatcher::fill`; the same input now runs
//!   107 073 events in 0.29 s where it took 4.9 s (`shoal run … --set limits.max_sim_time_s=0.05`).
//! - `crash-256-trackers-address-overflow.toml` (2026-12-04): 320 trackers; tracker 255's simulated
//!   address overflowed a `u8` (`i as u8 + 1`: a panic with overflow checks, 127.251.0.0 without).
//!   Origins had the same bug from 256 on. Both now number from `i + 1` in 16 bits.

use std::path::Path;

use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::scenario::Scenario;
use shoal_sim::sizing::{self, EngineKind};

fn run_like_the_fuzz_target(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let (text, sets) = input.split_once("\n#--set\n").unwrap_or((input, ""));
    let overrides: Vec<(String, String)> =
        sets.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let Ok(s) = Scenario::from_toml(text, "fuzz.toml", &overrides) else { return };
    assert!(s.lower_bound().t_min_s() > 0.0);
    if sizing::estimate(&s, EngineKind::Des).peak_bytes > 64 << 20 {
        return;
    }
    let mut e = Engine::new(&s, RunOptions { max_events: Some(4096), ..RunOptions::default() }).unwrap();
    e.run();
    let _ = e.report("des", 0.0);
}

#[test]
fn every_fuzz_finding_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        run_like_the_fuzz_target(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 1, "no findings in {}", dir.display());
}

/// The simulated addresses of the 10 000 origins and trackers a scenario may have are distinct and
/// follow `i + 1` (the fuzz finding above: index 255 wrapped).
#[test]
fn simulated_addresses_are_distinct_up_to_the_scenario_limits() {
    use shoal_sim::build::{origin_addr, tracker_addr};
    assert_eq!(tracker_addr(255).to_string(), "127.251.1.0:8000");
    assert_eq!(origin_addr(255).to_string(), "127.250.1.0:9000");
    assert_eq!(tracker_addr(0).to_string(), "127.251.0.1:8000", "unchanged below 255");
    for addr in [origin_addr as fn(usize) -> std::net::SocketAddr, tracker_addr] {
        let all: std::collections::BTreeSet<_> = (0..10_000).map(addr).collect();
        assert_eq!(all.len(), 10_000);
    }
}
