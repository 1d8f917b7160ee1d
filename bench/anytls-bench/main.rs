//! anytls-bench: a load generator for AnyTLS servers.
//!
//! It speaks AnyTLS itself through the library's client (no SOCKS hop), runs
//! every part of the load on glommio executors pinned to the generator's CPUs,
//! starts its own targets on those executors, and prints a table of results
//! (optionally JSON). See bench/README.md for how to run and read it.
//!
//! Modules: [`args`] (flags), [`workers`] (pinned executors, progress line),
//! [`targets`] (echo/sink/source/request-response/TLS sink), [`scenarios`] (one
//! module per scenario plus the shared load driver), [`stats`] (what a worker
//! counts), [`report`] (table and JSON), [`procfs`] (CPU time and RSS).

mod args;
mod procfs;
mod report;
mod scenarios;
mod stats;
mod targets;
mod workers;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;

use anytls::proto::Address;
use anytls::tls::ServerVerification;
use clap::Parser;

use crate::args::{Args, Scenario};
use crate::scenarios::Context;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(args) {
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
    args.validate()?;
    if let Some(target) = &args.target {
        Address::parse(target).ok_or_else(|| format!("--target {target}: expected host:port"))?;
    }
    let cpus = pick_cpus(&args)?;
    let list = args.scenario_list();
    let server = if list.iter().any(|s| *s != Scenario::Baseline) {
        Some(resolve(&args.server)?)
    } else {
        None
    };
    let sni = args
        .sni
        .clone()
        .unwrap_or_else(|| host_of(&args.server).to_owned());
    let verification = if args.insecure {
        ServerVerification::Insecure
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        ServerVerification::Roots(roots)
    };
    let tls = scenarios::tls_client(verification, args.tls_resume);
    let header = match server {
        Some(addr) => format!(
            "anytls-bench {}: server {addr} (SNI {sni}, certificate {}), generator on CPU(s) {}",
            env!("CARGO_PKG_VERSION"),
            if args.insecure {
                "not checked"
            } else {
                "checked"
            },
            scenarios::format_cpus(&cpus),
        ),
        None => format!(
            "anytls-bench {}: no AnyTLS server involved, generator on CPU(s) {}",
            env!("CARGO_PKG_VERSION"),
            scenarios::format_cpus(&cpus),
        ),
    };
    let context = serde_json::json!({
        "server": args.server,
        "server_addr": server.map(|s| s.to_string()),
        "sni": sni,
        "insecure": args.insecure,
        "generator_cpus": cpus,
        "allowed_cpus": procfs::allowed_cpus(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .ok(),
        "cpu_model": cpu_model(),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let ctx = Arc::new(Context {
        args,
        cpus,
        server,
        sni,
        tls,
    });

    let mut reports = Vec::new();
    for scenario in list {
        reports.push(scenarios::run(&ctx, scenario)?);
    }
    print!("{}", report::table(&header, &reports));
    if let Some(path) = &ctx.args.json {
        report::write_json(path, context, &reports)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(reports.iter().all(|r| r.succeeded))
}

/// The generator's CPUs: --cpus (first --cores of them), or the last --cores
/// (default 1) CPUs this process may use.
fn pick_cpus(args: &Args) -> Result<Vec<usize>, String> {
    let allowed = procfs::allowed_cpus();
    if !args.cpus.is_empty() {
        if let Some(c) = args
            .cpus
            .iter()
            .find(|c| !allowed.is_empty() && !allowed.contains(c))
        {
            return Err(format!(
                "CPU {c} is not one this process may use ({allowed:?})"
            ));
        }
        let n = args.cores.unwrap_or(args.cpus.len());
        if n > args.cpus.len() {
            return Err(format!("--cores {n} but only {} --cpus", args.cpus.len()));
        }
        return Ok(args.cpus[..n].to_vec());
    }
    let n = args.cores.unwrap_or(1);
    if allowed.len() < n {
        return Err(format!(
            "--cores {n} but this process may use only CPU(s) {allowed:?}"
        ));
    }
    Ok(allowed[allowed.len() - n..].to_vec())
}

/// `host:port` to the first address it resolves to.
fn resolve(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("--server {text}: {e}"))?
        .next()
        .ok_or_else(|| format!("--server {text}: no address"))
}

/// The host part of `host:port` / `[v6]:port`.
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
}
