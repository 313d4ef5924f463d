//! Reports render from committed fixtures; bad inputs are refused with the file named; comparisons
//! compute their ratios.

use std::fs;
use std::path::{Path, PathBuf};

use shoal_reports::plots::Chart;
use shoal_reports::report::{FIGURES, charts};
use shoal_reports::{Comparison, Run, compare, render};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smoke-40");

/// A fresh copy of the fixture run in a folder of its own.
fn fixture_copy(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-tests").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for f in ["downloads.csv", "timeseries.csv", "summary.json"] {
        fs::copy(Path::new(FIXTURE).join(f), dir.join(f)).unwrap();
    }
    dir
}

fn png_size(path: &Path) -> (u32, u32) {
    let decoder = png::Decoder::new(fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(buf.iter().any(|b| *b != 255), "{} is blank", path.display());
    (info.width, info.height)
}

#[test]
fn report_renders_from_fixture() {
    let dir = fixture_copy("render");
    let r = render(&dir).unwrap();
    // No racks in the smoke scenario: every figure but the rack one.
    let figures = &FIGURES[..FIGURES.len() - 1];
    assert_eq!(r.pngs.len(), figures.len());
    for png in &r.pngs {
        assert!(fs::metadata(png).unwrap().len() > 0);
        assert_eq!(png_size(png), shoal_reports::plots::SIZE, "{}", png.display());
    }
    let md = fs::read_to_string(&r.markdown).unwrap();
    for (stem, _) in figures {
        assert!(md.contains(&format!("]({stem}.png)")), "report.md lacks {stem}.png");
    }
    assert!(!md.contains("rack-uplinks.png"));
    assert!(md.contains("shoal run scenarios/smoke-40.toml --seed 1"));
    assert!(md.contains("| host images | 40 | 40 | 1.536 | 5.514 |"), "{md}");
    assert!(md.contains("1.024 s (host download)"));
    let html = fs::read_to_string(&r.html).unwrap();
    assert_eq!(html.matches("<svg").count(), figures.len());
    assert!(html.contains("shoal run scenarios/smoke-40.toml --seed 1"));
}

#[test]
fn svgs_carry_axis_labels_titles_and_legends() {
    let dir = fixture_copy("svg");
    let run = Run::load(&dir).unwrap();
    let want: [&[&str]; 4] = [
        &[
            "download time per blob (s), 2 s buckets",
            "number of blob downloads",
            "blob downloads (80 complete)",
        ],
        &["image completion per host (s)", "hosts complete (% of all hosts)", "lower bound 1.024 s"],
        &[
            "time since start (s)",
            "payload rate (GB/s)",
            "aggregate throughput",
            "origin egress",
            "blob downloads in progress",
        ],
        &["where the payload came from", "payload received (GB)", "origins: 1.28 GB", "elsewhere: 4.42 GB"],
    ];
    for ((chart, (stem, _)), labels) in charts(&run).iter().zip(FIGURES).zip(want) {
        let svg = chart.render(&dir.join(format!("{stem}.png"))).unwrap();
        assert!(svg.contains("smoke-40 (seed 1)"), "{stem}: no title");
        for l in labels {
            assert!(svg.contains(l), "{stem}.svg lacks {l:?}");
        }
    }
}

/// Every `src=`/`href=` value and every URL-like string in a page.
fn external_references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["src=", "href=", "url("] {
        for (i, _) in html.match_indices(attr) {
            let value: String = html[i + attr.len()..].chars().take(80).collect();
            found.push(format!("{attr}{value}"));
        }
    }
    for scheme in ["http://", "https://", "\"//", "'//"] {
        if html.contains(scheme) {
            found.push(scheme.to_string());
        }
    }
    found
}

#[test]
fn report_html_is_self_contained() {
    let dir = fixture_copy("selfcontained");
    let html = fs::read_to_string(render(&dir).unwrap().html).unwrap();
    assert_eq!(external_references(&html), Vec::<String>::new());
    assert!(html.contains("<style>"));
}

#[test]
fn missing_file_is_refused_naming_it() {
    let dir = fixture_copy("missing");
    fs::remove_file(dir.join("timeseries.csv")).unwrap();
    let err = render(&dir).unwrap_err().to_string();
    assert!(err.contains("timeseries.csv"), "{err}");
    assert!(!dir.join("report.html").exists());
}

#[test]
fn malformed_csv_row_is_refused_with_file_line_and_field() {
    let dir = fixture_copy("malformed-csv");
    let path = dir.join("downloads.csv");
    let text = fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 3 of the file: the second data row; its start_s becomes a word.
    lines[2] = lines[2].replacen(",0.000000,", ",soon,", 1);
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = render(&dir).unwrap_err().to_string();
    assert!(err.contains("downloads.csv:3"), "{err}");
    assert!(err.contains("field `start_s`"), "{err}");
}

#[test]
fn malformed_outcome_and_short_row_are_refused() {
    let dir = fixture_copy("malformed-outcome");
    let path = dir.join("downloads.csv");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen(",complete,", ",done,", 1)).unwrap();
    let err = render(&dir).unwrap_err().to_string();
    assert!(err.contains("downloads.csv:2") && err.contains("field `outcome`"), "{err}");

    // A row with 6 of its 12 fields.
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[1] = lines[1].split(',').take(6).collect::<Vec<_>>().join(",");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = render(&dir).unwrap_err().to_string();
    assert!(err.contains("downloads.csv:2"), "{err}");
}

#[test]
fn malformed_summary_is_refused_naming_file_and_field() {
    let dir = fixture_copy("malformed-json");
    let path = dir.join("summary.json");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"t_min_s\": 1.024", "\"t_min_s\": \"fast\"")).unwrap();
    let err = render(&dir).unwrap_err().to_string();
    assert!(err.contains("summary.json"), "{err}");
    assert!(err.contains("lower_bound.t_min_s"), "{err}");
}

#[test]
fn compare_computes_ratios_to_the_first_run() {
    let base = Run::load(Path::new(FIXTURE)).unwrap();
    let mut slower = base.clone();
    slower.dir = PathBuf::from("slower");
    let h = &mut slower.summary.host_images;
    h.p50 = h.p50.map(|v| v * 2.0);
    h.p99 = None;
    slower.summary.origin_egress_bytes /= 4;
    slower.summary.efficiency.p50 = slower.summary.efficiency.p50.map(|v| v / 2.0);
    let c = Comparison::of(&[base.clone(), slower]);
    assert!(c.same_scenario());
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
    assert!(close(c.ratio(0, 0), 1.0));
    assert!(close(c.ratio(1, 0), 2.0), "p50");
    assert_eq!(c.ratio(1, 1), None, "p99 unfinished");
    assert!(close(c.ratio(1, 3), 1.0), "max unchanged");
    assert!(close(c.ratio(1, 4), 0.25), "origin egress");
    assert!(close(c.ratio(1, 5), 0.5), "efficiency p50");
    let md = c.markdown("cdf.png");
    assert!(md.contains("| slower | smoke-40 | kraken | 1 | 3.072 | 2.000 | unfinished | - |"), "{md}");
}

#[test]
fn compare_writes_overlaid_cdfs_and_flags_different_scenarios() {
    let a = fixture_copy("compare-a");
    let b = fixture_copy("compare-b");
    let summary = b.join("summary.json");
    let text = fs::read_to_string(&summary).unwrap();
    let halved = text
        .replace("\"scenario\": \"smoke-40\"", "\"scenario\": \"smoke-40-halved\"")
        .replace("\"t_min_s\": 1.024", "\"t_min_s\": 0.512");
    fs::write(&summary, halved).unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-tests").join("compare-out");
    let c = compare(&[a, b], &out).unwrap();
    assert!(!c.comparison.same_scenario());
    assert_eq!(png_size(&c.png), shoal_reports::plots::SIZE);
    let md = fs::read_to_string(&c.markdown).unwrap();
    assert!(md.contains("different scenarios") && md.contains("smoke-40, smoke-40-halved"), "{md}");
    let html = fs::read_to_string(&c.html).unwrap();
    assert!(html.contains("different scenarios"));
    assert!(html.contains("compare-a (40 hosts)") && html.contains("compare-b (40 hosts)"), "legend");
    assert_eq!(external_references(&html), Vec::<String>::new());
    let Chart::Cdf { cdfs, .. } = c.comparison.chart() else { panic!("not a CDF") };
    assert_eq!(cdfs.len(), 2);
}

#[test]
fn compare_of_policies_on_one_workload_says_so_and_shows_each_policy() {
    let a = fixture_copy("policy-a");
    let b = fixture_copy("policy-b");
    let summary = b.join("summary.json");
    let text = fs::read_to_string(&summary).unwrap();
    assert!(!text.contains("\"policy\""), "the fixture predates policies: read as kraken");
    let other = text
        .replace("\"scenario\": \"smoke-40\"", "\"scenario\": \"smoke-40-bt\"")
        .replace("\"engine\": \"des\",", "\"engine\": \"des\",\n  \"policy\": \"bittorrent\",");
    fs::write(&summary, other).unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-tests").join("policy-out");
    let c = compare(&[a, b], &out).unwrap();
    assert!(!c.comparison.same_scenario() && c.comparison.same_workload());
    let md = fs::read_to_string(&c.markdown).unwrap();
    assert!(md.contains("smoke-40 (kraken), smoke-40-bt (bittorrent)"), "{md}");
    assert!(md.contains("same host count and lower bound"), "{md}");
    assert!(md.contains("| smoke-40 | kraken |") && md.contains("| smoke-40-bt | bittorrent |"), "{md}");
}

#[test]
fn rack_topologies_get_the_rack_uplink_figure() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/racks-80");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-tests").join("racks");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for f in ["downloads.csv", "timeseries.csv", "summary.json", "racks.csv"] {
        fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let r = render(&dir).unwrap();
    assert_eq!(r.pngs.len(), FIGURES.len());
    let last = r.pngs.last().unwrap();
    assert!(last.ends_with("rack-uplinks.png"));
    assert_eq!(png_size(last), shoal_reports::plots::SIZE);
    let html = fs::read_to_string(&r.html).unwrap();
    assert!(html.contains("rack uplink utilisation (2 racks)"), "the axis names the racks");
    assert!(html.contains("most loaded rack") && html.contains("median rack"));
    // A malformed racks.csv is refused, naming it.
    fs::write(dir.join("racks.csv"), "time_s,rack,uplink_bytes,uplink_utilisation,downlink_bytes,downlink_utilisation\n1.0,x,1,0.5,1,0.5\n").unwrap();
    let e = render(&dir).unwrap_err().to_string();
    assert!(e.contains("racks.csv") && e.contains("rack"), "{e}");
}

#[test]
fn compare_says_when_runs_of_one_scenario_differ_in_settings() {
    let set_replay = |dir: &Path, replay: &str| {
        let summary = dir.join("summary.json");
        let text = fs::read_to_string(&summary).unwrap();
        fs::write(
            &summary,
            text.replacen("\"seed\": 1,", &format!("\"seed\": 1,\n  \"replay\": \"{replay}\","), 1),
        )
        .unwrap();
    };
    let a = fixture_copy("settings-a");
    let b = fixture_copy("settings-b");
    set_replay(&a, "shoal run scenarios/smoke-40.toml --seed 1");
    set_replay(&b, "shoal run scenarios/smoke-40.toml --seed 1 --set origins.count=2");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-tests").join("settings-out");
    let c = compare(&[a.clone(), b], &out).unwrap();
    assert!(c.comparison.same_scenario() && c.comparison.different_settings());
    let md = fs::read_to_string(&c.markdown).unwrap();
    assert!(md.contains("with different settings") && md.contains("`--set origins.count=2`"), "{md}");
    assert!(md.contains("settings-a: `no overrides`"), "{md}");
    // The same settings: no such note.
    let c = compare(&[a.clone(), a], &out).unwrap();
    assert!(!c.comparison.different_settings());
}
