//! Where a player plays: a device (cpal: PulseAudio or ALSA), a WAV file, or nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use tutti_audio::AudioError;
use tutti_audio::backend::cpal::CpalBackend;
use tutti_audio::backend::null::NullBackend;
use tutti_audio::backend::tap::Tap;
use tutti_audio::backend::wav::{WavBackend, WavFormat};
use tutti_audio::backend::{ActiveStream, Backend, OutputCallback, StreamSpec};
use tutti_audio::clock;
use tutti_audio::engine::{OutputEngine, Program, Renderer};
use tutti_proto::{LocalTime, Nanos};

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
    /// Handed to a reader, paced by the clock, as far ahead as the group latency allows (the
    /// hub relaying a zone to browsers: see [`Tap`]).
    Tap(Tap),
}

impl OutputKind {
    /// Plays integer PCM untouched here (the device clock is the local clock).
    pub fn clock_paced(&self) -> bool {
        matches!(self, OutputKind::Wav(_) | OutputKind::Null | OutputKind::Tap(_))
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
        OutputKind::Tap(tap) => tap.open_output(None, spec, cb),
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

/// Where and how a media thread plays (see [`drive`]).
#[derive(Clone, Debug)]
pub struct OutputPlan {
    /// The output.
    pub kind: OutputKind,
    /// Its stream.
    pub spec: StreamSpec,
    /// A file's first frame's instant (see [`open`]).
    pub first_frame: Option<LocalTime>,
    /// How often the media thread tops the ring up (at most this long apart).
    pub tick: Duration,
    /// Wake once per device buffer, just after the device should have asked for one, rather
    /// than every tick (a sync stream with room in its ring: a fifth of the wake-ups).
    pub follow_callbacks: bool,
}

/// What happened to a [`drive`]n output's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Its stream stopped for good (why); it is being opened again.
    Stopped(String),
    /// It cannot be opened yet (why); tried every [`REOPEN_EVERY`], said once.
    CannotOpen(String),
    /// It plays again (its name).
    Reopened(String),
}

impl core::fmt::Display for DeviceEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceEvent::Stopped(why) => {
                write!(f, "audio device stopped ({why}): opening it again")
            }
            DeviceEvent::CannotOpen(why) => {
                write!(f, "audio device cannot be opened yet ({why}): trying every second")
            }
            DeviceEvent::Reopened(name) => write!(f, "audio device playing again: {name}"),
        }
    }
}

/// How often a dead device is tried again.
pub const REOPEN_EVERY: Nanos = Nanos::from_secs(1);

/// The media thread: opens `plan`'s output around `renderer` (the result goes to `opened`,
/// for the caller to return), then tops `engine`'s ring up every tick (after `each`, which
/// may change its program) until `stop`. When the
/// stream dies for good (the device was unplugged, the sound server restarted) it says so
/// through `say` ([`DeviceEvent`]), opens the device again (every [`REOPEN_EVERY`] until it can) with a fresh
/// real-time half, and says when it plays again: a player outlives its sound server.
pub fn drive<P: Program>(
    plan: &OutputPlan,
    mut engine: OutputEngine<P>,
    renderer: Renderer,
    stop: &AtomicBool,
    opened: &Sender<Result<(), AudioError>>,
    mut each: impl FnMut(&mut OutputEngine<P>),
    mut say: impl FnMut(DeviceEvent),
) {
    let callback = |mut r: Renderer| -> OutputCallback {
        Box::new(move |out, t| r.render(out, t.now, t.dac_time))
    };
    // Silence queued before the first callback (nothing says when the ring is heard yet).
    engine.fill(clock::now());
    let mut stream = match open(&plan.kind, &plan.spec, plan.first_frame, callback(renderer)) {
        Ok(s) => {
            let _ = opened.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let mut next_check = clock::now();
    while !stop.load(Ordering::Relaxed) {
        each(&mut engine);
        let now = clock::now();
        engine.fill(now);
        if now >= next_check {
            next_check = now + Nanos::from_millis(100);
            if let Some(why) = stream.failure() {
                say(DeviceEvent::Stopped(why));
                stream.stop();
                match reopen(plan, &mut engine, stop, &mut say, callback) {
                    Some(s) => stream = s,
                    None => return,
                }
            }
        }
        clock::sleep_until(next_wake(plan, &engine, clock::now()));
    }
    stream.stop();
}

/// When the media thread wakes next: a tick from `now`, or (following callbacks) 1 ms after
/// the device's next request is due, if that is later and no more than a device buffer away.
fn next_wake<P: Program>(plan: &OutputPlan, engine: &OutputEngine<P>, now: LocalTime) -> LocalTime {
    let tick = now + Nanos::from(plan.tick);
    if !plan.follow_callbacks {
        return tick;
    }
    let buffer = Nanos::from_frames(u64::from(plan.spec.buffer_frames), plan.spec.sample_rate);
    match engine.next_callback() {
        Some(due) => (due + Nanos::from_millis(1)).max(tick).min(now + buffer),
        None => tick,
    }
}

/// Opens `plan`'s output again until it opens (`None`: stopped first).
fn reopen<P: Program>(
    plan: &OutputPlan,
    engine: &mut OutputEngine<P>,
    stop: &AtomicBool,
    say: &mut impl FnMut(DeviceEvent),
    callback: impl Fn(Renderer) -> OutputCallback,
) -> Option<Box<dyn ActiveStream>> {
    let mut said = false;
    loop {
        let renderer = engine.reattach();
        engine.fill(clock::now());
        match open(&plan.kind, &plan.spec, None, callback(renderer)) {
            Ok(s) => {
                say(DeviceEvent::Reopened(s.device_name()));
                return Some(s);
            }
            Err(e) if !said => {
                say(DeviceEvent::CannotOpen(e.to_string()));
                said = true;
            }
            Err(_) => {}
        }
        let until = clock::now() + REOPEN_EVERY;
        while clock::now() < until {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
