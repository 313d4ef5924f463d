use std::path::Path;

use super::*;

fn plan(text: &str) -> Result<Plan, ScenarioError> {
    Plan::from_toml(text, Path::new("../scenarios/test-sweep.toml"), false)
}

#[test]
fn axes_make_a_grid_first_axis_slowest() {
    let p = plan(
        "scenario = \"smoke-40.toml\"\nseeds = 2\nsets = [\"topology.hosts=8\"]\n\
         [[axis]]\nkey = \"protocol.policy\"\nvalues = [\"kraken\", \"bittorrent\"]\n\
         [[axis]]\nkey = \"topology.latency_ms\"\nvalues = [0.2, 1]\n",
    )
    .unwrap();
    let labels: Vec<&str> = p.cases.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "protocol.policy=kraken,topology.latency_ms=0.2",
            "protocol.policy=kraken,topology.latency_ms=1",
            "protocol.policy=bittorrent,topology.latency_ms=0.2",
            "protocol.policy=bittorrent,topology.latency_ms=1",
        ]
    );
    assert_eq!(p.runs.len(), 8);
    assert_eq!(p.runs[1].seed, 2);
    assert_eq!(p.runs[1].dir, "runs/protocol.policy=kraken,topology.latency_ms=0.2/2");
    assert_eq!(
        p.runs[1].replay,
        "shoal run ../scenarios/smoke-40.toml --seed 2 --set topology.hosts=8 --set protocol.policy=kraken \
         --set topology.latency_ms=0.2"
    );
    assert_eq!(p.cases[3].axis_values, ["bittorrent", "1"]);
    let shard: Vec<usize> = p.shard(Some(Shard { index: 2, count: 3 }));
    assert_eq!(shard, [1, 4, 7]);
}

#[test]
fn explicit_cases_and_seed_lists() {
    let p = plan(
        "scenario = \"smoke-40.toml\"\nseeds = [5, 9]\n[[case]]\nlabel = \"small\"\nset = [\"topology.hosts=4\"]\n\
         [[case]]\nlabel = \"big\"\nset = [\"topology.hosts=12\"]\n",
    )
    .unwrap();
    assert_eq!(
        p.runs.iter().map(|r| r.dir.as_str()).collect::<Vec<_>>(),
        ["runs/small/5", "runs/small/9", "runs/big/5", "runs/big/9"]
    );
    assert!(p.axes.is_empty());
}

#[test]
fn bad_input_names_line_and_field() {
    let cases = [
        ("scenario = \"smoke-40.toml\"\nseeds = 0\n", "test-sweep.toml:2", "seeds"),
        ("scenario = \"smoke-40.toml\"\nseeds = 2\nbogus = 1\n", "test-sweep.toml:3", "bogus"),
        (
            "scenario = \"smoke-40.toml\"\nseeds = 2\n[[axis]]\nkey = \"topology.hostz\"\nvalues = [1, 2]\n",
            "test-sweep.toml:5",
            "topology.hostz",
        ),
        (
            "scenario = \"smoke-40.toml\"\nseeds = 2\n[[axis]]\nkey = \"topology.hosts\"\nvalues = [4,\n  0]\n",
            "test-sweep.toml:6",
            "topology.hosts",
        ),
        (
            "scenario = \"smoke-40.toml\"\nseeds = 1\n[[case]]\nlabel = \"a\"\n[[case]]\nlabel = \"a\"\n",
            "test-sweep.toml:6",
            "case.1.label",
        ),
        (
            "scenario = \"smoke-40.toml\"\nseeds = 1\n[[case]]\nlabel = \"a/b\"\n",
            "test-sweep.toml:4",
            "label",
        ),
    ];
    for (text, at, field) in cases {
        let e = plan(text).unwrap_err().to_string();
        assert!(e.contains(at) && e.contains(field), "want {at} and {field} in: {e}");
    }
}

#[test]
fn shards_parse_and_refuse_nonsense() {
    assert_eq!("2/8".parse::<Shard>(), Ok(Shard { index: 2, count: 8 }));
    for bad in ["0/0", "3/2", "0/4", "1", "a/b"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
}

#[test]
fn every_shipped_sweep_plans() {
    let mut n = 0;
    for entry in std::fs::read_dir("../scenarios/sweeps").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = Plan::load(&path, false).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.runs.is_empty());
            assert!(p.cases.iter().all(|c| c.scenario.starts_with("../scenarios/")), "{:?}", p.cases);
            n += 1;
        }
    }
    assert!(n >= 2, "found {n} sweep files");
}

#[test]
fn jobs_are_lowered_to_what_fits_in_memory() {
    use super::run::fit_jobs;
    let gib = 1u64 << 30;
    assert_eq!(fit_jobs(&[3 * gib, 3 * gib, 2 * gib, gib], 7 * gib, 4), Some(2));
    assert_eq!(fit_jobs(&[3 * gib, 3 * gib, 2 * gib, gib], 8 * gib, 4), Some(3));
    assert_eq!(fit_jobs(&[gib; 4], 8 * gib, 4), None);
    assert_eq!(fit_jobs(&[9 * gib], 8 * gib, 2), Some(1), "at least one, --force decides the rest");
}
