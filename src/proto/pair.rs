//! The client machine against the server machine on simulated time, with no
//! sockets (quinn-proto's `tests/util.rs` `Pair` is the model): frames one side
//! sends are encoded, carried and decoded into the other; the server's driver is
//! played by a model of targets whose dials and appetite each test chooses.
//! Every session rule is tested here first; process tests check the drivers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::addr::Address;
use super::client_session::{self, ClientSession};
use super::frame::{self, Command};
use super::settings::Settings;
use crate::proto::session::{
    Action, Notice, Payload, ServerSession, SessionRules, SharedBudget, StreamEnd, StreamEvent,
};

/// The server's padding scheme in these tests.
const SCHEME: &str = "stop=2\n0=30-30\n1=100-200";

fn scheme_md5() -> String {
    super::padding::PaddingScheme::parse(SCHEME.as_bytes())
        .expect("the test scheme parses")
        .md5_hex()
        .to_owned()
}

/// How a simulated target answers its dial.
#[derive(Clone, Debug)]
pub enum Dial {
    /// Connected after this long.
    After(Duration),
    /// Fails after this long with this reason.
    FailsAfter(Duration, &'static str),
    /// Never answers.
    Never,
}

/// A target in the server driver's model.
#[derive(Debug)]
struct Target {
    /// Takes what it is sent at once (else it takes nothing).
    takes: bool,
    /// Bytes in the stream's buffer, not taken.
    buffered: usize,
    /// Bytes taken.
    received: Vec<u8>,
    /// An association rather than a TCP target.
    association: bool,
}

/// Both machines, the wire between them and the server driver's model.
pub struct Pair {
    /// The simulated time.
    pub now: Instant,
    /// The client machine.
    pub client: ClientSession,
    /// The server machine.
    pub server: ServerSession,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    /// The next dial's outcome (every dial, until changed).
    pub dial: Dial,
    /// Whether new targets take their bytes at once.
    pub targets_take: bool,
    /// A budget shared with other sessions, as the driver would measure it.
    pub shared: Option<SharedBudget>,
    dials: Vec<(Instant, u32, Result<(), String>)>,
    targets: HashMap<u32, Target>,
    /// What the client driver was told, in order.
    pub client_actions: Vec<client_session::Action>,
    /// What the server driver was told, in order (frames sent included).
    pub server_actions: Vec<Action>,
    /// Bytes delivered to the client per stream.
    pub client_received: HashMap<u32, Vec<u8>>,
    /// Rewrites the client's Settings (to play a v1 client, say).
    pub client_settings: Option<Vec<u8>>,
}

impl Pair {
    /// A v2 client and the server, both just authenticated, with `rules`.
    pub fn new(rules: SessionRules) -> Pair {
        Pair::with_client_md5(rules, &scheme_md5())
    }

    /// As [`Pair::new`], the client announcing the scheme of `md5`.
    pub fn with_client_md5(rules: SessionRules, md5: &str) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            client: ClientSession::new("pair", md5, now),
            server: ServerSession::new(rules.into(), &scheme_md5(), now),
            to_server: Vec::new(),
            to_client: Vec::new(),
            dial: Dial::After(Duration::from_millis(20)),
            targets_take: true,
            shared: None,
            dials: Vec::new(),
            targets: HashMap::new(),
            client_actions: Vec::new(),
            server_actions: Vec::new(),
            client_received: HashMap::new(),
            client_settings: None,
        }
    }

    /// Opens a stream from the client to `target` and runs the pair until quiet.
    pub fn open(&mut self, target: &str) -> u32 {
        let address = Address::parse(target).expect("a test address");
        let id = self
            .client
            .open_stream(&address, self.now)
            .expect("encodes");
        self.drive();
        id
    }

    /// Sends a raw frame from the client, as a hostile one would.
    pub fn send_raw(&mut self, cmd: Command, id: u32, data: &[u8]) {
        frame::encode(cmd, id, data, &mut self.to_server).expect("small frame");
        self.drive();
    }

    /// Sends `data` on stream `id` from the client.
    pub fn write(&mut self, id: u32, data: &[u8]) {
        for chunk in data.chunks(frame::MAX_DATA_LEN) {
            frame::encode(Command::Push, id, chunk, &mut self.to_server).expect("fits");
        }
        self.drive();
    }

    /// The client closes stream `id`.
    pub fn close(&mut self, id: u32) {
        self.client.close_stream(id);
        self.drive();
    }

    /// Stream `id`'s target sends `data` toward the client.
    pub fn target_sends(&mut self, id: u32, data: &[u8]) {
        for chunk in data.chunks(frame::MAX_DATA_LEN) {
            frame::encode(Command::Push, id, chunk, &mut self.to_client).expect("fits");
        }
        self.server
            .handle_stream_event(id, StreamEvent::Downloaded(data.len()), self.now);
        self.drive();
    }

    /// Stream `id`'s target closes (or its task ends for that reason).
    pub fn target_closes(&mut self, id: u32) {
        self.targets.remove(&id);
        self.server
            .handle_stream_event(id, StreamEvent::Ended(StreamEnd::TargetClosed), self.now);
        self.drive();
    }

    /// Stream `id`'s target starts (or stops) taking its bytes.
    pub fn set_takes(&mut self, id: u32, takes: bool) {
        if let Some(target) = self.targets.get_mut(&id) {
            target.takes = takes;
        }
        self.take_all();
        self.drive();
    }

    /// What stream `id`'s target has received.
    pub fn target_received(&self, id: u32) -> &[u8] {
        self.targets.get(&id).map_or(&[], |t| &t.received)
    }

    /// Whether the server keeps a target for stream `id`.
    pub fn has_target(&self, id: u32) -> bool {
        self.targets.contains_key(&id)
    }

    /// Bytes the client sent that the server has not read yet.
    pub fn unread_by_server(&self) -> usize {
        self.to_server.len()
    }

    /// Lets `duration` of simulated time pass, firing every deadline on the way.
    /// Panics if a machine keeps asking for a deadline that has passed (its
    /// `handle_timeout` does not clear it).
    pub fn advance(&mut self, duration: Duration) {
        let end = self.now + duration;
        let mut stuck = 0;
        loop {
            let next = [
                self.server.poll_timeout(),
                self.client.poll_timeout(),
                self.dials.iter().map(|d| d.0).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|n| *n <= end) else {
                break;
            };
            if next <= self.now {
                stuck += 1;
                assert!(stuck < 1000, "a deadline at {next:?} is never cleared");
            } else {
                stuck = 0;
            }
            self.now = self.now.max(next);
            self.server.handle_timeout(self.now);
            self.client.handle_timeout(self.now);
            self.drive();
        }
        self.now = end;
        self.server.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
        self.drive();
    }

    /// Carries frames and actions both ways until nothing moves.
    pub fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(action) = self.client.poll_action() {
                moved = true;
                match &action {
                    client_session::Action::Send(cmd, id, data) => {
                        let data = match (cmd, &self.client_settings) {
                            (Command::Settings, Some(replaced)) => replaced,
                            _ => data,
                        };
                        frame::encode(*cmd, *id, data, &mut self.to_server).expect("fits");
                    }
                    _ => self.client_actions.push(action),
                }
            }
            while let Some(action) = self.server.poll_action() {
                moved = true;
                self.carry_out(&action);
                self.server_actions.push(action);
            }
            let due: Vec<_> = {
                let now = self.now;
                let (due, later) = self.dials.drain(..).partition(|d| d.0 <= now);
                self.dials = later;
                due
            };
            for (_, id, result) in due {
                moved = true;
                let event = match result {
                    Ok(()) => StreamEvent::Dialed,
                    Err(why) => {
                        self.targets.remove(&id);
                        StreamEvent::Failed(why)
                    }
                };
                self.server.handle_stream_event(id, event, self.now);
            }
            moved |= self.carry_to_server();
            moved |= self.carry_to_client();
            if !moved {
                return;
            }
        }
    }

    /// The server driver's model carrying out one action.
    fn carry_out(&mut self, action: &Action) {
        match action {
            Action::Send(cmd, id, payload) => {
                let data = match payload {
                    Payload::Empty => Vec::new(),
                    Payload::PaddingScheme => SCHEME.as_bytes().to_vec(),
                    Payload::ServerSettings => Settings::server().encode(),
                    Payload::Text(text) => text.as_bytes().to_vec(),
                };
                frame::encode(*cmd, *id, &data, &mut self.to_client).expect("fits");
            }
            Action::Open(id) => {
                self.targets.insert(
                    *id,
                    Target {
                        takes: self.targets_take,
                        buffered: 0,
                        received: Vec::new(),
                        association: false,
                    },
                );
            }
            Action::Connect(id, _) | Action::Associate(id) => {
                if let Some(target) = self.targets.get_mut(id) {
                    target.association = matches!(action, Action::Associate(_));
                }
                let outcome = match &self.dial {
                    Dial::After(d) => Some((*d, Ok(()))),
                    Dial::FailsAfter(d, why) => Some((*d, Err(why.to_string()))),
                    Dial::Never => None,
                };
                if let Some((after, result)) = outcome {
                    self.dials.push((self.now + after, *id, result));
                }
            }
            Action::Stop(id) => {
                // The task ends when told to stop.
                self.targets.remove(id);
                let (server, now) = (&mut self.server, self.now);
                server.handle_stream_event(*id, StreamEvent::Ended(StreamEnd::ClientDone), now);
            }
            Action::Forget(id) => {
                self.targets.remove(id);
            }
            Action::Finish(id) => {
                // A target holding bytes drains; one that took all ends.
                let left = self.targets.get(id).map(|t| t.buffered);
                let event = match left {
                    Some(0) => StreamEvent::Ended(StreamEnd::ClientDone),
                    Some(_) => StreamEvent::Draining,
                    None => return,
                };
                self.server.handle_stream_event(*id, event, self.now);
            }
            Action::Recount => {
                let counts: Vec<_> = self
                    .targets
                    .iter()
                    .map(|(id, t)| (*id, t.buffered))
                    .collect();
                for (id, left) in counts {
                    self.server.handle_stream_event(
                        id,
                        StreamEvent::Unacknowledged(left),
                        self.now,
                    );
                }
                self.server.handle_budget(self.shared, self.now);
            }
            Action::Measure(id) => {
                let left = self.targets.get(id).map_or(0, |t| t.buffered);
                self.server
                    .handle_stream_event(*id, StreamEvent::Unacknowledged(left), self.now);
            }
            Action::Housekeeping | Action::Notice(_) | Action::Close(_) => {}
        }
    }

    /// Feeds the server the client's frames while it wants to read.
    fn carry_to_server(&mut self) -> bool {
        let mut used = 0;
        while self.server.wants_read() {
            let Some(frame) = frame::decode(&self.to_server[used..]) else {
                break;
            };
            used += frame.wire_len();
            if let Some(delivery) = self.server.handle_frame(frame, self.now) {
                if let Some(target) = self.targets.get_mut(&delivery.id) {
                    target.buffered += delivery.data.len();
                    target.received.extend_from_slice(delivery.data);
                }
            }
            // The driver carries out the actions of each frame before the next.
            while let Some(action) = self.server.poll_action() {
                self.carry_out(&action);
                self.server_actions.push(action);
            }
            if let Some(shared) = self.shared {
                self.server.handle_budget(Some(shared), self.now);
            }
        }
        self.to_server.drain(..used);
        self.take_all();
        used > 0
    }

    /// Targets that take their bytes take them now.
    fn take_all(&mut self) {
        let takers: Vec<_> = self
            .targets
            .iter_mut()
            .filter(|(_, t)| t.takes && t.buffered > 0)
            .map(|(id, t)| (*id, std::mem::take(&mut t.buffered)))
            .collect();
        for (id, n) in takers {
            self.server
                .handle_stream_event(id, StreamEvent::Taken(n), self.now);
            self.server
                .handle_stream_event(id, StreamEvent::Unacknowledged(0), self.now);
        }
    }

    fn carry_to_client(&mut self) -> bool {
        let mut used = 0;
        while let Some(frame) = frame::decode(&self.to_client[used..]) {
            used += frame.wire_len();
            if let Some(delivery) = self.client.handle_frame(frame, self.now) {
                self.client_received
                    .entry(delivery.id)
                    .or_default()
                    .extend_from_slice(delivery.data);
            }
        }
        self.to_client.drain(..used);
        used > 0
    }

    /// The server's notices so far.
    pub fn notices(&self) -> Vec<&Notice> {
        self.server_actions
            .iter()
            .filter_map(|a| match a {
                Action::Notice(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// The frames the server sent for stream `id`, by command.
    pub fn sent_to_client(&self, id: u32) -> Vec<Command> {
        self.server_actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(cmd, sid, _) if *sid == id => Some(*cmd),
                _ => None,
            })
            .collect()
    }

    /// Whether the client was told `action`.
    pub fn client_saw(&self, action: &client_session::Action) -> bool {
        self.client_actions.contains(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::client_session::SYNACK_TIMEOUT;
    use crate::proto::session::{test_rules, Close, Refusal};
    use client_session::Action as Client;

    /// A client of protocol version 1 (its Settings say `v=1`).
    fn v1_settings() -> Vec<u8> {
        format!("v=1\nclient=old\npadding-md5={}", scheme_md5()).into_bytes()
    }

    #[test]
    fn a_v2_stream_opens_relays_and_closes_both_ways() {
        let mut pair = Pair::new(test_rules());
        let id = pair.open("127.0.0.1:443");
        assert_eq!(
            pair.client.server_version(),
            2,
            "ServerSettings answered v2"
        );
        assert_eq!(
            pair.server.stream_state(id),
            Some(&crate::proto::session::StreamState::Dialing)
        );
        pair.write(id, b"hello");
        assert!(
            !pair.client_saw(&Client::Established(id)),
            "not before the dial"
        );
        pair.advance(Duration::from_millis(20));
        assert!(pair.client_saw(&Client::Established(id)));
        assert_eq!(
            pair.target_received(id),
            b"hello",
            "bytes sent while dialing wait for it"
        );
        pair.target_sends(id, b"world");
        assert_eq!(pair.client_received[&id], b"world");
        pair.target_closes(id);
        assert!(pair.client_saw(&Client::Finished(id)));
        assert_eq!(pair.server.streams(), 0);
        assert_eq!(pair.sent_to_client(id), [Command::SynAck, Command::Fin]);
    }

    #[test]
    fn a_v1_client_gets_no_synack_and_its_streams_open_at_the_timeout() {
        let mut pair = Pair::new(test_rules());
        pair.client_settings = Some(v1_settings());
        let id = pair.open("127.0.0.1:443");
        pair.advance(Duration::from_secs(2));
        assert_eq!(pair.server.version(), 1);
        assert_eq!(pair.client.server_version(), 0, "no ServerSettings for v1");
        assert!(pair.sent_to_client(id).is_empty(), "no SYNACK for v1");
        assert!(!pair.client_saw(&Client::Established(id)));
        pair.advance(SYNACK_TIMEOUT);
        assert!(pair.client_saw(&Client::Established(id)), "counts as open");
        assert!(!pair.client.is_ended());
        // A refusal is FIN alone.
        pair.dial = Dial::FailsAfter(Duration::ZERO, "refused");
        let refused = pair.open("127.0.0.1:444");
        assert_eq!(pair.sent_to_client(refused), [Command::Fin]);
    }

    #[test]
    fn padding_goes_once_to_a_client_that_lacks_it_and_again_when_changed() {
        let mut pair = Pair::with_client_md5(test_rules(), "stale");
        pair.drive();
        let updates = |pair: &Pair| {
            pair.client_actions
                .iter()
                .filter(|a| matches!(a, Client::NewPaddingScheme(_)))
                .count()
        };
        assert_eq!(updates(&pair), 1);
        pair.server.handle_padding_changed(&scheme_md5());
        pair.drive();
        assert_eq!(updates(&pair), 1, "the same scheme is not sent again");
        pair.server.handle_padding_changed("another");
        pair.server.handle_padding_changed("another");
        pair.drive();
        assert_eq!(updates(&pair), 2, "a new scheme goes once");
        let mut current = Pair::new(test_rules());
        current.drive();
        assert_eq!(
            updates(&current),
            0,
            "a client with the scheme is not sent it"
        );
    }

    #[test]
    fn heartbeats_are_answered() {
        let mut pair = Pair::new(test_rules());
        pair.client.heartbeat();
        pair.drive();
        assert!(pair.client_saw(&Client::HeartbeatAnswered));
        pair.send_raw(Command::HeartResponse, 0, b"");
        pair.send_raw(Command::Waste, 0, &[0; 100]);
        assert!(!pair.server.is_ended());
    }

    #[test]
    fn a_session_with_no_stream_ends_after_its_idle_timeout_and_not_before() {
        let mut pair = Pair::new(test_rules());
        let id = pair.open("127.0.0.1:443");
        pair.advance(Duration::from_secs(50));
        assert!(!pair.server.is_ended(), "a stream is open");
        pair.target_closes(id);
        pair.advance(Duration::from_secs(29));
        pair.client.heartbeat();
        pair.drive();
        pair.advance(Duration::from_secs(29));
        assert!(!pair.server.is_ended(), "a heartbeat is activity");
        pair.advance(Duration::from_secs(2));
        assert!(pair
            .server_actions
            .contains(&Action::Close(Close::Idle(Duration::from_secs(30)))));
        assert!(pair.server.is_ended());
        assert_eq!(pair.server.poll_timeout(), None);
    }

    #[test]
    fn a_slow_dial_gets_synack_at_the_deadline_and_fin_when_it_fails() {
        let mut pair = Pair::new(test_rules());
        pair.dial = Dial::FailsAfter(Duration::from_secs(5), "connection timed out");
        let id = pair.open("127.0.0.1:443");
        pair.advance(Duration::from_millis(1999));
        assert!(pair.sent_to_client(id).is_empty());
        pair.advance(Duration::from_millis(1));
        assert_eq!(pair.sent_to_client(id), [Command::SynAck]);
        assert!(pair.notices().contains(&&Notice::SynAckDeadline(id)));
        assert!(
            pair.client_saw(&Client::Established(id)),
            "before the client's 3 s"
        );
        assert_eq!(pair.server.dialing(), 1, "still counts as dialing");
        pair.advance(Duration::from_secs(3));
        assert_eq!(pair.sent_to_client(id), [Command::SynAck, Command::Fin]);
        assert!(pair.client_saw(&Client::Finished(id)));
        assert!(!pair.client.is_ended());
        assert_eq!((pair.server.streams(), pair.server.dialing()), (0, 0));
    }

    #[test]
    fn a_dial_that_fails_in_time_is_refused_with_its_reason() {
        let mut pair = Pair::new(test_rules());
        pair.dial = Dial::FailsAfter(Duration::from_millis(5), "connection refused");
        let id = pair.open("127.0.0.1:443");
        pair.advance(Duration::from_millis(5));
        assert!(pair.client_saw(&Client::Refused(id, "connection refused".into())));
        assert!(pair.client_saw(&Client::Finished(id)));
    }

    #[test]
    fn a_v2_server_that_never_answers_ends_the_client_session_at_3_s() {
        let mut slow = test_rules();
        slow.synack_deadline = Duration::from_secs(10);
        let mut pair = Pair::new(slow);
        pair.dial = Dial::Never;
        let id = pair.open("127.0.0.1:443");
        pair.advance(SYNACK_TIMEOUT - Duration::from_millis(1));
        assert!(!pair.client.is_ended());
        pair.advance(Duration::from_millis(1));
        assert!(pair.client_saw(&Client::Close(client_session::Close::SynAckTimeout(id))));
        assert!(pair.client.is_ended());
    }

    #[test]
    fn caps_refuse_with_the_reason_and_free_again() {
        let mut pair = Pair::new(test_rules());
        pair.dial = Dial::Never;
        let a = pair.open("127.0.0.1:1");
        let b = pair.open("127.0.0.1:2");
        let c = pair.open("127.0.0.1:3");
        assert!(pair.client_saw(&Client::Refused(c, Refusal::TooManyDialing.reason())));
        assert!(pair
            .notices()
            .contains(&&Notice::Refused(c, Refusal::TooManyDialing)));
        pair.dial = Dial::After(Duration::ZERO);
        pair.server
            .handle_stream_event(a, StreamEvent::Dialed, pair.now);
        pair.server
            .handle_stream_event(b, StreamEvent::Dialed, pair.now);
        pair.drive();
        let d = pair.open("127.0.0.1:4");
        let e = pair.open("127.0.0.1:5");
        pair.advance(Duration::ZERO);
        assert!(
            pair.client_saw(&Client::Established(d)) && pair.client_saw(&Client::Established(e))
        );
        let f = pair.open("127.0.0.1:6");
        assert!(pair.client_saw(&Client::Refused(f, Refusal::TooManyStreams.reason())));
        // The same id refused twice in a row gets one answer.
        pair.send_raw(Command::Syn, f, b"");
        assert_eq!(pair.sent_to_client(f), [Command::SynAck, Command::Fin]);
        pair.target_closes(a);
        let g = pair.open("127.0.0.1:7");
        pair.advance(Duration::ZERO);
        assert!(
            pair.client_saw(&Client::Established(g)),
            "a slot freed is used again"
        );
    }

    #[test]
    fn a_syn_before_settings_ends_the_session_with_an_alert() {
        let now = Instant::now();
        let mut server = ServerSession::new(test_rules().into(), "md5", now);
        let mut wire = Vec::new();
        frame::encode(Command::Syn, 1, b"", &mut wire).unwrap();
        server.handle_frame(frame::decode(&wire).unwrap(), now);
        let actions: Vec<_> = std::iter::from_fn(|| server.poll_action()).collect();
        assert_eq!(
            actions,
            [
                Action::Send(
                    Command::Alert,
                    0,
                    Payload::Text(crate::proto::session::ALERT_NO_SETTINGS.into())
                ),
                Action::Close(Close::Alerted(crate::proto::session::ALERT_NO_SETTINGS)),
            ]
        );
        assert!(server.is_ended() && !server.wants_read());
        // And the client side reads it as the end.
        let mut client = ClientSession::new("t", "m", now);
        let mut alert = Vec::new();
        frame::encode(
            Command::Alert,
            0,
            b"client did not send its settings",
            &mut alert,
        )
        .unwrap();
        client.handle_frame(frame::decode(&alert).unwrap(), now);
        assert_eq!(
            std::iter::from_fn(|| client.poll_action()).last(),
            Some(Client::Close(client_session::Close::Alert(
                "client did not send its settings".into()
            )))
        );
    }

    #[test]
    fn addresses_come_in_pieces_late_or_wrong() {
        let mut pair = Pair::new(test_rules());
        pair.drive();
        // In pieces, the rest of the frame going to the target.
        let mut address = Vec::new();
        Address::parse("example.com:80")
            .unwrap()
            .encode(&mut address)
            .unwrap();
        pair.send_raw(Command::Syn, 1, b"");
        pair.send_raw(Command::Push, 1, &address[..3]);
        assert_eq!(
            pair.server.stream_state(1),
            Some(&crate::proto::session::StreamState::AwaitingAddress)
        );
        let mut rest = address[3..].to_vec();
        rest.extend_from_slice(b"GET /");
        pair.send_raw(Command::Push, 1, &rest);
        assert_eq!(pair.target_received(1), b"GET /");
        // Late: refused at the address deadline.
        pair.send_raw(Command::Syn, 3, b"");
        pair.advance(Duration::from_secs(3));
        let timeout = Refusal::AddressTimeout(Duration::from_secs(3));
        assert!(pair.notices().contains(&&Notice::Refused(3, timeout)));
        assert_eq!(pair.sent_to_client(3), [Command::SynAck, Command::Fin]);
        // Wrong.
        pair.send_raw(Command::Syn, 5, b"");
        pair.send_raw(Command::Push, 5, &[9, 9, 9]);
        assert!(matches!(
            pair.notices().last(),
            Some(Notice::Refused(5, Refusal::BadAddress(_)))
        ));
        // FIN before an address: gone, nothing said.
        pair.send_raw(Command::Syn, 7, b"");
        pair.send_raw(Command::Fin, 7, b"");
        assert!(pair.sent_to_client(7).is_empty());
        assert_eq!(pair.server.streams(), 1);
    }

    #[test]
    fn udp_over_tcp_v2_is_an_association_capped_per_session_and_v1_is_refused() {
        let mut pair = Pair::new(test_rules());
        let first = pair.open("sp.v2.udp-over-tcp.arpa:0");
        assert_eq!(
            pair.server.stream_state(first),
            Some(&crate::proto::session::StreamState::Association)
        );
        assert_eq!((pair.server.associations(), pair.server.dialing()), (1, 0));
        pair.advance(Duration::from_millis(20));
        assert!(pair.client_saw(&Client::Established(first)));
        let second = pair.open("sp.v2.udp-over-tcp.arpa:0");
        assert!(pair.client_saw(&Client::Refused(
            second,
            Refusal::TooManyAssociations.reason()
        )));
        let legacy = pair.open("sp.udp-over-tcp.arpa:0");
        assert!(pair.client_saw(&Client::Refused(legacy, Refusal::UotV1.reason())));
        // An association with no datagram for its idle timeout ends with FIN.
        pair.advance(Duration::from_secs(19));
        assert!(pair.has_target(first));
        pair.advance(Duration::from_secs(2));
        assert!(pair.client_saw(&Client::Finished(first)));
        assert!(pair
            .notices()
            .contains(&&Notice::StreamIdle(first, Duration::from_secs(20))));
        assert_eq!(pair.server.associations(), 0);
    }

    #[test]
    fn a_quiet_stream_is_closed_after_its_idle_timeout() {
        let mut pair = Pair::new(test_rules());
        let id = pair.open("127.0.0.1:443");
        pair.advance(Duration::from_secs(50));
        pair.target_sends(id, b"x");
        pair.advance(Duration::from_secs(50));
        assert!(!pair.client_saw(&Client::Finished(id)), "activity counts");
        pair.advance(Duration::from_secs(11));
        assert!(pair.client_saw(&Client::Finished(id)));
    }

    #[test]
    fn a_target_that_takes_nothing_pauses_the_session_then_loses_its_stream() {
        let mut pair = Pair::new(test_rules());
        pair.targets_take = false;
        let stuck = pair.open("127.0.0.1:1");
        pair.targets_take = true;
        let other = pair.open("127.0.0.1:2");
        pair.advance(Duration::from_millis(20));
        pair.write(stuck, &vec![1; 200 * 1024]);
        assert!(!pair.server.wants_read(), "past the stream's buffer");
        pair.write(other, b"waits");
        assert!(pair.unread_by_server() > 0);
        assert_eq!(pair.target_received(other), b"");
        pair.advance(Duration::from_millis(4900));
        assert!(
            !pair.server.wants_read(),
            "no byte taken for less than the stall timeout"
        );
        pair.advance(Duration::from_millis(200));
        assert!(pair.notices().contains(&&Notice::Stalled(stuck)));
        assert!(
            pair.client_saw(&Client::Finished(stuck)),
            "FIN for the stalled stream"
        );
        assert!(pair.server.wants_read());
        assert_eq!(pair.target_received(other), b"waits", "the session goes on");
        assert_eq!(pair.server.upload_held(), 0);
    }

    #[test]
    fn past_the_session_budget_reading_waits_for_targets_and_stalled_ones_are_closed() {
        let mut roomy = test_rules();
        roomy.stream_buffer = 1024 * 1024;
        roomy.session_buffer = 96 * 1024;
        let mut pair = Pair::new(roomy);
        pair.targets_take = false;
        let stuck = pair.open("127.0.0.1:1");
        let slow = pair.open("127.0.0.1:2");
        pair.advance(Duration::from_millis(20));
        pair.write(slow, &vec![2; 60 * 1024]);
        pair.write(stuck, &vec![1; 100 * 1024]);
        assert!(!pair.server.wants_read());
        assert!(pair.notices().contains(&&Notice::SessionBudget));
        assert!(
            pair.unread_by_server() > 0,
            "the rest waits in the client's buffers"
        );
        // The slow target takes its bytes: reading goes on until the stuck one
        // alone passes the budget again, and from then on it has 5 s.
        pair.advance(Duration::from_secs(1));
        pair.set_takes(slow, true);
        // Seen at the next recount (every 10 to 320 ms while paused).
        for _ in 0..32 {
            if pair.unread_by_server() == 0 {
                break;
            }
            pair.advance(Duration::from_millis(10));
        }
        assert_eq!(pair.unread_by_server(), 0);
        assert!(!pair.server.wants_read());
        pair.advance(Duration::from_millis(4900));
        assert!(
            !pair.server.wants_read(),
            "less than the stall timeout without a byte taken"
        );
        pair.advance(Duration::from_millis(200));
        assert!(pair.notices().contains(&&Notice::Stalled(stuck)));
        assert!(!pair.notices().contains(&&Notice::Stalled(slow)));
        assert!(pair.client_saw(&Client::Finished(stuck)));
        assert!(
            pair.server.wants_read(),
            "reading goes on once the budget is met"
        );
    }

    #[test]
    fn a_budget_shared_with_other_sessions_pauses_reading_until_it_is_met() {
        let mut pair = Pair::new(test_rules());
        let id = pair.open("127.0.0.1:1");
        pair.advance(Duration::from_millis(20));
        pair.shared = Some(SharedBudget::User);
        pair.write(id, b"one");
        assert!(!pair.server.wants_read());
        assert!(pair
            .notices()
            .contains(&&Notice::SharedBudget(SharedBudget::User)));
        pair.write(id, b"two");
        assert_eq!(pair.target_received(id), b"one");
        pair.shared = None;
        pair.advance(Duration::from_millis(10));
        assert!(pair.server.wants_read());
        assert_eq!(pair.target_received(id), b"onetwo");
    }

    #[test]
    fn a_finished_stream_drains_to_its_target_or_is_closed_when_it_stalls() {
        let mut pair = Pair::new(test_rules());
        pair.targets_take = false;
        let drains = pair.open("127.0.0.1:1");
        let stalls = pair.open("127.0.0.1:2");
        pair.advance(Duration::from_millis(20));
        pair.write(drains, &[1; 1000]);
        pair.write(stalls, &[2; 1000]);
        pair.close(drains);
        pair.close(stalls);
        assert_eq!(
            pair.server.stream_state(drains),
            Some(&crate::proto::session::StreamState::Draining)
        );
        assert_eq!(pair.server.streams(), 2, "still counted while draining");
        pair.advance(Duration::from_secs(2));
        pair.set_takes(drains, true);
        assert_eq!(pair.server.stream_state(drains), None, "drained");
        // Looked at every 10 ms at first, then less often, up to every 320 ms.
        pair.advance(Duration::from_millis(3400));
        assert!(pair.notices().contains(&&Notice::Stalled(stalls)));
        assert_eq!(pair.server.streams(), 0);
        for id in [drains, stalls] {
            assert_eq!(
                pair.sent_to_client(id),
                [Command::SynAck],
                "the client ended it: no FIN"
            );
        }
    }

    #[test]
    fn the_whole_pair_suite_is_simulated() {
        // A day of simulated time with a heartbeat now and then costs nothing real.
        let started = std::time::Instant::now();
        let mut pair = Pair::new(test_rules());
        let id = pair.open("127.0.0.1:1");
        for _ in 0..24 * 60 {
            pair.target_sends(id, b".");
            pair.advance(Duration::from_secs(59));
        }
        assert!(!pair.server.is_ended());
        assert_eq!(pair.client_received[&id].len(), 24 * 60);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
