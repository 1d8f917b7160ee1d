//! Command-line flags of `anytls-bench` (clap): the scenarios to run and their
//! flags (a [`Spec`]), or one of the commands. Each command's flags live in the
//! module that runs it; this module only names them.

use clap::{Parser, Subcommand};

use crate::compare::CompareArgs;
use crate::inproc::{ServeArgs, ServeEchoArgs};
use crate::panel::PanelArgs;
use crate::pool_e2e::PoolE2eArgs;
use crate::relay::RelayArgs;
use crate::scenarios::{Scenario, Spec};
use crate::soak::SoakArgs;
use crate::stall_cost::StallCostArgs;

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

    /// How the scenarios run: server, load, limits, output.
    #[command(flatten)]
    pub spec: Spec,
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
    Soak(SoakArgs),
    /// What sessions over their upload budget cost a server: many sessions push
    /// to targets that never read; the server's CPU and another session's
    /// heartbeat time over the next 10 s.
    StallCost(StallCostArgs),
    /// The relay's own figures through an anytls-rs server in this process.
    ///
    /// The server on --server-cpu, the generator and its targets on --cpus. Four
    /// rows of --duration each: bulk upload over 1 and 8 streams of one session
    /// (MB/s), short streams (open, 64 B request/response, close) with 1 and 32
    /// in flight (streams/s, latency); each with the server executor's CPU use.
    Relay(RelayArgs),
    /// The outbound pool kinds end to end through an anytls-rs server in this
    /// process.
    ///
    /// For each kind of --kinds: a server with that pool, a warm-up, then
    /// --duration of workers opening a stream, waiting for its SYNACK, echoing
    /// 64 bytes and closing it. Reports streams/s, stream-open (SYN to SYNACK)
    /// latency percentiles, errors, server CPU and the pool's counters per kind.
    PoolE2e(PoolE2eArgs),
    /// An anytls-rs server in this process until killed (for tests).
    ///
    /// The library's server with a self-signed certificate and default settings;
    /// prints `listening on ADDR` once it accepts. For tests and quick runs: the
    /// server to deploy and to measure is anytls-server.
    Serve(ServeArgs),
    /// An echo target on ADDR until killed.
    ///
    /// The generator's own echo target, for `pool-e2e --target` (e.g. in a
    /// network namespace behind a delay, scripts/lib_delay_ns.sh).
    ServeEcho(ServeEchoArgs),
    /// A stand-in for an Xboard panel (the UniProxy node API) until killed.
    ///
    /// Serves /api/v1/server/UniProxy/{config,user,push,alive,alivelist,status}
    /// as Xboard does (its answers, ETags and error bodies) from --users and
    /// the config flags, re-reading the files when they change; keeps what
    /// nodes report in memory and shows it under /admin/, where an outage can
    /// also be started. Prints `panel listening on http://ADDR` once it accepts.
    /// For the server's node-mode tests and for trying node mode.
    Panel(PanelArgs),
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
}
