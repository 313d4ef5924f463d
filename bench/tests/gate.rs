//! The regression gate against the committed baselines (`bench/gate.toml`, `bench/baselines/`):
//! an unperturbed run passes, a perturbed protocol parameter that makes p99 worse fails, and
//! baselines are blessed and refused when stale. The `shoal gate` command's exit codes are tested
//! with the binary, in the root package's `tests/cli.rs`.

use std::path::{Path, PathBuf};

use shoal_bench::gate::{self, GateConfig, GateOptions, Verdict};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config() -> GateConfig {
    GateConfig::load(&repo().join("bench/gate.toml")).expect("the committed gate config loads")
}

#[test]
fn unperturbed_runs_pass_the_committed_baselines_exactly() {
    let report = gate::run(&config(), &GateOptions::default(), &mut |_| {}).expect("gate runs");
    assert_eq!(report.scenarios, 3);
    assert!(report.passed(), "{}", report.markdown());
    // Deterministic: not merely within tolerance, identical.
    for r in &report.rows {
        assert_eq!((r.baseline, r.change, r.verdict), (r.now, 0.0, Verdict::Ok), "{r:?}");
    }
    assert!(report.rows.iter().any(|r| r.metric == "host_images.p99"));
}

/// A protocol knob that really slows the swarm: half of Kraken's 10 connections per torrent
/// (measured: p50 +48 %, p99 +21 %). A knob whose effect sits within seed noise (e.g. a pipeline
/// limit of 1, which leaves p99 on the same ~16 s straggler plateau) would not test the gate.
#[test]
fn halving_the_connection_limit_makes_p99_worse_and_fails_the_gate() {
    let options = GateOptions {
        only: vec!["kraken-200".into()],
        extra_sets: vec!["protocol.agent.conn_state.max_open_conn=5".into()],
        ..GateOptions::default()
    };
    let report = gate::run(&config(), &options, &mut |_| {}).expect("gate runs");
    assert!(!report.passed(), "{}", report.markdown());
    let p99 = report.rows.iter().find(|r| r.metric == "host_images.p99").expect("p99 row");
    assert_eq!(p99.verdict, Verdict::Regression, "{p99:?}");
    assert!(p99.now > p99.baseline);
    // The biggest change heads the table.
    assert!(report.rows.windows(2).all(|w| w[0].change.abs() >= w[1].change.abs()));
    let md = report.markdown();
    assert!(md.contains("**FAIL**") && md.contains("| kraken-200 | host_images.p99 |"), "{md}");
}

/// #15: with seeds, a pipeline limit of 1 at 10 ms latency (each piece then waits a round trip) is
/// a significant regression of p50 — where one seed could not tell it from a reshuffled tail.
#[test]
fn with_seeds_a_pipeline_limit_of_one_is_caught_at_wan_latency() {
    let options = GateOptions {
        only: vec!["kraken-200-wan".into()],
        extra_sets: vec!["protocol.agent.dispatch.pipeline_limit=1".into()],
        ..GateOptions::default()
    };
    let report = gate::run(&config(), &options, &mut |_| {}).expect("gate runs");
    assert!(!report.passed(), "{}", report.markdown());
    let p50 = report.rows.iter().find(|r| r.metric == "host_images.p50").expect("p50 row");
    assert_eq!(p50.verdict, Verdict::Regression, "{p50:?}");
    let (p, threshold) = p50.p_value.expect("seeded rows carry a p-value");
    assert!(p < threshold && threshold < 0.05, "{p50:?}");
}

/// #15: a run on other seeds (1..=10 shifted by 10) is not flagged: every change beyond tolerance is
/// within seed noise (Welch's test, Bonferroni over each scenario's metrics).
#[test]
fn other_seeds_are_not_flagged() {
    let options = GateOptions { seed_offset: 10, ..GateOptions::default() };
    let report = gate::run(&config(), &options, &mut |_| {}).expect("gate runs");
    assert!(report.passed(), "{}", report.markdown());
    assert!(
        report.rows.iter().any(|r| r.verdict == Verdict::WithinNoise),
        "some mean moved beyond its tolerance and was judged noise: {}",
        report.markdown()
    );
}

#[test]
fn bless_writes_baselines_that_the_next_run_passes_and_stale_ones_are_refused() {
    let dir = std::env::temp_dir().join(format!("shoal-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let smoke = repo().join("scenarios/smoke-40.toml");
    let write = |set: &str| {
        let text = format!(
            "baselines = \"b\"\n[[scenario]]\nname = \"s\"\npath = {:?}\nset = [{set}]\n",
            smoke.display().to_string()
        );
        std::fs::write(dir.join("gate.toml"), text).unwrap();
        GateConfig::load(&dir.join("gate.toml")).unwrap()
    };
    let c = write("");
    let err = gate::run(&c, &GateOptions::default(), &mut |_| {}).expect_err("no baseline yet");
    assert!(err.to_string().contains("--bless"), "{err}");
    let blessed = gate::run(&c, &GateOptions { bless: true, ..GateOptions::default() }, &mut |_| {}).unwrap();
    assert_eq!(blessed.blessed, vec![dir.join("b/s.json")]);
    assert!(gate::run(&c, &GateOptions::default(), &mut |_| {}).unwrap().passed());
    // The config now pins other settings than the baseline was blessed with: refused, not compared.
    let c = write("\"seed=2\"");
    let err = gate::run(&c, &GateOptions::default(), &mut |_| {}).expect_err("stale baseline");
    assert!(err.to_string().contains("re-bless"), "{err}");
    // Blessed on one seed, now asked for three: refused too.
    let c = write("");
    let text = std::fs::read_to_string(dir.join("gate.toml")).unwrap() + "seeds = 3\n";
    std::fs::write(dir.join("gate.toml"), text).unwrap();
    let c3 = GateConfig::load(&dir.join("gate.toml")).unwrap();
    let err = gate::run(&c3, &GateOptions::default(), &mut |_| {}).expect_err("seed count changed");
    assert!(
        err.to_string().contains("blessed with 1 seed(s)") && err.to_string().contains("re-bless"),
        "{err}"
    );
    drop(c);
    std::fs::remove_dir_all(&dir).unwrap();
}
