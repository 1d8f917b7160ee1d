//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2)
//! that `--fallback-proxy-protocol` writes to the fallback before the client's
//! bytes, so the fallback service logs the real client address instead of ours.
//!
//! Only what a TCP relay sends is encoded: the `PROXY` command over TCP/IPv4 or
//! TCP/IPv6, with no TLVs. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
//! dual-stack listener reports for IPv4 clients) is encoded as IPv4 when the other
//! end is IPv4 too; when one end is really IPv6, both are encoded as IPv6.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, as the spec bounds it.
pub const V1_MAX: usize = 107;
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
/// Address family AF_INET, transport STREAM.
const V2_TCP4: u8 = 0x11;
/// Address family AF_INET6, transport STREAM.
const V2_TCP6: u8 = 0x21;

/// Which header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The text header: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header: signature, 0x21, family, length, addresses, ports.
    V2,
}

impl FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            other => Err(format!("unknown PROXY protocol version {other:?} (v1, v2)")),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Both ends of a connection in one address family.
enum Ends {
    V4([Ipv4Addr; 2]),
    V6([Ipv6Addr; 2]),
}

/// IPv4 if both ends are IPv4 (or IPv4-mapped), else both IPv6.
fn same_family(source: IpAddr, destination: IpAddr) -> Ends {
    match (source.to_canonical(), destination.to_canonical()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => Ends::V4([from, to]),
        (from, to) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            Ends::V6([v6(from), v6(to)])
        }
    }
}

/// Appends the header for a connection from `source` (the client) to
/// `destination` (the address it connected to) to `out`.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let ends = same_family(source.ip(), destination.ip());
    let ports = [source.port(), destination.port()];
    match version {
        Version::V1 => {
            let mut line = String::with_capacity(V1_MAX);
            let _ = match ends {
                Ends::V4([from, to]) => write!(line, "PROXY TCP4 {from} {to}"),
                Ends::V6([from, to]) => write!(line, "PROXY TCP6 {from} {to}"),
            };
            let _ = write!(line, " {} {}\r\n", ports[0], ports[1]);
            out.extend_from_slice(line.as_bytes());
        }
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(V2_PROXY);
            match ends {
                Ends::V4([from, to]) => {
                    out.push(V2_TCP4);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&from.octets());
                    out.extend_from_slice(&to.octets());
                }
                Ends::V6([from, to]) => {
                    out.push(V2_TCP6);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&from.octets());
                    out.extend_from_slice(&to.octets());
                }
            }
            out.extend_from_slice(&ports[0].to_be_bytes());
            out.extend_from_slice(&ports[1].to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: Version, source: &str, destination: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            version,
            source.parse().unwrap(),
            destination.parse().unwrap(),
            &mut out,
        );
        out
    }

    #[test]
    fn v1_is_the_spec_example() {
        assert_eq!(
            header(Version::V1, "192.168.0.1:56324", "192.168.0.11:443"),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            header(Version::V1, "[2001:db8::1]:56324", "[2001:db8::11]:443"),
            b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n"
        );
    }

    #[test]
    fn v1_never_exceeds_the_spec_maximum_of_107_bytes() {
        let longest = header(
            Version::V1,
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        );
        assert_eq!(longest.len(), 104);
        assert!(longest.len() <= V1_MAX);
    }

    #[test]
    fn v2_ipv4_bytes() {
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        expected.extend_from_slice(&[192, 168, 0, 1, 192, 168, 0, 11]);
        expected.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(
            header(Version::V2, "192.168.0.1:56324", "192.168.0.11:443"),
            expected
        );
        assert_eq!(
            &V2_SIGNATURE,
            &[0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
        );
    }

    #[test]
    fn v2_ipv6_bytes() {
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        let mut from = [0u8; 16];
        from[..2].copy_from_slice(&[0x20, 0x01]);
        from[2..4].copy_from_slice(&[0x0d, 0xb8]);
        from[15] = 1;
        let mut to = from;
        to[15] = 0x11;
        expected.extend_from_slice(&from);
        expected.extend_from_slice(&to);
        expected.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(
            header(Version::V2, "[2001:db8::1]:56324", "[2001:db8::11]:443"),
            expected
        );
    }

    #[test]
    fn ipv4_mapped_ends_are_encoded_as_ipv4() {
        assert_eq!(
            header(
                Version::V1,
                "[::ffff:192.168.0.1]:56324",
                "[::ffff:192.168.0.11]:443"
            ),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            header(
                Version::V1,
                "[::ffff:192.168.0.1]:56324",
                "192.168.0.11:443"
            ),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            header(
                Version::V2,
                "[::ffff:192.168.0.1]:56324",
                "[::ffff:192.168.0.11]:443"
            ),
            header(Version::V2, "192.168.0.1:56324", "192.168.0.11:443")
        );
    }

    #[test]
    fn a_real_ipv6_end_makes_both_ipv6() {
        assert_eq!(
            header(Version::V1, "192.168.0.1:56324", "[2001:db8::11]:443"),
            b"PROXY TCP6 ::ffff:192.168.0.1 2001:db8::11 56324 443\r\n"
        );
        let v2 = header(Version::V2, "192.168.0.1:56324", "[2001:db8::11]:443");
        assert_eq!(v2[13], 0x21, "TCP6");
        assert_eq!(v2.len(), 16 + 36);
        assert_eq!(
            &v2[16..32],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 0, 1]
        );
    }

    #[test]
    fn versions_parse_from_their_flag_values() {
        assert_eq!("v1".parse(), Ok(Version::V1));
        assert_eq!("v2".parse(), Ok(Version::V2));
        assert!("v3".parse::<Version>().unwrap_err().contains("v1, v2"));
    }
}
