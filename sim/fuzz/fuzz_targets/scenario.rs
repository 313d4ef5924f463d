//! Feeds arbitrary bytes to the scenario loader as `shoal run` does — parse, apply overrides,
//! validate, resolve — then sizes the scenario, computes its lower bound, and runs it on the
//! discrete-event engine for a bounded number of events, writing its report in memory. Checks that
//! nothing panics, that every refusal renders as a message, and that a scenario that loads has a
//! positive, finite bound.
//!
//! Input: the scenario text, optionally followed by a line `#--set` and one `key=value` override per
//! line (as `--set` takes them), so overrides are fuzzed too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::scenario::Scenario;
use shoal_sim::sizing::{self, EngineKind};

/// Runs larger than this are what `shoal run` would refuse on a small machine; the fuzzer sizes
/// them (that is checked) but does not build them.
const MAX_PEAK_BYTES: u64 = 64 << 20;
/// Events a run may take: enough to get past start-up, announces and the first pieces.
const MAX_EVENTS: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let (text, sets) = input.split_once("\n#--set\n").unwrap_or((input, ""));
    let overrides: Vec<(String, String)> = sets
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let s = match Scenario::from_toml(text, "fuzz.toml", &overrides) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = s.refuse_extremes().map_err(|e| e.to_string());
    let bound = s.lower_bound().t_min_s();
    assert!(bound.is_finite() && bound > 0.0, "bound {bound}");
    let estimate = sizing::estimate(&s, EngineKind::Des);
    let _ = sizing::estimate(&s, EngineKind::Real);
    if estimate.peak_bytes > MAX_PEAK_BYTES {
        return;
    }
    let options = RunOptions { max_events: Some(MAX_EVENTS), ..RunOptions::default() };
    let Ok(mut engine) = Engine::new(&s, options) else { return };
    engine.run();
    let report = engine.report("des", 0.0);
    assert!(report.summary.sim_time_s >= 0.0);
});
