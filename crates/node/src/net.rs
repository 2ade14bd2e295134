//! Sockets.

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use std::cell::RefCell;
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};

use socket2::{Domain, Protocol, Socket, Type};
use tutti_audio::clock;
use tutti_proto::wire::MAX_DATAGRAM;
use tutti_proto::{LocalTime, Nanos};

use crate::NodeError;

/// Receive buffer size (any datagram Tutti sends fits).
pub const RECV_BUF: usize = MAX_DATAGRAM + 300;

/// Binds a UDP socket on `addr`; if `group` is a multicast address, joins it (on the interface
/// of `addr`, or any) and allows several listeners on one machine.
pub fn bind(addr: SocketAddr, group: Option<SocketAddr>) -> Result<UdpSocket, NodeError> {
    let err = |e: std::io::Error| NodeError::Socket { what: addr.to_string(), source: e };
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
    // Arrival times from the kernel (see `recv_until`); without them, user-space stamps.
    let _ = setsockopt(&udp, sockopt::ReceiveTimestampns, &true);
    if let Some(SocketAddr::V4(g)) = group {
        let iface = match addr {
            SocketAddr::V4(a) if !a.ip().is_unspecified() && !a.ip().is_multicast() => *a.ip(),
            _ => Ipv4Addr::UNSPECIFIED,
        };
        udp.join_multicast_v4(g.ip(), &iface)
            .map_err(|e| NodeError::Socket { what: format!("join {g}"), source: e })?;
    }
    Ok(udp)
}

/// Configures `socket` for sending to multicast `group` (TTL 1: stays on the LAN; loopback on,
/// so listeners on this machine hear it too).
pub fn multicast_sender(socket: &UdpSocket) -> Result<(), NodeError> {
    let options = |e| NodeError::Socket { what: "multicast TTL and loopback".into(), source: e };
    socket.set_multicast_ttl_v4(1).map_err(options)?;
    socket.set_multicast_loop_v4(true).map_err(options)?;
    Ok(())
}

/// Waits for one datagram until `deadline` (at least `min`, at most `max` from now). Returns
/// its length, sender and arrival instant on the local clock: the kernel's receive timestamp
/// when the socket gives one (the thread's wake-up delay, tens of µs on a busy machine, stays
/// out of clock probes and arrival statistics), else the instant the call returned.
///
/// The wait is a `ppoll` (high-resolution timer), not a socket read timeout: those count in
/// scheduler ticks (4 ms at HZ=250) and made live sources send milliseconds late.
pub fn recv_until(
    socket: &UdpSocket,
    buf: &mut [u8],
    now: LocalTime,
    deadline: Option<LocalTime>,
    min: Nanos,
    max: Nanos,
) -> Option<(usize, SocketAddr, LocalTime)> {
    recv_or_wake(socket, None, buf, now, deadline, min, max)
}

/// [`recv_until`] that also returns (with `None`) as soon as `wake` is signalled (see
/// [`wake_pair`]): a thread that waits for the network and for another thread at once, with
/// no polling.
pub fn recv_or_wake(
    socket: &UdpSocket,
    wake: Option<&UnixDatagram>,
    buf: &mut [u8],
    now: LocalTime,
    deadline: Option<LocalTime>,
    min: Nanos,
    max: Nanos,
) -> Option<(usize, SocketAddr, LocalTime)> {
    if let Some(r) = try_recv(socket, buf) {
        return Some(r);
    }
    let wait = deadline.map_or(max, |d| (d - now).clamp(min, max));
    let timeout = Timespec { tv_sec: wait.0 / 1_000_000_000, tv_nsec: wait.0 % 1_000_000_000 };
    let ready = match wake {
        Some(w) => {
            let mut fds = [PollFd::new(socket, PollFlags::IN), PollFd::new(w, PollFlags::IN)];
            let n = poll(&mut fds, Some(&timeout));
            if fds[1].revents().contains(PollFlags::IN) {
                // Drain every wake-up queued: one turn of the caller's loop serves them all.
                let mut b = [0u8; 16];
                while w.recv(&mut b).is_ok() {}
            }
            n
        }
        None => poll(&mut [PollFd::new(socket, PollFlags::IN)], Some(&timeout)),
    };
    match ready {
        Ok(n) if n > 0 => try_recv(socket, buf),
        _ => None,
    }
}

/// A wake-up line between two threads: the sender's [`wake`] makes the receiver's
/// [`recv_or_wake`] return. Both ends are non-blocking; wake-ups beyond the socket's queue
/// are dropped (one is enough).
pub fn wake_pair() -> std::io::Result<(UnixDatagram, UnixDatagram)> {
    let (a, b) = UnixDatagram::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((a, b))
}

/// Signals the other end of a [`wake_pair`].
pub fn wake(w: &UnixDatagram) {
    let _ = w.send(&[1]);
}

thread_local! {
    /// Room for a datagram's receive timestamp, made once per thread: reading a datagram
    /// allocates nothing (a player's network thread reads hundreds a second).
    static CMSG: RefCell<Vec<u8>> = RefCell::new(nix::cmsg_space!(TimeSpec));
}

/// Receives one datagram if one is queued, without waiting.
pub fn try_recv(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr, LocalTime)> {
    let (bytes, from, kernel) = CMSG.with_borrow_mut(|cmsg| {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .ok()?;
        let from = msg.address.as_ref().and_then(to_socket_addr)?;
        let kernel = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|m| match m {
                ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                _ => None,
            })
        });
        Some((msg.bytes, from, kernel))
    })?;
    let (now, real) = clock_pair();
    // The kernel stamps with the real-time clock: its age, read on that clock, moves the
    // monotonic `now` back to the arrival. Ages outside 0..1 s (a clock step), or a reading
    // pair torn apart by preemption, leave the (later, never too early) reader's time.
    let at = kernel
        .zip(real)
        .and_then(|(ts, real)| {
            let age =
                (real.tv_sec() - ts.tv_sec()) * 1_000_000_000 + (real.tv_nsec() - ts.tv_nsec());
            (0..1_000_000_000).contains(&age).then(|| now - Nanos(age))
        })
        .unwrap_or(now);
    Some((bytes, from, at))
}

/// The monotonic and the real-time clock read at one instant: the real-time reading is
/// bracketed by two monotonic ones, and a bracket wider than [`PAIR_SLACK`] (the thread was
/// preempted between the reads) is retried, then given up (`None`). A torn pair would date
/// a packet's arrival before it really came, by as long as the preemption: a favourable
/// outlier the clock estimator's envelopes would latch onto.
fn clock_pair() -> (LocalTime, Option<TimeSpec>) {
    for _ in 0..3 {
        let a = clock::now();
        let real = clock_gettime(ClockId::CLOCK_REALTIME).ok();
        let b = clock::now();
        if b - a <= PAIR_SLACK {
            return (LocalTime(a.0 + (b - a).0 as u64 / 2), real);
        }
    }
    (clock::now(), None)
}

/// The widest bracket of a [`clock_pair`] reading: a few clock reads, no preemption.
const PAIR_SLACK: Nanos = Nanos::from_micros(5);

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn arrival_is_stamped_by_the_kernel_not_by_the_reader() {
        let rx = bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel switches receive timestamps on a moment after the first socket asks.
        std::thread::sleep(Duration::from_millis(30));
        let sent = clock::now();
        tx.send_to(b"tick", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let mut buf = [0u8; 64];
        let (n, from, at) = recv_until(
            &rx,
            &mut buf,
            clock::now(),
            None,
            Nanos::from_millis(100),
            Nanos::from_millis(100),
        )
        .unwrap();
        let read = clock::now();
        assert_eq!((n, from), (4, tx.local_addr().unwrap()));
        // Read 30 ms after it arrived: the stamp is the arrival, not the read.
        assert!(at >= sent, "stamped before it was sent");
        assert!(read - at >= Nanos::from_millis(25), "stamped {:?} before the read", read - at);
    }
}
