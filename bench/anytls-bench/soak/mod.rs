//! `anytls-bench soak`: a bounded soak test of an already running server.
//!
//! Every generator executor runs the same mix (its share of the lanes) against
//! the server, with its own loopback targets:
//!
//! - well-behaved clients ([`well`]): the library's client with a reusing
//!   [`anytls::client::SessionPool`]; bulk echo, short request/response, UDP over
//!   TCP echo and slow readers, every byte checked; abrupt disconnects beside them;
//! - hostile authenticated clients ([`hostile`]) speaking raw frames over their
//!   own TLS connection ([`raw`]), one action after another from a fixed list.
//!
//! The run has three phases. A warm-up (at least --warmup seconds and one round
//! of every hostile action) ends with every session closed; once the server's
//! descriptors have settled, its RSS and descriptor count are the baseline, so
//! whatever the server keeps for good after serving (per-core buffer pools, free
//! lists, allocator arenas) is part of it. Then the load runs for --duration.
//! At its end the well-behaved clients close their sessions, a few hostile
//! connections stay open doing nothing (the server's own timeouts must close
//! them), and the main thread waits (at most --settle seconds) for the server's
//! descriptors to come back to the baseline. The main thread samples
//! /proc/PID every second throughout and prints one summary.

mod fds;
mod hostile;
mod raw;
mod tally;
mod targets;
mod well;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anytls::tls::ServerVerification;

use crate::procfs;
use crate::scenarios::{format_cpus, pick_cpus, tls_client};
use crate::workers::{join, spawn_executor};
use tally::Tally;

/// Flags of `anytls-bench soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// The AnyTLS server, host:port (loopback: the generator's targets are on 127.0.0.1).
    #[arg(short = 's', long, default_value = "127.0.0.1:8443")]
    pub server: String,

    /// The password of the well-behaved clients.
    #[arg(short = 'p', long)]
    pub password: String,

    /// The password of the hostile clients [default: --password]. A second user
    /// keeps hostile sessions out of the well-behaved user's per-user cap.
    #[arg(long)]
    pub hostile_password: Option<String>,

    /// Source address of the hostile clients' connections (another loopback
    /// address keeps them out of the per-IP cap of the well-behaved clients on
    /// 127.0.0.1); falls back to the default source if it cannot be bound.
    #[arg(long, default_value = "127.0.0.2", value_name = "IP")]
    pub hostile_source: IpAddr,

    /// The server's process id: its RSS and open descriptors are read from /proc.
    #[arg(long, value_name = "PID")]
    pub server_pid: u32,

    /// Seconds of load after the warm-up.
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 600.0)]
    pub duration: f64,

    /// Seconds of warm-up at least (it also lasts until every hostile action ran
    /// once, at most --warmup + 120).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub warmup: f64,

    /// Seconds allowed after the load for the server's descriptors to come back
    /// to the baseline.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub settle: f64,

    /// MiB the final RSS may exceed the baseline RSS by.
    #[arg(long, value_name = "MIB", default_value_t = 16.0)]
    pub rss_tolerance_mib: f64,

    /// MiB the server's RSS may exceed the baseline by at its peak, under load
    /// and the hostile clients.
    #[arg(long, value_name = "MIB", default_value_t = 256.0)]
    pub peak_rss_tolerance_mib: f64,

    /// Milliseconds the well-behaved short requests' 99th percentile may take
    /// (dial or session reuse, request, whole response), hostile clients and
    /// all.
    #[arg(long, value_name = "MS", default_value_t = 1000.0)]
    pub short_p99_limit_ms: f64,

    /// MiB the host's kernel TCP memory (/proc/net/sockstat, both ends of every
    /// loopback connection) may exceed the baseline by at its peak; at the end it
    /// must be back within a tenth of it, and no orphaned socket may remain.
    #[arg(long, value_name = "MIB", default_value_t = 512.0)]
    pub tcp_mem_tolerance_mib: f64,

    /// Well-behaved streams in flight at once (lanes, each on its own pooled
    /// session): about half short, the rest bulk, UDP and slow readers.
    #[arg(long, default_value_t = 12)]
    pub sessions: usize,

    /// Hostile clients at once (each runs the hostile actions in turn).
    #[arg(long, default_value_t = 1)]
    pub hostile: usize,

    /// KiB echoed by one bulk stream (each stream picks 1/2 to 1 times this).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub bulk_kib: usize,

    /// KiB one slow reader downloads (at about 200 KiB/s).
    #[arg(long, value_name = "KIB", default_value_t = 384)]
    pub slow_kib: usize,

    /// SYN frames without an address sent by one SYN flood.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub syn_flood: usize,

    /// 64 KiB Waste frames sent by one rule-breaking client.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub waste_frames: usize,

    /// Sessions opened at once by the many-sessions client.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub many_sessions: usize,

    /// Seconds a well-behaved operation (connect, stream) may take before it
    /// counts as an error (timeout).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub op_timeout: f64,

    /// CPUs for the generator's executors, comma separated [default: the last
    /// --cores CPUs of the allowed set].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub cpus: Vec<usize>,

    /// Number of generator executors [default: 1].
    #[arg(long)]
    pub cores: Option<usize>,
}

/// What the executors need, shared with them.
pub struct Plan {
    pub server: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    pub password: String,
    pub hostile_password: String,
    pub hostile_source: Option<IpAddr>,
    pub warmup: Duration,
    pub duration: Duration,
    pub op_timeout: Duration,
    pub bulk_bytes: usize,
    pub slow_bytes: usize,
    pub syn_flood: usize,
    pub waste_frames: usize,
    pub many_sessions: usize,
    /// (short, bulk, udp, slow, abrupt) lanes of each executor.
    pub lanes: Lanes,
    pub hostile_lanes: usize,
}

/// Lanes of one executor.
#[derive(Clone, Copy, Debug)]
pub struct Lanes {
    pub short: usize,
    pub bulk: usize,
    pub udp: usize,
    pub slow: usize,
    pub abrupt: usize,
}

/// Phase flags and live counters shared by the main thread and the executors.
#[derive(Default)]
pub struct Shared {
    /// Executors whose warm-up ended (sessions closed).
    pub warm_done: AtomicUsize,
    /// Set by the main thread once the baseline is taken.
    pub go: AtomicBool,
    /// Executors whose load ended.
    pub load_done: AtomicUsize,
    /// Set by the main thread when the settle check is over: executors drop what
    /// they still hold and end.
    pub release: AtomicBool,
    /// Set when the run must stop early (server gone).
    pub abort: AtomicBool,
    /// Well-behaved streams served.
    pub ok: AtomicU64,
    /// Well-behaved errors.
    pub errors: AtomicU64,
    /// Hostile actions done.
    pub hostile: AtomicU64,
}

/// One reading of the server's /proc.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    /// The host's kernel TCP memory and orphaned TCP sockets.
    tcp: TcpMemory,
}

#[derive(Clone, Copy, Debug, Default)]
struct TcpMemory {
    kib: u64,
    orphans: u64,
}

/// `TCP: inuse N orphan N tw N alloc N mem PAGES` from /proc/net/sockstat.
fn tcp_memory() -> TcpMemory {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("TCP:")).unwrap_or("");
    let field = |name: &str| {
        let mut words = line.split_whitespace();
        words
            .position(|w| w == name)
            .and_then(|_| words.next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    TcpMemory {
        kib: field("mem") * 4,
        orphans: field("orphan"),
    }
}

fn sample(pid: u32) -> Option<Sample> {
    let rss_kib = procfs::rss_kib(pid)?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Sample {
        rss_kib,
        fds,
        tcp: tcp_memory(),
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The main thread's view of the server over time.
struct Watch {
    pid: u32,
    last: Sample,
    peak_rss: u64,
    peak_fds: usize,
    peak_tcp_kib: u64,
    last_read: Instant,
    started: Instant,
    last_note: Instant,
    gone: bool,
}

impl Watch {
    /// Reads /proc if a second passed since the last reading (or `force`).
    fn tick(&mut self, force: bool) {
        if !force && self.last_read.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_read = Instant::now();
        match sample(self.pid) {
            Some(s) => {
                self.last = s;
                self.peak_rss = self.peak_rss.max(s.rss_kib);
                self.peak_fds = self.peak_fds.max(s.fds);
                self.peak_tcp_kib = self.peak_tcp_kib.max(s.tcp.kib);
            }
            None => self.gone = true,
        }
    }

    /// A progress line on stderr every 30 s.
    fn note(&mut self, phase: &str, shared: &Shared) {
        if self.last_note.elapsed() < Duration::from_secs(30) {
            return;
        }
        self.last_note = Instant::now();
        eprintln!(
            "soak: {:>4.0} s {phase}: {} well-behaved streams served, {} errors, {} hostile actions; server RSS {:.1} MiB, {} fds",
            self.started.elapsed().as_secs_f64(),
            shared.ok.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
            shared.hostile.load(Ordering::Relaxed),
            mib(self.last.rss_kib),
            self.last.fds,
        );
    }
}

fn secs(v: f64, name: &str) -> Result<Duration, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{name} must be a non-negative number of seconds"))
    }
}

/// Splits `total` well-behaved lanes over kinds and executors.
fn lanes_for(total: usize, executors: usize) -> Lanes {
    let per = total.div_ceil(executors).max(5);
    let bulk = (per / 6).max(1);
    let udp = (per / 8).max(1);
    let slow = (per / 8).max(1);
    let short = per.saturating_sub(bulk + udp + slow).max(1);
    Lanes {
        short,
        bulk,
        udp,
        slow,
        abrupt: 1,
    }
}

/// Runs the soak; whether it passed.
pub fn run(args: SoakArgs) -> Result<bool, String> {
    let warmup = secs(args.warmup, "--warmup")?;
    let duration = secs(args.duration, "--duration")?;
    let settle = secs(args.settle, "--settle")?;
    let op_timeout = secs(args.op_timeout, "--op-timeout")?;
    if args.sessions == 0 || args.cores == Some(0) {
        return Err("--sessions and --cores must be at least 1".into());
    }
    let server = args
        .server
        .to_socket_addrs()
        .map_err(|e| format!("--server {}: {e}", args.server))?
        .next()
        .ok_or_else(|| format!("--server {}: no address", args.server))?;
    if !server.ip().is_loopback() {
        return Err(format!(
            "--server {server}: the soak runs on loopback only (its targets listen on 127.0.0.1)"
        ));
    }
    let pid = args.server_pid;
    let start = sample(pid).ok_or_else(|| format!("no process {pid} to watch (--server-pid)"))?;
    let cpus = pick_cpus(&args.cpus, args.cores)?;
    let hostile_source = std::net::TcpListener::bind(SocketAddr::new(args.hostile_source, 0))
        .is_ok()
        .then_some(args.hostile_source);
    let plan = Arc::new(Plan {
        server,
        tls: tls_client(ServerVerification::Insecure, false),
        password: args.password.clone(),
        hostile_password: args
            .hostile_password
            .clone()
            .unwrap_or_else(|| args.password.clone()),
        hostile_source,
        warmup,
        duration,
        op_timeout,
        bulk_bytes: args.bulk_kib.max(1) * 1024,
        slow_bytes: args.slow_kib.max(1) * 1024,
        syn_flood: args.syn_flood,
        waste_frames: args.waste_frames,
        many_sessions: args.many_sessions,
        lanes: lanes_for(args.sessions, cpus.len()),
        hostile_lanes: args.hostile.div_ceil(cpus.len()),
    });
    let shared = Arc::new(Shared::default());
    eprintln!(
        "soak: server {server} (pid {pid}), generator on CPU(s) {}, lanes per executor {:?}, {} hostile, hostile source {}",
        format_cpus(&cpus),
        plan.lanes,
        plan.hostile_lanes,
        hostile_source.map_or("(default)".to_owned(), |ip| ip.to_string()),
    );

    let handles: Vec<_> = cpus
        .iter()
        .enumerate()
        .map(|(index, &cpu)| {
            let (plan, shared) = (plan.clone(), shared.clone());
            spawn_executor(format!("soak-{index}"), cpu, move || {
                worker(plan, shared, index)
            })
        })
        .collect();
    let executors = handles.len();
    let started = Instant::now();
    let mut watch = Watch {
        pid,
        last: start,
        peak_rss: start.rss_kib,
        peak_fds: start.fds,
        peak_tcp_kib: start.tcp.kib,
        last_read: started,
        started,
        last_note: started,
        gone: false,
    };
    let pause = |shared: &Shared, gone: bool| {
        if gone {
            // Nothing left to measure: let the executors end at once.
            shared.abort.store(true, Ordering::Release);
            shared.go.store(true, Ordering::Release);
            shared.release.store(true, Ordering::Release);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dead = |handles: &[std::thread::JoinHandle<Result<Tally, String>>]| {
        handles.iter().any(|h| h.is_finished())
    };

    // Warm-up: until every executor closed its sessions.
    while shared.warm_done.load(Ordering::Acquire) < executors && !watch.gone && !dead(&handles) {
        watch.tick(false);
        watch.note("warm-up", &shared);
        pause(&shared, watch.gone);
    }
    let warmup_took = started.elapsed();
    // The baseline: once the descriptor count has held still for 3 s (60 s at most).
    let settle_from = Instant::now();
    let mut stable_since = Instant::now();
    watch.tick(true);
    let mut fds = watch.last.fds;
    while settle_from.elapsed() < Duration::from_secs(60) && !watch.gone {
        std::thread::sleep(Duration::from_millis(250));
        watch.tick(true);
        if watch.last.fds != fds {
            fds = watch.last.fds;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(3) {
            break;
        }
    }
    let baseline = watch.last;
    let baseline_fds = fds::table(pid);
    let baseline_took = settle_from.elapsed();
    // Peaks from here on.
    watch.peak_rss = baseline.rss_kib;
    watch.peak_fds = baseline.fds;
    watch.peak_tcp_kib = baseline.tcp.kib;
    shared.go.store(true, Ordering::Release);
    let load_started = Instant::now();

    while shared.load_done.load(Ordering::Acquire) < executors && !watch.gone && !dead(&handles) {
        watch.tick(false);
        watch.note("load", &shared);
        pause(&shared, watch.gone);
    }
    let load_took = load_started.elapsed();
    // Settle: descriptors back to the baseline while the lingering hostile
    // connections are still open (the server must close them itself).
    let settle_started = Instant::now();
    watch.tick(true);
    while watch.last.fds != baseline.fds && settle_started.elapsed() < settle && !watch.gone {
        std::thread::sleep(Duration::from_millis(250));
        watch.tick(true);
    }
    let fds_settled = (watch.last.fds == baseline.fds).then(|| settle_started.elapsed());
    // Let freed memory go back (allocator trims, deferred frees) before the final RSS.
    if !watch.gone {
        std::thread::sleep(Duration::from_secs(2));
        watch.tick(true);
    }
    let final_sample = watch.last;
    let leftovers = if final_sample.fds != baseline.fds && !watch.gone {
        fds::new_since(pid, &baseline_fds, &fds::table(pid))
    } else {
        Vec::new()
    };
    pause(&shared, watch.gone);
    shared.release.store(true, Ordering::Release);
    let mut tally = Tally::default();
    let mut executor_errors = Vec::new();
    for handle in handles {
        match join(handle) {
            Ok(t) => tally.merge(t),
            Err(e) => executor_errors.push(e),
        }
    }
    // After the generator let go of everything (informational).
    std::thread::sleep(Duration::from_millis(500));
    let after_release = sample(pid);

    // The summary.
    let mut failures = Vec::new();
    if watch.gone {
        failures.push("the server process ended during the soak".to_owned());
    }
    failures.extend(executor_errors.iter().map(|e| format!("generator: {e}")));
    if tally.errors > 0 {
        failures.push(format!(
            "{} errors seen by well-behaved clients (goal 0)",
            tally.errors
        ));
    }
    if let Some(p99) = tally.short_quantile(0.99) {
        if p99.as_secs_f64() * 1e3 > args.short_p99_limit_ms {
            failures.push(format!(
                "well-behaved short requests: p99 {:.1} ms, above {} ms",
                p99.as_secs_f64() * 1e3,
                args.short_p99_limit_ms
            ));
        }
    }
    for kind in tally::KINDS {
        if tally.served.get(kind).is_none_or(|s| s.streams == 0) {
            failures.push(format!("no {kind} stream was served"));
        }
    }
    if final_sample.fds != baseline.fds {
        failures.push(format!(
            "server fds {} after {:.0} s of settling, baseline {}",
            final_sample.fds,
            settle.as_secs_f64(),
            baseline.fds
        ));
    }
    // A figure past its baseline plus a tolerance fails the soak.
    let mut over = |what: &str, kib: u64, base_kib: u64, tolerance_mib: f64| {
        let limit = base_kib + (tolerance_mib * 1024.0) as u64;
        if kib > limit {
            failures.push(format!(
                "{what} {:.1} MiB, above baseline {:.1} MiB + {tolerance_mib} MiB",
                mib(kib),
                mib(base_kib),
            ));
        }
        limit
    };
    over(
        "server RSS peaked at",
        watch.peak_rss,
        baseline.rss_kib,
        args.peak_rss_tolerance_mib,
    );
    let tcp_limit = over(
        "kernel TCP memory peaked at",
        watch.peak_tcp_kib,
        baseline.tcp.kib,
        args.tcp_mem_tolerance_mib,
    );
    let rss_limit = over(
        "server RSS at the end",
        final_sample.rss_kib,
        baseline.rss_kib,
        args.rss_tolerance_mib,
    );
    over(
        "kernel TCP memory at the end",
        final_sample.tcp.kib,
        baseline.tcp.kib,
        args.tcp_mem_tolerance_mib / 10.0,
    );
    if final_sample.tcp.orphans > baseline.tcp.orphans {
        failures.push(format!(
            "{} orphaned TCP sockets at the end, {} at the baseline",
            final_sample.tcp.orphans, baseline.tcp.orphans
        ));
    }

    println!(
        "anytls-bench {} soak: server {server} (pid {pid}), generator on CPU(s) {}",
        env!("CARGO_PKG_VERSION"),
        format_cpus(&cpus)
    );
    println!(
        "phases: warm-up {:.0} s, baseline settled in {:.1} s, load {:.0} s, settle {}",
        warmup_took.as_secs_f64(),
        baseline_took.as_secs_f64(),
        load_took.as_secs_f64(),
        fds_settled.map_or(
            format!("not reached in {:.0} s", settle.as_secs_f64()),
            |d| format!("{:.1} s", d.as_secs_f64())
        ),
    );
    println!(
        "lanes per executor: {} short, {} bulk, {} udp, {} slow, {} abrupt; {} hostile",
        plan.lanes.short,
        plan.lanes.bulk,
        plan.lanes.udp,
        plan.lanes.slow,
        plan.lanes.abrupt,
        plan.hostile_lanes
    );
    print!("{}", tally.report());
    println!("server (from /proc/{pid}):");
    println!(
        "  the baseline is read after the warm-up (the same well-behaved mix and one round of every hostile action),"
    );
    println!(
        "  once every warm-up session was closed and the fd count held still for 3 s: what the server keeps"
    );
    println!(
        "  for good after serving (per-core buffer pools, free lists, allocator arenas) is part of it."
    );
    println!(
        "  RSS MiB     start {:>7.1}  baseline {:>7.1}  peak {:>7.1}  final {:>7.1}  (limit {:.1} = baseline + {})",
        mib(start.rss_kib),
        mib(baseline.rss_kib),
        mib(watch.peak_rss),
        mib(final_sample.rss_kib),
        mib(rss_limit),
        args.rss_tolerance_mib
    );
    println!(
        "  fds         start {:>7}  baseline {:>7}  peak {:>7}  final {:>7}  (must equal the baseline)",
        start.fds, baseline.fds, watch.peak_fds, final_sample.fds
    );
    println!(
        "  host TCP MiB start {:>6.1}  baseline {:>7.1}  peak {:>7.1}  final {:>7.1}  (peak limit {:.1}); orphans baseline {} final {}",
        mib(start.tcp.kib),
        mib(baseline.tcp.kib),
        mib(watch.peak_tcp_kib),
        mib(final_sample.tcp.kib),
        mib(tcp_limit),
        baseline.tcp.orphans,
        final_sample.tcp.orphans
    );
    if !leftovers.is_empty() {
        println!("  descriptors open at the end that were not open at the baseline:");
        for line in &leftovers {
            println!("    {line}");
        }
    }
    if let Some(s) = after_release {
        println!(
            "  after the generator closed everything: RSS {:.1} MiB, {} fds",
            mib(s.rss_kib),
            s.fds
        );
    }
    if failures.is_empty() {
        println!("result: PASS");
    } else {
        println!("result: FAIL");
        for f in &failures {
            println!("  - {f}");
        }
    }
    Ok(failures.is_empty())
}

/// Waits (polling) until `flag` is set or `limit` passes; whether it was set.
async fn wait_flag(flag: &AtomicBool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !flag.load(Ordering::Acquire) {
        if Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// One executor's part of the soak.
async fn worker(plan: Arc<Plan>, shared: Arc<Shared>, index: usize) -> Tally {
    let rec = tally::Rec::new(shared.clone());
    let targets = match targets::Targets::start() {
        Ok(t) => std::rc::Rc::new(t),
        Err(e) => {
            rec.error("generator", &format!("cannot start the targets: {e}"));
            shared.warm_done.fetch_add(1, Ordering::AcqRel);
            shared.load_done.fetch_add(1, Ordering::AcqRel);
            return rec.take();
        }
    };
    let ctx = Ctx {
        plan: plan.clone(),
        shared: shared.clone(),
        targets,
        rec: rec.clone(),
        index,
    };
    // Warm-up: at least --warmup and one round of the hostile actions.
    let min_end = Instant::now() + plan.warmup;
    let hard_end = min_end + Duration::from_secs(120);
    phase(&ctx, min_end, hard_end, true).await;
    shared.warm_done.fetch_add(1, Ordering::AcqRel);
    // The baseline is taken meanwhile.
    if !wait_flag(&shared.go, Duration::from_secs(120)).await {
        rec.error("generator", "the main thread never started the load");
    }
    let end = Instant::now() + plan.duration;
    if !shared.abort.load(Ordering::Acquire) {
        phase(&ctx, end, end, false).await;
    }
    // Connections left open on purpose: the server's timeouts must close them.
    let lingering = hostile::linger(&ctx).await;
    shared.load_done.fetch_add(1, Ordering::AcqRel);
    wait_flag(&shared.release, Duration::from_secs(600)).await;
    hostile::linger_report(&ctx, lingering).await;
    ctx.targets.release();
    rec.take()
}

/// What the lanes of one executor share.
pub struct Ctx {
    pub plan: Arc<Plan>,
    pub shared: Arc<Shared>,
    pub targets: std::rc::Rc<targets::Targets>,
    pub rec: std::rc::Rc<tally::Rec>,
    pub index: usize,
}

/// Runs every lane until `end` (for the warm-up: until `end` and one round of the
/// hostile actions, or `hard_end`), then closes the well-behaved sessions.
async fn phase(ctx: &Ctx, end: Instant, hard_end: Instant, warmup: bool) {
    let stop = std::rc::Rc::new(anytls::plumbing::Event::default());
    let clients = well::Clients::new(ctx);
    let maintain = glommio::spawn_local(clients.pool.clone().maintain());
    let mut tasks = Vec::new();
    for kind in tally::KINDS {
        for lane in 0..clients.lanes(kind) {
            let (clients, stop) = (clients.clone(), stop.clone());
            tasks.push(glommio::spawn_local(async move {
                clients.lane(kind, lane, &stop).await
            }));
        }
    }
    for _ in 0..ctx.plan.lanes.abrupt {
        let (clients, stop) = (clients.clone(), stop.clone());
        tasks.push(glommio::spawn_local(async move {
            clients.abrupt_lane(&stop).await
        }));
    }
    let rounds = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let hostile = hostile::Hostile::new(ctx);
    for lane in 0..ctx.plan.hostile_lanes {
        let (hostile, stop, rounds) = (hostile.clone(), stop.clone(), rounds.clone());
        tasks.push(glommio::spawn_local(async move {
            hostile.lane(lane, &stop, &rounds).await
        }));
    }
    // The phase ends at `end` (and, for the warm-up, after one hostile round).
    loop {
        let now = Instant::now();
        let done = now >= end && (!warmup || rounds.get() >= 1 || ctx.plan.hostile_lanes == 0);
        if done || now >= hard_end || ctx.shared.abort.load(Ordering::Acquire) {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
    stop.set();
    // Every operation is bounded: lanes end within --op-timeout (hostile actions
    // within their own cap).
    for task in tasks {
        task.await;
    }
    drop(maintain);
    clients.close_all();
}
