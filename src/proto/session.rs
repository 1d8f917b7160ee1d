//! The rules of the server side of a session, with no I/O: frames and the current
//! time go in, [`Action`]s come out, in the manner of quinn-proto.
//!
//! [`ServerSession`] decides everything the protocol decides per frame: Settings
//! must come before any SYN (or the session ends with an Alert), the client's
//! version gates SYNACK and ServerSettings, a stale padding md5 is answered with
//! UpdatePaddingScheme, heartbeats are answered, a SYN past a cap or for a live id
//! is refused or ignored, PSH and FIN go only to live streams, and frames only a
//! server may send are ignored. It counts streams open, streams still waiting for
//! their target and UDP associations against [`SessionRules`], and says when the
//! session has been idle too long. An answer is not repeated: the padding scheme
//! is sent once per scheme, ServerSettings once, and a SYN for the id just
//! refused is not refused again. The async session (`crate::session`) only
//! executes the actions: it owns the sockets, the buffers and the tasks.
//!
//! Each stream carries a value of the driver's choosing (`T`: the server keeps the
//! stream's buffers there), handed back with the actions that concern it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::frame::{Command, Frame};
use super::settings::Settings;

/// The Alert text for a SYN that arrives before Settings.
pub const ALERT_NO_SETTINGS: &str = "client did not send its settings";

/// What one session may hold, and how long it may idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRules {
    /// Streams open at once.
    pub streams: usize,
    /// Streams still waiting for their address or their dial.
    pub dialing: usize,
    /// UDP-over-TCP associations open at once.
    pub uot: usize,
    /// With no stream open and no frame for this long, the session ends.
    pub idle_timeout: Duration,
}

/// Why a stream was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The session had [`SessionRules::streams`] open.
    TooManyStreams,
    /// The session had [`SessionRules::dialing`] waiting for their target.
    TooManyDialing,
    /// The session had [`SessionRules::uot`] UDP associations.
    TooManyAssociations,
}

impl Refusal {
    /// The reason the client reads in SYNACK.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooManyStreams => "too many streams open on this session",
            Refusal::TooManyDialing => "too many streams of this session waiting for their target",
            Refusal::TooManyAssociations => "too many UDP-over-TCP associations on this session",
        }
    }
}

/// A control frame's payload, resolved by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// No data.
    Empty,
    /// The server's current padding scheme text.
    PaddingScheme,
    /// The server's settings (`v=2`).
    ServerSettings,
}

/// What the driver must do, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a, T> {
    /// Queue this frame to the client.
    Send(Command, u32, Payload),
    /// A stream was opened: start serving it (its address comes in its bytes).
    Open(u32, T),
    /// Client bytes for a stream.
    Data(u32, T, &'a [u8]),
    /// The client finished a stream (FIN): no more bytes will come.
    Finish(u32, T),
    /// Refuse a new stream: SYNACK with the reason when [`ServerSession::version`]
    /// is 2 or more, then FIN. The session goes on.
    Refuse(u32, Refusal),
    /// Send Alert with this text and end the session.
    Alert(&'static str),
}

/// Up to two actions for one frame.
pub type Actions<'a, T> = std::iter::Flatten<std::array::IntoIter<Option<Action<'a, T>>, 2>>;

fn actions<'a, T>(first: Option<Action<'a, T>>, second: Option<Action<'a, T>>) -> Actions<'a, T> {
    [first, second].into_iter().flatten()
}

struct Stream<T> {
    value: T,
    /// Still waiting for its address or its dial.
    dialing: bool,
    /// Carries a UDP-over-TCP association.
    uot: bool,
}

/// The server side of one session. See the module documentation.
pub struct ServerSession<T> {
    rules: SessionRules,
    streams: HashMap<u32, Stream<T>>,
    settings_received: bool,
    version: u32,
    /// The md5 of the padding scheme the client is known to have: the one it
    /// announced, or the last one sent to it.
    padding_known: Option<String>,
    server_settings_sent: bool,
    /// The id of the stream refused last.
    last_refused: Option<u32>,
    dialing: usize,
    associations: usize,
    last_activity: Instant,
    ended: bool,
}

impl<T: Clone> ServerSession<T> {
    /// A session that has just authenticated at `now`.
    pub fn new(rules: SessionRules, now: Instant) -> Self {
        ServerSession {
            rules,
            streams: HashMap::new(),
            settings_received: false,
            version: 0,
            padding_known: None,
            server_settings_sent: false,
            last_refused: None,
            dialing: 0,
            associations: 0,
            last_activity: now,
            ended: false,
        }
    }

    /// The client's protocol version (0 until Settings arrived).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Streams open.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Streams still waiting for their address or dial.
    pub fn dialing(&self) -> usize {
        self.dialing
    }

    /// UDP-over-TCP associations open.
    pub fn associations(&self) -> usize {
        self.associations
    }

    /// The driver's value of every open stream, with its id.
    pub fn stream_values(&self) -> impl Iterator<Item = (u32, &T)> {
        self.streams.iter().map(|(id, s)| (*id, &s.value))
    }

    /// Whether an Alert ended the session.
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Bytes arrived from the client at `now`.
    pub fn on_read(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The rules for one frame. `padding_md5` is the md5 of the server's current
    /// padding scheme; `open` makes the driver's value for a new stream.
    pub fn on_frame<'a>(
        &mut self,
        frame: &Frame<'a>,
        padding_md5: &str,
        open: impl FnOnce(u32) -> T,
    ) -> Actions<'a, T> {
        if self.ended {
            return actions(None, None);
        }
        let id = frame.stream_id;
        match frame.cmd {
            Command::Settings => self.on_settings(frame.data, padding_md5),
            Command::Syn => self.on_syn(id, open),
            Command::Push => {
                let value = self.streams.get(&id).map(|s| s.value.clone());
                actions(value.map(|v| Action::Data(id, v, frame.data)), None)
            }
            Command::Fin => {
                let value = self.streams.get(&id).map(|s| s.value.clone());
                actions(value.map(|v| Action::Finish(id, v)), None)
            }
            Command::HeartRequest => actions(
                Some(Action::Send(Command::HeartResponse, id, Payload::Empty)),
                None,
            ),
            // Padding, answers to our (never sent) heartbeats, frames only a server
            // sends, and commands from the future: read and ignored.
            Command::Waste
            | Command::HeartResponse
            | Command::Alert
            | Command::UpdatePaddingScheme
            | Command::SynAck
            | Command::ServerSettings
            | Command::Unknown(_) => actions(None, None),
        }
    }

    fn on_settings<'a>(&mut self, data: &[u8], padding_md5: &str) -> Actions<'a, T> {
        // Settings the client cannot spell are treated as empty: no version (so
        // version 1's rules), and a padding update.
        let settings = Settings::decode(data).unwrap_or_default();
        self.settings_received = true;
        self.version = settings.version();
        let update = if settings.get("padding-md5") == Some(padding_md5) {
            self.padding_known = Some(padding_md5.to_owned());
            None
        } else {
            self.padding_changed(padding_md5)
        };
        let announce =
            self.version >= 2 && !std::mem::replace(&mut self.server_settings_sent, true);
        let server_settings = announce.then_some(Action::Send(
            Command::ServerSettings,
            0,
            Payload::ServerSettings,
        ));
        actions(update, server_settings)
    }

    /// The server's padding scheme is now the one of `padding_md5`: the update to
    /// send the client, unless it has that scheme already (or has not said
    /// which it has yet: its Settings will be answered).
    pub fn on_padding_changed(&mut self, padding_md5: &str) -> Option<Action<'static, T>> {
        if !self.settings_received || self.ended {
            return None;
        }
        self.padding_changed(padding_md5)
    }

    fn padding_changed<'a>(&mut self, padding_md5: &str) -> Option<Action<'a, T>> {
        if self.padding_known.as_deref() == Some(padding_md5) {
            return None;
        }
        self.padding_known = Some(padding_md5.to_owned());
        Some(Action::Send(
            Command::UpdatePaddingScheme,
            0,
            Payload::PaddingScheme,
        ))
    }

    fn on_syn<'a>(&mut self, id: u32, open: impl FnOnce(u32) -> T) -> Actions<'a, T> {
        if !self.settings_received {
            self.ended = true;
            return actions(Some(Action::Alert(ALERT_NO_SETTINGS)), None);
        }
        if self.streams.contains_key(&id) {
            return actions(None, None);
        }
        let refusal = if self.streams.len() >= self.rules.streams {
            Some(Refusal::TooManyStreams)
        } else if self.dialing >= self.rules.dialing {
            Some(Refusal::TooManyDialing)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            if self.last_refused.replace(id) == Some(id) {
                return actions(None, None);
            }
            return actions(Some(Action::Refuse(id, refusal)), None);
        }
        let value = open(id);
        self.dialing += 1;
        self.streams.insert(
            id,
            Stream {
                value: value.clone(),
                dialing: true,
                uot: false,
            },
        );
        actions(Some(Action::Open(id, value)), None)
    }

    /// Stream `id` has its target (or gave up waiting for it): it no longer
    /// counts against [`SessionRules::dialing`].
    pub fn stream_dialed(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id) {
            if std::mem::take(&mut stream.dialing) {
                self.dialing -= 1;
            }
        }
    }

    /// Stream `id` turned out to carry a UDP-over-TCP association: counts it, or
    /// refuses it past [`SessionRules::uot`].
    pub fn open_association(&mut self, id: u32) -> Result<(), Refusal> {
        let cap = self.rules.uot;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if stream.uot {
            return Ok(());
        }
        if self.associations >= cap {
            return Err(Refusal::TooManyAssociations);
        }
        stream.uot = true;
        self.associations += 1;
        Ok(())
    }

    /// Stream `id` ended (either side) at `now`; its id may be opened again.
    /// Returns its value, or `None` if it was not open.
    pub fn stream_ended(&mut self, id: u32, now: Instant) -> Option<T> {
        let stream = self.streams.remove(&id)?;
        if stream.dialing {
            self.dialing -= 1;
        }
        if stream.uot {
            self.associations -= 1;
        }
        self.last_activity = now;
        Some(stream.value)
    }

    /// Ends every stream (the session is closing) and returns their values.
    pub fn end_all(&mut self) -> Vec<T> {
        self.dialing = 0;
        self.associations = 0;
        self.streams.drain().map(|(_, s)| s.value).collect()
    }

    /// When the session becomes idle if nothing happens: `None` while a stream is open.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.streams
            .is_empty()
            .then(|| self.last_activity + self.rules.idle_timeout)
    }

    /// Whether at `now` the session has been idle for its whole timeout.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.idle_deadline().is_some_and(|deadline| now >= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::Frame;

    const MD5: &str = "0123456789abcdef0123456789abcdef";

    fn rules() -> SessionRules {
        SessionRules {
            streams: 3,
            dialing: 2,
            uot: 1,
            idle_timeout: Duration::from_secs(10),
        }
    }

    fn frame(cmd: Command, stream_id: u32, data: &[u8]) -> Frame<'_> {
        Frame {
            cmd,
            stream_id,
            data,
        }
    }

    fn run<'a>(
        session: &mut ServerSession<u32>,
        cmd: Command,
        id: u32,
        data: &'a [u8],
    ) -> Vec<Action<'a, u32>> {
        session
            .on_frame(&frame(cmd, id, data), MD5, |id| id * 10)
            .collect()
    }

    fn settings(version: u32, md5: &str) -> Vec<u8> {
        format!("v={version}\nclient=test\npadding-md5={md5}").into_bytes()
    }

    fn ready(version: u32) -> ServerSession<u32> {
        let mut session = ServerSession::new(rules(), Instant::now());
        let text = settings(version, MD5);
        run(&mut session, Command::Settings, 0, &text);
        session
    }

    #[test]
    fn syn_before_settings_ends_the_session_with_an_alert() {
        let mut session = ServerSession::<u32>::new(rules(), Instant::now());
        assert_eq!(
            run(&mut session, Command::Syn, 1, &[]),
            [Action::Alert(ALERT_NO_SETTINGS)]
        );
        assert!(session.has_ended());
        let text = settings(2, MD5);
        assert!(
            run(&mut session, Command::Settings, 0, &text).is_empty(),
            "nothing after the Alert"
        );
    }

    #[test]
    fn settings_answer_by_version_and_padding() {
        let mut v2_current = ServerSession::<u32>::new(rules(), Instant::now());
        let text = settings(2, MD5);
        assert_eq!(
            run(&mut v2_current, Command::Settings, 0, &text),
            [Action::Send(
                Command::ServerSettings,
                0,
                Payload::ServerSettings
            )]
        );
        assert_eq!(v2_current.version(), 2);
        let mut v1_stale = ServerSession::<u32>::new(rules(), Instant::now());
        let text = settings(1, "stale");
        assert_eq!(
            run(&mut v1_stale, Command::Settings, 0, &text),
            [Action::Send(
                Command::UpdatePaddingScheme,
                0,
                Payload::PaddingScheme
            )]
        );
        let mut garbage = ServerSession::<u32>::new(rules(), Instant::now());
        assert_eq!(
            run(&mut garbage, Command::Settings, 0, &[0xff, 0xfe]),
            [Action::Send(
                Command::UpdatePaddingScheme,
                0,
                Payload::PaddingScheme
            )],
            "unreadable settings count as empty: no version (v1 rules), stale padding"
        );
        assert_eq!(garbage.version(), 0);
    }

    #[test]
    fn a_new_scheme_goes_once_to_clients_that_lack_it() {
        let mut before_settings = ServerSession::<u32>::new(rules(), Instant::now());
        assert_eq!(
            before_settings.on_padding_changed("new-md5"),
            None,
            "its Settings will be answered"
        );
        let mut session = ready(2);
        assert_eq!(session.on_padding_changed(MD5), None, "it has this one");
        assert_eq!(
            session.on_padding_changed("new-md5"),
            Some(Action::Send(
                Command::UpdatePaddingScheme,
                0,
                Payload::PaddingScheme
            ))
        );
        assert_eq!(session.on_padding_changed("new-md5"), None, "sent once");
        let text = settings(2, "new-md5");
        assert_eq!(
            session
                .on_frame(&frame(Command::Settings, 0, &text), "new-md5", |id| id)
                .count(),
            0,
            "a client announcing it is not sent it again"
        );
    }

    #[test]
    fn answers_are_not_repeated() {
        let mut session = ServerSession::<u32>::new(rules(), Instant::now());
        let stale = settings(2, "stale");
        assert_eq!(run(&mut session, Command::Settings, 0, &stale).len(), 2);
        for _ in 0..3 {
            assert!(
                run(&mut session, Command::Settings, 0, &stale).is_empty(),
                "the scheme and ServerSettings went once"
            );
            assert!(run(&mut session, Command::Settings, 0, &[]).is_empty());
        }
        assert_eq!(
            session
                .on_frame(&frame(Command::Settings, 0, &stale), "new-md5", |id| id)
                .collect::<Vec<_>>(),
            [Action::Send(
                Command::UpdatePaddingScheme,
                0,
                Payload::PaddingScheme
            )],
            "a scheme changed since (SIGHUP) is sent"
        );
        for id in 1..=3 {
            run(&mut session, Command::Syn, id, &[]);
        }
        let refused = run(&mut session, Command::Syn, 4, &[]);
        assert!(matches!(refused[..], [Action::Refuse(4, _)]), "{refused:?}");
        assert!(
            run(&mut session, Command::Syn, 4, &[]).is_empty(),
            "the same id is not refused twice in a row"
        );
        assert!(matches!(
            run(&mut session, Command::Syn, 5, &[])[..],
            [Action::Refuse(5, _)]
        ));
    }

    #[test]
    fn streams_open_carry_data_and_finish() {
        let mut session = ready(2);
        assert_eq!(
            run(&mut session, Command::Syn, 5, &[]),
            [Action::Open(5, 50)]
        );
        assert_eq!(
            run(&mut session, Command::Push, 5, b"abc"),
            [Action::Data(5, 50, &b"abc"[..])]
        );
        assert_eq!(
            run(&mut session, Command::Fin, 5, &[]),
            [Action::Finish(5, 50)]
        );
        assert_eq!(session.stream_ended(5, Instant::now()), Some(50));
        assert_eq!(session.streams(), 0);
    }

    #[test]
    fn frames_for_unknown_streams_and_server_only_frames_are_ignored() {
        let mut session = ready(2);
        for cmd in [
            Command::Push,
            Command::Fin,
            Command::SynAck,
            Command::ServerSettings,
            Command::UpdatePaddingScheme,
            Command::Alert,
            Command::Waste,
            Command::HeartResponse,
            Command::Unknown(200),
        ] {
            assert!(run(&mut session, cmd, 9, b"x").is_empty(), "{cmd:?}");
        }
        assert!(!session.has_ended());
        assert_eq!(
            run(&mut session, Command::HeartRequest, 3, &[]),
            [Action::Send(Command::HeartResponse, 3, Payload::Empty)]
        );
    }

    #[test]
    fn repeated_syn_for_a_live_stream_is_ignored() {
        let mut session = ready(2);
        run(&mut session, Command::Syn, 1, &[]);
        assert!(run(&mut session, Command::Syn, 1, &[]).is_empty());
        assert_eq!(session.streams(), 1);
        assert_eq!(session.dialing(), 1);
    }

    #[test]
    fn caps_on_dialing_and_open_streams_refuse_and_free_again() {
        let mut session = ready(2);
        run(&mut session, Command::Syn, 1, &[]);
        run(&mut session, Command::Syn, 2, &[]);
        assert_eq!(
            run(&mut session, Command::Syn, 3, &[]),
            [Action::Refuse(3, Refusal::TooManyDialing)]
        );
        session.stream_dialed(1);
        session.stream_dialed(1);
        assert_eq!(session.dialing(), 1, "a stream leaves dialing once");
        assert_eq!(
            run(&mut session, Command::Syn, 3, &[]),
            [Action::Open(3, 30)]
        );
        session.stream_dialed(2);
        assert_eq!(
            run(&mut session, Command::Syn, 4, &[]),
            [Action::Refuse(4, Refusal::TooManyStreams)]
        );
        session.stream_ended(2, Instant::now());
        assert_eq!(
            run(&mut session, Command::Syn, 4, &[]),
            [Action::Open(4, 40)]
        );
        assert_eq!(session.stream_ended(99, Instant::now()), None);
    }

    #[test]
    fn associations_are_capped_and_released_with_their_stream() {
        let mut session = ready(2);
        run(&mut session, Command::Syn, 1, &[]);
        run(&mut session, Command::Syn, 2, &[]);
        assert_eq!(session.open_association(1), Ok(()));
        assert_eq!(session.open_association(1), Ok(()), "counted once");
        assert_eq!(
            session.open_association(2),
            Err(Refusal::TooManyAssociations)
        );
        session.stream_ended(1, Instant::now());
        assert_eq!(session.associations(), 0);
        assert_eq!(session.open_association(2), Ok(()));
    }

    #[test]
    fn idle_only_without_streams_and_counted_from_the_last_activity() {
        let start = Instant::now();
        let mut session = ServerSession::<u32>::new(rules(), start);
        let text = settings(2, MD5);
        run(&mut session, Command::Settings, 0, &text);
        assert!(!session.is_idle(start + Duration::from_secs(9)));
        assert!(session.is_idle(start + Duration::from_secs(10)));
        run(&mut session, Command::Syn, 1, &[]);
        assert_eq!(session.idle_deadline(), None);
        assert!(!session.is_idle(start + Duration::from_secs(100)));
        let ended = start + Duration::from_secs(100);
        session.stream_ended(1, ended);
        assert_eq!(
            session.idle_deadline(),
            Some(ended + Duration::from_secs(10))
        );
        session.on_read(ended + Duration::from_secs(5));
        assert!(!session.is_idle(ended + Duration::from_secs(12)));
    }

    #[test]
    fn ending_all_streams_resets_the_counts() {
        let mut session = ready(2);
        run(&mut session, Command::Syn, 1, &[]);
        run(&mut session, Command::Syn, 2, &[]);
        session.open_association(2).unwrap();
        let mut values = session.end_all();
        values.sort();
        assert_eq!(values, [10, 20]);
        assert_eq!(
            (session.streams(), session.dialing(), session.associations()),
            (0, 0, 0)
        );
    }
}
