//! The whole-session fuzz target: a client's byte stream after authentication,
//! cut into reads of arbitrary sizes, driven through [`ServerSession`] exactly as
//! the server's session loop drives it, with the driver's own events (a stream
//! got its target, became a UDP association, ended) interleaved at random.
//! Checked against a model of the open streams after every step.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::frame::{self, Command};
use anytls::proto::session::{
    Action, Payload, Refusal, ServerSession, SessionRules, ALERT_NO_SETTINGS,
};

/// The md5 the fuzzed server announces; generated Settings carry it or not.
const MD5: &str = "0123456789abcdef0123456789abcdef";

/// Small caps, so that inputs reach them.
const RULES: SessionRules = SessionRules {
    streams: 8,
    dialing: 4,
    uot: 2,
    idle_timeout: Duration::from_secs(30),
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
    let mut session = ServerSession::<u32>::new(RULES, start);
    let mut open: HashSet<u32> = HashSet::new();
    let mut dialing: HashSet<u32> = HashSet::new();
    let mut associations: HashSet<u32> = HashSet::new();
    let mut settings_seen = false;
    let mut alerted = false;
    let mut buffered: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut now = start;
    let mut frames = 0usize;
    let mut last_activity;
    // Which kinds of action the input reached: the case's outcome class.
    let mut reached = std::collections::BTreeSet::new();
    while fed < input.len() {
        // One read of arbitrary size, as TLS would hand it over.
        let n = rng.gen_range(1..=input.len() - fed);
        buffered.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        now += Duration::from_millis(rng.gen_range(0..2000));
        session.on_read(now);
        last_activity = now;
        let mut used = 0;
        while let Some(frame) = frame::decode(&buffered[used..]) {
            used += frame.wire_len();
            frames += 1;
            let was_open = open.contains(&frame.stream_id);
            let at_stream_cap = open.len() >= RULES.streams;
            let at_dialing_cap = dialing.len() >= RULES.dialing;
            let actions: Vec<_> = session.on_frame(&frame, MD5, |id| id).collect();
            if alerted && !actions.is_empty() {
                return Err(format!("actions after the Alert: {actions:?}"));
            }
            if actions.len() > 2 {
                return Err(format!("{} actions for one frame", actions.len()));
            }
            for action in &actions {
                reached.insert(match action {
                    Action::Send(cmd, ..) => format!("{cmd:?}"),
                    Action::Refuse(_, refusal) => format!("{refusal:?}"),
                    other => format!("{other:?}")
                        .split('(')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                });
                match *action {
                    Action::Open(id, value) => {
                        if frame.cmd != Command::Syn || id != frame.stream_id || value != id {
                            return Err(format!("{action:?} for {:?}", frame.cmd));
                        }
                        if !settings_seen || was_open || at_stream_cap || at_dialing_cap {
                            return Err(format!("{action:?} opened against the rules"));
                        }
                        open.insert(id);
                        dialing.insert(id);
                    }
                    Action::Data(id, _, data) => {
                        if !was_open
                            || frame.cmd != Command::Push
                            || id != frame.stream_id
                            || data != frame.data
                        {
                            return Err(format!("{action:?} for a stream not open"));
                        }
                    }
                    Action::Finish(id, _) => {
                        if !was_open || frame.cmd != Command::Fin || id != frame.stream_id {
                            return Err(format!("{action:?} for a stream not open"));
                        }
                    }
                    Action::Refuse(id, refusal) => {
                        let justified = match refusal {
                            Refusal::TooManyStreams => at_stream_cap,
                            Refusal::TooManyDialing => at_dialing_cap && !at_stream_cap,
                            Refusal::TooManyAssociations => false,
                        };
                        if !justified || was_open || id != frame.stream_id {
                            return Err(format!("{action:?} not justified"));
                        }
                    }
                    Action::Alert(text) => {
                        if settings_seen || frame.cmd != Command::Syn || text != ALERT_NO_SETTINGS {
                            return Err(format!("{action:?} after {:?}", frame.cmd));
                        }
                        alerted = true;
                    }
                    Action::Send(cmd, _, payload) => {
                        let expected = match cmd {
                            Command::HeartResponse => {
                                frame.cmd == Command::HeartRequest && payload == Payload::Empty
                            }
                            Command::UpdatePaddingScheme => {
                                frame.cmd == Command::Settings && payload == Payload::PaddingScheme
                            }
                            Command::ServerSettings => {
                                frame.cmd == Command::Settings && session.version() >= 2
                            }
                            _ => false,
                        };
                        if !expected {
                            return Err(format!("{action:?} for {:?}", frame.cmd));
                        }
                    }
                }
            }
            if frame.cmd == Command::Settings && !alerted {
                settings_seen = true;
            }
            if frame.cmd == Command::Syn && !settings_seen && !alerted {
                return Err("a SYN before Settings did not end the session".into());
            }
            // The driver's own events, in any order the tasks could produce them.
            for _ in 0..rng.gen_range(0..3) {
                let id = rng.gen_range(0..12u32);
                match rng.gen_range(0..3) {
                    0 => {
                        session.stream_dialed(id);
                        dialing.remove(&id);
                    }
                    1 => {
                        let result = session.open_association(id);
                        let allowed = !open.contains(&id)
                            || associations.contains(&id)
                            || associations.len() < RULES.uot;
                        if result.is_ok() != allowed {
                            return Err(format!("association {id}: {result:?}"));
                        }
                        if result.is_ok() && open.contains(&id) {
                            associations.insert(id);
                        }
                    }
                    _ => {
                        let ended = session.stream_ended(id, now);
                        if ended.is_some() != open.remove(&id) {
                            return Err(format!("stream {id} ended: {ended:?}"));
                        }
                        if ended.is_some() {
                            last_activity = now;
                        }
                        dialing.remove(&id);
                        associations.remove(&id);
                    }
                }
            }
            let counts = (session.streams(), session.dialing(), session.associations());
            if counts != (open.len(), dialing.len(), associations.len()) {
                return Err(format!(
                    "counts {counts:?}, model {:?}",
                    (open.len(), dialing.len(), associations.len())
                ));
            }
            if counts.0 > RULES.streams || counts.1 > RULES.dialing || counts.2 > RULES.uot {
                return Err(format!("caps passed: {counts:?}"));
            }
        }
        buffered.drain(..used);
        if buffered.len() > frame::HEADER_LEN + frame::MAX_DATA_LEN {
            return Err(format!(
                "{} bytes buffered without a whole frame",
                buffered.len()
            ));
        }
        let later = now + Duration::from_millis(rng.gen_range(0..60_000));
        let idle = open.is_empty() && later >= last_activity + RULES.idle_timeout;
        if session.is_idle(later) != idle {
            return Err(format!(
                "idle at +{:?}: {}, model {idle}",
                later - start,
                !idle
            ));
        }
    }
    if reached.is_empty() {
        return Ok(format!("no action ({} frames)", frames.min(1)));
    }
    Ok(reached.into_iter().collect::<Vec<_>>().join("+"))
}
