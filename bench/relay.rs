//! Relay benchmark: bulk throughput and short streams per second through a real
//! server on 127.0.0.1 (a benchmark, not a test: it prints figures, asserts none).
//!
//! The server runs in-process on its own pinned executor (CPU 0 by default); the
//! client and the local targets share one executor on another CPU (CPU 1).
//!
//! ```text
//! cargo bench --bench relay -- [--duration SECS] [--server-cpu N] [--client-cpu N]
//! ```

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anytls::client::{ClientConfig, ClientSession};
use anytls::tls::{client_config, ServerTls, ServerVerification};
use anytls::{Server, ServerConfig};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{LocalExecutorBuilder, Placement};

const PASSWORD: &str = "bench";

struct Options {
    duration: Duration,
    server_cpu: usize,
    client_cpu: usize,
}

fn options() -> Options {
    let mut options = Options {
        duration: Duration::from_secs(5),
        server_cpu: 0,
        client_cpu: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--duration" => {
                options.duration = Duration::from_secs(value().expect("--duration SECS"))
            }
            "--server-cpu" => options.server_cpu = value().expect("--server-cpu N") as usize,
            "--client-cpu" => options.client_cpu = value().expect("--client-cpu N") as usize,
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    options
}

/// Targets on the client's executor: a sink (port 0) and an echo (port 1).
async fn start_targets() -> (SocketAddr, SocketAddr) {
    let sink = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = (sink.local_addr().unwrap(), echo.local_addr().unwrap());
    for (listener, echoes) in [(sink, false), (echo, true)] {
        glommio::spawn_local(async move {
            loop {
                let Ok(mut conn) = listener.accept().await else {
                    continue;
                };
                glommio::spawn_local(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || (echoes && conn.write_all(&buf[..n]).await.is_err()) {
                            break;
                        }
                    }
                })
                .detach();
            }
        })
        .detach();
    }
    addrs
}

/// Uploads for `duration` on `streams` streams of one session; MB/s.
async fn throughput(
    config: &ClientConfig,
    sink: SocketAddr,
    streams: usize,
    duration: Duration,
) -> f64 {
    let session = Rc::new(ClientSession::connect(config).await.unwrap());
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let session = session.clone();
            glommio::spawn_local(async move {
                let stream = session.open_stream(&sink.into()).unwrap();
                let chunk = vec![0x5Au8; 32 * 1024];
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    stream.write_all(&chunk).await.unwrap();
                    sent += chunk.len() as u64;
                }
                sent
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await;
    }
    total as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// Open, 64-byte request, echoed response, close, with `concurrency` in flight; streams/s.
async fn short_streams(
    config: &ClientConfig,
    echo: SocketAddr,
    concurrency: usize,
    duration: Duration,
) -> f64 {
    let session = Rc::new(ClientSession::connect(config).await.unwrap());
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let session = session.clone();
            glommio::spawn_local(async move {
                let mut done = 0u64;
                let mut buf = [0u8; 64];
                while Instant::now() < deadline {
                    let stream = session.open_stream(&echo.into()).unwrap();
                    stream.write_all(&[7u8; 64]).await.unwrap();
                    let mut got = 0;
                    while got < 64 {
                        let n = stream.read(&mut buf).await;
                        assert!(n > 0, "echo ended early");
                        got += n;
                    }
                    stream.close();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await;
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
fn thread_cpu_seconds(prefix: &str) -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            ticks +=
                fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        }
    }
    ticks as f64 / ticks_per_second
}

/// Runs one row and prints its result with the server core's CPU use.
async fn row(label: String, unit: &str, run: impl std::future::Future<Output = f64>) {
    let cpu_before = thread_cpu_seconds("anytls-core");
    let started = Instant::now();
    let value = run.await;
    let busy = (thread_cpu_seconds("anytls-core") - cpu_before) / started.elapsed().as_secs_f64();
    println!(
        "{label:<44} {value:>10.1} {unit:<10} {:>5.0}%",
        busy * 100.0
    );
}

fn main() {
    let options = options();
    let tls = ServerTls::self_signed().unwrap();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), PASSWORD, tls.config);
    config.cpus = vec![options.server_cpu];
    let server = Server::start(config).expect("server starts");
    let addr = server.local_addr();
    let duration = options.duration;
    println!(
        "relay benchmark: server on CPU {}, client + targets on CPU {}, {:?} per row",
        options.server_cpu, options.client_cpu, duration
    );
    LocalExecutorBuilder::new(Placement::Fixed(options.client_cpu))
        .io_memory(256 * 1024)
        .make()
        .expect("client executor")
        .run(async move {
            let (sink, echo) = start_targets().await;
            let config = ClientConfig::new(
                addr,
                "localhost",
                client_config(ServerVerification::Insecure),
                PASSWORD,
            );
            println!("{:<44} {:>21} {:>6}", "scenario", "result", "server CPU");
            for streams in [1, 8] {
                let label = format!("upload, {streams} stream(s), 1 session");
                row(label, "MB/s", throughput(&config, sink, streams, duration)).await;
            }
            for concurrency in [1, 32] {
                let label = format!("open+64B echo+close, {concurrency} in flight");
                row(
                    label,
                    "streams/s",
                    short_streams(&config, echo, concurrency, duration),
                )
                .await;
            }
        });
    let stats = server.stats().snapshot();
    println!("server: {stats}");
    server.shutdown();
}
