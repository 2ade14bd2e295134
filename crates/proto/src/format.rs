//! [`StreamFormat`]: how a stream's audio is cut and coded — the one description a source is
//! configured with, its announce carries on the wire and a player joins.

use crate::source::ConfigError;
use crate::time::Nanos;
use crate::wire::{self, Codec, MAX_PAYLOAD};

/// Sample rate, channels, codec and packet size of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFormat {
    /// Sample rate, Hz.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u8,
    /// Codec of the payloads.
    pub codec: Codec,
    /// Frames per packet.
    pub frames_per_packet: u16,
}

impl StreamFormat {
    /// 16-bit PCM in 5 ms packets.
    pub fn pcm(sample_rate: u32, channels: u8) -> Self {
        StreamFormat {
            sample_rate,
            channels,
            codec: Codec::Pcm16,
            frames_per_packet: (sample_rate / 200) as u16,
        }
    }

    /// How long one packet's frames last.
    pub fn packet_duration(&self) -> Nanos {
        Nanos::from_frames(u64::from(self.frames_per_packet), self.sample_rate)
    }

    /// A PCM packet's payload size in bytes (`None`: a compressed codec).
    pub fn pcm_payload(&self) -> Option<usize> {
        self.codec
            .pcm_bytes()
            .map(|b| usize::from(self.frames_per_packet) * usize::from(self.channels) * b)
    }

    /// The most frames a PCM packet of this rate and channel count holds in one datagram
    /// (`None`: a compressed codec).
    pub fn max_pcm_frames(&self) -> Option<usize> {
        self.codec.pcm_bytes().map(|b| MAX_PAYLOAD / (usize::from(self.channels.max(1)) * b))
    }

    /// Checks the format; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, fix: String| Err(ConfigError { field, fix });
        if !(8_000..=384_000).contains(&self.sample_rate) {
            return bad("sample_rate", "use a rate between 8000 and 384000 Hz".into());
        }
        if self.channels == 0 || self.channels > wire::MAX_CHANNELS {
            return bad("channels", format!("use 1 to {} channels", wire::MAX_CHANNELS));
        }
        if self.frames_per_packet == 0 {
            return bad("frames_per_packet", "use at least 1 frame per packet".into());
        }
        if let (Some(size), Some(max)) = (self.pcm_payload(), self.max_pcm_frames())
            && size > MAX_PAYLOAD
        {
            return bad(
                "frames_per_packet",
                format!(
                    "{size} bytes of PCM do not fit one datagram: use at most {max} frames per packet"
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_says_what_cannot_work_and_how_long_a_packet_lasts() {
        let f = StreamFormat::pcm(48_000, 2);
        assert_eq!(f.packet_duration(), Nanos::from_millis(5));
        assert_eq!(f.pcm_payload(), Some(960));
        assert!(f.validate().is_ok());
        let big = StreamFormat { frames_per_packet: 276, ..f };
        assert_eq!(big.validate().map_err(|e| e.field), Err("frames_per_packet"));
        assert!(StreamFormat { frames_per_packet: 275, ..f }.validate().is_ok());
        let opus = StreamFormat { codec: Codec::Opus, frames_per_packet: 960, ..f };
        assert_eq!((opus.pcm_payload(), opus.validate()), (None, Ok(())));
        assert_eq!(StreamFormat::pcm(4_000, 2).validate().map_err(|e| e.field), Err("sample_rate"));
        assert_eq!(StreamFormat::pcm(48_000, 0).validate().map_err(|e| e.field), Err("channels"));
    }
}
