//! Hostile clients: authenticated (unless the action is about the password)
//! raw sessions from --hostile-source, doing what a well-behaved client never
//! does. A lane runs [`ACTIONS`] in turn, each bounded in count and time, and
//! counts what the server answered; nothing here is an error of the soak, the
//! server only has to stay correct for the well-behaved clients meanwhile.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anytls::plumbing::{timeout, Event};
use anytls::proto::frame::{Command, MAX_DATA_LEN};
use anytls::proto::uot::{encode_datagram, Request, UOT_V2_NAME};
use anytls::proto::{Address, PaddingScheme};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::raw::{self, push_frame, push_settings, wait_until, Raw};
use super::tally::Rec;
use super::targets::{download_request, Targets};
use super::{Ctx, Plan};
use crate::scenarios::unless;

/// The hostile actions, in the order a lane runs them.
pub const ACTIONS: [&str; 14] = [
    "syn_flood",
    "uot_many",
    "refused_port",
    "never_read",
    "many_sessions",
    "bad_first_psh",
    "rule_breaking",
    "split_records",
    "wrong_password",
    "rst_mid_stream",
    "unread_answers",
    "pending_flood",
    "empty_datagrams",
    "fin_undelivered",
];

/// Bound on one action.
const ACTION_CAP: Duration = Duration::from_secs(90);
/// Pause between two actions of a lane.
const ACTION_PAUSE: Duration = Duration::from_millis(500);
/// How long an answer (SYNACK, echo, heartbeat) may take.
const ANSWER: Duration = Duration::from_secs(15);

/// One executor's hostile clients.
#[derive(Clone)]
pub struct Hostile {
    plan: Arc<Plan>,
    targets: Rc<Targets>,
    rec: Rc<Rec>,
    next: Rc<Cell<usize>>,
}

fn address(target: &Address) -> Vec<u8> {
    let mut out = Vec::new();
    target.encode(&mut out).expect("a valid address");
    out
}

/// SYN and a first PSH with `first` (the address and maybe payload).
fn open(out: &mut Vec<u8>, sid: u32, first: &[u8]) {
    push_frame(out, Command::Syn, sid, &[]);
    push_frame(out, Command::Push, sid, first);
}

impl Hostile {
    pub fn new(ctx: &Ctx) -> Hostile {
        Hostile {
            plan: ctx.plan.clone(),
            targets: ctx.targets.clone(),
            rec: ctx.rec.clone(),
            next: Rc::new(Cell::new(ctx.index)),
        }
    }

    /// Runs the actions in turn until `stop`; `rounds` counts full passes.
    pub async fn lane(&self, lane: usize, stop: &Event, rounds: &Cell<usize>) {
        glommio::timer::sleep(Duration::from_millis(lane as u64 * 700)).await;
        let mut done = 0usize;
        while !stop.is_set() {
            let i = self.next.get();
            self.next.set(i + 1);
            let action = ACTIONS[i % ACTIONS.len()];
            if timeout(ACTION_CAP, self.run(action)).await.is_none() {
                self.count(action, "capped", 1);
            }
            self.count(action, "runs", 1);
            done += 1;
            if done % ACTIONS.len() == 0 {
                rounds.set(rounds.get() + 1);
            }
            let _ = unless(stop, glommio::timer::sleep(ACTION_PAUSE)).await;
        }
    }

    fn count(&self, action: &'static str, name: &'static str, n: u64) {
        self.rec.count(action, name, n);
    }

    async fn run(&self, action: &'static str) {
        match action {
            "syn_flood" => self.syn_flood(action).await,
            "uot_many" => self.uot_many(action).await,
            "refused_port" => self.refused_port(action).await,
            "never_read" => self.never_read(action).await,
            "many_sessions" => self.many_sessions(action).await,
            "bad_first_psh" => self.bad_first_psh(action).await,
            "rule_breaking" => self.rule_breaking(action).await,
            "split_records" => self.split_records(action).await,
            "wrong_password" => self.wrong_password(action).await,
            "unread_answers" => self.unread_answers(action).await,
            "pending_flood" => self.pending_flood(action).await,
            "empty_datagrams" => self.empty_datagrams(action).await,
            "fin_undelivered" => self.fin_undelivered(action).await,
            _ => self.rst_mid_stream(action).await,
        }
    }

    /// An authenticated raw session with Settings sent, or `None` (counted).
    async fn session(&self, action: &'static str, rst: bool) -> Option<Raw> {
        let plan = &self.plan;
        match Raw::connect(
            plan.server,
            plan.hostile_source,
            &plan.tls,
            &plan.hostile_password,
            true,
            rst,
        )
        .await
        {
            Ok(raw) => Some(raw),
            Err(_) => {
                self.count(action, "connect_failed", 1);
                None
            }
        }
    }

    /// Never reads, and sends only frames the server must answer (SYNs past the
    /// stream cap with fresh ids, heartbeats), up to 32 MiB or until the server
    /// stops reading (a write making no progress for 2 s), then holds the
    /// connection 3 s more and drops it.
    async fn unread_answers(&self, action: &'static str) {
        const MOST: usize = 32 << 20;
        let plan = &self.plan;
        let Ok(mut tls) = raw::tls(plan.server, plan.hostile_source, &plan.tls, false).await else {
            self.count(action, "connect_failed", 1);
            return;
        };
        let mut out = raw::preamble(&plan.hostile_password);
        push_settings(&mut out);
        let (mut sent, mut id) = (0usize, 1u32);
        while sent < MOST {
            while out.len() < 64 * 1024 {
                push_frame(&mut out, Command::Syn, id, &[]);
                push_frame(&mut out, Command::HeartRequest, id, &[]);
                id += 1;
            }
            match timeout(Duration::from_secs(2), tls.write_all(&out)).await {
                Some(Ok(())) => sent += out.len(),
                Some(Err(_)) => {
                    self.count(action, "closed_by_server", 1);
                    break;
                }
                None => {
                    self.count(action, "reading_paused_by_server", 1);
                    break;
                }
            }
            out.clear();
        }
        self.count(action, "kib_sent", (sent / 1024) as u64);
        glommio::timer::sleep(Duration::from_secs(3)).await;
    }

    /// 200 TCP connections that never start TLS, held 3 s: past the server's
    /// pending caps they are closed at once.
    async fn pending_flood(&self, action: &'static str) {
        const CONNECTIONS: usize = 200;
        let mut held = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            match raw::tcp(self.plan.server, self.plan.hostile_source).await {
                Ok(tcp) => held.push(tcp),
                Err(_) => self.count(action, "connect_failed", 1),
            }
        }
        glommio::timer::sleep(Duration::from_secs(3)).await;
        let mut closed = 0;
        for tcp in &mut held {
            let mut byte = [0u8; 1];
            if let Some(Ok(0) | Err(_)) =
                timeout(Duration::from_millis(1), tcp.read(&mut byte)).await
            {
                closed += 1;
            }
        }
        self.count(action, "connections", held.len() as u64);
        self.count(action, "closed_by_server", closed);
    }

    /// One association sending 100,000 empty datagrams (9 stream bytes each).
    async fn empty_datagrams(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        const DATAGRAMS: usize = 100_000;
        let mut first = address(&Address::Domain(UOT_V2_NAME.into(), 0));
        Request {
            is_connect: true,
            destination: Address::Ip(self.targets.hostile_udp),
        }
        .encode(&mut first)
        .expect("an IP destination");
        let mut out = Vec::new();
        open(&mut out, 1, &first);
        let mut datagrams = Vec::with_capacity(MAX_DATA_LEN);
        let mut left = DATAGRAMS;
        while left > 0 {
            datagrams.clear();
            while left > 0 && datagrams.len() + 9 <= MAX_DATA_LEN {
                encode_datagram(None, &[], &mut datagrams).expect("an empty datagram");
                left -= 1;
            }
            push_frame(&mut out, Command::Push, 1, &datagrams);
            if raw.send(&out).await.is_err() {
                self.count(action, "write_failed", 1);
                return;
            }
            out.clear();
        }
        self.count(action, "datagrams_sent", DATAGRAMS as u64);
        self.still_served(action, &mut raw).await;
    }

    /// Streams to a target that never reads, each given 1 MiB and then FIN; then
    /// the session closes: the server must not leave the bytes to orphaned
    /// sockets.
    async fn fin_undelivered(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        const STREAMS: u32 = 6;
        let first = address(&self.targets.stall);
        let chunk = vec![0x44u8; 16 * 1024];
        let mut out = Vec::new();
        for i in 0..STREAMS {
            let id = 2 * i + 1;
            open(&mut out, id, &first);
            for _ in 0..64 {
                push_frame(&mut out, Command::Push, id, &chunk);
            }
            if i % 2 == 0 {
                push_frame(&mut out, Command::Fin, id, &[]);
            }
            if raw.send(&out).await.is_err() {
                self.count(action, "write_failed", 1);
                return;
            }
            out.clear();
        }
        self.count(action, "streams", STREAMS as u64);
        self.still_served(action, &mut raw).await;
    }

    /// Heartbeat after the abuse: is the session still served?
    async fn still_served(&self, action: &'static str, raw: &mut Raw) {
        if raw.heartbeat(ANSWER).await {
            self.count(action, "heartbeat_answered", 1);
        } else if raw.seen.closed.is_set() {
            self.count(action, "session_closed_by_server", 1);
        } else {
            self.count(action, "heartbeat_missed", 1);
        }
    }

    /// Hundreds of thousands of SYN frames without an address on one session.
    async fn syn_flood(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        const BATCH: usize = 8192;
        let total = self.plan.syn_flood;
        let mut out = Vec::with_capacity(BATCH * 7);
        let mut sent = 0usize;
        while sent < total {
            out.clear();
            let n = BATCH.min(total - sent);
            for k in 0..n {
                push_frame(&mut out, Command::Syn, (sent + k + 1) as u32, &[]);
            }
            if raw.send(&out).await.is_err() {
                self.count(action, "write_failed", 1);
                break;
            }
            sent += n;
        }
        self.count(action, "syn_sent", sent as u64);
        self.still_served(action, &mut raw).await;
        // Streams still waiting for an address are refused at the address timeout.
        let seen = raw.seen.clone();
        let want = sent as u64;
        wait_until(ANSWER, || {
            seen.synack_err.get() >= want || seen.closed.is_set()
        })
        .await;
        self.count(action, "synack_refusals", raw.seen.synack_err.get());
        self.count(action, "fin_received", raw.seen.fin.get());
    }

    /// Many UDP-over-TCP associations on one session (past the server's cap).
    async fn uot_many(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        const ASSOCIATIONS: u32 = 200;
        let uot = address(&Address::Domain(UOT_V2_NAME.into(), 0));
        let mut out = Vec::new();
        for i in 0..ASSOCIATIONS {
            let mut first = uot.clone();
            Request {
                is_connect: true,
                destination: Address::Ip(self.targets.hostile_udp),
            }
            .encode(&mut first)
            .expect("an IP destination");
            encode_datagram(None, &[i as u8; 64], &mut first).expect("a short datagram");
            open(&mut out, 2 * i + 1, &first);
        }
        if raw.send(&out).await.is_err() {
            self.count(action, "write_failed", 1);
            return;
        }
        let seen = raw.seen.clone();
        let answered =
            || seen.synacks.borrow().len() as u32 >= ASSOCIATIONS || seen.closed.is_set();
        wait_until(ANSWER, answered).await;
        // Some datagrams back, then FIN for half of them; the rest end with the session.
        wait_until(Duration::from_secs(2), || {
            seen.psh_bytes.get() >= 64 * 10 || seen.closed.is_set()
        })
        .await;
        self.count(action, "associations_opened", seen.synack_ok.get());
        self.count(action, "associations_refused", seen.synack_err.get());
        self.count(action, "datagram_bytes_back", seen.psh_bytes.get());
        out.clear();
        for i in (0..ASSOCIATIONS).step_by(2) {
            push_frame(&mut out, Command::Fin, 2 * i + 1, &[]);
        }
        let _ = raw.send(&out).await;
        self.still_served(action, &mut raw).await;
    }

    /// Many streams to a loopback port nothing listens on.
    async fn refused_port(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        const STREAMS: u32 = 300;
        let first = address(&self.targets.closed);
        let mut out = Vec::new();
        for i in 0..STREAMS {
            open(&mut out, i + 1, &first);
        }
        if raw.send(&out).await.is_err() {
            self.count(action, "write_failed", 1);
            return;
        }
        let seen = raw.seen.clone();
        wait_until(ANSWER, || {
            seen.synacks.borrow().len() as u32 >= STREAMS || seen.closed.is_set()
        })
        .await;
        self.count(action, "streams", STREAMS as u64);
        self.count(action, "refused", seen.synack_err.get());
        let unanswered = STREAMS as u64 - seen.synacks.borrow().len() as u64;
        self.count(action, "unanswered", unanswered);
        self.still_served(action, &mut raw).await;
    }

    /// Streams to a target that never reads, each pushing 2 MiB: more than the
    /// server buffers and its kernel queues take, so its stall timeout must
    /// close them (FIN) and the session must go on.
    async fn never_read(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        const STREAMS: u32 = 3;
        const PUSH: usize = 2 * 1024 * 1024;
        let first = address(&self.targets.stall);
        let mut out = Vec::new();
        for i in 0..STREAMS {
            open(&mut out, 2 * i + 1, &first);
        }
        if raw.send(&out).await.is_err() {
            self.count(action, "write_failed", 1);
            return;
        }
        let chunk = vec![0x33u8; 16 * 1024];
        let mut pushed = 0u64;
        'streams: for i in 0..STREAMS {
            let mut sent = 0;
            while sent < PUSH {
                out.clear();
                push_frame(&mut out, Command::Push, 2 * i + 1, &chunk);
                if raw.send(&out).await.is_err() {
                    self.count(action, "write_failed", 1);
                    break 'streams;
                }
                sent += chunk.len();
                pushed += chunk.len() as u64;
            }
        }
        self.count(action, "kib_pushed", pushed / 1024);
        let seen = raw.seen.clone();
        wait_until(ANSWER, || {
            seen.fin.get() >= STREAMS as u64 || seen.closed.is_set()
        })
        .await;
        self.count(action, "streams_reset_by_server", seen.fin.get());
        self.still_served(action, &mut raw).await;
    }

    /// Many sessions at once from one client (past the per-IP cap when the
    /// server's is lower), each asked for a heartbeat.
    async fn many_sessions(&self, action: &'static str) {
        let total = self.plan.many_sessions;
        let mut held = Vec::with_capacity(total);
        let answered = Rc::new(Cell::new(0u64));
        let closed = Rc::new(Cell::new(0u64));
        let failed = Rc::new(Cell::new(0u64));
        for batch in (0..total).collect::<Vec<_>>().chunks(50) {
            let tasks: Vec<_> = batch
                .iter()
                .map(|_| {
                    let plan = self.plan.clone();
                    let (answered, closed, failed) =
                        (answered.clone(), closed.clone(), failed.clone());
                    glommio::spawn_local(async move {
                        let raw = Raw::connect(
                            plan.server,
                            plan.hostile_source,
                            &plan.tls,
                            &plan.hostile_password,
                            true,
                            false,
                        )
                        .await;
                        let Ok(mut raw) = raw else {
                            failed.set(failed.get() + 1);
                            return None;
                        };
                        if raw.heartbeat(ANSWER).await {
                            answered.set(answered.get() + 1);
                        } else if raw.seen.closed.is_set() {
                            closed.set(closed.get() + 1);
                        }
                        Some(raw)
                    })
                })
                .collect();
            for task in tasks {
                held.extend(task.await);
            }
        }
        self.count(action, "sessions_opened", held.len() as u64);
        self.count(action, "heartbeat_answered", answered.get());
        self.count(action, "closed_by_server", closed.get());
        self.count(action, "connect_failed", failed.get());
        glommio::timer::sleep(Duration::from_secs(1)).await;
        drop(held);
    }

    /// A first PSH that is empty, a truncated address, an unknown address type;
    /// and an address that follows an empty PSH, or comes split over two PSH.
    async fn bad_first_psh(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        let echo = address(&self.targets.hostile_echo);
        let mut out = Vec::new();
        open(&mut out, 1, &[]);
        open(&mut out, 3, &[3, 50, b'a', b'b', b'c']);
        open(&mut out, 5, &[9, 1, 2, 3, 4, 5, 6]);
        raw.record(7);
        open(&mut out, 7, &[]);
        push_frame(
            &mut out,
            Command::Push,
            7,
            &[&echo[..], b"after-empty"].concat(),
        );
        raw.record(9);
        open(&mut out, 9, &echo[..3]);
        push_frame(
            &mut out,
            Command::Push,
            9,
            &[&echo[3..], b"split-address"].concat(),
        );
        if raw.send(&out).await.is_err() {
            self.count(action, "write_failed", 1);
            return;
        }
        let done = || {
            raw.synack(1).is_some()
                && raw.synack(3).is_some()
                && raw.synack(5).is_some()
                && raw.recorded(7).len() >= 11
                && raw.recorded(9).len() >= 13
                || raw.seen.closed.is_set()
        };
        wait_until(ANSWER, done).await;
        for sid in [1, 3, 5] {
            match raw.synack(sid) {
                Some(false) => self.count(action, "refused_as_expected", 1),
                Some(true) => self.count(action, "accepted_unexpectedly", 1),
                None => self.count(action, "unanswered", 1),
            }
        }
        for (sid, want) in [(7, &b"after-empty"[..]), (9, &b"split-address"[..])] {
            if raw.recorded(sid) == want {
                self.count(action, "echo_ok", 1);
            } else {
                self.count(action, "echo_wrong", 1);
            }
        }
        self.still_served(action, &mut raw).await;
    }

    /// Frames a client must not send, thousands of 64 KiB Waste frames, then a
    /// normal stream on the same session.
    async fn rule_breaking(&self, action: &'static str) {
        let Some(mut raw) = self.session(action, false).await else {
            return;
        };
        let echo = address(&self.targets.hostile_echo);
        let mut out = Vec::new();
        for i in 0..100u32 {
            push_frame(&mut out, Command::Push, 100_000 + i, b"no such stream");
            push_frame(&mut out, Command::Fin, 200_000 + i, &[]);
        }
        push_frame(&mut out, Command::SynAck, 1, b"client-sent synack");
        push_frame(&mut out, Command::ServerSettings, 0, b"v=2");
        let scheme = PaddingScheme::default();
        push_frame(
            &mut out,
            Command::UpdatePaddingScheme,
            0,
            scheme.text().as_bytes(),
        );
        push_frame(&mut out, Command::Alert, 0, b"client-sent alert");
        push_frame(&mut out, Command::HeartResponse, 0, &[]);
        for cmd in 11..=255u8 {
            push_frame(&mut out, Command::Unknown(cmd), 7, &[cmd; 10]);
        }
        // A repeated SYN for a live stream, and Settings again.
        open(&mut out, 3, &echo);
        push_frame(&mut out, Command::Syn, 3, &[]);
        push_settings(&mut out);
        if raw.send(&out).await.is_err() {
            self.count(action, "write_failed", 1);
            return;
        }
        let mut waste = Vec::new();
        push_frame(&mut waste, Command::Waste, 0, &vec![0u8; MAX_DATA_LEN]);
        let mut sent = 0u64;
        for _ in 0..self.plan.waste_frames {
            if raw.send(&waste).await.is_err() {
                self.count(action, "write_failed", 1);
                break;
            }
            sent += 1;
        }
        self.count(action, "waste_frames", sent);
        // The session still relays.
        raw.record(5);
        out.clear();
        open(&mut out, 5, &[&echo[..], b"still relaying"].concat());
        let _ = raw.send(&out).await;
        wait_until(ANSWER, || {
            raw.recorded(5).len() >= 14 || raw.seen.closed.is_set()
        })
        .await;
        if raw.recorded(5) == b"still relaying" {
            self.count(action, "echo_ok", 1);
        } else {
            self.count(action, "echo_wrong", 1);
        }
        if let Some(alert) = raw.seen.alert.borrow().as_ref() {
            log::info!("rule_breaking: server alert {alert}");
            self.count(action, "alerts", 1);
        }
        self.still_served(action, &mut raw).await;
        // A SYN before Settings must end its session with an Alert.
        if let Ok(mut early) = Raw::connect(
            self.plan.server,
            self.plan.hostile_source,
            &self.plan.tls,
            &self.plan.hostile_password,
            false,
            false,
        )
        .await
        {
            out.clear();
            open(&mut out, 1, &echo);
            let _ = early.send(&out).await;
            if early.closed_within(ANSWER).await && early.seen.alert.borrow().is_some() {
                self.count(action, "syn_before_settings_alerted", 1);
            } else {
                self.count(action, "syn_before_settings_not_alerted", 1);
            }
        }
    }

    /// Preamble, Settings, a stream and a heartbeat, one byte per TLS record.
    async fn split_records(&self, action: &'static str) {
        let plan = &self.plan;
        let Ok(mut raw) =
            Raw::connect_bare(plan.server, plan.hostile_source, &plan.tls, false).await
        else {
            self.count(action, "connect_failed", 1);
            return;
        };
        let mut out = raw::preamble(&plan.hostile_password);
        push_settings(&mut out);
        open(
            &mut out,
            1,
            &[
                &address(&self.targets.hostile_echo)[..],
                b"one byte per record",
            ]
            .concat(),
        );
        push_frame(&mut out, Command::HeartRequest, 0, &[]);
        raw.record(1);
        if raw.send_bytewise(&out).await.is_err() {
            self.count(action, "write_failed", 1);
            return;
        }
        self.count(action, "records_sent", out.len() as u64);
        let seen = raw.seen.clone();
        wait_until(ANSWER, || {
            raw.recorded(1).len() >= 19 && seen.heart_responses.get() >= 1 || seen.closed.is_set()
        })
        .await;
        if raw.recorded(1) == b"one byte per record" {
            self.count(action, "echo_ok", 1);
        } else {
            self.count(action, "echo_wrong", 1);
        }
        if seen.heart_responses.get() >= 1 {
            self.count(action, "heartbeat_answered", 1);
        } else {
            self.count(action, "heartbeat_missed", 1);
        }
    }

    /// Wrong passwords (with an HTTP-looking tail), and one preamble that never
    /// completes: the server must close them all.
    async fn wrong_password(&self, action: &'static str) {
        const WRONG: usize = 10;
        let tasks: Vec<_> = (0..=WRONG)
            .map(|i| {
                let plan = self.plan.clone();
                glommio::spawn_local(async move {
                    let mut raw =
                        Raw::connect_bare(plan.server, plan.hostile_source, &plan.tls, false)
                            .await
                            .ok()?;
                    let hello = if i < WRONG {
                        let mut hello = raw::preamble(&format!("wrong password {i}"));
                        hello.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                        hello
                    } else {
                        raw::preamble(&plan.hostile_password)[..20].to_vec()
                    };
                    raw.send(&hello).await.ok()?;
                    Some((i < WRONG, raw.closed_within(ANSWER).await))
                })
            })
            .collect();
        for task in tasks {
            let name = match task.await {
                None => "connect_failed",
                Some((true, true)) => "wrong_password_closed",
                Some((true, false)) => "wrong_password_left_open",
                Some((false, true)) => "partial_preamble_closed",
                Some((false, false)) => "partial_preamble_left_open",
            };
            self.count(action, name, 1);
        }
    }

    /// Connections reset (RST) mid-upload and mid-download.
    async fn rst_mid_stream(&self, action: &'static str) {
        if let Some(mut raw) = self.session(action, true).await {
            let mut out = Vec::new();
            open(&mut out, 1, &address(&self.targets.hostile_echo));
            let chunk = vec![0x44u8; 16 * 1024];
            for _ in 0..16 {
                push_frame(&mut out, Command::Push, 1, &chunk);
            }
            if raw.send(&out).await.is_ok() {
                self.count(action, "reset_mid_upload", 1);
            }
        }
        if let Some(mut raw) = self.session(action, true).await {
            let mut first = address(&self.targets.hostile_download);
            first.extend_from_slice(&download_request(32 << 20, 0));
            let mut out = Vec::new();
            open(&mut out, 1, &first);
            if raw.send(&out).await.is_ok() {
                let seen = raw.seen.clone();
                let enough = || seen.psh_bytes.get() >= 256 * 1024;
                wait_until(ANSWER, || enough() || seen.closed.is_set()).await;
                if enough() {
                    self.count(action, "reset_mid_download", 1);
                }
            }
        }
    }
}

/// Connections left open at the end of the load, doing nothing: the server's
/// timeouts (handshake, idle session, stalled stream) must close them.
pub struct Lingering {
    tcp: Option<glommio::net::TcpStream>,
    raws: Vec<(&'static str, Raw)>,
}

/// Opens the lingering connections.
pub async fn linger(ctx: &Ctx) -> Lingering {
    let plan = &ctx.plan;
    let source = plan.hostile_source;
    let tcp = raw::tcp(plan.server, source).await.ok();
    let mut raws = Vec::new();
    if let Ok(raw) = Raw::connect_bare(plan.server, source, &plan.tls, false).await {
        raws.push(("tls_without_preamble", raw));
    }
    let password = &plan.hostile_password;
    if let Ok(raw) = Raw::connect(plan.server, source, &plan.tls, password, true, false).await {
        raws.push(("idle_session", raw));
    }
    if let Ok(mut raw) = Raw::connect(plan.server, source, &plan.tls, password, true, false).await {
        let mut out = Vec::new();
        open(&mut out, 1, &address(&ctx.targets.stall));
        let chunk = vec![0x55u8; 16 * 1024];
        for _ in 0..128 {
            push_frame(&mut out, Command::Push, 1, &chunk);
        }
        // The server stops reading until the stall timeout: do not wait for it.
        let _ = timeout(Duration::from_secs(1), raw.send(&out)).await;
        raws.push(("stalled_stream_session", raw));
    }
    ctx.rec.count("linger", "runs", 1);
    Lingering { tcp, raws }
}

/// Counts which lingering connections the server closed by itself.
pub async fn linger_report(ctx: &Ctx, lingering: Lingering) {
    let rec = &ctx.rec;
    if let Some(mut tcp) = lingering.tcp {
        let mut byte = [0u8; 1];
        let closed = matches!(
            timeout(Duration::from_millis(200), tcp.read(&mut byte)).await,
            Some(Ok(0)) | Some(Err(_))
        );
        rec.count(
            "linger",
            if closed {
                "closed:tcp_without_tls"
            } else {
                "open:tcp_without_tls"
            },
            1,
        );
    }
    for (name, raw) in lingering.raws {
        let closed = raw.seen.closed.is_set();
        let key = match (name, closed) {
            ("tls_without_preamble", true) => "closed:tls_without_preamble",
            ("tls_without_preamble", false) => "open:tls_without_preamble",
            ("idle_session", true) => "closed:idle_session",
            ("idle_session", false) => "open:idle_session",
            (_, true) => "closed:stalled_stream_session",
            (_, false) => "open:stalled_stream_session",
        };
        rec.count("linger", key, 1);
    }
}
