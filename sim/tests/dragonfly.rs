//! The Dragonfly policy through the discrete-event engine: completion, the lower bound,
//! determinism, the compare scenarios, and scenario errors.

use std::path::{Path, PathBuf};

use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::output::RunReport;
use shoal_sim::scenario::Scenario;

fn load(file: &str, sets: &[&str]) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(file);
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Scenario::load_with_sets(path, &sets).expect("scenario loads")
}

fn run_to(s: &Scenario, dir: &Path) -> RunReport {
    let mut e = Engine::new(s, RunOptions::default()).expect("engine builds");
    e.run();
    let report = e.report("des", 0.0);
    e.write_outputs(dir, &report).expect("outputs written");
    report
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shoal-test-{}-df-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn check_complete(s: &Scenario, r: &RunReport, what: &str) {
    let sm = &r.summary;
    assert_eq!(sm.policy, "dragonfly", "{what}");
    assert_eq!(sm.failed_downloads + sm.unfinished_downloads, 0, "{what}");
    assert_eq!(sm.host_images.completed, s.topology.hosts.len(), "{what}");
    let t_min = s.lower_bound().t_min_s();
    assert!(sm.host_images.max.unwrap() >= t_min * 0.999, "{what}: faster than the lower bound");
}

#[test]
fn smoke_swarm_completes_deterministically_under_both_evaluators() {
    for evaluator in ["base", "load_aware"] {
        let set = format!("protocol.dragonfly.evaluator={evaluator}");
        let s = load("smoke-40.toml", &["protocol.policy=dragonfly", &set]);
        let (a, b) = (tmp(&format!("{evaluator}-a")), tmp(&format!("{evaluator}-b")));
        let r = run_to(&s, &a);
        check_complete(&s, &r, evaluator);
        run_to(&s, &b);
        for f in ["downloads.csv", "timeseries.csv", "summary.json"] {
            let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
            assert!(x == y, "{evaluator}: {f} differs between two runs of the same seed");
        }
    }
}

/// The comparison scenarios load at full size and run scaled down (20 hosts, 64 MB layers).
#[test]
fn compare_scenarios_load_and_run_scaled_down() {
    for file in ["compare/flat-dragonfly.toml", "compare/racks-dragonfly.toml"] {
        let full = load(file, &[]);
        assert_eq!(full.topology.hosts.len(), 2600, "{file}");
        assert_eq!(full.protocol.dragonfly, Default::default(), "{file}: the defaults, written out");
        let sets = ["topology.hosts=20", "workload.blobs.0.size=64MB", "workload.blobs.1.size=64MB"];
        let s = load(file, &sets);
        let r = run_to(&s, &tmp("compare"));
        check_complete(&s, &r, file);
    }
}

#[test]
fn dragonfly_table_errors_name_the_field() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke-40.toml");
    let base = std::fs::read_to_string(path).unwrap();
    let err = |extra: &str| {
        Scenario::from_toml(&format!("{base}\n{extra}"), "x.toml", &[]).unwrap_err().to_string()
    };
    let e = err("[protocol.dragonfly]\nconcurrent_pieces = 4\n");
    assert!(e.contains("protocol.dragonfly") && e.contains("policy = \"dragonfly\""), "{e}");
    let e = err("[protocol]\npolicy = \"dragonfly\"\n[protocol.dragonfly]\nconcurent_pieces = 4\n");
    assert!(e.contains("protocol.dragonfly.concurent_pieces") && e.contains("unknown field"), "{e}");
    let e = err("[protocol]\npolicy = \"dragonfly\"\n[protocol.dragonfly]\ncandidate_parent_limit = 0\n");
    assert!(e.contains("protocol.dragonfly.candidate_parent_limit: 0 is out of range"), "{e}");
    let e = err("[protocol]\npolicy = \"dragonfly\"\n[protocol.dragonfly]\nevaluator = \"fast\"\n");
    assert!(e.contains("protocol.dragonfly.evaluator"), "{e}");
}
