//! Smoke test of the load generator: an anytls-rs server on 127.0.0.1 and
//! `anytls-bench` run once per scenario for about a second with small
//! parameters. Checks exit status, that the table names the scenario with a
//! number, that --json parses, and that a wrong password exits non-zero; and
//! `anytls-bench compare` once, with that server as both A and B, and `relay`
//! and `pool-e2e` once each. Figures are not asserted beyond being positive,
//! but for a paced `throughput --rate-mbps`, whose achieved rate must be
//! within 15% of the offered one.
//! Every child process is bounded by a time limit; one still running after
//! [`SLOW_RUN`] gets a snapshot of what it waits on printed (threads, sockets,
//! the kernel's SYN retransmission counters).
//!
//! The server is `anytls-bench serve` (the library's server in a child process,
//! default settings): this package cannot name the root package's anytls-server
//! binary, and the generator is what is tested here (the root package's tests
//! cover anytls-server itself).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The password of the server the tests start.
const PASSWORD: &str = "smoke-password";

/// How long the server may take to print the address it listens on.
const SERVER_START: Duration = Duration::from_secs(30);

/// An anytls-rs server (`anytls-bench serve --cores 1`) in a child process,
/// killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts the server on an ephemeral port of 127.0.0.1 and waits (at most
    /// [`SERVER_START`]) for its `listening on ADDR` line.
    fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_anytls-bench"))
            .args(["serve", "--listen", "127.0.0.1:0", "--password", PASSWORD])
            .args(["--cores", "1"])
            .env(
                "RUST_LOG",
                std::env::var("SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("anytls-bench serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(SERVER_START).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Server { child, addr },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("anytls-bench serve did not say where it listens within {SERVER_START:?}: {line:?}");
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Longest any single generator run may take before the test fails. Operations in
/// flight at a run's deadline are cut off there, but set-up phases each wait up to
/// `--op-timeout` (10 s) before counting a timeout: throughput's connect and then its
/// SYNACK wait (21 s in all for a 1 s run), idle's 20 sessions at 16 in flight (two
/// operations in a row, 20 s), baseline's sink start-up and its two bulk connects
/// (30 s plus its parts). Past 40 s something hung.
const RUN_LIMIT: Duration = Duration::from_secs(40);

/// A run still going after this long is stuck in one of the waits above: the test
/// prints what it waits on while it waits, then goes on waiting until [`RUN_LIMIT`].
const SLOW_RUN: Duration = Duration::from_secs(8);

/// Runs anytls-bench with `args` and the flags every scenario run gets, killing
/// it after [`RUN_LIMIT`].
fn bench(args: &[String]) -> Output {
    let mut all = args.to_vec();
    all.extend(strings(&["--no-progress", "--insecure"]));
    bench_exactly(&all)
}

/// Runs anytls-bench with exactly `args`, killing it after [`RUN_LIMIT`].
fn bench_exactly(args: &[String]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_anytls-bench"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("anytls-bench starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = std::time::Instant::now();
    let mut done = rx.recv_timeout(SLOW_RUN);
    if done.is_err() {
        eprintln!(
            "anytls-bench {args:?} still running after {SLOW_RUN:?}:\n{}",
            snapshot(pid)
        );
        done = rx.recv_timeout(RUN_LIMIT - SLOW_RUN);
    }
    match done {
        Ok(output) => {
            // Visible with --nocapture: a slow run is worth a look even when it passes.
            eprintln!("anytls-bench {args:?}: {:.1?}", started.elapsed());
            output.expect("anytls-bench ran")
        }
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("anytls-bench {args:?} ran longer than {RUN_LIMIT:?}");
        }
    }
}

/// What process `pid` waits on: each thread's state and kernel wait channel, the
/// TCP sockets it holds and the half-open ones of anyone (a SYN unanswered on a
/// full accept queue is retransmitted after 1 s, 3 s, 7 s...), and the kernel's
/// listen-overflow and retransmission counters.
fn snapshot(pid: u32) -> String {
    let mut out = String::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let path = task.path();
        let read = |name: &str| std::fs::read_to_string(path.join(name)).unwrap_or_default();
        let stat = read("stat");
        // The state follows the parenthesised name, which may hold spaces.
        let state = stat.rsplit_once(") ").map_or("?", |(_, rest)| &rest[..1]);
        out += &format!(
            "  thread {} {} {state} {}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan")
        );
    }
    let owner = format!("pid={pid},");
    match Command::new("ss").args(["-tanp"]).output() {
        Ok(ss) => {
            for line in String::from_utf8_lossy(&ss.stdout).lines() {
                if line.contains(&owner) || line.starts_with("SYN-") {
                    out += &format!("  {line}\n");
                }
            }
        }
        Err(e) => out += &format!("  (no ss: {e})\n"),
    }
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if [
                "ListenOverflows",
                "ListenDrops",
                "TCPSynRetrans",
                "TCPTimeouts",
            ]
            .contains(&name)
            {
                out += &format!("  {name} {value}\n");
            }
        }
    }
    out
}

/// Runs a scenario that must succeed; returns its stdout.
fn run_ok(args: &[String]) -> String {
    let output = bench(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "anytls-bench {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The number in the table row whose result column starts with `name`.
fn figure(stdout: &str, name: &str) -> Option<f64> {
    stdout.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(name)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn check(stdout: &str, scenario: &str, headline: &str) {
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(scenario) && l.contains("parameters:")),
        "no {scenario} block in:\n{stdout}"
    );
    let value = figure(stdout, headline);
    assert!(
        value.is_some_and(f64::is_finite),
        "no number for {headline:?} in:\n{stdout}"
    );
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_scenario_runs_and_reports() {
    let server = Server::start();
    let pid = server.pid().to_string();
    let addr = server.addr.to_string();
    let common = |extra: &[&str]| {
        let mut args = strings(&["--server", &addr, "--password", PASSWORD]);
        args.extend(strings(extra));
        args
    };
    // The baseline's sinks go where the server is: the first allowed CPU.
    let first_cpu = first_and_last_cpu().0.to_string();

    let out = run_ok(&common(&[
        "throughput",
        "--duration",
        "1",
        "--streams",
        "2",
        "--server-pid",
        &pid,
    ]));
    check(&out, "throughput", "throughput");

    let json = std::env::temp_dir().join(format!("anytls-bench-smoke-{}.json", std::process::id()));
    let json_arg = json.display().to_string();
    let out = run_ok(&common(&[
        "streams",
        "--duration",
        "1",
        "--concurrency",
        "4",
        "--request-size",
        "64",
        "--json",
        &json_arg,
    ]));
    check(&out, "streams", "streams/s");
    let text = std::fs::read_to_string(&json).expect("--json file written");
    let _ = std::fs::remove_file(&json);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("--json file is JSON");
    assert_eq!(doc["scenarios"][0]["scenario"], "streams", "{text}");
    assert!(
        doc["scenarios"][0]["results"][0]["value"].is_number(),
        "{text}"
    );

    let out = run_ok(&common(&[
        "handshakes",
        "--duration",
        "1",
        "--concurrency",
        "2",
    ]));
    check(&out, "handshakes", "sessions/s");

    let out = run_ok(&common(&[
        "idle",
        "--sessions",
        "20",
        "--settle-ms",
        "200",
        "--server-pid",
        &pid,
    ]));
    check(&out, "idle", "RSS per idle session");

    let out = run_ok(&common(&[
        "baseline",
        "--duration",
        "0.4",
        "--concurrency",
        "2",
        "--baseline-server-cpu",
        &first_cpu,
    ]));
    check(&out, "baseline", "TLS bulk");
    check(&out, "baseline", "TLS handshakes/s");
    check(&out, "baseline", "TCP req/resp");
    check(&out, "baseline", "TCP req/resp: generator CPU-ms");

    // Nothing succeeds with a wrong password: the errors are named, exit is 1.
    let output = bench(&strings(&[
        "streams",
        "--server",
        &addr,
        "--password",
        "wrong",
        "--duration",
        "0.5",
        "--concurrency",
        "2",
    ]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("session_closed"), "{stdout}");
}

/// `throughput --rate-mbps` holds its offered load: 20 MB/s over 2 streams for
/// 2 s, up (the client's writers paced) and down (the source target paced),
/// each within 15%, with the server's CPU reported next to it.
#[test]
fn a_paced_throughput_run_holds_its_rate() {
    const OFFERED_MB_S: f64 = 20.0;
    let server = Server::start();
    let pid = server.pid().to_string();
    let addr = server.addr.to_string();
    for direction in ["up", "down"] {
        let out = run_ok(&strings(&[
            "throughput",
            "--server",
            &addr,
            "--password",
            PASSWORD,
            "--direction",
            direction,
            "--streams",
            "2",
            "--rate-mbps",
            &OFFERED_MB_S.to_string(),
            "--duration",
            "2",
            "--server-pid",
            &pid,
        ]));
        check(&out, "throughput", "server CPU");
        let achieved = figure(&out, "throughput").unwrap_or_default();
        assert!(
            (achieved - OFFERED_MB_S).abs() <= OFFERED_MB_S * 0.15,
            "{direction}: {achieved} MB/s achieved of {OFFERED_MB_S} offered:\n{out}"
        );
    }
}

#[test]
fn compare_runs_a_and_b() {
    let dir = std::env::temp_dir();
    let json = dir.join(format!("anytls-compare-smoke-{}.json", std::process::id()));
    let svg = json.with_extension("svg");
    let server = concat!(
        env!("CARGO_BIN_EXE_anytls-bench"),
        " serve -l 127.0.0.1:{port} -p {password} --cores 1"
    );
    let output = bench_exactly(&strings(&[
        "compare",
        "--rounds",
        "1",
        "-d",
        "1",
        "--set",
        "single",
        "--only",
        "up,streams",
        "--a-cmd",
        server,
        "--b-cmd",
        server,
        // Other tests leave TIME_WAIT sockets behind: never wait for them here.
        "--max-time-wait",
        "1000000000",
        "--json",
        &json.display().to_string(),
        "--svg",
        &svg.display().to_string(),
    ]));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compare failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(&json).expect("compare writes --json");
    let chart = std::fs::read_to_string(&svg).expect("compare writes --svg");
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    assert!(chart.starts_with("<svg"), "{chart}");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("--json file is JSON");
    let rows = doc["table"].as_array().expect("a table");
    let cases: Vec<&str> = rows.iter().filter_map(|r| r["case"].as_str()).collect();
    assert_eq!(cases, ["up", "streams"], "{text}");
    for row in rows {
        for (i, side) in ["A", "B"].iter().enumerate() {
            assert_eq!(row["sides"][i]["side"], *side, "{text}");
            let median = row["sides"][i]["median"].as_f64();
            assert!(median.is_some_and(|v| v > 0.0), "{side}: {row}");
        }
        assert!(row["b_over_a"].as_f64().is_some_and(|r| r > 0.0), "{row}");
    }
    let runs = doc["cases"][0]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{text}");
    assert!(runs[0]["time_wait"]["at_start"].is_u64(), "{text}");
    assert!(stdout.contains("B/A"), "{stdout}");
}

/// The first CPU this process may use and the last (the same on one CPU).
fn first_and_last_cpu() -> (usize, usize) {
    let ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    (
        ids.iter().copied().min().unwrap_or(0),
        ids.iter().copied().max().unwrap_or(0),
    )
}

#[test]
fn relay_runs_and_reports() {
    let (server_cpu, generator_cpu) = first_and_last_cpu();
    let output = bench_exactly(&strings(&[
        "relay",
        "-d",
        "0.5",
        "--no-progress",
        "--server-cpu",
        &server_cpu.to_string(),
        "--cpus",
        &generator_cpu.to_string(),
    ]));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "relay failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    check(&stdout, "throughput", "throughput");
    check(&stdout, "streams", "streams/s");
    for row in [
        "upload, 1 stream, 1 session",
        "upload, 8 streams, 1 session",
        "open+64B request/response+close, 1 in flight",
        "open+64B request/response+close, 32 in flight",
    ] {
        // The summary's rows start with their label (the notes are indented).
        let value: Option<f64> = stdout.lines().find_map(|l| {
            let rest = l.strip_prefix(row)?;
            rest.split_whitespace().next()?.parse().ok()
        });
        assert!(
            value.is_some_and(|v| v > 0.0),
            "no figure for {row:?} in:\n{stdout}"
        );
    }
    assert!(stdout.contains("[Server Stats]"), "{stdout}");
}

#[test]
fn pool_e2e_runs_every_kind() {
    let (server_cpu, generator_cpu) = first_and_last_cpu();
    let json =
        std::env::temp_dir().join(format!("anytls-pool-e2e-smoke-{}.json", std::process::id()));
    let output = bench_exactly(&strings(&[
        "pool-e2e",
        "-d",
        "0.5",
        "--concurrency",
        "4",
        "--no-progress",
        "--server-cpu",
        &server_cpu.to_string(),
        "--cpus",
        &generator_cpu.to_string(),
        "--json",
        &json.display().to_string(),
    ]));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "pool-e2e failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    check(&stdout, "pool-e2e", "streams/s");
    check(&stdout, "pool-e2e", "open p99");
    for kind in ["none", "lock", "lockfree", "highperf"] {
        let rate: Option<f64> = stdout.lines().find_map(|l| {
            let rest = l.strip_prefix(kind)?.strip_prefix(' ')?;
            rest.split_whitespace().next()?.parse().ok()
        });
        assert!(
            rate.is_some_and(|r| r > 0.0),
            "no streams/s for {kind} in:\n{stdout}"
        );
    }
    let text = std::fs::read_to_string(&json).expect("--json file written");
    let _ = std::fs::remove_file(&json);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("--json file is JSON");
    let pools: Vec<&str> = doc["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .filter_map(|s| s["parameters"]["pool"].as_str())
        .collect();
    assert_eq!(pools, ["none", "lock", "lockfree", "highperf"], "{text}");
}
