//! Every scenario file in `scenarios/bench/`, benchmarked on its headline metrics over seeds
//! (simulated seconds and bytes, see `shoal_bench::scenarios`) and on wall time. Adding a file adds
//! a benchmark. `SHOAL_BENCH_SET='key=value;…'` overrides every scenario (as `shoal run --set`).

use shoal_bench::repo_path;
use shoal_bench::scenarios::{BenchOptions, bench_dir};

fn main() {
    let result = BenchOptions::from_env()
        .map_err(|e| e.to_string())
        .and_then(|options| bench_dir(repo_path("scenarios/bench"), options).map_err(|e| e.to_string()));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
