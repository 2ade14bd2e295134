//! CPU cost of the audio path, per block, with throughput in frames per second:
//! `cargo bench -p tutti-audio`. A throughput of N frames/s at 48 kHz costs 48,000 / N of one
//! core (e.g. 9.6 M frames/s = 0.5 %).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tutti_audio::AudioError;
use tutti_audio::backend::fake::{FakeDac, SampleClock};
use tutti_audio::engine::{EngineConfig, Program, Voice, output};
use tutti_audio::format::{decode_pcm, encode_pcm};
use tutti_audio::mixer::Mixer;
use tutti_audio::opus::{FrameDuration, OpusDecoder, OpusEncoder};
use tutti_audio::pcm::PcmBuffer;
use tutti_audio::ramp::SharedGain;
use tutti_audio::resample::DriftFollower;
use tutti_audio::source::Source;
use tutti_audio::timeline::LocalTimeline;
use tutti_proto::playout::Render;
use tutti_proto::{Codec, LocalTime, Nanos};

/// A cheap source: a second of noise-like audio, looped (so the bench measures the engine,
/// not a signal generator). Decodes 16-bit PCM like a network stream would.
struct Looped {
    pcm16: Vec<u8>,
    pos: usize,
    channels: usize,
}

impl Looped {
    fn new(channels: usize) -> Self {
        let mut x = 1u32;
        let samples: Vec<f32> = (0..48_000 * channels)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 * 0.2 - 0.1
            })
            .collect();
        let mut pcm16 = Vec::new();
        encode_pcm(Codec::Pcm16, &samples, &mut pcm16);
        Looped { pcm16, pos: 0, channels }
    }
}

impl Source for Looped {
    fn sample_rate(&self) -> u32 {
        48_000
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn read(&mut self, out: &mut Vec<f32>, frames: usize) -> Result<usize, AudioError> {
        let bytes = frames * self.channels * 2;
        if self.pos + bytes > self.pcm16.len() {
            self.pos = 0;
        }
        decode_pcm(Codec::Pcm16, &self.pcm16[self.pos..self.pos + bytes], out);
        self.pos += bytes;
        Ok(frames)
    }
}

const BLOCK: usize = 128;

/// An input whose audio is already decoded and resampled: a looped second of noise.
struct Ready {
    samples: Vec<f32>,
    pos: usize,
}

impl Ready {
    fn new(seed: u32) -> Self {
        let mut x = seed.wrapping_add(1);
        let samples = (0..48_000 * 2)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 * 0.1 - 0.05
            })
            .collect();
        Ready { samples, pos: 0 }
    }
}

impl Program for Ready {
    fn render(&mut self, _: LocalTime, _: LocalTime, out: &mut [f32]) -> bool {
        if self.pos + out.len() > self.samples.len() {
            self.pos = 0;
        }
        out.copy_from_slice(&self.samples[self.pos..self.pos + out.len()]);
        self.pos += out.len();
        true
    }
}

fn run_engine<P: Program>(program: P, channels: usize) -> impl FnMut() {
    let t0 = LocalTime(1_000_000_000);
    let mut dac = FakeDac::new(
        SampleClock { start: t0, rate: 48_000, ppm: 40.0 },
        channels,
        BLOCK as u32,
        Nanos::from_micros(5),
    );
    let cfg = EngineConfig {
        device_rate: 48_000,
        channels,
        block: BLOCK,
        lookahead: 2 * BLOCK,
        max_lookahead: 2 * BLOCK,
    };
    let (mut engine, mut renderer, _) = output(program, cfg, SharedGain::new());
    for _ in 0..2_000 {
        engine.fill(dac.next_callback());
        dac.tick(&mut |o, t| renderer.render(o, t.now, t.dac_time));
    }
    move || {
        engine.fill(dac.next_callback());
        dac.tick(&mut |o, t| renderer.render(o, t.now, t.dac_time));
    }
}

fn voice(channels: usize) -> Voice<LocalTimeline<Looped>> {
    Voice::new(
        LocalTimeline::new(Looped::new(channels), Some(LocalTime(1_000_000_000))),
        channels,
        48_000,
        48_000,
    )
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("playout");
    g.throughput(Throughput::Elements(BLOCK as u64));
    let mut one = run_engine(voice(2), 2);
    g.bench_function("player_full_path_pcm16_stereo", |b| b.iter(&mut one));
    let mut mixer = Mixer::new(2, 48_000, BLOCK);
    for _ in 0..16 {
        mixer.add(Box::new(voice(2)));
    }
    let mut mix = run_engine(mixer, 2);
    g.bench_function("mix_16_inputs_stereo", |b| b.iter(&mut mix));
    let mut mixer = Mixer::new(2, 48_000, BLOCK);
    for i in 0..16 {
        let (_, c) = mixer.add_mono(Box::new(voice(1)));
        c.set_pan(i as f32 / 7.5 - 1.0);
    }
    let mut mix = run_engine(mixer, 2);
    g.bench_function("mix_16_mono_mics_to_stereo", |b| b.iter(&mut mix));
    // The mix alone: 16 already-resampled inputs (gain, pan, ramps, meters, limiter, ring,
    // callback), without per-input decoding and drift resampling.
    let mut mixer = Mixer::new(2, 48_000, BLOCK);
    for i in 0..16 {
        let (_, c) = mixer.add(Box::new(Ready::new(i)));
        c.set_pan(i as f32 / 7.5 - 1.0);
    }
    let mut mix = run_engine(mixer, 2);
    g.bench_function("mix_16_ready_inputs_stereo", |b| b.iter(&mut mix));
    g.finish();

    let mut g = c.benchmark_group("resampler");
    g.throughput(Throughput::Elements(BLOCK as u64));
    let mut pcm = PcmBuffer::new(2, 1 << 20);
    let mut src = Looped::new(2);
    let mut tmp = Vec::new();
    src.read(&mut tmp, 48_000).expect("looped source reads");
    pcm.push(0, &tmp);
    let mut f = DriftFollower::new(2, 1.0);
    let mut out = vec![0.0f32; BLOCK * 2];
    let mut pos = 100.0;
    g.bench_function("drift_follower_stereo_block", |b| {
        b.iter(|| {
            let plan =
                Render { position: pos, step: 1.000_123, resynced: false, error_frames: 0.0 };
            f.render(black_box(&plan), &pcm, &mut out);
            pos += 1.000_123 * BLOCK as f64;
            if pos > 40_000.0 {
                pos = 100.0;
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("opus");
    for (name, fd) in [("2.5ms", FrameDuration::Ms2_5), ("20ms", FrameDuration::Ms20)] {
        let n = fd.frames();
        g.throughput(Throughput::Elements(n as u64));
        let mut enc =
            OpusEncoder::new(2, fd, 128_000, fd == FrameDuration::Ms2_5, 5).expect("encoder");
        let mut dec = OpusDecoder::new(2).expect("decoder");
        let mut srcv = Vec::new();
        Looped::new(2).read(&mut srcv, n).expect("reads");
        let mut packet = [0u8; 1500];
        g.bench_function(format!("encode_{name}_stereo"), |b| {
            b.iter(|| enc.encode(black_box(&srcv), &mut packet).expect("encodes"))
        });
        let len = enc.encode(&srcv, &mut packet).expect("encodes");
        let mut pcm_out = vec![0.0f32; n * 2];
        g.bench_function(format!("decode_{name}_stereo"), |b| {
            b.iter(|| dec.decode(black_box(&packet[..len]), &mut pcm_out).expect("decodes"))
        });
    }
    g.finish();
}

criterion_group! {
    name = audio;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = benches
}
criterion_main!(audio);
