//! The rules of the client side of a session, with no I/O: the client opens
//! streams and feeds in the server's frames; [`ClientEvent`]s come out for the
//! driver (`crate::client::ClientSession`) to carry out.
//!
//! [`ClientSessionRules`] numbers streams (from 1, never reused), matches each
//! SYNACK to a stream still waiting for one (an empty SYNACK opens it, a non-empty
//! one carries the server's reason), hands PSH and FIN only to live streams, keeps
//! the version the server announced in ServerSettings (which decides whether a
//! SYNACK is to be waited for at all), takes a new padding scheme from
//! UpdatePaddingScheme when it parses, answers heartbeats, and ends everything at
//! an Alert. Frames only a client sends, and unknown ones, are ignored.
//!
//! Each stream carries a value of the driver's choosing (`T`), handed back with
//! the events that concern it.

use std::collections::HashMap;

use super::frame::{Command, Frame};
use super::padding::PaddingScheme;
use super::settings::Settings;

/// What the driver must do after a server frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent<'a, T> {
    /// Send this frame (with no payload) to the server.
    Send(Command, u32),
    /// Bytes from stream `id`'s target.
    Data(u32, T, &'a [u8]),
    /// Stream `id` is open (empty SYNACK).
    Established(u32, T),
    /// The server refused stream `id` with this reason; its FIN follows.
    Refused(u32, T, String),
    /// The server ended stream `id` (FIN); it is forgotten.
    Finished(u32, T),
    /// Shape the coming writes with this scheme.
    NewPaddingScheme(PaddingScheme),
    /// The server answered a heartbeat.
    HeartbeatAnswered,
    /// The server ended the session with this text; nothing follows.
    Alert(String),
}

struct Stream<T> {
    value: T,
    awaiting_synack: bool,
}

/// The client session's state: its streams and what the server said.
pub struct ClientSessionRules<T> {
    streams: HashMap<u32, Stream<T>>,
    next_id: u32,
    server_version: u32,
    ended: bool,
}

impl<T> Default for ClientSessionRules<T> {
    fn default() -> Self {
        ClientSessionRules {
            streams: HashMap::new(),
            next_id: 1,
            server_version: 0,
            ended: false,
        }
    }
}

impl<T: Clone> ClientSessionRules<T> {
    /// A new stream's id; SYN and its address go out next.
    pub fn open_stream(&mut self, value: T) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.streams.insert(
            id,
            Stream {
                value,
                awaiting_synack: true,
            },
        );
        id
    }

    /// The client closed stream `id` itself (and sent FIN); it is forgotten.
    pub fn close_stream(&mut self, id: u32) -> Option<T> {
        self.streams.remove(&id).map(|stream| stream.value)
    }

    /// The session ended: every stream is forgotten and handed back.
    pub fn end(&mut self) -> Vec<T> {
        self.ended = true;
        self.streams
            .drain()
            .map(|(_, stream)| stream.value)
            .collect()
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

    /// Whether an Alert (or [`ClientSessionRules::end`]) ended the session.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// One frame from the server.
    pub fn handle_frame<'a>(&mut self, frame: Frame<'a>) -> Option<ClientEvent<'a, T>> {
        if self.ended {
            return None;
        }
        let id = frame.stream_id;
        match frame.cmd {
            Command::Push => {
                let stream = self.streams.get(&id)?;
                Some(ClientEvent::Data(id, stream.value.clone(), frame.data))
            }
            Command::Fin => {
                let value = self.close_stream(id)?;
                Some(ClientEvent::Finished(id, value))
            }
            Command::SynAck => {
                let stream = self.streams.get_mut(&id).filter(|s| s.awaiting_synack)?;
                stream.awaiting_synack = false;
                let value = stream.value.clone();
                Some(if frame.data.is_empty() {
                    ClientEvent::Established(id, value)
                } else {
                    let reason = String::from_utf8_lossy(frame.data).into_owned();
                    ClientEvent::Refused(id, value, reason)
                })
            }
            Command::Alert => {
                self.ended = true;
                Some(ClientEvent::Alert(
                    String::from_utf8_lossy(frame.data).into_owned(),
                ))
            }
            Command::UpdatePaddingScheme => PaddingScheme::parse(frame.data)
                .ok()
                .map(ClientEvent::NewPaddingScheme),
            Command::ServerSettings => {
                self.server_version = Settings::decode(frame.data).map_or(0, |s| s.version());
                None
            }
            Command::HeartRequest => Some(ClientEvent::Send(Command::HeartResponse, id)),
            Command::HeartResponse => Some(ClientEvent::HeartbeatAnswered),
            Command::Waste | Command::Syn | Command::Settings | Command::Unknown(_) => None,
        }
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

    #[test]
    fn streams_are_numbered_from_one_and_never_reused() {
        let mut rules = ClientSessionRules::default();
        assert_eq!(rules.open_stream('a'), 1);
        assert_eq!(rules.open_stream('b'), 2);
        assert_eq!(rules.close_stream(1), Some('a'));
        assert_eq!(rules.open_stream('c'), 3);
        assert_eq!(rules.open_streams(), 2);
    }

    #[test]
    fn synack_opens_or_refuses_a_waiting_stream_once() {
        let mut rules = ClientSessionRules::default();
        let ok = rules.open_stream("ok");
        let no = rules.open_stream("no");
        assert_eq!(
            rules.handle_frame(frame(Command::SynAck, ok, b"")),
            Some(ClientEvent::Established(ok, "ok"))
        );
        assert_eq!(
            rules.handle_frame(frame(Command::SynAck, ok, b"")),
            None,
            "a second SYNACK is ignored"
        );
        assert_eq!(
            rules.handle_frame(frame(Command::SynAck, no, b"dial failed")),
            Some(ClientEvent::Refused(no, "no", "dial failed".into()))
        );
        assert_eq!(
            rules.handle_frame(frame(Command::SynAck, 99, b"")),
            None,
            "a SYNACK for no stream is ignored"
        );
        assert_eq!(
            rules.handle_frame(frame(Command::Fin, no, b"")),
            Some(ClientEvent::Finished(no, "no"))
        );
        assert_eq!(rules.open_streams(), 1);
    }

    #[test]
    fn data_and_fin_reach_only_live_streams() {
        let mut rules = ClientSessionRules::default();
        let id = rules.open_stream(7u8);
        assert_eq!(
            rules.handle_frame(frame(Command::Push, id, b"hi")),
            Some(ClientEvent::Data(id, 7, &b"hi"[..]))
        );
        assert_eq!(rules.handle_frame(frame(Command::Push, id + 1, b"x")), None);
        assert_eq!(
            rules.handle_frame(frame(Command::Fin, id, b"")),
            Some(ClientEvent::Finished(id, 7))
        );
        assert_eq!(rules.handle_frame(frame(Command::Push, id, b"late")), None);
        assert_eq!(rules.handle_frame(frame(Command::Fin, id, b"")), None);
    }

    #[test]
    fn server_settings_set_the_version_and_bad_ones_reset_it() {
        let mut rules = ClientSessionRules::<()>::default();
        assert_eq!(rules.server_version(), 0);
        assert_eq!(
            rules.handle_frame(frame(Command::ServerSettings, 0, b"v=2")),
            None
        );
        assert_eq!(rules.server_version(), 2);
        rules.handle_frame(frame(Command::ServerSettings, 0, b"\xff\xfe"));
        assert_eq!(rules.server_version(), 0);
    }

    #[test]
    fn padding_updates_heartbeats_and_ignored_frames() {
        let mut rules = ClientSessionRules::<()>::default();
        let scheme = b"stop=2\n0=30-30\n1=100-200";
        assert_eq!(
            rules.handle_frame(frame(Command::UpdatePaddingScheme, 0, scheme)),
            Some(ClientEvent::NewPaddingScheme(
                PaddingScheme::parse(scheme).unwrap()
            ))
        );
        assert_eq!(
            rules.handle_frame(frame(Command::UpdatePaddingScheme, 0, b"stop=x")),
            None,
            "a scheme that does not parse keeps the current one"
        );
        assert_eq!(
            rules.handle_frame(frame(Command::HeartRequest, 5, b"")),
            Some(ClientEvent::Send(Command::HeartResponse, 5))
        );
        assert_eq!(
            rules.handle_frame(frame(Command::HeartResponse, 0, b"")),
            Some(ClientEvent::HeartbeatAnswered)
        );
        for cmd in [
            Command::Waste,
            Command::Syn,
            Command::Settings,
            Command::Unknown(200),
        ] {
            assert_eq!(rules.handle_frame(frame(cmd, 1, b"x")), None, "{cmd:?}");
        }
    }

    #[test]
    fn nothing_after_an_alert() {
        let mut rules = ClientSessionRules::default();
        let id = rules.open_stream(());
        assert_eq!(
            rules.handle_frame(frame(Command::Alert, 0, b"bye")),
            Some(ClientEvent::Alert("bye".into()))
        );
        assert!(rules.is_ended());
        assert_eq!(rules.handle_frame(frame(Command::SynAck, id, b"")), None);
        assert_eq!(
            rules.handle_frame(frame(Command::HeartRequest, 0, b"")),
            None
        );
        assert_eq!(rules.end(), vec![()]);
        assert_eq!(rules.open_streams(), 0);
    }
}
