//! The process around a running [`Server`]: it is started from [`ServerOptions`],
//! then the calling thread waits for signals (SIGINT and SIGTERM stop the server,
//! SIGHUP reloads the users and padding scheme files) and, between them, writes
//! the periodic statistics lines and hands memory freed by closed connections back
//! to the kernel. This is all a binary needs to call.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use log::{info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::links::{self, LinkSource};
use super::Server;
use crate::cli::{return_free_memory, Fatal};
use crate::config::{Invocation, Settled};
use crate::runtime::preflight;

/// How often memory freed by closed connections is handed back to the kernel.
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Starts the server the command line (and its config file) describe, and serves
/// until SIGINT or SIGTERM.
pub fn run(invocation: &Invocation) -> Result<(), Fatal> {
    let descriptor_limit = match preflight::raise_descriptor_limit() {
        Ok((before, after)) => {
            if before < after {
                info!("descriptor limit raised from {before} to its hard limit {after}");
            } else {
                info!("descriptor limit {after}");
            }
            after
        }
        Err(e) => {
            warn!("cannot read or raise the descriptor limit: {e}");
            1024
        }
    };
    let Settled {
        config,
        certificate_note,
        reloader,
        stats_interval,
        credentials,
        public_host,
        self_signed,
        print_links,
        qr,
    } = invocation.settle(descriptor_limit)?;
    let links = LinkSource {
        credentials,
        public_host,
        self_signed,
    };
    if print_links {
        for link in links::share_links(&links, config.listen)? {
            println!("{}: {}", link.user, link.link);
            if qr {
                println!("{}", links::qr(&link.link));
            }
        }
        return Ok(());
    }
    info!(
        "outbound connections capped at {} (descriptor limit {descriptor_limit})",
        config.pool.max_outbound
    );
    // Handlers are registered before any executor thread starts.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let signal_handle = signals.handle();
    let server = Server::start(config)?;
    info!("{certificate_note}");
    server.log_started();
    match links::share_links(&links, server.local_addr()) {
        Ok(links) => {
            for link in links {
                info!("link for user {}: {}", link.user, link.link);
                if qr {
                    println!("{}: {}\n{}", link.user, link.link, links::qr(&link.link));
                }
            }
        }
        Err(why) => info!("{why}"),
    }
    let (sender, received) = mpsc::channel();
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if sender.send(signal).is_err() {
                return;
            }
        }
    });
    let report_every = (stats_interval > 0).then(|| Duration::from_secs(stats_interval));
    let mut next_report = report_every.map(|every| Instant::now() + every);
    let mut next_trim = Instant::now() + MEMORY_TRIM_INTERVAL;
    loop {
        let wake = next_report.map_or(next_trim, |report| report.min(next_trim));
        match received.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(SIGHUP) => reloader.reload(),
            Ok(_) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if now >= next_trim {
            return_free_memory();
            next_trim = now + MEMORY_TRIM_INTERVAL;
        }
        if let (Some(at), Some(every)) = (next_report, report_every) {
            if now >= at {
                for line in server.report_lines() {
                    info!("{line}");
                }
                next_report = Some(at + every);
            }
        }
    }
    signal_handle.close();
    forwarder.join().ok();
    info!("signal received: closing sessions");
    server.shutdown();
    info!("stopped");
    Ok(())
}
