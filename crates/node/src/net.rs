//! Sockets.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tutti_proto::wire::MAX_DATAGRAM;
use tutti_proto::{LocalTime, Nanos};

use crate::NodeError;

/// Receive buffer size (any datagram Tutti sends fits).
pub const RECV_BUF: usize = MAX_DATAGRAM + 300;

/// Binds a UDP socket on `addr`; if `group` is a multicast address, joins it (on the interface
/// of `addr`, or any) and allows several listeners on one machine.
pub fn bind(addr: SocketAddr, group: Option<SocketAddr>) -> Result<UdpSocket, NodeError> {
    let err = |e: std::io::Error| NodeError::Net(format!("{addr}: {e}"));
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if group.is_some() {
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
    }
    // Room for bursts: a second of audio.
    let _ = socket.set_recv_buffer_size(1 << 20);
    let _ = socket.set_send_buffer_size(1 << 20);
    socket.bind(&addr.into()).map_err(err)?;
    let udp: UdpSocket = socket.into();
    if let Some(SocketAddr::V4(g)) = group {
        let iface = match addr {
            SocketAddr::V4(a) if !a.ip().is_unspecified() && !a.ip().is_multicast() => *a.ip(),
            _ => Ipv4Addr::UNSPECIFIED,
        };
        udp.join_multicast_v4(g.ip(), &iface)
            .map_err(|e| NodeError::Net(format!("join {g}: {e}")))?;
    }
    Ok(udp)
}

/// Configures `socket` for sending to multicast `group` (TTL 1: stays on the LAN; loopback on,
/// so listeners on this machine hear it too).
pub fn multicast_sender(socket: &UdpSocket) -> Result<(), NodeError> {
    socket.set_multicast_ttl_v4(1).map_err(|e| NodeError::Net(e.to_string()))?;
    socket.set_multicast_loop_v4(true).map_err(|e| NodeError::Net(e.to_string()))?;
    Ok(())
}

/// Waits for one datagram until `deadline` (at least `min`, at most `max` from now).
pub fn recv_until(
    socket: &UdpSocket,
    buf: &mut [u8],
    now: LocalTime,
    deadline: Option<LocalTime>,
    min: Nanos,
    max: Nanos,
) -> Option<(usize, SocketAddr)> {
    let wait = deadline.map_or(max, |d| (d - now).clamp(min, max));
    let _ = socket.set_read_timeout(Some(Duration::from_nanos(wait.0.max(1_000) as u64)));
    socket.recv_from(buf).ok()
}
