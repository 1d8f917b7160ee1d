//! `anytls-bench pool-e2e`: the outbound pool kinds end to end (formerly
//! `cargo bench --bench pool_e2e`).
//!
//! For each kind of --kinds, an anytls-rs server in this process with that pool
//! ([`crate::inproc`], pinned to --server-cpu) and the generator on --cpus:
//! --concurrency workers over --sessions sessions loop open a stream, wait for
//! its SYNACK (the pool hands the stream a spare connection to the target, or
//! dials one), send 64 bytes, read them back from an echo target, close. A
//! half-second warm-up lets the pool learn the target and dial its spares; then
//! --duration is measured: streams/s, stream-open (SYN to SYNACK) and
//! whole-exchange latency, errors, the server executor's CPU, and the pool's
//! own counters. The echo target is the generator's own ([`crate::targets`]) on
//! 127.0.0.1, on an executor of its own on the first generator CPU so that it
//! outlives the warm-up, or --target (e.g. `anytls-bench serve-echo` in a network namespace
//! behind a real delay: scripts/test_lockfree_performance.sh). Prints the
//! scenario table and a summary per kind; fails when a kind completed no stream.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use anytls::pool::{PoolConfig, PoolKind};
use anytls::server::report as server_report;

use crate::inproc::{self, RunPlacement, PASSWORD};
use crate::procfs;
use crate::report::{self, Report};
use crate::scenarios::{
    format_cpus, open_established, pick_cpus, request_response, run_window, Context, Load,
    Measured, Scenario, Spec,
};
use crate::stats::{Recorder, Tally};
use crate::targets::{self, Behaviour};
use crate::workers::{self, Worker};

/// Bytes each stream sends and gets back.
const REQUEST: usize = 64;

/// The warm-up run, and the pause after it.
const WARM_UP: Duration = Duration::from_millis(500);

/// Flags of `anytls-bench pool-e2e`.
#[derive(clap::Args, Debug, Clone)]
pub struct PoolE2eArgs {
    /// An echo target (host:port, reached by the server) instead of the
    /// generator's own on 127.0.0.1.
    #[arg(long, value_name = "ADDR")]
    pub target: Option<String>,

    /// Pool kinds to run, in order (none, lock, lockfree, highperf).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        default_value = "none,lock,lockfree,highperf",
        value_parser = parse_kind,
    )]
    pub kinds: Vec<String>,

    /// Seconds measured per kind (after the warm-up).
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,

    /// Streams in flight (workers).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Sessions the workers share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions: u32,

    /// Spares the pool keeps per target.
    #[arg(long, default_value_t = 16)]
    pub min_idle: usize,

    #[command(flatten)]
    pub run: RunPlacement,
}

/// A pool kind's name, checked.
fn parse_kind(text: &str) -> Result<String, String> {
    text.parse::<PoolKind>().map(|_| text.to_owned())
}

/// Runs every kind; whether each one completed at least one stream.
pub fn run(args: PoolE2eArgs) -> Result<bool, String> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let cpus = pick_cpus(&args.run.cpus, None)?;
    inproc::check_server_cpu(args.run.server_cpu)?;
    let header = format!(
        "anytls-bench {} pool-e2e: {} stream(s) in flight over {} session(s), {} s per kind, \
         min-idle {}, server in this process on CPU {}, generator on CPU(s) {}, target {}",
        env!("CARGO_PKG_VERSION"),
        args.concurrency,
        args.sessions,
        args.duration,
        args.min_idle,
        args.run.server_cpu,
        format_cpus(&cpus),
        args.target.as_deref().unwrap_or("an echo on 127.0.0.1"),
    );
    // The warm-up and the measured run are two runs of the generator's
    // executors: the target must outlive them both, so it has its own.
    let echo = match &args.target {
        Some(_) => None,
        None => Some(EchoTarget::start(cpus[0])?),
    };
    let target = match (&args.target, &echo) {
        (Some(target), _) => target.clone(),
        (None, Some(echo)) => echo.addr.to_string(),
        (None, None) => unreachable!("an echo target was started"),
    };
    let mut reports = Vec::new();
    for kind in &args.kinds {
        reports.push(one_kind(&args, &cpus, kind, &target)?);
    }
    drop(echo);
    print!("{}", report::table(&header, &reports));
    println!();
    print!("{}", summary(&args.kinds, &reports));
    if let Some(path) = &args.run.json {
        let context = serde_json::json!({
            "command": "pool-e2e",
            "server": "anytls-rs in process",
            "server_cpu": args.run.server_cpu,
            "generator_cpus": cpus,
            "kinds": args.kinds,
            "duration_s": args.duration,
            "warm_up_s": WARM_UP.as_secs_f64(),
            "kernel": procfs::kernel(),
            "cpu_model": procfs::cpu_model(),
            "unix_time": procfs::unix_time(),
        });
        report::write_json(path, context, &reports)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let ok = reports.iter().all(|r| r.succeeded);
    if !ok {
        eprintln!("anytls-bench pool-e2e: a pool kind completed no stream");
    }
    Ok(ok)
}

/// A server with pool `kind`, a warm-up, the measured run; its report.
fn one_kind(
    args: &PoolE2eArgs,
    cpus: &[usize],
    kind: &str,
    target: &str,
) -> Result<Report, String> {
    let pool = PoolConfig {
        kind: kind.parse()?,
        min_idle: args.min_idle,
        ..PoolConfig::default()
    };
    let server = inproc::start_server(
        "127.0.0.1:0".parse().expect("an address"),
        PASSWORD,
        vec![args.run.server_cpu],
        Some(pool),
    )?;
    let context = |duration: f64| {
        let spec = Spec {
            concurrency: args.concurrency as usize,
            sessions: Some(args.sessions as usize),
            request_size: REQUEST as u32,
            target: Some(target.to_owned()),
            ..inproc::spec(server.local_addr(), cpus, duration, args.run.no_progress)
        };
        // Short streams on shared sessions: the settings streams checks.
        inproc::scenario_context(Scenario::Streams, spec)
    };
    measure(&context(WARM_UP.as_secs_f64())?, kind)?;
    std::thread::sleep(WARM_UP);
    let ctx = context(args.duration)?;
    let measured = measure(&ctx, kind)?;
    let pool_stats = server_report::pool_stats(&server.pool().stats());
    let pool_status = server_report::pool_status(&server.pool().status());
    server.shutdown();

    let tally = &measured.tally;
    let secs = tally.wall().as_secs_f64();
    let mut report = Report::new("pool-e2e", tally);
    report
        .param("pool", kind)
        .param("min_idle", args.min_idle)
        .param("sessions", args.sessions)
        .param("concurrency", args.concurrency)
        .param("request_size", REQUEST);
    ctx.common_params(&mut report);
    report
        .figure("streams/s", per_sec(tally.ok, secs), "streams/s")
        .figure("streams completed", tally.ok as f64, "")
        .figure("wall time", secs, "s");
    measured.cpu_figures(&mut report);
    report
        .note("open = SYN to SYNACK, complete = open to the whole echo")
        .note(format!("pool: {pool_stats}"))
        .note(pool_status);
    Ok(report)
}

/// The generator's echo target on its own executor (pinned to a generator
/// CPU), until dropped.
struct EchoTarget {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl EchoTarget {
    fn start(cpu: usize) -> Result<EchoTarget, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stopped = stop.clone();
        let thread = workers::spawn_executor("bench-echo".into(), cpu, move || async move {
            let bound = targets::start(IpAddr::from([127, 0, 0, 1]), Behaviour::Echo);
            let failed = bound.is_err();
            let _ = tx.send(bound.map_err(|e| format!("cannot start the echo target: {e}")));
            while !failed && !stopped.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        });
        match rx.recv() {
            Ok(Ok(addr)) => Ok(EchoTarget {
                addr,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            // The executor did not start: its thread says why.
            Err(_) => Err(workers::join(thread)
                .err()
                .unwrap_or_else(|| "the echo target's executor ended".into())),
        }
    }
}

impl Drop for EchoTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = workers::join(thread);
        }
    }
}

/// `n` over `secs`, 0 for an empty interval.
fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Runs the workers on every generator executor.
fn measure(ctx: &Arc<Context>, kind: &str) -> Result<Measured, String> {
    let shared = ctx.clone();
    ctx.run_load(&format!("pool-e2e {kind}"), move |w| {
        worker(shared.clone(), w)
    })
}

/// One executor's share of the workers: open, SYNACK, 64 B echoed, close.
async fn worker(ctx: Arc<Context>, w: Worker) -> Tally {
    let rec = Rc::new(Recorder::new(w.live.clone()));
    let spec = &ctx.spec;
    let Some(load) = Load::for_worker(spec, &w) else {
        return rec.take();
    };
    let target = match ctx.target(Behaviour::Echo) {
        Ok(target) => Rc::new(target),
        Err(failed) => {
            rec.fail(failed);
            return rec.take();
        }
    };
    let pool = ctx.connected_pool(&w, &rec).await;
    let request: Rc<[u8]> = vec![0x09; REQUEST].into();
    let start = rec.start_window();
    let op = move |t0| {
        let (pool, target, request) = (pool.clone(), target.clone(), request.clone());
        async move {
            let session = pool.get().await?;
            let (stream, open) = open_established(&session, &target, t0).await?;
            let mut timings =
                request_response(&session, &stream, &request, request.len(), t0).await?;
            timings.open = Some(open);
            Ok(timings)
        }
    };
    run_window(rec, load, spec, &w, start, op).await
}

/// One line per kind: streams/s, stream-open latency in ms, errors.
fn summary(kinds: &[String], reports: &[Report]) -> String {
    let mut out = format!(
        "{:<10} {:>11} {:>12} {:>12} {:>12} {:>7} {:>11}\n",
        "pool", "streams/s", "open p50 ms", "open p99 ms", "open max ms", "errors", "server CPU"
    );
    for (kind, report) in kinds.iter().zip(reports) {
        let rate = report.results.first().map_or(0.0, |f| f.value);
        let open = report.latency_us.get("open");
        let ms = |us: Option<u64>| us.map_or("-".to_owned(), |v| format!("{:.3}", v as f64 / 1e3));
        let errors: u64 = report.errors.values().map(|e| e.count).sum();
        let cpu = report
            .results
            .iter()
            .find(|f| f.name == "server CPU")
            .map_or("-".to_owned(), |f| format!("{:.0}%", f.value));
        out += &format!(
            "{kind:<10} {rate:>11.0} {:>12} {:>12} {:>12} {errors:>7} {cpu:>11}\n",
            ms(open.map(|p| p.p50)),
            ms(open.map(|p| p.p99)),
            ms(open.map(|p| p.max)),
        );
    }
    out
}
