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
use crate::node::{Node, Served};
use crate::runtime::preflight;

/// How often memory freed by closed connections is handed back to the kernel.
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Starts the server the command line (and its config file) describe, and serves
/// until SIGINT or SIGTERM.
pub fn run(invocation: &Invocation) -> Result<(), Fatal> {
    // Logged once the configuration holds, so an error line comes alone.
    let (descriptor_limit, descriptor_note) = match preflight::raise_descriptor_limit() {
        Ok((before, after)) if before < after => (
            after,
            Ok(format!(
                "descriptor limit raised from {before} to its hard limit {after}"
            )),
        ),
        Ok((_, after)) => (after, Ok(format!("descriptor limit {after}"))),
        Err(e) => (
            1024,
            Err(format!("cannot read or raise the descriptor limit: {e}")),
        ),
    };
    let Settled {
        mut config,
        mut certificate_note,
        reloader,
        stats_interval,
        credentials,
        public_host,
        server_name,
        certificate_name,
        self_signed,
        print_links,
        qr,
        node,
        acme,
    } = invocation.settle(descriptor_limit)?;
    let mut links = LinkSource {
        pin: self_signed.then(|| reloader.pin()),
        credentials,
        public_host,
        server_name,
        certificate_name,
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
    match descriptor_note {
        Ok(note) => info!("{note}"),
        Err(note) => warn!("{note}"),
    }
    info!(
        "outbound connections capped at {} (descriptor limit {descriptor_limit})",
        config.pool.max_outbound
    );
    // Handlers are registered before any executor thread starts.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let signal_handle = signals.handle();
    let (sender, received) = mpsc::channel();
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if sender.send(signal).is_err() {
                return;
            }
        }
    });
    let node = match node {
        Some(settings) => {
            let mut node = Node::new(settings)?;
            // Until the panel answers only a stop signal is acted on.
            let wait = |pause: Duration| match received.recv_timeout(pause) {
                Ok(SIGHUP) | Err(RecvTimeoutError::Timeout) => true,
                Ok(_) | Err(RecvTimeoutError::Disconnected) => false,
            };
            let Some(first) = node.first_contact(wait)? else {
                signal_handle.close();
                forwarder.join().ok();
                info!("signal received before the panel answered: stopped");
                return Ok(());
            };
            config.listen.set_port(first.config.server_port as u16);
            if let Some(padding) = first.padding {
                config.padding.store(padding);
            }
            config.routes.store(first.routes);
            config.users.store(first.users);
            if let (true, Some(name)) = (self_signed, first.config.tls_server_name()) {
                certificate_note = reloader.serve_self_signed_for(&name)?;
                links.pin = Some(reloader.pin());
            }
            Some(node)
        }
        None => None,
    };
    let challenges = config.acme_challenges.clone();
    let server = Server::start(config)?;
    info!("{certificate_note}");
    if let (Some(acme), Some(challenges)) = (acme, challenges) {
        // After the listeners: TLS-ALPN-01 is answered on them.
        crate::acme::spawn(acme, reloader.certificate_slot(), challenges)?;
    }
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
    let node = node.map(|node| {
        let served = Served {
            users: server.config().users.clone(),
            padding: server.config().padding.clone(),
            routes: server.config().routes.clone(),
            stats: server.stats().clone(),
            sessions: server.sessions().clone(),
        };
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("anytls-node".into())
            .spawn(move || node.run(served, stopped))
            .expect("the node thread starts");
        (stop, thread)
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
    if let Some((stop, thread)) = node {
        info!("pushing the traffic not yet pushed to the panel");
        stop.send(()).ok();
        thread.join().ok();
    }
    info!("stopped");
    Ok(())
}
