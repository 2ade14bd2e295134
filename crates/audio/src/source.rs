//! Audio sources: test tones and clicks, raw PCM from any reader (stdin), and files of every
//! common format through symphonia, converted to the stream's rate.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::{MetadataOptions, StandardTagKey, Value};
use symphonia::core::probe::Hint;
use tutti_proto::Codec;

use crate::AudioError;
use crate::format::decode_pcm;

/// What is known about a track.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Title.
    pub title: Option<String>,
    /// Artist.
    pub artist: Option<String>,
    /// Album.
    pub album: Option<String>,
    /// Cover art: MIME type and bytes.
    pub cover: Option<(String, Vec<u8>)>,
}

/// A stream of interleaved `f32` audio.
pub trait Source: Send {
    /// Sample rate of what [`read`](Self::read) returns.
    fn sample_rate(&self) -> u32;
    /// Channels of what [`read`](Self::read) returns.
    fn channels(&self) -> usize;
    /// Appends up to `frames` frames to `out`; returns the frames appended (0 at the end).
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError>;
    /// Track metadata, if any.
    fn metadata(&self) -> Metadata {
        Metadata::default()
    }
    /// Total length in frames, if known.
    fn duration(&self) -> Option<u64> {
        None
    }
}

impl Source for Box<dyn Source> {
    fn sample_rate(&self) -> u32 {
        (**self).sample_rate()
    }
    fn channels(&self) -> usize {
        (**self).channels()
    }
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        (**self).read(out, frames)
    }
    fn metadata(&self) -> Metadata {
        (**self).metadata()
    }
    fn duration(&self) -> Option<u64> {
        (**self).duration()
    }
}

/// A sine tone (endless, or `limit` frames long).
#[derive(Clone, Debug)]
pub struct Tone {
    rate: u32,
    channels: usize,
    freq: f64,
    amplitude: f32,
    n: u64,
    limit: Option<u64>,
}

impl Tone {
    /// A tone of `freq` Hz at `amplitude` (linear, 0–1).
    pub fn new(rate: u32, channels: usize, freq: f64, amplitude: f32) -> Self {
        Tone { rate, channels: channels.max(1), freq, amplitude, n: 0, limit: None }
    }
    /// Stops after `frames` frames.
    pub fn with_limit(mut self, frames: u64) -> Self {
        self.limit = Some(frames);
        self
    }
}

impl Source for Tone {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        let frames = self.limit.map_or(frames, |l| frames.min(l.saturating_sub(self.n) as usize));
        let w = std::f64::consts::TAU * self.freq / f64::from(self.rate);
        for _ in 0..frames {
            // Phase from the frame index (not accumulated): exact for hours.
            let phase = (self.n as f64 * w) % std::f64::consts::TAU;
            let v = self.amplitude * phase.sin() as f32;
            out.extend(std::iter::repeat_n(v, self.channels));
            self.n += 1;
        }
        Ok(frames)
    }
    fn duration(&self) -> Option<u64> {
        self.limit
    }
}

/// Clicks (a short raised-cosine-windowed chirp) every `period` frames: for measuring latency
/// and alignment, where a sharp, unambiguous onset matters.
#[derive(Clone, Debug)]
pub struct Clicks {
    rate: u32,
    channels: usize,
    period: u64,
    n: u64,
    limit: Option<u64>,
    click: Vec<f32>,
}

/// Frames in one click.
pub const CLICK_LEN: u64 = 96;

impl Clicks {
    /// A click every `period` frames, the first at frame 0.
    pub fn new(rate: u32, channels: usize, period: u64) -> Self {
        Clicks {
            rate,
            channels: channels.max(1),
            period: period.max(CLICK_LEN * 2),
            n: 0,
            limit: None,
            click: Self::click(),
        }
    }
    /// Stops after `frames` frames.
    pub fn with_limit(mut self, frames: u64) -> Self {
        self.limit = Some(frames);
        self
    }
    /// The click's samples (mono).
    pub fn click() -> Vec<f32> {
        (0..CLICK_LEN)
            .map(|i| {
                let x = i as f64 / CLICK_LEN as f64;
                let window = 0.5 - 0.5 * (std::f64::consts::TAU * x).cos();
                // A chirp from 2 to 8 kHz at 48 kHz: a sharp autocorrelation peak.
                let phase = std::f64::consts::TAU * (0.04 * i as f64 + 0.06 * i as f64 * x);
                (0.9 * window * phase.sin()) as f32
            })
            .collect()
    }
}

impl Source for Clicks {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        let frames = self.limit.map_or(frames, |l| frames.min(l.saturating_sub(self.n) as usize));
        for _ in 0..frames {
            let k = self.n % self.period;
            let v = if k < CLICK_LEN { self.click[k as usize] } else { 0.0 };
            out.extend(std::iter::repeat_n(v, self.channels));
            self.n += 1;
        }
        Ok(frames)
    }
    fn duration(&self) -> Option<u64> {
        self.limit
    }
}

/// Raw interleaved little-endian PCM from any reader (stdin, a pipe, a socket).
pub struct RawPcm<R: Read + Send> {
    reader: R,
    codec: Codec,
    rate: u32,
    channels: usize,
    bytes: Vec<u8>,
}

impl<R: Read + Send> RawPcm<R> {
    /// Reads `codec` PCM (a PCM codec) at `rate` Hz with `channels` channels.
    pub fn new(reader: R, codec: Codec, rate: u32, channels: usize) -> Result<Self, AudioError> {
        if codec.pcm_bytes().is_none() {
            return Err(AudioError::Config(
                "raw input must be PCM: use s16le, s24le or f32le".into(),
            ));
        }
        Ok(RawPcm { reader, codec, rate, channels: channels.max(1), bytes: Vec::new() })
    }
}

impl<R: Read + Send> Source for RawPcm<R> {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        let frame_bytes = self.codec.pcm_bytes().expect("checked at construction") * self.channels;
        let want = frames * frame_bytes;
        self.bytes.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.reader.read(&mut self.bytes[got..want]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(AudioError::Io { what: "reading the input", source }),
            }
        }
        let whole = got / frame_bytes * frame_bytes;
        decode_pcm(self.codec, &self.bytes[..whole], out);
        Ok(whole / frame_bytes)
    }
}

/// A decoded file (WAV, FLAC, MP3, Ogg Vorbis, AAC/M4A, ALAC...) through symphonia.
pub struct FileSource {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn symphonia::core::codecs::Decoder>,
    track: u32,
    rate: u32,
    channels: usize,
    pending: Vec<f32>,
    metadata: Metadata,
    duration: Option<u64>,
    buf: Option<SampleBuffer<f32>>,
}

impl FileSource {
    /// Opens and probes `path`.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let file = File::open(path)
            .map_err(|source| AudioError::File { path: path.to_owned(), source })?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let mut probed = symphonia::default::get_probe()
            .format(&hint, mss, &FormatOptions::default(), &MetadataOptions::default())
            .map_err(|source| AudioError::Decode { what: path.display().to_string(), source })?;
        let track = probed
            .format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| AudioError::Unusable { path: path.to_owned(), why: "no audio track" })?;
        let params = track.codec_params.clone();
        let track_id = track.id;
        let rate = params.sample_rate.ok_or_else(|| AudioError::Unusable {
            path: path.to_owned(),
            why: "unknown sample rate",
        })?;
        let channels = params.channels.map_or(2, |c| c.count());
        let decoder = symphonia::default::get_codecs()
            .make(&params, &DecoderOptions::default())
            .map_err(|source| AudioError::Decode { what: path.display().to_string(), source })?;
        let mut metadata = Metadata::default();
        let mut read_tags = |rev: &symphonia::core::meta::MetadataRevision| {
            for tag in rev.tags() {
                let text = match &tag.value {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                match tag.std_key {
                    Some(StandardTagKey::TrackTitle) => metadata.title = Some(text),
                    Some(StandardTagKey::Artist) => metadata.artist = Some(text),
                    Some(StandardTagKey::Album) => metadata.album = Some(text),
                    _ => {}
                }
            }
            if let Some(v) = rev.visuals().first() {
                metadata.cover = Some((v.media_type.clone(), v.data.to_vec()));
            }
        };
        if let Some(rev) = probed.metadata.get().as_ref().and_then(|m| m.current()) {
            read_tags(rev);
        }
        if let Some(rev) = probed.format.metadata().current() {
            read_tags(rev);
        }
        Ok(FileSource {
            format: probed.format,
            decoder,
            track: track_id,
            rate,
            channels,
            pending: Vec::new(),
            metadata,
            duration: params.n_frames,
            buf: None,
        })
    }
}

impl Source for FileSource {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        use symphonia::core::errors::Error as E;
        while self.pending.len() < frames * self.channels {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(E::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(E::ResetRequired) => break,
                Err(source) => {
                    return Err(AudioError::Decode { what: "the input".into(), source });
                }
            };
            if packet.track_id() != self.track {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(decoded) => {
                    let spec = *decoded.spec();
                    let cap = decoded.capacity() as u64;
                    let buf = self.buf.get_or_insert_with(|| SampleBuffer::new(cap, spec));
                    if (buf.capacity() as u64) < cap {
                        *buf = SampleBuffer::new(cap, spec);
                    }
                    buf.copy_interleaved_ref(decoded);
                    self.pending.extend_from_slice(buf.samples());
                }
                // A corrupt packet: skip it, as players do.
                Err(E::DecodeError(_)) => continue,
                Err(source) => {
                    return Err(AudioError::Decode { what: "the input".into(), source });
                }
            }
        }
        let n = (frames * self.channels).min(self.pending.len());
        out.extend(self.pending.drain(..n));
        Ok(n / self.channels)
    }
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }
    fn duration(&self) -> Option<u64> {
        self.duration
    }
}

/// Converts a source to another sample rate and channel count (rubato's sinc resampler;
/// channels are mixed down or duplicated).
pub struct Converted<S: Source> {
    inner: S,
    rate: u32,
    channels: usize,
    resampler: Option<SincFixedIn<f32>>,
    input: Vec<f32>,
    planar_in: Vec<Vec<f32>>,
    planar_out: Vec<Vec<f32>>,
    ready: Vec<f32>,
    done: bool,
}

impl<S: Source> Converted<S> {
    /// `inner` at `rate` Hz with `channels` channels.
    pub fn new(inner: S, rate: u32, channels: usize) -> Result<Self, AudioError> {
        let chunk = 1024;
        let resampler = if inner.sample_rate() == rate {
            None
        } else {
            let params = SincInterpolationParameters {
                sinc_len: 128,
                f_cutoff: 0.95,
                interpolation: SincInterpolationType::Cubic,
                oversampling_factor: 128,
                window: WindowFunction::BlackmanHarris2,
            };
            Some(
                SincFixedIn::new(
                    f64::from(rate) / f64::from(inner.sample_rate()),
                    1.0,
                    params,
                    chunk,
                    inner.channels(),
                )
                .map_err(|e| AudioError::Resample(Box::new(e)))?,
            )
        };
        let ch = inner.channels();
        Ok(Converted {
            inner,
            rate,
            channels: channels.max(1),
            resampler,
            input: Vec::new(),
            planar_in: vec![Vec::new(); ch],
            planar_out: vec![Vec::new(); ch],
            ready: Vec::new(),
            done: false,
        })
    }

    fn remix(&mut self, samples: &[f32], from: usize) {
        let to = self.channels;
        for frame in samples.chunks_exact(from) {
            match (from, to) {
                (a, b) if a == b => self.ready.extend_from_slice(frame),
                (_, 1) => self.ready.push(frame.iter().sum::<f32>() / from as f32),
                (1, _) => self.ready.extend(std::iter::repeat_n(frame[0], to)),
                _ => self.ready.extend((0..to).map(|c| frame[c % from])),
            }
        }
    }
}

impl<S: Source> Source for Converted<S> {
    fn sample_rate(&self) -> u32 {
        self.rate
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        let from = self.inner.channels();
        while self.ready.len() < frames * self.channels && !self.done {
            let Some(resampler) = self.resampler.as_mut() else {
                self.input.clear();
                let n = self.inner.read(&mut self.input, frames)?;
                self.done = n == 0;
                let input = std::mem::take(&mut self.input);
                self.remix(&input, from);
                self.input = input;
                continue;
            };
            let need = resampler.input_frames_next();
            while self.input.len() < need * from {
                let before = self.input.len();
                self.inner.read(&mut self.input, need - before / from)?;
                if self.input.len() == before {
                    break;
                }
            }
            let have = self.input.len() / from;
            let partial = have < need;
            for (c, ch) in self.planar_in.iter_mut().enumerate() {
                ch.clear();
                ch.extend(self.input.chunks_exact(from).map(|f| f[c]));
            }
            let out_len = resampler.output_frames_max();
            for ch in &mut self.planar_out {
                ch.resize(out_len, 0.0);
            }
            let (used, produced) = if partial {
                self.done = true;
                resampler.process_partial_into_buffer(
                    Some(&self.planar_in),
                    &mut self.planar_out,
                    None,
                )
            } else {
                resampler.process_into_buffer(&self.planar_in, &mut self.planar_out, None)
            }
            .map_err(|e| AudioError::Resample(Box::new(e)))?;
            self.input.drain(..used.min(have) * from);
            let mut inter = Vec::with_capacity(produced * from);
            for i in 0..produced {
                for c in 0..from {
                    inter.push(self.planar_out[c][i]);
                }
            }
            self.remix(&inter, from);
        }
        let n = (frames * self.channels).min(self.ready.len());
        out.extend(self.ready.drain(..n));
        Ok(n / self.channels)
    }
    fn metadata(&self) -> Metadata {
        self.inner.metadata()
    }
    fn duration(&self) -> Option<u64> {
        self.inner
            .duration()
            .map(|d| d * u64::from(self.rate) / u64::from(self.inner.sample_rate().max(1)))
    }
}
