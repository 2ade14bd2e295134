//! Where a player plays: a device (cpal: PulseAudio or ALSA), a WAV file, or nothing.

use std::path::PathBuf;

use tutti_audio::AudioError;
use tutti_audio::backend::cpal::CpalBackend;
use tutti_audio::backend::null::NullBackend;
use tutti_audio::backend::wav::{WavBackend, WavFormat};
use tutti_audio::backend::{ActiveStream, Backend, OutputCallback, StreamSpec};
use tutti_proto::LocalTime;

/// An output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A sound device: `host` is `pulse` or `alsa` (first available if `None`), `name` the
    /// device (default if `None`).
    Device {
        /// cpal host.
        host: Option<String>,
        /// Device name (as `tutti devices` lists it).
        name: Option<String>,
    },
    /// A WAV file, paced in real time; its first sample's local instant goes to `<file>.json`.
    Wav(PathBuf),
    /// Nothing (paced by the clock).
    Null,
}

impl OutputKind {
    /// Plays integer PCM untouched here (the device clock is the local clock).
    pub fn clock_paced(&self) -> bool {
        matches!(self, OutputKind::Wav(_) | OutputKind::Null)
    }
}

/// Opens `kind` with `spec`, rendering through `cb`. A file's first frame plays at
/// `first_frame` when given (its phase is free; a device's is not).
pub fn open(
    kind: &OutputKind,
    spec: &StreamSpec,
    first_frame: Option<LocalTime>,
    cb: OutputCallback,
) -> Result<Box<dyn ActiveStream>, AudioError> {
    match kind {
        OutputKind::Null => NullBackend.open_output(None, spec, cb),
        OutputKind::Wav(path) => {
            let wav = WavBackend::new(path.clone(), WavFormat::I16, true);
            let wav = match first_frame {
                Some(t) => wav.first_frame_at(t),
                None => wav,
            };
            wav.open_output(None, spec, cb)
        }
        OutputKind::Device { host, name } => {
            let backend = match host.as_deref() {
                Some("pulse") => CpalBackend::pulse()?,
                Some("alsa") => CpalBackend::alsa()?,
                Some(other) => {
                    return Err(AudioError::Config(format!(
                        "unknown audio host `{other}`: use pulse or alsa"
                    )));
                }
                None => CpalBackend::available().into_iter().next().ok_or_else(|| {
                    AudioError::Device(
                        "no audio host available (no PulseAudio server, no ALSA devices)".into(),
                    )
                })?,
            };
            backend.open_output(name.as_deref(), spec, cb)
        }
    }
}
