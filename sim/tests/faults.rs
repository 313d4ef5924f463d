//! Timed `[[faults]]` on the three engines — crashes, restarts, partitions and held links on
//! turmoil, on the discrete-event engine and on real sockets — with every affected download
//! reported, and outputs byte-identical for a seed on the two deterministic engines. Real runs are
//! on the wall clock: their tests assert outcomes (which downloads fail, with which error, and that
//! the rest finish), not bytes, and each takes a few seconds.

use std::path::{Path, PathBuf};

use shoal_sim::driver::{self, DriverOptions};
use shoal_sim::engine::{Engine, RunOptions};
use shoal_sim::output::RunReport;
use shoal_sim::scenario::Scenario;

/// agree-16 scaled down (6 hosts, an 8 MiB blob in 1 MiB pieces) and slowed to 5 MB/s, so that a
/// fault at a fraction of a second lands mid-transfer; `faults` is appended to the file.
fn scenario(faults: &str) -> Scenario {
    scenario_with(faults, &[])
}

/// [`scenario`] with further `--set`s.
fn scenario_with(faults: &str, extra: &[(&str, &str)]) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/agree-16.toml");
    let text = std::fs::read_to_string(path).unwrap() + "\n" + faults;
    let sets: Vec<(String, String)> = [
        ("topology.hosts", "6"),
        ("topology.upload_bytes_per_s", "\"5MB/s\""),
        ("topology.download_bytes_per_s", "\"5MB/s\""),
        ("origins.upload_bytes_per_s", "\"5MB/s\""),
        ("workload.blobs.0.size", "\"8MiB\""),
        ("protocol.origin.piece_length", "\"1MiB\""),
        ("limits.max_sim_time_s", "120"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Scenario::from_toml(&text, "faults.toml", &sets).expect("scenario loads")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shoal-faults-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn turmoil(s: &Scenario, dir: &Path) -> RunReport {
    let run = driver::sim::run(s.clone(), DriverOptions::default()).expect("turmoil run");
    let r = run.report(0.0);
    run.write_outputs(dir, &r).expect("outputs written");
    r
}

/// A real-socket run. Each test's run is small (6 hosts, 8 MiB) and ends in seconds.
fn real(s: &Scenario, dir: &Path) -> RunReport {
    let t0 = std::time::Instant::now();
    let run = driver::real::run(s.clone(), DriverOptions::default()).expect("real run");
    eprintln!("real run {}: {:.2} s of wall time", dir.display(), t0.elapsed().as_secs_f64());
    let r = run.report(0.0);
    run.write_outputs(dir, &r).expect("outputs written");
    r
}

fn des(s: &Scenario, dir: &Path) -> RunReport {
    let mut e = Engine::new(s, RunOptions::default()).expect("des builds");
    e.run();
    let r = e.report("des", 0.0);
    e.write_outputs(dir, &r).expect("outputs written");
    r
}

/// An engine, and the `--set`s its runs of these tests add to [`scenario`].
#[derive(Clone, Copy)]
struct On {
    run: fn(&Scenario, &Path) -> RunReport,
    sets: &'static [(&'static str, &'static str)],
}

const TURMOIL: On = On { run: turmoil, sets: &[] };
const DES: On = On { run: des, sets: &[] };
/// Real sockets run on the wall clock: four times the rates (a free run takes about 2 s instead of
/// 9 s), and a 1 s blacklist instead of Kraken's 30 s, which otherwise keeps a peer's dialers away
/// for half a minute after its connection closed (an origin restarting, a dial refused across a
/// partition) on every engine.
const REAL: On = On {
    run: real,
    sets: &[
        ("topology.upload_bytes_per_s", "\"20MB/s\""),
        ("topology.download_bytes_per_s", "\"20MB/s\""),
        ("origins.upload_bytes_per_s", "\"20MB/s\""),
        ("protocol.agent.conn_state.blacklist_duration_ms", "1000"),
    ],
};
/// The discrete-event engine on real's scenario, to compare outcomes with.
const DES_AS_REAL: On = On { run: des, sets: REAL.sets };

impl On {
    fn scenario(&self, faults: &str) -> Scenario {
        self.scenario_with(faults, &[])
    }

    fn scenario_with(&self, faults: &str, extra: &[(&str, &str)]) -> Scenario {
        let sets: Vec<(&str, &str)> = self.sets.iter().chain(extra).copied().collect();
        scenario_with(faults, &sets)
    }

    fn run(&self, s: &Scenario, dir: &Path) -> RunReport {
        (self.run)(s, dir)
    }
}

/// downloads.csv rows as (host, end_s, outcome, error).
fn rows(dir: &Path) -> Vec<(usize, String, String, String)> {
    let csv = std::fs::read_to_string(dir.join("downloads.csv")).unwrap();
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column"));
    let (host, end, outcome, error) = (col("host"), col("end_s"), col("outcome"), col("error"));
    lines
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[host].parse().unwrap(), c[end].to_string(), c[outcome].to_string(), c[error].to_string())
        })
        .collect()
}

const CRASH: &str = "[[faults]]\nat_s = 0.5\nverb = \"crash\"\nhosts = [3, 4]\n";

#[test]
fn a_crashed_agent_reports_its_download_failed_and_the_rest_finish() {
    crashed_agents_fail_and_the_rest_finish_on(TURMOIL, "crash");
}

#[test]
fn real_crashed_agents_fail_and_the_rest_finish() {
    crashed_agents_fail_and_the_rest_finish_on(REAL, "real-crash");
}

/// Hosts 3 and 4 crash mid-transfer: their rows fail with `host crashed`, the others complete.
fn crashed_agents_fail_and_the_rest_finish_on(on: On, name: &str) {
    let dir = tmp(name);
    let r = on.run(&on.scenario(CRASH), &dir);
    let sm = &r.summary;
    assert_eq!(sm.failed_downloads, 2, "{sm:?}");
    assert_eq!(sm.unfinished_downloads, 0);
    assert_eq!(sm.host_images.completed, 4);
    let rows = rows(&dir);
    assert_eq!(rows.len(), 6, "one row per (host, blob)");
    for (host, _, outcome, error) in rows {
        if host == 3 || host == 4 {
            assert_eq!((outcome.as_str(), error.as_str()), ("failed", "host crashed"), "host {host}");
        } else {
            assert_eq!(outcome, "complete", "host {host}");
        }
    }
}

#[test]
fn fault_runs_are_byte_identical_for_a_seed() {
    let faults = format!(
        "{CRASH}[[faults]]\nat_s = 1.0\nverb = \"bounce\"\nhosts = [3]\n\
         [[faults]]\nat_s = 0.2\nverb = \"partition\"\na = {{ hosts = [0] }}\nb = {{ origins = [0] }}\n\
         [[faults]]\nat_s = 0.8\nverb = \"repair\"\na = {{ hosts = [0] }}\nb = {{ origins = [0] }}\n"
    );
    let s = scenario(&faults);
    let (a, b) = (tmp("same-a"), tmp("same-b"));
    turmoil(&s, &a);
    turmoil(&s, &b);
    for f in ["downloads.csv", "timeseries.csv", "summary.json"] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between two turmoil runs with faults");
    }
}

#[test]
fn a_restarted_agent_does_not_pull_twice() {
    restarted_agent_does_not_pull_twice_on(TURMOIL, "bounce");
}

#[test]
fn real_restarted_agent_does_not_pull_twice() {
    restarted_agent_does_not_pull_twice_on(REAL, "real-bounce");
}

/// Host 3 restarts mid-transfer: its download fails once, and its pull is not started again.
fn restarted_agent_does_not_pull_twice_on(on: On, name: &str) {
    let dir = tmp(name);
    let r = on.run(&on.scenario("[[faults]]\nat_s = 0.5\nverb = \"bounce\"\nhosts = [3]\n"), &dir);
    assert_eq!(r.summary.failed_downloads, 1, "{:?}", r.summary);
    assert_eq!(r.summary.unfinished_downloads, 0);
    assert_eq!(r.summary.host_images.completed, 5);
    let rows = rows(&dir);
    assert_eq!(rows.len(), 6);
    assert_eq!(rows.iter().filter(|r| r.0 == 3).count(), 1);
    assert!(rows.iter().any(|r| r.0 == 3 && r.3 == "host restarted"));
}

const PARTITION_UNTIL_3S: &str = "[[faults]]\nat_s = 0\nverb = \"partition\"\na = { hosts = [0, 1, 2] }\n\
                                  b = { hosts = [3, 4, 5], origins = [0] }\n\
                                  [[faults]]\nat_s = 3\nverb = \"repair\"\na = { hosts = [0, 1, 2] }\n\
                                  b = { hosts = [3, 4, 5], origins = [0] }\n";

/// Hosts 0-2 cannot reach the origin nor the other hosts until 3 s: every download completes,
/// theirs after the repair.
fn partition_heals_with_repair(on: On, name: &str) {
    let dir = tmp(name);
    let r = on.run(&on.scenario(PARTITION_UNTIL_3S), &dir);
    assert_eq!(r.summary.failed_downloads + r.summary.unfinished_downloads, 0, "{:?}", r.summary);
    for (host, end, _, _) in rows(&dir) {
        let end: f64 = end.parse().unwrap();
        if host < 3 {
            assert!(end > 3.0, "host {host} finished at {end} s, inside the partition");
        }
    }
}

/// Every host's link to the origin is held from 0 to 2 s: every download completes, later than
/// without the hold.
fn held_links_delay_but_complete_on(on: On, name: &str) {
    let hold = "[[faults]]\nat_s = 0\nverb = \"hold\"\na = { hosts = [0, 1, 2, 3, 4, 5] }\nb = { origins = [0] }\n\
                [[faults]]\nat_s = 2\nverb = \"release\"\na = { hosts = [0, 1, 2, 3, 4, 5] }\nb = { origins = [0] }\n";
    let (free, held) = (tmp(&format!("{name}-free")), tmp(&format!("{name}-held")));
    let f = on.run(&on.scenario(""), &free);
    let h = on.run(&on.scenario(hold), &held);
    assert_eq!(h.summary.failed_downloads + h.summary.unfinished_downloads, 0, "{:?}", h.summary);
    let (pf, ph) = (f.summary.host_images.p50.unwrap(), h.summary.host_images.p50.unwrap());
    assert!(ph > 2.0 && ph > pf, "held p50 {ph} s, free p50 {pf} s");
}

#[test]
fn a_partition_from_the_origin_heals_with_repair() {
    partition_heals_with_repair(TURMOIL, "partition");
}

#[test]
fn held_links_delay_but_complete() {
    held_links_delay_but_complete_on(TURMOIL, "turmoil");
}

/// On real sockets as on turmoil, a dial across the partition is refused and the dialer
/// blacklists the peer: hosts 0-2 get through once the blacklist ends after the repair.
#[test]
fn real_a_partition_from_the_origin_heals_with_repair() {
    partition_heals_with_repair(REAL, "real-partition");
}

#[test]
fn real_held_links_delay_but_complete() {
    held_links_delay_but_complete_on(REAL, "real");
}

/// Every verb at once, on every node kind (run with real's rates and blacklist on both engines):
/// host 1 crashes for good; host 0's link to the origin is held and released; host 2 loses the tracker for a while, once it has the metainfo (a metainfo request
/// lost to a partition fails the download in every engine: there is one tracker); hosts 4 and 5 are cut from each
/// other and repaired; the tracker restarts and the origin restarts. Every engine accepts the file
/// and they agree on the outcome: host 1's row fails with `host crashed`, every other completes.
const EVERY_VERB: &str = "[[faults]]\nat_s = 0.3\nverb = \"crash\"\nhosts = [1]\n\
    [[faults]]\nat_s = 0.2\nverb = \"hold\"\na = { hosts = [0] }\nb = { origins = [0] }\n\
    [[faults]]\nat_s = 0.6\nverb = \"release\"\na = { hosts = [0] }\nb = { origins = [0] }\n\
    [[faults]]\nat_s = 0.4\nverb = \"partition\"\na = { hosts = [2] }\nb = { trackers = [0] }\n\
    [[faults]]\nat_s = 0.9\nverb = \"repair\"\na = { hosts = [2] }\nb = { trackers = [0] }\n\
    [[faults]]\nat_s = 0.2\nverb = \"partition\"\na = { hosts = [4] }\nb = { hosts = [5] }\n\
    [[faults]]\nat_s = 0.5\nverb = \"repair\"\na = { hosts = [4] }\nb = { hosts = [5] }\n\
    [[faults]]\nat_s = 0.7\nverb = \"bounce\"\ntrackers = [0]\n\
    [[faults]]\nat_s = 0.8\nverb = \"bounce\"\norigins = [0]\n";

#[test]
fn every_engine_applies_every_verb() {
    let expect = |dir: &Path| {
        for (host, _, outcome, error) in rows(dir) {
            let want = if host == 1 { ("failed", "host crashed") } else { ("complete", "") };
            assert_eq!((outcome.as_str(), error.as_str()), want, "{}: host {host}", dir.display());
        }
    };
    for (name, on) in [("every-des", DES_AS_REAL), ("every-real", REAL)] {
        let dir = tmp(name);
        let r = on.run(&on.scenario(EVERY_VERB), &dir);
        assert_eq!(rows(&dir).len(), 6, "{name}");
        assert_eq!(
            (r.summary.failed_downloads, r.summary.unfinished_downloads),
            (1, 0),
            "{name}: {:?}",
            r.summary
        );
        expect(&dir);
    }
}

/// (host, blob, outcome, error) of every row, sorted (engines list rows in start order).
fn outcomes(dir: &Path) -> Vec<(usize, String, String, String)> {
    let csv = std::fs::read_to_string(dir.join("downloads.csv")).unwrap();
    let blob = csv.lines().next().unwrap().split(',').position(|h| h == "blob").expect("a blob column");
    let blobs = csv.lines().skip(1).map(|l| l.split(',').nth(blob).unwrap().to_string());
    let mut v: Vec<_> = rows(dir).into_iter().zip(blobs).map(|((h, _, o, e), b)| (h, b, o, e)).collect();
    v.sort();
    v
}

#[test]
fn des_crashed_agents_fail_and_the_rest_finish_as_in_turmoil() {
    let s = scenario(CRASH);
    let (d, t) = (tmp("des-crash"), tmp("des-crash-turmoil"));
    let r = des(&s, &d);
    let sm = &r.summary;
    assert_eq!((sm.failed_downloads, sm.unfinished_downloads), (2, 0), "{sm:?}");
    assert_eq!(sm.host_images.completed, 4);
    let rows = rows(&d);
    assert_eq!(rows.len(), 6, "one row per (host, blob)");
    for (host, end, outcome, error) in &rows {
        if *host == 3 || *host == 4 {
            assert_eq!((outcome.as_str(), error.as_str()), ("failed", "host crashed"), "host {host}");
            assert!(end.is_empty(), "a failed row has no end: {end}");
        } else {
            assert_eq!(outcome, "complete", "host {host}");
        }
    }
    turmoil(&s, &t);
    assert_eq!(outcomes(&d), outcomes(&t), "des and turmoil disagree on which rows fail");
}

#[test]
fn des_fault_runs_are_byte_identical_for_a_seed() {
    let faults = format!(
        "{CRASH}[[faults]]\nat_s = 1.0\nverb = \"bounce\"\nhosts = [3]\n\
         [[faults]]\nat_s = 0.7\nverb = \"bounce\"\nhosts = [1]\norigins = [0]\ntrackers = [0]\n\
         [[faults]]\nat_s = 0.2\nverb = \"partition\"\na = {{ hosts = [0] }}\nb = {{ origins = [0] }}\n\
         [[faults]]\nat_s = 0.8\nverb = \"repair\"\na = {{ hosts = [0] }}\nb = {{ origins = [0] }}\n\
         [[faults]]\nat_s = 0.3\nverb = \"hold\"\na = {{ hosts = [2] }}\nb = {{ hosts = [5], trackers = [0] }}\n\
         [[faults]]\nat_s = 1.5\nverb = \"release\"\na = {{ hosts = [2] }}\nb = {{ hosts = [5], trackers = [0] }}\n"
    );
    let s = scenario(&faults);
    let (a, b) = (tmp("des-same-a"), tmp("des-same-b"));
    des(&s, &a);
    des(&s, &b);
    for f in ["downloads.csv", "timeseries.csv", "summary.json"] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(!x.is_empty());
        assert!(x == y, "{f} differs between two des runs with faults");
    }
    let free = tmp("des-same-free");
    des(&scenario(""), &free);
    let (x, y) =
        (std::fs::read(a.join("downloads.csv")).unwrap(), std::fs::read(free.join("downloads.csv")).unwrap());
    assert!(x != y, "the faults changed nothing");
}

#[test]
fn des_restarted_agent_does_not_pull_twice() {
    let dir = tmp("des-bounce");
    let r = des(&scenario("[[faults]]\nat_s = 0.5\nverb = \"bounce\"\nhosts = [3]\n"), &dir);
    assert_eq!(r.summary.failed_downloads, 1, "{:?}", r.summary);
    assert_eq!(r.summary.unfinished_downloads, 0);
    assert_eq!(r.summary.host_images.completed, 5);
    let rows = rows(&dir);
    assert_eq!(rows.len(), 6);
    assert_eq!(rows.iter().filter(|r| r.0 == 3).count(), 1);
    assert!(rows.iter().any(|r| r.0 == 3 && r.2 == "failed" && r.3 == "host restarted"), "{rows:?}");
}

/// A second blob pulled by every host at 2 s: host 3 crashes at 0.5 s and is back at 1 s, host 4
/// crashes at 0.5 s for good.
const LATER_PULL: &str = "[[workload.blobs]]\nname = \"layer2\"\nsize = \"2MiB\"\n\
    [[workload.pulls]]\nimage = \"layer2\"\nstart_s = 2\n\
    [[faults]]\nat_s = 0.5\nverb = \"crash\"\nhosts = [3, 4]\n\
    [[faults]]\nat_s = 1\nverb = \"bounce\"\nhosts = [3]\n";

#[test]
fn des_pulls_due_while_down_fail_and_a_restarted_host_does_its_later_pulls() {
    let t = tmp("des-later-turmoil");
    let d = pulls_due_while_down_fail_on(DES, "des-later");
    turmoil(&scenario(LATER_PULL), &t);
    assert_eq!(outcomes(&d), outcomes(&t), "des and turmoil disagree on which rows fail");
}

#[test]
fn real_pulls_due_while_down_fail_and_a_restarted_host_does_its_later_pulls() {
    let r = pulls_due_while_down_fail_on(REAL, "real-later");
    let d = pulls_due_while_down_fail_on(DES_AS_REAL, "real-later-des");
    assert_eq!(outcomes(&r), outcomes(&d), "real and des disagree on which rows fail");
}

/// [`LATER_PULL`]: the first blob fails on hosts 3 and 4 (`host crashed`), the second on host 4
/// (`host down`); host 3, back at 1 s, pulls the second. Returns the run's folder.
fn pulls_due_while_down_fail_on(on: On, name: &str) -> PathBuf {
    let d = tmp(name);
    let r = on.run(&on.scenario(LATER_PULL), &d);
    assert_eq!((r.summary.failed_downloads, r.summary.unfinished_downloads), (3, 0), "{:?}", r.summary);
    let csv = std::fs::read_to_string(d.join("downloads.csv")).unwrap();
    let blob = |line: &str| line.split(',').any(|c| c == "layer2");
    for (line, (host, _, outcome, error)) in csv.lines().skip(1).zip(rows(&d)) {
        let expect = match (host, blob(line)) {
            (3 | 4, false) => ("failed", "host crashed"),
            (4, true) => ("failed", "host down"),
            _ => ("complete", ""),
        };
        assert_eq!((outcome.as_str(), error.as_str()), expect, "{line}");
    }
    d
}

#[test]
fn des_downloads_finish_from_the_other_origin_when_one_crashes() {
    downloads_finish_from_the_other_origin_on(DES, "des");
}

#[test]
fn real_downloads_finish_from_the_other_origin_when_one_crashes() {
    downloads_finish_from_the_other_origin_on(REAL, "real");
}

/// Two origins, one crashes (before anything is asked, or mid-transfer): every download finishes.
fn downloads_finish_from_the_other_origin_on(on: On, name: &str) {
    for at in ["0", "0.5"] {
        let faults = format!("[[faults]]\nat_s = {at}\nverb = \"crash\"\norigins = [0]\n");
        let s = on.scenario_with(&faults, &[("origins.count", "2")]);
        let dir = tmp(&format!("{name}-origin-{at}"));
        let r = on.run(&s, &dir);
        let sm = &r.summary;
        assert_eq!((sm.failed_downloads, sm.unfinished_downloads), (0, 0), "origin crash at {at} s: {sm:?}");
        assert_eq!(sm.host_images.completed, 6);
    }
}

#[test]
fn des_a_crashed_tracker_fails_over_or_leaves_rows_honestly_unfinished() {
    // Two trackers, one crashes before anything is asked: every download finishes through the other.
    let crash0 = "[[faults]]\nat_s = 0\nverb = \"crash\"\ntrackers = [0]\n";
    let r = des(&scenario_with(crash0, &[("trackers.count", "2")]), &tmp("des-tracker-2"));
    let sm = &r.summary;
    assert_eq!((sm.failed_downloads, sm.unfinished_downloads), (0, 0), "{sm:?}");
    // The only tracker crashes: nobody learns the blob's metainfo; the run stops at the time limit
    // with every row reported, none complete.
    let dir = tmp("des-tracker-1");
    let s = scenario_with(crash0, &[("limits.max_sim_time_s", "20")]);
    let mut e = Engine::new(&s, RunOptions::default()).expect("des builds");
    e.run();
    assert!(e.now().as_secs_f64() <= 20.0, "ran past the time limit: {:?}", e.now());
    let r = e.report("des", 0.0);
    e.write_outputs(&dir, &r).expect("outputs written");
    let rows = rows(&dir);
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.2 != "complete"), "{rows:?}");
    let failed = rows.iter().filter(|r| r.2 == "failed").count();
    let unfinished = rows.iter().filter(|r| r.2 == "unfinished").count();
    assert_eq!((r.summary.failed_downloads, r.summary.unfinished_downloads), (failed, unfinished));
    assert_eq!(failed + unfinished, 6);
    // Bounced mid-run, it comes back empty: the agents announce again and finish.
    let bounce = "[[faults]]\nat_s = 0.5\nverb = \"bounce\"\ntrackers = [0]\n";
    let r = des(&scenario(bounce), &tmp("des-tracker-bounce"));
    let sm = &r.summary;
    assert_eq!((sm.failed_downloads, sm.unfinished_downloads), (0, 0), "{sm:?}");
}

#[test]
fn real_a_crashed_tracker_fails_over_and_a_bounced_one_comes_back() {
    // Two trackers, one crashes before anything is asked: the agents move on to the other.
    let crash0 = "[[faults]]\nat_s = 0\nverb = \"crash\"\ntrackers = [0]\n";
    let r = REAL.run(&REAL.scenario_with(crash0, &[("trackers.count", "2")]), &tmp("real-tracker-2"));
    let sm = &r.summary;
    assert_eq!((sm.failed_downloads, sm.unfinished_downloads), (0, 0), "{sm:?}");
    // The only tracker restarts mid-run with no state: the agents announce again and finish.
    let bounce = "[[faults]]\nat_s = 0.5\nverb = \"bounce\"\ntrackers = [0]\n";
    let r = REAL.run(&REAL.scenario(bounce), &tmp("real-tracker-bounce"));
    let sm = &r.summary;
    assert_eq!((sm.failed_downloads, sm.unfinished_downloads), (0, 0), "{sm:?}");
}

#[test]
fn bad_faults_are_named_by_file_line_and_field() {
    let cases = [
        ("[[faults]]\nat_s = 1\nverb = \"crash\"\nhosts = [99]\n", "faults.0.hosts.0", "no host 99"),
        ("[[faults]]\nat_s = 1\nverb = \"explode\"\nhosts = [1]\n", "verb", "unknown variant"),
        ("[[faults]]\nat_s = -1\nverb = \"crash\"\nhosts = [1]\n", "faults.0.at_s", "-1 is out of range"),
        ("[[faults]]\nat_s = 1\nverb = \"crash\"\n", "faults.0", "names no node"),
        ("[[faults]]\nat_s = 60\nverb = \"crash\"\nhosts = [1]\n", "faults.0.at_s", "max_sim_time_s = 60"),
        ("[[faults]]\nat_s = 1\nverb = \"partition\"\nhosts = [1]\n", "faults.0.hosts", "a = {"),
        ("[[faults]]\nat_s = 1\nverb = \"hold\"\na = { hosts = [1] }\n", "faults.0.b", "missing"),
        (
            "[[faults]]\nat_s = 1\nverb = \"partition\"\na = { hosts = [1] }\nb = { hosts = [1] }\n",
            "faults.0.b.hosts",
            "must not share",
        ),
        ("[[faults]]\nat_s = 1\nverb = \"crash\"\nnodes = [1]\n", "nodes", "unknown field"),
    ];
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/agree-16.toml");
    let base = std::fs::read_to_string(path).unwrap();
    let base_lines = base.lines().count();
    for (faults, field, message) in cases {
        let text = format!("{base}\n{faults}");
        let e = Scenario::from_toml(&text, "f.toml", &[]).expect_err(faults).to_string();
        assert!(e.contains(field) && e.contains(message), "{faults}: {e}");
        let line: usize = e.split(':').nth(1).and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("{e}"));
        assert!(line > base_lines, "{e}: line {line} is not in the faults");
    }
}

#[test]
fn des_a_partition_from_the_origin_heals_with_repair() {
    partition_heals_with_repair(DES, "des-partition");
}

#[test]
fn des_a_partition_mid_transfer_loses_the_bytes_in_flight_and_recovers() {
    partition_mid_transfer_recovers_on(DES, "des-cut");
}

#[test]
fn real_a_partition_mid_transfer_loses_the_messages_in_flight_and_recovers() {
    partition_mid_transfer_recovers_on(REAL, "real-cut");
}

/// Host 0 is cut from everyone at 0.5 s, mid-transfer, until 2 s: what was in flight to and from
/// it is lost, and the protocol's timeouts recover the download after the repair.
fn partition_mid_transfer_recovers_on(on: On, name: &str) {
    let cut = "a = { hosts = [0] }\nb = { hosts = [1, 2, 3, 4, 5], origins = [0], trackers = [0] }\n";
    let faults = format!(
        "[[faults]]\nat_s = 0.5\nverb = \"partition\"\n{cut}[[faults]]\nat_s = 2\nverb = \"repair\"\n{cut}"
    );
    let (free, cutd) = (tmp(&format!("{name}-free")), tmp(name));
    on.run(&on.scenario(""), &free);
    let r = on.run(&on.scenario(&faults), &cutd);
    assert_eq!(r.summary.failed_downloads + r.summary.unfinished_downloads, 0, "{:?}", r.summary);
    let end = |d: &Path| rows(d).into_iter().find(|r| r.0 == 0).map(|r| r.1.parse::<f64>().unwrap()).unwrap();
    assert!(
        end(&cutd) > 2.0 && end(&cutd) > end(&free),
        "host 0: {} s cut, {} s free",
        end(&cutd),
        end(&free)
    );
}

#[test]
fn des_held_links_delay_but_complete() {
    held_links_delay_but_complete_on(DES, "des");
}

#[test]
fn des_a_host_cut_off_for_good_is_reported_not_finished() {
    // Host 0 loses every link at 0 s and never gets them back: its row is reported failed or
    // unfinished at the time limit, the others complete.
    let faults = "[[faults]]\nat_s = 0\nverb = \"partition\"\na = { hosts = [0] }\n\
                  b = { hosts = [1, 2, 3, 4, 5], origins = [0], trackers = [0] }\n";
    let dir = tmp("des-cut-for-good");
    let s = scenario_with(faults, &[("limits.max_sim_time_s", "30")]);
    let r = des(&s, &dir);
    for (host, _, outcome, _) in rows(&dir) {
        if host == 0 {
            assert_ne!(outcome, "complete", "host 0 finished with no links");
        } else {
            assert_eq!(outcome, "complete", "host {host}");
        }
    }
    assert_eq!(r.summary.failed_downloads + r.summary.unfinished_downloads, 1, "{:?}", r.summary);
}
