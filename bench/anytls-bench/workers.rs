//! Pinned glommio executors: one std thread per generator CPU, each making its
//! own executor (`Placement::Fixed`) and running its share of the load, while
//! the main thread (never an executor) draws the progress line and waits.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use indicatif::{ProgressBar, ProgressStyle};

use crate::stats::Live;

/// io_uring buffer memory per executor.
const IO_MEMORY: usize = 256 * 1024;

/// What one executor is told about itself.
#[derive(Clone)]
pub struct Worker {
    /// 0-based index among the run's executors.
    pub index: usize,
    /// How many executors run this load.
    pub count: usize,
    /// Counters the progress line reads.
    pub live: Arc<Live>,
}

/// Starts an executor pinned to `cpu` on a new thread named `name` and runs the
/// future made by `make` there (the future may be `!Send`; only `make` travels).
pub fn spawn_executor<F, Fut, T>(name: String, cpu: usize, make: F) -> JoinHandle<Result<T, String>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let executor = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .io_memory(IO_MEMORY)
            .make()
            .map_err(|e| format!("cannot start an executor on CPU {cpu}: {e}"))?;
        Ok(executor.run(make()))
    });
    match spawned {
        Ok(handle) => handle,
        Err(e) => {
            let message = format!("cannot spawn a thread: {e}");
            std::thread::spawn(move || Err(message))
        }
    }
}

/// Waits for a thread started by [`spawn_executor`].
pub fn join<T>(handle: JoinHandle<Result<T, String>>) -> Result<T, String> {
    handle
        .join()
        .map_err(|_| "an executor thread panicked".to_owned())?
}

/// Runs `load` on one executor per CPU in `cpus` and returns each one's result.
/// `tick` runs on the main thread about every 50 ms until all are done (progress
/// line, idle's measurement).
pub fn run<F, Fut, T>(
    cpus: &[usize],
    live: &Arc<Live>,
    load: F,
    mut tick: impl FnMut(),
) -> Result<Vec<T>, String>
where
    F: Fn(Worker) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = cpus
        .iter()
        .enumerate()
        .map(|(index, &cpu)| {
            let worker = Worker {
                index,
                count: cpus.len(),
                live: live.clone(),
            };
            let load = load.clone();
            spawn_executor(format!("bench-gen-{index}"), cpu, move || load(worker))
        })
        .collect();
    while !handles.iter().all(|h| h.is_finished()) {
        tick();
        std::thread::sleep(Duration::from_millis(50));
    }
    tick();
    handles.into_iter().map(join).collect()
}

/// Runs shorter than this never draw a progress line.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

/// The live progress line on stderr: drawn only on a terminal, and only once
/// the run has lasted [`PROGRESS_AFTER`].
pub struct Progress {
    enabled: bool,
    bar: RefCell<Option<ProgressBar>>,
    label: String,
    started: Instant,
}

impl Progress {
    /// A progress line for `label`; never drawn unless `enabled`.
    pub fn new(label: &str, enabled: bool) -> Progress {
        Progress {
            enabled,
            bar: RefCell::new(None),
            label: label.to_owned(),
            started: Instant::now(),
        }
    }

    /// Redraws the line from the live counters.
    pub fn update(&self, live: &Live) {
        let elapsed = self.started.elapsed();
        if !self.enabled || elapsed < PROGRESS_AFTER {
            return;
        }
        let mut bar = self.bar.borrow_mut();
        let bar = bar.get_or_insert_with(|| {
            let bar = ProgressBar::new_spinner().with_elapsed(elapsed);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        let (ok, bytes, errors) = live.read();
        let secs = elapsed.as_secs_f64();
        let mut message = format!(
            "{}: {ok} ok ({:.0}/s), {errors} errors",
            self.label,
            ok as f64 / secs
        );
        if bytes > 0 {
            message += &format!(
                ", {:.1} MB ({:.1} MB/s)",
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / secs
            );
        }
        bar.set_message(message);
        bar.tick();
    }

    /// Removes the line.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}
