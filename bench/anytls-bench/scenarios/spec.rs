//! What a run of scenarios is asked: the [`Scenario`]s, and the [`Spec`] they
//! run with (the server, the load, its limits), which the command line fills
//! in (`anytls-bench` flattens it into its flags) and `compare`, `relay` and
//! `pool-e2e` build directly, with a [`Tuning`] of their own.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

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

/// How scenarios run: the server, the load and its limits, what is written.
/// Each field is a flag of `anytls-bench`; the flags' defaults are those of
/// [`Spec::default`].
#[derive(clap::Args, Debug, Clone)]
pub struct Spec {
    /// The AnyTLS server, host:port.
    #[arg(short = 's', long, default_value_t = Spec::default().server)]
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
    #[arg(long, default_value_t = Spec::default().target_host, value_name = "IP")]
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
    #[arg(long, value_name = "SECS", default_value_t = Spec::default().max_time)]
    pub max_time: f64,

    /// Seconds one operation (connect, stream, heartbeat) may take before it
    /// counts as a timeout.
    #[arg(long, value_name = "SECS", default_value_t = Spec::default().op_timeout)]
    pub op_timeout: f64,

    /// Streams (throughput) or connections (baseline bulk) moving data.
    #[arg(long, default_value_t = Spec::default().streams)]
    pub streams: usize,

    /// Sessions to spread the streams over [default: 1; idle: 100].
    #[arg(long)]
    pub sessions: Option<usize>,

    /// Throughput direction: up (to a sink), down (from a source), both (echo).
    #[arg(long, value_enum, default_value_t = Spec::default().direction)]
    pub direction: Direction,

    /// Throughput: offered load in MB/s, megabytes (10^6 bytes of payload) per
    /// second, not megabits, in total, spread evenly over the --streams. Each
    /// stream's writer (up, both), or for down the generator's source target,
    /// sends its share paced, catching up after a stall by at most 20 ms'
    /// worth (or one write). For both, the echo sends as much back, so
    /// throughput shows twice this. Without it: flat out.
    #[arg(long, value_name = "MB_PER_SEC")]
    pub rate_mbps: Option<f64>,

    /// Bytes per write in bulk transfers.
    #[arg(long, default_value_t = Spec::default().chunk_size, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub chunk_size: u32,

    /// Bytes each stream sends as its request (streams, handshakes, baseline
    /// request/response).
    #[arg(long, default_value_t = Spec::default().request_size, value_parser = clap::value_parser!(u32).range(1..=1 << 26))]
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
    #[arg(long, default_value_t = Spec::default().concurrency)]
    pub concurrency: usize,

    /// With --rate: operations allowed in flight before new ones are dropped
    /// (and counted as "overload" errors).
    #[arg(long, default_value_t = Spec::default().max_in_flight)]
    pub max_in_flight: usize,

    /// The server's process id: idle reads its VmRSS; every scenario then also
    /// reports the server's CPU use.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Idle: milliseconds to wait after the last heartbeat before reading RSS.
    #[arg(long, default_value_t = Spec::default().settle_ms)]
    pub settle_ms: u64,

    /// Baseline: CPU of the executor running the baseline's own TCP and TLS sinks
    /// and request/response target.
    #[arg(long, default_value_t = Spec::default().baseline_server_cpu)]
    pub baseline_server_cpu: usize,

    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Never draw the live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

impl Default for Spec {
    /// Every flag's default; what is not a flag's default is unset or off.
    fn default() -> Spec {
        Spec {
            server: "127.0.0.1:8443".to_owned(),
            password: None,
            sni: None,
            insecure: false,
            tls_resume: false,
            cpus: Vec::new(),
            cores: None,
            target: None,
            target_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            duration: None,
            count: None,
            max_time: 60.0,
            op_timeout: 10.0,
            streams: 1,
            sessions: None,
            direction: Direction::Up,
            rate_mbps: None,
            chunk_size: 32 * 1024,
            request_size: 1024,
            response_size: None,
            rate: None,
            concurrency: 16,
            max_in_flight: 10_000,
            server_pid: None,
            settle_ms: 1000,
            baseline_server_cpu: 0,
            json: None,
            no_progress: false,
        }
    }
}

impl Spec {
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

    /// Each throughput stream's share of --rate-mbps, in bytes per second.
    pub fn stream_bytes_per_sec(&self) -> Option<f64> {
        self.rate_mbps.map(|mb| mb * 1e6 / self.streams as f64)
    }

    /// --sessions with the scenario's default.
    pub fn sessions_for(&self, scenario: Scenario) -> usize {
        self.sessions.unwrap_or(match scenario {
            Scenario::Idle => 100,
            _ => 1,
        })
    }

    /// Problems clap's attributes cannot catch in running `scenarios` with
    /// this spec, as one message.
    pub fn validate(&self, scenarios: &[Scenario]) -> Result<(), String> {
        if scenarios.is_empty() {
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
        if let Some(mb) = self.rate_mbps {
            if !(mb.is_finite() && mb > 0.0) {
                return Err("--rate-mbps must be a positive number of MB/s".into());
            }
            let paced_source =
                scenarios.contains(&Scenario::Throughput) && self.direction == Direction::Down;
            if paced_source && self.target.is_some() {
                return Err(
                    "--rate-mbps with --direction down paces the generator's own \
                     source target; a --target source sends at its own pace"
                        .into(),
                );
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
        let needs_anytls = scenarios.iter().any(|s| *s != Scenario::Baseline);
        if needs_anytls && self.password.is_none() {
            return Err("--password is required for every scenario but baseline".into());
        }
        if scenarios.contains(&Scenario::Idle) && self.server_pid.is_none() {
            return Err("idle reads the server's memory: give --server-pid PID".into());
        }
        Ok(())
    }
}

/// The share of a fixed offered load (--rate-mbps, --rate) below which a run
/// did not hold it: the server's CPU is then what it managed, not what the
/// load would cost.
pub const LOAD_HELD: f64 = 0.95;

/// The shape of the load a `compare` case or a `relay` row fixes, over the
/// spec it runs with; what is `None` keeps the spec's value.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// --direction.
    pub direction: Option<Direction>,
    /// --streams.
    pub streams: Option<usize>,
    /// --sessions.
    pub sessions: Option<usize>,
    /// --concurrency.
    pub concurrency: Option<usize>,
    /// --rate.
    pub rate: Option<f64>,
    /// --rate-mbps.
    pub rate_mbps: Option<f64>,
    /// --request-size.
    pub request_size: Option<u32>,
}

impl Tuning {
    /// Nothing fixed: the base of the tunings written as constants.
    pub const NONE: Tuning = Tuning {
        direction: None,
        streams: None,
        sessions: None,
        concurrency: None,
        rate: None,
        rate_mbps: None,
        request_size: None,
    };

    /// `spec` with what this tuning fixes.
    pub fn applied_to(&self, spec: Spec) -> Spec {
        Spec {
            direction: self.direction.unwrap_or(spec.direction),
            streams: self.streams.unwrap_or(spec.streams),
            sessions: self.sessions.or(spec.sessions),
            concurrency: self.concurrency.unwrap_or(spec.concurrency),
            rate: self.rate.or(spec.rate),
            rate_mbps: self.rate_mbps.or(spec.rate_mbps),
            request_size: self.request_size.unwrap_or(spec.request_size),
            ..spec
        }
    }

    /// What this tuning fixes, written as `anytls-bench` flags
    /// (`--direction up --streams 1`).
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                flags.extend([name.to_owned(), value]);
            }
        };
        flag("--direction", self.direction.map(|d| d.name().to_owned()));
        flag("--streams", self.streams.map(|n| n.to_string()));
        flag("--sessions", self.sessions.map(|n| n.to_string()));
        flag("--concurrency", self.concurrency.map(|n| n.to_string()));
        flag("--rate", self.rate.map(|r| r.to_string()));
        flag("--rate-mbps", self.rate_mbps.map(|r| r.to_string()));
        flag("--request-size", self.request_size.map(|n| n.to_string()));
        flags
    }
}

/// Seconds (already validated as positive and finite) as a duration.
pub fn secs_f64(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(u32::MAX as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuning_fixes_only_what_it_names_and_writes_it_as_flags() {
        let tuning = Tuning {
            direction: Some(Direction::Down),
            sessions: Some(2),
            rate: Some(5000.0),
            rate_mbps: Some(400.0),
            ..Tuning::NONE
        };
        let base = Spec {
            sessions: Some(9),
            concurrency: 3,
            ..Spec::default()
        };
        let spec = tuning.applied_to(base);
        assert_eq!(spec.direction, Direction::Down);
        assert_eq!(spec.sessions, Some(2));
        assert_eq!(spec.rate, Some(5000.0));
        assert_eq!(spec.rate_mbps, Some(400.0));
        assert_eq!(spec.concurrency, 3);
        assert_eq!(spec.streams, Spec::default().streams);
        assert_eq!(
            tuning.flags(),
            [
                "--direction",
                "down",
                "--sessions",
                "2",
                "--rate",
                "5000",
                "--rate-mbps",
                "400"
            ]
        );
    }

    #[test]
    fn the_offered_rate_is_megabytes_per_second_spread_over_the_streams() {
        let spec = Spec {
            rate_mbps: Some(400.0),
            streams: 64,
            ..Spec::default()
        };
        assert_eq!(spec.stream_bytes_per_sec(), Some(6_250_000.0));
        assert_eq!(Spec::default().stream_bytes_per_sec(), None);
    }

    #[test]
    fn a_paced_download_needs_the_generators_own_source() {
        let spec = Spec {
            password: Some("pw".into()),
            rate_mbps: Some(20.0),
            direction: Direction::Down,
            ..Spec::default()
        };
        assert!(spec.validate(&[Scenario::Throughput]).is_ok());
        let with_target = Spec {
            target: Some("10.0.0.5:9000".into()),
            ..spec.clone()
        };
        assert!(with_target.validate(&[Scenario::Throughput]).is_err());
        let up = Spec {
            direction: Direction::Up,
            ..with_target
        };
        assert!(up.validate(&[Scenario::Throughput]).is_ok());
        let zero = Spec {
            rate_mbps: Some(0.0),
            ..spec
        };
        assert!(zero.validate(&[Scenario::Throughput]).is_err());
    }
}
