//! Sample formats and conversions between wire PCM and the engine's interleaved `f32`.
//!
//! Integer PCM maps to `f32` by division by full scale (`i16 / 32768`), and back by
//! multiplication, rounding and clamping: an integer stream survives the round trip
//! bit-exactly, which the end-to-end tests rely on.

use tutti_proto::Codec;

/// Bytes per sample of a PCM codec (`None` for compressed codecs).
pub fn pcm_bytes(codec: Codec) -> Option<usize> {
    codec.pcm_bytes()
}

/// Decodes interleaved little-endian PCM into `out` (appended). Returns samples decoded, or
/// `None` for a compressed codec or a payload that is not a whole number of samples.
pub fn decode_pcm(codec: Codec, bytes: &[u8], out: &mut Vec<f32>) -> Option<usize> {
    let width = codec.pcm_bytes()?;
    if !bytes.len().is_multiple_of(width) {
        return None;
    }
    let n = bytes.len() / width;
    out.reserve(n);
    match codec {
        Codec::Pcm16 => out.extend(
            bytes.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0),
        ),
        Codec::Pcm24 => out.extend(bytes.chunks_exact(3).map(|b| {
            let v = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
            v as f32 / 8_388_608.0
        })),
        Codec::PcmF32 => {
            out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
        Codec::Opus => return None,
    }
    Some(n)
}

/// Encodes interleaved `f32` samples as little-endian PCM into `out` (appended). Integer
/// formats round to nearest and clamp to full scale.
pub fn encode_pcm(codec: Codec, samples: &[f32], out: &mut Vec<u8>) -> Option<usize> {
    let width = codec.pcm_bytes()?;
    out.reserve(samples.len() * width);
    match codec {
        Codec::Pcm16 => {
            for s in samples {
                out.extend_from_slice(&to_i16(*s).to_le_bytes());
            }
        }
        Codec::Pcm24 => {
            for s in samples {
                let v =
                    (f64::from(*s) * 8_388_608.0).round().clamp(-8_388_608.0, 8_388_607.0) as i32;
                out.extend_from_slice(&v.to_le_bytes()[..3]);
            }
        }
        Codec::PcmF32 => {
            for s in samples {
                out.extend_from_slice(&s.to_le_bytes());
            }
        }
        Codec::Opus => return None,
    }
    Some(samples.len() * width)
}

/// One `f32` sample as `i16`, rounded and clamped.
pub fn to_i16(s: f32) -> i16 {
    (f64::from(s) * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pcm16_round_trips_bit_exactly(v in proptest::collection::vec(any::<i16>(), 0..500)) {
            let bytes: Vec<u8> = v.iter().flat_map(|s| s.to_le_bytes()).collect();
            let mut f = Vec::new();
            prop_assert_eq!(decode_pcm(Codec::Pcm16, &bytes, &mut f), Some(v.len()));
            let mut back = Vec::new();
            encode_pcm(Codec::Pcm16, &f, &mut back);
            prop_assert_eq!(back, bytes);
        }

        #[test]
        fn pcm24_round_trips_bit_exactly(v in proptest::collection::vec(-8_388_608i32..8_388_608, 0..300)) {
            let bytes: Vec<u8> = v.iter().flat_map(|s| s.to_le_bytes()[..3].to_vec()).collect();
            let mut f = Vec::new();
            decode_pcm(Codec::Pcm24, &bytes, &mut f);
            for (a, b) in f.iter().zip(&v) {
                prop_assert!((a * 8_388_608.0 - *b as f32).abs() < 0.5);
            }
            let mut back = Vec::new();
            encode_pcm(Codec::Pcm24, &f, &mut back);
            prop_assert_eq!(back, bytes);
        }
    }

    #[test]
    fn full_scale_clamps_and_odd_lengths_are_refused() {
        let mut out = Vec::new();
        encode_pcm(Codec::Pcm16, &[1.5, -2.0, 1.0], &mut out);
        assert_eq!(out, [0xff, 0x7f, 0x00, 0x80, 0xff, 0x7f]);
        assert_eq!(decode_pcm(Codec::Pcm16, &[1, 2, 3], &mut Vec::new()), None);
        assert_eq!(decode_pcm(Codec::Opus, &[1, 2], &mut Vec::new()), None);
    }
}
