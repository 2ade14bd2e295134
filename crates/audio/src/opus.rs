//! Opus at 2.5, 5, 10 and 20 ms frames, with packet-loss concealment and in-band FEC.
//!
//! In-band FEC (LBRR) carries a low-bitrate copy of the previous frame inside each packet; it
//! exists only for frames of 10 ms and more (the SILK layer), so it is enabled there and
//! ignored for 2.5 and 5 ms frames, where concealment alone covers a loss.

use opus::{Application, Bitrate, Channels};

use crate::AudioError;

/// Frame durations Opus supports that Tutti uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameDuration {
    /// 2.5 ms: lowest latency (live mode).
    Ms2_5,
    /// 5 ms.
    Ms5,
    /// 10 ms.
    Ms10,
    /// 20 ms: best efficiency.
    Ms20,
}

impl FrameDuration {
    /// Frames per packet at 48 kHz.
    pub fn frames(self) -> usize {
        match self {
            FrameDuration::Ms2_5 => 120,
            FrameDuration::Ms5 => 240,
            FrameDuration::Ms10 => 480,
            FrameDuration::Ms20 => 960,
        }
    }
    /// The duration for a frame count at 48 kHz.
    pub fn from_frames(frames: usize) -> Option<Self> {
        Some(match frames {
            120 => FrameDuration::Ms2_5,
            240 => FrameDuration::Ms5,
            480 => FrameDuration::Ms10,
            960 => FrameDuration::Ms20,
            _ => return None,
        })
    }
    /// Whether in-band FEC can work at this duration.
    pub fn supports_fec(self) -> bool {
        matches!(self, FrameDuration::Ms10 | FrameDuration::Ms20)
    }
}

fn channels(n: usize) -> Result<Channels, AudioError> {
    match n {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        _ => Err(AudioError::Config(format!("Opus carries 1 or 2 channels, not {n}: use PCM"))),
    }
}

fn err(e: opus::Error) -> AudioError {
    AudioError::Opus(e)
}

/// An Opus encoder for one stream.
pub struct OpusEncoder {
    inner: opus::Encoder,
    channels: usize,
    frame: FrameDuration,
}

impl core::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpusEncoder").field("frame", &self.frame).finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// A 48 kHz encoder. `live` favours latency (restricted low-delay mode) over music
    /// quality; `bitrate` in bits per second; `expected_loss` (percent) tunes FEC.
    pub fn new(
        ch: usize,
        frame: FrameDuration,
        bitrate: i32,
        live: bool,
        expected_loss: i32,
    ) -> Result<Self, AudioError> {
        let app = if live { Application::LowDelay } else { Application::Audio };
        let mut inner = opus::Encoder::new(48_000, channels(ch)?, app).map_err(err)?;
        inner.set_bitrate(Bitrate::Bits(bitrate)).map_err(err)?;
        let fec = frame.supports_fec() && !live;
        inner.set_inband_fec(fec).map_err(err)?;
        inner
            .set_packet_loss_perc(if fec { expected_loss.clamp(0, 100) } else { 0 })
            .map_err(err)?;
        Ok(OpusEncoder { inner, channels: ch, frame })
    }

    /// Frame duration.
    pub fn frame(&self) -> FrameDuration {
        self.frame
    }

    /// Encodes one frame of interleaved samples into `out`; returns the packet length.
    pub fn encode(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, AudioError> {
        let want = self.frame.frames() * self.channels;
        if pcm.len() != want {
            return Err(AudioError::Config(format!(
                "Opus frame needs {want} samples, got {}",
                pcm.len()
            )));
        }
        self.inner.encode_float(pcm, out).map_err(err)
    }
}

/// An Opus decoder for one stream, with concealment and FEC recovery.
pub struct OpusDecoder {
    inner: opus::Decoder,
    channels: usize,
}

impl core::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpusDecoder").field("channels", &self.channels).finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A 48 kHz decoder.
    pub fn new(ch: usize) -> Result<Self, AudioError> {
        Ok(OpusDecoder {
            inner: opus::Decoder::new(48_000, channels(ch)?).map_err(err)?,
            channels: ch,
        })
    }

    /// Decodes a packet into `out` (interleaved, room for a whole frame); returns frames.
    pub fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, AudioError> {
        self.inner.decode_float(packet, out, false).map_err(err)
    }

    /// Conceals a lost frame of `frames` frames into `out`. If the *next* packet is at hand,
    /// its in-band FEC copy rebuilds the lost frame instead of guessing.
    pub fn conceal(
        &mut self,
        next: Option<&[u8]>,
        frames: usize,
        out: &mut [f32],
    ) -> Result<usize, AudioError> {
        let out = &mut out[..frames * self.channels];
        match next {
            Some(p) => self.inner.decode_float(p, out, true).map_err(err),
            None => self.inner.decode_float(&[], out, false).map_err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(frames: usize, start: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let v = 0.5 * (std::f32::consts::TAU * 440.0 * (start + i) as f32 / 48_000.0).sin();
                [v, v]
            })
            .collect()
    }

    fn snr(reference: &[f32], got: &[f32]) -> f64 {
        let sig: f64 = reference.iter().map(|x| f64::from(*x).powi(2)).sum();
        let noise: f64 = reference.iter().zip(got).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        10.0 * (sig / noise.max(1e-12)).log10()
    }

    #[test]
    fn every_frame_size_round_trips_a_tone() {
        for fd in
            [FrameDuration::Ms2_5, FrameDuration::Ms5, FrameDuration::Ms10, FrameDuration::Ms20]
        {
            let n = fd.frames();
            let mut enc = OpusEncoder::new(2, fd, 128_000, fd == FrameDuration::Ms2_5, 10).unwrap();
            let mut dec = OpusDecoder::new(2).unwrap();
            let mut packet = [0u8; 1500];
            let mut out = vec![0.0f32; n * 2];
            let mut all_in = Vec::new();
            let mut all_out = Vec::new();
            for k in 0..200 {
                let pcm = sine(n, k * n);
                let len = enc.encode(&pcm, &mut packet).unwrap();
                assert!(len > 0 && len < 1100, "{fd:?}: {len} bytes");
                assert_eq!(dec.decode(&packet[..len], &mut out).unwrap(), n);
                all_in.extend(pcm);
                all_out.extend_from_slice(&out);
            }
            // Opus delays by its lookahead: compare after aligning on the best lag.
            let best = (0..400)
                .map(|lag| {
                    snr(
                        &all_in[..all_in.len() - 800],
                        &all_out[lag * 2..lag * 2 + all_in.len() - 800],
                    )
                })
                .fold(f64::MIN, f64::max);
            assert!(best > 20.0, "{fd:?}: SNR {best:.1} dB");
        }
    }

    #[test]
    fn lost_frames_are_concealed_and_fec_rebuilds_them() {
        let fd = FrameDuration::Ms20;
        let n = fd.frames();
        let mut enc = OpusEncoder::new(2, fd, 96_000, false, 20).unwrap();
        let mut packets = Vec::new();
        let mut buf = [0u8; 1500];
        for k in 0..50 {
            let len = enc.encode(&sine(n, k * n), &mut buf).unwrap();
            packets.push(buf[..len].to_vec());
        }
        let mut out = vec![0.0f32; n * 2];
        let mut dec = OpusDecoder::new(2).unwrap();
        for p in &packets[..30] {
            dec.decode(p, &mut out).unwrap();
        }
        // Packet 30 lost: recover it from 31's FEC data, then play 31.
        assert_eq!(dec.conceal(Some(&packets[31]), n, &mut out).unwrap(), n);
        let energy: f32 = out.iter().map(|x| x * x).sum();
        assert!(energy > 1.0, "FEC rebuilt audio, not silence");
        dec.decode(&packets[31], &mut out).unwrap();
        // Packet 32 lost with nothing after it: plain concealment still gives audio.
        assert_eq!(dec.conceal(None, n, &mut out).unwrap(), n);
        assert!(out.iter().any(|x| x.abs() > 0.01));
    }
}
