//! Session reuse as the reference client does it (docs/protocol.md §5): a stream takes
//! the newest idle session (highest sequence number) or dials a new one; when the
//! stream ends a healthy session becomes idle again. Periodically, idle sessions
//! older than the idle timeout are closed, keeping the `min_idle` newest, and the
//! kept ones are probed with a heartbeat so dead sessions are dropped.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::debug;

use super::session::{ClientConfig, ClientSession, ConnectError};
use crate::plumbing::timeout;

/// How a [`SessionPool`] keeps sessions.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Idle sessions kept even past the idle timeout (`-m`).
    pub min_idle: usize,
    /// Idle sessions older than this are closed (beyond `min_idle`).
    pub idle_timeout: Duration,
    /// How often the idle sessions are checked.
    pub check_interval: Duration,
    /// Dial a new session for every stream and close it afterwards.
    pub disable_reuse: bool,
    /// A UDP association carried on these sessions ends after this long without a
    /// datagram either way.
    pub udp_idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            min_idle: 5,
            idle_timeout: Duration::from_secs(60),
            check_interval: Duration::from_secs(30),
            disable_reuse: false,
            udp_idle_timeout: DEFAULT_UDP_IDLE_TIMEOUT,
        }
    }
}

/// An association without a datagram either way for this long ends.
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on a heartbeat answer from an idle session.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

struct IdleSession {
    seq: u64,
    session: Rc<ClientSession>,
    since: Instant,
}

/// A session on loan to one stream; give it back with [`SessionPool::release`].
pub struct Lease {
    seq: u64,
    /// The session.
    pub session: Rc<ClientSession>,
}

/// One executor's sessions to one server.
pub struct SessionPool {
    config: ClientConfig,
    settings: PoolSettings,
    /// Ascending by sequence number: the newest is last.
    idle: RefCell<Vec<IdleSession>>,
    next_seq: Cell<u64>,
}

impl SessionPool {
    /// An empty pool.
    pub fn new(config: ClientConfig, settings: PoolSettings) -> SessionPool {
        SessionPool {
            config,
            settings,
            idle: RefCell::default(),
            next_seq: Cell::new(1),
        }
    }

    /// The newest healthy idle session, or a new one.
    pub async fn acquire(&self) -> Result<Lease, ConnectError> {
        if !self.settings.disable_reuse {
            while let Some(idle) = self.idle.borrow_mut().pop() {
                if !idle.session.is_closed() {
                    return Ok(Lease {
                        seq: idle.seq,
                        session: idle.session,
                    });
                }
            }
        }
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let session = ClientSession::connect(&self.config).await?;
        debug!("session {seq} to {} opened", self.config.server);
        Ok(Lease {
            seq,
            session: Rc::new(session),
        })
    }

    /// Returns a session whose stream has ended; a closed one is dropped.
    pub fn release(&self, lease: Lease) {
        if self.settings.disable_reuse || lease.session.is_closed() {
            lease.session.close();
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let at = idle.partition_point(|s| s.seq < lease.seq);
        idle.insert(
            at,
            IdleSession {
                seq: lease.seq,
                session: lease.session,
                since: Instant::now(),
            },
        );
    }

    /// How this pool keeps sessions.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Sessions idle now.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Sessions dialed since the pool was made.
    pub fn sessions_dialed(&self) -> u64 {
        self.next_seq.get() - 1
    }

    /// Closes expired idle sessions beyond the `min_idle` newest, exactly as the
    /// reference does: walking from newest to oldest, recently idle sessions count
    /// towards `min_idle`, expired ones are kept (and their idle time restarted)
    /// while fewer than `min_idle` are kept. Returns the sessions kept.
    pub fn cleanup(&self, now: Instant) -> Vec<Rc<ClientSession>> {
        let mut idle = self.idle.borrow_mut();
        let mut kept = 0;
        let mut survivors = Vec::with_capacity(idle.len());
        for mut entry in idle.drain(..).rev() {
            if entry.session.is_closed() {
                continue;
            }
            if now.duration_since(entry.since) < self.settings.idle_timeout {
                kept += 1;
            } else if kept < self.settings.min_idle {
                entry.since = now;
                kept += 1;
            } else {
                debug!("closing session {} idle since {:?}", entry.seq, entry.since);
                entry.session.close();
                continue;
            }
            survivors.push(entry);
        }
        survivors.reverse();
        let sessions = survivors.iter().map(|e| e.session.clone()).collect();
        *idle = survivors;
        sessions
    }

    /// Runs [`SessionPool::cleanup`] every check interval and probes the kept
    /// sessions with a heartbeat; never returns.
    pub async fn maintain(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(self.settings.check_interval).await;
            for session in self.cleanup(Instant::now()) {
                glommio::spawn_local(async move {
                    if timeout(HEARTBEAT_TIMEOUT, session.heartbeat())
                        .await
                        .is_none()
                    {
                        debug!("idle session missed its heartbeat; closing it");
                        session.close();
                    }
                })
                .detach();
            }
        }
    }
}
