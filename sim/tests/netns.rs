//! `--net netns`: the real engine with every node in its own network namespace on tc-shaped links.
//!
//! The plan checks run everywhere. The runs need root and iproute2 and take about two minutes of
//! wall time, so they are ignored by default:
//!
//! ```sh
//! sudo -E cargo test --release -p shoal-sim --test netns -- --ignored --test-threads=1 --nocapture
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shoal_sim::driver::netns::{self, Plan};
use shoal_sim::driver::{self, DriverOptions, Net};
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::output::RunReport;
use shoal_sim::scenario::Scenario;

fn scenario(file: &str, sets: &[&str]) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(file);
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Scenario::load_with_sets(path, &sets).expect("scenario loads")
}

#[test]
fn the_plan_covers_every_node_and_refuses_shared_uplinks() {
    let s = scenario("agree-16.toml", &[]);
    let plan = Plan::for_scenario("shoal-1-0-", &s).expect("a plan");
    // 16 hosts, 1 origin, 1 tracker; the tracker is not shaped.
    assert_eq!(plan.nodes.len(), 18);
    assert_eq!(plan.nodes[16].upload_bytes_per_s, 50_000_000);
    assert_eq!((plan.nodes[17].upload_bytes_per_s, plan.nodes[17].download_bytes_per_s), (0, 0));
    let racks = scenario("racks-2600.toml", &["topology.hosts=80"]);
    let e = Plan::for_scenario("shoal-1-0-", &racks).expect_err("oversubscribed racks are refused");
    assert!(e.contains("uplink"), "{e}");
}

/// This process's namespaces.
fn mine() -> Vec<String> {
    let me = std::process::id();
    netns::namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| netns::owner_pid(n) == Some(me))
        .collect()
}

/// The names of the links in this (the test's own) namespace.
fn root_links() -> Vec<String> {
    let out = std::process::Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().to_string())
        .collect();
    v.sort();
    v
}

fn des(s: &Scenario) -> RunReport {
    let mut e = Engine::new(s, RunOptions::default()).expect("engine builds");
    e.run();
    e.report("des", 0.0)
}

/// A netns run; checks that the namespaces existed during it and nothing else was created.
fn netns_run(s: &Scenario, links: &[String]) -> RunReport {
    let nodes = s.topology.hosts.len() + s.origins.len() + s.trackers;
    let checked = Arc::new(AtomicBool::new(false));
    let c = checked.clone();
    let want_links = links.to_vec();
    let options = DriverOptions {
        net: Net::Netns,
        progress: Some(Box::new(move |t, _, _| {
            if t > 1.0 && !c.swap(true, Ordering::Relaxed) {
                // One namespace per node plus the bridge's, and no link outside them.
                assert_eq!(mine().len(), nodes + 1);
                assert_eq!(root_links(), want_links);
            }
        })),
        ..DriverOptions::default()
    };
    let run = driver::real::run(s.clone(), options).expect("netns run");
    assert!(checked.load(Ordering::Relaxed), "the run ended before its namespaces were checked");
    let r = run.report(0.0);
    assert!(r.summary.replay.ends_with("--engine real --net netns"), "{}", r.summary.replay);
    r
}

fn assert_clean(links: &[String], when: &str) {
    assert_eq!(mine(), Vec::<String>::new(), "namespaces left after {when}");
    assert_eq!(root_links(), links, "links changed after {when}");
}

#[test]
#[ignore = "needs root and iproute2; wall-clock, about two minutes"]
fn netns_runs_finish_agree_with_des_and_leave_nothing_behind() {
    netns::preflight().expect("root and iproute2");
    let links = root_links();
    assert_eq!(mine(), Vec::<String>::new(), "namespaces of this process before the test");

    // A namespace of a process that no longer exists is removed when a run starts.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("true exits");
    let stale = format!("shoal-{dead}-0-0");
    let added = std::process::Command::new("ip").args(["netns", "add", &stale]).status().expect("ip");
    assert!(added.success());

    for hosts in [8, 16] {
        let s = scenario("agree-16.toml", &[&format!("topology.hosts={hosts}")]);
        let d = des(&s);
        let mut runs: Vec<RunReport> = (0..3).map(|_| netns_run(&s, &links)).collect();
        assert_clean(&links, "the runs");
        for r in &runs {
            let sm = &r.summary;
            assert_eq!(sm.failed_downloads + sm.unfinished_downloads, 0, "{hosts} hosts: {sm:?}");
            assert_eq!(sm.host_images.completed, hosts);
        }
        runs.sort_by(|a, b| a.summary.host_images.p50.partial_cmp(&b.summary.host_images.p50).unwrap());
        let (x, y) = (&d.summary.host_images, &runs[1].summary.host_images);
        let rel = |p: Option<f64>, q: Option<f64>| (q.unwrap() - p.unwrap()) / p.unwrap();
        let (p50, p90) = (rel(x.p50, y.p50), rel(x.p90, y.p90));
        eprintln!(
            "{hosts} hosts: des p50 {:.3} s p90 {:.3} s; netns (median of 3 by p50) p50 {:.3} s ({:+.1} %) p90 {:.3} s \
             ({:+.1} %)",
            x.p50.unwrap(),
            x.p90.unwrap(),
            y.p50.unwrap(),
            p50 * 100.0,
            y.p90.unwrap(),
            p90 * 100.0
        );
        assert!(p50.abs() <= 0.15, "{hosts} hosts: netns p50 {:+.1} % from des", p50 * 100.0);
    }
    assert!(!netns::namespaces().unwrap().contains(&stale), "the stale namespace {stale} is still there");

    // A run that panics (here in its progress callback) deletes its namespaces as it unwinds.
    let s = scenario("agree-16.toml", &["topology.hosts=8"]);
    let options = DriverOptions {
        net: Net::Netns,
        progress: Some(Box::new(|t, _, _| assert!(t < 1.0, "a failure mid-run"))),
        ..DriverOptions::default()
    };
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver::real::run(s.clone(), options)));
    assert!(panicked.is_err(), "the run should have panicked");
    assert_clean(&links, "a panic");

    // Stopped as Ctrl-C stops it: the run ends interrupted, and its namespaces are deleted.
    let stop = shoal_sim::StopFlag::default();
    let flag = stop.clone();
    let options = DriverOptions {
        net: Net::Netns,
        stop: Some(stop),
        progress: Some(Box::new(move |t, _, _| {
            if t > 1.0 {
                flag.store(true, Ordering::Relaxed);
            }
        })),
        ..DriverOptions::default()
    };
    let run = driver::real::run(s.clone(), options).expect("an interrupted run still returns");
    assert!(run.interrupted);
    assert_clean(&links, "an interrupted run");

    // A run that fails: it times out with downloads unfinished.
    let mut late = s.clone();
    late.max_sim_time = std::time::Duration::from_millis(1);
    let run = driver::real::run(late, DriverOptions { net: Net::Netns, ..DriverOptions::default() })
        .expect("a timed-out run returns");
    assert!(run.report(0.0).summary.unfinished_downloads > 0);
    assert_clean(&links, "a timed-out run");

    // A set-up that fails half way (node 3's namespace name is taken) deletes what it created,
    // and leaves alone the namespace it did not create.
    let prefix = format!("shoal-{}-test-", std::process::id());
    let plan = Plan::for_scenario(&prefix, &s).expect("a plan");
    let taken = format!("{prefix}3");
    assert!(std::process::Command::new("ip").args(["netns", "add", &taken]).status().unwrap().success());
    let e = netns::Network::from_plan(plan).expect_err("the set-up fails on the taken name");
    assert!(e.contains(&taken) && e.contains("failed"), "{e}");
    assert_eq!(mine(), vec![taken.clone()]);
    assert!(std::process::Command::new("ip").args(["netns", "delete", &taken]).status().unwrap().success());
    assert_clean(&links, "a failed set-up");
}
