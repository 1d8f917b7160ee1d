//! Command-line flags of `anytls-bench` (clap) and the checks clap cannot express.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};

/// A load generator for AnyTLS servers: bulk throughput, short streams, new
/// sessions, idle-session memory, and the machine's own TCP/TLS ceiling.
///
/// It speaks AnyTLS itself (no SOCKS hop) and starts its own echo, sink, source
/// and request/response targets on 127.0.0.1 unless --target names one. Every run
/// stops by itself: --duration, --count, or at the latest --max-time.
///
/// `anytls-bench compare` runs a whole A/B comparison of two server commands
/// (see `anytls-bench compare --help`); `soak` a soak test of a running server;
/// `relay` and `pool-e2e` benchmark an anytls-rs server run in this process;
/// `panel` stands in for an Xboard panel (node mode).
#[derive(Parser, Debug, Clone)]
#[command(name = "anytls-bench", version, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// A command instead of scenarios.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Scenario(s) to run, in order (several in one run share the same machine state).
    #[arg(value_enum, value_name = "SCENARIO")]
    pub scenarios: Vec<Scenario>,

    /// Scenario to run; the same as the positional form, may be repeated.
    #[arg(long = "scenario", value_enum, value_name = "SCENARIO")]
    pub scenario_flag: Vec<Scenario>,

    /// The AnyTLS server, host:port.
    #[arg(short = 's', long, default_value = "127.0.0.1:8443")]
    pub server: String,

    /// The password (needed by every scenario except baseline).
    #[arg(short = 'p', long)]
    pub password: Option<String>,

    /// TLS server name (SNI and certificate check) [default: the host of --server].
    #[arg(long)]
    pub sni: Option<String>,

    /// Accept any server certificate (self-signed servers). Without it the
    /// certificate is checked against the web PKI roots.
    #[arg(long)]
    pub insecure: bool,

    /// Let TLS sessions resume (tickets). Off by default so every new session
    /// is a full handshake, the worst case for a server.
    #[arg(long)]
    pub tls_resume: bool,

    /// CPUs for the generator's executors, comma separated [default: the last
    /// --cores CPUs of the allowed set].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub cpus: Vec<usize>,

    /// Number of generator executors (threads, one pinned per CPU) [default: 1].
    #[arg(long)]
    pub cores: Option<usize>,

    /// Use this target (host:port, reached by the server) instead of starting one.
    /// It must behave as the scenario expects: a sink, a source, an echo, or a
    /// request/response server (an echo does when --response-size = --request-size).
    #[arg(long, value_name = "ADDR")]
    pub target: Option<String>,

    /// Address the generator's own targets listen on; the server must reach it.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub target_host: IpAddr,

    /// Seconds each scenario (each part of baseline) runs [default: 10 unless --count].
    #[arg(short = 'd', long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Stop after this much work: MB of payload (throughput, baseline bulk),
    /// streams (streams), sessions (handshakes, baseline handshakes),
    /// connections (baseline request/response).
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,

    /// Hard limit in seconds for a run bounded by --count only, and for idle's set-up.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub max_time: f64,

    /// Seconds one operation (connect, stream, heartbeat) may take before it
    /// counts as a timeout.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub op_timeout: f64,

    /// Streams (throughput) or connections (baseline bulk) moving data.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,

    /// Sessions to spread the streams over [default: 1; idle: 100].
    #[arg(long)]
    pub sessions: Option<usize>,

    /// Throughput direction: up (to a sink), down (from a source), both (echo).
    #[arg(long, value_enum, default_value_t = Direction::Up)]
    pub direction: Direction,

    /// Bytes per write in bulk transfers.
    #[arg(long, default_value_t = 32 * 1024, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub chunk_size: u32,

    /// Bytes each stream sends as its request (streams, handshakes, baseline
    /// request/response).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1 << 26))]
    pub request_size: u32,

    /// Bytes of each response [default: --request-size].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1 << 26))]
    pub response_size: Option<u32>,

    /// Offered load in operations per second (open loop, latency measured from
    /// each operation's scheduled start). Without it: flat out with --concurrency.
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<f64>,

    /// Operations in flight when running flat out (streams, handshakes, idle set-up,
    /// baseline handshakes and request/response).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,

    /// With --rate: operations allowed in flight before new ones are dropped
    /// (and counted as "overload" errors).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,

    /// The server's process id: idle reads its VmRSS; every scenario then also
    /// reports the server's CPU use.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Idle: milliseconds to wait after the last heartbeat before reading RSS.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,

    /// Baseline: CPU of the executor running the baseline's own TCP and TLS sinks
    /// and request/response target.
    #[arg(long, default_value_t = 0)]
    pub baseline_server_cpu: usize,

    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Never draw the live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// Commands other than running scenarios against one server.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// A/B comparison of two server commands: one table of medians, JSON, SVG chart.
    ///
    /// Starts A and B in turn, each pinned to --server-cpu and restarted for every
    /// run, and runs the same scenarios (--set) against each in-process,
    /// alternating A B A B for --rounds. Prints one table of medians (A, B, B/A,
    /// server CPU %, server CPU-seconds per GB moved, KiB per idle session) and
    /// writes every run's figures to --json and the B/A ratios to an --svg chart.
    Compare(CompareArgs),
    /// A bounded soak test of a running server: well-behaved and hostile clients
    /// for --duration, then a check that the server's memory and descriptors
    /// came back (scripts/soak.sh runs it against a fresh server).
    ///
    /// Well-behaved clients (the library's client, reused sessions) run bulk echo,
    /// short request/response, UDP over TCP and slow-reader streams and verify
    /// every byte; abrupt disconnects and hostile authenticated clients (SYN
    /// floods, many UDP associations, refused and never-reading targets, many
    /// sessions, bad first PSH, rule-breaking frames, 1-byte TLS records, wrong
    /// passwords, answers never read, unauthenticated floods, empty-datagram
    /// floods, streams ended with bytes undelivered) run beside them. The
    /// server's RSS and open descriptors and the host's TCP memory are read from
    /// /proc every second. Exits 1 if a well-behaved client saw an error, if the
    /// descriptors do not return exactly to the baseline, if RSS ends above the
    /// baseline plus --rss-tolerance-mib or peaks above --peak-rss-tolerance-mib,
    /// if TCP memory peaks above --tcp-mem-tolerance-mib or an orphaned socket
    /// remains, or if the short requests' p99 passes --short-p99-limit-ms.
    Soak(crate::soak::SoakArgs),
    /// What sessions over their upload budget cost a server: many sessions push
    /// to targets that never read; the server's CPU and another session's
    /// heartbeat time over the next 10 s.
    StallCost(crate::stall_cost::StallCostArgs),
    /// The relay's own figures through an anytls-rs server in this process.
    ///
    /// The server on --server-cpu, the generator and its targets on --cpus. Four
    /// rows of --duration each: bulk upload over 1 and 8 streams of one session
    /// (MB/s), short streams (open, 64 B request/response, close) with 1 and 32
    /// in flight (streams/s, latency); each with the server executor's CPU use.
    Relay(crate::relay::RelayArgs),
    /// The outbound pool kinds end to end through an anytls-rs server in this
    /// process.
    ///
    /// For each kind of --kinds: a server with that pool, a warm-up, then
    /// --duration of workers opening a stream, waiting for its SYNACK, echoing
    /// 64 bytes and closing it. Reports streams/s, stream-open (SYN to SYNACK)
    /// latency percentiles, errors, server CPU and the pool's counters per kind.
    PoolE2e(crate::pool_e2e::PoolE2eArgs),
    /// An anytls-rs server in this process until killed (for tests).
    ///
    /// The library's server with a self-signed certificate and default settings;
    /// prints `listening on ADDR` once it accepts. For tests and quick runs: the
    /// server to deploy and to measure is anytls-server.
    Serve(crate::inproc::ServeArgs),
    /// An echo target on ADDR until killed.
    ///
    /// The generator's own echo target, for `pool-e2e --target` (e.g. in a
    /// network namespace behind a delay, scripts/lib_delay_ns.sh).
    ServeEcho(crate::inproc::ServeEchoArgs),
    /// A stand-in for an Xboard panel (the UniProxy node API) until killed.
    ///
    /// Serves /api/v1/server/UniProxy/{config,user,push,alive,alivelist,status}
    /// as Xboard does (its answers, ETags and error bodies) from --users and
    /// the config flags, re-reading the files when they change; keeps what
    /// nodes report in memory and shows it under /admin/, where an outage can
    /// also be started. Prints `panel listening on http://ADDR` once it accepts.
    /// For the server's node-mode tests and for trying node mode.
    Panel(crate::panel::PanelArgs),
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
    /// (64 sessions, 5,000 and 20,000 idle sessions) or all.
    #[arg(long, value_enum, default_value_t = CompareSet::Single)]
    pub set: CompareSet,

    /// Run only these scenarios of the set (comma separated or repeated).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAME",
        value_parser = PossibleValuesParser::new(crate::compare::case_names()),
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
    /// Many sessions: bulk down and up over 64 sessions, short streams over 64
    /// sessions (512 in flight, and 8000/s open loop), 5,000 and 20,000 idle sessions.
    Busy,
    /// Both sets.
    All,
}

/// What to measure.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Bulk data over long-lived streams: MB/s.
    Throughput,
    /// Open, request, response, close on shared sessions: streams/s and latency.
    Streams,
    /// A new session (TCP + TLS + auth) per request/response: sessions/s.
    Handshakes,
    /// Server memory per idle session (needs --server-pid).
    Idle,
    /// Plain TCP and TLS to the generator's own sinks and target: the machine's
    /// ceiling, and the floor of a short stream's cost.
    Baseline,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Streams => "streams",
            Scenario::Handshakes => "handshakes",
            Scenario::Idle => "idle",
            Scenario::Baseline => "baseline",
        }
    }
}

/// Which way bulk data flows.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to target (a sink).
    Up,
    /// Target (a source) to client.
    Down,
    /// Both ways through an echo target.
    Both,
}

impl Direction {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Both => "both",
        }
    }
}

impl Args {
    /// The scenarios to run, positional ones first.
    pub fn scenario_list(&self) -> Vec<Scenario> {
        self.scenarios
            .iter()
            .chain(&self.scenario_flag)
            .copied()
            .collect()
    }

    /// How long a timed run lasts: --duration, 10 s by default, or --max-time
    /// when only --count bounds it.
    pub fn run_limit(&self) -> Duration {
        match (self.duration, self.count) {
            (Some(secs), _) => secs_f64(secs),
            (None, Some(_)) => secs_f64(self.max_time),
            (None, None) => Duration::from_secs(10),
        }
    }

    /// --op-timeout as a duration.
    pub fn op_timeout(&self) -> Duration {
        secs_f64(self.op_timeout)
    }

    /// --response-size, defaulting to --request-size.
    pub fn response_size(&self) -> usize {
        self.response_size.unwrap_or(self.request_size) as usize
    }

    /// --sessions with the scenario's default.
    pub fn sessions_for(&self, scenario: Scenario) -> usize {
        self.sessions.unwrap_or(match scenario {
            Scenario::Idle => 100,
            _ => 1,
        })
    }

    /// Problems clap's attributes cannot catch, as one message.
    pub fn validate(&self) -> Result<(), String> {
        let list = self.scenario_list();
        if list.is_empty() {
            return Err(
                "name a scenario: throughput, streams, handshakes, idle or baseline".into(),
            );
        }
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a positive number of seconds"))
            }
        };
        if let Some(d) = self.duration {
            positive("--duration", d)?;
        }
        positive("--max-time", self.max_time)?;
        positive("--op-timeout", self.op_timeout)?;
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err("--rate must be a positive number of operations per second".into());
            }
        }
        if self.count == Some(0) {
            return Err("--count must be at least 1".into());
        }
        for (name, v) in [
            ("--streams", self.streams),
            ("--concurrency", self.concurrency),
            ("--max-in-flight", self.max_in_flight),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.sessions == Some(0) || self.cores == Some(0) {
            return Err("--sessions and --cores must be at least 1".into());
        }
        let needs_anytls = list.iter().any(|s| *s != Scenario::Baseline);
        if needs_anytls && self.password.is_none() {
            return Err("--password is required for every scenario but baseline".into());
        }
        if list.contains(&Scenario::Idle) && self.server_pid.is_none() {
            return Err("idle reads the server's memory: give --server-pid PID".into());
        }
        Ok(())
    }
}

/// Seconds (already validated as positive and finite) as a duration.
pub fn secs_f64(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(u32::MAX as u64))
}
