//! What sessions over their upload budget cost the server (issue 17, row 8):
//! SESSIONS sessions of STREAMS streams each push 64 KiB to targets that never
//! read, so every session passes its budget and waits for its targets; for the
//! next 10 s the server's CPU use is read from /proc and a separate session's
//! heartbeats are timed.
//!
//! ```text
//! anytls-bench stall-cost --server-bin target/release/anytls-server [--sessions 20] [--streams 256]
//! ```
//! The server runs as a child (`--cores 1`); pin this program and the server to
//! different CPUs (`taskset`) and alternate binaries to compare them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anytls::client::{ClientConfig, ClientSession};
use anytls::proto::Address;
use anytls::tls::{client_config, ServerVerification};

use crate::procfs;

const PASSWORD: &str = "stall-cost";
const PUSH: usize = 64 * 1024;
const WINDOW: Duration = Duration::from_secs(10);

/// `stall-cost`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct StallCostArgs {
    /// The server binary to start (as a child, `--cores 1`).
    #[arg(long, value_name = "PATH")]
    pub server_bin: String,
    /// Sessions over their budget.
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Streams per session, each pushing 64 KiB to a target that never reads.
    #[arg(long, default_value_t = 256)]
    pub streams: usize,
    /// CPU the server is pinned to (with taskset); pin this program elsewhere.
    #[arg(long, value_name = "CPU")]
    pub server_cpu: Option<usize>,
    /// More flags for the server, split at whitespace.
    #[arg(
        long,
        value_name = "FLAGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub server_flags: String,
}

/// A listener whose connections are accepted and never read.
fn never_reading_target() -> SocketAddr {
    use glommio_socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(4096).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept() {
            held.push(conn);
        }
    });
    addr
}

/// Runs the measurement once and prints one line.
pub fn run(args: StallCostArgs) -> Result<bool, String> {
    let StallCostArgs {
        server_bin,
        sessions,
        streams,
        server_cpu,
        server_flags,
    } = args;
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("descriptor limit: {e}"))?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).ok();
    let mut command = match server_cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &cpu.to_string(), &server_bin]);
            taskset
        }
        None => Command::new(&server_bin),
    };
    let mut child = command
        .args(["-l", "127.0.0.1:0", "-p", PASSWORD, "--cores", "1"])
        .args(["--stats-interval", "5"])
        .args(server_flags.split_whitespace())
        .env("RUST_LOG", "warn,anytls::server=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{server_bin}: {e}"))?;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let server: SocketAddr = loop {
        let Some(Ok(line)) = lines.next() else {
            return Err(format!("{server_bin} exited before it listened"));
        };
        if let Some((_, rest)) = line.split_once("listening on ") {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // The server's last statistics line says which budgets its sessions reached.
    let last_stats = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stats = last_stats.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("[Server Stats]") {
                *stats.lock().expect("stats line") = line;
            }
        }
    });
    let target = never_reading_target();
    let config = ClientConfig::new(
        server,
        "localhost",
        client_config(ServerVerification::Insecure),
        PASSWORD,
    );
    let pid = child.id();
    let (cpu, beats) = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .expect("executor")
        .run(async move {
            let payload = Rc::new(vec![0x42u8; PUSH]);
            let (mut held, mut open) = (Vec::new(), Vec::new());
            for _ in 0..sessions {
                let session = ClientSession::connect(&config).await.expect("session");
                for _ in 0..streams {
                    // Kept open to the end: a stream dropped would end with FIN.
                    let stream = Rc::new(session.open_stream(&Address::Ip(target)).unwrap());
                    let (writer, payload) = (stream.clone(), payload.clone());
                    glommio::spawn_local(async move {
                        let _ = writer.write_all(&payload).await;
                    })
                    .detach();
                    open.push(stream);
                }
                held.push(session);
            }
            glommio::timer::sleep(Duration::from_secs(3)).await;
            let probe = ClientSession::connect(&config)
                .await
                .expect("probe session");
            let cpu_before = procfs::process_cpu(pid).unwrap_or_default();
            let started = Instant::now();
            let mut beats = Vec::new();
            while started.elapsed() < WINDOW {
                let sent = Instant::now();
                probe.heartbeat().await.expect("heartbeat answered");
                beats.push(sent.elapsed());
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            let used = procfs::process_cpu(pid).unwrap_or_default() - cpu_before;
            let cpu = used.as_secs_f64() / started.elapsed().as_secs_f64();
            drop(open);
            drop(held);
            (cpu, beats)
        });
    child.kill().ok();
    child.wait().ok();
    let mut beats = beats;
    beats.sort();
    let p50 = beats[beats.len() / 2];
    let max = beats[beats.len() - 1];
    println!(
        "{server_bin}: {sessions} sessions x {streams} streams over budget: server CPU {:.0}%, heartbeat p50 {:.2} ms, max {:.2} ms ({} beats)",
        cpu * 100.0,
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        beats.len()
    );
    println!("  {}", last_stats.lock().expect("stats line"));
    Ok(true)
}
