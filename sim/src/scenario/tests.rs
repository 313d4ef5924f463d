//! Loading, validation messages, overrides, the bound, and the shipped scenario files.

use std::path::PathBuf;

use shoal_protocols::config::PiecePolicy;

use super::*;

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// A minimal valid scenario; tests append or replace lines.
const MINIMAL: &str = r#"name = "t"

[topology]
hosts = 10
upload_bytes_per_s = "100MB/s"
download_bytes_per_s = "100MB/s"

[origins]
upload_bytes_per_s = "1GB/s"

[[workload.blobs]]
name = "b"
size = "1GB"

[[workload.pulls]]
image = "b"
"#;

fn load(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::from_toml(text, "x.toml", &[])
}

fn load_set(text: &str, sets: &[(&str, &str)]) -> Result<Scenario, ScenarioError> {
    let sets: Vec<(String, String)> = sets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Scenario::from_toml(text, "x.toml", &sets)
}

fn err(text: &str) -> String {
    load(text).expect_err("should be refused").to_string()
}

#[test]
fn minimal_defaults() {
    let s = load(MINIMAL).unwrap();
    assert_eq!((s.seed, s.max_sim_time, s.trackers, s.origins.len()), (1, Duration::from_secs(3600), 1, 1));
    assert_eq!(s.topology.hosts.len(), 10);
    assert_eq!(s.topology.latency, Duration::ZERO);
    assert_eq!(s.origins[0].download_bytes_per_s, 1_000_000_000, "download defaults to upload");
    assert_eq!(s.workload.images, vec![Image { name: "b".into(), layers: vec![0] }]);
    assert_eq!(s.workload.pulls.len(), 10);
    assert_eq!(s.protocol.agent.dispatch.piece_request_policy, PiecePolicy::RarestFirst, "base_yaml");
    assert_eq!(s.protocol.origin.piece_lengths.select(1 << 30), 4 << 20);
    assert_eq!(s.protocol.policy, Policy::Kraken);
}

#[test]
fn every_scenario_file_loads() {
    let mut n = 0;
    let compare = scenarios_dir().join("compare");
    let dirs = [scenarios_dir()].into_iter().chain(compare.is_dir().then_some(compare));
    for entry in dirs.flat_map(|d| std::fs::read_dir(d).unwrap()) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            assert!(s.lower_bound().t_min_s() > 0.0);
            n += 1;
        }
    }
    assert!(n >= 3, "found {n} scenario files");
}

#[test]
fn readme_examples_load() {
    let readme = std::fs::read_to_string(scenarios_dir().join("README.md")).unwrap();
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed block");
        load(&body[..end]).unwrap_or_else(|e| panic!("README example {blocks}: {e}\n{}", &body[..end]));
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(blocks >= 2, "found {blocks} examples");
}

#[test]
fn kraken_2600_resolves_to_the_benchmark() {
    let s = Scenario::load(scenarios_dir().join("kraken-2600.toml"), &[]).unwrap();
    assert_eq!(s.topology.hosts.len(), 2600);
    assert!(
        s.topology
            .hosts
            .iter()
            .all(|h| h.upload_bytes_per_s == 1_250_000_000 && h.download_bytes_per_s == 300_000_000)
    );
    assert_eq!(s.origins.len(), 5);
    assert_eq!(s.origins[0].upload_bytes_per_s, 1_250_000_000);
    assert_eq!(s.trackers, 5);
    assert_eq!(s.workload.blobs.iter().map(|b| b.size).collect::<Vec<_>>(), vec![1_500_000_000; 2]);
    assert_eq!(s.workload.pulls.len(), 2600);
    assert!(s.workload.pulls.iter().all(|p| p.at == Duration::ZERO));
    let a = &s.protocol.agent;
    assert_eq!(a.dispatch.piece_request_policy, PiecePolicy::RarestFirst);
    assert_eq!((a.dispatch.pipeline_limit, a.dispatch.origin_pipeline_limit), (3, 5));
    assert_eq!(a.conn_state.max_open_conn, 10);
    assert_eq!(s.protocol.origin.piece_lengths.select(1_500_000_000), 4 << 20);
    assert!(!s.protocol.origin_scheduler.conn.bandwidth.enable);
    assert_eq!(s.topology.latency, Duration::from_micros(200));
}

#[test]
fn racks_2600_topology() {
    let s = Scenario::load(scenarios_dir().join("racks-2600.toml"), &[]).unwrap();
    let racks = s.topology.racks.as_ref().unwrap();
    assert_eq!(racks.groups.len(), 65);
    assert!(
        racks.groups.iter().all(|g| g.uplink_bytes_per_s == Some(3_000_000_000) && g.members.len() == 40)
    );
    assert_eq!(s.topology.hosts[41].place, Place { rack: Some(1), pod: None, zone: None });
    assert_eq!(s.origins[0].place, Place::default());
    let (h0, h1, h40) = (s.topology.hosts[0].place, s.topology.hosts[1].place, s.topology.hosts[40].place);
    assert_eq!(s.topology.latency_between(h0, h1), Duration::from_micros(200));
    assert_eq!(s.topology.latency_between(h0, h40), Duration::from_micros(300));
    let b = s.lower_bound();
    assert!((b.t_min_s() - 10.0).abs() < 1e-9);
    let cut = b.terms.iter().find(|t| t.name.starts_with("rack cut")).unwrap();
    assert!((cut.seconds - 8.0).abs() < 1e-9, "{}", cut.seconds);
}

#[test]
fn hierarchy_pods_and_zones() {
    let text = MINIMAL.replace("hosts = 10", "hosts = 50")
        + "[topology.racks]\nhosts_per_rack = 4\nuplink_bytes_per_s = \"200MB/s\"\n\
           [topology.pods]\nracks_per_pod = 3\noversubscription = 2.0\nlatency_ms = 1\n\
           [topology.zones]\ncount = 2\nlatency_ms = 10\n";
    let s = load(&text).unwrap();
    let racks = s.topology.racks.as_ref().unwrap();
    assert_eq!(racks.groups.len(), 13, "a partial last rack of 2 hosts");
    assert_eq!(racks.groups[12].members, 48..50);
    let pods = s.topology.pods.as_ref().unwrap();
    assert_eq!(pods.groups.len(), 5);
    assert_eq!(pods.groups[0].uplink_bytes_per_s, Some(300_000_000), "3 × 200 MB/s / 2");
    assert_eq!(s.topology.zones.as_ref().unwrap().groups.len(), 2);
    assert_eq!(s.topology.hosts[49].place, Place { rack: Some(12), pod: Some(4), zone: Some(1) });
    assert_eq!(s.topology.host_range(1, 4), 48..50);
    assert_eq!(s.topology.host_range(2, 0), 0..36);
    let (a, b) = (s.topology.hosts[0].place, s.topology.hosts[49].place);
    assert_eq!(s.topology.latency_between(a, b), Duration::from_millis(11));
}

#[test]
fn arrivals() {
    let waves = MINIMAL.replace(
        "image = \"b\"\n",
        "image = \"b\"\npullers = 4\narrival = { kind = \"waves\", waves = 2, interval_s = 1.5 }\nstart_s = 1\n",
    );
    let s = load(&waves).unwrap();
    let got: Vec<(usize, u128)> = s.workload.pulls.iter().map(|p| (p.host, p.at.as_millis())).collect();
    assert_eq!(
        got,
        vec![(0, 1000), (5, 1000), (2, 2500), (7, 2500)],
        "hosts evenly spaced, dealt round-robin"
    );

    let poisson = MINIMAL
        .replace("image = \"b\"\n", "image = \"b\"\narrival = { kind = \"poisson\", rate_per_s = 10 }\n");
    let a = load(&poisson).unwrap();
    let b = load(&poisson).unwrap();
    assert_eq!(a.workload.pulls, b.workload.pulls, "seeded");
    assert!(a.workload.pulls.windows(2).all(|w| w[0].at < w[1].at));
    let c = load_set(&poisson, &[("seed", "2")]).unwrap();
    assert_ne!(a.workload.pulls, c.workload.pulls);
    assert!(
        load(&MINIMAL.replace("image = \"b\"\n", "image = \"b\"\narrival = \"waves\"\n"))
            .unwrap_err()
            .to_string()
            .contains("workload.pulls.0.arrival.waves: missing")
    );
}

#[test]
fn error_messages_name_file_line_and_field() {
    let text =
        MINIMAL.to_string() + "[topology.racks]\nhosts_per_rack = 5\nuplink_bytes_per_s = \"300 MB/z\"\n";
    assert_eq!(
        err(&text),
        "x.toml:19:1: topology.racks.uplink_bytes_per_s: unknown unit \"MB/z\" (expected B, KB, KiB, MB, MiB, \
         GB, GiB, TB, TiB, optionally /s, or bit, Kbit, Mbit, Gbit, Tbit, Kibit, Mibit, Gibit, bps, Kbps, \
         Mbps, Gbps, Tbps)"
    );
    let e = err(&MINIMAL.replace("hosts = 10", "hosts = 10\nhsots = 3"));
    assert!(e.starts_with("x.toml:5:1: topology.hsots: unknown field `hsots`"), "{e}");
    let e = err(&MINIMAL.replace("hosts = 10", "hosts = 0"));
    assert!(e.starts_with("x.toml:4:1: topology.hosts: 0 is out of range: must be in [1, 1e6] count"), "{e}");
    let e = err(&MINIMAL.replace("hosts = 10", "hosts = -3"));
    assert!(e.starts_with("x.toml:4:1: topology.hosts: -3 is out of range"), "{e}");
    let e = err(&MINIMAL.replace("size = \"1GB\"", "size = \"1gb\""));
    assert!(e.starts_with("x.toml:13:1: workload.blobs.0.size: unknown unit \"gb\""), "{e}");
    let e = err(&(MINIMAL.to_string() + "[[workload.images]]\nname = \"i\"\nlayers = [\"b\", \"c\"]\n"));
    assert!(e.starts_with("x.toml:19:16: workload.images.0.layers.1: unknown blob \"c\""), "{e}");
    let e = err(&MINIMAL.replace("[origins]\n", "[origins]\ncount = 0\n"));
    assert!(
        e.starts_with("x.toml:9:1: origins.count: 0 is out of range: must be in [1, 10000] count"),
        "{e}"
    );
    let e =
        err(&MINIMAL.replace("name = \"t\"", "name = \"t\"\n[protocol.agent.dispatch]\npipeline_limt = 4"));
    assert!(e.starts_with("x.toml:3:1: protocol.agent.dispatch.pipeline_limt: unknown field"), "{e}");
    let e = err(&MINIMAL.replace("image = \"b\"", "image = \"nope\""));
    assert!(e.starts_with("x.toml:16:1: workload.pulls.0.image: unknown image or blob \"nope\""), "{e}");
    let e = err(&(MINIMAL.to_string()
        + "[topology.racks]\nhosts_per_rack = 5\nuplink_bytes_per_s = 1\noversubscription = 2\n"));
    assert!(
        e.contains("topology.racks.oversubscription: give uplink_bytes_per_s or oversubscription, not both"),
        "{e}"
    );
    let e = err(&(MINIMAL.to_string() + "[protocol]\npolicy = \"gossip\"\n"));
    assert!(e.starts_with("x.toml:18:1: protocol.policy: unknown variant `gossip`"), "{e}");
    let e = err(&MINIMAL.replace("hosts = 10\n", ""));
    assert!(e.starts_with("x.toml:3:2: topology: missing field `hosts`"), "{e}");
    let e = err("name = \"t\"\ntopology = [");
    assert!(e.starts_with("x.toml:2:"), "syntax errors are located too: {e}");
}

#[test]
fn overrides_apply_before_validation() {
    let s = load_set(
        MINIMAL,
        &[
            ("topology.hosts", "100"),
            ("protocol.agent.dispatch.pipeline_limit", "5"),
            ("workload.blobs.0.size", "2GB"),
            ("workload.pulls.0.pullers", "10"),
            ("topology.racks.hosts_per_rack", "30"),
            ("topology.latency_ms", "0.5"),
        ],
    )
    .unwrap();
    assert_eq!(s.topology.hosts.len(), 100);
    assert_eq!(s.protocol.agent.dispatch.pipeline_limit, 5);
    assert_eq!(s.protocol.agent.dispatch.piece_request_policy, PiecePolicy::RarestFirst);
    assert_eq!(s.workload.blobs[0].size, 2_000_000_000);
    assert_eq!(s.workload.pulls.len(), 10);
    assert_eq!(s.topology.racks.as_ref().unwrap().groups.len(), 4);
    assert_eq!(s.topology.latency, Duration::from_micros(500));

    let e = load_set(MINIMAL, &[("topology.hosts", "0")]).unwrap_err().to_string();
    assert!(e.starts_with("override `topology.hosts=0`: topology.hosts: 0 is out of range"), "{e}");
    let e = load_set(MINIMAL, &[("topology.hostz", "3")]).unwrap_err().to_string();
    assert!(e.starts_with("override `topology.hostz=3`: topology.hostz: unknown field"), "{e}");
    let e = load_set(MINIMAL, &[("workload.blobs.3.size", "1GB")]).unwrap_err().to_string();
    assert_eq!(e, "override `workload.blobs.3.size=1GB`: workload.blobs.3: index 3 out of range (length 1)");
    let e = load_set(MINIMAL, &[("topology.hosts.x", "1")]).unwrap_err().to_string();
    assert!(e.contains("topology.hosts: is a integer, not a table"), "{e}");
    let e = Scenario::load_with_sets(scenarios_dir().join("smoke-40.toml"), &["nokey".into()]).unwrap_err();
    assert_eq!(e.to_string(), "override `nokey`: expected key=value");
    // A table created by an override but left incomplete is blamed on the override.
    let e = load_set(MINIMAL, &[("topology.pods.latency_ms", "1")]).unwrap_err().to_string();
    assert!(e.starts_with("override `topology.pods.latency_ms=1`: topology.pods: missing field"), "{e}");
}

/// kraken-2600 read symmetrically: 300 MB/s up as well as down, as reference/simulation.md §3.2 does.
fn symmetric() -> Vec<(String, String)> {
    vec![
        ("topology.upload_bytes_per_s".into(), "300MB/s".into()),
        ("protocol.agent.conn.bandwidth.egress_bits_per_s".into(), "300MB/s".into()),
    ]
}

#[test]
fn kraken_bound_numbers() {
    // reference/simulation.md §3.2.
    let s = Scenario::load(scenarios_dir().join("kraken-2600.toml"), &symmetric()).unwrap();
    let b = s.lower_bound();
    let t = |n: &str| b.term(n).unwrap().seconds;
    assert!((t("origin upload") - 0.48).abs() < 1e-9);
    assert!((t("host download") - 10.0).abs() < 1e-9);
    assert!((t("aggregate upload") - 9.92).abs() < 0.005, "{}", t("aggregate upload"));
    assert!((b.t_min_s() - 10.0).abs() < 1e-9);
    assert_eq!(b.binding_term().name, "host download");
    assert_eq!(
        (b.pulling_hosts, b.max_bytes_per_host, b.total_bytes),
        (2600, 3_000_000_000, 7_800_000_000_000)
    );

    let mut sets = symmetric();
    sets.push(("origins.count".into(), "10".into()));
    let s10 = Scenario::load(scenarios_dir().join("kraken-2600.toml"), &sets).unwrap();
    let b = s10.lower_bound();
    assert!((b.term("origin upload").unwrap().seconds - 0.24).abs() < 1e-9);
    assert!((b.term("aggregate upload").unwrap().seconds - 9.84).abs() < 0.005);
    assert!((b.t_min_s() - 10.0).abs() < 1e-9);

    let shown = b.to_string();
    assert!(
        shown.contains("host download") && shown.contains("<- binds") && shown.contains("T_min"),
        "{shown}"
    );
}

#[test]
fn rack_cut_bound_example() {
    // 65 racks × 40 hosts behind 4 GB/s: 40·3 / (4 + 12) = 7.5 s; one copy in: 3 / 4 = 0.75 s.
    let sets = [
        ("topology.racks.hosts_per_rack", "40"),
        ("topology.racks.uplink_bytes_per_s", "4GB/s"),
        ("topology.upload_bytes_per_s", "300MB/s"),
        ("protocol.agent.conn.bandwidth.egress_bits_per_s", "300MB/s"),
    ];
    let text = std::fs::read_to_string(scenarios_dir().join("kraken-2600.toml")).unwrap();
    let b = load_set(&text, &sets).unwrap().lower_bound();
    let cut = b.terms.iter().find(|t| t.name.starts_with("rack cut")).unwrap();
    assert!((cut.seconds - 7.5).abs() < 1e-9, "{}", cut.seconds);
    assert_eq!(cut.name, "rack cut (rack 0, 40 hosts)");
    let copy = b.terms.iter().find(|t| t.name.starts_with("rack ingress")).unwrap();
    assert!((copy.seconds - 0.75).abs() < 1e-9);
    assert!((b.t_min_s() - 10.0).abs() < 1e-9);
    // An origin inside a rack removes that rack's cut terms only.
    let sets = [
        sets[0],
        sets[1],
        sets[2],
        sets[3],
        ("origins.placement", "{ rack = 0 }"),
        ("topology.racks.uplink_bytes_per_s", "1GB/s"),
    ];
    let b = load_set(&text, &sets).unwrap().lower_bound();
    let cut = b.terms.iter().find(|t| t.name.starts_with("rack cut")).unwrap();
    assert_eq!(cut.name, "rack cut (rack 1, 40 hosts)");
    assert!((cut.seconds - 120.0 / 13.0).abs() < 1e-9);
}

#[test]
fn mixed_images_use_per_host_bytes() {
    let text = MINIMAL.to_string()
        + "[[workload.blobs]]\nname = \"c\"\nsize = \"3GB\"\n\
           [[workload.pulls]]\nimage = \"c\"\npullers = 2\n";
    let s = load(&text).unwrap();
    assert_eq!(s.bytes_per_host()[0], 4_000_000_000);
    assert_eq!(s.bytes_per_host()[1], 1_000_000_000);
    let b = s.lower_bound();
    assert!((b.term("origin upload").unwrap().seconds - 4.0).abs() < 1e-9, "D = 4 GB at 1 GB/s");
    assert!((b.term("host download").unwrap().seconds - 40.0).abs() < 1e-9);
    assert_eq!(b.total_bytes, 16_000_000_000);
}

#[test]
fn absurd_values_are_refused_never_panic() {
    let huge = MINIMAL.replace(
        "image = \"b\"\n",
        "image = \"b\"\narrival = { kind = \"waves\", waves = 1000000, interval_s = 1e18 }\n",
    );
    let e = err(&huge);
    assert!(e.contains("workload.pulls.0.arrival.interval_s: 1e18 is out of range: must be in [0, "), "{e}");
    for (bad, shown) in [("latency_ms = nan", "NaN"), ("latency_ms = -1", "-1"), ("latency_ms = inf", "inf")]
    {
        let e = err(&MINIMAL.replace("hosts = 10", &format!("hosts = 10\n{bad}")));
        assert!(
            e.contains(&format!("topology.latency_ms: {shown} is out of range: must be in [0, 60000] ms")),
            "{e}"
        );
    }
    let e = err(&MINIMAL.replace("size = \"1GB\"", "size = 0"));
    assert!(e.contains("workload.blobs.0.size: 0 is out of range: must be in [1, "), "{e}");
    let e = err(&MINIMAL.replace("image = \"b\"", "image = \"b\"\npullers = 11"));
    assert!(e.contains("workload.pulls.0.pullers: must be \"all\" or between 1 and the 10 hosts"), "{e}");
}

/// The issue's cases (#14): each differs from a valid scenario in one field.
#[test]
fn meaningless_values_are_refused_with_field_value_and_range() {
    let cases = [
        (
            "topology.hosts",
            "9223372036854775807",
            "topology.hosts: 9223372036854775807 is out of range: must be in [1, 1e6] count",
        ),
        (
            "topology.hosts",
            "1000000000",
            "topology.hosts: 1000000000 is out of range: must be in [1, 1e6] count",
        ),
        (
            "protocol.agent.dispatch.pipeline_limit",
            "0",
            "protocol.agent.dispatch.pipeline_limit: 0 is out of range: must be in [1, 1e5] requests",
        ),
        (
            "protocol.agent.conn_state.max_open_conn",
            "0",
            "protocol.agent.conn_state.max_open_conn: 0 is out of range: must be in [1, 1e6] count",
        ),
        (
            "protocol.origin.max_replica",
            "0",
            "protocol.origin.max_replica: 0 is out of range: must be in [1, 10000] origins",
        ),
        (
            "protocol.tracker.announce_interval_ms",
            "0",
            "protocol.tracker.announce_interval_ms: 0 is out of range: must be in [1, 1e12] ms",
        ),
        (
            "protocol.origin_scheduler.conn.handshake_timeout_ms",
            "0",
            "protocol.origin_scheduler.conn.handshake_timeout_ms: 0 is out of range",
        ),
        (
            "protocol.bittorrent.rechoke_interval_ms",
            "0",
            "protocol.bittorrent.rechoke_interval_ms: 0 is out of range",
        ),
        (
            "protocol.agent.metainfo_client.backoff_multiplier",
            "0.5",
            "protocol.agent.metainfo_client.backoff_multiplier: 0.5 is out of range: must be in [1, 1000] factor",
        ),
        ("origins.count", "0", "origins.count: 0 is out of range"),
        ("topology.upload_bytes_per_s", "0", "topology.upload_bytes_per_s: 0 is out of range"),
        ("limits.max_sim_time_s", "0", "limits.max_sim_time_s: 0 is out of range: must be in (0, "),
    ];
    for (key, value, want) in cases {
        let e = load_set(MINIMAL, &[(key, value)]).expect_err(key).to_string();
        assert!(e.contains(want), "{key}={value}: {e}");
        assert!(e.starts_with(&format!("override `{key}={value}`")), "located at the override: {e}");
    }
    // Written in the file, the message gives its line.
    let text = MINIMAL.replace("[origins]", "[protocol.agent.dispatch]\npipeline_limit = 0\n\n[origins]");
    let e = err(&text);
    assert!(e.starts_with("x.toml:9:1: protocol.agent.dispatch.pipeline_limit: 0 is out of range"), "{e}");
    let e = err(&MINIMAL
        .replace("[origins]", "[protocol.bittorrent]\nunchoke_slots = 0\noptimistic_slots = 0\n\n[origins]"));
    assert!(e.contains("no peer would ever upload"), "{e}");
}

#[test]
fn extreme_values_are_recorded_and_refused_unless_forced() {
    let s = load(MINIMAL).unwrap();
    assert!(s.extremes.is_empty() && s.refuse_extremes().is_ok());
    // 16 MiB in 1-byte pieces: 16.7 M pieces is past the hard limit; 200 000 is extreme.
    let text = MINIMAL.replace("size = \"1GB\"", "size = \"16MiB\"");
    let e = load_set(&text, &[("protocol.origin.piece_length", "1B")]).unwrap_err().to_string();
    assert!(e.contains("16777216 pieces of 1 bytes: a blob may have at most 10000000 pieces"), "{e}");
    let s = load_set(&text, &[("protocol.origin.piece_length", "100B")]).unwrap();
    assert_eq!(s.extremes.len(), 1, "{:?}", s.extremes);
    assert_eq!(s.extremes[0].field, "workload.blobs.0.size");
    let s = load_set(MINIMAL, &[("protocol.tracker.announce_interval_ms", "10")]).unwrap();
    let e = s.refuse_extremes().unwrap_err().to_string();
    assert!(
        e.starts_with("override `protocol.tracker.announce_interval_ms=10`: protocol.tracker.announce_interval_ms: 10 is legal but extreme (below 100)"),
        "{e}"
    );
    assert!(e.contains("pass --force"), "{e}");
    assert_eq!(s.protocol.tracker.announce_interval_ms, 10, "recorded, not changed");
}

#[test]
fn every_numeric_protocol_field_has_a_range_and_every_default_is_inside_it() {
    use shoal_protocols::config::{BitTorrentConfig, OriginConfig, SchedulerConfig, TrackerConfig};
    use shoal_protocols::policy::dragonfly::DragonflyConfig;
    fn table<T: serde::Serialize>(t: &T) -> toml::Table {
        match toml::Value::try_from(t).unwrap() {
            toml::Value::Table(t) => t,
            _ => unreachable!(),
        }
    }
    let mut agent = SchedulerConfig::agent_base_yaml();
    agent.conn_state.max_mutual_conn = Some(5);
    agent.dispatch.endgame_threshold = Some(3);
    let mut ex = Vec::new();
    let checks = [
        (table(&agent), ranges::SCHEDULER),
        (table(&SchedulerConfig::default()), ranges::SCHEDULER),
        (table(&SchedulerConfig::origin_base_yaml()), ranges::SCHEDULER),
        (table(&TrackerConfig::default()), ranges::TRACKER),
        (table(&OriginConfig::default()), ranges::ORIGIN),
        (table(&BitTorrentConfig::default()), ranges::BITTORRENT),
        (table(&DragonflyConfig::default()), ranges::DRAGONFLY),
    ];
    for (t, r) in &checks {
        ranges::check_table(t, r, &["p"], &mut ex)
            .unwrap_or_else(|e| panic!("{}: {}", e.path.join("."), e.message));
    }
    assert!(ex.is_empty(), "a default is extreme: {ex:?}");
    // And every range names a field that exists (no stale entries): each relative path is a numeric
    // leaf of its table's full form.
    fn leaves(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => leaves(t, &p, out),
                toml::Value::Integer(_) | toml::Value::Float(_) => out.push(p),
                _ => {}
            }
        }
    }
    for (t, r) in checks.iter().enumerate().filter(|(i, _)| *i == 0 || *i >= 3).map(|(_, c)| c) {
        let mut names = Vec::new();
        leaves(t, "", &mut names);
        for f in r.iter().filter(|f| !f.field.starts_with("piece_length")) {
            assert!(names.iter().any(|n| n == f.field), "range for unknown field {}", f.field);
        }
    }
}

#[test]
fn readme_documents_every_range() {
    let readme = std::fs::read_to_string(scenarios_dir().join("README.md")).unwrap();
    let (start, end) = ("<!-- ranges: generated from sim/src/scenario/ranges.rs -->\n", "<!-- /ranges -->");
    let a = readme.find(start).expect("scenarios/README.md has the ranges markers") + start.len();
    let b = readme[a..].find(end).expect("closing marker") + a;
    let want = ranges::markdown();
    if readme[a..b] != want {
        if std::env::var_os("SHOAL_BLESS").is_some() {
            let new = format!("{}{want}{}", &readme[..a], &readme[b..]);
            std::fs::write(scenarios_dir().join("README.md"), new).unwrap();
        } else {
            panic!(
                "scenarios/README.md's table of ranges differs from ranges.rs; rerun with SHOAL_BLESS=1 to rewrite it:\n{want}"
            );
        }
    }
}

#[test]
fn bittorrent_policy_reaches_every_role() {
    let s = load(&(MINIMAL.to_string() + "[protocol]\npolicy = \"bittorrent\"\n")).unwrap();
    assert_eq!(s.protocol.policy, Policy::BitTorrent);
    assert_eq!(s.protocol.policy.name(), "bittorrent");
    let bt = shoal_protocols::config::BitTorrentConfig::default();
    assert_eq!(s.protocol.bittorrent, bt);
    for sched in [&s.protocol.agent, &s.protocol.origin_scheduler] {
        assert_eq!(sched.bittorrent.as_ref(), Some(&bt));
        assert_eq!(sched.conn_state.max_open_conn, 80);
    }
    assert_eq!(s.protocol.tracker.announce_limit, 50);
    assert_eq!(s.protocol.tracker.handout_policy, shoal_protocols::config::HandoutPolicy::Default);
    // Kraken's configuration otherwise untouched: the agent keeps base_yaml's limiter and pipeline.
    assert!(s.protocol.agent.conn.bandwidth.enable);
    assert_eq!(s.protocol.agent.dispatch.pipeline_limit, 3);

    let s = load_set(
        MINIMAL,
        &[
            ("protocol.policy", "bittorrent"),
            ("protocol.bittorrent.unchoke_slots", "7"),
            ("protocol.bittorrent.numwant", "30"),
        ],
    )
    .unwrap();
    assert_eq!(s.protocol.agent.bittorrent.as_ref().unwrap().unchoke_slots, 7);
    assert_eq!(s.protocol.tracker.announce_limit, 30);
    // Under Kraken the table is read (and checked) but not applied.
    let s = load_set(MINIMAL, &[("protocol.bittorrent.numwant", "30")]).unwrap();
    assert_eq!(s.protocol.agent.bittorrent, None);
    assert_eq!(s.protocol.tracker.announce_limit, 50);

    let e = err(&(MINIMAL.to_string() + "[protocol.bittorrent]\nunchoke_slot = 3\n"));
    assert!(e.starts_with("x.toml:18:1: protocol.bittorrent.unchoke_slot: unknown field"), "{e}");
    let e = err(&(MINIMAL.to_string() + "[protocol.bittorrent]\nrechoke_interval_ms = 0\n"));
    assert!(
        e.contains("protocol.bittorrent.rechoke_interval_ms: 0 is out of range: must be in [1, 1e12] ms"),
        "{e}"
    );
}
