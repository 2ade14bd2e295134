//! Standard RTP out, for the tools that speak it (PulseAudio's `module-rtp-recv`, ffmpeg,
//! VLC): the common denominator of RTP audio, L16 (16-bit big-endian PCM, RFC 3551) on a
//! dynamic payload type, announced by SAP (RFC 2974) with an SDP (RFC 4566) description.
//! Sans-IO: packets and announcements are built here, sent by the node.

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
}
