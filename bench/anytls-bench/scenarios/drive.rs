//! The load driver: runs one kind of operation flat out (closed loop,
//! `--concurrency` in flight) or on a fixed schedule (open loop, `--rate`) until
//! the deadline or the budget ends, each operation within --op-timeout, and
//! records every outcome.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{share_of, Spec};
use crate::stats::{Budget, Failed, Failure, Recorder, Tally};
use crate::workers::Worker;

/// Pause after a failed operation, so a dead server does not make a task spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Timings of one successful operation.
#[derive(Default)]
pub struct Timings {
    /// New session: until TCP + TLS were up and the preamble written.
    pub connect: Option<Duration>,
    /// New stream: until its SYNACK (the server reached the target).
    pub open: Option<Duration>,
    /// Until the first response byte.
    pub first_byte: Option<Duration>,
    /// Until the whole response.
    pub complete: Option<Duration>,
    /// Until the HeartResponse (idle).
    pub heartbeat: Option<Duration>,
}

impl Timings {
    fn record(&self, rec: &Recorder) {
        for (name, d) in [
            ("connect", self.connect),
            ("open", self.open),
            ("first_byte", self.first_byte),
            ("complete", self.complete),
            ("heartbeat", self.heartbeat),
        ] {
            if let Some(d) = d {
                rec.latency(name, d);
            }
        }
    }
}

/// How operations are started.
#[derive(Clone, Copy)]
pub enum Load {
    /// `concurrency` loops, each starting the next operation when one ends.
    Closed {
        /// Operations in flight.
        concurrency: usize,
    },
    /// One operation every 1/`rate` seconds whatever the server does.
    Open {
        /// Operations per second.
        rate: f64,
        /// In-flight cap; past it scheduled operations are dropped as "overload".
        max_in_flight: usize,
    },
}

impl Load {
    /// This executor's share of the load from --rate/--concurrency; `None` if
    /// this executor gets none of it.
    pub fn for_worker(spec: &Spec, worker: &Worker) -> Option<Load> {
        match spec.rate {
            Some(rate) => Some(Load::Open {
                rate: rate / worker.count as f64,
                max_in_flight: spec.max_in_flight.div_ceil(worker.count),
            }),
            None => {
                let concurrency = share_of(worker, spec.concurrency, 0);
                (concurrency > 0).then_some(Load::Closed { concurrency })
            }
        }
    }
}

/// Runs `op` (given the operation's reference start time) under `load` until
/// `deadline` or until `budget` runs out; records every outcome in `rec`.
pub async fn drive<F, Fut>(
    rec: Rc<Recorder>,
    load: Load,
    deadline: Instant,
    budget: Rc<Budget>,
    op_timeout: Duration,
    op: F,
) where
    F: Fn(Instant) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<Timings, Failed>> + 'static,
{
    match load {
        Load::Closed { concurrency } => {
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (rec, budget, op) = (rec.clone(), budget.clone(), op.clone());
                    glommio::spawn_local(async move {
                        while Instant::now() < deadline && budget.claim(1) == 1 {
                            let start = Instant::now();
                            if !attempt(&rec, deadline, op_timeout, op(start)).await {
                                glommio::timer::sleep(ERROR_BACKOFF).await;
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
        }
        Load::Open {
            rate,
            max_in_flight,
        } => {
            let in_flight = Rc::new(Cell::new(0usize));
            let start = Instant::now();
            let at = |n: u64| start + Duration::from_secs_f64(n as f64 / rate);
            let mut issued = 0u64;
            'schedule: while Instant::now() < deadline {
                let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
                while issued < due {
                    if budget.claim(1) == 0 {
                        break 'schedule;
                    }
                    let scheduled = at(issued);
                    issued += 1;
                    if in_flight.get() >= max_in_flight {
                        rec.fail(Failed::new(
                            Failure::Overload,
                            format!("{max_in_flight} operations already in flight"),
                        ));
                        continue;
                    }
                    in_flight.set(in_flight.get() + 1);
                    let (rec, in_flight, fut) = (rec.clone(), in_flight.clone(), op(scheduled));
                    glommio::spawn_local(async move {
                        // How late the generator itself started this operation.
                        rec.latency("start_lag", scheduled.elapsed());
                        attempt(&rec, deadline, op_timeout, fut).await;
                        in_flight.set(in_flight.get() - 1);
                    })
                    .detach();
                }
                let next = at(issued).min(deadline);
                glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
            }
            // Every operation is bounded by op_timeout and the deadline.
            while in_flight.get() > 0 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Runs one operation within its time limit and records the outcome; whether it
/// did not fail.
async fn attempt(
    rec: &Recorder,
    deadline: Instant,
    op_timeout: Duration,
    op: impl Future<Output = Result<Timings, Failed>>,
) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    let limit = op_timeout.min(left);
    match anytls::plumbing::timeout(limit, op).await {
        Some(Ok(timings)) => {
            timings.record(rec);
            rec.ok();
            true
        }
        Some(Err(failed)) => {
            rec.fail(failed);
            false
        }
        None if limit < op_timeout => {
            rec.cancelled();
            true
        }
        None => {
            rec.fail(Failed::new(
                Failure::Timeout,
                format!("no answer within {op_timeout:?}"),
            ));
            false
        }
    }
}

/// Runs `op` from `start` to the end of the run (`--duration`/`--max-time`), within
/// this worker's share of `--count`, closes the measured window and returns the tally.
pub async fn run_window<F, Fut>(
    rec: Rc<Recorder>,
    load: Load,
    spec: &Spec,
    worker: &Worker,
    start: Instant,
    op: F,
) -> Tally
where
    F: Fn(Instant) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<Timings, Failed>> + 'static,
{
    drive(
        rec.clone(),
        load,
        start + spec.run_limit(),
        super::budget_for(spec, worker, 1),
        spec.op_timeout(),
        op,
    )
    .await;
    rec.end_window();
    rec.take()
}
