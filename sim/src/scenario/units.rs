//! Sizes and rates written as integers or as strings with an explicit unit.
//!
//! Rules (also in `scenarios/README.md`):
//! - an integer is bytes (sizes) or bytes per second (rates);
//! - a string is a decimal number, an optional single space, and a unit; units are case-sensitive:
//!   - decimal bytes: `B`, `KB` (or `kB`), `MB`, `GB`, `TB` — powers of 1000;
//!   - binary bytes: `KiB`, `MiB`, `GiB`, `TiB` — powers of 1024;
//!   - bits (rates only): `bit`, `Kbit`, `Mbit`, `Gbit`, `Tbit` (powers of 1000 bits), `Kibit`, `Mibit`,
//!     `Gibit` (powers of 1024 bits), and `bps`, `Kbps`, `Mbps`, `Gbps`, `Tbps`;
//!   - a rate may end in `/s` (`"300MB/s"`, `"10Gbit/s"`); a size may not;
//! - a lowercase `b` is refused (`"4mb"`, `"4Mb"`): whether it means bits or bytes is exactly the
//!   ambiguity the explicit units exist to remove;
//! - the result must be a whole number of bytes (`"1.5GB"` is fine, `"1bit/s"` is not).
//!
//! Everything past parsing is exact integer bytes; decimal versus binary exists only in these strings.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

const UNITS_HELP: &str = "B, KB, KiB, MB, MiB, GB, GiB, TB, TiB";
const RATE_HELP: &str = "B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, optionally /s, or bit, Kbit, Mbit, Gbit, Tbit, \
                         Kibit, Mibit, Gibit, bps, Kbps, Mbps, Gbps, Tbps";

/// A unit: its multiplier in bytes, or in bits if `bits`.
struct Unit {
    multiplier: u128,
    bits: bool,
}

fn byte_unit(s: &str) -> Option<u128> {
    Some(match s {
        "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    })
}

fn bit_unit(s: &str) -> Option<u128> {
    Some(match s {
        "bit" | "bps" => 1,
        "Kbit" | "kbit" | "Kbps" | "kbps" => 1_000,
        "Mbit" | "Mbps" => 1_000_000,
        "Gbit" | "Gbps" => 1_000_000_000,
        "Tbit" | "Tbps" => 1_000_000_000_000,
        "Kibit" => 1 << 10,
        "Mibit" => 1 << 20,
        "Gibit" => 1 << 30,
        _ => return None,
    })
}

fn parse_unit(s: &str, rate: bool) -> Option<Unit> {
    if !rate {
        return byte_unit(s).map(|multiplier| Unit { multiplier, bits: false });
    }
    let stem = s.strip_suffix("/s").unwrap_or(s);
    if let Some(multiplier) = byte_unit(stem) {
        return Some(Unit { multiplier, bits: false });
    }
    // "Gbps/s" is not a unit: bps already says per second.
    if stem.ends_with("bps") && stem.len() != s.len() {
        return None;
    }
    bit_unit(stem).map(|multiplier| Unit { multiplier, bits: true })
}

/// Parses a size string (`"1.5GB"`, `"4MiB"`, `"1024"`) to bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_quantity(s, false)
}

/// Parses a rate string (`"300MB/s"`, `"10Gbit/s"`, `"10Gbps"`) to bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    parse_quantity(s, true)
}

fn parse_quantity(s: &str, rate: bool) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, rest) = t.split_at(split);
    let unit_str = rest.strip_prefix(' ').unwrap_or(rest);
    if number.is_empty() {
        return Err(format!("{s:?} does not start with a number"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() || frac_part.contains('.') || (number.contains('.') && frac_part.is_empty()) {
        return Err(format!("{s:?}: malformed number {number:?}"));
    }
    let unit = if unit_str.is_empty() {
        Unit { multiplier: 1, bits: false }
    } else {
        parse_unit(unit_str, rate).ok_or_else(|| {
            let help = if rate { RATE_HELP } else { UNITS_HELP };
            let lower_b = unit_str.trim_end_matches("/s").ends_with('b') && !unit_str.contains("bit");
            let hint = if lower_b && !unit_str.ends_with("bps") {
                "; units are case-sensitive and a lowercase b is ambiguous (bits or bytes?)"
            } else {
                ""
            };
            format!("unknown unit {unit_str:?} (expected {help}){hint}")
        })?
    };
    let too_big = || format!("{s:?} is too large");
    let digits: String = [int_part, frac_part].concat();
    if digits.len() > 30 {
        return Err(too_big());
    }
    let mantissa: u128 = digits.parse().map_err(|_| too_big())?;
    let scale = 10u128.pow(frac_part.len() as u32) * if unit.bits { 8 } else { 1 };
    let numerator = mantissa.checked_mul(unit.multiplier).ok_or_else(too_big)?;
    if numerator % scale != 0 {
        return Err(format!("{s:?} is not a whole number of bytes"));
    }
    u64::try_from(numerator / scale).map_err(|_| too_big())
}

/// A size in bytes, deserialized from an integer or a size string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A rate in bytes per second, deserialized from an integer or a rate string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteRate(pub u64);

struct QuantityVisitor {
    rate: bool,
}

impl Visitor<'_> for QuantityVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.rate {
            f.write_str("bytes per second as an integer, or a string like \"300MB/s\" or \"10Gbit/s\"")
        } else {
            f.write_str("bytes as an integer, or a string like \"1.5GB\" or \"4MiB\"")
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("must not be negative, got {v}")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_quantity(v, self.rate).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor { rate: false }).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuantityVisitor { rate: true }).map(ByteRate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_decimal_and_binary() {
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert_eq!(parse_size("3TiB"), Ok(3 << 40));
    }

    #[test]
    fn rates_bytes_and_bits() {
        assert_eq!(parse_rate("300MB/s"), Ok(300_000_000));
        assert_eq!(parse_rate("300MB"), Ok(300_000_000));
        assert_eq!(parse_rate("10Gbit/s"), Ok(1_250_000_000));
        assert_eq!(parse_rate("10Gbps"), Ok(1_250_000_000));
        assert_eq!(parse_rate("1.25GB/s"), Ok(1_250_000_000));
        assert_eq!(parse_rate("8Mibit/s"), Ok(1 << 20));
    }

    #[test]
    fn refusals_say_why() {
        let e = parse_rate("300 MB/z").unwrap_err();
        assert!(e.starts_with("unknown unit \"MB/z\" (expected B, KB, KiB"), "{e}");
        let e = parse_size("4mb").unwrap_err();
        assert!(e.contains("lowercase b is ambiguous"), "{e}");
        assert!(parse_size("4Mb").is_err());
        assert!(parse_size("10Gbit").is_err(), "bits are for rates only");
        assert!(parse_size("300MB/s").is_err(), "a size has no /s");
        assert!(parse_rate("10Gbps/s").is_err());
        assert!(parse_rate("1bit/s").unwrap_err().contains("whole number of bytes"));
        assert!(parse_size("GB").unwrap_err().contains("does not start with a number"));
        assert!(parse_size("1.2.3GB").is_err());
        assert!(parse_size("1.GB").is_err());
        assert!(parse_size("-1GB").is_err());
        assert!(parse_size("99999999999TB").unwrap_err().contains("too large"));
    }
}
