//! SOCKS5 (RFC 1928) inbound messages, sans-IO: the greeting, the request, the
//! reply, and the header of UDP datagrams relayed for a UDP ASSOCIATE (RFC 1928
//! section 7). Only "no authentication" is offered; the commands are CONNECT and
//! UDP ASSOCIATE (BIND is refused).

use std::net::{IpAddr, SocketAddr};

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
/// BIND (not supported).
pub const CMD_BIND: u8 = 2;
/// UDP ASSOCIATE.
pub const CMD_UDP_ASSOCIATE: u8 = 3;
/// Length of `RSV u16 | FRAG u8` at the start of a SOCKS UDP datagram.
const UDP_HEADER_PREFIX: usize = 3;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocksCommand {
    /// Relay one TCP connection to the destination.
    Connect,
    /// Relay UDP datagrams; the destination is where the client will send from
    /// (all zeros when it does not know).
    UdpAssociate,
}

/// A parsed request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocksRequest {
    /// The command.
    pub command: SocksCommand,
    /// DST.ADDR and DST.PORT.
    pub destination: Address,
}

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
    /// A command other than CONNECT and UDP ASSOCIATE.
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
/// Returns the request and the bytes it used.
pub fn parse_request(input: &[u8]) -> Result<Option<(SocksRequest, usize)>, SocksError> {
    if input.len() < 3 {
        if let Some(&version) = input.first().filter(|&&v| v != VERSION) {
            return Err(SocksError::Version(version));
        }
        return Ok(None);
    }
    if input[0] != VERSION {
        return Err(SocksError::Version(input[0]));
    }
    let command = match input[1] {
        CMD_CONNECT => SocksCommand::Connect,
        CMD_UDP_ASSOCIATE => SocksCommand::UdpAssociate,
        other => return Err(SocksError::Command(other)),
    };
    Ok(Address::decode(&input[3..])?.map(|(destination, used)| {
        (
            SocksRequest {
                command,
                destination,
            },
            3 + used,
        )
    }))
}

/// The reply to a request, with an all-zero IPv4 bound address.
pub fn reply(code: Reply) -> [u8; 10] {
    [VERSION, code as u8, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// The reply to a request naming the bound address (`BND.ADDR`, `BND.PORT`): for
/// UDP ASSOCIATE, where the client sends its datagrams.
pub fn reply_bound(code: Reply, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![VERSION, code as u8, 0];
    Address::Ip(bound)
        .encode(&mut out)
        .expect("an IP address always encodes");
    out
}

/// A SOCKS UDP datagram that cannot be relayed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DatagramError {
    /// Shorter than its own header.
    #[error("UDP datagram of {0} bytes is shorter than its SOCKS header")]
    Truncated(usize),
    /// A fragment (FRAG != 0): fragmentation is not supported, so it is dropped.
    #[error("fragmented UDP datagram (FRAG {0}) dropped")]
    Fragmented(u8),
    /// The destination address is malformed.
    #[error("bad UDP datagram address: {0}")]
    Address(#[from] AddrError),
}

/// One SOCKS UDP datagram (`RSV u16 | FRAG u8 | ATYP | ADDR | PORT | DATA`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Where it goes (client to proxy) or came from (proxy to client).
    pub address: Address,
    /// Where DATA starts in the datagram, that is the header's length.
    pub header_len: usize,
    /// DATA.
    pub payload: &'a [u8],
}

/// Parses one whole SOCKS UDP datagram as received from the local client. RSV is
/// ignored, as common clients and servers do; FRAG must be 0.
pub fn parse_udp_datagram(datagram: &[u8]) -> Result<UdpDatagram<'_>, DatagramError> {
    let Some(&fragment) = datagram.get(2) else {
        return Err(DatagramError::Truncated(datagram.len()));
    };
    if fragment != 0 {
        return Err(DatagramError::Fragmented(fragment));
    }
    match Address::decode(&datagram[UDP_HEADER_PREFIX..])? {
        None => Err(DatagramError::Truncated(datagram.len())),
        Some((address, used)) => {
            let header_len = UDP_HEADER_PREFIX + used;
            Ok(UdpDatagram {
                address,
                header_len,
                payload: &datagram[header_len..],
            })
        }
    }
}

/// Appends the header of a SOCKS UDP datagram from `source` (`0 0 0 ATYP ADDR
/// PORT`); the payload follows it.
pub fn encode_udp_header(source: &Address, out: &mut Vec<u8>) -> Result<(), AddrError> {
    out.extend_from_slice(&[0; UDP_HEADER_PREFIX]);
    source.encode(out)
}

/// Who may use a UDP association (RFC 1928 section 7): datagrams are accepted only
/// from the client's address. The ASSOCIATE request may name it, in whole or in
/// part (an all-zero address or port means "not known yet"); the first datagram
/// that matches fixes the rest, and from then on only that address is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedSender {
    ip: Option<IpAddr>,
    port: Option<u16>,
    fixed: Option<SocketAddr>,
}

impl ExpectedSender {
    /// The sender named by the ASSOCIATE request's DST.ADDR and DST.PORT. A domain
    /// name cannot be matched against a source address, so only its port counts.
    pub fn from_request(requested: &Address) -> ExpectedSender {
        let (ip, port) = match requested {
            Address::Ip(addr) => (
                Some(addr.ip().to_canonical()).filter(|ip| !ip.is_unspecified()),
                Some(addr.port()).filter(|&port| port != 0),
            ),
            Address::Domain(_, port) => (None, Some(*port).filter(|&port| port != 0)),
        };
        ExpectedSender {
            ip,
            port,
            fixed: None,
        }
    }

    /// Whether a datagram from `from` is the client's; the first one that is
    /// fixes the client's address.
    pub fn admit(&mut self, from: SocketAddr) -> bool {
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        if let Some(fixed) = self.fixed {
            return fixed == from;
        }
        let matches = self.ip.is_none_or(|ip| ip == from.ip())
            && self.port.is_none_or(|port| port == from.port());
        if matches {
            self.fixed = Some(from);
        }
        matches
    }

    /// The client's address, once a datagram from it was admitted.
    pub fn address(&self) -> Option<SocketAddr> {
        self.fixed
    }
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
        for (cmd, command) in [
            (CMD_CONNECT, SocksCommand::Connect),
            (CMD_UDP_ASSOCIATE, SocksCommand::UdpAssociate),
        ] {
            let mut request = vec![5, cmd, 0];
            Address::Domain("example.com".into(), 443)
                .encode(&mut request)
                .unwrap();
            for len in 0..request.len() {
                assert_eq!(parse_request(&request[..len]), Ok(None), "prefix {len}");
            }
            let (parsed, used) = parse_request(&request).unwrap().unwrap();
            assert_eq!(parsed.command, command);
            assert_eq!(
                parsed.destination,
                Address::Domain("example.com".into(), 443)
            );
            assert_eq!(used, request.len());
        }
    }

    #[test]
    fn udp_associate_with_zero_address() {
        let request = [5, 3, 0, 1, 0, 0, 0, 0, 0, 0, 0xAA];
        let (parsed, used) = parse_request(&request).unwrap().unwrap();
        assert_eq!(parsed.command, SocksCommand::UdpAssociate);
        assert_eq!(
            parsed.destination,
            Address::Ip("0.0.0.0:0".parse().unwrap())
        );
        assert_eq!(used, 10);
    }

    #[test]
    fn bad_requests() {
        assert_eq!(
            parse_request(&[5, CMD_BIND, 0, 1]),
            Err(SocksError::Command(2))
        );
        assert_eq!(parse_request(&[5, 4, 0, 1]), Err(SocksError::Command(4)));
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

    #[test]
    fn bound_reply_layout() {
        assert_eq!(
            reply_bound(Reply::Succeeded, "127.0.0.1:5353".parse().unwrap()),
            [5, 0, 0, 1, 127, 0, 0, 1, 0x14, 0xE9]
        );
        let v6 = reply_bound(Reply::Succeeded, "[::1]:53".parse().unwrap());
        assert_eq!(v6.len(), 3 + 1 + 16 + 2);
        assert_eq!(&v6[..4], &[5, 0, 0, 4]);
        assert_eq!(&v6[20..], &[0, 53]);
    }

    fn udp_addresses() -> Vec<Address> {
        vec![
            Address::Ip("127.0.0.1:53".parse().unwrap()),
            Address::Ip("[::1]:5353".parse().unwrap()),
            Address::Domain("dns.example".into(), 53),
        ]
    }

    #[test]
    fn udp_datagram_at_every_split() {
        for address in udp_addresses() {
            let mut wire = Vec::new();
            encode_udp_header(&address, &mut wire).unwrap();
            let header_len = wire.len();
            wire.extend_from_slice(b"hello");
            for len in 0..header_len {
                assert_eq!(
                    parse_udp_datagram(&wire[..len]),
                    Err(DatagramError::Truncated(len)),
                    "{address}: prefix {len}"
                );
            }
            for len in header_len..=wire.len() {
                let datagram = parse_udp_datagram(&wire[..len]).unwrap();
                assert_eq!(datagram.address, address);
                assert_eq!(datagram.header_len, header_len);
                assert_eq!(datagram.payload, &wire[header_len..len]);
            }
        }
    }

    #[test]
    fn udp_datagram_exact_layout() {
        let mut wire = Vec::new();
        encode_udp_header(&Address::Ip("10.0.0.1:53".parse().unwrap()), &mut wire).unwrap();
        wire.push(b'q');
        assert_eq!(wire, [0, 0, 0, 1, 10, 0, 0, 1, 0, 53, b'q']);
        let mut wire = Vec::new();
        encode_udp_header(&Address::Domain("ab".into(), 80), &mut wire).unwrap();
        assert_eq!(wire, [0, 0, 0, 3, 2, b'a', b'b', 0, 80]);
    }

    #[test]
    fn udp_datagram_ignores_reserved_bytes() {
        let datagram = parse_udp_datagram(&[0xAB, 0xCD, 0, 1, 1, 2, 3, 4, 0, 7, b'x']).unwrap();
        assert_eq!(datagram.address, Address::Ip("1.2.3.4:7".parse().unwrap()));
        assert_eq!(datagram.payload, b"x");
    }

    #[test]
    fn malformed_udp_datagrams() {
        assert_eq!(
            parse_udp_datagram(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 7, b'x']),
            Err(DatagramError::Fragmented(1))
        );
        assert_eq!(
            parse_udp_datagram(&[0, 0, 0x80]),
            Err(DatagramError::Fragmented(0x80))
        );
        assert_eq!(
            parse_udp_datagram(&[0, 0, 0, 9, 1, 2, 3, 4, 0, 7]),
            Err(DatagramError::Address(AddrError::UnknownType(9)))
        );
        assert_eq!(
            parse_udp_datagram(&[0, 0, 0, 3, 0, 0, 53]),
            Err(DatagramError::Address(AddrError::EmptyDomain))
        );
        assert_eq!(
            parse_udp_datagram(&[0, 0, 0, 3, 2, b'a', b'\n', 0, 53]),
            Err(DatagramError::Address(AddrError::InvalidDomain))
        );
        assert_eq!(
            parse_udp_datagram(&[0, 0, 0, 3, 2, 0xFF, 0xFE, 0, 53]),
            Err(DatagramError::Address(AddrError::InvalidDomain))
        );
        assert_eq!(
            parse_udp_datagram(&[0, 0, 0, 4, 0, 0]),
            Err(DatagramError::Truncated(6))
        );
        let long = Address::Domain("a".repeat(256), 53);
        assert_eq!(
            encode_udp_header(&long, &mut Vec::new()),
            Err(AddrError::DomainTooLong(256))
        );
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn first_sender_fixes_the_client_when_the_request_names_none() {
        let mut sender = ExpectedSender::from_request(&Address::Ip(at("0.0.0.0:0")));
        assert_eq!(sender.address(), None);
        assert!(sender.admit(at("127.0.0.1:4000")));
        assert_eq!(sender.address(), Some(at("127.0.0.1:4000")));
        assert!(sender.admit(at("127.0.0.1:4000")));
        assert!(!sender.admit(at("127.0.0.1:4001")));
        assert!(!sender.admit(at("127.0.0.2:4000")));
    }

    #[test]
    fn requested_address_limits_the_client() {
        let mut sender = ExpectedSender::from_request(&Address::Ip(at("127.0.0.1:4000")));
        assert!(!sender.admit(at("127.0.0.1:4001")));
        assert!(!sender.admit(at("127.0.0.2:4000")));
        assert_eq!(sender.address(), None);
        assert!(sender.admit(at("127.0.0.1:4000")));

        // Only the port known: any IP, that port; then that exact address.
        let mut sender = ExpectedSender::from_request(&Address::Ip(at("0.0.0.0:4000")));
        assert!(!sender.admit(at("127.0.0.1:4001")));
        assert!(sender.admit(at("127.0.0.3:4000")));
        assert!(!sender.admit(at("127.0.0.4:4000")));

        // Only the IP known.
        let mut sender = ExpectedSender::from_request(&Address::Ip(at("127.0.0.1:0")));
        assert!(!sender.admit(at("127.0.0.2:4000")));
        assert!(sender.admit(at("127.0.0.1:4002")));
        assert!(!sender.admit(at("127.0.0.1:4003")));

        // A domain names no address, only its port.
        let mut sender = ExpectedSender::from_request(&Address::Domain("me".into(), 0));
        assert!(sender.admit(at("[::1]:9")));

        // IPv4-mapped IPv6 sources compare as IPv4.
        let mut sender = ExpectedSender::from_request(&Address::Ip(at("127.0.0.1:4000")));
        assert!(sender.admit(at("[::ffff:127.0.0.1]:4000")));
        assert!(sender.admit(at("127.0.0.1:4000")));
    }
}
