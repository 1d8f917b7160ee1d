//! The pair target: the client machine against the server machine
//! ([`anytls::proto::pair::Pair`], simulated time, no sockets), driven by a
//! script read from the input: streams opened to addresses of every kind,
//! writes, closes, targets that close or stop taking bytes, dials that succeed,
//! fail or hang, heartbeats, raw frames a hostile client would send, padding
//! changes and time passing. After every step: the caps hold, a stream's target
//! has received a prefix of what the client wrote on it (in order, nothing
//! twice), and a machine never keeps asking for a deadline that has passed. At
//! the end, an hour later: no stream still waits for its address or its dial,
//! and every stream the client opened has been answered (open, refused or
//! finished) unless the client closed it or its session ended.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use anytls::proto::client_session::Action as ClientAction;
use anytls::proto::frame::Command;
use anytls::proto::pair::{Dial, Pair};
use anytls::proto::session::{test_rules, StreamState};

/// Targets a script opens streams to: an address, a name, UDP over TCP v2 and v1.
const TARGETS: [&str; 4] = [
    "127.0.0.1:443",
    "example.com:80",
    "sp.v2.udp-over-tcp.arpa:0",
    "sp.udp-over-tcp.arpa:0",
];

/// A script of up to 200 steps, three bytes each.
pub(crate) fn generate(rng: &mut SmallRng) -> Vec<u8> {
    let steps = rng.gen_range(0..200);
    let mut script = Vec::with_capacity(steps * 3);
    for _ in 0..steps {
        // Opens, writes and time are the common steps.
        let op = match rng.gen_range(0..100) {
            0..=24 => 0,
            25..=49 => 1,
            50..=64 => 6,
            _ => rng.gen_range(0..12),
        };
        script.extend([op, rng.gen(), rng.gen()]);
    }
    script
}

/// Runs the script in `input`; `Err` names the first broken rule.
pub(crate) fn check(input: &[u8], _rng: &mut SmallRng) -> Result<String, String> {
    let rules = test_rules();
    let mut pair = Pair::new(rules);
    pair.drive();
    let mut opened: Vec<u32> = Vec::new();
    let mut written: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut closed: BTreeSet<u32> = BTreeSet::new();
    let mut reached = BTreeSet::new();
    for step in input.chunks(3) {
        let [op, a, b] = [
            step[0],
            *step.get(1).unwrap_or(&0),
            *step.get(2).unwrap_or(&0),
        ];
        let pick = |ids: &[u32]| ids.get(a as usize % ids.len().max(1)).copied();
        match op % 12 {
            0 => {
                let id = pair.open(TARGETS[a as usize % TARGETS.len()]);
                opened.push(id);
                reached.insert("open");
            }
            1 => {
                if let Some(id) = pick(&opened).filter(|id| !closed.contains(id)) {
                    let data: Vec<u8> = (0..usize::from(b) * 97).map(|i| (i % 251) as u8).collect();
                    written.entry(id).or_default().extend_from_slice(&data);
                    pair.write(id, &data);
                    reached.insert("write");
                }
            }
            2 => {
                if let Some(id) = pick(&opened) {
                    closed.insert(id);
                    pair.close(id);
                    reached.insert("close");
                }
            }
            3 => {
                if let Some(id) = pick(&opened) {
                    pair.target_closes(id);
                    reached.insert("target closes");
                }
            }
            4 => {
                if let Some(id) = pick(&opened) {
                    pair.set_takes(id, b % 2 == 0);
                    reached.insert("takes");
                }
            }
            5 => {
                pair.client.heartbeat();
                pair.drive();
            }
            6 => pair.advance(Duration::from_millis(u64::from(a) * u64::from(b % 64 + 1))),
            7 => {
                // Any command for a stream id the client may be using, but data
                // only for ids it never uses (the byte-order check is the client's).
                let cmd = Command::from(a % 12);
                let id = u32::from(b % 8) + if cmd == Command::Push { 1000 } else { 0 };
                let data: Vec<u8> = (0..b % 16).collect();
                pair.send_raw(cmd, id, &data);
                reached.insert("raw frame");
            }
            8 => {
                pair.dial = match a % 3 {
                    0 => Dial::After(Duration::from_millis(u64::from(b) * 20)),
                    1 => Dial::FailsAfter(Duration::from_millis(u64::from(b) * 20), "refused"),
                    _ => Dial::Never,
                };
            }
            9 => {
                pair.server
                    .handle_padding_changed(&format!("{:032x}", u128::from(a)));
                pair.drive();
            }
            10 => {
                pair.targets_take = a % 2 == 0;
            }
            _ => {
                if let Some(id) = pick(&opened) {
                    let data = vec![b; usize::from(a)];
                    pair.target_sends(id, &data);
                }
            }
        }
        let server = &pair.server;
        let counts = (server.streams(), server.dialing(), server.associations());
        if counts.0 > rules.streams || counts.1 > rules.dialing || counts.2 > rules.uot {
            return Err(format!("caps passed: {counts:?}"));
        }
        for (id, sent) in &written {
            let received = pair.target_received(*id);
            if !sent.starts_with(received) {
                return Err(format!(
                    "stream {id}: the target got {} bytes that are not what the client wrote",
                    received.len()
                ));
            }
        }
    }
    pair.advance(Duration::from_secs(3600));
    for id in pair.server.stream_ids().collect::<Vec<_>>() {
        if matches!(
            pair.server.stream_state(id),
            Some(StreamState::AwaitingAddress | StreamState::Dialing)
        ) && !matches!(pair.dial, Dial::Never)
        {
            return Err(format!("stream {id} still waits after an hour"));
        }
    }
    if !pair.client.is_ended() {
        for id in &opened {
            let answered = pair.client_actions.iter().any(|action| {
                matches!(action,
                    ClientAction::Established(s) | ClientAction::Refused(s, _) | ClientAction::Finished(s)
                    if s == id)
            });
            if !answered && !closed.contains(id) {
                return Err(format!("stream {id} was never answered"));
            }
        }
    }
    if pair.client.is_ended() {
        reached.insert("client ended");
    }
    if pair.server.is_ended() {
        reached.insert("server ended");
    }
    if reached.is_empty() {
        return Ok("nothing happened".to_owned());
    }
    Ok(reached.into_iter().collect::<Vec<_>>().join("+"))
}
