//! Sources: files of every common format decode to the right tone, length and rate (converted
//! to 48 kHz), tags come through, raw PCM reads back, and capture delivers timed audio.
//!
//! Test files are made by `sox` (Debian: `sox libsox-fmt-all`, installed by `.ci/run`);
//! without it the file cases fail under `CI` and are skipped otherwise.

use std::path::PathBuf;
use std::process::Command;

use tutti_audio::backend::StreamSpec;
use tutti_audio::backend::null::NullBackend;
use tutti_audio::capture::CaptureSource;
use tutti_audio::source::{Converted, FileSource, RawPcm, Source, Tone};
use tutti_proto::Codec;

fn tone_frequency(samples: &[f32], channels: usize, rate: u32) -> f64 {
    // Zero crossings of the left channel.
    let left: Vec<f32> = samples.iter().step_by(channels).copied().collect();
    let crossings = left.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
    crossings as f64 * f64::from(rate) / left.len() as f64
}

fn read_all(s: &mut dyn Source) -> Vec<f32> {
    let mut out = Vec::new();
    while s.read(&mut out, 4096).expect("decodes") > 0 {}
    out
}

fn sox_available() -> bool {
    let ok = Command::new("sox").arg("--version").output().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI must install sox (.ci/packages.sh)");
        eprintln!("skipped: sox is not installed (apt-get install sox libsox-fmt-all)");
    }
    ok
}

#[test]
fn wav_flac_mp3_and_vorbis_decode_and_convert_to_48k() {
    if !sox_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tutti-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for ext in ["wav", "flac", "mp3", "ogg"] {
        let path: PathBuf = dir.join(format!("tone.{ext}"));
        let status = Command::new("sox")
            .args(["-n", "-r", "44100", "-c", "2"])
            .args(["--comment", "TITLE=Kitchen test"])
            .arg(&path)
            .args(["synth", "2", "sine", "1000", "vol", "0.5"])
            .status()
            .unwrap();
        assert!(status.success(), "sox writes {ext}");
        let file = FileSource::open(&path).unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(file.sample_rate(), 44_100, "{ext}");
        assert_eq!(file.channels(), 2, "{ext}");
        if ext == "flac" || ext == "ogg" {
            assert_eq!(file.metadata().title.as_deref(), Some("Kitchen test"), "{ext} tags");
        }
        let mut conv = Converted::new(file, 48_000, 2).unwrap();
        let pcm = read_all(&mut conv);
        let frames = pcm.len() / 2;
        // Two seconds, give or take codec padding.
        assert!((94_000..=98_500).contains(&frames), "{ext}: {frames} frames");
        let f = tone_frequency(&pcm[9_600..pcm.len() - 9_600], 2, 48_000);
        assert!((f - 1000.0).abs() < 5.0, "{ext}: {f} Hz");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let e = FileSource::open(std::path::Path::new("/nonexistent/song.flac"))
        .err()
        .expect("missing file");
    assert!(e.to_string().contains("/nonexistent/song.flac"), "{e}");
    let junk = std::env::temp_dir().join(format!("tutti-junk-{}.mp3", std::process::id()));
    std::fs::write(&junk, b"this is not audio at all, not even a little").unwrap();
    let e = FileSource::open(&junk).err().expect("junk file");
    assert!(e.to_string().contains("cannot decode"), "{e}");
    let _ = std::fs::remove_file(junk);
}

#[test]
fn raw_pcm_from_a_reader_and_mono_upmix() {
    let samples: Vec<i16> = (0..4800).map(|i| (i * 7 % 3000) as i16).collect();
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let raw = RawPcm::new(std::io::Cursor::new(bytes), Codec::Pcm16, 48_000, 1).unwrap();
    let mut conv = Converted::new(raw, 48_000, 2).unwrap();
    let out = read_all(&mut conv);
    assert_eq!(out.len(), 9600);
    assert_eq!(out[200], out[201], "mono duplicated to both channels");
    assert!((out[200] - f32::from(samples[100]) / 32768.0).abs() < 1e-6);
    assert!(RawPcm::new(std::io::empty(), Codec::Opus, 48_000, 2).is_err());
    let mut t = Tone::new(48_000, 1, 440.0, 0.3).with_limit(1000);
    assert_eq!(read_all(&mut t).len(), 1000);
}

#[test]
fn capture_delivers_audio_with_capture_instants() {
    let spec = StreamSpec::new(48_000, 2, 240);
    let (mut cap, _stream) = CaptureSource::open(&NullBackend, None, &spec).unwrap();
    let mut out = Vec::new();
    let t0 = cap.next_capture_time();
    cap.read(&mut out, 4_800).unwrap();
    let t1 = cap.next_capture_time().expect("stamped");
    assert_eq!(out.len(), 9_600);
    if let Some(t0) = t0 {
        let d = (t1 - t0).as_millis_f64();
        assert!((d - 100.0).abs() < 6.0, "100 ms of frames span {d} ms of capture time");
    }
    let now = tutti_audio::clock::now();
    assert!(t1 <= now && (now - t1).as_millis_f64() < 100.0);
    assert_eq!(cap.overruns(), 0);
}
