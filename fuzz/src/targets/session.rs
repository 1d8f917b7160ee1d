//! The whole-session fuzz target: a client's byte stream after authentication,
//! cut into reads of arbitrary sizes, driven through [`ServerSession`] exactly as
//! the server's session loop drives it, with the driver's own events (a dial
//! done or failed, bytes taken, a task ended) and the passing of time
//! interleaved at random. Checked against a model of the open streams after
//! every step.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::frame::{self, Command};
use anytls::proto::session::{
    Action, Close, Notice, Payload, Refusal, ServerSession, SessionRules, StreamEnd, StreamEvent,
    ALERT_NO_SETTINGS,
};

/// The md5 the fuzzed server announces; generated Settings carry it or not.
const MD5: &str = "0123456789abcdef0123456789abcdef";

/// Small caps, so that inputs reach them.
const RULES: SessionRules = SessionRules {
    streams: 8,
    dialing: 4,
    uot: 2,
    idle_timeout: Duration::from_secs(30),
    stream_idle_timeout: Duration::from_secs(20),
    uot_idle_timeout: Duration::from_secs(10),
    address_timeout: Duration::from_secs(3),
    synack_deadline: Duration::from_secs(2),
    stall_timeout: Duration::from_secs(5),
    stream_buffer: 256,
    session_buffer: 512,
    check_period: Duration::from_secs(1),
};

/// Frames a client might send, well-formed or not, as one byte stream.
pub(super) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let mut wire = Vec::new();
    let frames = rng.gen_range(0..64);
    for i in 0..frames {
        let id = rng.gen_range(0..12u32);
        let (cmd, data): (Command, Vec<u8>) = match rng.gen_range(0..100) {
            // Settings first, most of the time.
            _ if i == 0 && rng.gen_bool(0.8) => (Command::Settings, settings(rng)),
            0..=4 => (Command::Settings, settings(rng)),
            5..=34 => (Command::Syn, Vec::new()),
            35..=59 => (
                Command::Push,
                (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
            ),
            60..=74 => (Command::Fin, Vec::new()),
            75..=82 => (Command::HeartRequest, Vec::new()),
            83..=86 => (Command::Waste, vec![0; rng.gen_range(0..300)]),
            _ => (
                Command::from(rng.gen::<u8>()),
                (0..rng.gen_range(0..16)).map(|_| rng.gen()).collect(),
            ),
        };
        frame::encode(cmd, id, &data, &mut wire).expect("small frames encode");
    }
    // Now and then a torn or garbage tail.
    if rng.gen_bool(0.2) {
        let cut = rng.gen_range(0..=wire.len());
        wire.truncate(cut);
        wire.extend((0..rng.gen_range(0..12)).map(|_| rng.gen::<u8>()));
    }
    wire
}

fn settings(rng: &mut SmallRng) -> Vec<u8> {
    let version = rng.gen_range(0..4);
    let md5 = if rng.gen_bool(0.5) { MD5 } else { "stale" };
    match rng.gen_range(0..10) {
        0 => vec![0xff, 0x00, 0xfe],
        1 => Vec::new(),
        _ => format!("v={version}\nclient=fuzz\npadding-md5={md5}").into_bytes(),
    }
}

/// Runs `input` through a session; `Err` names the first broken rule.
pub(super) fn check(input: &[u8], rng: &mut SmallRng) -> Result<String, String> {
    let start = Instant::now();
    let mut session = ServerSession::new(RULES.into(), MD5, start);
    // The model: streams the driver was told to open and has not been told to
    // forget, and those it was told to dial (a task runs for them).
    let mut open: HashSet<u32> = HashSet::new();
    let mut tasks: HashSet<u32> = HashSet::new();
    let mut settings_seen = false;
    let mut closed = false;
    let mut buffered: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut now = start;
    let mut frames = 0usize;
    let mut reached = BTreeSet::new();
    while fed < input.len() {
        // One read of arbitrary size, as TLS would hand it over.
        let n = rng.gen_range(1..=input.len() - fed);
        buffered.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        now += Duration::from_millis(rng.gen_range(0..2000));
        let mut used = 0;
        while let Some(frame) = frame::decode(&buffered[used..]) {
            used += frame.wire_len();
            frames += 1;
            let was_open = open.contains(&frame.stream_id);
            let at_stream_cap = session.streams() >= RULES.streams;
            let at_dialing_cap = session.dialing() >= RULES.dialing;
            let paused = !session.wants_read();
            let delivery = session.handle_frame(frame, now);
            if let Some(delivery) = &delivery {
                if closed || paused {
                    return Err(format!("{delivery:?} while closed or paused"));
                }
                if frame.cmd != Command::Push
                    || delivery.id != frame.stream_id
                    || !was_open
                    || !frame.data.ends_with(delivery.data)
                {
                    return Err(format!("{delivery:?} for {:?}", frame.cmd));
                }
                reached.insert("Delivery".to_owned());
            }
            while let Some(action) = session.poll_action() {
                if closed {
                    return Err(format!("{action:?} after the session closed"));
                }
                reached.insert(name(&action));
                match &action {
                    Action::Open(id) => {
                        if frame.cmd != Command::Syn || *id != frame.stream_id {
                            return Err(format!("{action:?} for {:?}", frame.cmd));
                        }
                        if !settings_seen || was_open || at_stream_cap || at_dialing_cap {
                            return Err(format!("{action:?} opened against the rules"));
                        }
                        open.insert(*id);
                    }
                    Action::Connect(id, _) | Action::Associate(id) => {
                        if !open.contains(id) || !tasks.insert(*id) {
                            return Err(format!("{action:?} for a stream not awaiting it"));
                        }
                    }
                    Action::Forget(id) => {
                        if !open.remove(id) {
                            return Err(format!("{action:?} for a stream not open"));
                        }
                        tasks.remove(id);
                    }
                    Action::Finish(id) | Action::Stop(id) | Action::Measure(id) => {
                        if !open.contains(id) {
                            return Err(format!("{action:?} for a stream not open"));
                        }
                    }
                    Action::Notice(Notice::Refused(id, refusal)) => {
                        let justified = match refusal {
                            Refusal::TooManyStreams => at_stream_cap && !was_open,
                            Refusal::TooManyDialing => {
                                at_dialing_cap && !at_stream_cap && !was_open
                            }
                            Refusal::TooManyAssociations => was_open,
                            Refusal::BadAddress(_) | Refusal::UotV1 => was_open,
                            Refusal::AddressTimeout(_) | Refusal::Failed(_) => false,
                        };
                        if !justified || *id != frame.stream_id {
                            return Err(format!("{action:?} not justified"));
                        }
                    }
                    Action::Close(Close::Alerted(text)) => {
                        if settings_seen || frame.cmd != Command::Syn || *text != ALERT_NO_SETTINGS
                        {
                            return Err(format!("{action:?} after {:?}", frame.cmd));
                        }
                        closed = true;
                    }
                    Action::Close(Close::Idle(_)) => {
                        return Err(format!("{action:?} while handling a frame"));
                    }
                    Action::Send(cmd, _, payload) => {
                        let expected = match cmd {
                            Command::HeartResponse => {
                                frame.cmd == Command::HeartRequest && *payload == Payload::Empty
                            }
                            Command::UpdatePaddingScheme => {
                                frame.cmd == Command::Settings && *payload == Payload::PaddingScheme
                            }
                            Command::ServerSettings => {
                                frame.cmd == Command::Settings && session.version() >= 2
                            }
                            // A refusal: SYNACK only to v2 clients, then FIN.
                            Command::SynAck => session.version() >= 2,
                            Command::Fin | Command::Alert => true,
                            _ => false,
                        };
                        if !expected {
                            return Err(format!("{action:?} for {:?}", frame.cmd));
                        }
                    }
                    Action::Recount | Action::Notice(_) | Action::Housekeeping => {}
                }
                if matches!(action, Action::Recount) {
                    for id in open.clone() {
                        let left = rng.gen_range(0..600);
                        session.handle_stream_event(id, StreamEvent::Unacknowledged(left), now);
                    }
                    session.handle_budget(None, now);
                }
            }
            if frame.cmd == Command::Settings && !closed {
                settings_seen = true;
            }
            if frame.cmd == Command::Syn && !settings_seen && !closed {
                return Err("a SYN before Settings did not end the session".into());
            }
            // The driver's own events, in any order the tasks could produce them.
            for _ in 0..rng.gen_range(0..3) {
                let Some(&id) = tasks.iter().nth(rng.gen_range(0..tasks.len().max(1))) else {
                    break;
                };
                let event = match rng.gen_range(0..6) {
                    0 => StreamEvent::Dialed,
                    1 => StreamEvent::Failed("dial failed".into()),
                    2 => StreamEvent::Taken(rng.gen_range(0..300)),
                    3 => StreamEvent::Downloaded(rng.gen_range(1..300)),
                    4 => StreamEvent::Draining,
                    _ => StreamEvent::Ended(if rng.gen() {
                        StreamEnd::TargetClosed
                    } else {
                        StreamEnd::ClientDone
                    }),
                };
                session.handle_stream_event(id, event, now);
            }
            if rng.gen_bool(0.3) {
                now += Duration::from_millis(rng.gen_range(0..8000));
                session.handle_timeout(now);
            }
            while let Some(action) = session.poll_action() {
                if closed {
                    return Err(format!("{action:?} after the session closed"));
                }
                reached.insert(name(&action));
                match &action {
                    Action::Forget(id) => {
                        if !open.remove(id) {
                            return Err(format!("{action:?} for a stream not open"));
                        }
                        tasks.remove(id);
                    }
                    Action::Open(_) | Action::Connect(..) | Action::Associate(_) => {
                        return Err(format!("{action:?} without a frame"));
                    }
                    Action::Close(Close::Idle(_)) => {
                        if !open.is_empty() {
                            return Err(format!("{action:?} with streams open"));
                        }
                        closed = true;
                    }
                    _ => {}
                }
            }
            let counts = (session.streams(), session.dialing(), session.associations());
            if counts.0 != open.len() {
                return Err(format!("{} streams, model {}", counts.0, open.len()));
            }
            if counts.0 > RULES.streams || counts.1 > RULES.dialing || counts.2 > RULES.uot {
                return Err(format!("caps passed: {counts:?}"));
            }
            if closed {
                break;
            }
        }
        buffered.drain(..used);
        if buffered.len() > frame::HEADER_LEN + frame::MAX_DATA_LEN {
            return Err(format!(
                "{} bytes buffered without a whole frame",
                buffered.len()
            ));
        }
        if closed {
            break;
        }
    }
    if reached.is_empty() {
        return Ok(format!("no action ({} frames)", frames.min(1)));
    }
    Ok(reached.into_iter().collect::<Vec<_>>().join("+"))
}

/// An action's kind, for the case's outcome class.
fn name(action: &Action) -> String {
    match action {
        Action::Send(cmd, ..) => format!("{cmd:?}"),
        Action::Notice(Notice::Refused(_, refusal)) => format!("{refusal:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_owned(),
        other => format!("{other:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}
