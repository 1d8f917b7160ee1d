//! Tests of `anytls-bench panel`, the stand-in Xboard panel: the program runs
//! as a child process (one per test, on an ephemeral port, with its files in
//! a directory of its own) and is asked over plain HTTP/1.1 by the small
//! blocking client below.
//!
//! Checked: the config and user answers (bodies, ETags, 304), Xboard's error
//! bodies for a wrong token, a missing field, an unknown node type and a node
//! that does not exist, users and node config files re-read when rewritten,
//! push totals and outages (a push failed by an outage is not counted; the
//! 500, garbage, close and hang modes), alive and alivelist (replacement per
//! node, distinct IPs over nodes, expiry), status validation, the HTTP limits
//! (411, 413, the 65th connection), exit status 0 on SIGTERM, and a 100,000-user
//! file (the time of the first answer is printed and bounded).
//!
//! Every wait is bounded: the start by [`START`], every socket operation by
//! [`IO_TIMEOUT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The token every panel of these tests is started with.
const TOKEN: &str = "test-token";

/// The query of a well-formed request from node 1.
const NODE1: &str = "token=test-token&node_id=1&node_type=anytls";

/// The query of a well-formed request from node 2.
const NODE2: &str = "token=test-token&node_id=2&node_type=anytls";

/// How long the panel may take to say where it listens.
const START: Duration = Duration::from_secs(30);

/// The longest any socket read or write of these tests may wait.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the UniProxy endpoints are.
const API: &str = "/api/v1/server/UniProxy";

/// Xboard's body for a failed request (HTTP 500).
const SERVER_ERROR: &str = "{\n    \"message\": \"遇到了些问题，我们正在进行处理\"\n}";

/// A panel in a child process, killed (and its directory removed) when dropped.
struct Panel {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Panel {
    /// Writes `users` to `users.txt` in a new directory and starts the panel
    /// with `--users` that file, `--token` [`TOKEN`] and `extra` flags (where
    /// `{dir}` stands for the directory); waits (at most [`START`]) for its line.
    fn start(users: &str, extra: &[&str]) -> Panel {
        Panel::start_with(&[("users.txt", users)], extra)
    }

    /// [`Panel::start`] with `files` (name, contents) written to the
    /// directory first; one of them must be `users.txt`.
    fn start_with(files: &[(&str, &str)], extra: &[&str]) -> Panel {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "anytls-panel-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test directory");
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).expect("input file");
        }
        let dir_str = dir.to_str().expect("UTF-8 temp dir").to_string();
        let extra: Vec<String> = extra.iter().map(|a| a.replace("{dir}", &dir_str)).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_anytls-bench"))
            .arg("panel")
            .args(["--token", TOKEN, "--listen", "127.0.0.1:0", "--users"])
            .arg(dir.join("users.txt"))
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("stderr.txt")).expect("stderr file"))
            .spawn()
            .expect("anytls-bench panel starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("panel listening on http://")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Panel { child, addr, dir },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                panic!("the panel did not say where it listens within {START:?}: {line:?}; stderr: {stderr}");
            }
        }
    }

    /// What the panel wrote on stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.file("stderr.txt")).unwrap_or_default()
    }

    /// A path in the panel's directory.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// One request on a connection of its own.
    fn request(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        Client::connect(self.addr).request(method, target, headers, body)
    }

    /// GET `target`.
    fn get(&self, target: &str) -> Reply {
        self.request("GET", target, &[], b"")
    }

    /// POST `body` to `target`.
    fn post(&self, target: &str, body: &str) -> Reply {
        self.request("POST", target, &[], body.as_bytes())
    }

    /// GET `target`, expecting 200 and a JSON body.
    fn get_json(&self, target: &str) -> Value {
        let reply = self.get(target);
        assert_eq!(reply.status, 200, "GET {target}: {}", reply.text());
        reply.json()
    }
}

impl Drop for Panel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces `path` as the tests promise to: a temporary file, then a rename.
fn rewrite(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("temporary file");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    /// Header `name` (any case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// A tiny blocking HTTP/1.1 client on one keep-alive connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr`.
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the panel");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends a request and reads its response.
    fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.send(method, target, headers, body);
        self.read_reply()
            .unwrap_or_else(|| panic!("{method} {target}: the connection closed without an answer"))
    }

    /// Sends a request (with a Content-Length when there is a body).
    fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: panel\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let has_length = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if !has_length && (!body.is_empty() || method == "POST") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        self.stream.write_all(&out).expect("send the request");
    }

    /// Reads one response; `None` if the connection closed before one began.
    fn read_reply(&mut self) -> Option<Reply> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill() {
                assert!(self.buf.is_empty(), "a response cut short: {:?}", self.buf);
                return None;
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("UTF-8 head");
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().expect("numeric Content-Length"));
        let length = match (status, length) {
            (304, _) => 0,
            (_, Some(n)) => n,
            (_, None) => panic!("no Content-Length in {head:?}"),
        };
        while self.buf.len() < length {
            assert!(self.fill(), "the body ended early");
        }
        let rest = self.buf.split_off(length);
        let body = std::mem::replace(&mut self.buf, rest);
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Reads more bytes; false at the end of the stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!("reading from the panel: {e}"),
        }
    }
}

/// The quoted hex SHA-256 of `body`: the ETag the panel must send with it.
fn etag_of(body: &[u8]) -> String {
    let hex: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// Checks a 200 answer's ETag against its body, then that If-None-Match with
/// it gets 304 with an empty body and that another one gets the body again.
fn check_etag(panel: &Panel, target: &str, reply: &Reply) -> String {
    let etag = reply.header("ETag").expect("an ETag").to_string();
    assert_eq!(
        etag,
        etag_of(&reply.body),
        "{target}: ETag is not the body's SHA-256"
    );
    let again = panel.request("GET", target, &[("If-None-Match", &etag)], b"");
    assert_eq!(
        again.status,
        304,
        "{target} with its own ETag: {}",
        again.text()
    );
    assert!(
        again.body.is_empty(),
        "a 304 with a body: {:?}",
        again.text()
    );
    let other = panel.request("GET", target, &[("If-None-Match", "\"0000\"")], b"");
    assert_eq!(other.status, 200);
    assert_eq!(other.body, reply.body);
    etag
}

#[test]
fn config_answer_etag_and_node_config_rewrite() {
    let panel = Panel::start(
        "1:u1\n",
        &[
            "--server-port",
            "1234",
            "--server-name",
            "example.com",
            "--push-interval",
            "30",
            "--pull-interval",
            "90",
        ],
    );
    let target = format!("{API}/config?{NODE1}");
    let reply = panel.get(&target);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    // Xboard's keys in Xboard's order, the default padding scheme, no routes.
    assert_eq!(
        reply.text(),
        concat!(
            r#"{"protocol":"anytls","listen_ip":"0.0.0.0","server_port":1234,"network":null,"#,
            r#""networkSettings":null,"server_name":"example.com","#,
            r#""tls_settings":{"server_name":"example.com","allow_insecure":false},"#,
            r#""padding_scheme":["stop=8","0=30-30","1=100-400","#,
            r#""2=400-500,c,500-1000,c,500-1000,c,500-1000,c,500-1000","3=9-9,500-1000","#,
            r#""4=500-1000","5=500-1000","6=500-1000","7=500-1000"],"#,
            r#""base_config":{"push_interval":30,"pull_interval":90}}"#
        )
    );
    check_etag(&panel, &target, &reply);
    drop(panel);

    // Overrides from --node-config, re-read when the file is replaced.
    let routes = json!([{"id": 1, "match": ["domain:example.com"], "action": "block", "action_value": null}]);
    let node_config = json!({"padding_scheme": ["stop=3", "0=30-30", "1=100-400", "2=400-500"], "routes": routes});
    let panel = Panel::start_with(
        &[
            ("users.txt", "1:u1\n"),
            ("node.json", &node_config.to_string()),
        ],
        &["--node-config", "{dir}/node.json"],
    );
    let first = panel.get(&target);
    assert_eq!(first.status, 200);
    let config = first.json();
    assert_eq!(config["padding_scheme"], node_config["padding_scheme"]);
    assert_eq!(config["routes"], routes);
    assert_eq!(config["server_port"], 443, "the default --server-port");
    assert_eq!(
        config["base_config"],
        json!({"push_interval": 60, "pull_interval": 60})
    );
    assert!(
        first.text().find("\"routes\"") < first.text().find("\"base_config\""),
        "routes goes before base_config: {}",
        first.text()
    );
    let old_etag = check_etag(&panel, &target, &first);

    let mut changed = node_config.clone();
    changed["server_port"] = json!(8443);
    rewrite(&panel.file("node.json"), &changed.to_string());
    let second = panel.request("GET", &target, &[("If-None-Match", &old_etag)], b"");
    assert_eq!(
        second.status, 200,
        "the old ETag after the node config changed"
    );
    assert_eq!(second.json()["server_port"], 8443);
    assert_ne!(second.header("ETag").unwrap(), old_etag);
}

#[test]
fn user_answer_etag_and_rewrites() {
    let panel = Panel::start(
        "# comment\n\n1:uuid-one\n2:uuid-two:100:2\n  3:uuid-three:0:1  \n",
        &[],
    );
    let target = format!("{API}/user?{NODE1}");
    // Several requests on one keep-alive connection.
    let mut client = Client::connect(panel.addr);
    let reply = client.request("GET", &target, &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        concat!(
            r#"{"users":[{"id":1,"uuid":"uuid-one","speed_limit":0,"device_limit":0},"#,
            r#"{"id":2,"uuid":"uuid-two","speed_limit":100,"device_limit":2},"#,
            r#"{"id":3,"uuid":"uuid-three","speed_limit":0,"device_limit":1}]}"#
        )
    );
    let etag = reply.header("ETag").unwrap().to_string();
    let cached = client.request("GET", &target, &[("If-None-Match", &etag)], b"");
    assert_eq!(cached.status, 304);
    let again = client.request("GET", &target, &[], b"");
    assert_eq!(
        again.body, reply.body,
        "the same connection serves a third request"
    );
    check_etag(&panel, &target, &reply);

    // A rewrite changes the answer and the ETag; the old ETag gets the body.
    rewrite(&panel.file("users.txt"), "1:uuid-one\n4:uuid-four:5:0\n");
    let changed = panel.request("GET", &target, &[("If-None-Match", &etag)], b"");
    assert_eq!(changed.status, 200);
    assert_eq!(
        changed.text(),
        concat!(
            r#"{"users":[{"id":1,"uuid":"uuid-one","speed_limit":0,"device_limit":0},"#,
            r#"{"id":4,"uuid":"uuid-four","speed_limit":5,"device_limit":0}]}"#
        )
    );
    let new_etag = changed.header("ETag").unwrap().to_string();
    assert_ne!(new_etag, etag);
    assert_eq!(new_etag, etag_of(&changed.body));

    // A malformed file: the last good list stays.
    rewrite(&panel.file("users.txt"), "1:uuid-one\nnot a user line\n");
    let kept = panel.get(&target);
    assert_eq!(kept.status, 200);
    assert_eq!(
        kept.body, changed.body,
        "a malformed file replaced the list"
    );
    assert_eq!(panel.get(&target).body, changed.body);
    let stderr = panel.stderr();
    assert_eq!(
        stderr.lines().filter(|l| l.contains("users file")).count(),
        1,
        "one line about the malformed file: {stderr:?}"
    );
    assert!(stderr.contains("line 2"), "{stderr:?}");

    // The JSON form, served as an equivalent document.
    let users = json!({"users": [
        {"id": 7, "uuid": "u7", "speed_limit": null, "device_limit": null},
        {"id": 8, "uuid": "u/8", "speed_limit": 10, "device_limit": 3},
    ]});
    rewrite(&panel.file("users.txt"), &users.to_string());
    let from_json = panel.get(&target);
    assert_eq!(from_json.status, 200);
    assert_eq!(from_json.json(), users);
    assert!(
        from_json.text().contains(r#""u\/8""#),
        "PHP escapes slashes: {}",
        from_json.text()
    );

    let counts = panel.get_json("/admin/requests");
    assert_eq!(counts["user"], 9, "{counts}");
    assert_eq!(counts["user_304"], 2, "{counts}");
    assert_eq!(counts["config"], 0, "{counts}");
}

#[test]
fn token_and_node_errors_as_xboard() {
    let panel = Panel::start("1:u1\n", &["--node-ids", "1,2"]);
    let wrong = panel.get(&format!("{API}/user?token=nope&node_id=1&node_type=anytls"));
    assert_eq!(wrong.status, 422);
    assert_eq!(
        wrong.text(),
        r#"{"message":"Invalid token","errors":{"token":["Invalid token"]}}"#
    );
    let missing = panel.get(&format!("{API}/config"));
    assert_eq!(missing.status, 422);
    assert_eq!(
        missing.text(),
        concat!(
            r#"{"message":"validation.required (and 1 more error)","#,
            r#""errors":{"token":["validation.required"],"node_id":["validation.required"]}}"#
        )
    );
    let bad_type = panel.get(&format!(
        "{API}/config?token={TOKEN}&node_id=1&node_type=nonsense"
    ));
    assert_eq!(bad_type.status, 422);
    assert_eq!(
        bad_type.text(),
        r#"{"message":"Invalid node type specified","errors":{"node_type":["Invalid node type specified"]}}"#
    );
    // A known type that is not anytls, and a node id that is not there: the
    // ApiException("Server does not exist").
    let no_server =
        r#"{"status":"fail","message":"Server does not exist","data":null,"error":null}"#;
    for query in [
        format!("token={TOKEN}&node_id=1&node_type=vmess"),
        format!("token={TOKEN}&node_id=3&node_type=anytls"),
    ] {
        let reply = panel.get(&format!("{API}/config?{query}"));
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(reply.text(), no_server, "{query}");
    }
    // node_type absent, or `v2node`: accepted.
    for query in [
        format!("token={TOKEN}&node_id=2"),
        format!("token={TOKEN}&node_id=1&node_type=v2node"),
    ] {
        assert_eq!(
            panel.get(&format!("{API}/config?{query}")).status,
            200,
            "{query}"
        );
    }
    // No such route, and a wrong method: Laravel's 404 and 405.
    let unknown = panel.get(&format!("{API}/nothing?{NODE1}"));
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.text(),
        "{\n    \"message\": \"The route api/v1/server/UniProxy/nothing could not be found.\"\n}"
    );
    let wrong_method = panel.get(&format!("{API}/push?{NODE1}"));
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("Allow"), Some("POST"));
}

#[test]
fn push_totals_and_outages() {
    let panel = Panel::start("1:u1\n2:u2\n", &[]);
    let push = format!("{API}/push?{NODE1}");
    let success =
        r#"{"status":"success","message":"\u64cd\u4f5c\u6210\u529f","data":true,"error":null}"#;
    let first = panel.post(&push, r#"{"1":[100,200],"2":[5,6]}"#);
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), success);
    // Entries that are not two numbers are skipped, as Xboard does.
    let second = panel.post(&push, r#"{"1":[1000,2000],"2":[1],"3":"x"}"#);
    assert_eq!(second.status, 200);
    assert_eq!(
        panel.get_json("/admin/traffic"),
        json!({"traffic": {"1": [1100, 2200], "2": [5, 6]}, "pushes": 2, "failed_pushes": 0})
    );

    let invalid = panel.post(&push, "[not json");
    assert_eq!(invalid.status, 422);
    assert_eq!(
        invalid.text(),
        r#"{"status":"fail","message":"Invalid data format","data":null,"error":null}"#
    );
    assert_eq!(panel.post(&push, "42").status, 422);

    // During a 500 outage the push fails and is not added.
    let started = panel.post("/admin/outage?seconds=30&mode=500", "");
    assert_eq!(started.status, 200, "{}", started.text());
    let failed = panel.post(&push, r#"{"1":[7,7]}"#);
    assert_eq!(failed.status, 500);
    assert_eq!(failed.text(), SERVER_ERROR);
    assert_eq!(panel.get(&format!("{API}/user?{NODE1}")).status, 500);
    let traffic = panel.get_json("/admin/traffic");
    assert_eq!(traffic["traffic"]["1"], json!([1100, 2200]), "{traffic}");
    assert_eq!(traffic["pushes"], 2);
    assert_eq!(traffic["failed_pushes"], 1);

    // Ended: pushes count again.
    assert_eq!(panel.post("/admin/outage?seconds=0", "").status, 200);
    assert_eq!(panel.post(&push, r#"{"1":[1,1]}"#).status, 200);
    let traffic = panel.get_json("/admin/traffic");
    assert_eq!(traffic["traffic"]["1"], json!([1101, 2201]), "{traffic}");
    assert_eq!(traffic["pushes"], 3);

    // Only one endpoint, and the garbage mode.
    panel.post("/admin/outage?seconds=30&mode=garbage&only=config", "");
    let garbage = panel.get(&format!("{API}/config?{NODE1}"));
    assert_eq!(garbage.status, 200);
    assert!(
        serde_json::from_slice::<Value>(&garbage.body).is_err(),
        "{}",
        garbage.text()
    );
    assert_eq!(
        panel.get(&format!("{API}/user?{NODE1}")).status,
        200,
        "user is not in the outage"
    );

    // Close: the connection ends without an answer.
    panel.post("/admin/outage?seconds=30&mode=close", "");
    let mut client = Client::connect(panel.addr);
    client.send("POST", &push, &[], br#"{"1":[9,9]}"#);
    assert!(
        client.read_reply().is_none(),
        "an answer during a close outage"
    );

    // Hang: nothing until the outage ends, then the connection closes.
    panel.post("/admin/outage?seconds=1&mode=hang", "");
    let mut client = Client::connect(panel.addr);
    let asked = Instant::now();
    client.send("POST", &push, &[], br#"{"1":[9,9]}"#);
    assert!(
        client.read_reply().is_none(),
        "an answer during a hang outage"
    );
    let held = asked.elapsed();
    assert!(
        held >= Duration::from_millis(700) && held < Duration::from_secs(10),
        "held for {held:?}"
    );
    let traffic = panel.get_json("/admin/traffic");
    assert_eq!(traffic["traffic"]["1"], json!([1101, 2201]), "{traffic}");
    assert_eq!(traffic["failed_pushes"], 3, "{traffic}");
    assert_eq!(
        panel.post(&push, r#"{"1":[1,1]}"#).status,
        200,
        "after the hang"
    );

    let counts = panel.get_json("/admin/requests");
    assert_eq!(counts["push"], 9, "{counts}");
    assert_eq!(
        panel
            .post("/admin/outage?seconds=5&mode=sideways", "")
            .status,
        400
    );
}

#[test]
fn alive_and_alivelist() {
    let panel = Panel::start("1:u1\n2:u2:0:2\n3:u3:0:1\n", &[]);
    let alivelist = format!("{API}/alivelist?{NODE1}");
    assert_eq!(panel.get(&alivelist).text(), r#"{"alive":{}}"#);

    let report = |query: &str, body: &str| {
        let reply = panel.post(&format!("{API}/alive?{query}"), body);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), r#"{"data":true}"#);
    };
    report(
        NODE1,
        r#"{"2":["10.0.0.1:51000","10.0.0.2","10.0.0.1:52000"],"1":["10.0.0.9"]}"#,
    );
    report(NODE2, r#"{"2":["10.0.0.2:443","[2001:db8::1]:443"]}"#);
    // User 2 (device limit 2) seen from 3 IPs over two nodes; user 1 has no
    // device limit; user 3 reported nothing.
    assert_eq!(panel.get_json(&alivelist), json!({"alive": {"2": 3}}));
    assert_eq!(
        panel.get_json("/admin/alive"),
        json!({
            "1": {"1": ["10.0.0.9"], "2": ["10.0.0.1", "10.0.0.2"]},
            "2": {"2": ["10.0.0.2", "2001:db8::1"]},
        })
    );
    // A node's new report replaces its IPs for that user.
    report(NODE1, r#"{"2":["2001:db8::1"],"3":["10.0.0.7"]}"#);
    assert_eq!(
        panel.get_json(&alivelist),
        json!({"alive": {"2": 2, "3": 1}})
    );

    let bad = panel.post(&format!("{API}/alive?{NODE1}"), "not json");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.text(), r#"{"error":"Invalid online data"}"#);
}

#[test]
fn alive_reports_expire() {
    let panel = Panel::start("2:u2:0:2\n", &["--alive-ttl", "1"]);
    let reply = panel.post(&format!("{API}/alive?{NODE1}"), r#"{"2":["10.0.0.1"]}"#);
    assert_eq!(reply.status, 200);
    let alivelist = format!("{API}/alivelist?{NODE1}");
    assert_eq!(panel.get_json(&alivelist), json!({"alive": {"2": 1}}));
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(panel.get_json(&alivelist), json!({"alive": {}}));
}

#[test]
fn status_validation() {
    let panel = Panel::start("1:u1\n", &[]);
    let target = format!("{API}/status?{NODE1}");
    let json_type = [("Content-Type", "application/json")];
    let post = |body: &str| panel.request("POST", &target, &json_type, body.as_bytes());

    let partial = post(r#"{"cpu":12.5,"mem":{"total":100,"used":50}}"#);
    assert_eq!(partial.status, 422);
    assert_eq!(
        partial.text(),
        concat!(
            r#"{"message":"validation.required (and 3 more errors)","errors":{"#,
            r#""swap.total":["validation.required"],"swap.used":["validation.required"],"#,
            r#""disk.total":["validation.required"],"disk.used":["validation.required"]}}"#
        )
    );
    let out_of_range = post(
        r#"{"cpu":150,"mem":{"total":100,"used":-1},"swap":{"total":0,"used":0},"disk":{"total":1,"used":"x"}}"#,
    );
    assert_eq!(out_of_range.status, 422);
    assert_eq!(
        out_of_range.json()["errors"],
        json!({
            "cpu": ["validation.max.numeric"],
            "mem.used": ["validation.min.numeric"],
            "disk.used": ["validation.integer"],
        })
    );
    assert!(panel
        .get_json("/admin/status")
        .as_object()
        .unwrap()
        .is_empty());

    let good = json!({"cpu": 12.5, "mem": {"total": 100, "used": 50}, "swap": {"total": 0, "used": 0}, "disk": {"total": 1000, "used": 10}});
    let ok = post(&good.to_string());
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.text(), r#"{"data":true,"code":0,"message":"success"}"#);
    assert_eq!(panel.get_json("/admin/status"), json!({"1": good}));

    // Without a JSON Content-Type Laravel sees no fields.
    let untyped = panel.request("POST", &target, &[], good.to_string().as_bytes());
    assert_eq!(untyped.status, 422);
}

#[test]
fn http_limits_and_sigterm() {
    let mut panel = Panel::start("1:u1\n", &[]);
    let chunked = panel.request(
        "POST",
        &format!("{API}/push?{NODE1}"),
        &[("Transfer-Encoding", "chunked")],
        b"",
    );
    assert_eq!(chunked.status, 411);
    let mut client = Client::connect(panel.addr);
    client.send(
        "POST",
        &format!("{API}/push?{NODE1}"),
        &[("Content-Length", "67108865")],
        // The start of the body: the answer must not be lost to a reset.
        &vec![b'x'; 256 * 1024],
    );
    let too_big = client.read_reply().expect("an answer to a 64 MiB + 1 body");
    assert_eq!(too_big.status, 413);

    // 64 connections at once are served; the 65th is refused.
    let held: Vec<Client> = (0..64).map(|_| Client::connect(panel.addr)).collect();
    let mut refused = Client::connect(panel.addr);
    let reply = refused
        .read_reply()
        .expect("an answer to the 65th connection");
    assert_eq!(reply.status, 503);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = Client::connect(panel.addr);
        client.send("GET", "/admin/requests", &[], b"");
        match client.read_reply() {
            Some(reply) if reply.status == 200 => break,
            other => assert!(Instant::now() < deadline, "still refused: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(panel.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = panel.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn hundred_thousand_users() {
    let panel = Panel::start("1:u1\n", &[]);
    let mut users = String::with_capacity(100_000 * 48);
    for id in 1..=100_000u32 {
        users.push_str(&format!(
            "{id}:{:08x}-0000-4000-8000-{:012x}:{}:{}\n",
            id,
            id,
            id % 7,
            id % 3
        ));
    }
    rewrite(&panel.file("users.txt"), &users);
    let target = format!("{API}/user?{NODE1}");

    let started = Instant::now();
    let reply = panel.get(&target);
    let first = started.elapsed();
    assert_eq!(reply.status, 200);
    let answer = reply.json();
    let list = answer["users"].as_array().expect("a users array");
    assert_eq!(list.len(), 100_000);
    assert_eq!(
        list[99_999],
        json!({"id": 100000, "uuid": "000186a0-0000-4000-8000-0000000186a0", "speed_limit": 100000 % 7, "device_limit": 1})
    );
    let etag = reply.header("ETag").unwrap().to_string();
    assert_eq!(etag, etag_of(&reply.body));

    let started = Instant::now();
    let cached = panel.get(&target);
    let second = started.elapsed();
    assert_eq!(cached.body, reply.body);
    let started = Instant::now();
    let not_modified = panel.request("GET", &target, &[("If-None-Match", &etag)], b"");
    let revalidated = started.elapsed();
    assert_eq!(not_modified.status, 304);

    println!(
        "100,000 users: first GET user {:.1} ms (re-reading the file), {} bytes; \
         again {:.1} ms; 304 in {:.1} ms",
        first.as_secs_f64() * 1e3,
        reply.body.len(),
        second.as_secs_f64() * 1e3,
        revalidated.as_secs_f64() * 1e3,
    );
    assert!(
        first < Duration::from_secs(5),
        "the first GET user took {first:?}"
    );
}
