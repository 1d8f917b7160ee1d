//! SOCKS5 (RFC 1928) inbound messages, sans-IO: the greeting, the request and the
//! reply. Only "no authentication" and CONNECT are offered.

use thiserror::Error;

use crate::proto::addr::Address;
use crate::proto::error::AddrError;

/// The SOCKS version byte.
pub const VERSION: u8 = 5;
/// "No authentication required".
pub const METHOD_NO_AUTH: u8 = 0;
/// "No acceptable methods".
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// CONNECT.
pub const CMD_CONNECT: u8 = 1;

/// Reply codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// Succeeded.
    Succeeded = 0,
    /// General SOCKS server failure.
    GeneralFailure = 1,
    /// Network unreachable.
    NetworkUnreachable = 3,
    /// Host unreachable.
    HostUnreachable = 4,
    /// Connection refused.
    ConnectionRefused = 5,
    /// TTL expired (used for timeouts).
    TtlExpired = 6,
    /// Command not supported.
    CommandNotSupported = 7,
    /// Address type not supported.
    AddressTypeNotSupported = 8,
}

impl Reply {
    /// The closest reply code for an AnyTLS SYNACK error text.
    pub fn for_refusal(text: &str) -> Reply {
        let text = text.to_ascii_lowercase();
        if text.contains("refused") {
            Reply::ConnectionRefused
        } else if text.contains("timed out") || text.contains("timeout") {
            Reply::TtlExpired
        } else if text.contains("resolve") || text.contains("unreachable") {
            Reply::HostUnreachable
        } else {
            Reply::GeneralFailure
        }
    }
}

/// A malformed or unsupported SOCKS5 message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SocksError {
    /// Not version 5.
    #[error("not SOCKS5 (version byte {0:#04x})")]
    Version(u8),
    /// The client offers no method we accept.
    #[error("client offers no acceptable authentication method")]
    NoAcceptableMethod,
    /// A command other than CONNECT.
    #[error("unsupported SOCKS command {0}")]
    Command(u8),
    /// The destination address is malformed.
    #[error("bad destination address: {0}")]
    Address(#[from] AddrError),
}

/// Parses the greeting `VER NMETHODS METHODS...`; `Ok(None)` needs more bytes.
/// On success returns the bytes used (the reply is [`METHOD_NO_AUTH`]).
pub fn parse_greeting(input: &[u8]) -> Result<Option<usize>, SocksError> {
    let Some(&version) = input.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(SocksError::Version(version));
    }
    let Some(&count) = input.get(1) else {
        return Ok(None);
    };
    let Some(methods) = input.get(2..2 + count as usize) else {
        return Ok(None);
    };
    if !methods.contains(&METHOD_NO_AUTH) {
        return Err(SocksError::NoAcceptableMethod);
    }
    Ok(Some(2 + count as usize))
}

/// Parses the request `VER CMD RSV ATYP ADDR PORT`; `Ok(None)` needs more bytes.
pub fn parse_request(input: &[u8]) -> Result<Option<(Address, usize)>, SocksError> {
    if input.len() < 3 {
        if let Some(&version) = input.first().filter(|&&v| v != VERSION) {
            return Err(SocksError::Version(version));
        }
        return Ok(None);
    }
    if input[0] != VERSION {
        return Err(SocksError::Version(input[0]));
    }
    if input[1] != CMD_CONNECT {
        return Err(SocksError::Command(input[1]));
    }
    Ok(Address::decode(&input[3..])?.map(|(address, used)| (address, 3 + used)))
}

/// The reply to a request, with an all-zero IPv4 bound address.
pub fn reply(code: Reply) -> [u8; 10] {
    [VERSION, code as u8, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_at_every_split() {
        let greeting = [5, 2, 2, 0];
        for len in 0..greeting.len() {
            assert_eq!(parse_greeting(&greeting[..len]), Ok(None));
        }
        assert_eq!(parse_greeting(&greeting), Ok(Some(4)));
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(SocksError::Version(4)));
        assert_eq!(
            parse_greeting(&[5, 1, 2]),
            Err(SocksError::NoAcceptableMethod)
        );
    }

    #[test]
    fn request_at_every_split() {
        let mut request = vec![5, 1, 0];
        Address::Domain("example.com".into(), 443)
            .encode(&mut request)
            .unwrap();
        for len in 0..request.len() {
            assert_eq!(parse_request(&request[..len]), Ok(None), "prefix {len}");
        }
        let (address, used) = parse_request(&request).unwrap().unwrap();
        assert_eq!(address, Address::Domain("example.com".into(), 443));
        assert_eq!(used, request.len());
    }

    #[test]
    fn bad_requests() {
        assert_eq!(parse_request(&[5, 2, 0, 1]), Err(SocksError::Command(2)));
        assert_eq!(parse_request(&[4, 1, 0]), Err(SocksError::Version(4)));
        assert_eq!(
            parse_request(&[5, 1, 0, 9, 0, 0]),
            Err(SocksError::Address(AddrError::UnknownType(9)))
        );
        assert_eq!(reply(Reply::ConnectionRefused)[1], 5);
        assert_eq!(
            Reply::for_refusal("connect 1.2.3.4:1: Connection refused"),
            Reply::ConnectionRefused
        );
        assert_eq!(
            Reply::for_refusal("connect x: timed out after 5s"),
            Reply::TtlExpired
        );
        assert_eq!(
            Reply::for_refusal("resolve x: no addresses"),
            Reply::HostUnreachable
        );
    }
}
