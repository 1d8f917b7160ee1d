//! `idle`: the server's memory per idle session. Reads the server's VmRSS, opens
//! --sessions sessions (each answers one heartbeat, so the server has set it up
//! completely), waits --settle-ms, reads VmRSS again while they are all open,
//! then closes them and reads it once more.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anytls::client::ClientSession;

use super::{connect, drive, secs_f64, share_of, Context, Load, Scenario, Timings};
use crate::procfs;
use crate::report::Report;
use crate::stats::{Budget, Failed, Failure, Live, Recorder, Tally};
use crate::workers::{self, Worker};

/// Cross-thread hand-shake between the executors and the main thread.
#[derive(Default)]
struct Phase {
    /// Executors done opening their sessions.
    ready: AtomicUsize,
    /// Set by the main thread once RSS is read: close the sessions.
    release: AtomicBool,
    /// Sessions still open when released.
    still_open: AtomicU64,
}

/// Opens the sessions, measures, and reports.
pub fn run(ctx: &Arc<Context>) -> Result<Report, String> {
    let spec = &ctx.spec;
    let pid = spec.server_pid.ok_or("idle needs --server-pid")?;
    let read_rss =
        || procfs::rss_kib(pid).ok_or_else(|| format!("cannot read VmRSS of process {pid}"));
    let settle = Duration::from_millis(spec.settle_ms);
    let before = read_rss()?;
    let phase = Arc::new(Phase::default());
    let live = Arc::new(Live::default());
    let progress = ctx.progress("idle");
    let mut all_ready: Option<Instant> = None;
    let mut with_sessions: Option<u64> = None;
    let load = {
        let (ctx, phase) = (ctx.clone(), phase.clone());
        move |w| worker(ctx.clone(), phase.clone(), w)
    };
    let tallies = workers::run(&ctx.cpus, &live, load, || {
        progress.update(&live);
        if phase.release.load(Ordering::Acquire) {
            return;
        }
        if all_ready.is_none() && phase.ready.load(Ordering::Acquire) == ctx.cpus.len() {
            all_ready = Some(Instant::now());
        }
        if all_ready.is_some_and(|t| t.elapsed() >= settle) {
            with_sessions = procfs::rss_kib(pid);
            phase.release.store(true, Ordering::Release);
        }
    });
    progress.finish();
    let mut tally = Tally::default();
    for t in tallies? {
        tally.merge(t);
    }
    std::thread::sleep(settle);
    let after_close = procfs::rss_kib(pid);

    let sessions = spec.sessions_for(Scenario::Idle);
    let mut report = Report::new(Scenario::Idle.name(), &tally);
    report
        .param("sessions", sessions)
        .param("settle_ms", spec.settle_ms)
        .param("concurrency", spec.concurrency)
        .param("server_pid", pid);
    ctx.common_params(&mut report);
    report
        .figure("sessions opened", tally.ok as f64, "")
        .figure(
            "still open when measured",
            phase.still_open.load(Ordering::Acquire) as f64,
            "",
        )
        .figure("server RSS before", before as f64, "KiB");
    match with_sessions {
        Some(with) if tally.ok > 0 => {
            let per = (with as f64 - before as f64) / tally.ok as f64;
            report
                .figure("server RSS with sessions", with as f64, "KiB")
                .figure("RSS per idle session", per, "KiB");
        }
        _ => {
            report.note("no RSS reading with the sessions open");
        }
    }
    report.figure_opt(
        "server RSS after close",
        after_close.map(|v| v as f64),
        "KiB",
    );
    if tally.ok < sessions as u64 {
        report.note(format!(
            "{} of {sessions} sessions did not open; the figure is per opened session",
            sessions as u64 - tally.ok
        ));
    }
    Ok(report)
}

async fn worker(ctx: Arc<Context>, phase: Arc<Phase>, w: Worker) -> Tally {
    let rec = Rc::new(Recorder::new(w.live.clone()));
    let spec = &ctx.spec;
    let sessions = share_of(&w, spec.sessions_for(Scenario::Idle), 0);
    let open: Rc<RefCell<Vec<ClientSession>>> = Rc::default();
    if sessions > 0 {
        let config = Rc::new(ctx.client_config());
        let op = {
            let open = open.clone();
            move |t0: Instant| {
                let (config, open) = (config.clone(), open.clone());
                async move {
                    let session = connect(&config).await?;
                    let connected = t0.elapsed();
                    session
                        .heartbeat()
                        .await
                        .map_err(|e| Failed::new(Failure::SessionClosed, e))?;
                    open.borrow_mut().push(session);
                    Ok(Timings {
                        connect: Some(connected),
                        heartbeat: Some(t0.elapsed()),
                        ..Timings::default()
                    })
                }
            }
        };
        let start = rec.start_window();
        let load = Load::Closed {
            concurrency: share_of(&w, spec.concurrency, 1),
        };
        let budget = Rc::new(Budget::new(Some(sessions as u64)));
        let deadline = start + secs_f64(spec.max_time);
        drive(rec.clone(), load, deadline, budget, spec.op_timeout(), op).await;
        rec.end_window();
    }
    phase.ready.fetch_add(1, Ordering::AcqRel);
    // The main thread releases us once it has read RSS; never wait forever.
    let give_up = Instant::now() + Duration::from_millis(spec.settle_ms) + Duration::from_secs(30);
    while !phase.release.load(Ordering::Acquire) && Instant::now() < give_up {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let still_open = open.borrow().iter().filter(|s| !s.is_closed()).count();
    phase
        .still_open
        .fetch_add(still_open as u64, Ordering::AcqRel);
    open.borrow_mut().clear();
    // Let the sessions' tasks see the close and their sockets be closed (glommio
    // closes asynchronously): an executor that ended first would leak every one
    // of them, and a long `compare` ran out of descriptors that way. Wait until
    // the process's descriptor count stops falling (checked after 300 ms), 5 s at most.
    let closing = Instant::now();
    let mut last = procfs::own_fd_count();
    loop {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        let now = procfs::own_fd_count();
        let settled = now >= last && closing.elapsed() >= Duration::from_millis(300);
        if settled || closing.elapsed() >= Duration::from_secs(5) {
            break;
        }
        last = now;
    }
    rec.take()
}
