//! The `[protocol.*]` tables: presets, unit strings and piece lengths, turned into
//! `shoal_protocols::config` values.
//!
//! Each table is merged onto its preset as TOML and then deserialized into the protocol type, so the
//! protocol crate's `deny_unknown_fields` catches typos and fields given override the preset one by
//! one (a nested table overrides field by field too).

use shoal_protocols::config::{BitTorrentConfig, OriginConfig, Policy, SchedulerConfig, TrackerConfig};
use shoal_protocols::metainfo::PieceLengths;
use shoal_protocols::policy::dragonfly::DragonflyConfig;
use toml::{Table, Value};

use super::error::FieldError;
use super::overrides::deserialize_at;
use super::ranges::{self, ExtremeValue, FieldRange};
use super::units::{parse_rate, parse_size};

/// Which configuration a `[protocol.agent]` or `[protocol.origin_scheduler]` table starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Kraken's shipped `config/<role>/base.yaml` (the default): for agents rarest-first and the
    /// bandwidth limiter on; for origins the code defaults.
    BaseYaml,
    /// Kraken's `applyDefaults()` values.
    CodeDefaults,
}

/// Agent or origin scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Agent,
    Origin,
}

pub fn scheduler(
    table: Option<Table>,
    prefix: &[&str],
    role: Role,
    extremes: &mut Vec<ExtremeValue>,
) -> Result<SchedulerConfig, FieldError> {
    let mut table = table.unwrap_or_default();
    let preset = match table.remove("preset") {
        None => Preset::BaseYaml,
        Some(Value::String(s)) if s == "base_yaml" => Preset::BaseYaml,
        Some(Value::String(s)) if s == "code_defaults" => Preset::CodeDefaults,
        Some(other) => {
            return Err(FieldError::at(
                with(prefix, &["preset"]),
                format!("unknown preset {other} (expected \"base_yaml\" or \"code_defaults\")"),
            ));
        }
    };
    let base = match (preset, role) {
        (Preset::CodeDefaults, _) => SchedulerConfig::default(),
        (Preset::BaseYaml, Role::Agent) => SchedulerConfig::agent_base_yaml(),
        (Preset::BaseYaml, Role::Origin) => SchedulerConfig::origin_base_yaml(),
    };
    convert_units(&mut table, &mut prefix.iter().map(|s| s.to_string()).collect())?;
    let Value::Table(mut merged) = Value::try_from(&base).expect("SchedulerConfig serializes to TOML") else {
        unreachable!("a struct serializes to a table")
    };
    merge(&mut merged, table);
    let config: SchedulerConfig = deserialize_at(Value::Table(merged), prefix)?;
    check(&config, ranges::SCHEDULER, prefix, extremes)?;
    Ok(config)
}

/// Checks every number of `config` (as written or from its preset) against its documented range.
fn check<T: serde::Serialize>(
    config: &T,
    ranges: &[FieldRange],
    prefix: &[&str],
    extremes: &mut Vec<ExtremeValue>,
) -> Result<(), FieldError> {
    let Value::Table(t) = Value::try_from(config).expect("protocol configurations serialize to TOML") else {
        unreachable!("a struct serializes to a table")
    };
    ranges::check_table(&t, ranges, prefix, extremes)
}

/// `[protocol.dragonfly]`, onto Dragonfly's defaults; refused unless the policy is Dragonfly, so that
/// a table that would be ignored is never silently accepted.
pub fn dragonfly(
    table: Option<Table>,
    policy: Policy,
    prefix: &[&str],
    extremes: &mut Vec<ExtremeValue>,
) -> Result<DragonflyConfig, FieldError> {
    let Some(mut table) = table else { return Ok(DragonflyConfig::default()) };
    if policy != Policy::Dragonfly {
        return Err(FieldError::at(
            with(prefix, &[]),
            format!(
                "is read only with protocol.policy = \"dragonfly\" (the policy is \"{}\")",
                policy.name()
            ),
        ));
    }
    convert_units(&mut table, &mut prefix.iter().map(|s| s.to_string()).collect())?;
    let config: DragonflyConfig = deserialize_at(Value::Table(table), prefix)?;
    check(&config, ranges::DRAGONFLY, prefix, extremes)?;
    config.validate().map_err(|(field, m)| FieldError::at(with(prefix, &[field]), m))?;
    Ok(config)
}

pub fn tracker(
    table: Option<Table>,
    prefix: &[&str],
    extremes: &mut Vec<ExtremeValue>,
) -> Result<TrackerConfig, FieldError> {
    let mut table = table.unwrap_or_default();
    convert_units(&mut table, &mut prefix.iter().map(|s| s.to_string()).collect())?;
    let config: TrackerConfig = deserialize_at(Value::Table(table), prefix)?;
    check(&config, ranges::TRACKER, prefix, extremes)?;
    Ok(config)
}

/// `[protocol.bittorrent]`: BitTorrent classic's parameters over their defaults.
pub fn bittorrent(
    table: Option<Table>,
    prefix: &[&str],
    extremes: &mut Vec<ExtremeValue>,
) -> Result<BitTorrentConfig, FieldError> {
    let mut table = table.unwrap_or_default();
    convert_units(&mut table, &mut prefix.iter().map(|s| s.to_string()).collect())?;
    let config: BitTorrentConfig = deserialize_at(Value::Table(table), prefix)?;
    check(&config, ranges::BITTORRENT, prefix, extremes)?;
    if config.unchoke_slots + config.optimistic_slots == 0 {
        return Err(FieldError::at(
            with(prefix, &["unchoke_slots"]),
            "unchoke_slots and optimistic_slots are both 0: no peer would ever upload",
        ));
    }
    Ok(config)
}

/// `piece_length = "4MiB"` (one length for every blob) or `piece_lengths = { "0" = "1MiB",
/// "2GB" = "4MiB" }` (blob-size threshold → piece length, Kraken's `metainfogen.piece_lengths`);
/// Kraken's shipped 4 MiB when neither is given.
pub fn origin(
    table: Option<Table>,
    prefix: &[&str],
    extremes: &mut Vec<ExtremeValue>,
) -> Result<OriginConfig, FieldError> {
    let mut table = table.unwrap_or_default();
    let one = table.remove("piece_length");
    let many = table.remove("piece_lengths");
    let lengths = match (one, many) {
        (Some(_), Some(_)) => {
            return Err(FieldError::at(
                with(prefix, &["piece_lengths"]),
                "give piece_length or piece_lengths, not both",
            ));
        }
        (Some(v), None) => {
            let path = with(prefix, &["piece_length"]);
            let n = size_value(&v, &path)?;
            piece_range(n, &path, extremes)?;
            Some(PieceLengths::fixed(n))
        }
        (None, Some(Value::Table(t))) => {
            let mut entries = Vec::new();
            for (k, v) in t {
                let path = with(prefix, &["piece_lengths", &k]);
                let threshold =
                    parse_size(&k).map_err(|m| FieldError::at(path.clone(), format!("threshold: {m}")))?;
                let n = size_value(&v, &path)?;
                piece_range(n, &path, extremes)?;
                entries.push((threshold, n));
            }
            let path = with(prefix, &["piece_lengths"]);
            Some(PieceLengths::new(entries).map_err(|_| FieldError::at(path, "must not be empty"))?)
        }
        (None, Some(other)) => {
            return Err(FieldError::at(
                with(prefix, &["piece_lengths"]),
                format!(
                    "expected a table like {{ \"0\" = \"1MiB\", \"2GB\" = \"4MiB\" }}, found {}",
                    other.type_str()
                ),
            ));
        }
        (None, None) => None,
    };
    convert_units(&mut table, &mut prefix.iter().map(|s| s.to_string()).collect())?;
    let mut config: OriginConfig = deserialize_at(Value::Table(table), prefix)?;
    check(&config, ranges::ORIGIN, prefix, extremes)?;
    if let Some(l) = lengths {
        config.piece_lengths = l;
    }
    Ok(config)
}

/// A piece length as written, against `piece_length`'s range (`piece_lengths.*` has the same).
fn piece_range(n: u64, path: &[String], extremes: &mut Vec<ExtremeValue>) -> Result<(), FieldError> {
    let rel = [String::from("piece_length")];
    ranges::lookup(ranges::ORIGIN, &rel).expect("piece_length has a range").check(n, path, extremes)
}

fn with(prefix: &[&str], rest: &[&str]) -> Vec<String> {
    prefix.iter().chain(rest).map(|s| s.to_string()).collect()
}

fn size_value(v: &Value, path: &[String]) -> Result<u64, FieldError> {
    match v {
        Value::Integer(i) if *i >= 0 => Ok(*i as u64),
        Value::String(s) => parse_size(s).map_err(|m| FieldError::at(path.to_vec(), m)),
        other => Err(FieldError::at(
            path.to_vec(),
            format!("expected bytes or a size like \"4MiB\", found {other}"),
        )),
    }
}

/// Lets the integer fields of the protocol types be written with units: a string in a field named
/// `*_bits_per_s` is a rate converted to bits per second, `*_bytes_per_s` a rate in bytes per second,
/// `*_bytes` a size.
fn convert_units(table: &mut Table, path: &mut Vec<String>) -> Result<(), FieldError> {
    for (k, v) in table.iter_mut() {
        path.push(k.clone());
        match v {
            Value::Table(t) => convert_units(t, path)?,
            Value::String(s) => {
                let converted = if k.ends_with("_bits_per_s") {
                    Some(
                        parse_rate(s)
                            .and_then(|r| r.checked_mul(8).ok_or_else(|| format!("{s:?} is too large"))),
                    )
                } else if k.ends_with("_bytes_per_s") {
                    Some(parse_rate(s))
                } else if k.ends_with("_bytes") {
                    Some(parse_size(s))
                } else {
                    None
                };
                if let Some(r) = converted {
                    let n = r.map_err(|m| FieldError::at(path.clone(), m))?;
                    let n = i64::try_from(n).map_err(|_| FieldError::at(path.clone(), "too large"))?;
                    *v = Value::Integer(n);
                }
            }
            _ => {}
        }
        path.pop();
    }
    Ok(())
}

/// Writes `over` onto `base`; tables merge key by key, anything else replaces.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocols::config::PiecePolicy;

    fn table(s: &str) -> Option<Table> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn agent_preset_then_fields() {
        let c = scheduler(None, &["protocol", "agent"], Role::Agent, &mut vec![]).unwrap();
        assert_eq!(c, SchedulerConfig::agent_base_yaml());
        let c =
            scheduler(table("preset = \"code_defaults\""), &["protocol", "agent"], Role::Agent, &mut vec![])
                .unwrap();
        assert_eq!(c, SchedulerConfig::default());
        let c = scheduler(
            table("[dispatch]\npipeline_limit = 5\n[conn.bandwidth]\negress_bits_per_s = \"300MB/s\""),
            &["protocol", "agent"],
            Role::Agent,
            &mut vec![],
        )
        .unwrap();
        assert_eq!(c.dispatch.pipeline_limit, 5);
        assert_eq!(c.dispatch.piece_request_policy, PiecePolicy::RarestFirst, "preset kept");
        assert!(c.conn.bandwidth.enable, "preset kept");
        assert_eq!(c.conn.bandwidth.egress_bits_per_s, 2_400_000_000);
    }

    #[test]
    fn scheduler_errors_carry_the_path() {
        let e = scheduler(
            table("[dispatch]\npipeline_limt = 5"),
            &["protocol", "agent"],
            Role::Agent,
            &mut vec![],
        )
        .unwrap_err();
        assert_eq!(e.path.join("."), "protocol.agent.dispatch.pipeline_limt");
        assert!(e.message.contains("unknown field `pipeline_limt`"), "{}", e.message);
        let e = scheduler(table("preset = \"yaml\""), &["protocol", "agent"], Role::Agent, &mut vec![])
            .unwrap_err();
        assert_eq!(e.path.join("."), "protocol.agent.preset");
    }

    #[test]
    fn piece_lengths_forms() {
        let p = &["protocol", "origin"];
        assert_eq!(origin(None, p, &mut vec![]).unwrap().piece_lengths, PieceLengths::fixed(4 << 20));
        let c = origin(table("piece_length = \"1MiB\"\nmax_replica = 2"), p, &mut vec![]).unwrap();
        assert_eq!((c.piece_lengths, c.max_replica), (PieceLengths::fixed(1 << 20), 2));
        let c = origin(table("piece_lengths = { \"0\" = \"1MiB\", \"2GiB\" = \"4MiB\" }"), p, &mut vec![])
            .unwrap();
        assert_eq!(c.piece_lengths.select(3 << 30), 4 << 20);
        assert_eq!(c.piece_lengths.select(1 << 30), 1 << 20);
        let e = origin(table("piece_length = 1\npiece_lengths = { \"0\" = 1 }"), p, &mut vec![]).unwrap_err();
        assert!(e.message.contains("not both"));
        let e = origin(table("piece_length = \"4mb\""), p, &mut vec![]).unwrap_err();
        assert_eq!(e.path.join("."), "protocol.origin.piece_length");
        let c = origin(table("backend_bytes_per_s = \"1GB/s\""), p, &mut vec![]).unwrap();
        assert_eq!(c.backend_bytes_per_s, 1_000_000_000);
    }
}
