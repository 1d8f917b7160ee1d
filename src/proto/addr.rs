//! SOCKS5-form target addresses: `atyp u8 | address | port u16` (docs/protocol.md §5).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::AddrError;

const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// Where a stream wants to go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A literal IP address and port.
    Ip(SocketAddr),
    /// A name the server resolves, and a port.
    Domain(String, u16),
}

impl Address {
    /// The port part.
    pub fn port(&self) -> u16 {
        match self {
            Address::Ip(addr) => addr.port(),
            Address::Domain(_, port) => *port,
        }
    }

    /// Decodes an address from the front of `input`, returning it and the bytes used;
    /// `Ok(None)` means more bytes are needed.
    pub fn decode(input: &[u8]) -> Result<Option<(Address, usize)>, AddrError> {
        let Some(&atyp) = input.first() else {
            return Ok(None);
        };
        let (host_len, host_start) = match atyp {
            ATYP_IPV4 => (4, 1),
            ATYP_IPV6 => (16, 1),
            ATYP_DOMAIN => match input.get(1) {
                None => return Ok(None),
                Some(0) => return Err(AddrError::EmptyDomain),
                Some(&len) => (len as usize, 2),
            },
            other => return Err(AddrError::UnknownType(other)),
        };
        let total = host_start + host_len + 2;
        if input.len() < total {
            return Ok(None);
        }
        let host = &input[host_start..host_start + host_len];
        let port = u16::from_be_bytes([input[total - 2], input[total - 1]]);
        let address = match atyp {
            ATYP_IPV4 => {
                let octets: [u8; 4] = host.try_into().expect("length checked");
                Address::Ip(SocketAddr::new(Ipv4Addr::from(octets).into(), port))
            }
            ATYP_IPV6 => {
                let octets: [u8; 16] = host.try_into().expect("length checked");
                Address::Ip(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
            }
            _ => {
                let name = std::str::from_utf8(host).map_err(|_| AddrError::InvalidDomain)?;
                if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(AddrError::InvalidDomain);
                }
                Address::Domain(name.to_owned(), port)
            }
        };
        Ok(Some((address, total)))
    }

    /// Appends the SOCKS form of this address.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), AddrError> {
        match self {
            Address::Ip(SocketAddr::V4(addr)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&addr.ip().octets());
            }
            Address::Ip(SocketAddr::V6(addr)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&addr.ip().octets());
            }
            Address::Domain(name, _) => {
                let len =
                    u8::try_from(name.len()).map_err(|_| AddrError::DomainTooLong(name.len()))?;
                if len == 0 {
                    return Err(AddrError::EmptyDomain);
                }
                out.push(ATYP_DOMAIN);
                out.push(len);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
        Ok(())
    }

    /// Parses `host:port`, `[v6]:port` or `ip:port` text.
    pub fn parse(text: &str) -> Option<Address> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(Address::Ip(addr));
        }
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse().ok()?;
        if host.is_empty() || host.contains(':') {
            return None;
        }
        Some(match host.parse::<IpAddr>() {
            Ok(ip) => Address::Ip(SocketAddr::new(ip, port)),
            Err(_) => Address::Domain(host.to_owned(), port),
        })
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Ip(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(addr) => addr.fmt(f),
            Address::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Address> {
        vec![
            Address::Ip("127.0.0.1:80".parse().unwrap()),
            Address::Ip("[::1]:8443".parse().unwrap()),
            Address::Domain("example.com".into(), 443),
            Address::Domain("sp.v2.udp-over-tcp.arpa".into(), 0),
        ]
    }

    #[test]
    fn round_trip_with_trailing_payload() {
        for address in samples() {
            let mut wire = Vec::new();
            address.encode(&mut wire).unwrap();
            let encoded_len = wire.len();
            wire.extend_from_slice(b"payload");
            let (decoded, used) = Address::decode(&wire).unwrap().unwrap();
            assert_eq!(decoded, address);
            assert_eq!(used, encoded_len);
            assert_eq!(Address::parse(&address.to_string()), Some(address));
        }
    }

    #[test]
    fn every_prefix_needs_more() {
        for address in samples() {
            let mut wire = Vec::new();
            address.encode(&mut wire).unwrap();
            for len in 0..wire.len() {
                assert_eq!(
                    Address::decode(&wire[..len]),
                    Ok(None),
                    "{address} prefix {len}"
                );
            }
        }
    }

    #[test]
    fn exact_wire_forms() {
        let mut wire = Vec::new();
        Address::Domain("ab".into(), 0x1F90)
            .encode(&mut wire)
            .unwrap();
        assert_eq!(wire, [3, 2, b'a', b'b', 0x1F, 0x90]);
        wire.clear();
        Address::Ip("10.1.2.3:443".parse().unwrap())
            .encode(&mut wire)
            .unwrap();
        assert_eq!(wire, [1, 10, 1, 2, 3, 1, 187]);
    }

    #[test]
    fn malformed_addresses_have_distinct_errors() {
        assert_eq!(Address::decode(&[2, 0, 0]), Err(AddrError::UnknownType(2)));
        assert_eq!(Address::decode(&[0xFF]), Err(AddrError::UnknownType(0xFF)));
        assert_eq!(Address::decode(&[3, 0, 0, 80]), Err(AddrError::EmptyDomain));
        assert_eq!(
            Address::decode(&[3, 2, 0xFF, 0xFE, 0, 80]),
            Err(AddrError::InvalidDomain)
        );
        assert_eq!(
            Address::decode(&[3, 3, b'a', b'\n', b'b', 0, 80]),
            Err(AddrError::InvalidDomain)
        );
        let long = Address::Domain("x".repeat(256), 1);
        assert_eq!(
            long.encode(&mut Vec::new()),
            Err(AddrError::DomainTooLong(256))
        );
    }

    #[test]
    fn parse_rejects_junk() {
        assert_eq!(Address::parse("no-port"), None);
        assert_eq!(Address::parse(":80"), None);
        assert_eq!(Address::parse("host:99999"), None);
        assert_eq!(
            Address::parse("localhost:8080"),
            Some(Address::Domain("localhost".into(), 8080))
        );
    }
}
