//! What every task on one core shares: the read-only configuration and the
//! core-local state (resolver, outbound pool, counters, shutdown event). Built once
//! per core by [`crate::server`] and handed to each session.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;

use crate::config::ServerConfig;
use crate::limits::{PendingLimits, SessionLimits};
use crate::plumbing::{Event, Throttle};
use crate::pool::dial::Resolver;
use crate::pool::CorePool;
use crate::proto::session::SessionRules;
use crate::speed_limit::CoreCredit;
use crate::stats::{CoreCounters, Limit, Stats, UserCounters};
use crate::tls::HelloChoices;

/// A limit reached is logged at most this often per core and kind.
pub const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What every task on one core shares: read-only config and core-local state.
pub(crate) struct CoreContext {
    pub config: Arc<ServerConfig>,
    /// `config.tls` per ClientHello: cipher-suite order and ALPN.
    pub hello_choices: HelloChoices,
    pub resolver: Resolver,
    pub pool: Rc<CorePool>,
    pub shutdown: Event,
    /// The rules every session of this core follows.
    pub session_rules: Rc<SessionRules>,
    /// Sessions per user and per client address, over all cores.
    pub sessions: Arc<SessionLimits>,
    /// Connections not yet authenticated (or handed to the fallback), over all cores.
    pub pending: Arc<PendingLimits>,
    /// What this core's sessions hold for their targets (see `Session::upload_held`).
    pub upload_held: Cell<usize>,
    /// When each limit was last logged (once per interval, not per connection).
    last_limit_log: [Throttle; Limit::ALL.len()],
    stats: Stats,
    index: usize,
    users: RefCell<HashMap<String, Rc<CoreUser>>>,
}

/// What one core keeps for one user, shared by the user's sessions on it.
pub(crate) struct CoreUser {
    /// The user's traffic on this core.
    pub counters: Arc<UserCounters>,
    /// This core's part of the user's speed limit not spent yet.
    pub credit: CoreCredit,
}

impl CoreContext {
    /// Core `index`'s context, with its own resolver and pool.
    pub fn new(
        index: usize,
        config: Arc<ServerConfig>,
        resolver: Resolver,
        pool: Rc<CorePool>,
        sessions: Arc<SessionLimits>,
        pending: Arc<PendingLimits>,
        stats: Stats,
    ) -> CoreContext {
        CoreContext {
            hello_choices: HelloChoices::new(&config.tls, &config.alpn),
            session_rules: Rc::new(config.session_rules()),
            config,
            resolver,
            pool,
            shutdown: Event::default(),
            sessions,
            pending,
            upload_held: Cell::new(0),
            last_limit_log: Default::default(),
            stats,
            index,
            users: RefCell::default(),
        }
    }

    /// This core's share of `--max-buffered-total-mib`.
    pub fn buffered_share(&self) -> usize {
        self.config.limits.buffered_total / self.config.cpus.len().max(1)
    }

    /// This core's counters.
    pub fn counters(&self) -> &CoreCounters {
        self.stats.core(self.index)
    }

    /// Counts `limit` as reached and logs `what` at most once per
    /// [`LIMIT_LOG_INTERVAL`] for this kind, so a flood cannot flood the log.
    pub fn limit_reached(&self, limit: Limit, what: impl FnOnce() -> String) {
        self.counters().limit_hit(limit);
        self.log_limit(limit, what);
    }

    /// Logs `what` about `limit` at most once per [`LIMIT_LOG_INTERVAL`] for
    /// this kind (without counting it).
    pub fn log_limit(&self, limit: Limit, what: impl FnOnce() -> String) {
        if self.last_limit_log[limit as usize].pass(Instant::now(), LIMIT_LOG_INTERVAL) {
            warn!(
                "{} ({} reached; logged at most every {LIMIT_LOG_INTERVAL:?})",
                what(),
                limit.name()
            );
        }
    }

    /// What this core keeps for `user`.
    pub fn user(&self, user: &str) -> Rc<CoreUser> {
        if let Some(kept) = self.users.borrow().get(user) {
            return kept.clone();
        }
        let kept = Rc::new(CoreUser {
            counters: self.stats.register_user(user),
            credit: CoreCredit::default(),
        });
        self.users
            .borrow_mut()
            .insert(user.to_owned(), kept.clone());
        kept
    }
}
