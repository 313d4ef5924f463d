//! criterion measurements whose unit is not wall time: simulated seconds ([`SimSeconds`]) and bytes
//! ([`Bytes`]). They are meant for [`criterion::Bencher::iter_custom`], where the routine returns
//! the value itself (a run's image p99, its origin egress); `start`/`end` measure nothing, so
//! `Bencher::iter` with them records zeros.
//!
//! criterion's statistics, change detection and baselines work on these values as they do on
//! durations; its labels stay its own (the estimate line still reads `time:`).

use criterion::Throughput;
use criterion::measurement::{Measurement, ValueFormatter};

/// Simulated seconds, as a scenario's summary reports them (`f64`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SimSeconds;

/// Bytes (`f64` so that criterion's per-iteration division stays exact enough for any run size).
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes;

impl Measurement for SimSeconds {
    type Intermediate = ();
    type Value = f64;

    fn start(&self) {}

    fn end(&self, _: ()) -> f64 {
        0.0
    }

    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }

    fn zero(&self) -> f64 {
        0.0
    }

    fn to_f64(&self, value: &f64) -> f64 {
        *value
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &SecondsFormatter
    }
}

impl Measurement for Bytes {
    type Intermediate = ();
    type Value = f64;

    fn start(&self) {}

    fn end(&self, _: ()) -> f64 {
        0.0
    }

    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }

    fn zero(&self) -> f64 {
        0.0
    }

    fn to_f64(&self, value: &f64) -> f64 {
        *value
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &BytesFormatter
    }
}

/// Prints simulated seconds as `s` or `ms` (`sim s`, so nobody reads them as wall time).
#[derive(Debug)]
struct SecondsFormatter;

impl ValueFormatter for SecondsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        if typical.abs() < 1.0 && typical != 0.0 {
            values.iter_mut().for_each(|v| *v *= 1e3);
            "sim ms"
        } else {
            "sim s"
        }
    }

    fn scale_throughputs(&self, _typical: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        // Units of work per simulated second.
        let (n, unit) = match throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (*n as f64, "B/sim s"),
            Throughput::Elements(n) => (*n as f64, "elem/sim s"),
            Throughput::Bits(n) => (*n as f64, "bit/sim s"),
            Throughput::ElementsAndBytes { elements, .. } => (*elements as f64, "elem/sim s"),
        };
        values.iter_mut().for_each(|v| *v = n / *v);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "sim_s"
    }
}

/// Prints bytes with decimal units (the scenarios' `MB`, `GB`).
#[derive(Debug)]
struct BytesFormatter;

impl ValueFormatter for BytesFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical.abs() {
            t if t >= 1e12 => (1e12, "TB"),
            t if t >= 1e9 => (1e9, "GB"),
            t if t >= 1e6 => (1e6, "MB"),
            t if t >= 1e3 => (1e3, "KB"),
            _ => (1.0, "B"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, throughput: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match throughput {
            Throughput::Bytes(n)
            | Throughput::BytesDecimal(n)
            | Throughput::Elements(n)
            | Throughput::Bits(n) => *n as f64,
            Throughput::ElementsAndBytes { elements, .. } => *elements as f64,
        };
        values.iter_mut().for_each(|v| *v = n / *v);
        "per B"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "B"
    }
}
