//! `shoal sweep` as a user meets it: a grid of 2 cases × 3 seeds of smoke-40 at 8 hosts, its run
//! folders against `shoal run`, its tables whatever --jobs, resuming, bad input, shards and collect.

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

/// A fresh folder for one test.
fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The scenario as a path relative to the sweep file in `dir`... written absolute, so the replay
/// commands work from the crate's root where the binary runs.
fn smoke() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke-40.toml").display().to_string()
}

const GRID: &str = "seeds = 3\nsets = [\"topology.hosts=8\"]\n\n[[axis]]\nkey = \"protocol.policy\"\nvalues = [\"kraken\", \"bittorrent\"]\n";

fn write_sweep(dir: &Path, body: &str) -> String {
    let file = dir.join("sweep.toml");
    std::fs::write(&file, format!("scenario = \"{}\"\n{body}", smoke())).unwrap();
    file.display().to_string()
}

fn sweep(file: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["sweep", file, "--out", out.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    shoal(&args)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn grid_runs_are_shoal_runs_and_tables_do_not_depend_on_jobs() {
    let dir = tmp("grid");
    let file = write_sweep(&dir, GRID);
    let one = dir.join("one");
    let out = sweep(&file, &one, &["--jobs", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("2 cases × 3 seeds = 6 runs"), "{}", text(&out.stderr));
    let two = dir.join("two");
    let out = sweep(&file, &two, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["sweep.csv", "cases.csv", "sweep.json"] {
        assert_eq!(read(&one.join(f)), read(&two.join(f)), "{f} differs between --jobs 1 and 2");
    }
    let csv = text(&read(&two.join("sweep.csv")));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 7, "{csv}");
    assert!(
        lines[0].starts_with("case,protocol.policy,seed,status,") && lines[0].contains("host_images.p50")
    );
    assert!(lines[1].starts_with("protocol.policy=kraken,kraken,1,complete,"), "{}", lines[1]);
    assert!(lines[6].starts_with("protocol.policy=bittorrent,bittorrent,3,complete,"), "{}", lines[6]);
    let cases = text(&read(&two.join("cases.csv")));
    assert!(cases.lines().next().unwrap().ends_with("metric,n,mean,sd,ci95_low,ci95_high,median,min,max"));
    assert!(cases.lines().any(|l| l.contains(",host_images.p99,3,")), "{cases}");
    for f in [
        "sweep.md",
        "sweep.html",
        "sweep-host_images-p99-vs-protocol-policy.png",
        "sweep-host-completion-cdf.png",
    ] {
        assert!(two.join(f).exists(), "{f}");
    }

    // Every run folder is what `shoal run` of its replay command writes, all but perf.json.
    for case in ["protocol.policy=kraken", "protocol.policy=bittorrent"] {
        let run = two.join("runs").join(case).join("2");
        let summary: serde_json::Value = serde_json::from_slice(&read(&run.join("summary.json"))).unwrap();
        let replay = summary["replay"].as_str().unwrap().to_string();
        let alone = dir.join(format!("alone-{case}"));
        let mut args: Vec<String> = replay.split(' ').skip(1).map(String::from).collect();
        args.extend(["--quiet".into(), "--out".into(), alone.display().to_string()]);
        let out = shoal(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{replay}: {}", text(&out.stderr));
        let mut names: Vec<String> = std::fs::read_dir(&alone)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "perf.json")
            .collect();
        names.sort();
        assert!(names.len() >= 8, "{names:?}");
        for n in &names {
            assert!(read(&alone.join(n)) == read(&run.join(n)), "{case}: {n} differs from `{replay}`");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_keeps_complete_runs_and_redoes_a_half_written_one() {
    let dir = tmp("resume");
    let file = write_sweep(&dir, GRID);
    let o = dir.join("o");
    assert!(sweep(&file, &o, &["--no-report"]).status.success());
    let csv = read(&o.join("sweep.csv"));
    let again = sweep(&file, &o, &["--no-report"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("--resume"), "{}", text(&again.stderr));
    let victim = o.join("runs/protocol.policy=bittorrent/2");
    std::fs::remove_file(victim.join("summary.json")).unwrap();
    let before = read(&o.join("runs/protocol.policy=kraken/1/perf.json"));
    let out = sweep(&file, &o, &["--no-report", "--resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1 to make, 5 already complete"), "{}", text(&out.stderr));
    assert!(victim.join("summary.json").exists());
    assert_eq!(before, read(&o.join("runs/protocol.policy=kraken/1/perf.json")), "a complete run was redone");
    assert_eq!(csv, read(&o.join("sweep.csv")));
    // A run made by another build is redone.
    let foreign = o.join("runs/protocol.policy=kraken/2/perf.json");
    let perf = String::from_utf8(read(&foreign)).unwrap();
    let key = "\"build_id\": \"";
    let id_at = perf.find(key).expect("perf.json names its build") + key.len();
    let forged = format!("{}0000000000000000{}", &perf[..id_at], &perf[id_at + 16..]);
    std::fs::write(&foreign, &forged).unwrap();
    let out = sweep(&file, &o, &["--no-report", "--resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1 to make, 5 already complete"), "{}", text(&out.stderr));
    assert_ne!(String::from_utf8(read(&foreign)).unwrap(), forged, "the other build's run was redone");
    // Another sweep into the same folder is refused.
    let other = write_sweep(&dir, "seeds = 2\nsets = [\"topology.hosts=8\"]\n");
    let out = sweep(&other, &o, &["--resume"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("holds another sweep"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_sweeps_are_refused_before_any_run_with_file_line_and_field() {
    let dir = tmp("bad");
    let cases: [(&str, &str, &str); 7] = [
        ("seeds = 3\n[[axis]]\nkey = \"topology.hostz\"\nvalues = [4, 8]\n", ":5:", "topology.hostz"),
        ("seeds = 3\n[[axis]]\nkey = \"topology.hosts\"\nvalues = [4,\n 0]\n", ":6:", "topology.hosts"),
        ("seeds = 0\n", ":2:", "seeds"),
        ("seeds = []\n", ":2:", "seeds"),
        ("seeds = 2\n[[case]]\nlabel = \"a\"\n[[case]]\nlabel = \"a\"\n", ":6:", "case.1.label"),
        ("seeds = 2\n[[case]]\nlabel = \"a/b\"\n", ":4:", "case.0.label"),
        ("seeds = 2\nsead = 4\n", ":3:", "sead"),
    ];
    for (i, (body, line, field)) in cases.iter().enumerate() {
        let file = write_sweep(&dir, body);
        let o = dir.join(format!("o{i}"));
        let out = sweep(&file, &o, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(
            err.contains(&format!("sweep.toml{line}")) && err.contains(field),
            "{body}: want {line} {field}: {err}"
        );
        assert!(!o.join("runs").exists(), "{body}: a run started");
    }
    let file = write_sweep(&dir, GRID);
    for shard in ["3/2", "0/0", "0/2"] {
        let out = sweep(&file, &dir.join("s"), &["--shard", shard]);
        assert_eq!(out.status.code(), Some(2), "--shard {shard}");
        assert!(text(&out.stderr).contains("--shard"), "{}", text(&out.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_collected_equal_the_whole_sweep() {
    let dir = tmp("shards");
    let file = write_sweep(&dir, GRID);
    let whole = dir.join("whole");
    assert!(sweep(&file, &whole, &["--no-report"]).status.success());
    let (a, b) = (dir.join("a"), dir.join("b"));
    for (shard, o) in [("1/2", &a), ("2/2", &b)] {
        let out = sweep(&file, o, &["--no-report", "--shard", shard, "--jobs", "1"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(!o.join("sweep.csv").exists());
    }
    assert!(a.join("runs/protocol.policy=kraken/1/summary.json").exists());
    assert!(b.join("runs/protocol.policy=kraken/2/summary.json").exists());
    assert!(!a.join("runs/protocol.policy=kraken/2").exists());
    let merged = dir.join("merged");
    let args =
        ["sweep", "collect", a.to_str().unwrap(), b.to_str().unwrap(), "--out", merged.to_str().unwrap()];
    let out = shoal(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in ["sweep.csv", "cases.csv", "sweep.json"] {
        assert_eq!(read(&whole.join(f)), read(&merged.join(f)), "{f}");
    }
    // A run present twice, and folders of different sweeps, are refused.
    let out = shoal(&[
        "sweep",
        "collect",
        a.to_str().unwrap(),
        whole.to_str().unwrap(),
        "--out",
        dir.join("m2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("present in both"), "{}", text(&out.stderr));
    let other = write_sweep(&dir, "seeds = 1\nsets = [\"topology.hosts=6\"]\n");
    let c = dir.join("c");
    assert!(sweep(&other, &c, &["--no-report"]).status.success());
    let out = shoal(&[
        "sweep",
        "collect",
        a.to_str().unwrap(),
        c.to_str().unwrap(),
        "--out",
        dir.join("m3").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("different sweeps"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_keeps_finished_runs_and_resume_completes_the_sweep() {
    let dir = tmp("int");
    let kraken = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/kraken-2600.toml");
    let file = dir.join("sweep.toml");
    std::fs::write(
        &file,
        format!("scenario = \"{}\"\nseeds = 5\nsets = [\"topology.hosts=200\"]\n", kraken.display()),
    )
    .unwrap();
    let o = dir.join("o");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--out",
            o.to_str().unwrap(),
            "--quiet",
            "--no-report",
            "--jobs",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first run is written (each takes about a second).
    let started = std::time::Instant::now();
    while !o.join("runs/base/1/summary.json").exists() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no run finished within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("--resume` completes it"), "{err}");
    let complete = (1..=5).filter(|s| o.join(format!("runs/base/{s}/summary.json")).exists()).count();
    assert!((1..5).contains(&complete), "{complete} runs complete after Ctrl-C");
    let out = sweep(file.to_str().unwrap(), &o, &["--no-report", "--resume"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("{} to make, {complete} already complete", 5 - complete)));
    let csv = text(&read(&o.join("sweep.csv")));
    assert_eq!(csv.lines().filter(|l| l.contains(",complete,")).count(), 5, "{csv}");
    let _ = std::fs::remove_dir_all(&dir);
}
