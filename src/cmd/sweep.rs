//! `shoal sweep`: many runs over a grid of overrides and seeds, on local cores or in shards on a
//! cluster, and their statistics; `shoal sweep collect`: shard folders merged and rendered.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use shoal_sim::StopFlag;
use shoal_sim::sweep::run::{self as sweep_run, Event, PLAN_FILE, RunStatus, SweepOptions};
use shoal_sim::sweep::{Plan, Shard};

/// Run a sweep: every case of SWEEP.toml (a grid of `[[axis]]` values or explicit `[[case]]`s)
/// with every seed, each as an ordinary run folder `DIR/runs/<case>/<seed>/` (the same files and
/// replay command as `shoal run`), then sweep.csv, cases.csv, sweep.md and sweep.html in DIR.
///
/// Every case is validated before any run starts. Complete runs already in DIR are kept with
/// --resume; Ctrl-C keeps the finished runs and --resume completes the sweep. See docs/sweeps.md.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// The sweep file (TOML; see docs/sweeps.md).
    #[arg(required = true)]
    sweep: Option<PathBuf>,
    /// Output folder (default: `results/<sweep file's stem>/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs at once [default: the number of cores], lowered so that the runs' estimated peak
    /// memory fits in what is available.
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Make only share I of N (1-based): run k of the plan goes to shard k mod N + 1. Merge the
    /// shards' folders with `shoal sweep collect`.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Keep the complete runs of this sweep already in the folder and make the rest.
    #[arg(long)]
    resume: bool,
    /// Replace whatever the folder holds, and run extreme or too-large cases.
    #[arg(long)]
    force: bool,
    /// Do not write each run's report (report.html, report.md, figures).
    #[arg(long)]
    no_report: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, clap::Subcommand)]
enum SweepCommand {
    Collect(CollectArgs),
}

/// Merge the folders of a sweep's shards (`shoal sweep --shard I/N`) into one and render it.
/// Refuses folders of different sweeps and a run present in two folders.
#[derive(Debug, clap::Args)]
struct CollectArgs {
    /// The shards' output folders.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// The merged folder (may be one of the shards' folders).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(SweepCommand::Collect(c)) = args.command {
        return collect(c);
    }
    let file = args.sweep.clone().expect("clap requires the sweep file");
    let plan = Plan::load(&file, args.force)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = file.file_stem().map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("results").join(stem)
    });
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        bail!("--jobs 0: give at least 1");
    }
    let options = SweepOptions {
        jobs,
        shard: args.shard,
        resume: args.resume,
        force: args.force,
        complete_marker: (!args.no_report).then(|| "report.html".to_string()),
    };
    let schedule = sweep_run::schedule(&plan, &out, &options)?;
    eprintln!(
        "sweep {} (plan {}): {} cases × {} seeds = {} runs{}; {} to make, {} already complete; {} at once",
        plan.sweep,
        plan.id,
        plan.cases.len(),
        plan.seeds.len(),
        plan.runs.len(),
        args.shard.map_or(String::new(), |s| format!(", shard {s}: {} runs", schedule.share.len())),
        schedule.todo.len(),
        schedule.share.len() - schedule.todo.len(),
        schedule.jobs
    );
    if let Some(why) = &schedule.lowered {
        eprintln!("{why}");
    }

    let stop = StopFlag::default();
    let flag = stop.clone();
    // The first Ctrl-C starts no new run and ends those under way without writing (they are redone
    // by --resume); a second one exits at once.
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: keeping the finished runs, starting no new one (Ctrl-C again to quit at once)"
        );
    })
    .context("installing the Ctrl-C handler")?;

    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(schedule.todo.len() as u64) };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} runs, ETA {eta}  {msg}",
        )
        .expect("valid template"),
    );
    let no_report = args.no_report;
    let finish = move |dir: &Path| -> Result<(), String> {
        if no_report { Ok(()) } else { shoal_reports::render(dir).map(|_| ()).map_err(|e| e.to_string()) }
    };
    let pb = bar.clone();
    let progress = move |e: Event<'_>| match e {
        Event::Started { planned, .. } => pb.set_message(planned.dir.clone()),
        Event::Ended { status: RunStatus::Error(m), planned, .. } => {
            pb.println(format!("error: {}: {m}", planned.dir));
            pb.inc(1);
        }
        Event::Ended { status: RunStatus::Interrupted, .. } => {}
        Event::Ended { .. } => pb.inc(1),
    };
    let results = sweep_run::run_plan(&plan, &out, &schedule, &stop, &finish, &progress);
    bar.finish_and_clear();
    let made = results.iter().filter(|(_, s)| *s == RunStatus::Done).count();
    let errors = results.iter().filter(|(_, s)| matches!(s, RunStatus::Error(_))).count();
    if stop.load(Ordering::Relaxed) {
        let left = schedule.todo.len() - made - errors;
        eprintln!(
            "interrupted: {made} runs made now, {left} left; `shoal sweep {} --out {} --resume{}` completes it",
            file.display(),
            out.display(),
            args.shard.map_or(String::new(), |s| format!(" --shard {s}"))
        );
        return Ok(ExitCode::from(130));
    }
    eprintln!("{made} runs made, {errors} errors");
    if let Some(s) = args.shard {
        println!(
            "shard {s} of plan {} in {}; merge the shards with `shoal sweep collect DIR... --out DIR`",
            plan.id,
            out.display()
        );
        return Ok(if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    render(&plan, &out)
}

/// Renders the sweep in `out` from its runs; exit 1 if any run is not complete.
fn render(plan: &Plan, out: &Path) -> Result<ExitCode> {
    let input = shoal_reports::SweepInput {
        title: plan.sweep.clone(),
        axes: plan.axes.clone(),
        cases: plan.cases.iter().map(|c| (c.label.clone(), c.axis_values.clone())).collect(),
        runs: plan
            .runs
            .iter()
            .map(|r| shoal_reports::SweepRun { case: r.case, seed: r.seed, dir: out.join(&r.dir) })
            .collect(),
    };
    let r = shoal_reports::render_sweep(out, &input)?;
    let [complete, failed, unfinished, error, missing] = r.counts;
    println!(
        "{} runs: {complete} complete, {failed} failed, {unfinished} unfinished, {error} error, {missing} missing",
        plan.runs.len()
    );
    println!("sweep in {} ({}, {})", r.html.display(), r.runs_csv.display(), r.cases_csv.display());
    Ok(if complete == plan.runs.len() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn collect(args: CollectArgs) -> Result<ExitCode> {
    let mut plans: Vec<(PathBuf, Plan)> = Vec::new();
    for d in &args.dirs {
        let path = d.join(PLAN_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: not a sweep folder (no readable {PLAN_FILE})", d.display()))?;
        let plan: Plan =
            serde_json::from_str(&text).with_context(|| format!("{}: not a sweep plan", path.display()))?;
        if let Some((first, p)) = plans.first()
            && p.id != plan.id
        {
            bail!(
                "{} and {} hold different sweeps (plans {} and {}): collect the shards of one sweep",
                first.display(),
                d.display(),
                p.id,
                plan.id
            );
        }
        plans.push((d.clone(), plan));
    }
    let plan = plans[0].1.clone();
    let out_id = std::fs::read_to_string(args.out.join(PLAN_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<Plan>(&t).ok())
        .map(|p| p.id);
    if let Some(id) = out_id
        && id != plan.id
    {
        bail!("{} holds another sweep (plan {id}); choose another --out", args.out.display());
    }
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    // Distinct input folders (a folder given twice, or also as --out, counts once).
    let mut inputs: Vec<&PathBuf> = Vec::new();
    for (d, _) in &plans {
        if !inputs.iter().any(|i| same(i, d)) {
            inputs.push(d);
        }
    }
    let mut copies = Vec::new();
    for r in &plan.runs {
        let holders: Vec<&&PathBuf> = inputs
            .iter()
            .filter(|d| sweep_run::is_complete(&d.join(&r.dir), &r.replay, None).unwrap_or(false))
            .collect();
        if holders.len() > 1 {
            bail!(
                "run {} is present in both {} and {}: collect each shard once",
                r.dir,
                holders[0].display(),
                holders[1].display()
            );
        }
        if let Some(h) = holders.first()
            && !same(h, &args.out)
        {
            copies.push((h.join(&r.dir), args.out.join(&r.dir)));
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for (from, to) in &copies {
        copy_dir(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    let mut json = serde_json::to_string_pretty(&plan)?;
    json.push('\n');
    std::fs::write(args.out.join(PLAN_FILE), json)?;
    eprintln!("collected {} shard folders: {} runs copied", inputs.len(), copies.len());
    render(&plan, &args.out)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}
