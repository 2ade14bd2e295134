//! Decoded audio waiting to be resampled, keyed by media position.

use std::collections::VecDeque;

/// Interleaved `f32` frames for media positions `start .. start + len`, in a ring allocated
/// once (pushes within capacity never allocate).
#[derive(Debug)]
pub struct PcmBuffer {
    channels: usize,
    start: u64,
    data: VecDeque<f32>,
    capacity_frames: usize,
}

impl PcmBuffer {
    /// A buffer holding up to `capacity_frames` frames of `channels` channels.
    pub fn new(channels: usize, capacity_frames: usize) -> Self {
        PcmBuffer {
            channels: channels.max(1),
            start: 0,
            data: VecDeque::with_capacity(capacity_frames * channels.max(1)),
            capacity_frames,
        }
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.channels
    }
    /// First media position held.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// One past the last media position held.
    pub fn end(&self) -> u64 {
        self.start + (self.data.len() / self.channels) as u64
    }
    /// Frames held.
    pub fn frames(&self) -> usize {
        self.data.len() / self.channels
    }
    /// Empties the buffer; the next push starts it anywhere.
    pub fn clear(&mut self) {
        self.data.clear();
    }

    /// Appends frames starting at media position `at`. A gap after the current end is filled
    /// with silence; data that overlaps what is held, or a jump backwards, restarts the buffer.
    pub fn push(&mut self, at: u64, samples: &[f32]) {
        let frames = samples.len() / self.channels;
        if self.data.is_empty() || at < self.end() || at > self.end() + self.capacity_frames as u64
        {
            self.data.clear();
            self.start = at;
        } else if at > self.end() {
            let gap = ((at - self.end()) as usize) * self.channels;
            self.data.extend(std::iter::repeat_n(0.0, gap));
        }
        self.data.extend(&samples[..frames * self.channels]);
        let excess = self.frames().saturating_sub(self.capacity_frames);
        if excess > 0 {
            self.drop_before(self.start + excess as u64);
        }
    }

    /// Forgets frames before media position `pos`.
    pub fn drop_before(&mut self, pos: u64) {
        if pos <= self.start {
            return;
        }
        let n = ((pos - self.start) as usize).min(self.frames());
        self.data.drain(..n * self.channels);
        self.start += n as u64;
        if self.data.is_empty() {
            self.start = pos;
        }
    }

    /// Copies frames `pos .. pos + frames` into per-channel buffers (appending), with silence
    /// where nothing is held. Returns how many frames were missing.
    pub fn read_planar(&self, pos: i64, frames: usize, out: &mut [Vec<f32>]) -> usize {
        let ch = self.channels;
        let start = self.start as i64;
        let end = self.end() as i64;
        // Silence before what is held, the held part, silence after.
        let lead = (start - pos).clamp(0, frames as i64) as usize;
        let held_from = pos.max(start);
        let held_to = (pos + frames as i64).min(end);
        let held = (held_to - held_from).max(0) as usize;
        let tail = frames - lead - held;
        for o in out.iter_mut().take(ch) {
            o.extend(std::iter::repeat_n(0.0, lead));
        }
        if held > 0 {
            let first = (held_from - start) as usize * ch;
            let (a, b) = self.data.as_slices();
            let mut copy = |slice: &[f32]| {
                for frame in slice.chunks_exact(ch) {
                    for (o, v) in out.iter_mut().zip(frame) {
                        o.push(*v);
                    }
                }
            };
            let len = held * ch;
            if first < a.len() {
                let end_a = (first + len).min(a.len());
                copy(&a[first..end_a]);
                copy(&b[..len - (end_a - first)]);
            } else {
                let off = first - a.len();
                copy(&b[off..off + len]);
            }
        }
        for o in out.iter_mut().take(ch) {
            o.extend(std::iter::repeat_n(0.0, tail));
        }
        lead + tail
    }
}

impl PcmBuffer {
    /// Copies frames `pos .. pos + frames` into interleaved `out` (whole frames), with silence
    /// where nothing is held. Returns how many frames were missing.
    pub fn read_interleaved(&self, pos: i64, out: &mut [f32]) -> usize {
        let ch = self.channels;
        let frames = out.len() / ch;
        let mut missing = 0;
        for (i, frame) in out.chunks_exact_mut(ch).enumerate().take(frames) {
            let p = pos + i as i64;
            if p >= self.start as i64 && (p as u64) < self.end() {
                let base = (p as u64 - self.start) as usize * ch;
                for (c, v) in frame.iter_mut().enumerate() {
                    *v = self.data[base + c];
                }
            } else {
                missing += 1;
                frame.fill(0.0);
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_read_drop_and_gaps() {
        let mut b = PcmBuffer::new(2, 100);
        b.push(10, &[1.0, 1.0, 2.0, 2.0]);
        b.push(14, &[4.0, 4.0]);
        assert_eq!((b.start(), b.end()), (10, 15));
        let mut out = vec![Vec::new(), Vec::new()];
        let missing = b.read_planar(9, 7, &mut out);
        assert_eq!(out[0], [0.0, 1.0, 2.0, 0.0, 0.0, 4.0, 0.0]);
        assert_eq!(missing, 2, "position 9 and 15; the gap 12..14 was filled with silence");
        b.drop_before(12);
        assert_eq!(b.start(), 12);
        b.push(5, &[9.0, 9.0]);
        assert_eq!((b.start(), b.end()), (5, 6), "a jump back restarts");
    }
}
