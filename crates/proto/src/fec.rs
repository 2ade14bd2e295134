//! Forward error correction: Reed–Solomon repair shards over blocks of audio packets.
//!
//! The source groups every `data` consecutive audio packets (sequence numbers
//! `block .. block + data`, with `block` a multiple of `data`) and sends `repair` shards
//! computed over them. Each data shard is the packet's [`SHARD_HEADER`] (media time,
//! presentation time, frames, codec, channels, payload length) followed by its payload, padded
//! with zeros to the block's shard length (the longest, rounded up to even). Any `data` of the
//! `data + repair` shards rebuild every missing packet of the block, header included.
//!
//! The erasure code is `reed-solomon-simd` (O(n log n) Leopard-style GF(2^16) codes).

use std::collections::VecDeque;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::time::{MediaTime, SeqNo, StreamTime};
use crate::wire::{AudioFrame, Codec, Repair};

/// Bytes of frame metadata at the start of every shard.
pub const SHARD_HEADER: usize = 22;

/// Length of the shard for a payload of `payload_len` bytes (before block padding).
pub fn shard_len(payload_len: usize) -> usize {
    (SHARD_HEADER + payload_len).next_multiple_of(2)
}

/// Writes `frame` as a data shard of `len` bytes into `out` (cleared first).
pub fn write_shard(frame: &AudioFrame<'_>, len: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&frame.media.0.to_le_bytes());
    out.extend_from_slice(&frame.presentation.0.to_le_bytes());
    out.extend_from_slice(&frame.frames.to_le_bytes());
    out.push(frame.codec as u8);
    out.push(frame.channels);
    out.extend_from_slice(&(frame.payload.len() as u16).to_le_bytes());
    out.extend_from_slice(frame.payload);
    out.resize(len.max(out.len()), 0);
}

/// Reads a (possibly rebuilt) data shard back into a frame. `None` if the shard is inconsistent
/// (which, after authenticated transport, only a source bug could cause).
pub fn read_shard(stream_id: u32, seq: SeqNo, shard: &[u8]) -> Option<AudioFrame<'_>> {
    if shard.len() < SHARD_HEADER {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(shard[i..i + 8].try_into().expect("8 bytes"));
    let u16_at = |i: usize| u16::from_le_bytes(shard[i..i + 2].try_into().expect("2 bytes"));
    let len = u16_at(20) as usize;
    let codec = match shard[18] {
        1 => Codec::Pcm16,
        2 => Codec::Pcm24,
        3 => Codec::PcmF32,
        4 => Codec::Opus,
        _ => return None,
    };
    let payload = shard.get(SHARD_HEADER..SHARD_HEADER + len)?;
    Some(AudioFrame {
        stream_id,
        seq,
        media: MediaTime(u64_at(0)),
        presentation: StreamTime(u64_at(8)),
        sent: StreamTime(0),
        codec,
        channels: shard[19],
        frames: u16_at(16),
        retransmit: false,
        payload,
    })
}

/// The first sequence number of the block containing `seq`.
pub fn block_of(seq: SeqNo, data: u8) -> SeqNo {
    let d = u64::from(data.max(1));
    SeqNo(seq.0 - seq.0 % d)
}

/// Source side: accumulates a block of packets and computes its repair shards.
pub struct FecEncoder {
    data: u8,
    repair: u8,
    block: Option<SeqNo>,
    frames: Vec<Vec<u8>>,
    lens: Vec<usize>,
    repairs: Vec<Vec<u8>>,
    encoder: Option<ReedSolomonEncoder>,
}

impl core::fmt::Debug for FecEncoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FecEncoder")
            .field("data", &self.data)
            .field("repair", &self.repair)
            .finish()
    }
}

impl FecEncoder {
    /// An encoder for blocks of `data` packets protected by `repair` shards.
    pub fn new(data: u8, repair: u8) -> Self {
        FecEncoder {
            data: data.max(1),
            repair: repair.max(1),
            block: None,
            frames: (0..data.max(1)).map(|_| Vec::with_capacity(1200)).collect(),
            lens: Vec::with_capacity(data as usize),
            repairs: Vec::new(),
            encoder: None,
        }
    }

    /// Data packets per block.
    pub fn data(&self) -> u8 {
        self.data
    }
    /// Repair shards per block.
    pub fn repair(&self) -> u8 {
        self.repair
    }

    /// Adds the next audio packet. When it completes a block, returns the block's first
    /// sequence number; its repair shards are then available from [`Self::repair_shard`].
    pub fn push(&mut self, frame: &AudioFrame<'_>) -> Option<SeqNo> {
        let block = block_of(frame.seq, self.data);
        let index = (frame.seq.0 - block.0) as usize;
        if self.block != Some(block) || index != self.lens.len() {
            // A new block (or a gap, which a paced source never makes): start over.
            self.lens.clear();
            if index != 0 {
                self.block = None;
                return None;
            }
            self.block = Some(block);
        }
        let len = shard_len(frame.payload.len());
        write_shard(frame, len, &mut self.frames[index]);
        self.lens.push(len);
        if self.lens.len() < self.data as usize {
            return None;
        }
        let shard_bytes = self.lens.iter().copied().max().expect("a full block has lengths");
        let (data, repair) = (self.data as usize, self.repair as usize);
        let encoder = match self.encoder.as_mut() {
            Some(e) => e.reset(data, repair, shard_bytes).map(|()| e),
            None => {
                ReedSolomonEncoder::new(data, repair, shard_bytes).map(|e| self.encoder.insert(e))
            }
        };
        let encoder = encoder.expect("shard counts and an even shard length are supported");
        for f in &mut self.frames {
            f.resize(shard_bytes, 0);
            encoder.add_original_shard(&f[..]).expect("all shards have one length");
        }
        let result = encoder.encode().expect("a complete block encodes");
        self.repairs.resize_with(repair, Vec::new);
        for (out, shard) in self.repairs.iter_mut().zip(result.recovery_iter()) {
            out.clear();
            out.extend_from_slice(shard);
        }
        self.lens.clear();
        self.block = None;
        Some(block)
    }

    /// Repair shard `index` of the last completed block.
    pub fn repair_shard(&self, index: u8) -> &[u8] {
        self.repairs.get(index as usize).map_or(&[], |v| &v[..])
    }
}

struct BlockRepairs {
    block: SeqNo,
    data: u8,
    repair: u8,
    shard_len: usize,
    shards: Vec<Option<Vec<u8>>>,
    done: bool,
}

/// Player side: keeps repair shards of recent blocks and rebuilds missing packets.
pub struct FecDecoder {
    blocks: VecDeque<BlockRepairs>,
    capacity: usize,
    scratch: Vec<u8>,
    decoder: Option<ReedSolomonDecoder>,
}

impl core::fmt::Debug for FecDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FecDecoder").field("blocks", &self.blocks.len()).finish()
    }
}

impl FecDecoder {
    /// A decoder remembering up to `capacity` blocks.
    pub fn new(capacity: usize) -> Self {
        FecDecoder {
            blocks: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            scratch: Vec::with_capacity(1200),
            decoder: None,
        }
    }

    /// Stores a repair shard; returns the block it belongs to, or `None` if it is a duplicate,
    /// inconsistent with shards already held, or for a block already rebuilt.
    pub fn add_repair(&mut self, r: &Repair<'_>) -> Option<SeqNo> {
        if !r.block.0.is_multiple_of(u64::from(r.data)) {
            return None;
        }
        let pos = self.blocks.iter().position(|b| b.block == r.block);
        let b = match pos {
            Some(i) => &mut self.blocks[i],
            None => {
                if self.blocks.len() == self.capacity {
                    self.blocks.pop_front();
                }
                self.blocks.push_back(BlockRepairs {
                    block: r.block,
                    data: r.data,
                    repair: r.repair,
                    shard_len: r.shard.len(),
                    shards: vec![None; r.repair as usize],
                    done: false,
                });
                self.blocks.back_mut().expect("just pushed")
            }
        };
        if b.done || b.data != r.data || b.repair != r.repair || b.shard_len != r.shard.len() {
            return None;
        }
        let slot = b.shards.get_mut(r.index as usize)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(r.shard.to_vec());
        Some(r.block)
    }

    /// Blocks with repair shards that may cover `seq`.
    pub fn block_for(&self, seq: SeqNo) -> Option<SeqNo> {
        self.blocks
            .iter()
            .find(|b| !b.done && seq >= b.block && seq.0 < b.block.0 + u64::from(b.data))
            .map(|b| b.block)
    }

    /// Tries to rebuild the missing packets of `block`. `have(seq)` returns the packet if the
    /// player holds it. Each rebuilt packet is passed to `restored`. Returns how many were
    /// rebuilt (0 if there are not yet enough shards).
    pub fn recover<'h>(
        &mut self,
        stream_id: u32,
        block: SeqNo,
        have: impl Fn(SeqNo) -> Option<AudioFrame<'h>>,
        mut restored: impl FnMut(AudioFrame<'_>),
    ) -> usize {
        let Some(b) = self.blocks.iter_mut().find(|b| b.block == block && !b.done) else {
            return 0;
        };
        let (data, repair) = (b.data as usize, b.repair as usize);
        let present: Vec<Option<AudioFrame<'h>>> =
            (0..data).map(|i| have(SeqNo(block.0 + i as u64))).collect();
        let missing = present.iter().filter(|p| p.is_none()).count();
        if missing == 0 {
            b.done = true;
            return 0;
        }
        let repairs = b.shards.iter().filter(|s| s.is_some()).count();
        if data - missing + repairs < data {
            return 0;
        }
        let decoder = match self.decoder.as_mut() {
            Some(d) => d.reset(data, repair, b.shard_len).map(|()| d),
            None => {
                ReedSolomonDecoder::new(data, repair, b.shard_len).map(|d| self.decoder.insert(d))
            }
        };
        let Ok(decoder) = decoder else { return 0 };
        for (i, frame) in present.iter().enumerate() {
            if let Some(f) = frame {
                if shard_len(f.payload.len()) > b.shard_len {
                    return 0;
                }
                write_shard(f, b.shard_len, &mut self.scratch);
                if decoder.add_original_shard(i, &self.scratch).is_err() {
                    return 0;
                }
            }
        }
        for (i, s) in b.shards.iter().enumerate() {
            if let Some(s) = s
                && decoder.add_recovery_shard(i, s).is_err()
            {
                return 0;
            }
        }
        let Ok(result) = decoder.decode() else { return 0 };
        let mut n = 0;
        for (i, shard) in result.restored_original_iter() {
            if let Some(frame) = read_shard(stream_id, SeqNo(block.0 + i as u64), shard) {
                restored(frame);
                n += 1;
            }
        }
        b.done = true;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, payload: &[u8]) -> AudioFrame<'_> {
        AudioFrame {
            stream_id: 1,
            seq: SeqNo(seq),
            media: MediaTime(seq * 240),
            presentation: StreamTime(1_000_000 + seq * 5_000_000),
            sent: StreamTime(0),
            codec: Codec::Opus,
            channels: 2,
            frames: 240,
            retransmit: false,
            payload,
        }
    }

    #[test]
    fn rebuilds_any_two_lost_packets_of_a_block() {
        let payloads: Vec<Vec<u8>> =
            (0..8u8).map(|i| (0..(50 + i as usize * 7)).map(|j| j as u8 ^ i).collect()).collect();
        let mut enc = FecEncoder::new(8, 2);
        let mut done = None;
        for (i, p) in payloads.iter().enumerate() {
            done = enc.push(&frame(16 + i as u64, p));
            assert_eq!(done.is_some(), i == 7);
        }
        assert_eq!(done, Some(SeqNo(16)));
        for lost in [(0usize, 7usize), (3, 4), (5, 5)] {
            let mut dec = FecDecoder::new(4);
            for r in 0..2u8 {
                let shard = enc.repair_shard(r).to_vec();
                let rep = Repair {
                    stream_id: 1,
                    block: SeqNo(16),
                    data: 8,
                    repair: 2,
                    index: r,
                    shard: &shard,
                };
                assert_eq!(dec.add_repair(&rep), Some(SeqNo(16)));
                assert_eq!(dec.add_repair(&rep), None, "duplicate shard");
            }
            let mut got = Vec::new();
            let n = dec.recover(
                1,
                SeqNo(16),
                |s| {
                    let i = (s.0 - 16) as usize;
                    (i != lost.0 && i != lost.1).then(|| frame(s.0, &payloads[i]))
                },
                |f| got.push((f.seq, f.media, f.presentation, f.frames, f.payload.to_vec())),
            );
            let expect = if lost.0 == lost.1 { 1 } else { 2 };
            assert_eq!(n, expect);
            for (seq, media, pts, frames, payload) in got {
                let want = frame(seq.0, &payloads[(seq.0 - 16) as usize]);
                assert_eq!((media, pts, frames), (want.media, want.presentation, want.frames));
                assert_eq!(payload, want.payload);
            }
        }
    }

    #[test]
    fn too_few_shards_recovers_nothing() {
        let p = [1u8; 40];
        let mut enc = FecEncoder::new(4, 1);
        for i in 0..4 {
            enc.push(&frame(i, &p));
        }
        let shard = enc.repair_shard(0).to_vec();
        let mut dec = FecDecoder::new(4);
        dec.add_repair(&Repair {
            stream_id: 1,
            block: SeqNo(0),
            data: 4,
            repair: 1,
            index: 0,
            shard: &shard,
        });
        let n = dec.recover(
            1,
            SeqNo(0),
            |s| (s.0 >= 2).then(|| frame(s.0, &p)),
            |_| panic!("nothing to restore"),
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn encoder_waits_for_block_alignment() {
        let p = [0u8; 10];
        let mut enc = FecEncoder::new(4, 1);
        // Starting mid-block: that block is skipped, the next one is protected.
        assert_eq!(enc.push(&frame(2, &p)), None);
        assert_eq!(enc.push(&frame(3, &p)), None);
        for i in 4..7 {
            assert_eq!(enc.push(&frame(i, &p)), None);
        }
        assert_eq!(enc.push(&frame(7, &p)), Some(SeqNo(4)));
    }
}
