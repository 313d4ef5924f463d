//! A custom piece picker benchmarked on shoal's scenarios, as a crate that embeds shoal would do it
//! in its own `benches/my_policy.rs` (see `shoal_bench::scenarios` and bench/README.md).
//!
//! The picker asks for the lowest missing pieces first — what a naive client does, and what
//! rarest-first exists to avoid: every agent wants the same pieces at the same time. Each scenario
//! is benchmarked twice, with Kraken's configured picker (`<name>`) and with this one
//! (`<name>+in_order`), so criterion's report puts them side by side:
//!
//! ```text
//! cargo run --release -p shoal-bench --example in_order_picker -- --bench
//! cargo run --release -p shoal-bench --example in_order_picker -- --bench kraken-200
//! ```
//!
//! Without `--bench` criterion runs in test mode: each benchmark once, at the files' test size.
//!
//! Measured (release, seeds 1-10), image p99: kraken-200 14.284 s with rarest-first, 13.926 s in
//! order; smoke-40 5.1602 s and 5.1620 s. Within seed noise: with 10 connections per torrent and
//! pieces arriving from the origins in every order, herding on the lowest pieces costs little here —
//! which is the kind of answer the benchmark is for.

use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use shoal_bench::repo_path;
use shoal_bench::scenarios::{BenchOptions, PolicyHooks, Suite, discover};
use shoal_protocols::peer::picker::{PiecePicker, Selection};

/// Lowest missing piece index first, among the valid candidates.
#[derive(Debug, Default)]
struct InOrderPicker;

impl PiecePicker for InOrderPicker {
    fn select(
        &mut self,
        _rng: &mut ChaCha8Rng,
        sel: &Selection<'_>,
        valid: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<u32> {
        sel.remote.iter_missing_from(sel.own).filter(|&i| valid(i)).take(sel.quota).collect()
    }
}

fn main() {
    let scenarios = match discover(repo_path("scenarios/bench")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // The Kraken-policy scenarios: BitTorrent and Dragonfly bring their own pickers.
    let kraken = ["smoke-40", "kraken-200"];
    let options = BenchOptions::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let hooks =
        PolicyHooks { picker: Some(Arc::new(|_policy| Box::new(InOrderPicker))), ..PolicyHooks::default() };
    let mut default = Suite::from_args(options.clone());
    let mut in_order = Suite::from_args(options.hooks(hooks));
    for bs in scenarios.iter().filter(|b| kraken.contains(&b.name.as_str())) {
        default.bench(bs);
        let mut renamed = bs.clone();
        renamed.name = format!("{}+in_order", bs.name);
        in_order.bench(&renamed);
    }
    default.final_summary();
    in_order.final_summary();
}
