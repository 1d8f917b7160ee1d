//! Executor-local plumbing shared by both ends of a session: per-core free lists
//! of frame, read and TLS buffers, a coalescing frame write queue that hands TLS
//! one vectored write (its first writes shaped by the padding scheme), a read buffer held only while bytes are buffered, the
//! server's TLS connection on buffers owned by the core (decrypted records offered
//! where they lie), the client's TCP transport under TLS (vectored sends,
//! read-ahead), a bounded byte pipe per
//! stream, a one-shot event and a re-armable signal, an `Rc`-based read/write
//! split, timeouts and a once-per-interval throttle.
//!
//! Everything here lives on one executor thread (`Rc`, `Cell`, `RefCell`): no locks,
//! no atomics.

mod buffers;
mod event;
mod padder;
mod pipe;
mod queue;
mod read_buffer;
mod split;
mod time;
mod tls_connection;
mod transport;
mod udp;

pub use buffers::{read_frame, FrameBuffer, FRAME_PAYLOAD};
pub use event::{Event, Signal, Wait};
pub use padder::{Padder, SharedScheme};
pub use pipe::{Pipe, PipeClosed};
pub use queue::{write_loop, WriteQueue, CONTROL_HIGH_WATER, QUEUE_HIGH_WATER};
pub use read_buffer::{read_frames, FramesEnd, ReadBuffer};
pub use split::{split, ReadHalf, WriteHalf};
pub use time::{check_period, timeout, Throttle};
pub use tls_connection::{HandshakeError, Plaintext, TlsConnection};
pub use transport::{
    peer_reset, reset_on_close, reset_on_close_if_delivered, send_now, set_send_buffer,
    unacknowledged, Transport,
};
pub use udp::{bind_udp, UDP_RECEIVE_BUFFER};
