//! Servers this program runs itself: an anytls-rs server inside this process
//! (`anytls::Server` on its own pinned executor, self-signed certificate) for
//! `relay` and `pool-e2e`, and as the `serve` command; the spec and scenario
//! context those commands run the ordinary scenario code with; and `serve-echo`, the
//! generator's echo target on a given address (for a network namespace behind
//! a delay, see scripts/lib_delay_ns.sh).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anytls::pool::PoolConfig;
use anytls::tls::ServerTls;
use anytls::{Server, ServerConfig};
use glommio::{LocalExecutorBuilder, Placement};

use crate::procfs;
use crate::scenarios::{Context, Scenario, ServerCpu, Spec};
use crate::targets::{self, Behaviour};

/// The password of the servers `relay` and `pool-e2e` start.
pub const PASSWORD: &str = "bench";

/// How the threads of an in-process server's executors are named (their CPU
/// time is the server's).
const SERVER_THREADS: &str = "anytls-core";

/// Where an in-process run places the server and the generator, and what it
/// writes (the flags `relay` and `pool-e2e` share).
#[derive(clap::Args, Debug, Clone)]
pub struct RunPlacement {
    /// The CPU of the server's executor.
    #[arg(long, default_value_t = 0, value_name = "CPU")]
    pub server_cpu: usize,

    /// CPUs for the generator's executors (and its targets), comma separated
    /// [default: the last allowed CPU].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub cpus: Vec<usize>,

    /// Write every report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Never draw the live progress line.
    #[arg(long)]
    pub no_progress: bool,
}

/// Flags of `anytls-bench serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(short = 'l', long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The password clients must give.
    #[arg(short = 'p', long)]
    pub password: String,

    /// Executors (one pinned per CPU), on the first allowed CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cores: u32,
}

/// Flags of `anytls-bench serve-echo`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeEchoArgs {
    /// Address to listen on.
    #[arg(value_name = "ADDR")]
    pub addr: SocketAddr,
}

/// Starts a server on `listen` with `password`, one executor per CPU of `cpus`,
/// the default settings and, if given, `pool` as its outbound pool.
pub fn start_server(
    listen: SocketAddr,
    password: &str,
    cpus: Vec<usize>,
    pool: Option<PoolConfig>,
) -> Result<Server, String> {
    let tls = ServerTls::self_signed().map_err(|e| format!("self-signed certificate: {e}"))?;
    let mut config = ServerConfig::new(listen, password, tls.config);
    config.cpus = cpus;
    if let Some(pool) = pool {
        config.pool = pool;
    }
    Server::start(config).map_err(|e| format!("the server did not start: {e}"))
}

/// Checks that `cpu` is one this process may use (for a server's executor).
pub fn check_server_cpu(cpu: usize) -> Result<(), String> {
    let allowed = procfs::allowed_cpus();
    if !allowed.is_empty() && !allowed.contains(&cpu) {
        return Err(format!(
            "--server-cpu {cpu}: not one this process may use ({allowed:?})"
        ));
    }
    Ok(())
}

/// The spec of a run against the in-process server on `server` (its password,
/// any certificate) with the generator on `cpus` for `duration` seconds; the
/// rest at the defaults.
pub fn spec(server: SocketAddr, cpus: &[usize], duration: f64, no_progress: bool) -> Spec {
    Spec {
        server: server.to_string(),
        password: Some(PASSWORD.to_owned()),
        sni: Some("localhost".to_owned()),
        insecure: true,
        cpus: cpus.to_vec(),
        duration: Some(duration),
        no_progress,
        ..Spec::default()
    }
}

/// The context of `scenario` run with `spec`, the server's CPU read from this
/// process's server threads.
pub fn scenario_context(scenario: Scenario, spec: Spec) -> Result<Arc<Context>, String> {
    let mut ctx = Context::new(spec, &[scenario])?;
    ctx.server_cpu = ServerCpu::Threads(SERVER_THREADS);
    Ok(Arc::new(ctx))
}

/// `anytls-bench serve`: a server until the process is killed. Prints
/// `listening on ADDR` on stdout once it accepts.
pub fn serve(args: ServeArgs) -> Result<bool, String> {
    let allowed = procfs::allowed_cpus();
    let cores = args.cores as usize;
    if allowed.len() < cores {
        return Err(format!(
            "--cores {cores} but this process may use only CPU(s) {allowed:?}"
        ));
    }
    let server = start_server(args.listen, &args.password, allowed[..cores].to_vec(), None)?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", server.local_addr());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

/// `anytls-bench serve-echo`: the generator's echo target on `args.addr` until
/// the process is killed.
pub fn serve_echo(args: ServeEchoArgs) -> Result<bool, String> {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 * 1024)
        .make()
        .map_err(|e| format!("cannot start an executor: {e}"))?;
    executor.run(async move {
        let addr = targets::start_at(args.addr, Behaviour::Echo)
            .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
        eprintln!("echo target listening on {addr}");
        futures_lite::future::pending::<()>().await;
        Ok(true)
    })
}
