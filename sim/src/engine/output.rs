//! The discrete-event engine's outputs: the files every engine writes (`crate::output`), plus
//! racks.csv, the rack links' utilisation, which only this engine's network model measures.

use std::io;
use std::path::Path;

use super::Engine;
use crate::output::{RunFacts, RunReport, summarize, write_run_files};

impl Engine<'_> {
    /// Summarises a finished run; `wall_s` is the wall time it took.
    pub fn report(&self, engine: &str, wall_s: f64) -> RunReport {
        let stats = self.net.stats();
        let replay = self.scenario.replay_command() + &self.net.solver().cli_flags();
        let facts = RunFacts {
            scenario: self.scenario,
            metrics: &self.metrics,
            now: self.now,
            events: self.events,
            replay,
            solver: format!("{:?}", self.net.solver()),
            solver_solves: stats.solves,
            solver_flows_resolved: stats.flows_resolved,
            interrupted: self.interrupted,
        };
        summarize(&facts, engine, wall_s)
    }

    /// Writes downloads.csv, timeseries.csv, racks.csv (with racks), summary.json and perf.json
    /// into `dir`.
    pub fn write_outputs(&self, dir: &Path, report: &RunReport) -> io::Result<()> {
        write_run_files(dir, self.scenario, &self.metrics, self.now, report, |dir| {
            if self.scenario.topology.racks.is_some() { self.write_racks(dir) } else { Ok(()) }
        })
    }

    /// racks.csv: per interval and rack, the bytes over its uplink and downlink and their share of
    /// the link's capacity (empty where the link is unlimited).
    fn write_racks(&self, dir: &Path) -> io::Result<()> {
        use crate::net::Level;
        let mut w = csv::Writer::from_path(dir.join("racks.csv"))?;
        w.write_record([
            "time_s",
            "rack",
            "uplink_bytes",
            "uplink_utilisation",
            "downlink_bytes",
            "downlink_utilisation",
        ])?;
        let secs = self.metrics.interval.as_secs_f64();
        for s in &self.metrics.rack_samples {
            let up_cap = self.net.capacity(self.world.net.uplink(Level::Rack, s.rack));
            let down_cap = self.net.capacity(self.world.net.downlink(Level::Rack, s.rack));
            let util =
                |b: f64, c: Option<f64>| c.map(|c| format!("{:.6}", b / (c * secs))).unwrap_or_default();
            w.write_record([
                format!("{:.6}", s.at.as_secs_f64()),
                s.rack.to_string(),
                format!("{:.0}", s.up_bytes),
                util(s.up_bytes, up_cap),
                format!("{:.0}", s.down_bytes),
                util(s.down_bytes, down_cap),
            ])?;
        }
        w.flush()
    }
}
