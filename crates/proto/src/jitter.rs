//! The jitter buffer: audio packets keyed by sequence number (and so by media time), with
//! the state of every gap for loss recovery.
//!
//! A fixed ring of slots, allocated once (payload buffers included): inserting and reading
//! never allocate. Slots between the playout cursor and the highest packet received are
//! either present or *missing*; missing slots carry their NACK schedule.

use crate::time::{LocalTime, MediaTime, SeqNo, StreamTime};
use crate::wire::{AudioFrame, Codec, MAX_PAYLOAD};

/// How a packet reached the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Its first transmission.
    Original,
    /// A retransmission answering a NACK.
    Retransmit,
    /// Rebuilt from FEC repair shards.
    Fec,
}

/// What an insert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new packet, in order or after a gap (`gap` packets newly found missing).
    New {
        /// Packets newly marked missing before this one.
        gap: u64,
    },
    /// It filled a gap.
    FilledGap,
    /// Already held.
    Duplicate,
    /// Its slot was already played out.
    Late,
    /// So far ahead of the playout cursor that the buffer restarted at it.
    Restarted,
}

impl Inserted {
    /// The packet is now held (to be played).
    pub fn stored(self) -> bool {
        matches!(self, Inserted::New { .. } | Inserted::FilledGap | Inserted::Restarted)
    }
}

/// A slot's loss-recovery state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing {
    /// When the gap was noticed.
    pub since: LocalTime,
    /// When to NACK next.
    pub next_nack: LocalTime,
    /// NACKs sent so far.
    pub nacks: u32,
}

#[derive(Debug)]
enum State {
    Empty,
    Missing(Missing),
    Present { origin: Origin },
}

#[derive(Debug)]
struct Slot {
    seq: SeqNo,
    state: State,
    media: MediaTime,
    presentation: StreamTime,
    codec: Codec,
    channels: u8,
    frames: u16,
    payload: Vec<u8>,
}

impl Slot {
    /// The packet held in this slot.
    fn frame(&self, stream_id: u32) -> AudioFrame<'_> {
        AudioFrame {
            stream_id,
            seq: self.seq,
            media: self.media,
            presentation: self.presentation,
            sent: StreamTime(0),
            codec: self.codec,
            channels: self.channels,
            frames: self.frames,
            retransmit: false,
            payload: &self.payload,
        }
    }
}

/// The next thing to play, in sequence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// A packet to decode.
    Frame(AudioFrame<'a>),
    /// A packet that did not arrive in time: conceal `frames` frames at `media`.
    Missing {
        /// Its sequence number.
        seq: SeqNo,
        /// Media time it would have started at.
        media: MediaTime,
        /// Frames to conceal.
        frames: u16,
        /// Nothing at or after it had arrived: the stream stalled (paused, ended, or the
        /// network is down) rather than lost a packet.
        stalled: bool,
    },
}

/// Ring of packet slots (see the module docs).
#[derive(Debug)]
pub struct JitterBuffer {
    slots: Vec<Slot>,
    /// Next sequence number to hand to playout.
    next_out: Option<SeqNo>,
    /// One past the highest sequence number held or known missing.
    end: SeqNo,
    stream_id: u32,
    frames_per_packet: u16,
    closed: bool,
    lookback: u64,
}

impl JitterBuffer {
    /// A buffer of `capacity` packets for a stream of `frames_per_packet`-frame packets.
    pub fn new(capacity: usize, stream_id: u32, frames_per_packet: u16) -> Self {
        JitterBuffer {
            slots: (0..capacity.max(8))
                .map(|_| Slot {
                    seq: SeqNo(u64::MAX),
                    state: State::Empty,
                    media: MediaTime(0),
                    presentation: StreamTime(0),
                    codec: Codec::Pcm16,
                    channels: 0,
                    frames: 0,
                    payload: Vec::with_capacity(MAX_PAYLOAD),
                })
                .collect(),
            next_out: None,
            end: SeqNo(0),
            stream_id,
            frames_per_packet,
            closed: false,
            lookback: 0,
        }
    }

    /// Empties the buffer (new stream or a jump).
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.state = State::Empty;
            s.seq = SeqNo(u64::MAX);
        }
        self.next_out = None;
        self.end = SeqNo(0);
        self.closed = false;
    }

    /// Empties the buffer for a new stream of `frames_per_packet`-frame packets, keeping its
    /// slots (and their payload buffers): nothing is allocated.
    pub fn reset_for(&mut self, stream_id: u32, frames_per_packet: u16) {
        self.clear();
        self.stream_id = stream_id;
        self.frames_per_packet = frames_per_packet;
        self.lookback = 0;
    }

    /// Moves the playout cursor to `to` as if every packet before it had been played or
    /// skipped (a cursor behind it stays where it is): the network half of a player follows
    /// its playout half this way.
    pub fn advance_to(&mut self, to: SeqNo) {
        let Some(n) = self.next_out else { return };
        if to <= n {
            return;
        }
        let len = self.slots.len() as u64;
        for s in n.0..to.0.min(n.0 + len) {
            let i = self.index(SeqNo(s));
            self.slots[i].state = State::Empty;
        }
        self.next_out = Some(to);
        if self.end < to {
            self.end = to;
        }
    }

    /// When the first packet arrives, also wait for (and so NACK) the `packets` before it: if
    /// the stream's first packets were lost, or a player joins mid-stream, those still due can
    /// be recovered.
    pub fn set_lookback(&mut self, packets: u64) {
        self.lookback = packets.min(self.slots.len() as u64 / 2);
    }

    /// The source ended the stream: nothing comes after the packets held.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Closed, and everything held was played.
    pub fn drained(&self) -> bool {
        self.closed && self.next_out.is_none_or(|n| n >= self.end)
    }

    /// Capacity in packets.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The next sequence number playout will take.
    pub fn next_out(&self) -> Option<SeqNo> {
        self.next_out
    }

    /// Packets (present or missing) from the playout cursor to the highest received.
    pub fn depth(&self) -> u64 {
        self.next_out.map_or(0, |n| self.end.0.saturating_sub(n.0))
    }

    fn index(&self, seq: SeqNo) -> usize {
        (seq.0 % self.slots.len() as u64) as usize
    }

    /// Media time of `seq` (extrapolated for missing packets).
    pub fn media_of(&self, seq: SeqNo) -> MediaTime {
        MediaTime(seq.0 * u64::from(self.frames_per_packet))
    }

    /// Stores a packet.
    pub fn insert(
        &mut self,
        now: LocalTime,
        frame: &AudioFrame<'_>,
        origin: Origin,
        first_nack: LocalTime,
    ) -> Inserted {
        let seq = frame.seq;
        let cap = self.slots.len() as u64;
        let mut result = Inserted::New { gap: 0 };
        match self.next_out {
            None => {
                let from = SeqNo(seq.0.saturating_sub(self.lookback));
                self.next_out = Some(from);
                self.end = from;
            }
            Some(n) if seq < n => return Inserted::Late,
            Some(n) if seq.0 >= n.0 + cap => {
                // Far ahead (an outage, or the playout cursor stalled): start over here.
                self.clear();
                self.next_out = Some(seq);
                self.end = seq;
                result = Inserted::Restarted;
            }
            Some(_) => {}
        }
        if seq < self.end {
            let i = self.index(seq);
            let slot = &mut self.slots[i];
            match slot.state {
                State::Present { .. } if slot.seq == seq => return Inserted::Duplicate,
                _ => result = Inserted::FilledGap,
            }
        } else {
            let gap = seq.0 - self.end.0;
            for s in self.end.0..seq.0 {
                let i = self.index(SeqNo(s));
                let slot = &mut self.slots[i];
                slot.seq = SeqNo(s);
                slot.state =
                    State::Missing(Missing { since: now, next_nack: first_nack, nacks: 0 });
            }
            if result != Inserted::Restarted {
                result = Inserted::New { gap };
            }
            self.end = seq.next();
        }
        let i = self.index(seq);
        let slot = &mut self.slots[i];
        slot.seq = seq;
        slot.state = State::Present { origin };
        slot.media = frame.media;
        slot.presentation = frame.presentation;
        slot.codec = frame.codec;
        slot.channels = frame.channels;
        slot.frames = frame.frames;
        slot.payload.clear();
        slot.payload.extend_from_slice(frame.payload);
        result
    }

    /// The packet `seq` if held.
    pub fn get(&self, seq: SeqNo) -> Option<AudioFrame<'_>> {
        let slot = &self.slots[self.index(seq)];
        match slot.state {
            State::Present { .. } if slot.seq == seq => Some(slot.frame(self.stream_id)),
            _ => None,
        }
    }

    /// How `seq` arrived, if held.
    pub fn origin(&self, seq: SeqNo) -> Option<Origin> {
        let slot = &self.slots[self.index(seq)];
        match slot.state {
            State::Present { origin } if slot.seq == seq => Some(origin),
            _ => None,
        }
    }

    /// Missing slots between the cursor and the highest packet, with their recovery state.
    pub fn missing_mut(&mut self) -> impl Iterator<Item = (SeqNo, &mut Missing)> + '_ {
        let start = self.next_out.map_or(self.end.0, |n| n.0);
        let end = self.end.0;
        let len = self.slots.len() as u64;
        // Only the slots of start..end, in order (from the cursor's slot round the ring): a
        // walk of the whole ring on every timer was most of a player's NACK bookkeeping.
        let count = end.saturating_sub(start).min(len) as usize;
        let (before, from) = self.slots.split_at_mut((start % len) as usize);
        from.iter_mut().chain(before).take(count).filter_map(move |slot| match &mut slot.state {
            State::Missing(m) if slot.seq.0 >= start && slot.seq.0 < end.min(start + len) => {
                Some((slot.seq, m))
            }
            _ => None,
        })
    }

    /// The earliest pending NACK time among missing slots.
    pub fn next_nack(&self) -> Option<LocalTime> {
        let start = self.next_out?.0;
        (start..self.end.0)
            .filter_map(|s| match &self.slots[self.index(SeqNo(s))].state {
                State::Missing(m) => Some(m.next_nack),
                _ => None,
            })
            .min()
    }

    /// Presentation time of the packet at the cursor, if held.
    pub fn front_presentation(&self) -> Option<(SeqNo, StreamTime)> {
        let n = self.next_out?;
        self.get(n).map(|f| (n, f.presentation))
    }

    /// Drops every packet wholly before media time `media` without playing it; returns how
    /// many were dropped.
    pub fn skip_before(&mut self, media: MediaTime) -> u64 {
        let Some(mut n) = self.next_out else { return 0 };
        let mut dropped = 0;
        while n < self.end && self.media_of(n).0 + u64::from(self.frames_per_packet) <= media.0 {
            let i = self.index(n);
            self.slots[i].state = State::Empty;
            n = n.next();
            dropped += 1;
        }
        self.next_out = Some(n);
        dropped
    }

    /// The next packet to play if it starts before `until` (in media time): the packet, or a
    /// `Missing` for concealment if it has not arrived. The cursor then moves past it.
    pub fn pop(&mut self, until: MediaTime) -> Option<Playout<'_>> {
        let n = self.next_out?;
        let media = self.media_of(n);
        // A stream that said goodbye has nothing beyond its last packet to conceal.
        if media >= until || (self.closed && n >= self.end) {
            return None;
        }
        self.next_out = Some(n.next());
        let stalled = self.end <= n;
        if self.end <= n {
            self.end = n.next();
        }
        let i = self.index(n);
        let slot = &mut self.slots[i];
        let present = matches!(slot.state, State::Present { .. }) && slot.seq == n;
        slot.state = State::Empty;
        if present {
            Some(Playout::Frame(slot.frame(self.stream_id)))
        } else {
            Some(Playout::Missing { seq: n, media, frames: self.frames_per_packet, stalled })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: &[u8]) -> AudioFrame<'_> {
        AudioFrame {
            stream_id: 9,
            seq: SeqNo(seq),
            media: MediaTime(seq * 4),
            presentation: StreamTime(seq * 100),
            sent: StreamTime(0),
            codec: Codec::Pcm16,
            channels: 1,
            frames: 4,
            retransmit: false,
            payload,
        }
    }

    #[test]
    fn gaps_become_missing_and_fill_in() {
        let mut jb = JitterBuffer::new(16, 9, 4);
        let t = LocalTime(0);
        let p = [0u8; 8];
        assert_eq!(jb.insert(t, &frame(10, &p), Origin::Original, t), Inserted::New { gap: 0 });
        assert_eq!(jb.insert(t, &frame(13, &p), Origin::Original, t), Inserted::New { gap: 2 });
        assert_eq!(jb.missing_mut().map(|(s, _)| s.0).collect::<Vec<_>>(), vec![11, 12]);
        assert_eq!(jb.insert(t, &frame(12, &p), Origin::Retransmit, t), Inserted::FilledGap);
        assert_eq!(jb.insert(t, &frame(12, &p), Origin::Original, t), Inserted::Duplicate);
        assert_eq!(jb.origin(SeqNo(12)), Some(Origin::Retransmit));
        assert!(matches!(jb.pop(MediaTime(100)), Some(Playout::Frame(f)) if f.seq == SeqNo(10)));
        assert_eq!(
            jb.pop(MediaTime(100)),
            Some(Playout::Missing {
                seq: SeqNo(11),
                media: MediaTime(44),
                frames: 4,
                stalled: false
            })
        );
        assert!(matches!(jb.pop(MediaTime(100)), Some(Playout::Frame(f)) if f.seq == SeqNo(12)));
        assert_eq!(jb.pop(MediaTime(52)), None, "13 starts at media 52");
        assert_eq!(jb.insert(t, &frame(11, &p), Origin::Original, t), Inserted::Late);
    }

    #[test]
    fn advancing_the_cursor_is_playing_what_lies_before_it() {
        let p = [0u8; 8];
        let t = LocalTime(0);
        let (mut played, mut followed) = (JitterBuffer::new(16, 9, 4), JitterBuffer::new(16, 9, 4));
        for jb in [&mut played, &mut followed] {
            jb.insert(t, &frame(10, &p), Origin::Original, t);
            jb.insert(t, &frame(12, &p), Origin::Original, t);
        }
        // Played through the gap at 11, the packet at 12, and a stall at 13 and 14.
        while played.pop(MediaTime(15 * 4)).is_some() {}
        followed.advance_to(played.next_out().unwrap());
        assert_eq!(followed.next_out(), Some(SeqNo(15)));
        assert_eq!(followed.depth(), played.depth());
        assert_eq!(followed.get(SeqNo(12)), None, "played packets leave");
        assert_eq!(followed.insert(t, &frame(11, &p), Origin::Original, t), Inserted::Late);
        assert_eq!(
            followed.insert(t, &frame(16, &p), Origin::Original, t),
            played.insert(t, &frame(16, &p), Origin::Original, t)
        );
        followed.advance_to(SeqNo(3));
        assert_eq!(followed.next_out(), Some(SeqNo(15)), "a cursor never moves back");
        followed.reset_for(2, 8);
        assert_eq!((followed.next_out(), followed.media_of(SeqNo(2))), (None, MediaTime(16)));
    }

    #[test]
    fn far_ahead_packet_restarts_and_skip_drops_old_ones() {
        let mut jb = JitterBuffer::new(8, 9, 4);
        let t = LocalTime(0);
        let p = [0u8; 8];
        jb.insert(t, &frame(1, &p), Origin::Original, t);
        jb.insert(t, &frame(2, &p), Origin::Original, t);
        assert_eq!(jb.insert(t, &frame(100, &p), Origin::Original, t), Inserted::Restarted);
        assert_eq!(jb.next_out(), Some(SeqNo(100)));
        for s in 101..105 {
            jb.insert(t, &frame(s, &p), Origin::Original, t);
        }
        assert_eq!(jb.skip_before(MediaTime(103 * 4 + 1)), 3);
        assert!(matches!(jb.pop(MediaTime(1000)), Some(Playout::Frame(f)) if f.seq == SeqNo(103)));
    }
}
