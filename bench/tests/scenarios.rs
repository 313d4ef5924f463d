//! The scenario benchmarks (`shoal_bench::scenarios`): the shipped folder is discovered, a
//! criterion sample is the metric of a plain run with that seed, the same build gives the same
//! samples, a custom picker installed through the hooks changes the outcome, and a bad file in the
//! folder is refused by name. criterion runs here in benchmark mode into a temporary folder, and
//! its `sample.json` is read back: what `--save-baseline` and `--baseline` compare.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use shoal_bench::criterion::Criterion;
use shoal_bench::scenarios::{BenchOptions, BenchScenario, Metric, PolicyHooks, Suite, discover, measure};
use shoal_protocols::PeerInfo;
use shoal_protocols::peer::picker::{PiecePicker, Selection};
use shoal_protocols::tracker::{HandoutContext, PeerHandout};
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::scenario::Scenario;

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/bench")
}

fn shipped(name: &str) -> BenchScenario {
    discover(bench_dir())
        .expect("the shipped bench scenarios load")
        .into_iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("{name} is shipped"))
}

/// A fresh folder under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shoal-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// smoke-40 at 10 hosts: ten seeds in well under a second.
fn small() -> BenchOptions {
    BenchOptions::default().set("topology.hosts=10")
}

/// Benchmarks `bs` in criterion's benchmark mode, writing into `out`; returns the per-iteration
/// values of `metric`'s samples, in sample order (criterion's `new/sample.json`).
fn samples(bs: &BenchScenario, options: BenchOptions, out: &Path, metric: &str) -> Vec<f64> {
    let out_dir = out.to_path_buf();
    let mut suite =
        Suite::with_criterion(move || Criterion::default().output_directory(&out_dir), false, options);
    suite.bench(bs);
    let path = out.join(&bs.name).join(metric).join("new/sample.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("sample.json is JSON");
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array().expect("an array").iter().map(|x| x.as_f64().expect("a number")).collect()
    };
    let (iters, times) = (nums("iters"), nums("times"));
    assert_eq!(v["sampling_mode"], "Flat");
    iters.iter().zip(&times).map(|(i, t)| t / i).collect()
}

/// Lowest piece index first: every agent wants the same pieces at the same time.
#[derive(Debug)]
struct InOrder;

impl PiecePicker for InOrder {
    fn select(
        &mut self,
        _: &mut ChaCha8Rng,
        sel: &Selection<'_>,
        valid: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<u32> {
        sel.remote.iter_missing_from(sel.own).filter(|&i| valid(i)).take(sel.quota).collect()
    }
}

fn in_order() -> PolicyHooks {
    PolicyHooks { picker: Some(Arc::new(|_| Box::new(InOrder))), ..PolicyHooks::default() }
}

#[test]
fn discovery_finds_the_shipped_files() {
    let found: Vec<String> = discover(bench_dir()).expect("loads").into_iter().map(|b| b.name).collect();
    let shipped = [
        "bittorrent-100",
        "dragonfly-100",
        "kraken-200",
        "kraken-600",
        "origin-only-100",
        "racks-400",
        "smoke-40",
    ];
    assert_eq!(found, shipped);
    let k = self::shipped("kraken-600");
    assert_eq!(k.sample_size(), 10);
    assert_eq!(k.metrics(), Metric::HEADLINE);
    assert_eq!(k.scenario(1, false, &[]).expect("loads").topology.hosts.len(), 600);
    assert!(k.scenario(1, true, &[]).expect("loads").topology.hosts.len() < 600, "smaller in test mode");
}

#[test]
fn a_sample_is_the_metric_of_a_plain_run_with_that_seed() {
    let bs = shipped("smoke-40");
    let out = scratch("plain");
    let p99 = samples(&bs, small(), &out, "image_p99");
    let egress = samples(&bs, small(), &out, "origin_egress");
    assert_eq!(p99.len(), 10);
    for (k, (p99, egress)) in p99.iter().zip(&egress).enumerate() {
        let seed = k as u64 + 1;
        let sets = ["topology.hosts=10".to_string(), format!("seed={seed}")];
        let s = Scenario::load_with_sets(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke-40.toml"),
            &sets,
        )
        .expect("loads");
        let mut e = Engine::new(&s, RunOptions::default()).expect("builds");
        e.run();
        let sm = e.report("des", 0.0).summary;
        let want = sm.host_images.p99.expect("every pull finishes");
        assert_eq!(*p99, want, "seed {seed}: sample and plain run");
        assert_eq!(*egress, sm.origin_egress_bytes as f64, "seed {seed}: sample and plain run");
    }
    assert!(p99.windows(2).any(|w| w[0] != w[1]), "seeds differ: {p99:?}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn same_build_same_numbers() {
    let bs = shipped("smoke-40");
    let (a, b) = (scratch("same-a"), scratch("same-b"));
    for metric in ["image_p50", "blob_p99", "origin_egress"] {
        assert_eq!(samples(&bs, small(), &a, metric), samples(&bs, small(), &b, metric), "{metric}");
    }
    let _ = (std::fs::remove_dir_all(&a), std::fs::remove_dir_all(&b));
}

#[test]
fn a_custom_picker_changes_the_outcome() {
    let bs = shipped("kraken-200");
    let default = BenchOptions::default().set("topology.hosts=50");
    let custom = default.clone().hooks(in_order());
    let p99 = |o: &BenchOptions| {
        let m = measure(&bs, 1, false, o).expect("runs");
        Metric::ImageP99.of(&m.summary).expect("every pull finishes")
    };
    let (d, c) = (p99(&default), p99(&custom));
    assert_ne!(d, c, "the in-order picker ran: default p99 {d} s, in-order {c} s");
    // Deterministic with a hook too.
    assert_eq!(c, p99(&custom));
}

/// Hands out the owning origins only: no agent learns of another.
#[derive(Debug)]
struct OriginsOnly;

impl PeerHandout for OriginsOnly {
    fn order(&mut self, _: &mut ChaCha8Rng, _: &HandoutContext<'_>, peers: &mut Vec<PeerInfo>) {
        peers.retain(|p| p.origin);
    }
}

#[test]
fn a_custom_handout_changes_the_outcome() {
    let bs = shipped("kraken-200");
    let default = BenchOptions::default().set("topology.hosts=20");
    let hooks =
        PolicyHooks { handout: Some(Arc::new(|_config| Box::new(OriginsOnly))), ..PolicyHooks::default() };
    let custom = default.clone().hooks(hooks);
    let egress = |o: &BenchOptions| measure(&bs, 1, false, o).expect("runs").summary.origin_egress_bytes;
    let (d, c) = (egress(&default), egress(&custom));
    // 20 hosts × a 3 GB image, every byte from the origins.
    assert!(c >= 60_000_000_000 && c > d, "origins-only handout: {c} B from the origins, default {d} B");
}

#[test]
fn a_bad_scenario_in_the_folder_is_refused_by_name() {
    let dir = scratch("bad");
    std::fs::copy(bench_dir().join("smoke-40.toml"), dir.join("good.toml")).expect("copy");
    let good = std::fs::read_to_string(dir.join("good.toml")).expect("read");
    std::fs::write(dir.join("typo.toml"), good.replace("hosts = 40", "hsots = 40")).expect("write");
    let e = discover(&dir).expect_err("a typo in the scenario").to_string();
    assert!(e.contains("typo.toml") && e.contains("hsots"), "{e}");

    std::fs::remove_file(dir.join("typo.toml")).expect("rm");
    std::fs::write(dir.join("bench-table.toml"), good.replace("sample_size = 10", "samples = 10"))
        .expect("write");
    let e = discover(&dir).expect_err("an unknown [bench] field").to_string();
    assert!(e.contains("bench-table.toml") && e.contains("[bench]") && e.contains("samples"), "{e}");

    std::fs::write(dir.join("bench-table.toml"), good.replace("sample_size = 10", "sample_size = 3"))
        .expect("write");
    let e = discover(&dir).expect_err("too few seeds").to_string();
    assert!(e.contains("bench-table.toml") && e.contains("sample_size"), "{e}");

    std::fs::write(
        dir.join("bench-table.toml"),
        good.replace("sample_size = 10", "sets = [\"topology.hosts=0\"]"),
    )
    .expect("write");
    let e = discover(&dir).expect_err("a bad override").to_string();
    assert!(e.contains("bench-table.toml") && e.contains("topology.hosts"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_simulator_ignores_the_bench_table() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = |path: PathBuf| {
        let s = Scenario::load_with_sets(path, &["topology.hosts=10".into()]).expect("loads");
        let mut e = Engine::new(&s, RunOptions::default()).expect("builds");
        e.run();
        let sm = e.report("des", 0.0).summary;
        (sm.host_images, sm.blob_downloads, sm.origin_egress_bytes)
    };
    let bench = run(repo.join("scenarios/bench/smoke-40.toml"));
    assert_eq!(format!("{bench:?}"), format!("{:?}", run(repo.join("scenarios/smoke-40.toml"))));
}
