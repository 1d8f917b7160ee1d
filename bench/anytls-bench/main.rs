//! anytls-bench: a load generator for AnyTLS servers.
//!
//! It speaks AnyTLS itself through the library's client (no SOCKS hop), runs
//! every part of the load on glommio executors pinned to the generator's CPUs,
//! starts its own targets on those executors, and prints a table of results
//! (optionally JSON). `anytls-bench compare` runs the scenarios against two
//! server commands it starts itself and compares them; `relay` and `pool-e2e`
//! run them against an anytls-rs server inside this process. See
//! bench/README.md for how to run and read it.
//!
//! This is the `anytls-bench` package of the workspace (bench/Cargo.toml): what
//! only benchmarks need (histograms, the progress line, JSON, charts) is its
//! dependency, never the server's.
//!
//! Modules: [`args`] (the command line), [`workers`] (pinned executors,
//! progress line), [`targets`] (echo/sink/source/request-response/TLS sink),
//! [`pace`] (a sender held to a rate), [`scenarios`] (what a run is asked,
//! one module per scenario plus the shared load driver), [`stats`] (what a
//! worker counts), [`report`] (table and JSON), [`procfs`] (CPU time, RSS,
//! TIME_WAIT), [`compare`] (the A/B comparison), [`soak`] (the soak test),
//! [`stall_cost`] (what stalled sessions cost a server), [`inproc`] (a server
//! in this process, `serve`, `serve-echo`), [`relay`] and [`pool_e2e`]
//! (benchmarks of that server), [`panel`] (a stand-in Xboard panel, `panel`).
//!
//! # Layers
//!
//! A module names only modules of lower layers (`tests/it/layout.rs` checks this
//! list against every `use` and `crate::` path); the command line is on top,
//! and what a command runs never names it:
//!
//! 1. `procfs`, `pace`, `panel`
//! 2. `targets`, `stats`, `stall_cost`
//! 3. `report`, `workers`
//! 4. `scenarios`
//! 5. `compare`, `inproc`, `soak`
//! 6. `relay`, `pool_e2e`
//! 7. `args`

mod args;
mod compare;
mod inproc;
mod pace;
mod panel;
mod pool_e2e;
mod procfs;
mod relay;
mod report;
mod scenarios;
mod soak;
mod stall_cost;
mod stats;
mod targets;
mod workers;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::args::{Args, Command};
use crate::scenarios::Context;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = Args::parse();
    let outcome = match args.command.take() {
        Some(Command::Compare(compare)) => compare::run(compare),
        Some(Command::Soak(soak)) => soak::run(soak),
        Some(Command::StallCost(stall)) => stall_cost::run(stall),
        Some(Command::Relay(relay)) => relay::run(relay),
        Some(Command::PoolE2e(pool)) => pool_e2e::run(pool),
        Some(Command::Serve(serve)) => inproc::serve(serve),
        Some(Command::ServeEcho(echo)) => inproc::serve_echo(echo),
        Some(Command::Panel(panel)) => panel::run(panel),
        None => run(args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("anytls-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs every scenario asked for; whether each one had at least one success.
fn run(args: Args) -> Result<bool, String> {
    let list = args.scenario_list();
    let ctx = Arc::new(Context::new(args.spec, &list)?);
    let header = match ctx.server {
        Some(addr) => format!(
            "anytls-bench {}: server {addr} (SNI {}, certificate {}), generator on CPU(s) {}",
            env!("CARGO_PKG_VERSION"),
            ctx.sni,
            if ctx.spec.insecure {
                "not checked"
            } else {
                "checked"
            },
            scenarios::format_cpus(&ctx.cpus),
        ),
        None => format!(
            "anytls-bench {}: no AnyTLS server involved, generator on CPU(s) {}",
            env!("CARGO_PKG_VERSION"),
            scenarios::format_cpus(&ctx.cpus),
        ),
    };
    let context = serde_json::json!({
        "server": ctx.spec.server,
        "server_addr": ctx.server.map(|s| s.to_string()),
        "sni": ctx.sni,
        "insecure": ctx.spec.insecure,
        "generator_cpus": ctx.cpus,
        "allowed_cpus": procfs::allowed_cpus(),
        "kernel": procfs::kernel(),
        "cpu_model": procfs::cpu_model(),
        "unix_time": procfs::unix_time(),
    });

    let mut reports = Vec::new();
    for scenario in list {
        reports.push(scenarios::run(&ctx, scenario)?);
    }
    print!("{}", report::table(&header, &reports));
    if let Some(path) = &ctx.spec.json {
        report::write_json(path, context, &reports)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(reports.iter().all(|r| r.succeeded))
}
