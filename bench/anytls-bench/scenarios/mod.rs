//! The scenarios (one module each) and what they share: what a run is asked
//! ([`Scenario`], [`Spec`], in [`spec`]), the run's [`Context`] (its spec,
//! CPUs, TLS, running a load on every executor), the load driver ([`drive`])
//! and the AnyTLS operations ([`Pool`], [`exchange`]).

pub mod baseline;
mod drive;
pub mod handshakes;
pub mod idle;
mod ops;
mod spec;
pub mod streams;
pub mod throughput;

pub use drive::{drive, run_window, Load, Timings};
pub use ops::{
    connect, exchange, left, open_established, request_response, stream_ended, unless, Pool,
};
pub use spec::{secs_f64, Direction, Scenario, Spec, Tuning, LOAD_HELD};

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anytls::client::ClientConfig;
use anytls::plumbing::timeout;
use anytls::proto::Address;
use anytls::tls::{client_config, ServerVerification};

use crate::procfs;
use crate::report::Report;
use crate::stats::{Budget, Failed, Failure, Live, Recorder, Tally};
use crate::targets::{self, Behaviour};
use crate::workers::{self, Progress, Worker};

/// Everything a scenario needs, shared by the executors (it is `Send`).
pub struct Context {
    /// What the run is asked.
    pub spec: Spec,
    /// The generator's CPUs, one executor each.
    pub cpus: Vec<usize>,
    /// The AnyTLS server, resolved (`None` when only baseline runs).
    pub server: Option<SocketAddr>,
    /// TLS server name.
    pub sni: String,
    /// The client's TLS configuration for the AnyTLS server.
    pub tls: Arc<rustls::ClientConfig>,
    /// Where the server's CPU time is read during a run.
    pub server_cpu: ServerCpu,
}

/// Where a run reads the server's CPU time.
#[derive(Clone, Copy, Debug)]
pub enum ServerCpu {
    /// Nowhere: not measured.
    Unknown,
    /// A server process (`--server-pid`), all its threads.
    Process(u32),
    /// A server inside this process (`relay`, `pool-e2e`): the threads of its
    /// executors, whose names start with this.
    Threads(&'static str),
}

impl ServerCpu {
    /// The server's CPU time so far.
    pub fn read(self) -> Option<Duration> {
        match self {
            ServerCpu::Unknown => None,
            ServerCpu::Process(pid) => procfs::process_cpu(pid),
            ServerCpu::Threads(prefix) => procfs::threads_cpu(prefix),
        }
    }
}

impl Context {
    /// Checks `spec` for running `scenarios` and builds the run's context: the
    /// generator's CPUs, the server's address (unless only baseline runs), SNI
    /// and TLS configuration.
    pub fn new(spec: Spec, scenarios: &[Scenario]) -> Result<Context, String> {
        spec.validate(scenarios)?;
        if let Some(target) = &spec.target {
            Address::parse(target)
                .ok_or_else(|| format!("--target {target}: expected host:port"))?;
        }
        let cpus = pick_cpus(&spec.cpus, spec.cores)?;
        let server = if scenarios.iter().any(|s| *s != Scenario::Baseline) {
            Some(resolve(&spec.server)?)
        } else {
            None
        };
        let sni = spec
            .sni
            .clone()
            .unwrap_or_else(|| host_of(&spec.server).to_owned());
        let verification = if spec.insecure {
            ServerVerification::Insecure
        } else {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            ServerVerification::Roots(roots)
        };
        let tls = tls_client(verification, spec.tls_resume);
        let server_cpu = spec
            .server_pid
            .map_or(ServerCpu::Unknown, ServerCpu::Process);
        Ok(Context {
            spec,
            cpus,
            server,
            sni,
            tls,
            server_cpu,
        })
    }

    /// A client configuration for this executor (its padding scheme is shared
    /// by the executor's sessions, so build it once per executor).
    pub fn client_config(&self) -> ClientConfig {
        let server = self.server.expect("checked when the context was built");
        let password = self.spec.password.as_deref().unwrap_or_default();
        ClientConfig::new(server, &self.sni, self.tls.clone(), password)
    }

    /// --target if given, else a target of this kind started on this executor.
    /// The request/response target (`--request-size` in, `--response-size` out),
    /// or `None` with the failure recorded.
    /// This worker's share of the streams scenarios' sessions, connected (each
    /// failure, or running out of time, is recorded).
    pub async fn connected_pool(&self, worker: &Worker, rec: &Recorder) -> Rc<Pool> {
        let sessions = share_of(worker, self.spec.sessions_for(Scenario::Streams), 1);
        let pool = Rc::new(Pool::new(self.client_config(), sessions));
        match timeout(self.spec.op_timeout(), pool.fill()).await {
            Some(failures) => failures.into_iter().for_each(|f| rec.fail(f)),
            None => rec.fail(Failed::new(Failure::Timeout, "connecting the sessions")),
        }
        pool
    }

    pub fn request_response_target(&self, rec: &Recorder) -> Option<Rc<Address>> {
        let behaviour = Behaviour::RequestResponse {
            request: self.spec.request_size as usize,
            response: self.spec.response_size(),
        };
        match self.target(behaviour) {
            Ok(target) => Some(Rc::new(target)),
            Err(failed) => {
                rec.fail(failed);
                None
            }
        }
    }

    pub fn target(&self, behaviour: Behaviour) -> Result<Address, Failed> {
        if let Some(text) = &self.spec.target {
            return Address::parse(text)
                .ok_or_else(|| Failed::new(Failure::Connect, format!("bad --target {text}")));
        }
        targets::start(self.spec.target_host, behaviour)
            .map(Address::Ip)
            .map_err(|e| {
                Failed::new(
                    Failure::Connect,
                    format!("cannot start the {behaviour:?} target: {e}"),
                )
            })
    }

    /// A progress line (drawn on a terminal only, unless --no-progress).
    pub fn progress(&self, label: &str) -> Progress {
        use std::io::IsTerminal;
        Progress::new(
            label,
            !self.spec.no_progress && std::io::stderr().is_terminal(),
        )
    }

    /// Parameters every AnyTLS scenario reports.
    pub fn common_params(&self, report: &mut Report) {
        report
            .param("server", self.spec.server.clone())
            .param("generator_cpus", format_cpus(&self.cpus));
        if let Some(target) = &self.spec.target {
            report.param("target", target.clone());
        }
        if let Some(d) = self.spec.duration {
            report.param("duration_s", d);
        }
        if let Some(n) = self.spec.count {
            report.param("count", n);
        }
        report.param("tls_resume", self.spec.tls_resume);
    }

    /// Runs `load` on every generator executor with a progress line, merges the
    /// tallies, and measures the server's CPU ([`Context::server_cpu`]) meanwhile.
    pub fn run_load<F, Fut>(&self, label: &str, load: F) -> Result<Measured, String>
    where
        F: Fn(Worker) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = Tally> + 'static,
    {
        let server_cpu = self.server_cpu;
        self.run_load_probed(label, move || server_cpu.read(), load)
    }

    /// [`Context::run_load`] with the server's CPU time read by `server_cpu`.
    pub fn run_load_probed<F, Fut>(
        &self,
        label: &str,
        server_cpu: impl Fn() -> Option<Duration>,
        load: F,
    ) -> Result<Measured, String>
    where
        F: Fn(Worker) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = Tally> + 'static,
    {
        let live = Arc::new(Live::default());
        let progress = self.progress(label);
        let server_cpu_before = server_cpu();
        let started = Instant::now();
        let tallies = workers::run(&self.cpus, &live, load, || progress.update(&live));
        progress.finish();
        let elapsed = started.elapsed();
        let server_cpu = procfs::percent(server_cpu_before, server_cpu(), elapsed);
        let mut tally = Tally::default();
        for t in tallies? {
            tally.merge(t);
        }
        Ok(Measured { tally, server_cpu })
    }
}

/// Merged results of a run and the server's CPU use during it.
pub struct Measured {
    /// All executors' results.
    pub tally: Tally,
    /// Server CPU, percent of one CPU (when [`Context::server_cpu`] is known).
    pub server_cpu: Option<f64>,
}

impl Measured {
    /// Adds the CPU figures (generator and, if known, server).
    pub fn cpu_figures(&self, report: &mut Report) {
        report
            .figure_opt("generator CPU", self.tally.cpu_percent(), "% of its CPUs")
            .figure_opt("server CPU", self.server_cpu, "% of one CPU");
    }
}

/// A client TLS configuration; without `resume`, every handshake is a full one.
pub fn tls_client(verification: ServerVerification, resume: bool) -> Arc<rustls::ClientConfig> {
    let config = client_config(verification);
    if resume {
        return config;
    }
    let mut config = (*config).clone();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The generator's CPUs: the first `cores` of `cpus` (all of them by default), or
/// without `cpus` the last `cores` (default 1) CPUs this process may use.
pub fn pick_cpus(cpus: &[usize], cores: Option<usize>) -> Result<Vec<usize>, String> {
    let allowed = procfs::allowed_cpus();
    if !cpus.is_empty() {
        if let Some(c) = cpus
            .iter()
            .find(|c| !allowed.is_empty() && !allowed.contains(c))
        {
            return Err(format!(
                "CPU {c} is not one this process may use ({allowed:?})"
            ));
        }
        let n = cores.unwrap_or(cpus.len());
        if n > cpus.len() {
            return Err(format!("--cores {n} but only {} --cpus", cpus.len()));
        }
        return Ok(cpus[..n].to_vec());
    }
    let n = cores.unwrap_or(1);
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

/// Runs one scenario.
pub fn run(ctx: &Arc<Context>, scenario: Scenario) -> Result<Report, String> {
    match scenario {
        Scenario::Throughput => throughput::run(ctx),
        Scenario::Streams => streams::run(ctx),
        Scenario::Handshakes => handshakes::run(ctx),
        Scenario::Idle => idle::run(ctx),
        Scenario::Baseline => baseline::run(ctx),
    }
}

/// Parameters describing --rate or --concurrency.
pub fn load_params(spec: &Spec, report: &mut Report) {
    match spec.rate {
        Some(rate) => report
            .param("mode", "open loop")
            .param("rate", rate)
            .param("max_in_flight", spec.max_in_flight),
        None => report
            .param("mode", "closed loop")
            .param("concurrency", spec.concurrency),
    };
}

/// "1,2,3".
pub fn format_cpus(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// This executor's share of `total` (at least `min`).
pub fn share_of(worker: &Worker, total: usize, min: usize) -> usize {
    (crate::stats::share(total as u64, worker.count, worker.index) as usize).max(min)
}

/// A worker's budget: its share of --count times `unit`, or unlimited.
pub fn budget_for(spec: &Spec, worker: &Worker, unit: u64) -> Rc<Budget> {
    let units = spec
        .count
        .map(|n| crate::stats::share(n, worker.count, worker.index).saturating_mul(unit));
    Rc::new(Budget::new(units))
}
