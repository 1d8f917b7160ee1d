//! `handshakes`: a new session per operation: TCP connect, TLS handshake,
//! authentication, one stream with one request/response, close. Sessions/s and
//! latency to connected (TLS up, preamble written), to the first response byte
//! and to the whole response.

use std::rc::Rc;
use std::sync::Arc;

use super::streams::per_sec;
use super::{connect, exchange, load_params, run_window, Context, Load, Scenario};
use crate::report::Report;
use crate::stats::{Recorder, Tally};
use crate::workers::Worker;

/// Runs the scenario on every generator executor and reports.
pub fn run(ctx: &Arc<Context>) -> Result<Report, String> {
    let shared = ctx.clone();
    let measured = ctx.run_load("handshakes", move |w| worker(shared.clone(), w))?;
    let spec = &ctx.spec;
    let tally = &measured.tally;
    let secs = tally.wall().as_secs_f64();
    let mut report = Report::new(Scenario::Handshakes.name(), tally);
    report
        .param("request_size", spec.request_size)
        .param("response_size", spec.response_size());
    load_params(spec, &mut report);
    ctx.common_params(&mut report);
    report
        .figure("sessions/s", per_sec(tally.ok, secs), "sessions/s")
        .figure("sessions completed", tally.ok as f64, "")
        .figure("wall time", secs, "s");
    measured.cpu_figures(&mut report);
    Ok(report)
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
    let config = Rc::new(ctx.client_config());
    let request: Rc<[u8]> = vec![0x42; spec.request_size as usize].into();
    let start = rec.start_window();
    let op = move |t0: std::time::Instant| {
        let (config, target, request) = (config.clone(), target.clone(), request.clone());
        async move {
            let session = connect(&config).await?;
            let connected = t0.elapsed();
            let mut timings = exchange(&session, &target, &request, response, t0).await?;
            timings.connect = Some(connected);
            Ok(timings)
        }
    };
    run_window(rec, load, spec, &w, start, op).await
}
