//! A device whose sound goes to someone else: paced by the local clock as a sound card would
//! be, it hands every buffer it is given, with the local instant its first frame must be
//! heard, to a [`TapReader`] (the hub relays them to browsers, which play them on their own
//! clocks). Its DAC is `lead` ahead of the buffer it asks for: the time a block has to reach
//! its listener before it is due.
//!
//! The pacing thread never blocks and never allocates: buffers go through two lock-free rings,
//! and a reader that falls behind loses whole blocks (counted), never the pacing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rtrb::{Consumer, Producer, RingBuffer};
use tutti_proto::{LocalTime, Nanos};

use super::null::PacedStream;
use super::{
    ActiveStream, Backend, DeviceInfo, InputCallback, OutputCallback, OutputTiming, StreamSpec,
};
use crate::{AudioError, clock};

/// Samples the ring between the device and its reader holds (a second of stereo at 96 kHz,
/// two at 48 kHz).
pub const TAP_SAMPLES: usize = 192_000;
/// Blocks it holds.
pub const TAP_BLOCKS: usize = 1_024;

/// A block handed over: where its first frame is heard and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TapBlock {
    /// The local instant its first frame must be heard.
    pub dac_time: LocalTime,
    /// Its frames.
    pub frames: u32,
    /// Its sample rate.
    pub rate: u32,
    /// Its channels (interleaved).
    pub channels: u16,
}

/// The device end of a tap (cheap to clone: every clone is the same tap). Open it once: its
/// reader is the other end.
#[derive(Clone)]
pub struct Tap {
    shared: Arc<Shared>,
}

struct Shared {
    lead: AtomicI64,
    dropped: AtomicU64,
    ends: Mutex<Option<(Producer<f32>, Producer<TapBlock>)>>,
}

impl core::fmt::Debug for Tap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tap")
            .field("lead", &self.lead())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Tap {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Tap {}

/// The reading end of a [`Tap`].
pub struct TapReader {
    samples: Consumer<f32>,
    blocks: Consumer<TapBlock>,
}

impl core::fmt::Debug for TapReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TapReader").field("blocks", &self.blocks.slots()).finish_non_exhaustive()
    }
}

impl Tap {
    /// A tap and its reader.
    pub fn new() -> (Tap, TapReader) {
        let (samples, samples_rx) = RingBuffer::new(TAP_SAMPLES);
        let (blocks, blocks_rx) = RingBuffer::new(TAP_BLOCKS);
        let shared = Arc::new(Shared {
            lead: AtomicI64::new(0),
            dropped: AtomicU64::new(0),
            ends: Mutex::new(Some((samples, blocks))),
        });
        (Tap { shared }, TapReader { samples: samples_rx, blocks: blocks_rx })
    }

    /// How far its DAC is ahead of the buffer it asks for (set before it opens).
    pub fn set_lead(&self, lead: Nanos) {
        self.shared.lead.store(lead.0.max(0), Ordering::Relaxed);
    }

    /// Its lead.
    pub fn lead(&self) -> Nanos {
        Nanos(self.shared.lead.load(Ordering::Relaxed))
    }

    /// Blocks its reader did not take in time (lost).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl TapReader {
    /// The next block, its samples (interleaved) appended to `out`.
    pub fn read(&mut self, out: &mut Vec<f32>) -> Option<TapBlock> {
        let block = self.blocks.pop().ok()?;
        let n = block.frames as usize * usize::from(block.channels);
        if let Ok(chunk) = self.samples.read_chunk(n.min(self.samples.slots())) {
            let (a, b) = chunk.as_slices();
            out.extend_from_slice(a);
            out.extend_from_slice(b);
            chunk.commit_all();
        }
        Some(block)
    }
}

impl Backend for Tap {
    fn name(&self) -> String {
        "tap".into()
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>, AudioError> {
        Ok(vec![DeviceInfo {
            host: "tap".into(),
            name: "tap".into(),
            description: "Hands its audio to a reader (paced by the clock)".into(),
            output: true,
            input: false,
            default: false,
        }])
    }
    fn open_output(
        &self,
        _device: Option<&str>,
        spec: &StreamSpec,
        mut cb: OutputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        let ends = self.shared.ends.lock().ok().and_then(|mut e| e.take());
        let Some((mut samples, mut blocks)) = ends else {
            return Err(AudioError::Device("this tap is open already: make a new one".into()));
        };
        let mut buf = vec![0.0f32; spec.buffer_frames as usize * usize::from(spec.channels)];
        let period = spec.period();
        let lead = self.lead();
        let shared = self.shared.clone();
        let (frames, rate, channels) = (spec.buffer_frames, spec.sample_rate, spec.channels);
        let s = PacedStream::spawn("tap-out", *spec, move |_, due| {
            let dac_time = due + period + lead;
            cb(&mut buf, OutputTiming { now: clock::now(), dac_time });
            if samples.slots() < buf.len() || blocks.slots() == 0 {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Ok(mut chunk) = samples.write_chunk(buf.len()) {
                let (a, b) = chunk.as_mut_slices();
                let split = a.len();
                a.copy_from_slice(&buf[..split]);
                b.copy_from_slice(&buf[split..]);
                chunk.commit_all();
                let _ = blocks.push(TapBlock { dac_time, frames, rate, channels });
            }
        })?;
        Ok(Box::new(s))
    }
    fn open_input(
        &self,
        _device: Option<&str>,
        _spec: &StreamSpec,
        _cb: InputCallback,
    ) -> Result<Box<dyn ActiveStream>, AudioError> {
        Err(AudioError::Device("a tap plays; it records nothing".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_arrive_in_order_with_their_dac_instants_a_lead_ahead() {
        let (tap, mut reader) = Tap::new();
        tap.set_lead(Nanos::from_millis(30));
        let spec = StreamSpec::new(48_000, 2, 480);
        let mut n = 0.0f32;
        let cb: OutputCallback = Box::new(move |out, _| {
            for s in out.iter_mut() {
                *s = n;
                n += 1.0;
            }
        });
        let started = clock::now();
        let mut stream = tap.open_output(None, &spec, cb).expect("opens");
        assert!(tap.open_output(None, &spec, Box::new(|_, _| {})).is_err(), "one opening");
        std::thread::sleep(std::time::Duration::from_millis(100));
        stream.stop();
        let mut out = Vec::new();
        let mut last: Option<TapBlock> = None;
        let mut count = 0;
        while let Some(b) = reader.read(&mut out) {
            assert_eq!((b.frames, b.rate, b.channels), (480, 48_000, 2));
            match last {
                // Blocks follow each other exactly: the schedule is the clock's.
                Some(l) => assert_eq!(b.dac_time - l.dac_time, Nanos::from_millis(10)),
                None => {
                    let ahead = b.dac_time - started;
                    assert!(ahead >= Nanos::from_millis(40), "a buffer and the lead: {ahead:?}");
                }
            }
            last = Some(b);
            count += 1;
        }
        assert!(count >= 8, "{count} blocks in 100 ms");
        assert_eq!(out.len(), count * 960);
        assert!(out.iter().enumerate().all(|(i, &s)| s == i as f32), "every sample, in order");
        assert_eq!(tap.dropped(), 0);
    }
}
