//! `streams`: short streams on a few shared sessions. Each stream opens, sends
//! one request, reads the whole response and closes; streams/s and latency from
//! the open (or, at a fixed --rate, from its scheduled start) to the first byte
//! and to the last byte of the response.

use std::rc::Rc;
use std::sync::Arc;

use super::{exchange, load_params, run_window, Context, Load, Scenario, LOAD_HELD};
use crate::report::Report;
use crate::stats::{Recorder, Tally};
use crate::workers::Worker;

/// Runs the scenario on every generator executor and reports.
pub fn run(ctx: &Arc<Context>) -> Result<Report, String> {
    let shared = ctx.clone();
    let measured = ctx.run_load("streams", move |w| worker(shared.clone(), w))?;
    let spec = &ctx.spec;
    let tally = &measured.tally;
    let secs = tally.wall().as_secs_f64();
    let achieved = per_sec(tally.ok, secs);
    let mut report = Report::new(Scenario::Streams.name(), tally);
    report
        .param("sessions", spec.sessions_for(Scenario::Streams))
        .param("request_size", spec.request_size)
        .param("response_size", spec.response_size());
    load_params(spec, &mut report);
    ctx.common_params(&mut report);
    report
        .figure("streams/s", achieved, "streams/s")
        .figure("streams completed", tally.ok as f64, "")
        .figure("wall time", secs, "s");
    measured.cpu_figures(&mut report);
    if let Some(offered) = spec.rate.filter(|&rate| achieved < rate * LOAD_HELD) {
        report.note(format!(
            "the offered load was not held: {achieved:.0} of {offered} streams/s completed; \
             the server CPU is then what it managed, not what {offered}/s costs"
        ));
    }
    Ok(report)
}

/// `n` over `secs`, 0 for an empty interval.
pub fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

async fn worker(ctx: Arc<Context>, w: Worker) -> Tally {
    let rec = Rc::new(Recorder::new(w.live.clone()));
    let spec = &ctx.spec;
    let Some(load) = Load::for_worker(spec, &w) else {
        return rec.take();
    };
    let response = spec.response_size();
    let Some(target) = ctx.request_response_target(&rec) else {
        return rec.take();
    };
    let pool = ctx.connected_pool(&w, &rec).await;
    let request: Rc<[u8]> = vec![0x42; spec.request_size as usize].into();
    let start = rec.start_window();
    let op = move |t0| {
        let (pool, target, request) = (pool.clone(), target.clone(), request.clone());
        async move {
            let session = pool.get().await?;
            exchange(&session, &target, &request, response, t0).await
        }
    };
    run_window(rec, load, spec, &w, start, op).await
}
