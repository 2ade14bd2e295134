//! The real-time rules, checked: the device callback path never allocates, and neither does
//! the media thread once warmed up (an allocation-counting global allocator watches).

use tutti_audio::backend::fake::{FakeDac, SampleClock};
use tutti_audio::engine::{EngineConfig, Program, Voice, output};
use tutti_audio::mixer::Mixer;
use tutti_audio::ramp::SharedGain;
use tutti_audio::source::Tone;
use tutti_audio::timeline::LocalTimeline;
use tutti_proto::{LocalTime, Nanos};

#[test]
fn callback_and_warm_media_path_do_not_allocate() {
    let t0 = LocalTime(5_000_000_000);
    let clock = SampleClock { start: t0, rate: 48_000, ppm: -120.0 };
    let mut dac = FakeDac::new(clock, 2, 128, Nanos::from_micros(10));
    let mut mixer = Mixer::new(2, 48_000, 256);
    for f in [220.0, 330.0, 440.0] {
        let tl = LocalTimeline::new(Tone::new(48_000, 2, f, 0.2), Some(t0));
        mixer.add(Box::new(Voice::new(tl, 2, 48_000, 48_000)) as Box<dyn Program>);
    }
    let gain = SharedGain::new();
    let (mut engine, mut renderer, _) = output(
        mixer,
        EngineConfig {
            device_rate: 48_000,
            channels: 2,
            block: 128,
            lookahead: 256,
            max_lookahead: 256,
        },
        gain.clone(),
    );
    let step = |engine: &mut tutti_audio::engine::OutputEngine<Mixer>,
                renderer: &mut tutti_audio::engine::Renderer,
                dac: &mut FakeDac| {
        let now = dac.next_callback();
        engine.fill(now);
        dac.tick(&mut |out, t| renderer.render(out, t.now, t.dac_time));
    };
    // Warm up: buffers reach their working sizes.
    for _ in 0..2_000 {
        step(&mut engine, &mut renderer, &mut dac);
    }
    // The callback alone, with a volume change in flight (ramps run), until the ring runs dry
    // and it plays silence.
    engine.fill(dac.next_callback());
    gain.set_volume_percent(40.0);
    let cb = allocation_counter::measure(|| {
        for _ in 0..20 {
            dac.tick(&mut |out, t| renderer.render(out, t.now, t.dac_time));
        }
    });
    assert_eq!(cb.count_total, 0, "the real-time callback allocated: {cb:?}");
    // Recover from that underrun (the media thread may allocate when it restarts a stream),
    // then the whole path, media thread included, for 10 more seconds of steady playout.
    for _ in 0..2_000 {
        step(&mut engine, &mut renderer, &mut dac);
    }
    let all = allocation_counter::measure(|| {
        for _ in 0..3_750 {
            step(&mut engine, &mut renderer, &mut dac);
        }
    });
    assert_eq!(all.count_total, 0, "the warm media path allocated: {all:?}");
}
