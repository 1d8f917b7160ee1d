//! Node mode: serving the users and settings a panel gives (Xboard's UniProxy
//! API, [`api`]), and telling the panel each user's traffic ([`ledger`]), the
//! addresses each user is online from, and this machine's load ([`host`]).
//!
//! Everything here runs on one control thread of its own, never on an executor:
//! it changes the running server only through the values every core reads
//! ([`crate::reloadable::Reloadable`] users, padding scheme and [`routes`]) and the
//! cross-core session counts, so the data path never waits for the panel.
//!
//! At start, [`Node::first_contact`] asks the panel for the config and the users
//! (retrying with back-off until it answers; the server serves nothing
//! meanwhile). Then [`Node::run`] pulls both every `pull_interval` (with
//! `If-None-Match`) and pushes traffic, online addresses and status every
//! `push_interval`, writing what is not pushed yet to the state file each time;
//! when told to stop it pushes once more and writes the file.

pub mod api;
pub mod host;
pub mod ledger;
pub mod routes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::accounts::{AccountSpec, Accounts};
use crate::limits::{FleetDevices, SessionLimits};
use crate::proto::PaddingScheme;
use crate::reloadable::Reloadable;
use crate::speed_limit::mbps_to_bytes;
use crate::stats::Stats;
use api::{Fetched, NodeConfig, PanelClient, PanelError, PanelUser};
use host::HostSampler;
use ledger::{Ledger, StateError, StateFile};
use routes::RouteRules;

/// The interval used when the panel names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The first wait before asking an unreachable panel again; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two tries at start.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why node mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The state file exists but cannot be used; it is left as it is.
    #[error("{0} (fix or remove it: it holds traffic not yet pushed)")]
    State(#[from] StateError),
    /// The panel's first answer cannot be served.
    #[error("the panel's config cannot be served: {0}")]
    Config(String),
}

/// Node mode's settings (`--panel-url`, `--panel-token`, `--node-id`).
#[derive(Clone)]
pub struct NodeSettings {
    /// The panel's base URL, without a trailing `/`.
    pub panel_url: String,
    /// The panel's server token.
    pub token: String,
    /// This node's id.
    pub node_id: u64,
    /// Where the traffic not yet pushed is kept.
    pub state_file: PathBuf,
}

impl std::fmt::Debug for NodeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSettings")
            .field("panel_url", &self.panel_url)
            .field("token", &"<hidden>")
            .field("node_id", &self.node_id)
            .field("state_file", &self.state_file)
            .finish()
    }
}

/// The running server's values the node changes.
pub struct Served {
    /// The users every core authenticates against.
    pub users: Reloadable<Accounts>,
    /// The padding scheme sessions are told.
    pub padding: Reloadable<PaddingScheme>,
    /// The routes every stream is checked against.
    pub routes: Reloadable<RouteRules>,
    /// The traffic counters.
    pub stats: Stats,
    /// The cross-core session counts, and the addresses users are online from.
    pub sessions: Arc<SessionLimits>,
}

/// What the panel said first, to start the server with.
pub struct FirstContact {
    /// `GET config`.
    pub config: NodeConfig,
    /// The users, as accounts.
    pub users: Accounts,
    /// The padding scheme from the config (`None`: the panel names none).
    pub padding: Option<PaddingScheme>,
    /// The routes from the config.
    pub routes: RouteRules,
}

/// A node's conversation with its panel.
pub struct Node {
    panel: PanelClient,
    settings: NodeSettings,
    push_every: Duration,
    pull_every: Duration,
    config_etag: Option<String>,
    users_etag: Option<String>,
    /// The config being served.
    serving: Option<NodeConfig>,
    ledger: Ledger,
    host: HostSampler,
    /// The addresses the panel was last told each user is online from.
    reported: HashMap<String, HashSet<IpAddr>>,
    /// Whether the last pull or push failed (a panel that went away is logged
    /// once per interval, and its return once).
    panel_failing: bool,
}

impl Node {
    /// A node for `settings`, owing what its state file says was not pushed.
    pub fn new(settings: NodeSettings) -> Result<Node, NodeError> {
        let state = StateFile::load(&settings.state_file)?;
        let carried = if state.pending.is_empty() || state.node_id == settings.node_id {
            state.pending
        } else {
            warn!(
                "state file {} belongs to node {}, not {}: its traffic is not pushed",
                settings.state_file.display(),
                state.node_id,
                settings.node_id
            );
            Default::default()
        };
        if !carried.is_empty() {
            let bytes: u64 = carried.values().map(|[up, down]| up + down).sum();
            info!(
                "state file {}: {bytes} bytes of {} user(s) not pushed by the last run; pushed first",
                settings.state_file.display(),
                carried.len()
            );
        }
        Ok(Node {
            panel: PanelClient::new(&settings.panel_url, &settings.token, settings.node_id),
            ledger: Ledger::new(&carried),
            settings,
            push_every: DEFAULT_INTERVAL,
            pull_every: DEFAULT_INTERVAL,
            config_etag: None,
            users_etag: None,
            serving: None,
            host: HostSampler::default(),
            reported: HashMap::new(),
            panel_failing: false,
        })
    }

    /// Asks the panel for the config and the users until it answers both;
    /// `wait(d)` sleeps `d` between tries and says whether to go on (false: the
    /// process was told to stop).
    pub fn first_contact(
        &mut self,
        mut wait: impl FnMut(Duration) -> bool,
    ) -> Result<Option<FirstContact>, NodeError> {
        let mut backoff = FIRST_BACKOFF;
        let mut said = false;
        loop {
            let asked = Instant::now();
            match self.fetch_all() {
                Ok((config, users)) => {
                    debug!(
                        "panel: config and {} user(s) fetched in {:?}",
                        users.len(),
                        asked.elapsed()
                    );
                    if said {
                        info!("panel {}: answered; starting", self.settings.panel_url);
                    }
                    return self.first(config, users).map(Some);
                }
                Err(e) => {
                    if !said {
                        warn!(
                            "panel {}: {e}; serving nothing until it answers (asking again with back-off up to {MAX_BACKOFF:?})",
                            self.settings.panel_url
                        );
                        said = true;
                    } else {
                        debug!("panel {}: {e}", self.settings.panel_url);
                    }
                }
            }
            if !wait(backoff) {
                return Ok(None);
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn fetch_all(&mut self) -> Result<(NodeConfig, Vec<PanelUser>), PanelError> {
        let Fetched::Changed(config, config_etag) = self.panel.config(None)? else {
            return Err(PanelError::Invalid {
                call: "config",
                why: "304 to a request without If-None-Match".into(),
            });
        };
        let Fetched::Changed(users, users_etag) = self.panel.users(None)? else {
            return Err(PanelError::Invalid {
                call: "user",
                why: "304 to a request without If-None-Match".into(),
            });
        };
        self.config_etag = config_etag;
        self.users_etag = users_etag;
        Ok((config, users))
    }

    fn first(
        &mut self,
        config: NodeConfig,
        users: Vec<PanelUser>,
    ) -> Result<FirstContact, NodeError> {
        if config.server_port == 0 || config.server_port > u64::from(u16::MAX) {
            return Err(NodeError::Config(format!(
                "server_port {} is not a port",
                config.server_port
            )));
        }
        self.set_intervals(&config);
        let padding = match &config.padding_scheme {
            Some(lines) if !lines.is_empty() => Some(
                PaddingScheme::for_clients(lines.join("\n").as_bytes())
                    .map_err(|e| NodeError::Config(format!("padding_scheme: {e}")))?,
            ),
            _ => None,
        };
        let routes = self.routes_of(&config);
        let built = Instant::now();
        let specs = specs_of(&users);
        let (users, _) = Accounts::default()
            .succeeded_by(&specs)
            .map_err(|e| NodeError::Config(e.to_string()))?;
        if users.is_empty() {
            warn!(
                "panel lists no users for node {} yet",
                self.settings.node_id
            );
        }
        if config.cert_config.is_some() {
            info!("panel's cert_config is not used: the certificate comes from --cert/--key, --acme-domain, or is self-signed");
        }
        info!(
            "node {} of panel {}: port {}, {} user(s) (made ready in {:?}), pull every {:?}, push every {:?}",
            self.settings.node_id,
            self.settings.panel_url,
            config.server_port,
            users.len(),
            built.elapsed(),
            self.pull_every,
            self.push_every
        );
        self.serving = Some(config.clone());
        Ok(FirstContact {
            config,
            users,
            padding,
            routes,
        })
    }

    fn set_intervals(&mut self, config: &NodeConfig) {
        let seconds = |n: u64| match n {
            0 => DEFAULT_INTERVAL,
            n => Duration::from_secs(n),
        };
        if let Some(base) = &config.base_config {
            self.push_every = seconds(base.push_interval);
            self.pull_every = seconds(base.pull_interval);
        }
    }

    fn routes_of(&self, config: &NodeConfig) -> RouteRules {
        let (routes, ignored) = RouteRules::from_routes(config.routes.as_deref().unwrap_or(&[]));
        for line in ignored {
            warn!("panel routes: {line}");
        }
        routes
    }

    /// Pulls and pushes until `stop` says so (or is dropped), then pushes once
    /// more and writes the state file.
    pub fn run(mut self, served: Served, stop: Receiver<()>) {
        let mut next_pull = Instant::now() + self.pull_every;
        let mut next_push = Instant::now() + self.push_every;
        loop {
            let wake = next_pull.min(next_push);
            match stop.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= next_pull {
                self.pull(&served);
                next_pull = Instant::now() + self.pull_every;
            }
            if now >= next_push {
                self.push(&served);
                next_push = Instant::now() + self.push_every;
            }
        }
        if self.push_traffic(&served).is_ok() {
            info!("panel: traffic pushed before stopping");
        }
        self.save_state(&served);
    }

    /// One pull: the config and the users, each only if changed.
    fn pull(&mut self, served: &Served) {
        let config = self.panel.config(self.config_etag.as_deref());
        let users = self.panel.users(self.users_etag.as_deref());
        match (config, users) {
            (Ok(config), Ok(users)) => {
                self.panel_is_back();
                if let Fetched::Changed(config, etag) = config {
                    self.config_etag = etag;
                    self.apply_config(config, served);
                }
                if let Fetched::Changed(users, etag) = users {
                    self.users_etag = etag;
                    self.apply_users(&users, served);
                }
            }
            (Err(e), _) | (_, Err(e)) => self.panel_failed("pull", &e),
        }
    }

    fn apply_config(&mut self, config: NodeConfig, served: &Served) {
        let before = self.serving.take();
        if let Some(before) = &before {
            if before.server_port != config.server_port {
                warn!(
                    "panel: server_port is now {} (serving {}): restart the node to serve it",
                    config.server_port, before.server_port
                );
            }
            if before.tls_server_name() != config.tls_server_name() {
                warn!("panel: server_name changed: restart the node to serve it");
            }
        }
        self.set_intervals(&config);
        match &config.padding_scheme {
            Some(lines) if !lines.is_empty() => {
                match PaddingScheme::for_clients(lines.join("\n").as_bytes()) {
                    Ok(scheme) if scheme.md5_hex() != served.padding.load().md5_hex() => {
                        info!(
                            "panel: new padding scheme (md5 {}), sent to every open session",
                            scheme.md5_hex()
                        );
                        served.padding.store(scheme);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!("panel: padding_scheme not used ({e}); keeping the current one")
                    }
                }
            }
            _ => {}
        }
        if before.as_ref().map(|b| &b.routes) != Some(&config.routes) {
            let routes = self.routes_of(&config);
            info!("panel: {} route rule(s) in force", routes.len());
            served.routes.store(routes);
        }
        self.serving = Some(config);
    }

    fn apply_users(&mut self, users: &[PanelUser], served: &Served) {
        let started = Instant::now();
        let specs = specs_of(users);
        let current = served.users.load();
        match current.succeeded_by(&specs) {
            Ok((accounts, changes)) => {
                let count = accounts.len();
                served.users.store(accounts);
                info!(
                    "panel: {count} user(s): {} added, {} removed (their sessions are closed), {} with new limits; applied in {:?}",
                    changes.added.len(),
                    changes.removed.len(),
                    changes.limits_changed.len(),
                    started.elapsed()
                );
            }
            Err(e) => warn!("panel: user list not used ({e}); keeping the current one"),
        }
    }

    /// One push: traffic, then online addresses (and the fleet's device counts
    /// if any user has a device limit), then status; the state file after.
    fn push(&mut self, served: &Served) {
        let traffic = self.push_traffic(served);
        self.save_state(served);
        let alive = self.push_alive(served);
        let status = self.push_status();
        match traffic.and(alive).and(status) {
            Ok(()) => self.panel_is_back(),
            Err(e) => self.panel_failed("push", &e),
        }
    }

    fn push_traffic(&mut self, served: &Served) -> Result<(), PanelError> {
        let totals = served.stats.user_bytes();
        let owed = self.ledger.owed(&totals);
        if owed.is_empty() {
            return Ok(());
        }
        let bytes: u64 = owed.values().map(|[up, down]| up + down).sum();
        match self.panel.push(&owed) {
            Ok(()) => {
                self.ledger.accepted(&totals);
                debug!("panel: pushed {bytes} bytes of {} user(s)", owed.len());
                Ok(())
            }
            Err(e) => {
                warn!(
                    "panel: push of {bytes} bytes of {} user(s) failed: {e}; kept for the next push{}",
                    owed.len(),
                    if e.may_have_applied() {
                        " (if the panel applied it anyway, these bytes will count twice)"
                    } else {
                        ""
                    }
                );
                Err(e)
            }
        }
    }

    fn save_state(&self, served: &Served) {
        let state = StateFile {
            node_id: self.settings.node_id,
            pending: self.ledger.owed(&served.stats.user_bytes()),
        };
        if let Err(e) = state.save(&self.settings.state_file) {
            warn!("{e}: traffic not yet pushed would be lost by a crash");
        }
    }

    fn push_alive(&mut self, served: &Served) -> Result<(), PanelError> {
        let online = served.sessions.online_addresses();
        let alive: BTreeMap<String, Vec<String>> = online
            .iter()
            .map(|(user, ips)| {
                // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
                let ips = ips.iter().map(|ip| ip.to_canonical().to_string());
                (user.clone(), ips.collect())
            })
            .collect();
        self.panel.alive(&alive)?;
        self.reported = online
            .into_iter()
            .map(|(user, ips)| (user, ips.into_iter().collect()))
            .collect();
        if !served
            .users
            .load()
            .iter()
            .any(|a| a.device_limit().is_some())
        {
            return Ok(());
        }
        let counts = self.panel.alive_list()?;
        let fleet = counts
            .into_iter()
            .map(|(user, online)| {
                let reported = self.reported.get(&user).cloned().unwrap_or_default();
                (
                    user,
                    FleetDevices {
                        online: online as usize,
                        reported,
                    },
                )
            })
            .collect();
        served.sessions.set_fleet(fleet);
        Ok(())
    }

    fn push_status(&mut self) -> Result<(), PanelError> {
        match self.host.sample() {
            Ok(status) => self.panel.status(&status),
            Err(e) => {
                debug!("status not sent: {e}");
                Ok(())
            }
        }
    }

    fn panel_failed(&mut self, what: &str, e: &PanelError) {
        let interval = if what == "pull" {
            self.pull_every
        } else {
            self.push_every
        };
        warn!(
            "panel {}: {what} failed: {e}; serving the last users it gave, trying again in {interval:?}",
            self.settings.panel_url
        );
        self.panel_failing = true;
    }

    fn panel_is_back(&mut self) {
        if std::mem::take(&mut self.panel_failing) {
            info!("panel {}: answering again", self.settings.panel_url);
        }
    }
}

/// The panel's users as accounts: named by id, the uuid as password, Mbit/s as
/// bytes per second. A user listed twice (by id or uuid) keeps its first entry.
fn specs_of(users: &[PanelUser]) -> Vec<AccountSpec> {
    let mut ids = HashSet::with_capacity(users.len());
    let mut uuids = HashSet::with_capacity(users.len());
    let mut dropped = 0;
    let specs = users
        .iter()
        .filter(|user| {
            let fresh =
                !user.uuid.is_empty() && ids.insert(user.id) && uuids.insert(user.uuid.as_str());
            dropped += usize::from(!fresh);
            fresh
        })
        .map(|user| AccountSpec {
            name: user.id.to_string(),
            password: user.uuid.clone(),
            speed_limit: mbps_to_bytes(user.speed_limit),
            device_limit: u32::try_from(user.device_limit).unwrap_or(u32::MAX),
        })
        .collect();
    if dropped > 0 {
        warn!(
            "panel: {dropped} user(s) with an empty uuid, or an id or uuid listed before, left out"
        );
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_users_become_accounts_named_by_id() {
        let user = |id, uuid: &str, speed, devices| PanelUser {
            id,
            uuid: uuid.to_owned(),
            speed_limit: speed,
            device_limit: devices,
        };
        let specs = specs_of(&[
            user(1, "u-1", 10, 0),
            user(2, "u-2", 0, 3),
            user(1, "u-3", 0, 0),
            user(4, "u-2", 0, 0),
            user(5, "", 0, 0),
        ]);
        assert_eq!(
            specs,
            vec![
                AccountSpec {
                    speed_limit: 1_250_000,
                    ..AccountSpec::new("1", "u-1")
                },
                AccountSpec {
                    device_limit: 3,
                    ..AccountSpec::new("2", "u-2")
                },
            ]
        );
    }
}
