//! `baseline`: the machine's ceiling, measured by the same tool in the same run
//! with no AnyTLS involved. A separate executor pinned to --baseline-server-cpu
//! (standing where the server would) runs a plain TCP sink, a TLS sink (rustls,
//! self-signed) and a request/response target; the generator then measures, one
//! after the other: TCP bulk MB/s, TLS bulk MB/s, TCP request/response
//! connections/s (connect, one request and response, close: the kernel's share of
//! what the server does per stream on its outbound side, the floor for `streams`),
//! and full TLS handshakes/s.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anytls::plumbing::{reset_on_close_if_delivered, timeout, Event};
use anytls::tls::{ServerTls, ServerVerification};
use futures_lite::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;

use super::streams::per_sec;
use super::{
    budget_for, left, load_params, run_window, share_of, tls_client, unless, Context, Load,
    Measured, Scenario, Timings,
};
use crate::procfs;
use crate::report::Report;
use crate::stats::{Budget, Failed, Failure, Recorder, Tally};
use crate::targets::{self, Behaviour};
use crate::workers::{self, Worker};

/// Where the baseline's sinks and request/response target listen and the thread
/// serving them.
struct Sinks {
    tcp: std::net::SocketAddr,
    tls: std::net::SocketAddr,
    request_response: std::net::SocketAddr,
    thread: Option<u32>,
}

/// Runs the four measurements and reports them together.
pub fn run(ctx: &Arc<Context>) -> Result<Report, String> {
    let spec = &ctx.spec;
    let server_tls =
        ServerTls::self_signed().map_err(|e| format!("baseline TLS certificate: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let host = spec.target_host;
    let request_response = Behaviour::RequestResponse {
        request: spec.request_size as usize,
        response: spec.response_size(),
    };
    let handle = {
        let stop = stop.clone();
        let config = server_tls.config.clone();
        workers::spawn_executor(
            "bench-srv".into(),
            spec.baseline_server_cpu,
            move || async move {
                let sinks = targets::start(host, Behaviour::Sink).and_then(|tcp| {
                    let tls = targets::start_tls_sink(host, config)?;
                    Ok(Sinks {
                        tcp,
                        tls,
                        request_response: targets::start(host, request_response)?,
                        thread: procfs::this_thread_id(),
                    })
                });
                let _ = tx.send(sinks.map_err(|e| format!("baseline sinks: {e}")));
                while !stop.load(Ordering::Acquire) {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            },
        )
    };
    let sinks = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(sinks) => sinks,
        Err(_) => {
            stop.store(true, Ordering::Release);
            return Err(workers::join(handle)
                .err()
                .unwrap_or_else(|| "the baseline sink executor did not start".into()));
        }
    };
    let result = sinks.and_then(|sinks| measure(ctx, &sinks));
    stop.store(true, Ordering::Release);
    workers::join(handle)?;
    result
}

fn measure(ctx: &Arc<Context>, sinks: &Sinks) -> Result<Report, String> {
    let spec = &ctx.spec;
    let tid = sinks.thread;
    let sink_cpu = move || tid.and_then(procfs::thread_cpu);
    let client = tls_client(ServerVerification::Insecure, spec.tls_resume);

    let tcp = {
        let (ctx, addr) = (ctx.clone(), sinks.tcp);
        ctx.clone()
            .run_load_probed("baseline TCP bulk", sink_cpu, move |w| {
                bulk(ctx.clone(), w, addr, None)
            })?
    };
    let tls = {
        let (ctx, addr, client) = (ctx.clone(), sinks.tls, client.clone());
        ctx.clone()
            .run_load_probed("baseline TLS bulk", sink_cpu, move |w| {
                bulk(ctx.clone(), w, addr, Some(client.clone()))
            })?
    };
    let request_response = {
        let (ctx, addr) = (ctx.clone(), sinks.request_response);
        ctx.clone()
            .run_load_probed("baseline TCP request/response", sink_cpu, move |w| {
                request_response_worker(ctx.clone(), w, addr)
            })?
    };
    let handshakes = {
        let (ctx, addr) = (ctx.clone(), sinks.tls);
        ctx.clone()
            .run_load_probed("baseline TLS handshakes", sink_cpu, move |w| {
                handshake_worker(ctx.clone(), w, addr, client.clone())
            })?
    };

    let mb_per_sec = |m: &Measured| {
        let secs = m.tally.wall().as_secs_f64();
        per_sec(m.tally.bytes_up, secs) / 1e6
    };
    let tcp_rate = mb_per_sec(&tcp);
    let tls_rate = mb_per_sec(&tls);
    let hs_rate = per_sec(handshakes.tally.ok, handshakes.tally.wall().as_secs_f64());
    let rr_rate = per_sec(
        request_response.tally.ok,
        request_response.tally.wall().as_secs_f64(),
    );
    let rr_cpu_per_1000 = cpu_ms_per_1000(&request_response.tally);

    let mut all = Tally::default();
    let succeeded = tcp.tally.bytes_up > 0
        || tls.tally.bytes_up > 0
        || request_response.tally.ok > 0
        || handshakes.tally.ok > 0;
    let cpu = |m: &Measured| (m.tally.cpu_percent(), m.server_cpu);
    let (tcp_cpu, tls_cpu, rr_cpu, hs_cpu) = (
        cpu(&tcp),
        cpu(&tls),
        cpu(&request_response),
        cpu(&handshakes),
    );
    all.merge(tcp.tally);
    all.merge(tls.tally);
    all.merge(request_response.tally);
    all.merge(handshakes.tally);
    let mut report = Report::new(Scenario::Baseline.name(), &all);
    report
        .param("streams", spec.streams)
        .param("chunk_size", spec.chunk_size)
        .param("baseline_server_cpu", spec.baseline_server_cpu)
        .param("generator_cpus", super::format_cpus(&ctx.cpus))
        .param("tls_resume", spec.tls_resume)
        .param("request_size", spec.request_size)
        .param("response_size", spec.response_size());
    load_params(spec, &mut report);
    if let Some(d) = spec.duration {
        report.param("duration_s_per_part", d);
    }
    if let Some(n) = spec.count {
        report.param("count", n);
    }
    report
        .figure("TCP bulk", tcp_rate, "MB/s")
        .figure("TLS bulk", tls_rate, "MB/s")
        .figure("TLS handshakes/s", hs_rate, "handshakes/s");
    if tcp_rate > 0.0 {
        report.figure("TLS / TCP bulk", tls_rate / tcp_rate, "ratio");
    }
    report
        .figure("TCP req/resp", rr_rate, "connections/s")
        .figure_opt(
            "TCP req/resp: generator CPU-ms",
            rr_cpu_per_1000,
            "per 1000 connections",
        );
    for (part, (generator, sink)) in [
        ("TCP bulk", tcp_cpu),
        ("TLS bulk", tls_cpu),
        ("TLS handshakes", hs_cpu),
        ("TCP req/resp", rr_cpu),
    ] {
        report
            .figure_opt(
                &format!("{part}: generator CPU"),
                generator,
                "% of its CPUs",
            )
            .figure_opt(&format!("{part}: sink CPU"), sink, "% of one CPU");
    }
    if ctx.cpus.contains(&spec.baseline_server_cpu) {
        report.note(format!(
            "the sinks share CPU {} with the generator",
            spec.baseline_server_cpu
        ));
    }
    report.succeeded = succeeded;
    Ok(report)
}

/// The generator's CPU time over its measured windows per 1000 successful
/// operations, in milliseconds (the same number as CPU-µs per operation, and
/// legible with the table's two decimals where CPU-seconds would not be).
fn cpu_ms_per_1000(tally: &Tally) -> Option<f64> {
    (tally.ok > 0 && tally.busy_wall > Duration::ZERO)
        .then(|| tally.cpu.as_secs_f64() * 1e6 / tally.ok as f64)
}

/// Connects this executor's share of --streams connections to `addr` (over TLS
/// with `tls`) and writes until the run ends.
async fn bulk(
    ctx: Arc<Context>,
    w: Worker,
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Tally {
    let rec = Rc::new(Recorder::new(w.live.clone()));
    let spec = &ctx.spec;
    let conns = share_of(&w, spec.streams, 0);
    let stop = Rc::new(Event::default());
    let budget = budget_for(spec, &w, 1_000_000);
    let chunk: Rc<[u8]> = vec![0x5A; spec.chunk_size as usize].into();
    let mut writers = Vec::new();
    let setup = Instant::now() + spec.op_timeout();
    for _ in 0..conns {
        let connected = timeout(left(setup), async {
            let tcp = tcp_connect(addr).await?;
            match &tls {
                None => Ok(Writer::Plain(tcp)),
                Some(config) => tls_connect(config, tcp)
                    .await
                    .map(Box::new)
                    .map(Writer::Tls),
            }
        })
        .await;
        let writer = match connected {
            Some(Ok(writer)) => writer,
            Some(Err(failed)) => {
                rec.fail(failed);
                continue;
            }
            None => {
                rec.fail(Failed::new(Failure::Timeout, "connect timed out"));
                continue;
            }
        };
        rec.ok();
        writers.push(writer);
    }
    if writers.is_empty() {
        return rec.take();
    }
    rec.start_window();
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|writer| {
            let (rec, stop, budget, chunk) =
                (rec.clone(), stop.clone(), budget.clone(), chunk.clone());
            match writer {
                Writer::Plain(tcp) => spawn_writer(tcp, rec, stop, budget, chunk),
                Writer::Tls(tls) => spawn_writer(*tls, rec, stop, budget, chunk),
            }
        })
        .collect();
    let limit = spec.run_limit();
    let timer = {
        let stop = stop.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(limit).await;
            stop.set();
        })
    };
    for task in tasks {
        task.await;
    }
    rec.end_window();
    drop(timer);
    rec.take()
}

enum Writer {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

fn spawn_writer<W: AsyncWrite + Unpin + 'static>(
    mut conn: W,
    rec: Rc<Recorder>,
    stop: Rc<Event>,
    budget: Rc<Budget>,
    chunk: Rc<[u8]>,
) -> glommio::Task<()> {
    glommio::spawn_local(async move {
        loop {
            let n = budget.claim(chunk.len() as u64) as usize;
            if n == 0 {
                return;
            }
            match unless(&stop, conn.write_all(&chunk[..n])).await {
                None => return,
                Some(Ok(())) => rec.up(n),
                Some(Err(e)) => {
                    rec.fail(Failed::new(Failure::Write, e));
                    return;
                }
            }
        }
    })
}

async fn tcp_connect(addr: std::net::SocketAddr) -> Result<TcpStream, Failed> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| Failed::new(Failure::Connect, e))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn tls_connect(
    config: &Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<futures_rustls::client::TlsStream<TcpStream>, Failed> {
    let name = ServerName::try_from("localhost").expect("a valid DNS name");
    TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| Failed::new(Failure::Connect, format!("TLS: {e}")))
}

/// Plain TCP connect + --request-size bytes out + --response-size bytes in +
/// close, under --rate/--concurrency: what the server does per stream towards
/// its target. Like the server, it closes with RST when the peer has
/// acknowledged everything, so no TIME_WAIT socket is left per connection.
async fn request_response_worker(
    ctx: Arc<Context>,
    w: Worker,
    addr: std::net::SocketAddr,
) -> Tally {
    let rec = Rc::new(Recorder::new(w.live.clone()));
    let spec = &ctx.spec;
    let Some(load) = Load::for_worker(spec, &w) else {
        return rec.take();
    };
    let response = spec.response_size();
    let request: Rc<[u8]> = vec![0x42; spec.request_size as usize].into();
    let start = rec.start_window();
    let op = move |_t0: Instant| {
        let request = request.clone();
        async move {
            let mut tcp = tcp_connect(addr).await?;
            tcp.write_all(&request)
                .await
                .map_err(|e| Failed::new(Failure::Write, e))?;
            let mut buf = vec![0u8; response.min(64 * 1024)];
            let mut got = 0;
            while got < response {
                match tcp.read(&mut buf).await {
                    Ok(0) => {
                        let what = format!("FIN after {got} of {response} response bytes");
                        return Err(Failed::new(Failure::ShortResponse, what));
                    }
                    Ok(n) => got += n,
                    Err(e) => return Err(Failed::new(Failure::ShortResponse, e)),
                }
            }
            reset_on_close_if_delivered(&tcp);
            drop(tcp);
            Ok(Timings::default())
        }
    };
    run_window(rec, load, spec, &w, start, op).await
}

/// TCP connect + full TLS handshake + close, under --rate/--concurrency.
async fn handshake_worker(
    ctx: Arc<Context>,
    w: Worker,
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Tally {
    let rec = Rc::new(Recorder::new(w.live.clone()));
    let spec = &ctx.spec;
    let Some(load) = Load::for_worker(spec, &w) else {
        return rec.take();
    };
    let start = rec.start_window();
    let op = move |t0: Instant| {
        let config = config.clone();
        async move {
            let tls = tls_connect(&config, tcp_connect(addr).await?).await?;
            drop(tls);
            Ok(Timings {
                connect: Some(t0.elapsed()),
                ..Timings::default()
            })
        }
    };
    run_window(rec, load, spec, &w, start, op).await
}
