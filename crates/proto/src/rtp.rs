//! Standard RTP, for the tools that speak it (PulseAudio's `module-rtp-send` and
//! `module-rtp-recv`, PipeWire's RTP modules, ffmpeg, VLC): the common denominator of RTP
//! audio, L16 (16-bit big-endian PCM, RFC 3551) on a dynamic payload type, announced by SAP
//! (RFC 2974) with an SDP (RFC 4566) description. Out: [`L16Sender`], [`sdp`], [`sap`]. In:
//! [`L16Receiver`]. Sans-IO: packets are built and read here, sent and received by the node.

use core::net::{IpAddr, SocketAddr};

/// The dynamic payload type Tutti's L16 streams use (PulseAudio's `module-rtp-send` does too).
pub const PAYLOAD_TYPE: u8 = 127;

/// SAP's well-known group and port (PulseAudio listens there).
pub const SAP_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(core::net::Ipv4Addr::new(224, 0, 0, 56)), 9875);

/// An RTP L16 sender's state: its source id, next sequence number and timestamp.
#[derive(Clone, Debug)]
pub struct L16Sender {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    channels: usize,
}

impl L16Sender {
    /// A sender with source id `ssrc`, starting at sequence `seq` and timestamp `timestamp`
    /// (random, as RFC 3550 asks), of `channels` interleaved channels.
    pub fn new(ssrc: u32, seq: u16, timestamp: u32, channels: usize) -> Self {
        L16Sender { ssrc, seq, timestamp, channels: channels.max(1) }
    }

    /// One packet of `pcm` (16-bit, little-endian, interleaved: what a PCM16 Tutti packet
    /// carries) into `out`; the sequence and timestamp move on.
    pub fn packet(&mut self, pcm_le: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.push(0x80); // version 2, no padding, no extension, no CSRC
        out.push(PAYLOAD_TYPE & 0x7f);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for s in pcm_le.chunks_exact(2) {
            out.extend_from_slice(&[s[1], s[0]]);
        }
        let frames = pcm_le.len() / 2 / self.channels;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(frames as u32);
    }

    /// Its source id.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
}

/// The SDP of an L16 session named `name` at `rate` Hz, `channels` channels, sent from
/// `origin` to `to` (`\n` line ends, as PulseAudio writes and reads them).
pub fn sdp(name: &str, origin: IpAddr, to: SocketAddr, rate: u32, channels: u8, id: u32) -> String {
    let ip4 = |ip: IpAddr| if ip.is_ipv4() { "IP4" } else { "IP6" };
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    // Multicast stays on the LAN (the node sends with a TTL of 1).
    let ttl = if to.ip().is_multicast() && to.is_ipv4() { "/1" } else { "" };
    format!(
        "v=0\no=tutti {id} 0 IN {} {origin}\ns={name}\nc=IN {} {}{ttl}\nt=0 0\na=recvonly\nm=audio {} RTP/AVP {PAYLOAD_TYPE}\na=rtpmap:{PAYLOAD_TYPE} L16/{rate}/{channels}\na=type:broadcast\n",
        ip4(origin),
        ip4(to.ip()),
        to.ip(),
        to.port(),
    )
}

/// A SAP announcement (or, `delete`, its withdrawal) of `sdp` from `origin` (IPv4), message
/// id `hash`.
pub fn sap(origin: core::net::Ipv4Addr, hash: u16, sdp: &str, delete: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + 16 + sdp.len());
    // Version 1, IPv4 origin, announce (or delete), no encryption, no compression.
    m.push(0x20 | if delete { 0x04 } else { 0 });
    m.push(0); // no authentication data
    m.extend_from_slice(&hash.to_be_bytes());
    m.extend_from_slice(&origin.octets());
    m.extend_from_slice(b"application/sdp\0");
    m.extend_from_slice(sdp.as_bytes());
    m
}

/// Why a received datagram played nothing (each is counted; see [`RtpInStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpDrop {
    /// Not an RTP packet of whole L16 frames (too short, not version 2, a bad header or
    /// padding length, a payload that is not whole frames).
    Malformed,
    /// A payload type other than L16: static 10 (stereo) and 11 (mono) at 44.1 kHz, when
    /// the stream is that, or a dynamic one (96–127), taken to be L16 at the stream's format.
    PayloadType(u8),
    /// From another source (SSRC) than the one being played, while that one still sends.
    Foreign,
    /// Older than what was already played (late or duplicated).
    Late,
}

/// A received L16 packet's audio.
#[derive(Debug, PartialEq, Eq)]
pub struct L16Audio<'a> {
    /// Frames lost just before it (packets that never came): played as silence.
    pub gap: u32,
    /// Its samples: 16-bit big-endian, interleaved.
    pub samples: &'a [u8],
    /// Its frames.
    pub frames: u32,
}

/// What an [`L16Receiver`] has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpInStats {
    /// Packets played.
    pub packets: u64,
    /// Frames of silence played for packets that never came.
    pub lost_frames: u64,
    /// Datagrams dropped as malformed.
    pub malformed: u64,
    /// Datagrams of another payload type.
    pub payload_type: u64,
    /// Datagrams of another source.
    pub foreign: u64,
    /// Datagrams too late (or repeated).
    pub late: u64,
    /// Times the source changed (a new SSRC after the old one fell silent) or jumped.
    pub restarts: u64,
}

/// How long a source may be silent before another may take over, ns.
const SOURCE_SILENT_NS: u64 = 1_000_000_000;

/// Reads an L16 RTP stream of `channels` channels at `rate` Hz: one source (the first SSRC
/// heard, until it is silent for a second), in timestamp order. A gap of up to a second of
/// frames (lost packets) is filled with silence, so every later frame keeps its place; older
/// packets are dropped; a jump of a second or more is the sender starting over.
#[derive(Clone, Debug)]
pub struct L16Receiver {
    rate: u32,
    channels: usize,
    ssrc: Option<u32>,
    next_timestamp: u32,
    last_heard_ns: u64,
    stats: RtpInStats,
}

impl L16Receiver {
    /// A receiver of `channels` channels at `rate` Hz.
    pub fn new(rate: u32, channels: usize) -> Self {
        L16Receiver {
            rate: rate.max(1),
            channels: channels.max(1),
            ssrc: None,
            next_timestamp: 0,
            last_heard_ns: 0,
            stats: RtpInStats::default(),
        }
    }

    /// Its rate, Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Its channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// What it has seen so far.
    pub fn stats(&self) -> RtpInStats {
        self.stats
    }

    /// Reads `datagram`, received at `now_ns` (any monotonic clock, ns).
    pub fn receive<'a>(
        &mut self,
        now_ns: u64,
        datagram: &'a [u8],
    ) -> Result<L16Audio<'a>, RtpDrop> {
        let r = self.read(now_ns, datagram);
        match r {
            Ok(ref a) => {
                self.stats.packets += 1;
                self.stats.lost_frames += u64::from(a.gap);
            }
            Err(RtpDrop::Malformed) => self.stats.malformed += 1,
            Err(RtpDrop::PayloadType(_)) => self.stats.payload_type += 1,
            Err(RtpDrop::Foreign) => self.stats.foreign += 1,
            Err(RtpDrop::Late) => self.stats.late += 1,
        }
        r
    }

    fn read<'a>(&mut self, now_ns: u64, d: &'a [u8]) -> Result<L16Audio<'a>, RtpDrop> {
        if d.len() < 12 || d[0] >> 6 != 2 {
            return Err(RtpDrop::Malformed);
        }
        let (padded, extended, csrcs) =
            (d[0] & 0x20 != 0, d[0] & 0x10 != 0, usize::from(d[0] & 0x0f));
        let payload_type = d[1] & 0x7f;
        let timestamp = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        let mut start = 12 + 4 * csrcs;
        if extended {
            let words = d.get(start + 2..start + 4).ok_or(RtpDrop::Malformed)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut end = d.len();
        if padded {
            end = end.checked_sub(usize::from(d[end - 1])).ok_or(RtpDrop::Malformed)?;
        }
        let samples = d.get(start..end).ok_or(RtpDrop::Malformed)?;
        // (Before the frames are counted: another codec's packet is named as such.)
        let l16 = match payload_type {
            10 => self.rate == 44_100 && self.channels == 2,
            11 => self.rate == 44_100 && self.channels == 1,
            96..=127 => true,
            _ => false,
        };
        if !l16 {
            return Err(RtpDrop::PayloadType(payload_type));
        }
        let frame_bytes = 2 * self.channels;
        if samples.is_empty() || samples.len() % frame_bytes != 0 {
            return Err(RtpDrop::Malformed);
        }
        let frames = (samples.len() / frame_bytes) as u32;
        let silent = now_ns.saturating_sub(self.last_heard_ns) >= SOURCE_SILENT_NS;
        let gap = match self.ssrc {
            Some(s) if s == ssrc => {
                let ahead = timestamp.wrapping_sub(self.next_timestamp) as i32;
                if ahead < 0 && ahead.unsigned_abs() < self.rate {
                    return Err(RtpDrop::Late);
                }
                if (0..self.rate as i32).contains(&ahead) {
                    ahead as u32
                } else {
                    self.stats.restarts += 1;
                    0
                }
            }
            Some(_) if !silent => return Err(RtpDrop::Foreign),
            Some(_) => {
                self.stats.restarts += 1;
                0
            }
            None => 0,
        };
        self.ssrc = Some(ssrc);
        self.next_timestamp = timestamp.wrapping_add(frames);
        self.last_heard_ns = now_ns;
        Ok(L16Audio { gap, samples, frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_rtp_version_2_with_big_endian_samples_and_moving_counters() {
        let mut s = L16Sender::new(0xdead_beef, 65_535, 1_000, 2);
        let pcm: Vec<u8> = [1i16, -2, 300, -400].iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut out = Vec::new();
        s.packet(&pcm, &mut out);
        assert_eq!(out[0], 0x80);
        assert_eq!(out[1], PAYLOAD_TYPE);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 65_535);
        assert_eq!(u32::from_be_bytes(out[4..8].try_into().unwrap()), 1_000);
        assert_eq!(u32::from_be_bytes(out[8..12].try_into().unwrap()), 0xdead_beef);
        let samples: Vec<i16> =
            out[12..].chunks_exact(2).map(|b| i16::from_be_bytes([b[0], b[1]])).collect();
        assert_eq!(samples, [1, -2, 300, -400]);
        s.packet(&pcm, &mut out);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 0, "the sequence wraps");
        assert_eq!(u32::from_be_bytes(out[4..8].try_into().unwrap()), 1_002, "two frames on");
    }

    #[test]
    fn the_announcement_carries_an_sdp_pulseaudio_reads() {
        let to: SocketAddr = "239.255.77.77:5004".parse().unwrap();
        let origin = core::net::Ipv4Addr::new(10, 0, 0, 2);
        let text = sdp("living\nroom", origin.into(), to, 48_000, 2, 7);
        assert!(text.contains("c=IN IP4 239.255.77.77/1\n"), "{text}");
        assert!(text.contains("m=audio 5004 RTP/AVP 127\na=rtpmap:127 L16/48000/2\n"), "{text}");
        assert!(text.contains("s=livingroom\n"), "no control characters: {text}");
        assert!(!text.contains('\r'));
        let m = sap(origin, 0x1234, &text, false);
        assert_eq!(&m[..8], &[0x20, 0, 0x12, 0x34, 10, 0, 0, 2]);
        assert!(m[8..].starts_with(b"application/sdp\0v=0\n"));
        assert_eq!(sap(origin, 1, &text, true)[0], 0x24);
    }

    /// An L16 packet: `frames` stereo frames of value `v`.
    fn l16(seq: u16, timestamp: u32, ssrc: u32, frames: usize, v: i16) -> Vec<u8> {
        let mut s = L16Sender::new(ssrc, seq, timestamp, 2);
        let pcm: Vec<u8> = (0..frames * 2).flat_map(|_| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        s.packet(&pcm, &mut out);
        out
    }

    #[test]
    fn a_receiver_plays_in_order_fills_losses_and_drops_what_is_late() {
        let mut r = L16Receiver::new(48_000, 2);
        let ms = 1_000_000;
        let a = l16(1, 1_000, 7, 240, 5);
        let got = r.receive(0, &a).unwrap();
        assert_eq!((got.gap, got.frames), (0, 240));
        assert_eq!(&got.samples[..2], &5i16.to_be_bytes());
        // Two packets lost: their 480 frames are played as silence before the next.
        let b = l16(4, 1_720, 7, 240, 6);
        let got = r.receive(15 * ms, &b).unwrap();
        assert_eq!((got.gap, got.frames), (480, 240));
        // One of them arrives after all: too late, dropped.
        assert_eq!(r.receive(16 * ms, &l16(2, 1_240, 7, 240, 6)), Err(RtpDrop::Late));
        // Another source while this one sends: dropped; once it is silent for a second, it
        // takes over.
        assert_eq!(r.receive(17 * ms, &l16(9, 50, 8, 240, 1)), Err(RtpDrop::Foreign));
        let c = l16(10, 290, 8, 240, 1);
        assert_eq!(r.receive(1_100 * ms, &c).map(|a| a.gap), Ok(0));
        // The sender jumping a minute ahead starts over rather than filling a minute.
        let d = l16(11, 290 + 48_000 * 60, 8, 240, 1);
        assert_eq!(r.receive(1_105 * ms, &d).map(|a| a.gap), Ok(0));
        let stats = r.stats();
        assert_eq!((stats.packets, stats.lost_frames, stats.late, stats.foreign), (4, 480, 1, 1));
        assert_eq!(stats.restarts, 2);
    }

    #[test]
    fn a_receiver_drops_what_is_not_whole_l16_frames_and_counts_it() {
        let mut r = L16Receiver::new(48_000, 2);
        let good = l16(1, 0, 7, 240, 5);
        assert_eq!(r.receive(0, &good[..11]), Err(RtpDrop::Malformed), "shorter than a header");
        let mut v1 = good.clone();
        v1[0] = 0x40;
        assert_eq!(r.receive(0, &v1), Err(RtpDrop::Malformed), "version 1");
        assert_eq!(r.receive(0, &good[..good.len() - 1]), Err(RtpDrop::Malformed), "half a frame");
        let mut csrcs = good.clone();
        csrcs[0] |= 0x0f;
        csrcs.truncate(40);
        assert_eq!(r.receive(0, &csrcs), Err(RtpDrop::Malformed), "CSRCs past the end");
        let mut padded = good.clone();
        padded[0] |= 0x20;
        *padded.last_mut().unwrap() = 255;
        padded.truncate(200);
        assert_eq!(r.receive(0, &padded), Err(RtpDrop::Malformed), "padding past the start");
        let mut pcmu = good[..12 + 161].to_vec();
        pcmu[1] = 0;
        assert_eq!(r.receive(0, &pcmu), Err(RtpDrop::PayloadType(0)), "PCMU, 161 bytes");
        let mut l16_44 = good.clone();
        l16_44[1] = 10;
        assert_eq!(r.receive(0, &l16_44), Err(RtpDrop::PayloadType(10)), "44.1 kHz into 48 kHz");
        assert_eq!(L16Receiver::new(44_100, 2).receive(0, &l16_44).map(|a| a.frames), Ok(240));
        // A header extension and padding are skipped.
        let mut ext = good[..12].to_vec();
        ext[0] |= 0x30;
        ext.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
        ext.extend_from_slice(&good[12..]);
        ext.extend_from_slice(&[0, 0, 3]);
        let got = r.receive(0, &ext).unwrap();
        assert_eq!((got.frames, &got.samples[..2]), (240, &5i16.to_be_bytes()[..]));
        let stats = r.stats();
        assert_eq!((stats.malformed, stats.payload_type, stats.packets), (5, 2, 1));
    }
}
