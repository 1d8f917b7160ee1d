//! `anytls-bench compare`: an A/B comparison of two server commands on this
//! machine.
//!
//! For every round, every case of the chosen set ([`cases`]) and each side in
//! turn (A, B, A, B, ...): wait until TIME_WAIT sockets are few enough, start the
//! server on a free port pinned to --server-cpu ([`server`]), run the case's
//! scenario in-process through the ordinary scenario code (a spec with the
//! server's pid, the generator on --cpus), measure the server's CPU time around
//! it, and kill the server, so every run starts from a fresh process. Then one
//! table of medians ([`summary`]), a JSON file with every run's figures and
//! report, and an SVG chart of the B/A ratios ([`chart`]).

mod cases;
mod chart;
mod server;
mod summary;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::PossibleValuesParser;
use clap::ValueEnum;
use serde::Serialize;

use self::cases::Case;
use self::server::{Server, TimeWait};
use crate::procfs;
use crate::report::Report;
use crate::scenarios::{self, format_cpus, secs_f64, Context, Spec, LOAD_HELD};

/// The longest wait for TIME_WAIT sockets before a run.
const TIME_WAIT_BOUND: Duration = Duration::from_secs(70);

/// Descriptors each side needs besides one per open session (listeners,
/// targets, io_uring rings, logs).
const FD_MARGIN: usize = 256;

/// Generator CPU (median, percent) from which a figure is flagged as possibly
/// the generator's limit rather than the server's.
const GENERATOR_BOUND: f64 = 95.0;

/// Names of every case, for `--only`.
fn case_names() -> impl Iterator<Item = &'static str> {
    cases::CASES.iter().map(|c| c.name)
}

/// Flags of `anytls-bench compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Server A's command line. {port} and {password} are filled in; words are
    /// split at whitespace (no shell quoting) [default: anytls-server next to
    /// this program, "-l 127.0.0.1:{port} -p {password} --cores 1
    /// --max-sessions-per-ip 1000000 --max-sessions-per-user 1000000 --max-pending-per-subnet 1000000"].
    #[arg(long, value_name = "CMD")]
    pub a_cmd: Option<String>,

    /// Server B's command line, as --a-cmd [default: the reference server
    /// ../shared/peers/anytls-server from the project root, "-l
    /// 127.0.0.1:{port} -p {password}"; without it only A runs].
    #[arg(long, value_name = "CMD")]
    pub b_cmd: Option<String>,

    /// A's name in the table and chart [default: anytls-rs, or A with --a-cmd].
    #[arg(long, value_name = "NAME")]
    pub a_name: Option<String>,

    /// B's name in the table and chart [default: anytls-go, or B with --b-cmd].
    #[arg(long, value_name = "NAME")]
    pub b_name: Option<String>,

    /// Scenario set: single (one or two sessions, as in bench/README.md), busy
    /// (64 sessions flat out and at fixed loads, 5,000 and 20,000 idle
    /// sessions) or all.
    #[arg(long, value_enum, default_value_t = CompareSet::Single)]
    pub set: CompareSet,

    /// Run only these scenarios of the set (comma separated or repeated).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAME",
        value_parser = PossibleValuesParser::new(case_names()),
    )]
    pub only: Vec<String>,

    /// Runs of each scenario per server; A and B alternate, medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,

    /// Seconds each timed run lasts (idle runs last as long as opening the sessions takes).
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,

    /// The CPU both servers are pinned to (GOMAXPROCS=1 is set for them too).
    #[arg(long, default_value_t = 0, value_name = "CPU")]
    pub server_cpu: usize,

    /// CPUs for the generator's executors, comma separated [default: the last
    /// allowed CPU].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub cpus: Vec<usize>,

    /// Before each run, wait (at most 70 s) until fewer than this many TCP
    /// sockets are in TIME_WAIT (`tw` in /proc/net/sockstat).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub max_time_wait: u64,

    /// Seconds a server may take to accept connections on its port.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub start_timeout: f64,

    /// Write every run's figures and the medians as JSON to this file.
    #[arg(long, default_value = "compare.json", value_name = "FILE")]
    pub json: PathBuf,

    /// Draw the B/A ratios as an SVG chart to this file.
    #[arg(long, default_value = "compare.svg", value_name = "FILE")]
    pub svg: PathBuf,
}

/// The scenario sets of `compare`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareSet {
    /// One or two sessions: bulk up and down, short streams closed and open
    /// loop, new sessions, 1000 idle sessions.
    Single,
    /// Many sessions: bulk down and up over 64 sessions, flat out and at 400
    /// MB/s, short streams over 64 sessions (512 in flight, and 8000/s and
    /// 5000/s open loop), 5,000 and 20,000 idle sessions.
    Busy,
    /// Both sets.
    All,
}

/// One server under test.
struct Side {
    /// "A" or "B".
    key: &'static str,
    /// Its name in the table and chart.
    name: String,
    /// Its command line, with {port} and {password} still to fill in.
    argv: Vec<String>,
}

impl Side {
    fn new(key: &'static str, name: String, argv: Vec<String>) -> Result<Side, String> {
        for needed in ["{port}", "{password}"] {
            if !argv.iter().any(|w| w.contains(needed)) {
                return Err(format!(
                    "{key}'s command must contain {needed}: {}",
                    argv.join(" ")
                ));
            }
        }
        Ok(Side { key, name, argv })
    }

    /// The command line for a server on `addr` with `password`.
    fn command(&self, addr: SocketAddr, password: &str) -> Vec<String> {
        let port = addr.port().to_string();
        self.argv
            .iter()
            .map(|w| w.replace("{port}", &port).replace("{password}", password))
            .collect()
    }

    fn legend(&self) -> String {
        format!("{} = {}: {}", self.key, self.name, self.argv.join(" "))
    }
}

/// The default command of a server binary at `path`.
fn default_argv(path: &Path, extra: &[&str]) -> Vec<String> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    [path.display().to_string()]
        .into_iter()
        .chain(
            ["-l", "127.0.0.1:{port}", "-p", "{password}"]
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned()),
        )
        .collect()
}

/// A, and B unless it has no command and the reference server is absent (one
/// line says so).
fn sides(args: &CompareArgs) -> Result<Vec<Side>, String> {
    let split = |cmd: &str| cmd.split_whitespace().map(str::to_owned).collect();
    let a_argv = match &args.a_cmd {
        Some(cmd) => split(cmd),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
            let server = exe.with_file_name("anytls-server");
            if !server.is_file() {
                return Err(format!(
                    "A: {} not found: build it (cargo build --release --bin anytls-server) or give --a-cmd",
                    server.display()
                ));
            }
            // Every generated session comes from 127.0.0.1 with one password; the
            // reference has no per-address, per-user or pending-per-subnet cap, so
            // ours are lifted for the idle-session runs (5,000 and 20,000
            // sessions, opened many at a time).
            let flags = [
                "--cores",
                "1",
                "--max-sessions-per-ip",
                "1000000",
                "--max-sessions-per-user",
                "1000000",
                "--max-pending-per-subnet",
                "1000000",
            ];
            default_argv(&server, &flags)
        }
    };
    let named = |name: &Option<String>, given: bool, default: &str, key: &str| {
        name.clone()
            .unwrap_or_else(|| if given { key } else { default }.to_owned())
    };
    let mut sides = vec![Side::new(
        "A",
        named(&args.a_name, args.a_cmd.is_some(), "anytls-rs", "A"),
        a_argv,
    )?];
    let b_argv = match &args.b_cmd {
        Some(cmd) => Some(split(cmd)),
        None => {
            // This package is bench/ of the project; the peers sit beside the project.
            let project = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new(".."));
            let peer = project.join("../shared/peers/anytls-server");
            if peer.is_file() {
                Some(default_argv(&peer, &[]))
            } else {
                println!(
                    "B: the reference server {} is absent and --b-cmd not given: running A only",
                    peer.display()
                );
                None
            }
        }
    };
    if let Some(argv) = b_argv {
        let name = named(&args.b_name, args.b_cmd.is_some(), "anytls-go", "B");
        sides.push(Side::new("B", name, argv)?);
    }
    Ok(sides)
}

/// One figure of one run.
#[derive(Serialize)]
struct Figure {
    name: &'static str,
    value: Option<f64>,
}

/// One run of one case against one side.
#[derive(Serialize)]
pub struct Run {
    round: u32,
    side: &'static str,
    /// TIME_WAIT sockets when the run started, and the wait for them.
    time_wait: TimeWait,
    server_pid: u32,
    /// The server's CPU mask as the kernel reports it.
    server_cpus_allowed: Option<String>,
    /// Wall time of the scenario (set-up included).
    wall_s: f64,
    /// The server's CPU time (user + system) over `wall_s`.
    server_cpu_s: Option<f64>,
    server_cpu_percent: Option<f64>,
    /// Bulk cases: `server_cpu_s` per GB of payload moved.
    server_cpu_s_per_gb: Option<f64>,
    generator_cpu_percent: Option<f64>,
    errors: u64,
    /// The case's figures, in its order (`None` if the run failed).
    figures: Vec<Figure>,
    /// Set if the server ended during the run.
    server_exited: Option<String>,
    /// Set if the scenario could not run.
    error: Option<String>,
    /// The scenario's full report.
    report: Option<Report>,
}

/// Every run of one case.
#[derive(Serialize)]
pub struct CaseResult {
    #[serde(skip)]
    case: &'static Case,
    name: &'static str,
    title: &'static str,
    /// The scenario and its flags (besides server, password, CPUs, duration).
    scenario: &'static str,
    flags: Vec<String>,
    /// Why the case did not run.
    skipped: Option<String>,
    runs: Vec<Run>,
}

/// What every run shares.
struct Plan {
    args: CompareArgs,
    generator_cpus: Vec<usize>,
    password: String,
    log_dir: PathBuf,
}

/// Runs the comparison; whether every case that ran has a figure for each side.
pub fn run(args: CompareArgs) -> Result<bool, String> {
    for (name, v) in [
        ("--duration", args.duration),
        ("--start-timeout", args.start_timeout),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("{name} must be a positive number of seconds"));
        }
    }
    let selected = cases::select(args.set, &args.only)?;
    let generator_cpus = scenarios::pick_cpus(&args.cpus, None)?;
    let allowed = procfs::allowed_cpus();
    if !allowed.is_empty() && !allowed.contains(&args.server_cpu) {
        return Err(format!(
            "--server-cpu {}: not one this process may use ({allowed:?})",
            args.server_cpu
        ));
    }
    let sides = sides(&args)?;
    server::install_cleanup()?;
    let nofile = server::raise_nofile_limit();
    let mut notes = Vec::new();
    if generator_cpus.contains(&args.server_cpu) {
        notes.push(format!(
            "the generator shares CPU {} with the servers: the figures measure the fight between them",
            args.server_cpu
        ));
    }

    let mut results: Vec<CaseResult> = selected
        .into_iter()
        .map(|case| CaseResult {
            case,
            name: case.name,
            title: case.title,
            scenario: case.scenario.name(),
            flags: case.tuning.flags(),
            skipped: descriptors_short(case, nofile),
            runs: Vec::new(),
        })
        .collect();
    for result in &results {
        if let Some(why) = &result.skipped {
            println!("skipping {}: {why}", result.case.name);
        }
    }
    let plan = Plan {
        generator_cpus,
        password: format!("compare-{:016x}", rand::random::<u64>()),
        log_dir: std::env::temp_dir(),
        args,
    };
    let args = &plan.args;
    let unix_time = procfs::unix_time();
    for side in &sides {
        eprintln!("{}", side.legend());
    }
    for round in 1..=args.rounds {
        for result in results.iter_mut().filter(|r| r.skipped.is_none()) {
            for side in &sides {
                let run = one_run(&plan, result.case, side, round)?;
                eprintln!("{}", progress_line(&plan, result.case, side, &run));
                result.runs.push(run);
            }
        }
    }

    let keys: Vec<&'static str> = sides.iter().map(|s| s.key).collect();
    let rows = summary::rows(&results, &keys);
    notes.extend(run_notes(&results, &rows));
    let machine = format!(
        "{}, {} CPUs, Linux {}",
        procfs::cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        procfs::kernel().unwrap_or_default(),
    );
    let date = utc_date(unix_time);
    let mut legend = vec![format!(
        "anytls-bench compare, {date}, {machine}: medians of {} round(s), {} s per run, \
         servers on CPU {}, generator on CPU(s) {}",
        args.rounds,
        args.duration,
        args.server_cpu,
        format_cpus(&plan.generator_cpus)
    )];
    legend.extend(sides.iter().map(Side::legend));
    let glossary: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r.case.name, r.case.title))
        .collect();
    print!("{}", summary::table(&legend, &rows, &glossary, &notes));

    let doc = serde_json::json!({
        "tool": "anytls-bench compare",
        "version": env!("CARGO_PKG_VERSION"),
        "context": {
            "date_utc": date,
            "unix_time": unix_time,
            "cpu_model": procfs::cpu_model(),
            "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "kernel": procfs::kernel(),
            "allowed_cpus": allowed,
            "server_cpu": args.server_cpu,
            "generator_cpus": plan.generator_cpus,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "set": format!("{:?}", args.set).to_lowercase(),
            "only": args.only,
            "max_time_wait": args.max_time_wait,
            "time_wait_bound_s": TIME_WAIT_BOUND.as_secs(),
            "nofile_limit": nofile,
            "sides": sides.iter().map(|s| serde_json::json!({
                "side": s.key, "name": s.name, "command": s.argv.join(" "),
            })).collect::<Vec<_>>(),
        },
        "table": rows,
        "notes": notes,
        "cases": results,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&args.json, text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    println!("JSON: {}", args.json.display());

    let bars = chart_bars(&rows);
    if bars.is_empty() {
        println!("no B/A ratio to draw: no chart");
    } else {
        let title = format!(
            "anytls-bench compare: B ({}) / A ({}), medians of {} round(s)",
            sides.get(1).map_or("", |s| s.name.as_str()),
            sides[0].name,
            args.rounds
        );
        chart::draw(&args.svg, &title, &format!("{date}; {machine}"), &bars)?;
        println!("chart: {}", args.svg.display());
    }
    Ok(rows
        .iter()
        .filter(|r| r.skipped.is_none())
        .all(|r| r.sides.iter().all(|s| s.median.is_some())))
}

/// Why `case` cannot run with `limit` descriptors per process, if it cannot.
fn descriptors_short(case: &Case, limit: Option<u64>) -> Option<String> {
    let needed = (case.sessions + FD_MARGIN) as u64;
    let limit = limit?;
    (limit < needed).then(|| {
        format!(
            "{} sessions need about {needed} open files on each side, the limit is {limit} \
             (raise the hard limit: ulimit -Hn, or LimitNOFILE)",
            case.sessions
        )
    })
}

/// One run: settle, start the server, run the scenario, kill the server.
fn one_run(plan: &Plan, case: &'static Case, side: &Side, round: u32) -> Result<Run, String> {
    let args = &plan.args;
    let time_wait = server::settle_time_wait(args.max_time_wait, TIME_WAIT_BOUND);
    let addr = server::free_port()?;
    let log = plan.log_dir.join(format!(
        "anytls-compare-{}-{}.log",
        std::process::id(),
        side.key
    ));
    let mut server = Server::start(
        &side.command(addr, &plan.password),
        args.server_cpu,
        addr,
        secs_f64(args.start_timeout),
        &log,
    )
    .map_err(|e| format!("{} ({}): {e}", side.key, side.name))?;
    let pid = server.pid();
    let spec = Spec {
        server: addr.to_string(),
        password: Some(plan.password.clone()),
        insecure: true,
        no_progress: true,
        cpus: plan.generator_cpus.clone(),
        server_pid: Some(pid),
        duration: Some(args.duration),
        ..Spec::default()
    };
    let ctx = Arc::new(Context::new(
        case.tuning.applied_to(spec),
        &[case.scenario],
    )?);

    let server_cpus_allowed = procfs::cpus_allowed_list(pid);
    let cpu_before = procfs::process_cpu(pid);
    let started = Instant::now();
    let outcome = scenarios::run(&ctx, case.scenario);
    let wall = started.elapsed();
    let cpu_after = procfs::process_cpu(pid);
    let server_exited = server.exited().map(|s| s.to_string());
    drop(server);

    let server_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
        _ => None,
    };
    let mut run = Run {
        round,
        side: side.key,
        time_wait,
        server_pid: pid,
        server_cpus_allowed,
        wall_s: wall.as_secs_f64(),
        server_cpu_s: server_cpu,
        server_cpu_percent: procfs::percent(cpu_before, cpu_after, wall),
        server_cpu_s_per_gb: None,
        generator_cpu_percent: None,
        errors: 0,
        figures: case
            .metrics
            .iter()
            .map(|m| Figure {
                name: m.label,
                value: None,
            })
            .collect(),
        server_exited,
        error: None,
        report: None,
    };
    match outcome {
        Ok(report) => {
            if report.succeeded {
                for (figure, metric) in run.figures.iter_mut().zip(case.metrics) {
                    figure.value = metric.pick.read(&report);
                }
            }
            let read = |name| cases::Pick::Figure(name).read(&report);
            run.generator_cpu_percent = read("generator CPU");
            if case.bulk {
                let gb = read("payload moved").map(|mb| mb / 1000.0);
                run.server_cpu_s_per_gb = match (server_cpu, gb) {
                    (Some(cpu), Some(gb)) if gb > 0.0 => Some(cpu / gb),
                    _ => None,
                };
            }
            run.errors = report.errors.values().map(|e| e.count).sum();
            run.report = Some(report);
        }
        Err(e) => run.error = Some(e),
    }
    Ok(run)
}

/// The line printed after each run.
fn progress_line(plan: &Plan, case: &Case, side: &Side, run: &Run) -> String {
    let mut line = format!(
        "[{}/{}] {} {} ({}):",
        run.round, plan.args.rounds, case.name, side.key, side.name
    );
    for figure in &run.figures {
        let value = figure
            .value
            .map_or_else(|| "-".to_owned(), crate::report::format_value);
        line += &format!(" {} {value},", figure.name);
    }
    if let Some(cpu) = run.server_cpu_percent {
        line += &format!(" server CPU {cpu:.0}%,");
    }
    line += &format!(
        " TIME_WAIT at start {}",
        run.time_wait
            .at_start
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    );
    if run.errors > 0 {
        line += &format!(", {} errors", run.errors);
    }
    if let Some(e) = &run.error {
        line += &format!(", FAILED: {e}");
    }
    if let Some(status) = &run.server_exited {
        line += &format!(", the server EXITED during the run ({status})");
    }
    line
}

/// Notes under the table: waits that hit their bound, errors, failed runs,
/// servers that died, fixed loads not held, figures that may be the
/// generator's limit.
fn run_notes(results: &[CaseResult], rows: &[summary::Row]) -> Vec<String> {
    let mut notes = Vec::new();
    let runs = || {
        results
            .iter()
            .flat_map(|r| r.runs.iter().map(move |run| (r.case, run)))
    };
    let bound_hits: Vec<String> = runs()
        .filter(|(_, run)| run.time_wait.bound_hit)
        .map(|(case, run)| {
            format!(
                "{} {} round {} ({})",
                case.name,
                run.side,
                run.round,
                run.time_wait.at_start.unwrap_or_default()
            )
        })
        .collect();
    if bound_hits.is_empty() {
        let most = runs().filter_map(|(_, r)| r.time_wait.at_start).max();
        if let Some(most) = most {
            notes.push(format!(
                "TIME_WAIT sockets at the start of a run: at most {most}"
            ));
        }
    } else {
        notes.push(format!(
            "the TIME_WAIT wait hit its {}s bound before {} run(s), which started with that many \
             sockets still in TIME_WAIT: {}",
            TIME_WAIT_BOUND.as_secs(),
            bound_hits.len(),
            bound_hits.join(", ")
        ));
    }
    for (case, run) in runs() {
        if let Some(e) = &run.error {
            notes.push(format!(
                "{} {} round {} failed: {e}",
                case.name, run.side, run.round
            ));
        }
        if let Some(status) = &run.server_exited {
            notes.push(format!(
                "{} {} round {}: the server exited during the run ({status})",
                case.name, run.side, run.round
            ));
        }
    }
    for result in results {
        notes.extend(load_not_held(result));
    }
    for row in rows {
        for side in &row.sides {
            if side.errors > 0 {
                notes.push(format!(
                    "{} {}: {} errors over all rounds (see the JSON)",
                    row.case, side.side, side.errors
                ));
            }
            if side
                .generator_cpu_percent
                .is_some_and(|c| c >= GENERATOR_BOUND)
            {
                notes.push(format!(
                    "{} {} ({}): generator CPU {:.0}%: the figure may be the generator's limit",
                    row.case,
                    side.side,
                    row.figure,
                    side.generator_cpu_percent.unwrap_or_default()
                ));
            }
        }
    }
    notes.dedup();
    notes
}

/// For a fixed-load case, a note for each side whose median achieved load fell
/// short of the offered one: its CPU % is then what it managed, not the cost
/// of the load.
fn load_not_held(result: &CaseResult) -> Vec<String> {
    let Some((offered, achieved)) = result.case.fixed_load() else {
        return Vec::new();
    };
    let mut sides: Vec<&'static str> = Vec::new();
    for run in &result.runs {
        if !sides.contains(&run.side) {
            sides.push(run.side);
        }
    }
    sides
        .into_iter()
        .filter_map(|side| {
            let median = summary::median(
                result
                    .runs
                    .iter()
                    .filter(|r| r.side == side)
                    .filter_map(|r| r.report.as_ref().and_then(|report| achieved.read(report))),
            )?;
            (median < offered * LOAD_HELD).then(|| {
                format!(
                    "{} {side}: the offered load was not held ({} of {}): its CPU % is the \
                     server at its limit, not the cost of this load",
                    result.case.name,
                    crate::report::format_value(median),
                    crate::report::format_value(offered)
                )
            })
        })
        .collect()
}

/// The chart's bars: each figure's B/A, and for bulk cases B/A of server
/// CPU-seconds per GB.
fn chart_bars(rows: &[summary::Row]) -> Vec<chart::Bar> {
    let mut bars = Vec::new();
    for row in rows {
        if let Some(ratio) = row.b_over_a {
            bars.push(chart::Bar {
                label: format!("{}: {}", row.case, row.figure),
                ratio,
                higher_is_better: row.higher_is_better,
            });
        }
        if let Some(ratio) = row.cpu_s_per_gb_b_over_a {
            bars.push(chart::Bar {
                label: format!("{}: server CPU-s/GB", row.case),
                ratio,
                higher_is_better: false,
            });
        }
    }
    bars
}

/// "YYYY-MM-DD HH:MM UTC" for a Unix time (proleptic Gregorian calendar).
fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Days to civil date (H. Hinnant's algorithm), epoch shifted to 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_795_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn medians() {
        assert_eq!(summary::median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(summary::median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(summary::median([]), None);
    }

    #[test]
    fn only_narrows_the_set() {
        let names = |set, only: &[&str]| {
            let only: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
            cases::select(set, &only).map(|c| c.iter().map(|c| c.name).collect::<Vec<_>>())
        };
        assert_eq!(names(CompareSet::Single, &[]).unwrap().len(), 6);
        assert_eq!(names(CompareSet::All, &[]).unwrap().len(), 15);
        assert_eq!(
            names(CompareSet::Single, &["streams", "up"]).unwrap(),
            ["up", "streams"]
        );
        assert!(names(CompareSet::Single, &["idle-5000"]).is_err());
    }
}
