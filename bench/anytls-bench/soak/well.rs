//! The well-behaved clients: the library's client with a reusing session pool
//! (docs/protocol.md §5; its idle timeout below the server's, as a real client's
//! should be), one stream per leased session at a time, every byte checked.
//!
//! - bulk: an echo stream, writing and reading at once, byte-exact;
//! - short: a 12-byte request to the download target, a 1 to 16 KiB response
//!   checked byte for byte, then FIN;
//! - udp: UDP over TCP (connect mode) to a UDP echo, 16 datagrams one at a time;
//! - slow: a download read 8 KiB every 40 ms, checked, then FIN.
//!
//! An error is a failed connect, a refused or cut stream, a wrong byte or a
//! timeout (--op-timeout). Abrupt disconnects run beside them on sessions of
//! their own and are not well-behaved: they drop the connection mid-stream.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anytls::client::{
    ClientConfig, ClientSession, ClientStream, PoolSettings, SessionPool, StreamError,
};
use anytls::plumbing::{timeout, Event};
use anytls::proto::uot::{decode_datagram, encode_datagram, Request, UOT_V2_NAME};
use anytls::proto::Address;
use futures_lite::future;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::tally::Rec;
use super::targets::{download_request, Targets};
use super::{Ctx, Plan};
use crate::scenarios::unless;

/// Pause between two operations of a lane (keeps a 2-core machine responsive).
fn pause_of(kind: &str) -> Duration {
    Duration::from_millis(match kind {
        "bulk" => 250,
        "short" => 10,
        "udp" => 20,
        _ => 100,
    })
}

/// One executor's well-behaved clients.
#[derive(Clone)]
pub struct Clients {
    pub pool: Rc<SessionPool>,
    plan: std::sync::Arc<Plan>,
    targets: Rc<Targets>,
    rec: Rc<Rec>,
    /// For the abrupt disconnects (sessions of their own, not pooled).
    config: Rc<ClientConfig>,
    seed: Rc<Cell<u64>>,
}

impl Clients {
    pub fn new(ctx: &Ctx) -> Clients {
        let plan = &ctx.plan;
        let config = ClientConfig::new(plan.server, "localhost", plan.tls.clone(), &plan.password);
        let settings = PoolSettings {
            min_idle: 0,
            // Below the server's idle-session timeout (scripts/soak.sh: 5 s), so
            // the client, not the server, retires idle sessions: otherwise a stream
            // may race the server's close, as with any AnyTLS client.
            idle_timeout: Duration::from_secs(2),
            check_interval: Duration::from_secs(1),
            disable_reuse: false,
            udp_idle_timeout: Duration::from_secs(60),
        };
        Clients {
            pool: Rc::new(SessionPool::new(config.clone(), settings)),
            plan: plan.clone(),
            targets: ctx.targets.clone(),
            rec: ctx.rec.clone(),
            config: Rc::new(config),
            seed: Rc::new(Cell::new(ctx.index as u64 * 1_000_003 + 17)),
        }
    }

    fn rng(&self) -> SmallRng {
        let seed = self.seed.get();
        self.seed.set(seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
        SmallRng::seed_from_u64(seed)
    }

    /// Lanes of `kind` on this executor.
    pub fn lanes(&self, kind: &str) -> usize {
        let lanes = &self.plan.lanes;
        match kind {
            "bulk" => lanes.bulk,
            "short" => lanes.short,
            "udp" => lanes.udp,
            _ => lanes.slow,
        }
    }

    /// Runs operations of `kind` until `stop`; an operation under way finishes.
    pub async fn lane(&self, kind: &'static str, lane: usize, stop: &Event) {
        let mut rng = self.rng();
        // Spread the lanes' starts.
        glommio::timer::sleep(Duration::from_millis(lane as u64 * 37 % 500)).await;
        while !stop.is_set() {
            let limit = self.plan.op_timeout;
            let started = Instant::now();
            let outcome = match timeout(limit, self.op(kind, &mut rng)).await {
                Some(outcome) => outcome,
                None => Err(format!("timeout: no completion within {limit:?}")),
            };
            match outcome {
                Ok((bytes, datagrams)) => {
                    if kind == "short" {
                        self.rec.short_took(started.elapsed());
                    }
                    self.rec.served(kind, bytes, datagrams)
                }
                Err(message) => self.rec.error(kind, &message),
            }
            let _ = unless(stop, glommio::timer::sleep(pause_of(kind))).await;
        }
    }

    /// One operation on a leased session; (bytes, datagrams) checked.
    async fn op(&self, kind: &str, rng: &mut SmallRng) -> Result<(u64, u64), String> {
        let lease = self
            .pool
            .acquire()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let session = lease.session.clone();
        let result = match kind {
            "bulk" => self.bulk(&session, rng).await,
            "short" => {
                let len = rng.gen_range(1024..=16 * 1024);
                self.download(&session, len, rng, None).await
            }
            "udp" => self.udp(&session, rng).await,
            _ => {
                let pace = Some((8 * 1024, Duration::from_millis(40)));
                self.download(&session, self.plan.slow_bytes, rng, pace)
                    .await
            }
        };
        self.pool.release(lease);
        result
    }

    fn open(&self, session: &ClientSession, target: &Address) -> Result<ClientStream, String> {
        session
            .open_stream(target)
            .map_err(|e| format!("open stream: {e}"))
    }

    /// Echoes `bulk_bytes / 2 ..= bulk_bytes` bytes, writing and reading at once.
    async fn bulk(
        &self,
        session: &ClientSession,
        rng: &mut SmallRng,
    ) -> Result<(u64, u64), String> {
        let max = self.plan.bulk_bytes;
        let size = rng.gen_range(max / 2..=max).max(1);
        let pos = rng.gen::<u32>() as usize;
        let block = &self.targets.block;
        let stream = self.open(session, &self.targets.echo)?;
        let write = async {
            let mut buf = vec![0u8; 32 * 1024];
            let mut sent = 0;
            while sent < size {
                let n = buf.len().min(size - sent);
                block.fill(pos + sent, &mut buf[..n]);
                stream
                    .write_all(&buf[..n])
                    .await
                    .map_err(|e| format!("write failed after {sent} of {size} bytes: {e}"))?;
                sent += n;
            }
            Ok(())
        };
        let read = async {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < size {
                let n = stream.read(&mut buf).await;
                if n == 0 {
                    return Err(ended(session, &stream, got, size).await);
                }
                if n > size - got {
                    return Err(format!(
                        "{} bytes more than the {size} sent",
                        got + n - size
                    ));
                }
                if let Some(i) = block.mismatch(pos + got, &buf[..n]) {
                    return Err(format!("wrong byte at offset {} of {size}", got + i));
                }
                got += n;
            }
            Ok(())
        };
        future::try_zip(write, read).await?;
        stream.close();
        Ok((2 * size as u64, 0))
    }

    /// Downloads `len` bytes from the download target, checks them and the FIN
    /// after them; with `pace`, reads at most `pace.0` bytes every `pace.1`.
    async fn download(
        &self,
        session: &ClientSession,
        len: usize,
        rng: &mut SmallRng,
        pace: Option<(usize, Duration)>,
    ) -> Result<(u64, u64), String> {
        let pos = rng.gen::<u32>() as usize;
        let stream = self.open(session, &self.targets.download)?;
        stream
            .write_all(&download_request(len, pos))
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        let chunk = pace.map_or(64 * 1024, |(bytes, _)| bytes);
        let mut buf = vec![0u8; chunk];
        let mut got = 0;
        while got < len {
            if let Some((_, every)) = pace {
                glommio::timer::sleep(every).await;
            }
            let n = stream.read(&mut buf).await;
            if n == 0 {
                return Err(ended(session, &stream, got, len).await);
            }
            if n > len - got {
                return Err(format!(
                    "{} bytes more than the {len} asked for",
                    got + n - len
                ));
            }
            if let Some(i) = self.targets.block.mismatch(pos + got, &buf[..n]) {
                return Err(format!("wrong byte at offset {} of {len}", got + i));
            }
            got += n;
        }
        // The target closed after the last byte: the server must send FIN.
        if stream.read(&mut buf).await != 0 {
            return Err(format!("bytes after the {len} asked for"));
        }
        if session.is_closed() {
            return Err("session closed instead of FIN after the response".into());
        }
        Ok((len as u64, 0))
    }

    /// 16 datagrams, one at a time, through UDP over TCP to the UDP echo.
    async fn udp(&self, session: &ClientSession, rng: &mut SmallRng) -> Result<(u64, u64), String> {
        const DATAGRAMS: usize = 16;
        let stream = self.open(session, &Address::Domain(UOT_V2_NAME.into(), 0))?;
        let mut wire = Vec::new();
        Request {
            is_connect: true,
            destination: Address::Ip(self.targets.udp),
        }
        .encode(&mut wire)
        .map_err(|e| e.to_string())?;
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut bytes = 0u64;
        for i in 0..DATAGRAMS {
            let len = rng.gen_range(1..=1400);
            let pos = rng.gen::<u32>() as usize;
            let mut payload = vec![0u8; len];
            self.targets.block.fill(pos, &mut payload);
            encode_datagram(None, &payload, &mut wire).map_err(|e| e.to_string())?;
            stream
                .write_all(&wire)
                .await
                .map_err(|e| format!("write failed: {e}"))?;
            wire.clear();
            let back = loop {
                match decode_datagram(&pending, true) {
                    Err(e) => return Err(format!("bad datagram from the server: {e}")),
                    Ok(Some((datagram, used))) => {
                        let back = datagram.payload.to_vec();
                        pending.drain(..used);
                        break back;
                    }
                    Ok(None) => {}
                }
                let n = stream.read(&mut chunk).await;
                if n == 0 {
                    return Err(ended(session, &stream, i, DATAGRAMS).await + " (datagrams)");
                }
                pending.extend_from_slice(&chunk[..n]);
            };
            if back != payload {
                return Err(format!(
                    "datagram {i} came back different ({} bytes, sent {len})",
                    back.len()
                ));
            }
            bytes += 2 * len as u64;
        }
        if !pending.is_empty() {
            return Err(format!(
                "{} unexpected bytes after the datagrams",
                pending.len()
            ));
        }
        stream.close();
        Ok((bytes, DATAGRAMS as u64))
    }

    /// Abrupt disconnects until `stop`: a session of its own opens a stream, moves
    /// part of the data, and the connection is dropped without FIN (the client
    /// goes away: TLS and TCP closed under the stream).
    pub async fn abrupt_lane(&self, stop: &Event) {
        let mut rng = self.rng();
        while !stop.is_set() {
            let upload = rng.gen_bool(0.5);
            let limit = Duration::from_secs(10);
            let outcome = timeout(limit, self.abrupt(upload, &mut rng)).await;
            let name = match outcome {
                Some(Ok(())) if upload => "cut_mid_upload",
                Some(Ok(())) => "cut_mid_download",
                Some(Err(_)) => "failed_before_cut",
                None => "timed_out_before_cut",
            };
            self.rec.count("abrupt", "runs", 1);
            self.rec.count("abrupt", name, 1);
            let _ = unless(stop, glommio::timer::sleep(Duration::from_millis(300))).await;
        }
    }

    async fn abrupt(&self, upload: bool, rng: &mut SmallRng) -> Result<(), String> {
        let session = ClientSession::connect(&self.config)
            .await
            .map_err(|e| e.to_string())?;
        let cut_after = rng.gen_range(16 * 1024..=512 * 1024);
        if upload {
            // To the echo, not reading what comes back.
            let stream = self.open(&session, &self.targets.hostile_echo)?;
            let buf = vec![0x41u8; 16 * 1024];
            let mut sent = 0;
            while sent < cut_after {
                stream.write_all(&buf).await.map_err(|e| e.to_string())?;
                sent += buf.len();
            }
        } else {
            let stream = self.open(&session, &self.targets.hostile_download)?;
            stream
                .write_all(&download_request(64 << 20, 0))
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < cut_after {
                let n = stream.read(&mut buf).await;
                if n == 0 {
                    return Err("stream ended".into());
                }
                got += n;
            }
        }
        // Dropping the session drops the TLS connection with the stream open.
        drop(session);
        Ok(())
    }

    /// Closes the pool's idle sessions (every lease is back by now).
    pub fn close_all(&self) {
        self.rec.sessions_dialed(self.pool.sessions_dialed());
        let far = Instant::now() + Duration::from_secs(3600);
        // Every idle session is "expired" an hour from now; min_idle is 0.
        for session in self.pool.cleanup(far) {
            session.close();
        }
    }
}

/// Why a stream ended early, after `got` of `want`.
async fn ended(session: &ClientSession, stream: &ClientStream, got: usize, want: usize) -> String {
    if session.is_closed() {
        return match session.alert() {
            Some(alert) => format!("session ended by alert \"{alert}\" after {got} of {want}"),
            None => format!("session closed by the server after {got} of {want}"),
        };
    }
    match stream.established().await {
        Err(StreamError::Refused(text)) => format!("stream refused: {text}"),
        Err(StreamError::SessionClosed | StreamError::NotAnswered | StreamError::SynAckTimeout) => {
            format!("FIN before SYNACK after {got} of {want}")
        }
        Ok(()) => format!("FIN after {got} of {want}"),
    }
}
