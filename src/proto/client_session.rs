//! The client side of a session as a state machine with no I/O, with the same
//! shape and names as the server's ([`super::session`]): the caller opens streams
//! and feeds in the server's frames and the time; [`Action`]s and the next
//! deadline come out for the driver (`crate::client::ClientSession`).
//!
//! The rules: Settings go first (queued at creation); streams are numbered from
//! 1 and never reused, each opened with SYN and its address; a SYNACK is matched
//! to a stream still waiting for one (empty: open; with text: the server's
//! reason); a v2 server that sends no SYNACK within [`SYNACK_TIMEOUT`] has a stuck
//! session, which ends, while a v1 server never sends one, so its streams count
//! as open then; PSH and FIN reach only live streams; the version comes from
//! ServerSettings; a new padding scheme is taken when it parses; heartbeats are
//! answered; an Alert ends everything. Frames only a client sends, and unknown
//! ones, are ignored.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::addr::Address;
use super::error::{AddrError, PaddingError};
use super::frame::{Command, Frame};
use super::padding::PaddingScheme;
use super::session::Delivery;
use super::settings::Settings;

/// A v2 stream without SYNACK this long means a stuck session (the reference
/// client's rule, see docs/protocol.md).
pub const SYNACK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Close {
    /// The server sent Alert with this text.
    Alert(String),
    /// A v2 server sent no SYNACK for this stream within [`SYNACK_TIMEOUT`].
    SynAckTimeout(u32),
}

/// What the driver must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this frame to the server.
    Send(Command, u32, Vec<u8>),
    /// Stream `id` is open (empty SYNACK, or a v1 server's silence).
    Established(u32),
    /// The server refused stream `id` with this reason; its FIN follows.
    Refused(u32, String),
    /// The server ended stream `id` (FIN); it is forgotten.
    Finished(u32),
    /// Shape the coming writes with this scheme.
    NewPaddingScheme(PaddingScheme),
    /// The server sent a scheme that is not taken (the session keeps its own).
    PaddingSchemeRefused(PaddingError),
    /// The server answered a heartbeat.
    HeartbeatAnswered,
    /// The session is over; nothing follows.
    Close(Close),
}

struct Stream {
    awaiting_synack: bool,
}

/// The client side of one session. See the module documentation.
pub struct ClientSession {
    streams: HashMap<u32, Stream>,
    synack_deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    actions: VecDeque<Action>,
    next_id: u32,
    server_version: u32,
    answered: bool,
    ended: bool,
}

impl ClientSession {
    /// A session that has just authenticated at `now`: its Settings (naming
    /// `client_name` and the md5 of the padding scheme it has) are queued.
    pub fn new(client_name: &str, padding_md5: &str, _now: Instant) -> Self {
        let settings = Settings::client(client_name, padding_md5).encode();
        ClientSession {
            streams: HashMap::new(),
            synack_deadlines: BinaryHeap::new(),
            actions: VecDeque::from([Action::Send(Command::Settings, 0, settings)]),
            next_id: 1,
            server_version: 0,
            answered: false,
            ended: false,
        }
    }

    /// Opens a stream to `target` at `now`: SYN and the address are queued; its
    /// SYNACK is due within [`SYNACK_TIMEOUT`].
    pub fn open_stream(&mut self, target: &Address, now: Instant) -> Result<u32, AddrError> {
        let mut address = Vec::new();
        target.encode(&mut address)?;
        let id = self.next_id;
        self.next_id += 1;
        self.streams.insert(
            id,
            Stream {
                awaiting_synack: true,
            },
        );
        self.synack_deadlines
            .push(Reverse((now + SYNACK_TIMEOUT, id)));
        self.actions
            .push_back(Action::Send(Command::Syn, id, Vec::new()));
        self.actions
            .push_back(Action::Send(Command::Push, id, address));
        Ok(id)
    }

    /// The client closes stream `id` itself: FIN is queued and it is forgotten.
    pub fn close_stream(&mut self, id: u32) {
        if self.streams.remove(&id).is_some() && !self.ended {
            self.actions
                .push_back(Action::Send(Command::Fin, id, Vec::new()));
        }
    }

    /// Asks the server for a heartbeat ([`Action::HeartbeatAnswered`] follows).
    pub fn heartbeat(&mut self) {
        if !self.ended {
            self.actions
                .push_back(Action::Send(Command::HeartRequest, 0, Vec::new()));
        }
    }

    /// The session ended for a reason of the driver's (connection lost): every
    /// stream is forgotten.
    pub fn end(&mut self) {
        self.ended = true;
        self.streams.clear();
        self.synack_deadlines.clear();
    }

    /// Streams not yet closed.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// The protocol version from the server's ServerSettings (0 before one came:
    /// a version 1 server sends none, and no SYNACK either).
    pub fn server_version(&self) -> u32 {
        self.server_version
    }

    /// Whether the server has sent a frame only an AnyTLS server sends. A session
    /// that ends before one came most likely had its password refused.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The next action for the driver, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] must be called at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        self.synack_deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Time passed: SYNACKs due at `now` that did not come are acted on.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.synack_deadlines.peek() {
            if at > now || self.ended {
                break;
            }
            self.synack_deadlines.pop();
            let Some(stream) = self.streams.get_mut(&id).filter(|s| s.awaiting_synack) else {
                continue;
            };
            if self.server_version >= 2 {
                self.close(Close::SynAckTimeout(id));
            } else {
                stream.awaiting_synack = false;
                self.actions.push_back(Action::Established(id));
            }
        }
    }

    /// One frame from the server. A PSH's data for a live stream is handed back.
    pub fn handle_frame<'a>(&mut self, frame: Frame<'a>, _now: Instant) -> Option<Delivery<'a>> {
        if self.ended {
            return None;
        }
        let id = frame.stream_id;
        self.answered |= !matches!(
            frame.cmd,
            Command::Syn | Command::Settings | Command::Unknown(_)
        );
        match frame.cmd {
            Command::Push => {
                if self.streams.contains_key(&id) {
                    return Some(Delivery {
                        id,
                        data: frame.data,
                    });
                }
            }
            Command::Fin => {
                if self.streams.remove(&id).is_some() {
                    self.actions.push_back(Action::Finished(id));
                }
            }
            Command::SynAck => {
                if let Some(stream) = self.streams.get_mut(&id).filter(|s| s.awaiting_synack) {
                    stream.awaiting_synack = false;
                    self.actions.push_back(if frame.data.is_empty() {
                        Action::Established(id)
                    } else {
                        let reason = String::from_utf8_lossy(frame.data).into_owned();
                        Action::Refused(id, reason)
                    });
                }
            }
            Command::Alert => {
                self.close(Close::Alert(
                    String::from_utf8_lossy(frame.data).into_owned(),
                ));
            }
            Command::UpdatePaddingScheme => {
                let scheme = PaddingScheme::parse(frame.data)
                    .and_then(|scheme| scheme.check_bounds().map(|()| scheme));
                self.actions.push_back(match scheme {
                    Ok(scheme) => Action::NewPaddingScheme(scheme),
                    Err(why) => Action::PaddingSchemeRefused(why),
                });
            }
            Command::ServerSettings => {
                self.server_version = Settings::decode(frame.data).map_or(0, |s| s.version());
            }
            Command::HeartRequest => {
                self.actions
                    .push_back(Action::Send(Command::HeartResponse, id, Vec::new()));
            }
            Command::HeartResponse => self.actions.push_back(Action::HeartbeatAnswered),
            Command::Waste | Command::Syn | Command::Settings | Command::Unknown(_) => {}
        }
        None
    }

    fn close(&mut self, why: Close) {
        self.end();
        self.actions.push_back(Action::Close(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cmd: Command, stream_id: u32, data: &[u8]) -> Frame<'_> {
        Frame {
            cmd,
            stream_id,
            data,
        }
    }

    fn target() -> Address {
        Address::Domain("example.com".into(), 443)
    }

    fn drain(session: &mut ClientSession) -> Vec<Action> {
        std::iter::from_fn(|| session.poll_action()).collect()
    }

    #[test]
    fn settings_go_first_and_streams_are_numbered_from_one_never_reused() {
        let now = Instant::now();
        let mut session = ClientSession::new("test", "md5", now);
        let first = drain(&mut session);
        assert!(
            matches!(&first[..], [Action::Send(Command::Settings, 0, text)]
                if text.as_slice() == b"v=2\nclient=test\npadding-md5=md5"),
            "{first:?}"
        );
        assert_eq!(session.open_stream(&target(), now), Ok(1));
        assert_eq!(session.open_stream(&target(), now), Ok(2));
        session.close_stream(1);
        assert_eq!(session.open_stream(&target(), now), Ok(3));
        assert_eq!(session.open_streams(), 2);
        let sent: Vec<(Command, u32)> = drain(&mut session)
            .into_iter()
            .map(|a| match a {
                Action::Send(cmd, id, _) => (cmd, id),
                other => panic!("{other:?}"),
            })
            .collect();
        use Command::*;
        assert_eq!(
            sent,
            [
                (Syn, 1),
                (Push, 1),
                (Syn, 2),
                (Push, 2),
                (Fin, 1),
                (Syn, 3),
                (Push, 3)
            ]
        );
    }

    #[test]
    fn only_a_frame_a_server_sends_counts_as_an_answer() {
        let now = Instant::now();
        let mut session = ClientSession::new("t", "m", now);
        session.open_stream(&target(), now).unwrap();
        for cmd in [Command::Unknown(0x48), Command::Syn, Command::Settings] {
            session.handle_frame(frame(cmd, 1, b"TTP/1.1 400"), now);
            assert!(!session.answered(), "{cmd:?} is no answer");
        }
        session.handle_frame(frame(Command::ServerSettings, 0, b"v=2"), now);
        assert!(session.answered());
    }

    #[test]
    fn synack_opens_or_refuses_a_waiting_stream_once() {
        let now = Instant::now();
        let mut session = ClientSession::new("t", "m", now);
        let ok = session.open_stream(&target(), now).unwrap();
        let no = session.open_stream(&target(), now).unwrap();
        drain(&mut session);
        session.handle_frame(frame(Command::SynAck, ok, b""), now);
        session.handle_frame(frame(Command::SynAck, ok, b""), now);
        session.handle_frame(frame(Command::SynAck, no, b"dial failed"), now);
        session.handle_frame(frame(Command::SynAck, 99, b""), now);
        session.handle_frame(frame(Command::Fin, no, b""), now);
        assert_eq!(
            drain(&mut session),
            [
                Action::Established(ok),
                Action::Refused(no, "dial failed".into()),
                Action::Finished(no)
            ],
            "a second SYNACK, and one for no stream, are ignored"
        );
        assert_eq!(session.open_streams(), 1);
    }

    #[test]
    fn data_and_fin_reach_only_live_streams() {
        let now = Instant::now();
        let mut session = ClientSession::new("t", "m", now);
        let id = session.open_stream(&target(), now).unwrap();
        assert_eq!(
            session.handle_frame(frame(Command::Push, id, b"hi"), now),
            Some(Delivery { id, data: b"hi" })
        );
        assert_eq!(
            session.handle_frame(frame(Command::Push, id + 1, b"x"), now),
            None
        );
        session.handle_frame(frame(Command::Fin, id, b""), now);
        assert_eq!(
            session.handle_frame(frame(Command::Push, id, b"late"), now),
            None
        );
        session.handle_frame(frame(Command::Fin, id, b""), now);
        let finished = drain(&mut session)
            .into_iter()
            .filter(|a| matches!(a, Action::Finished(_)))
            .count();
        assert_eq!(finished, 1);
    }

    #[test]
    fn server_settings_set_the_version_and_bad_ones_reset_it() {
        let now = Instant::now();
        let mut session = ClientSession::new("t", "m", now);
        assert_eq!(session.server_version(), 0);
        session.handle_frame(frame(Command::ServerSettings, 0, b"v=2"), now);
        assert_eq!(session.server_version(), 2);
        session.handle_frame(frame(Command::ServerSettings, 0, b"\xff\xfe"), now);
        assert_eq!(session.server_version(), 0);
    }

    #[test]
    fn a_missing_synack_ends_a_v2_session_and_opens_a_v1_stream() {
        let start = Instant::now();
        for (version, expected) in [
            (2, Action::Close(Close::SynAckTimeout(1))),
            (1, Action::Established(1)),
        ] {
            let mut session = ClientSession::new("t", "m", start);
            let text = format!("v={version}");
            session.handle_frame(frame(Command::ServerSettings, 0, text.as_bytes()), start);
            session.open_stream(&target(), start).unwrap();
            drain(&mut session);
            assert_eq!(session.poll_timeout(), Some(start + SYNACK_TIMEOUT));
            session.handle_timeout(start + SYNACK_TIMEOUT - Duration::from_millis(1));
            assert!(drain(&mut session).is_empty(), "not before the deadline");
            session.handle_timeout(start + SYNACK_TIMEOUT);
            assert_eq!(drain(&mut session), [expected], "v{version}");
            assert_eq!(session.is_ended(), version >= 2);
        }
        let mut answered = ClientSession::new("t", "m", start);
        answered.handle_frame(frame(Command::ServerSettings, 0, b"v=2"), start);
        let id = answered.open_stream(&target(), start).unwrap();
        answered.handle_frame(frame(Command::SynAck, id, b""), start);
        drain(&mut answered);
        answered.handle_timeout(start + SYNACK_TIMEOUT * 2);
        assert!(
            drain(&mut answered).is_empty(),
            "an answered stream has no deadline"
        );
    }

    #[test]
    fn padding_updates_heartbeats_and_ignored_frames() {
        let now = Instant::now();
        let mut session = ClientSession::new("t", "m", now);
        drain(&mut session);
        let scheme = b"stop=2\n0=30-30\n1=100-200";
        session.handle_frame(frame(Command::UpdatePaddingScheme, 0, scheme), now);
        session.handle_frame(frame(Command::UpdatePaddingScheme, 0, b"stop=x"), now);
        session.handle_frame(frame(Command::HeartRequest, 5, b""), now);
        session.handle_frame(frame(Command::HeartResponse, 0, b""), now);
        for cmd in [
            Command::Waste,
            Command::Syn,
            Command::Settings,
            Command::Unknown(200),
        ] {
            session.handle_frame(frame(cmd, 1, b"x"), now);
        }
        assert_eq!(
            drain(&mut session),
            [
                Action::NewPaddingScheme(PaddingScheme::parse(scheme).unwrap()),
                Action::PaddingSchemeRefused(PaddingError::MissingStop),
                Action::Send(Command::HeartResponse, 5, Vec::new()),
                Action::HeartbeatAnswered,
            ],
            "a scheme that does not parse keeps the current one; the rest is ignored"
        );
    }

    #[test]
    fn nothing_after_an_alert() {
        let now = Instant::now();
        let mut session = ClientSession::new("t", "m", now);
        let id = session.open_stream(&target(), now).unwrap();
        drain(&mut session);
        session.handle_frame(frame(Command::Alert, 0, b"bye"), now);
        assert_eq!(
            drain(&mut session),
            [Action::Close(Close::Alert("bye".into()))]
        );
        assert!(session.is_ended());
        session.handle_frame(frame(Command::SynAck, id, b""), now);
        session.handle_frame(frame(Command::HeartRequest, 0, b""), now);
        session.handle_timeout(now + SYNACK_TIMEOUT);
        assert!(drain(&mut session).is_empty());
        assert_eq!(session.open_streams(), 0);
        assert_eq!(session.poll_timeout(), None);
    }
}
