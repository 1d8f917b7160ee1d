//! `throughput`: N long-lived streams over M sessions moving bulk data up (to a
//! sink), down (from a source) or both (through an echo); MB/s of payload over
//! the wall time of the transfer (connecting and opening are not timed). Flat
//! out, or at a fixed offered load (`--rate-mbps`, for the server's CPU at that
//! load): each stream's writer, or for download the source target on each
//! connection, is paced to its share ([`Pacer`]).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anytls::client::{ClientSession, ClientStream, StreamError};
use anytls::plumbing::{timeout, Event};
use futures_lite::future;

use super::{
    budget_for, connect, left, share_of, stream_ended, unless, Context, Direction, Scenario,
    LOAD_HELD,
};
use crate::pace::Pacer;
use crate::report::Report;
use crate::stats::{Budget, Failed, Failure, Recorder, Tally};
use crate::targets::Behaviour;
use crate::workers::Worker;

/// Runs the scenario on every generator executor and reports.
pub fn run(ctx: &Arc<Context>) -> Result<Report, String> {
    let shared = ctx.clone();
    let measured = ctx.run_load("throughput", move |w| worker(shared.clone(), w))?;
    let spec = &ctx.spec;
    let tally = &measured.tally;
    let secs = tally.wall().as_secs_f64();
    let rate = |bytes: u64| {
        if secs > 0.0 {
            bytes as f64 / secs / 1e6
        } else {
            0.0
        }
    };
    let mut report = Report::new(Scenario::Throughput.name(), tally);
    report
        .param("direction", spec.direction.name())
        .param("streams", spec.streams)
        .param("sessions", spec.sessions_for(Scenario::Throughput))
        .param("chunk_size", spec.chunk_size);
    if let Some(mb) = spec.rate_mbps {
        report.param("rate_mbps", mb);
    }
    ctx.common_params(&mut report);
    report.figure(
        "throughput",
        rate(tally.bytes_up + tally.bytes_down),
        "MB/s",
    );
    match spec.direction {
        Direction::Up => {
            report.figure("upload", rate(tally.bytes_up), "MB/s");
        }
        Direction::Down => {
            report.figure("download", rate(tally.bytes_down), "MB/s");
        }
        Direction::Both => {
            report
                .figure("upload", rate(tally.bytes_up), "MB/s")
                .figure("download (echoed)", rate(tally.bytes_down), "MB/s")
                .note("throughput counts echoed bytes twice: once up, once down");
        }
    }
    report
        .figure(
            "payload moved",
            (tally.bytes_up + tally.bytes_down) as f64 / 1e6,
            "MB",
        )
        .figure("wall time", secs, "s")
        .figure("streams established", tally.ok as f64, "");
    measured.cpu_figures(&mut report);
    if let Some(offered) = spec.rate_mbps {
        // What the paced side sent: the client up (and for both), the source down.
        let sent = match spec.direction {
            Direction::Up | Direction::Both => tally.bytes_up,
            Direction::Down => tally.bytes_down,
        };
        let achieved = rate(sent);
        if achieved < offered * LOAD_HELD {
            report.note(format!(
                "the offered load was not held: {achieved:.1} of {offered} MB/s sent; \
                 the server CPU is then what it managed, not what {offered} MB/s costs"
            ));
        }
    }
    report.succeeded = tally.bytes_up + tally.bytes_down > 0;
    Ok(report)
}

async fn worker(ctx: Arc<Context>, w: Worker) -> Tally {
    let rec = Rc::new(Recorder::new(w.live.clone()));
    let spec = &ctx.spec;
    let streams = share_of(&w, spec.streams, 0);
    if streams == 0 {
        return rec.take();
    }
    let behaviour = match spec.direction {
        Direction::Up => Behaviour::Sink,
        Direction::Down => Behaviour::Source {
            bytes_per_sec: spec.stream_bytes_per_sec(),
        },
        Direction::Both => Behaviour::Echo,
    };
    let target = match ctx.target(behaviour) {
        Ok(target) => target,
        Err(failed) => {
            rec.fail(failed);
            return rec.take();
        }
    };

    let config = ctx.client_config();
    let setup = Instant::now() + spec.op_timeout();
    let mut sessions = Vec::new();
    for _ in 0..share_of(&w, spec.sessions_for(Scenario::Throughput), 1).min(streams) {
        match timeout(left(setup), connect(&config)).await {
            Some(Ok(session)) => sessions.push(Rc::new(session)),
            Some(Err(failed)) => rec.fail(failed),
            None => rec.fail(Failed::new(Failure::Timeout, "connect timed out")),
        }
    }
    if sessions.is_empty() {
        return rec.take();
    }
    let opened: Vec<_> = (0..streams)
        .filter_map(|i| {
            let session = sessions[i % sessions.len()].clone();
            match session.open_stream(&target) {
                Ok(stream) => Some((session, stream)),
                Err(e) => {
                    rec.fail(Failed::new(Failure::SessionClosed, e));
                    None
                }
            }
        })
        .collect();
    let mut ready = Vec::new();
    let setup = Instant::now() + spec.op_timeout();
    for (session, stream) in opened {
        match timeout(left(setup), stream.established()).await {
            Some(Ok(())) => {
                rec.ok();
                ready.push((session, stream));
            }
            Some(Err(StreamError::Refused(text))) => {
                rec.fail(Failed::new(Failure::Refused, text));
            }
            Some(Err(
                StreamError::SessionClosed | StreamError::NotAnswered | StreamError::SynAckTimeout,
            )) => {
                let why = session.alert().map_or_else(
                    || "session closed before SYNACK (wrong password?)".to_owned(),
                    |a| format!("alert: {a}"),
                );
                rec.fail(Failed::new(Failure::SessionClosed, why));
            }
            None => rec.fail(Failed::new(Failure::Timeout, "no SYNACK")),
        }
    }
    if ready.is_empty() {
        return rec.take();
    }

    let stop = Rc::new(Event::default());
    let budget = budget_for(spec, &w, 1_000_000);
    let chunk: Rc<[u8]> = vec![0x5A; spec.chunk_size as usize].into();
    rec.start_window();
    let limit = spec.run_limit();
    let timer = {
        let stop = stop.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(limit).await;
            stop.set();
        })
    };
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(session, stream)| {
            let bulk = Bulk {
                rec: rec.clone(),
                session,
                stream,
                stop: stop.clone(),
                budget: budget.clone(),
                chunk: chunk.clone(),
                bytes_per_sec: spec.stream_bytes_per_sec(),
            };
            let direction = spec.direction;
            glommio::spawn_local(async move { bulk.run(direction).await })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    rec.end_window();
    drop(timer);
    rec.take()
}

/// One established stream moving bulk data until stopped.
struct Bulk {
    rec: Rc<Recorder>,
    session: Rc<ClientSession>,
    stream: ClientStream,
    stop: Rc<Event>,
    budget: Rc<Budget>,
    chunk: Rc<[u8]>,
    /// The writer's pace (up, both); `None`: flat out. Downloads are paced by
    /// the source target instead.
    bytes_per_sec: Option<f64>,
}

impl Bulk {
    async fn run(&self, direction: Direction) {
        let up = Cell::new(0u64);
        let writer_done = Event::default();
        let writer = async {
            self.write(&up).await;
            writer_done.set();
        };
        match direction {
            Direction::Up => {
                // Only FIN can arrive from a sink: end the stream when it does.
                future::or(writer, self.read(None, &writer_done, &up)).await
            }
            Direction::Down => self.read(Some(&self.budget), &writer_done, &up).await,
            Direction::Both => {
                // The reader decides the end: caught up with the writer, stopped,
                // or the stream ended (then the writer must stop too).
                let writer = async {
                    writer.await;
                    future::pending::<()>().await
                };
                future::or(writer, self.read(None, &writer_done, &up)).await
            }
        }
    }

    async fn write(&self, up: &Cell<u64>) {
        let mut pacer = self
            .bytes_per_sec
            .map(|rate| Pacer::new(rate, self.chunk.len(), Instant::now()));
        loop {
            let n = self.budget.claim(self.chunk.len() as u64) as usize;
            if n == 0 {
                return;
            }
            if let Some(pacer) = &mut pacer {
                let wait = pacer.take(n, Instant::now());
                let stopped = !wait.is_zero()
                    && unless(&self.stop, glommio::timer::sleep(wait))
                        .await
                        .is_none();
                if stopped {
                    return;
                }
            }
            match unless(&self.stop, self.stream.write_all(&self.chunk[..n])).await {
                None => return,
                Some(Ok(())) => {
                    self.rec.up(n);
                    up.set(up.get() + n as u64);
                }
                Some(Err(e)) => {
                    let failed = stream_ended(&self.session, &self.stream, e.to_string()).await;
                    self.rec.fail(failed);
                    return;
                }
            }
        }
    }

    /// Reads until stopped, until `budget` is spent (download), or, once the
    /// writer is done, until everything written came back (echo).
    async fn read(&self, budget: Option<&Budget>, writer_done: &Event, up: &Cell<u64>) {
        enum Step {
            Read(usize),
            Stop,
            WriterDone,
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut down = 0u64;
        loop {
            if writer_done.is_set() && budget.is_none() && down >= up.get() {
                return;
            }
            let other = async {
                if writer_done.is_set() {
                    self.stop.wait().await;
                    Step::Stop
                } else {
                    future::or(
                        async {
                            self.stop.wait().await;
                            Step::Stop
                        },
                        async {
                            writer_done.wait().await;
                            Step::WriterDone
                        },
                    )
                    .await
                }
            };
            let step = future::or(
                async { Step::Read(self.stream.read(&mut buf).await) },
                other,
            )
            .await;
            match step {
                Step::Stop => return,
                Step::WriterDone => continue,
                Step::Read(0) => {
                    let what = format!("{down} bytes received");
                    self.rec
                        .fail(stream_ended(&self.session, &self.stream, what).await);
                    return;
                }
                Step::Read(n) => {
                    self.rec.down(n);
                    down += n as u64;
                    if let Some(budget) = budget {
                        budget.claim(n as u64);
                        if budget.exhausted() {
                            return;
                        }
                    }
                }
            }
        }
    }
}
