//! shoal's simulator: scenarios, the engines that run them and the outputs they write.
//!
//! - [`scenario`]: scenario files (TOML) loaded, validated and resolved into a [`scenario::Scenario`];
//! - [`build`]: a run's nodes (agents, origins, trackers), seeds and topology, for every engine;
//! - [`engine`]: the discrete-event engine, with the flow-level network model of [`net`];
//! - [`driver`]: the async driver, on turmoil's simulated TCP or on real sockets;
//! - [`sizing`]: a run's peak memory and events, estimated before it starts;
//! - [`sweep`]: many runs over a grid of overrides and seeds, planned, validated and run on threads;
//! - [`output`]: what a run records and the files it writes (downloads.csv, timeseries.csv,
//!   summary.json, perf.json), and [`output::merge`] of separate agent processes' folders.
//!
//! Every engine drives the state machines of `shoal-protocols` and makes no protocol decision.
//!
//! ```no_run
//! use shoal_sim::engine::{Engine, RunOptions};
//! use shoal_sim::scenario::Scenario;
//!
//! let path = std::path::Path::new("scenarios/smoke-40.toml");
//! let s = Scenario::load_with_sets(path, &["topology.hosts=10".to_string()])?;
//! let mut e = Engine::new(&s, RunOptions::default())?;
//! e.run();
//! let report = e.report("des", 0.0);
//! println!("p50 {:?} s", report.summary.host_images.p50);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod build;
pub mod driver;
pub mod engine;
pub mod net;
pub mod oci;
pub mod output;
pub mod scenario;
pub mod sizing;
pub mod sweep;

/// Set to stop a run early (Ctrl-C): the engine ends at its next check, within a few thousand
/// events, and its outputs mark every download that had not ended as unfinished.
pub type StopFlag = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// True once `stop` is set.
pub(crate) fn stopped(stop: &Option<StopFlag>) -> bool {
    stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
}

/// A progress callback: (simulated seconds, image pulls finished, image pulls in all).
pub type ProgressFn = Box<dyn FnMut(f64, usize, usize)>;
