//! `shoal compare`: runs side by side.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use shoal_reports::compare_cases;

/// Compare runs: overlaid CDFs of per-host image completion and a table of p50, p99, p99.9,
/// max, origin egress and efficiency, each with its ratio to the first run.
///
/// Writes compare.html (self-contained), compare.md and compare-cdf.png.
///
/// Given sweep folders (`shoal sweep --out`), compares their cases instead: every case against
/// the first (or the --case labels, in the order given, the first as reference) on image p50,
/// p99, max, blob p99 and origin egress, as a relative difference of the means over seeds with
/// its 95 % confidence interval — paired over the same seeds, else Welch's — saying when a
/// difference is within noise. Writes compare-cases.md and prints one line per difference.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run folders (the first is the baseline), or sweep folders.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "results/compare")]
    out: PathBuf,
    /// With sweep folders: only these cases, in this order (the first is the reference). With
    /// several folders, a label may be written FOLDER/LABEL.
    #[arg(long = "case", value_name = "LABEL")]
    cases: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let sweeps = args.dirs.iter().filter(|d| compare_cases::is_sweep_dir(d)).count();
    if sweeps > 0 {
        if sweeps != args.dirs.len() {
            anyhow::bail!("give run folders or sweep folders, not both");
        }
        return run_cases(&args);
    }
    if !args.cases.is_empty() {
        anyhow::bail!("--case applies to sweep folders (folders holding sweep.csv and sweep.json)");
    }
    let c = shoal_reports::compare(&args.dirs, &args.out)?;
    if !c.comparison.same_scenario() {
        eprintln!("note: the runs are of different scenarios");
    }
    println!("{}", c.html.display());
    Ok(ExitCode::SUCCESS)
}

fn run_cases(args: &Args) -> Result<ExitCode> {
    let several = args.dirs.len() > 1;
    let mut all = Vec::new();
    for dir in &args.dirs {
        let name =
            dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        for mut case in compare_cases::read_cases(dir)? {
            if several {
                case.label = format!("{name}/{}", case.label);
            }
            all.push(case);
        }
    }
    let chosen = if args.cases.is_empty() {
        all
    } else {
        let mut chosen = Vec::new();
        for label in &args.cases {
            let found = all.iter().find(|c| &c.label == label).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|c| c.label.as_str()).collect();
                anyhow::anyhow!("--case {label}: no such case; the cases are: {}", known.join(", "))
            })?;
            chosen.push(found.clone());
        }
        chosen
    };
    if chosen.len() < 2 {
        anyhow::bail!(
            "nothing to compare: {} case(s); give a sweep with several cases, or several --case",
            chosen.len()
        );
    }
    let c = compare_cases::compare_cases(chosen, &args.out)?;
    println!("reference: {}", c.cases[0].label);
    for case in &c.cases[1..] {
        println!("{}:", case.label);
        for d in c.differences.iter().filter(|d| d.case == case.label) {
            let name = compare_cases::METRICS
                .iter()
                .find(|(m, _)| *m == d.metric)
                .map_or(d.metric.as_str(), |(_, n)| n);
            println!("  {}", d.sentence(name));
        }
    }
    println!("{}", c.markdown.display());
    Ok(ExitCode::SUCCESS)
}
