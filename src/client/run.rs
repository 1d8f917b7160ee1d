//! The client as a process: one executor per CPU, each with its own SOCKS5
//! listener and its own pool of sessions, until SIGINT or SIGTERM.

use std::rc::Rc;

use futures_lite::future;
use glommio::net::TcpListener;
use log::{debug, info, warn};

use super::options::{ClientOptions, ClientSettled};
use super::{inbound, ClientConfig, SessionPool};
use crate::cli::{self, Fatal};
use crate::plumbing::Event;
use crate::runtime::{self, Executors};

/// Serves local SOCKS5 and HTTP proxy connections from `listener` through `pool` until `stop`.
pub async fn serve(listener: TcpListener, pool: Rc<SessionPool>, stop: Rc<Event>) {
    glommio::spawn_local(pool.clone().maintain()).detach();
    let serve = |conn| {
        let pool = pool.clone();
        glommio::spawn_local(async move {
            match inbound::serve(conn, pool).await {
                Err(e) if e.is_upstream() => warn!("{e}"),
                Err(e) => debug!("local connection: {e}"),
                Ok(()) => {}
            }
        })
        .detach();
    };
    let accept = runtime::accept_each(&listener, serve, |e| debug!("accept failed: {e}"));
    future::or(accept, stop.wait()).await;
}

/// Runs the client `options` describe until SIGINT or SIGTERM.
pub fn run(options: &ClientOptions) -> Result<(), Fatal> {
    let ClientSettled {
        listen,
        config,
        pool,
        cpus,
    } = options.settle()?;
    let stop = cli::stop_signals()?;
    let server = config.server;
    // ClientConfig holds an Rc (the shared padding scheme): each executor builds its own.
    let (tls, server_name, password, connect_timeout) = (
        config.tls.clone(),
        config.server_name.clone(),
        config.password,
        config.connect_timeout,
    );
    let executors = Executors::start("anytls-client", listen, &cpus, move |_, listener, stop| {
        let mut config =
            ClientConfig::from_parts(server, server_name.clone(), tls.clone(), password);
        config.connect_timeout = connect_timeout;
        serve(
            listener,
            Rc::new(SessionPool::new(config, pool.clone())),
            stop,
        )
    })?;
    info!(
        "SOCKS5 and HTTP proxy listening on {} -> AnyTLS server {server} ({} executor(s) on CPU(s) {cpus:?})",
        executors.local_addr(),
        cpus.len()
    );
    stop.wait();
    info!("signal received: stopping");
    drop(executors);
    Ok(())
}
