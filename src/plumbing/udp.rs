//! The UDP socket both ends relay datagrams through (the server's UDP-over-TCP
//! associations, the client's SOCKS5 UDP ASSOCIATE).

use std::io;
use std::net::{IpAddr, SocketAddr};

use glommio::net::UdpSocket;

/// Receive buffer the client asks for each socket, so a burst is not dropped
/// while the session is busy (the kernel caps it at net.core.rmem_max).
pub const UDP_RECEIVE_BUFFER: usize = 1 << 20;

/// An unconnected UDP socket on `ip`, ephemeral port, asking for `receive_buffer`
/// bytes of `SO_RCVBUF`. Built without `SO_REUSEPORT` (which glommio's
/// `UdpSocket::bind` sets), so no other socket can share its port.
pub fn bind_udp(ip: IpAddr, receive_buffer: usize) -> io::Result<UdpSocket> {
    use glommio_socket2::{Domain, Protocol, Socket, Type};
    let domain = if ip.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(receive_buffer).ok();
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    Ok(UdpSocket::from(socket))
}
