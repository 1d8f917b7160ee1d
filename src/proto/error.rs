//! Errors of the sans-IO protocol core, one enum per kind of input.
//!
//! Every decoder distinguishes "need more bytes" (`Ok(None)`) from input that can
//! never become valid (`Err`), so callers can tell a slow peer from a broken one.

use thiserror::Error;

/// A frame could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// Frame data is limited to 65535 bytes by its u16 length field.
    #[error("frame data of {0} bytes exceeds the 65535-byte limit")]
    DataTooLong(usize),
}

/// A SOCKS-form address was malformed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddrError {
    /// The address type byte is not 1 (IPv4), 3 (domain) or 4 (IPv6).
    #[error("unknown address type {0:#04x}")]
    UnknownType(u8),
    /// A domain name of length zero.
    #[error("empty domain name")]
    EmptyDomain,
    /// A domain name that is not valid UTF-8 or holds control characters.
    #[error("domain name is not printable text")]
    InvalidDomain,
    /// A domain name too long to encode (over 255 bytes).
    #[error("domain name of {0} bytes is longer than 255")]
    DomainTooLong(usize),
}

/// A settings block (client Settings or ServerSettings) was malformed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    /// Settings are UTF-8 text.
    #[error("settings are not valid UTF-8")]
    NotUtf8,
}

/// A padding scheme text was malformed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PaddingError {
    /// The text is not UTF-8.
    #[error("padding scheme is not valid UTF-8")]
    NotUtf8,
    /// No `key=value` line at all.
    #[error("padding scheme has no key=value lines")]
    Empty,
    /// `stop` is missing or not a non-negative integer.
    #[error("padding scheme lacks a valid `stop=N` line")]
    MissingStop,
    /// The scheme text does not fit in one UpdatePaddingScheme frame.
    #[error("padding scheme of {0} bytes does not fit in one frame (65535 max)")]
    TooLong(usize),
    /// A line the clients would not read as meant (line numbers count from 1).
    #[error("padding scheme line {line} `{text}`: {why}")]
    BadLine {
        line: usize,
        text: String,
        why: &'static str,
    },
    /// One write would carry more padding than a client takes.
    #[error(
        "padding scheme packet {packet} pads one write with up to {bytes} bytes (at most {limit})"
    )]
    WriteTooPadded {
        packet: u32,
        bytes: usize,
        limit: usize,
    },
    /// The packets before `stop` would carry more padding than a client takes.
    #[error("padding scheme pads a session with up to {bytes} bytes (at most {limit})")]
    SessionTooPadded { bytes: usize, limit: usize },
}

/// A UDP-over-TCP request or datagram header was malformed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UotError {
    /// `is_connect` is neither 0 nor 1.
    #[error("UoT request: is_connect byte {0} is not 0 or 1")]
    ConnectFlag(u8),
    /// A datagram address type other than 0, 1, 2.
    #[error("UoT datagram: unknown address type {0:#04x}")]
    AddressType(u8),
    /// An address is malformed.
    #[error("UoT address: {0}")]
    Address(#[from] AddrError),
    /// A datagram longer than its u16 length can say.
    #[error("datagram of {0} bytes exceeds 65535")]
    DatagramTooLong(usize),
}
