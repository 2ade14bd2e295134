//! Standard RTP in: an L16 stream from PulseAudio's `module-rtp-send`, PipeWire's RTP sink,
//! ffmpeg or VLC, captured as if it were a device (see [`receive_rtp`]).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tutti_audio::capture::{CaptureFeeder, CaptureSource};
use tutti_audio::clock;
use tutti_proto::Nanos;
use tutti_proto::rtp::{L16Receiver, RtpDrop, RtpInStats};
use tutti_proto::wire::MAX_DATAGRAM;

use crate::NodeError;
use crate::net::{bind, recv_until};

/// Something an RTP input says once (each kind once, with its first example).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtpInNotice {
    /// The first packet played, from this sender.
    Playing(SocketAddr),
    /// A datagram from a sender the admission rule refuses (dropped, counted).
    Refused(IpAddr),
    /// A datagram that played nothing, from this sender.
    Dropped(RtpDrop, SocketAddr),
}

impl core::fmt::Display for RtpInNotice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RtpInNotice::Playing(from) => write!(f, "RTP: playing {from}"),
            RtpInNotice::Refused(ip) => {
                write!(f, "RTP: dropping datagrams from {ip}: not an admitted sender (--rtp-allow)")
            }
            RtpInNotice::Dropped(RtpDrop::Malformed, from) => {
                write!(
                    f,
                    "RTP: dropping malformed datagrams from {from} (not RTP of whole L16 frames)"
                )
            }
            RtpInNotice::Dropped(RtpDrop::PayloadType(pt), from) => write!(
                f,
                "RTP: dropping payload type {pt} from {from}: only L16 is played (a dynamic type \
                 96-127 at this stream's --rate and --channels, or 10/11 for 44.1 kHz stereo/mono \
                 with --rate 44100)"
            ),
            RtpInNotice::Dropped(RtpDrop::Foreign, from) => write!(
                f,
                "RTP: ignoring a second sender {from} while the first still sends (it takes over \
                 once the first is silent for a second)"
            ),
            RtpInNotice::Dropped(RtpDrop::Late, from) => {
                write!(f, "RTP: dropping late or repeated packets from {from}")
            }
        }
    }
}

/// A running RTP input: its counters, and the thread that reads it.
#[derive(Debug)]
pub struct RtpIn {
    /// Its address.
    pub local_addr: SocketAddr,
    stats: Arc<Mutex<(RtpInStats, u64)>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RtpIn {
    /// What it has received, and the datagrams refused by the admission rule.
    pub fn stats(&self) -> (RtpInStats, u64) {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

impl Drop for RtpIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens for L16 RTP on `addr` (a multicast group is joined on every interface; a unicast
/// address is bound) and captures what one sender sends, `channels` channels at `rate` Hz, as
/// a device's capture: each packet's first frame is dated a packet's duration after the
/// packet's arrival (the kernel's stamp; none of its frames is there sooner, and a sender
/// posts unevenly: PulseAudio sends 6.6 ms packets, now and then two at once), and the
/// capture's clock fit smooths those dates and follows the sender's clock. Every frame then
/// plays a group latency and a packet after its packet arrived. Lost packets are played as silence, late ones dropped. Datagrams from
/// senders `admit` refuses are dropped unread (plain RTP has no authentication: the sender's
/// address is all there is to go by). `notice` hears each kind of event once.
pub fn receive_rtp(
    addr: SocketAddr,
    rate: u32,
    channels: usize,
    admit: impl Fn(IpAddr) -> bool + Send + 'static,
    notice: impl FnMut(RtpInNotice) + Send + 'static,
) -> Result<(CaptureSource, RtpIn), NodeError> {
    let socket = if addr.ip().is_multicast() {
        let any = match addr {
            SocketAddr::V4(_) => {
                SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port())
            }
            SocketAddr::V6(_) => {
                SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), addr.port())
            }
        };
        bind(any, Some(addr))?
    } else {
        bind(addr, None)?
    };
    let local_addr = socket
        .local_addr()
        .map_err(|e| NodeError::Socket { what: "its local address".into(), source: e })?;
    let (feeder, source) = CaptureSource::pushed(&format!("rtp {addr}"), rate, channels);
    let stats = Arc::new(Mutex::new((RtpInStats::default(), 0)));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stats, stop) = (stats.clone(), stop.clone());
        let ends = Ends { socket, admit: Box::new(admit), stats, stop };
        std::thread::Builder::new()
            .name("tutti-rtp-in".into())
            .spawn(move || read_loop(&ends, L16Receiver::new(rate, channels), feeder, notice))
            .map_err(NodeError::Thread)?
    };
    Ok((source, RtpIn { local_addr, stats, stop, thread: Some(thread) }))
}

/// The reader thread's fixed parts.
struct Ends {
    socket: UdpSocket,
    admit: Box<dyn Fn(IpAddr) -> bool + Send>,
    stats: Arc<Mutex<(RtpInStats, u64)>>,
    stop: Arc<AtomicBool>,
}

fn read_loop(
    ends: &Ends,
    mut receiver: L16Receiver,
    mut feeder: CaptureFeeder,
    mut notice: impl FnMut(RtpInNotice),
) {
    let mut buf = vec![0u8; MAX_DATAGRAM.max(65_536)];
    let mut pcm: Vec<f32> = Vec::new();
    let mut said = Said::default();
    let mut refused = 0u64;
    let (rate, channels) = (receiver.rate(), receiver.channels());
    while !ends.stop.load(Ordering::Relaxed) {
        let now = clock::now();
        let Some((n, from, at)) = recv_until(
            &ends.socket,
            &mut buf,
            now,
            None,
            Nanos::from_millis(1),
            Nanos::from_millis(100),
        ) else {
            continue;
        };
        if !(ends.admit)(from.ip()) {
            refused += 1;
            if !said.refused {
                said.refused = true;
                notice(RtpInNotice::Refused(from.ip()));
            }
        } else {
            match receiver.receive(at.0, &buf[..n]) {
                Ok(audio) => {
                    if !said.playing {
                        said.playing = true;
                        notice(RtpInNotice::Playing(from));
                    }
                    pcm.clear();
                    pcm.resize(audio.gap as usize * channels, 0.0);
                    pcm.extend(
                        audio
                            .samples
                            .chunks_exact(2)
                            .map(|b| f32::from(i16::from_be_bytes([b[0], b[1]])) / 32_768.0),
                    );
                    // Its first frame counts as captured a packet after the packet arrived: no
                    // frame of it is there sooner, and the next may come a packet late (a
                    // sender posts unevenly). A lost stretch is just before it.
                    let gap = Nanos::from_frames(u64::from(audio.gap), rate);
                    feeder.push(&pcm, at + Nanos::from_frames(u64::from(audio.frames), rate) - gap);
                }
                Err(why) => {
                    if said.drop(why) {
                        notice(RtpInNotice::Dropped(why, from));
                    }
                }
            }
        }
        if let Ok(mut s) = ends.stats.lock() {
            *s = (receiver.stats(), refused);
        }
    }
}

/// Which notices were given.
#[derive(Default)]
struct Said {
    playing: bool,
    refused: bool,
    drops: Vec<core::mem::Discriminant<RtpDrop>>,
}

impl Said {
    /// Whether `why` is said for the first time.
    fn drop(&mut self, why: RtpDrop) -> bool {
        let kind = core::mem::discriminant(&why);
        if self.drops.contains(&kind) {
            return false;
        }
        self.drops.push(kind);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutti_audio::source::Source;
    use tutti_proto::rtp::L16Sender;

    #[test]
    fn a_sender_on_loopback_is_captured_with_its_losses_played_as_silence() {
        let noticed = Arc::new(Mutex::new(Vec::new()));
        let heard = noticed.clone();
        let (mut capture, rtp) = receive_rtp(
            "127.0.0.1:0".parse().unwrap(),
            48_000,
            2,
            |ip| ip.is_loopback(),
            move |n| heard.lock().unwrap().push(n),
        )
        .expect("an RTP input");
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sender = L16Sender::new(0x1234, 100, 5_000, 2);
        let mut out = Vec::new();
        for k in 0..20i16 {
            // 5 ms packets whose samples count up; packet 7 is lost.
            let pcm: Vec<u8> =
                (0..480).flat_map(|i| (k * 1_000 + i as i16 / 2).to_le_bytes()).collect();
            sender.packet(&pcm, &mut out);
            if k != 7 {
                tx.send_to(&out, rtp.local_addr).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        tx.send_to(b"not rtp at all", rtp.local_addr).unwrap();
        let mut got = Vec::new();
        capture.read(&mut got, 20 * 240).unwrap();
        // Packet 7's frames are silence, every other packet's where it was sent.
        let left = |frame: usize| got[frame * 2];
        assert_eq!(left(6 * 240), 6_000.0 / 32_768.0);
        assert_eq!(left(7 * 240), 0.0);
        assert_eq!(left(7 * 240 + 239), 0.0);
        assert_eq!(left(8 * 240), 8_000.0 / 32_768.0);
        assert_eq!(left(19 * 240 + 239), (19_000.0 + 239.0) / 32_768.0);
        assert!(capture.next_capture_time().is_some());
        let deadline = clock::now() + Nanos::from_secs(2);
        while rtp.stats().0.malformed == 0 && clock::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (stats, refused) = rtp.stats();
        assert_eq!((stats.packets, stats.lost_frames, stats.malformed, refused), (19, 240, 1, 0));
        let noticed = noticed.lock().unwrap().clone();
        assert!(matches!(noticed[0], RtpInNotice::Playing(_)), "{noticed:?}");
        assert!(noticed.iter().any(|n| matches!(n, RtpInNotice::Dropped(RtpDrop::Malformed, _))));
    }

    #[test]
    fn a_sender_the_rule_refuses_is_dropped_unread() {
        let (_capture, rtp) =
            receive_rtp("127.0.0.1:0".parse().unwrap(), 48_000, 2, |_| false, |_| {})
                .expect("an RTP input");
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut sender = L16Sender::new(1, 1, 1, 2);
        let mut out = Vec::new();
        sender.packet(&[0; 960], &mut out);
        tx.send_to(&out, rtp.local_addr).unwrap();
        let deadline = clock::now() + Nanos::from_secs(2);
        while rtp.stats().1 == 0 && clock::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(rtp.stats(), (RtpInStats::default(), 1));
    }
}
