//! `anytls-bench relay`: the relay's own figures through an anytls-rs server in
//! this process (formerly `cargo bench --bench relay`).
//!
//! The server runs on its own pinned executor (--server-cpu, CPU 0 by default);
//! the generator and its targets on --cpus (the last allowed CPU by default).
//! Four rows, each an ordinary scenario run ([`crate::scenarios`]) against that
//! server for --duration: bulk upload over 1 and 8 streams of one session
//! (MB/s), and short streams (open, 64-byte request answered by 64 bytes, close)
//! with 1 and 32 in flight (streams/s and latency). Every row also reports the
//! CPU use of the server's executor thread. It prints the scenario table, a
//! summary of the four rows, and the server's counters; it fails only when a row
//! moved nothing.

use crate::inproc::{self, RunPlacement, PASSWORD};
use crate::procfs;
use crate::report::{self, Report};
use crate::scenarios::{self, format_cpus, pick_cpus, Direction, Scenario, Tuning};

/// Flags of `anytls-bench relay`.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// Seconds each row runs.
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,

    #[command(flatten)]
    pub run: RunPlacement,
}

/// One row: its label, the scenario and the scenario's load.
struct Row {
    label: &'static str,
    scenario: Scenario,
    tuning: Tuning,
}

const ROWS: [Row; 4] = [
    Row {
        label: "upload, 1 stream, 1 session",
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Up),
            streams: Some(1),
            sessions: Some(1),
            ..Tuning::NONE
        },
    },
    Row {
        label: "upload, 8 streams, 1 session",
        scenario: Scenario::Throughput,
        tuning: Tuning {
            direction: Some(Direction::Up),
            streams: Some(8),
            sessions: Some(1),
            ..Tuning::NONE
        },
    },
    Row {
        label: "open+64B request/response+close, 1 in flight",
        scenario: Scenario::Streams,
        tuning: Tuning {
            concurrency: Some(1),
            sessions: Some(1),
            request_size: Some(64),
            ..Tuning::NONE
        },
    },
    Row {
        label: "open+64B request/response+close, 32 in flight",
        scenario: Scenario::Streams,
        tuning: Tuning {
            concurrency: Some(32),
            sessions: Some(1),
            request_size: Some(64),
            ..Tuning::NONE
        },
    },
];

/// Runs the four rows; whether every one of them moved something.
pub fn run(args: RelayArgs) -> Result<bool, String> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let cpus = pick_cpus(&args.run.cpus, None)?;
    inproc::check_server_cpu(args.run.server_cpu)?;
    let server = inproc::start_server(
        "127.0.0.1:0".parse().expect("an address"),
        PASSWORD,
        vec![args.run.server_cpu],
        None,
    )?;
    let addr = server.local_addr();
    let header = format!(
        "anytls-bench {} relay: anytls-rs in this process on {addr} (CPU {}), generator + targets on CPU(s) {}, {} s per row",
        env!("CARGO_PKG_VERSION"),
        args.run.server_cpu,
        format_cpus(&cpus),
        args.duration,
    );
    let mut reports = Vec::new();
    for row in &ROWS {
        let spec = inproc::spec(addr, &cpus, args.duration, args.run.no_progress);
        let ctx = inproc::scenario_context(row.scenario, row.tuning.applied_to(spec))?;
        let mut report = scenarios::run(&ctx, row.scenario)?;
        report.note(format!("relay row: {}", row.label));
        reports.push(report);
    }
    let stats = anytls::server::report::server_stats(&server.stats().snapshot());
    server.shutdown();

    print!("{}", report::table(&header, &reports));
    println!();
    print!("{}", summary(&reports));
    println!("server: {stats}");
    if let Some(path) = &args.run.json {
        let context = serde_json::json!({
            "command": "relay",
            "server": "anytls-rs in process",
            "server_cpu": args.run.server_cpu,
            "generator_cpus": cpus,
            "duration_s": args.duration,
            "kernel": procfs::kernel(),
            "cpu_model": procfs::cpu_model(),
            "unix_time": procfs::unix_time(),
            "server_stats": stats,
        });
        report::write_json(path, context, &reports)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(reports.iter().all(|r| r.succeeded))
}

/// One line per row: its headline figure and the server's CPU use.
fn summary(reports: &[Report]) -> String {
    let mut out = format!(
        "{:<46} {:>10} {:<10} {:>10}\n",
        "row", "result", "", "server CPU"
    );
    for (row, report) in ROWS.iter().zip(reports) {
        let (value, unit) = report
            .results
            .first()
            .map_or((f64::NAN, ""), |f| (f.value, f.unit.as_str()));
        let cpu = report
            .results
            .iter()
            .find(|f| f.name == "server CPU")
            .map_or("-".to_owned(), |f| format!("{:.0}%", f.value));
        out += &format!("{:<46} {value:>10.1} {unit:<10} {cpu:>10}\n", row.label);
    }
    out
}
