//! UDP over TCP, version 2 (docs/protocol.md §7): the request that opens an association and the
//! datagrams that follow, in both framings.
//!
//! The request names the destination in SOCKS form (atyp 1/3/4). Datagrams are
//! `length u16 | payload` in connect mode, and `address | length u16 | payload` in
//! non-connect mode, where the address uses its own type byte: 0 = IPv4, 1 = IPv6,
//! 2 = domain.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::addr::Address;
use super::error::{AddrError, UotError};

/// The target name that selects UDP over TCP v2.
pub const UOT_V2_NAME: &str = "sp.v2.udp-over-tcp.arpa";
/// The legacy v1 name, which is refused.
pub const UOT_V1_NAME: &str = "sp.udp-over-tcp.arpa";

const UOT_IPV4: u8 = 0;
const UOT_IPV6: u8 = 1;
const UOT_DOMAIN: u8 = 2;

/// The request at the start of a UoT stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Connect mode: every datagram goes to (and comes from) `destination`.
    pub is_connect: bool,
    /// The destination (connect mode) or the first destination (non-connect).
    pub destination: Address,
}

impl Request {
    /// Decodes a request; `Ok(None)` needs more bytes.
    pub fn decode(input: &[u8]) -> Result<Option<(Request, usize)>, UotError> {
        let Some(&flag) = input.first() else {
            return Ok(None);
        };
        let is_connect = match flag {
            0 => false,
            1 => true,
            other => return Err(UotError::ConnectFlag(other)),
        };
        Ok(Address::decode(&input[1..])?.map(|(destination, used)| {
            (
                Request {
                    is_connect,
                    destination,
                },
                1 + used,
            )
        }))
    }

    /// Appends the request.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), UotError> {
        out.push(self.is_connect as u8);
        self.destination.encode(out)?;
        Ok(())
    }
}

/// One decoded datagram, borrowing its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Where it goes (client to server) or came from (server to client); `None`
    /// in connect mode.
    pub address: Option<Address>,
    /// The payload.
    pub payload: &'a [u8],
}

/// Decodes one datagram from the front of `input`; `Ok(None)` needs more bytes.
/// Returns the datagram and the bytes it used.
pub fn decode_datagram(
    input: &[u8],
    is_connect: bool,
) -> Result<Option<(Datagram<'_>, usize)>, UotError> {
    let (address, start) = if is_connect {
        (None, 0)
    } else {
        match decode_uot_address(input)? {
            Some((address, used)) => (Some(address), used),
            None => return Ok(None),
        }
    };
    let Some(len) = input.get(start..start + 2) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let Some(payload) = input.get(start + 2..start + 2 + len) else {
        return Ok(None);
    };
    Ok(Some((Datagram { address, payload }, start + 2 + len)))
}

/// Appends one datagram; `address` must be given exactly in non-connect mode.
pub fn encode_datagram(
    address: Option<&Address>,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), UotError> {
    let len = u16::try_from(payload.len()).map_err(|_| UotError::DatagramTooLong(payload.len()))?;
    if let Some(address) = address {
        encode_uot_address(address, out)?;
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn decode_uot_address(input: &[u8]) -> Result<Option<(Address, usize)>, UotError> {
    let Some(&kind) = input.first() else {
        return Ok(None);
    };
    let (host_len, host_start) = match kind {
        UOT_IPV4 => (4, 1),
        UOT_IPV6 => (16, 1),
        UOT_DOMAIN => match input.get(1) {
            None => return Ok(None),
            Some(0) => return Err(AddrError::EmptyDomain.into()),
            Some(&len) => (len as usize, 2),
        },
        other => return Err(UotError::AddressType(other)),
    };
    let total = host_start + host_len + 2;
    let Some(bytes) = input.get(..total) else {
        return Ok(None);
    };
    let host = &bytes[host_start..host_start + host_len];
    let port = u16::from_be_bytes([bytes[total - 2], bytes[total - 1]]);
    let address = match kind {
        UOT_IPV4 => Address::Ip(SocketAddr::new(
            Ipv4Addr::from(<[u8; 4]>::try_from(host).expect("length checked")).into(),
            port,
        )),
        UOT_IPV6 => Address::Ip(SocketAddr::new(
            Ipv6Addr::from(<[u8; 16]>::try_from(host).expect("length checked")).into(),
            port,
        )),
        _ => {
            let name = std::str::from_utf8(host).map_err(|_| AddrError::InvalidDomain)?;
            if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(AddrError::InvalidDomain.into());
            }
            Address::Domain(name.to_owned(), port)
        }
    };
    Ok(Some((address, total)))
}

fn encode_uot_address(address: &Address, out: &mut Vec<u8>) -> Result<(), UotError> {
    match address {
        Address::Ip(SocketAddr::V4(addr)) => {
            out.push(UOT_IPV4);
            out.extend_from_slice(&addr.ip().octets());
        }
        Address::Ip(SocketAddr::V6(addr)) => {
            out.push(UOT_IPV6);
            out.extend_from_slice(&addr.ip().octets());
        }
        Address::Domain(name, _) => {
            let len = u8::try_from(name.len()).map_err(|_| AddrError::DomainTooLong(name.len()))?;
            if len == 0 {
                return Err(AddrError::EmptyDomain.into());
            }
            out.push(UOT_DOMAIN);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&address.port().to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses() -> Vec<Address> {
        vec![
            Address::Ip("127.0.0.1:53".parse().unwrap()),
            Address::Ip("[::1]:5353".parse().unwrap()),
            Address::Domain("dns.example".into(), 53),
        ]
    }

    #[test]
    fn request_round_trip_and_splits() {
        for destination in addresses() {
            for is_connect in [false, true] {
                let request = Request {
                    is_connect,
                    destination: destination.clone(),
                };
                let mut wire = Vec::new();
                request.encode(&mut wire).unwrap();
                for len in 0..wire.len() {
                    assert_eq!(Request::decode(&wire[..len]), Ok(None));
                }
                wire.extend_from_slice(b"first datagram");
                let (decoded, used) = Request::decode(&wire).unwrap().unwrap();
                assert_eq!(decoded, request);
                assert_eq!(&wire[used..], b"first datagram");
            }
        }
    }

    #[test]
    fn datagrams_both_framings_every_split() {
        for address in addresses() {
            for connect in [true, false] {
                let mut wire = Vec::new();
                let addr = (!connect).then_some(&address);
                encode_datagram(addr, b"hello", &mut wire).unwrap();
                encode_datagram(addr, b"", &mut wire).unwrap();
                let first_len = decode_datagram(&wire, connect).unwrap().unwrap().1;
                for len in 0..first_len {
                    assert_eq!(decode_datagram(&wire[..len], connect), Ok(None));
                }
                let (first, used) = decode_datagram(&wire, connect).unwrap().unwrap();
                assert_eq!(first.payload, b"hello");
                assert_eq!(first.address.as_ref(), addr);
                let (second, rest) = decode_datagram(&wire[used..], connect).unwrap().unwrap();
                assert_eq!(second.payload, b"");
                assert_eq!(used + rest, wire.len());
            }
        }
    }

    #[test]
    fn exact_non_connect_layout() {
        let mut wire = Vec::new();
        let address = Address::Ip("10.0.0.1:53".parse().unwrap());
        encode_datagram(Some(&address), b"q", &mut wire).unwrap();
        assert_eq!(wire, [0, 10, 0, 0, 1, 0, 53, 0, 1, b'q']);
    }

    #[test]
    fn malformed_input() {
        assert_eq!(Request::decode(&[2, 1]), Err(UotError::ConnectFlag(2)));
        assert_eq!(
            Request::decode(&[0, 9]),
            Err(UotError::Address(AddrError::UnknownType(9)))
        );
        assert_eq!(
            decode_datagram(&[7, 0, 0], false),
            Err(UotError::AddressType(7))
        );
        assert_eq!(
            decode_datagram(&[2, 0, 0, 53], false),
            Err(UotError::Address(AddrError::EmptyDomain))
        );
        let big = vec![0u8; 70_000];
        assert_eq!(
            encode_datagram(None, &big, &mut Vec::new()),
            Err(UotError::DatagramTooLong(70_000))
        );
    }
}
