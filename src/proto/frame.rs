//! The AnyTLS frame: `cmd u8 | stream id u32 | length u16 | data` (docs/protocol.md §3).
//!
//! [`decode`] borrows the data from the input buffer and answers `None` until a
//! whole frame is present; [`Deframer`] decodes a stream that arrives in pieces
//! (decrypted TLS records) without copying stream data; the `encode_*` functions
//! append to a caller's buffer so many frames can be coalesced into one write.

use super::error::FrameError;

/// Size of the frame header.
pub const HEADER_LEN: usize = 7;
/// Largest data a single frame can carry.
pub const MAX_DATA_LEN: usize = u16::MAX as usize;

/// A frame command. Unknown values are kept so a reader can skip them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Padding, read fully and discarded.
    Waste,
    /// Opens a stream.
    Syn,
    /// Stream payload.
    Push,
    /// Closes a stream.
    Fin,
    /// Client settings, the first frame of every session.
    Settings,
    /// Fatal error text; the session ends after it.
    Alert,
    /// A new padding scheme for the client.
    UpdatePaddingScheme,
    /// Outbound connection result of a stream (v2).
    SynAck,
    /// Liveness probe; answered with [`Command::HeartResponse`].
    HeartRequest,
    /// Answer to a [`Command::HeartRequest`].
    HeartResponse,
    /// Server settings (v2).
    ServerSettings,
    /// A command this implementation does not know.
    Unknown(u8),
}

impl From<u8> for Command {
    fn from(byte: u8) -> Self {
        match byte {
            0 => Command::Waste,
            1 => Command::Syn,
            2 => Command::Push,
            3 => Command::Fin,
            4 => Command::Settings,
            5 => Command::Alert,
            6 => Command::UpdatePaddingScheme,
            7 => Command::SynAck,
            8 => Command::HeartRequest,
            9 => Command::HeartResponse,
            10 => Command::ServerSettings,
            other => Command::Unknown(other),
        }
    }
}

impl From<Command> for u8 {
    fn from(cmd: Command) -> u8 {
        match cmd {
            Command::Waste => 0,
            Command::Syn => 1,
            Command::Push => 2,
            Command::Fin => 3,
            Command::Settings => 4,
            Command::Alert => 5,
            Command::UpdatePaddingScheme => 6,
            Command::SynAck => 7,
            Command::HeartRequest => 8,
            Command::HeartResponse => 9,
            Command::ServerSettings => 10,
            Command::Unknown(other) => other,
        }
    }
}

/// A decoded frame whose data borrows from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the frame does.
    pub cmd: Command,
    /// The stream it belongs to (0 for session-level frames).
    pub stream_id: u32,
    /// Its data, at most [`MAX_DATA_LEN`] bytes.
    pub data: &'a [u8],
}

impl Frame<'_> {
    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }
}

/// Decodes one frame from the front of `input`; `None` means more bytes are needed.
///
/// Every byte sequence is a valid frame structurally, so this never fails: meaning
/// (unknown commands, unknown streams) is the session's business.
pub fn decode(input: &[u8]) -> Option<Frame<'_>> {
    let header: &[u8; HEADER_LEN] = input.get(..HEADER_LEN)?.try_into().ok()?;
    let stream_id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = u16::from_be_bytes([header[5], header[6]]) as usize;
    let data = input.get(HEADER_LEN..HEADER_LEN + len)?;
    Some(Frame {
        cmd: Command::from(header[0]),
        stream_id,
        data,
    })
}

/// A frame, or a piece of a PSH or Waste frame, from [`Deframer::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The frame, with the piece's data.
    pub frame: Frame<'a>,
    /// More of this frame's data follows in later input.
    pub continues: bool,
}

/// Gathered data capacity a [`Deframer`] keeps between frames.
const GATHER_KEEP: usize = 1024;

/// Decodes frames from a byte stream handed over in pieces of any size.
///
/// PSH and Waste data (the bulk of a session) is handed on in the pieces it
/// arrives in, borrowed from the input: a PSH frame split over two pieces comes
/// out as two PSH frames of the same stream, which mean the same bytes. Every
/// other frame comes out whole: borrowed when it lies within one piece, else
/// gathered (it is small).
#[derive(Debug, Default)]
pub struct Deframer {
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Data bytes still to come of the frame whose header was read.
    data_left: usize,
    /// The data gathered so far of a frame that comes out whole.
    gathered: Vec<u8>,
}

impl Deframer {
    /// The next frame (or piece of one) from the front of `input`, advancing it
    /// past what was used; `None` once `input` holds nothing more to hand on
    /// (everything in it was taken in).
    pub fn next<'s, 'i: 's>(&'s mut self, input: &mut &'i [u8]) -> Option<Piece<'s>> {
        if self.header_len < HEADER_LEN {
            if self.header_len == 0 && !self.gathered.is_empty() {
                // The last gathered frame was handed on; a large one is not kept.
                if self.gathered.capacity() > GATHER_KEEP {
                    self.gathered = Vec::new();
                }
                self.gathered.clear();
            }
            let take = (HEADER_LEN - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
            self.header_len += take;
            *input = &input[take..];
            if self.header_len < HEADER_LEN {
                return None;
            }
            self.data_left = u16::from_be_bytes([self.header[5], self.header[6]]) as usize;
            if self.data_left == 0 {
                self.header_len = 0;
                return Some(self.piece(&[]));
            }
        }
        let streamed = matches!(
            Command::from(self.header[0]),
            Command::Push | Command::Waste
        );
        if streamed || (self.gathered.is_empty() && input.len() >= self.data_left) {
            if input.is_empty() {
                return None;
            }
            let (data, rest) = input.split_at(self.data_left.min(input.len()));
            *input = rest;
            self.consumed(data.len());
            return Some(self.piece(data));
        }
        let take = self.data_left.min(input.len());
        self.gathered.extend_from_slice(&input[..take]);
        *input = &input[take..];
        self.consumed(take);
        if self.header_len != 0 {
            return None;
        }
        Some(Piece {
            frame: Frame {
                cmd: Command::from(self.header[0]),
                stream_id: self.stream_id(),
                data: &self.gathered,
            },
            continues: false,
        })
    }

    /// Whether the stream stopped between frames (nothing of a frame is pending).
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0
    }

    fn stream_id(&self) -> u32 {
        let h = &self.header;
        u32::from_be_bytes([h[1], h[2], h[3], h[4]])
    }

    fn piece<'a>(&self, data: &'a [u8]) -> Piece<'a> {
        Piece {
            frame: Frame {
                cmd: Command::from(self.header[0]),
                stream_id: self.stream_id(),
                data,
            },
            continues: !self.at_boundary(),
        }
    }

    /// Counts `n` data bytes of the current frame as read; after its last, the
    /// next header starts.
    fn consumed(&mut self, n: usize) {
        self.data_left -= n;
        if self.data_left == 0 {
            self.header_len = 0;
        }
    }
}

/// Appends a frame header announcing `len` data bytes.
pub fn encode_header(
    cmd: Command,
    stream_id: u32,
    len: usize,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let len = u16::try_from(len).map_err(|_| FrameError::DataTooLong(len))?;
    out.push(cmd.into());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The header of a frame carrying `len` data bytes, for a caller that places the
/// data after it itself (a buffer read into at offset [`HEADER_LEN`]).
pub fn header(cmd: Command, stream_id: u32, len: u16) -> [u8; HEADER_LEN] {
    let id = stream_id.to_be_bytes();
    let len = len.to_be_bytes();
    [cmd.into(), id[0], id[1], id[2], id[3], len[0], len[1]]
}

/// Appends a whole frame.
pub fn encode(
    cmd: Command,
    stream_id: u32,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode_header(cmd, stream_id, data.len(), out)?;
    out.extend_from_slice(data);
    Ok(())
}

/// Appends `payload` as as many PSH frames as it needs (none for an empty payload).
pub fn encode_push(stream_id: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + HEADER_LEN * payload.len().div_ceil(MAX_DATA_LEN));
    for chunk in payload.chunks(MAX_DATA_LEN) {
        encode(Command::Push, stream_id, chunk, out).expect("chunk fits in a frame");
    }
}

/// Appends a Waste frame carrying `len` zero bytes.
pub fn encode_waste(len: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_header(Command::Waste, 0, len, out)?;
    out.resize(out.len() + len, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_frames() -> Vec<u8> {
        let mut out = Vec::new();
        encode(Command::Settings, 0, b"v=2\nclient=test", &mut out).unwrap();
        encode(Command::Syn, 1, b"", &mut out).unwrap();
        encode(Command::Push, 1, &[0xAB; 300], &mut out).unwrap();
        encode(Command::Unknown(200), 9, b"xyz", &mut out).unwrap();
        encode(Command::Fin, 1, b"", &mut out).unwrap();
        out
    }

    fn decode_all(mut input: &[u8]) -> Vec<(Command, u32, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(frame) = decode(input) {
            frames.push((frame.cmd, frame.stream_id, frame.data.to_vec()));
            input = &input[frame.wire_len()..];
        }
        assert!(input.is_empty(), "trailing bytes left undecoded");
        frames
    }

    #[test]
    fn round_trip_every_command() {
        for byte in 0..=u8::MAX {
            let cmd = Command::from(byte);
            assert_eq!(u8::from(cmd), byte);
            let mut out = Vec::new();
            encode(cmd, 0xDEAD_BEEF, &[byte; 3], &mut out).unwrap();
            let frame = decode(&out).unwrap();
            assert_eq!(frame.cmd, cmd);
            assert_eq!(frame.stream_id, 0xDEAD_BEEF);
            assert_eq!(frame.data, &[byte; 3]);
            assert_eq!(frame.wire_len(), out.len());
        }
    }

    #[test]
    fn header_layout_is_big_endian() {
        let mut out = Vec::new();
        encode(Command::Push, 0x0102_0304, b"hi", &mut out).unwrap();
        assert_eq!(out, [2, 1, 2, 3, 4, 0, 2, b'h', b'i']);
        assert_eq!(header(Command::Push, 0x0102_0304, 2), out[..HEADER_LEN]);
    }

    #[test]
    fn every_split_point_needs_more_then_decodes() {
        let wire = sample_frames();
        let expected = decode_all(&wire);
        for split in 0..wire.len() {
            // Feed the first `split` bytes, then the rest, as a streaming reader would.
            let mut buffer = wire[..split].to_vec();
            let mut frames = Vec::new();
            let mut consume = |buffer: &mut Vec<u8>| {
                while let Some(frame) = decode(buffer) {
                    frames.push((frame.cmd, frame.stream_id, frame.data.to_vec()));
                    let used = frame.wire_len();
                    buffer.drain(..used);
                }
            };
            consume(&mut buffer);
            buffer.extend_from_slice(&wire[split..]);
            consume(&mut buffer);
            assert!(buffer.is_empty());
            assert_eq!(frames, expected, "split at {split}");
        }
    }

    /// Runs a [`Deframer`] over `pieces`, joining the PSH and Waste pieces it
    /// hands on back into frames (a frame's pieces are consecutive).
    fn deframe(pieces: &[&[u8]]) -> Vec<(Command, u32, Vec<u8>)> {
        let mut deframer = Deframer::default();
        let mut frames: Vec<(Command, u32, Vec<u8>)> = Vec::new();
        let mut continues = false;
        for piece in pieces {
            let mut input = *piece;
            while let Some(Piece {
                frame,
                continues: more,
            }) = deframer.next(&mut input)
            {
                match frames.last_mut() {
                    Some(last) if continues => last.2.extend_from_slice(frame.data),
                    _ => frames.push((frame.cmd, frame.stream_id, frame.data.to_vec())),
                }
                continues = more;
            }
            assert!(input.is_empty(), "every byte handed over is taken in");
        }
        assert!(deframer.at_boundary());
        frames
    }

    #[test]
    fn deframer_decodes_any_split_the_same() {
        let wire = sample_frames();
        let expected = decode_all(&wire);
        assert_eq!(deframe(&[&wire]), expected);
        for first in 0..wire.len() {
            for second in first..wire.len() {
                let pieces = [&wire[..first], &wire[first..second], &wire[second..]];
                assert_eq!(deframe(&pieces), expected, "split at {first}, {second}");
            }
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(deframe(&bytes), expected, "one byte at a time");
    }

    #[test]
    fn deframer_borrows_stream_data_and_gathers_the_rest() {
        let mut wire = Vec::new();
        encode(Command::Push, 3, &[7; 100], &mut wire).unwrap();
        encode(Command::Settings, 0, b"v=2", &mut wire).unwrap();
        let mut deframer = Deframer::default();
        // The PSH arrives in two pieces and comes out as two, borrowed.
        let (first, second) = wire.split_at(50);
        let mut input = first;
        let Piece { frame, continues } = deframer.next(&mut input).unwrap();
        assert_eq!(
            (frame.cmd, frame.stream_id, frame.data.len()),
            (Command::Push, 3, 43)
        );
        assert!(continues);
        assert!(std::ptr::eq(
            frame.data.as_ptr(),
            first[HEADER_LEN..].as_ptr()
        ));
        assert!(deframer.next(&mut input).is_none());
        let mut input = &second[..60];
        let Piece { frame, continues } = deframer.next(&mut input).unwrap();
        assert_eq!(frame.data.len(), 57);
        assert!(!continues && deframer.at_boundary());
        // The Settings frame is split: it comes out whole once complete.
        assert!(deframer.next(&mut input).is_none());
        let mut input = &second[60..];
        let Piece { frame, continues } = deframer.next(&mut input).unwrap();
        assert_eq!((frame.cmd, frame.data), (Command::Settings, &b"v=2"[..]));
        assert!(!continues);
        assert!(deframer.next(&mut input).is_none());
    }

    #[test]
    fn truncated_input_needs_more() {
        let wire = sample_frames();
        let first = decode(&wire).unwrap().wire_len();
        for len in 0..first {
            assert_eq!(decode(&wire[..len]), None, "prefix of {len} bytes");
        }
    }

    #[test]
    fn oversized_data_is_refused() {
        let mut out = Vec::new();
        assert_eq!(
            encode(Command::Push, 1, &vec![0; MAX_DATA_LEN + 1], &mut out),
            Err(FrameError::DataTooLong(MAX_DATA_LEN + 1))
        );
        assert!(out.is_empty(), "nothing written on error");
        encode(Command::Push, 1, &vec![7; MAX_DATA_LEN], &mut out).unwrap();
        assert_eq!(decode(&out).unwrap().data.len(), MAX_DATA_LEN);
    }

    #[test]
    fn push_splits_large_payloads() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        encode_push(5, &payload, &mut out);
        let frames = decode_all(&out);
        assert_eq!(frames.len(), 4);
        assert!(frames
            .iter()
            .all(|(cmd, sid, _)| *cmd == Command::Push && *sid == 5));
        let joined: Vec<u8> = frames.into_iter().flat_map(|(_, _, d)| d).collect();
        assert_eq!(joined, payload);
        out.clear();
        encode_push(5, b"", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn waste_frame_has_requested_length() {
        let mut out = Vec::new();
        encode_waste(100, &mut out).unwrap();
        let frame = decode(&out).unwrap();
        assert_eq!(frame.cmd, Command::Waste);
        assert_eq!(frame.data.len(), 100);
        assert!(encode_waste(70_000, &mut out).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678u32;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let mut rest = &bytes[..];
            while let Some(frame) = decode(rest) {
                assert!(frame.wire_len() <= rest.len());
                rest = &rest[frame.wire_len()..];
            }
        }
    }
}
