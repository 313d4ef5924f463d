//! The `shoal` command as a user meets it: help, the bound, errors that say what to fix, a run, its
//! report and comparisons.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the shoal binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn bound_prints_every_term_and_the_binding_one() {
    let out = shoal(&["bound", "scenarios/kraken-2600.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for want in ["origin upload", "host download", "aggregate upload", "<- binds", "T_min", "10.000"] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
}

#[test]
fn bad_input_is_refused_with_file_field_and_exit_code_2() {
    let out = shoal(&["run", "scenarios/nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("scenarios/nope.toml"), "{}", text(&out.stderr));

    let out = shoal(&["bound", "scenarios/smoke-40.toml", "--set", "topology.upload_bytes_per_s=300MB/z"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("topology.upload_bytes_per_s") && err.contains("MB/z"), "{err}");

    let dir = std::env::temp_dir().join(format!("shoal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[topology]\nhosts = 4\nuplod_bytes_per_s = 1\n").unwrap();
    let out = shoal(&["run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml:4") && err.contains("uplod_bytes_per_s"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn solver_flags_are_checked() {
    let out = shoal(&["run", "scenarios/smoke-40.toml", "--solver", "stepped", "--solve-step-ms", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--solve-step-ms 0") && err.contains("above 0"), "{err}");
    let out = shoal(&["run", "scenarios/smoke-40.toml", "--solve-step-ms", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--solver stepped only"), "{}", text(&out.stderr));
    let out = shoal(&["run", "scenarios/agree-16.toml", "--engine", "turmoil", "--solver", "full"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("des engine only"), "{}", text(&out.stderr));
}

#[test]
fn run_prints_seed_and_replay_and_writes_outputs() {
    let dir: PathBuf = std::env::temp_dir().join(format!("shoal-cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = shoal(&[
        "run",
        "scenarios/smoke-40.toml",
        "--seed",
        "7",
        "--set",
        "topology.hosts=8",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("seed=7"), "{err}");
    assert!(
        err.contains("replay: shoal run scenarios/smoke-40.toml --seed 7 --set topology.hosts=8"),
        "{err}"
    );
    for f in ["downloads.csv", "timeseries.csv", "summary.json", "perf.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["seed"], 7);
    assert_eq!(summary["replay"], "shoal run scenarios/smoke-40.toml --seed 7 --set topology.hosts=8");
    assert_eq!(summary["hosts"], 8);
    assert_eq!(summary["host_images"]["completed"], 8);
    for f in ["report.html", "report.md", "host-completion-cdf.png"] {
        assert!(dir.join(f).is_file(), "{f} missing: the run writes its report");
    }

    // `report` re-renders in place; `compare` writes its table and figure elsewhere.
    std::fs::remove_file(dir.join("report.html")).unwrap();
    let out = shoal(&["report", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("report.html").is_file());
    let cmp = dir.join("compare");
    let d = dir.to_str().unwrap();
    let out = shoal(&["compare", d, d, "--out", cmp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(cmp.join("compare.md")).unwrap();
    assert!(md.contains("× first") && md.contains("1.000"), "{md}");
    assert!(cmp.join("compare.html").is_file() && cmp.join("compare-cdf.png").is_file());
}

#[test]
fn no_report_skips_the_report_and_report_names_a_missing_file() {
    let dir: PathBuf = std::env::temp_dir().join(format!("shoal-cli-noreport-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let out = shoal(&[
        "run",
        "scenarios/smoke-40.toml",
        "--set",
        "topology.hosts=4",
        "-q",
        "--no-report",
        "--out",
        d,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("summary.json").is_file() && !dir.join("report.html").exists());
    std::fs::remove_file(dir.join("timeseries.csv")).unwrap();
    let out = shoal(&["report", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("timeseries.csv"), "{}", text(&out.stderr));
}

#[test]
fn help_explains_each_command() {
    let out = shoal(&["run", "--help"]);
    let s = text(&out.stdout);
    for want in ["--seed", "--out", "--set", "KEY=VALUE", "results/<scenario>-<seed>/"] {
        assert!(s.contains(want), "missing {want:?} in run --help:\n{s}");
    }
    assert!(s.contains("--no-report"), "{s}");
    let s = text(&shoal(&["--help"]).stdout);
    for want in ["report", "compare"] {
        assert!(s.contains(want), "missing {want:?} in --help:\n{s}");
    }
    let s = text(&shoal(&["compare", "--help"]).stdout);
    assert!(s.contains("--out") && s.contains("ratio to the first run"), "{s}");
    for cmd in ["agent", "origin", "tracker"] {
        let s = text(&shoal(&[cmd, "--help"]).stdout);
        for want in
            ["--index", "--seed", "--base-port", "--agents", "--trackers", "--max-time-s", "BASE+1000+o"]
        {
            assert!(s.contains(want), "missing {want:?} in {cmd} --help:\n{s}");
        }
    }
}

#[test]
fn socket_engines_run_from_the_command_line_and_print_their_replay() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-engines-{}", std::process::id()));
    for engine in ["turmoil", "real"] {
        let out_dir = dir.join(engine);
        let out = shoal(&[
            "run",
            "scenarios/agree-16.toml",
            "--engine",
            engine,
            "--set",
            "topology.hosts=4",
            "--set",
            "workload.blobs.0.size=4MiB",
            "--set",
            "protocol.origin.piece_length=1MiB",
            "--quiet",
            "--no-report",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{engine}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("seed=1"), "{err}");
        assert!(err.contains(&format!("--engine {engine}")), "replay without the engine: {err}");
        let summary = std::fs::read_to_string(out_dir.join("summary.json")).unwrap();
        assert!(summary.contains(&format!("\"engine\": \"{engine}\"")), "{summary}");
    }
    // Blobs too large for turmoil to hold in memory are refused with a clear error...
    let out = shoal(&[
        "run",
        "scenarios/smoke-40.toml",
        "--engine",
        "turmoil",
        "--set",
        "workload.blobs.0.size=3GB",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--engine des"), "{}", text(&out.stderr));
    // ...and real, which keeps them on disk, refuses blobs that would not fit there.
    let out = shoal(&[
        "run",
        "scenarios/smoke-40.toml",
        "--engine",
        "real",
        "--set",
        "topology.hosts=4",
        "--set",
        "workload.blobs.0.size=30TB",
        "--force",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("keeps blobs on disk") && err.contains("--data-dir"), "{err}");
    // --data-dir belongs to the real engine.
    let out = shoal(&["run", "scenarios/smoke-40.toml", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--engine real only"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_scenario_with_faults_runs_on_every_engine() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/agree-16.toml"))
        .unwrap();
    let file = dir.join("crash.toml");
    std::fs::write(&file, base + "\n[[faults]]\nat_s = 0.05\nverb = \"crash\"\nhosts = [2]\n").unwrap();
    let f = file.to_str().unwrap();
    let small = ["--set", "topology.hosts=4", "--set", "workload.blobs.0.size=8MiB", "--no-report", "-q"];
    for engine in ["des", "turmoil", "real"] {
        let out_dir = dir.join(engine);
        let args = ["run", f, "--engine", engine, "--out", out_dir.to_str().unwrap()];
        let out = shoal(&[&args[..], &small].concat());
        // The crashed host's download failed: reported, and the exit status says so.
        assert_eq!(out.status.code(), Some(1), "{engine}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("1 downloads failed"), "{engine}: {}", text(&out.stderr));
        let csv = std::fs::read_to_string(out_dir.join("downloads.csv")).unwrap();
        assert_eq!(csv.lines().filter(|l| l.contains("host crashed")).count(), 1, "{engine}: {csv}");
    }
}

/// Kills its processes when dropped, so that a failing test leaves none behind.
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let pid = c.id();
            let _ = c.kill();
            let _ = c.wait();
            // A killed node process cannot remove its data folder (blobs on disk): do it here.
            if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
                let prefix = format!("shoal-data-{pid}-");
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
    }
}

#[test]
fn tracker_origin_and_agents_run_as_separate_processes() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-procs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Free loopback ports: agents 0 and 1, the origin, its HTTP port, the tracker.
    let ports: Vec<u16> = {
        let ls: Vec<std::net::TcpListener> =
            (0..5).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
    };
    let a = |p: u16| format!("127.0.0.1:{p}");
    let addrs = [
        "--agents".to_string(),
        format!("{},{}", a(ports[0]), a(ports[1])),
        "--origins".into(),
        a(ports[2]),
        "--origin-http".into(),
        a(ports[3]),
        "--trackers".into(),
        a(ports[4]),
    ];
    let common = |kind: &str, index: usize, max: &str| -> Vec<String> {
        let mut v: Vec<String> =
            [kind, "scenarios/agree-16.toml", "--index", &index.to_string(), "--max-time-s", max]
                .iter()
                .map(|s| s.to_string())
                .collect();
        for set in ["topology.hosts=2", "workload.blobs.0.size=8MiB", "protocol.origin.piece_length=1MiB"] {
            v.push("--set".into());
            v.push(set.into());
        }
        v.extend(addrs.iter().cloned());
        v
    };
    let spawn = |args: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the shoal binary starts")
    };
    let mut servers = Procs(vec![spawn(common("tracker", 0, "120")), spawn(common("origin", 0, "120"))]);
    let mut agents = Procs(
        (0..2)
            .map(|i| {
                let mut args = common("agent", i, "60");
                args.extend(["--out".to_string(), dir.join(format!("a{i}")).display().to_string()]);
                spawn(args)
            })
            .collect(),
    );
    // The agents exit by themselves (bounded by their --max-time-s); give up after 90 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut codes = vec![None; 2];
    while codes.iter().any(Option::is_none) && std::time::Instant::now() < deadline {
        for (c, code) in agents.0.iter_mut().zip(&mut codes) {
            if code.is_none() {
                *code = c.try_wait().unwrap().map(|s| s.code());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The servers serve until killed.
    for s in &mut servers.0 {
        assert!(s.try_wait().unwrap().is_none(), "a server exited early");
    }
    drop(servers);
    let outputs: Vec<Output> =
        std::mem::take(&mut agents.0).into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for (i, (code, out)) in codes.iter().zip(&outputs).enumerate() {
        assert_eq!(*code, Some(Some(0)), "agent {i}: {}\n{}", text(&out.stdout), text(&out.stderr));
        let csv = std::fs::read_to_string(dir.join(format!("a{i}/downloads.csv"))).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap_or_default().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{name}"));
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "agent {i} writes its own row: {csv}");
        let cols: Vec<&str> = rows[0].split(',').collect();
        // Host i, all 8 pieces (each checked by CRC32, the blob by SHA-256), complete.
        let got = (cols[col("host")], cols[col("pieces")], cols[col("outcome")]);
        assert_eq!(got, (i.to_string().as_str(), "8", "complete"), "{csv}");
    }

    // `shoal merge` makes one run of the two agents' folders, which `shoal report` renders.
    let (a0, a1, merged) = (dir.join("a0"), dir.join("a1"), dir.join("merged"));
    let path = |p: &Path| p.display().to_string();
    let out = shoal(&["merge", &path(&a1), &path(&a0), "--out", &path(&merged)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(merged.join("report.html").exists());
    let csv = std::fs::read_to_string(merged.join("downloads.csv")).unwrap();
    let hosts: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(hosts, ["0", "1"], "rows of both agents, sorted by host: {csv}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["host_images"]["completed"], 2, "{summary}");
    let own = |d: &Path| -> f64 {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap();
        s["host_images"]["max"].as_f64().unwrap()
    };
    let slowest = own(&a0).max(own(&a1));
    assert_eq!(summary["host_images"]["max"].as_f64(), Some(slowest), "{summary}");
    // A folder given twice is refused, naming the host.
    let out = shoal(&["merge", &path(&a0), &path(&a0), "--out", &path(&dir.join("twice"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("host 0 also has rows"), "{}", text(&out.stderr));
}

#[test]
fn gate_exits_1_on_regression_0_on_pass_2_on_bad_input() {
    // Slower origins on the small scenario: image pulls take twice as long.
    let out = shoal(&[
        "gate",
        "--no-speed",
        "--scenario",
        "smoke-40",
        "--set",
        "origins.upload_bytes_per_s=1Gbit/s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("| smoke-40 | host_images.p99 |") && md.contains("**regression**"), "{md}");

    let out = shoal(&["gate", "--no-speed", "--scenario", "smoke-40"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("**PASS**"));

    for args in [
        &["gate", "--config", "bench/nope.toml"][..],
        &["gate", "--scenario", "nope"][..],
        &["gate", "--bless", "--set", "seed=2"][..],
    ] {
        let out = shoal(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// #14: the inputs, each one field away from a valid scenario, are refused with the field,
/// the value and the range (exit 2), never a panic, an abort or a hang; extreme values need --force.
#[test]
fn out_of_range_and_extreme_values_are_refused_before_the_run() {
    let refused = [
        ("topology.hosts=9223372036854775807", "topology.hosts: 9223372036854775807 is out of range"),
        ("topology.hosts=1000000000", "topology.hosts: 1000000000 is out of range"),
        (
            "protocol.agent.dispatch.pipeline_limit=0",
            "pipeline_limit: 0 is out of range: must be in [1, 1e5]",
        ),
        ("protocol.agent.conn_state.max_open_conn=0", "max_open_conn: 0 is out of range"),
        ("protocol.origin.max_replica=0", "max_replica: 0 is out of range"),
        ("protocol.tracker.announce_interval_ms=0", "announce_interval_ms: 0 is out of range"),
        ("protocol.origin.piece_length=1B", "a blob may have at most 10000000 pieces"),
    ];
    for (set, want) in refused {
        let started = std::time::Instant::now();
        let out = shoal(&["run", "scenarios/agree-16.toml", "--set", set, "--no-report", "--quiet"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{set}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{set} took {:?}", started.elapsed());
    }
    // Legal but extreme: refused with the reason and the flag, run with --force.
    let dir = std::env::temp_dir().join(format!("shoal-cli-extreme-{}", std::process::id()));
    let args = ["run", "scenarios/smoke-40.toml", "--set", "protocol.tracker.announce_interval_ms=50"];
    let out = shoal(&[&args[..], &["--no-report", "--quiet", "--out", dir.to_str().unwrap()]].concat());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("legal but extreme (below 100)") && err.contains("--force"), "{err}");
    assert!(!dir.exists(), "nothing written for a refused run");
    let out =
        shoal(&[&args[..], &["--no-report", "--quiet", "--force", "--out", dir.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning (--force)"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// #14: a run is sized before it starts. The estimate printed by `shoal run` is within 2× of the
/// peak memory it then measures, on a mid-sized run; a run too large for the machine is refused.
#[test]
fn the_memory_estimate_is_within_2x_of_the_measured_peak_and_too_large_runs_are_refused() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-sizing-{}", std::process::id()));
    let out = shoal(&[
        "run",
        "scenarios/kraken-2600.toml",
        "--set",
        "topology.hosts=600",
        "--no-report",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = shoal_sim::scenario::Scenario::load_with_sets(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/kraken-2600.toml"),
        &["topology.hosts=600".to_string()],
    )
    .unwrap();
    let estimate = shoal_sim::sizing::estimate(&s, shoal_sim::sizing::EngineKind::Des);
    assert!(text(&out.stderr).contains(&format!("sizing: {estimate}")), "{}", text(&out.stderr));
    let perf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("perf.json")).unwrap()).unwrap();
    let measured = perf["peak_rss_bytes"].as_u64().expect("peak RSS is measured on Linux") as f64;
    let ratio = estimate.peak_bytes as f64 / measured;
    assert!(
        (0.5..=2.0).contains(&ratio),
        "estimate {} vs measured {measured}: ratio {ratio}",
        estimate.peak_bytes
    );
    let events = perf["events"].as_u64().unwrap() as f64;
    let ratio = estimate.events as f64 / events;
    assert!((0.5..=2.0).contains(&ratio), "events: estimate {} vs {events}", estimate.events);
    let _ = std::fs::remove_dir_all(&dir);

    // A million hosts (the hard limit) need about 57 GiB: refused where that is not available.
    let big = shoal_sim::scenario::Scenario::load_with_sets(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/kraken-2600.toml"),
        &["topology.hosts=1000000".to_string()],
    )
    .unwrap();
    let need = shoal_sim::sizing::estimate(&big, shoal_sim::sizing::EngineKind::Des).peak_bytes;
    if shoal_sim::sizing::available_memory().is_some_and(|a| a < need) {
        let out = shoal(&["run", "scenarios/kraken-2600.toml", "--set", "topology.hosts=1000000", "--quiet"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("does not fit in memory") && err.contains("--force"), "{err}");
    }
    let out = shoal(&["bound", "scenarios/kraken-2600.toml"]);
    assert!(
        text(&out.stdout).contains("sizing: --engine des: estimated peak memory"),
        "{}",
        text(&out.stdout)
    );
}

/// #14: `--out` into a folder holding another run's outputs is refused unless --force; re-running the
/// same replay command into its own folder is fine.
#[test]
fn out_folder_of_another_run_is_refused_unless_forced() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-out-{}", std::process::id()));
    let run = |extra: &[&str]| {
        let mut args =
            vec!["run", "scenarios/smoke-40.toml", "--no-report", "--quiet", "--out", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        shoal(&args)
    };
    assert!(run(&[]).status.success());
    let first = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(run(&[]).status.success(), "the same run again into its own folder");
    assert_eq!(std::fs::read_to_string(dir.join("summary.json")).unwrap(), first);
    let out = run(&["--seed", "2"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds the outputs of another run")
            && err.contains("--seed 1")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("summary.json")).unwrap(), first, "nothing touched");
    assert!(run(&["--seed", "2", "--force"]).status.success());
    assert!(std::fs::read_to_string(dir.join("summary.json")).unwrap().contains("\"seed\": 2"));
    let leftovers: Vec<_> =
        std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(!leftovers.iter().any(|n| n.to_string_lossy().starts_with(".partial")), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// #14: Ctrl-C stops a run, which writes what it has, marks every download that had not ended
/// unfinished, says so and exits 130.
#[test]
fn ctrl_c_writes_the_interrupted_run_and_says_so() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-int-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["run", "scenarios/kraken-2600.toml", "--quiet", "--no-report", "--out", dir.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The handler is installed before the world is built; the full run takes tens of seconds.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the run did not stop within 60 s of Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at") && err.contains("downloads unfinished"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert!(summary["unfinished_downloads"].as_u64().unwrap() > 0);
    let rows = std::fs::read_to_string(dir.join("downloads.csv")).unwrap();
    assert_eq!(rows.lines().count(), 1 + 5200, "every download has its row");
    assert!(rows.lines().skip(1).any(|l| l.contains(",unfinished,")), "unfinished rows are marked");
    let _ = std::fs::remove_dir_all(&dir);
}

/// #14: run folders and gate files that are not what they should be are refused with the file and
/// what is wrong (exit 2), never a panic: an empty folder, a missing one, a folder whose run never
/// finished writing, a truncated CSV, a summary.json of another tool, a truncated baseline.
#[test]
fn bad_run_folders_and_gate_files_are_named_not_panicked_on() {
    let root = std::env::temp_dir().join(format!("shoal-cli-badin-{}", std::process::id()));
    let good = root.join("good");
    let out =
        shoal(&["run", "scenarios/smoke-40.toml", "--no-report", "--quiet", "--out", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let copy = |name: &str| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["downloads.csv", "timeseries.csv", "summary.json", "perf.json"] {
            std::fs::copy(good.join(f), d.join(f)).unwrap();
        }
        d
    };
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let half = copy("half");
    std::fs::remove_file(half.join("summary.json")).unwrap();
    let trunc = copy("trunc");
    let csv = std::fs::read_to_string(trunc.join("downloads.csv")).unwrap();
    std::fs::write(trunc.join("downloads.csv"), &csv[..csv.len() / 2]).unwrap();
    let foreign = copy("foreign");
    std::fs::write(foreign.join("summary.json"), "{\"tool\": \"other\", \"version\": 3}\n").unwrap();
    let cases = [
        (empty.clone(), "not a run folder: no summary.json"),
        (root.join("missing"), "no such folder"),
        (half.clone(), "outputs are incomplete"),
        (trunc.clone(), "downloads.csv:"),
        (foreign.clone(), "not the summary.json of a run of this shoal version"),
    ];
    for (dir, want) in &cases {
        let d = dir.to_str().unwrap();
        let merged = root.join("merged");
        for args in [
            vec!["report", d],
            vec!["compare", d, good.to_str().unwrap(), "--out", root.join("cmp").to_str().unwrap()],
            vec!["merge", d, "--out", merged.to_str().unwrap()],
        ] {
            let out = shoal(&args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            if args[0] != "merge" || !matches!(*want, "downloads.csv:") {
                assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
            }
        }
    }
    // A truncated baseline names its file.
    let gate = root.join("gate");
    std::fs::create_dir_all(gate.join("baselines")).unwrap();
    let config = std::fs::read_to_string("bench/gate.toml")
        .unwrap()
        .replace("../scenarios/", &format!("{}/scenarios/", env!("CARGO_MANIFEST_DIR")));
    std::fs::write(gate.join("gate.toml"), config).unwrap();
    for f in std::fs::read_dir("bench/baselines").unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(gate.join("baselines").join(f.file_name().unwrap()), &text[..text.len() / 3]).unwrap();
    }
    let out = shoal(&["gate", "--config", gate.join("gate.toml").to_str().unwrap(), "--no-speed"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("baselines/") && err.contains(".json") && !err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// #14: a time-series interval of 0, or one that could write tens of millions of rows, is refused.
#[test]
fn time_series_intervals_are_checked() {
    let out = shoal(&["run", "scenarios/smoke-40.toml", "--interval-ms", "0", "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("at least 1 ms"), "{}", text(&out.stderr));
    let out = shoal(&[
        "run",
        "scenarios/smoke-40.toml",
        "--set",
        "limits.max_sim_time_s=31536000",
        "--interval-ms",
        "1",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("rows of timeseries.csv"), "{}", text(&out.stderr));
}

/// #15: `shoal compare` on a sweep folder compares its cases over seeds, with intervals.
#[test]
fn compare_on_a_sweep_shows_differences_with_intervals() {
    let dir = std::env::temp_dir().join(format!("shoal-cli-cmp-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sweep = dir.join("s.toml");
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke-40.toml");
    std::fs::write(
        &sweep,
        format!(
            "scenario = {:?}\nseeds = 3\nsets = [\"topology.hosts=8\"]\n[[axis]]\nkey = \"protocol.agent.conn_state.max_open_conn\"\nvalues = [10, 2]\n",
            smoke.display().to_string()
        ),
    )
    .unwrap();
    let out_dir = dir.join("out");
    let out = shoal(&[
        "sweep",
        sweep.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--quiet",
        "--no-report",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cmp = dir.join("cmp");
    let out = shoal(&["compare", out_dir.to_str().unwrap(), "--out", cmp.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("reference: protocol.agent.conn_state.max_open_conn=10"), "{stdout}");
    assert!(
        stdout.contains("image p50 ") && stdout.contains("(95 % CI ") && stdout.contains("3 seeds, paired"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(cmp.join("compare-cases.md")).unwrap().contains("| case | metric |"));
    // Mixed folders, an unknown case: refused with the reason.
    let run = dir.join("run");
    assert!(
        shoal(&["run", "scenarios/smoke-40.toml", "--quiet", "--no-report", "--out", run.to_str().unwrap()])
            .status
            .success()
    );
    let out = shoal(&["compare", out_dir.to_str().unwrap(), run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not both"), "{}", text(&out.stderr));
    let out = shoal(&["compare", out_dir.to_str().unwrap(), "--case", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the cases are: protocol.agent.conn_state.max_open_conn=10"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
