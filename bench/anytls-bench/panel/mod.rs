//! `anytls-bench panel`: a stand-in for an Xboard panel speaking the UniProxy
//! node API, for the server's node-mode tests and for trying node mode without
//! installing a panel.
//!
//! ```text
//! anytls-bench panel --token TOKEN --users users.txt [--listen 127.0.0.1:0]
//!     [--node-config node.json] [--padding-scheme FILE] [--server-port 443]
//!     [--server-name S] [--push-interval 60] [--pull-interval 60]
//!     [--node-ids 1,2] [--alive-ttl 300] [--verbose]
//! ```
//!
//! It serves `/api/v1/server/UniProxy/{config,user,push,alive,alivelist,status}`
//! with Xboard's answers and error bodies ([`uniproxy`], [`status`],
//! [`xboard`]) from the users file and the config flags ([`inputs`], re-read
//! when the files change). It keeps what nodes report in memory; the test
//! controls under `/admin/` ([`admin`]) show it and make the API fail on demand.
//!
//! Plain threads and blocking sockets ([`http`]): one thread per connection,
//! at most [`MAX_CONNECTIONS`] at once (one more is answered 503 and closed),
//! [`READ_TIMEOUT`] per read. Once listening it prints
//! `panel listening on http://ADDR` on stdout; with --verbose, one line per
//! request on stderr. SIGTERM and SIGINT end it with status 0.

mod admin;
mod http;
mod inputs;
mod status;
mod uniproxy;
mod xboard;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use self::http::{Connection, Next, Request, Response};
use self::inputs::{ConfigDefaults, NodeConfig, Users, Watched};
use self::uniproxy::Endpoint;

/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long one read (or write) on a connection may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `anytls-bench panel`.
#[derive(clap::Args, Debug, Clone)]
pub struct PanelArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(short = 'l', long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The server token nodes must give (`token=` of every request).
    #[arg(long)]
    pub token: String,

    /// The users: one `id:uuid[:speed_limit_mbps[:device_limit]]` per line
    /// (blank lines and # comments skipped), or JSON `{"users":[…]}` when the
    /// file starts with `{`. Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub users: PathBuf,

    /// A JSON object whose keys replace those of the config answer (e.g.
    /// "routes", "padding_scheme", "server_port"). Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub node_config: Option<PathBuf>,

    /// The padding scheme, one line per rule [default: the anytls default,
    /// stop=8 …]. Re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub padding_scheme: Option<PathBuf>,

    /// `server_port` of the config answer.
    #[arg(long, default_value_t = 443, value_name = "P")]
    pub server_port: u16,

    /// `server_name` (and `tls_settings.server_name`) of the config answer.
    #[arg(long, default_value = "", value_name = "S")]
    pub server_name: String,

    /// `base_config.push_interval` of the config answer, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub push_interval: u64,

    /// `base_config.pull_interval` of the config answer, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub pull_interval: u64,

    /// The node ids that exist, comma separated; others get Xboard's "Server
    /// does not exist" [default: every node id].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub node_ids: Vec<String>,

    /// Seconds a reported IP counts in `alivelist` (Xboard: 300).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub alive_ttl: u64,

    /// One line per request on stderr (method, path, status).
    #[arg(long)]
    pub verbose: bool,
}

/// What to do with a connection after a request.
pub enum Action {
    /// Answer, then go on if both sides keep the connection.
    Respond(Response),
    /// Send nothing until the outage of this endpoint ends, then close.
    Hang(Endpoint),
    /// Close at once.
    Close,
}

/// How the endpoints fail during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageMode {
    /// HTTP 500 with Xboard's server error body.
    Error,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// No answer until the outage ends, then the connection is closed.
    Hang,
    /// The connection closed once the request is read.
    Close,
}

impl OutageMode {
    /// The mode's name in `/admin/outage`.
    pub fn name(self) -> &'static str {
        match self {
            OutageMode::Error => "500",
            OutageMode::Garbage => "garbage",
            OutageMode::Hang => "hang",
            OutageMode::Close => "close",
        }
    }
}

/// An outage asked for through `/admin/outage`.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// When it ends.
    pub until: Instant,
    /// How the endpoints fail.
    pub mode: OutageMode,
    /// The one endpoint that fails; all of them when `None`.
    pub only: Option<Endpoint>,
}

/// Traffic pushed since the start.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Per user (the key as pushed): bytes up, bytes down.
    pub totals: BTreeMap<String, (i64, i64)>,
    /// Pushes answered with success.
    pub pushes: u64,
    /// Pushes failed by an outage (not added to the totals).
    pub failed_pushes: u64,
}

/// The IPs a node last reported for one user.
#[derive(Debug, Clone)]
pub struct Devices {
    /// Distinct IPs, ports stripped.
    pub ips: Vec<String>,
    /// When they were reported.
    pub at: Instant,
}

/// The request counters of `/admin/requests`.
pub struct Requests {
    counts: [AtomicU64; Requests::NAMES.len()],
}

impl Requests {
    /// The counters, in the order they are reported: each endpoint (every
    /// request that reached it, whatever the answer), then the 304 answers.
    const NAMES: [&'static str; 8] = [
        "config",
        "user",
        "push",
        "alive",
        "alivelist",
        "status",
        "config_304",
        "user_304",
    ];

    /// All counters at 0.
    fn new() -> Requests {
        Requests {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one request of counter `name` (one of [`Self::NAMES`]).
    pub fn count(&self, name: &str) {
        if let Some(i) = Self::NAMES.iter().position(|&n| n == name) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each counter's name and count.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::NAMES
            .into_iter()
            .zip(&self.counts)
            .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
    }
}

/// The panel's state, shared by the connection threads.
pub struct Panel {
    /// --token.
    pub token: String,
    /// --node-ids, if given.
    pub node_ids: Option<Vec<String>>,
    /// --alive-ttl.
    pub alive_ttl: u64,
    /// --verbose.
    verbose: bool,
    /// The users file.
    users: Mutex<Watched<Users>>,
    /// The config answer.
    pub config: Mutex<NodeConfig>,
    /// What `push` added up.
    pub traffic: Mutex<Traffic>,
    /// What `alive` reported: node id → user id → IPs.
    pub alive: Mutex<BTreeMap<String, BTreeMap<i64, Devices>>>,
    /// The last `status` body of each node.
    pub status: Mutex<BTreeMap<String, Value>>,
    /// Requests per endpoint.
    pub requests: Requests,
    /// The outage in force, if any.
    pub outage: Mutex<Option<Outage>>,
    /// Connections being served.
    connections: AtomicUsize,
}

impl Panel {
    /// Reads the input files named by `args`.
    fn new(args: &PanelArgs) -> Result<Panel, String> {
        let users = Watched::load(&args.users, "users file", inputs::parse_users)?;
        let config = NodeConfig::load(
            ConfigDefaults {
                server_port: args.server_port,
                server_name: args.server_name.clone(),
                push_interval: args.push_interval,
                pull_interval: args.pull_interval,
            },
            args.padding_scheme.as_deref(),
            args.node_config.as_deref(),
        )?;
        Ok(Panel {
            token: args.token.trim().to_string(),
            node_ids: (!args.node_ids.is_empty())
                .then(|| args.node_ids.iter().map(|s| s.trim().to_string()).collect()),
            alive_ttl: args.alive_ttl,
            verbose: args.verbose,
            users: Mutex::new(users),
            config: Mutex::new(config),
            traffic: Mutex::default(),
            alive: Mutex::default(),
            status: Mutex::default(),
            requests: Requests::new(),
            outage: Mutex::new(None),
            connections: AtomicUsize::new(0),
        })
    }

    /// The users, re-read first if the file changed.
    pub fn users(&self) -> Arc<Users> {
        let mut users = lock(&self.users);
        users.refresh();
        users.value().clone()
    }

    /// How `endpoint` fails now, if an outage is in force for it.
    pub fn outage_for(&self, endpoint: Endpoint) -> Option<OutageMode> {
        let outage = (*lock(&self.outage))?;
        let applies = outage.only.is_none_or(|only| only == endpoint);
        (applies && Instant::now() < outage.until).then_some(outage.mode)
    }

    /// Waits until no outage is in force for `endpoint`.
    fn wait_outage_end(&self, endpoint: Endpoint) {
        while self.outage_for(endpoint).is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Routes one request.
    fn handle(&self, req: &Request) -> Action {
        if req.path.starts_with(uniproxy::PREFIX) {
            uniproxy::handle(self, req)
        } else if req.path.starts_with(admin::PREFIX) {
            Action::Respond(admin::handle(self, req))
        } else {
            Action::Respond(Response::json(404, xboard::not_found(&req.path)))
        }
    }

    /// Serves one connection until either side closes it.
    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(stream);
        loop {
            let req = match conn.read_request() {
                Next::Request(req) => req,
                Next::Closed => return,
                Next::Refuse(response) => {
                    self.log("-", "-", response.status);
                    conn.send(&response, false, false);
                    conn.drain_and_close();
                    return;
                }
            };
            match self.handle(&req) {
                Action::Respond(response) => {
                    self.log(&req.method, &req.path, response.status);
                    if !conn.send(&response, req.is_head(), !req.close) {
                        return;
                    }
                }
                Action::Hang(endpoint) => {
                    self.log(&req.method, &req.path, 0);
                    self.wait_outage_end(endpoint);
                    return;
                }
                Action::Close => {
                    self.log(&req.method, &req.path, 0);
                    return;
                }
            }
        }
    }

    /// With --verbose, one line on stderr (status 0: no answer sent).
    fn log(&self, method: &str, path: &str, status: u16) {
        if self.verbose {
            eprintln!("panel: {method} {path} {status}");
        }
    }
}

/// Locks `mutex`, even one a panicking thread left poisoned (every update of
/// the panel's state leaves it consistent).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the panel until a signal ends the process.
pub fn run(args: PanelArgs) -> Result<bool, String> {
    let panel = Arc::new(Panel::new(&args)?);
    let listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot handle signals: {e}"))?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            std::process::exit(0);
        }
    });

    println!("panel listening on http://{addr}");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;

    for stream in listener.incoming() {
        match stream {
            Ok(stream) => admit(&panel, stream),
            // Out of descriptors and the like: wait a little rather than spin.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(true)
}

/// Serves `stream` on a thread of its own, or refuses it (503) when
/// [`MAX_CONNECTIONS`] are being served.
fn admit(panel: &Arc<Panel>, stream: TcpStream) {
    if panel.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        panel.connections.fetch_sub(1, Ordering::AcqRel);
        // Never block the accepting thread on a client that does not read.
        let _ = stream.set_nonblocking(true);
        let _ = (&stream).write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
              Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n",
        );
        return;
    }
    let slot = Slot(Arc::clone(panel));
    // If the thread cannot start, the closure and its slot are dropped.
    let _ = std::thread::Builder::new()
        .name("panel-conn".into())
        .spawn(move || slot.0.serve(stream));
}

/// A connection's place among the [`MAX_CONNECTIONS`], given back when dropped
/// (whatever ends the connection's thread).
struct Slot(Arc<Panel>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
