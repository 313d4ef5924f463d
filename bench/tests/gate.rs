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
    assert_eq!(report.scenarios, 2);
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
    assert_eq!(report.rows[0].verdict, Verdict::Regression);
    let md = report.markdown();
    assert!(md.contains("**FAIL**") && md.contains("| kraken-200 | host_images.p99 |"), "{md}");
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
    std::fs::remove_dir_all(&dir).unwrap();
}
