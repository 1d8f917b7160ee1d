//! End-to-end pool benchmark: stream-open latency (SYN to SYNACK) and streams per
//! second through an in-process server for each pool kind, against an echo target
//! that is either local or behind a real delay (see scripts/). A benchmark, not a
//! test: it prints figures, asserts none.
//!
//! ```text
//! cargo bench --bench pool_e2e -- [--target ADDR] [--kinds none,lock,lockfree,highperf]
//!     [--duration SECS] [--concurrency N] [--sessions N] [--min-idle N]
//!     [--server-cpu N] [--client-cpu N]
//! cargo bench --bench pool_e2e -- serve-echo ADDR     # an echo target (for a netns)
//! ```

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anytls::client::{ClientConfig, ClientSession};
use anytls::pool::{PoolConfig, PoolKind};
use anytls::proto::Address;
use anytls::tls::{client_config, ServerTls, ServerVerification};
use anytls::{Server, ServerConfig};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

const PASSWORD: &str = "bench";

struct Options {
    target: Option<SocketAddr>,
    kinds: Vec<String>,
    duration: Duration,
    concurrency: usize,
    sessions: usize,
    min_idle: usize,
    server_cpu: usize,
    client_cpu: usize,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        target: None,
        kinds: ["none", "lock", "lockfree", "highperf"]
            .map(String::from)
            .to_vec(),
        duration: Duration::from_secs(5),
        concurrency: 8,
        sessions: 1,
        min_idle: 16,
        server_cpu: 0,
        client_cpu: 1,
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut i = 0;
    while i < args.len() {
        let value = args
            .get(i + 1)
            .cloned()
            .ok_or(format!("{} needs a value", args[i]))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{}: not a number", args[i]))
        };
        match args[i].as_str() {
            "--target" => o.target = Some(value.parse().map_err(|_| "--target ADDR".to_string())?),
            "--kinds" => o.kinds = value.split(',').map(String::from).collect(),
            "--duration" => o.duration = Duration::from_secs(number()?),
            "--concurrency" => o.concurrency = number()? as usize,
            "--sessions" => o.sessions = number()?.max(1) as usize,
            "--min-idle" => o.min_idle = number()? as usize,
            "--server-cpu" => o.server_cpu = number()? as usize,
            "--client-cpu" => o.client_cpu = number()? as usize,
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    Ok(o)
}

async fn echo_server(listener: glommio::net::TcpListener) {
    loop {
        let Ok(mut conn) = listener.accept().await else {
            continue;
        };
        glommio::spawn_local(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
}

struct Outcome {
    streams: u64,
    errors: u64,
    seconds: f64,
    open: Histogram<u64>,
}

/// `concurrency` workers loop: open, wait SYNACK, 64 B echo, close.
async fn measure(config: &ClientConfig, target: SocketAddr, o: &Options) -> Outcome {
    let mut sessions = Vec::new();
    for _ in 0..o.sessions {
        sessions.push(Rc::new(
            ClientSession::connect(config).await.expect("session"),
        ));
    }
    let deadline = Instant::now() + o.duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..o.concurrency)
        .map(|w| {
            let session = sessions[w % sessions.len()].clone();
            glommio::spawn_local(async move {
                let mut open = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut streams, mut errors) = (0u64, 0u64);
                let mut buf = [0u8; 64];
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let Ok(stream) = session.open_stream(&Address::Ip(target)) else {
                        errors += 1;
                        break;
                    };
                    if stream.established().await.is_err() {
                        errors += 1;
                        continue;
                    }
                    open.record(t0.elapsed().as_micros().max(1) as u64).ok();
                    if stream.write_all(&[9u8; 64]).await.is_err() {
                        errors += 1;
                        continue;
                    }
                    let mut got = 0;
                    while got < 64 {
                        let n = stream.read(&mut buf).await;
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    if got == 64 {
                        streams += 1;
                    } else {
                        errors += 1;
                    }
                }
                (open, streams, errors)
            })
        })
        .collect();
    let mut outcome = Outcome {
        streams: 0,
        errors: 0,
        seconds: 0.0,
        open: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
    };
    for worker in workers {
        let (open, streams, errors) = worker.await;
        outcome.open.add(&open).ok();
        outcome.streams += streams;
        outcome.errors += errors;
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("serve-echo") {
        let addr: SocketAddr = args
            .get(1)
            .and_then(|a| a.parse().ok())
            .expect("serve-echo ADDR");
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(64 * 1024)
            .make()
            .expect("executor")
            .run(async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("bind echo");
                eprintln!("echo target listening on {addr}");
                echo_server(listener).await
            });
        return;
    }
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let tls = ServerTls::self_signed().expect("certificate");
    println!(
        "pool end-to-end: {} worker(s) over {} session(s), {:?} per kind, min-idle {}, server CPU {}, client CPU {}",
        o.concurrency, o.sessions, o.duration, o.min_idle, o.server_cpu, o.client_cpu
    );
    println!(
        "{:<10} {:>11} {:>12} {:>12} {:>12} {:>7}",
        "pool", "streams/s", "open p50 ms", "open p99 ms", "open max ms", "errors"
    );
    let mut failed = false;
    for kind_name in &o.kinds {
        let kind: PoolKind = match kind_name.parse() {
            Ok(kind) => kind,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        };
        let mut config =
            ServerConfig::new("127.0.0.1:0".parse().unwrap(), PASSWORD, tls.config.clone());
        config.cpus = vec![o.server_cpu];
        config.pool = PoolConfig {
            kind,
            min_idle: o.min_idle,
            ..PoolConfig::default()
        };
        let server = Server::start(config).expect("server starts");
        let addr = server.local_addr();
        // The client runs on its own thread: making a pinned executor pins its thread.
        let run_options = clone_options(&o);
        let outcome = std::thread::spawn(move || client_run(addr, run_options))
            .join()
            .expect("client thread");
        let ms = |q: f64| outcome.open.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<10} {:>11.0} {:>12.3} {:>12.3} {:>12.3} {:>7}",
            kind_name,
            outcome.streams as f64 / outcome.seconds,
            ms(0.5),
            ms(0.99),
            outcome.open.max() as f64 / 1000.0,
            outcome.errors
        );
        println!("           {}", server.pool().stats());
        println!("           {}", server.pool().status_line());
        failed |= outcome.streams == 0;
        server.shutdown();
    }
    if failed {
        eprintln!("error: a pool kind completed no stream");
        std::process::exit(1);
    }
}

fn client_run(server: SocketAddr, o: Options) -> Outcome {
    LocalExecutorBuilder::new(Placement::Fixed(o.client_cpu))
        .io_memory(64 * 1024)
        .make()
        .expect("client executor")
        .run(async move {
            let target = match o.target {
                Some(target) => target,
                None => {
                    let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let local = listener.local_addr().unwrap();
                    glommio::spawn_local(echo_server(listener)).detach();
                    local
                }
            };
            let config = ClientConfig::new(
                server,
                "localhost",
                client_config(ServerVerification::Insecure),
                PASSWORD,
            );
            // Warm-up: let the pool learn the target and dial its spares.
            let warm = Options {
                duration: Duration::from_millis(500),
                ..clone_options(&o)
            };
            measure(&config, target, &warm).await;
            glommio::timer::sleep(Duration::from_millis(500)).await;
            measure(&config, target, &o).await
        })
}

fn clone_options(o: &Options) -> Options {
    Options {
        target: o.target,
        kinds: o.kinds.clone(),
        duration: o.duration,
        concurrency: o.concurrency,
        sessions: o.sessions,
        min_idle: o.min_idle,
        server_cpu: o.server_cpu,
        client_cpu: o.client_cpu,
    }
}
