//! A keyed hash of client bytes at their stream positions, to tell whether a
//! retransmission carries the bytes the gateway judged (issue 10, point 2).
//!
//! `H(range) = sum over the bytes i of the range of (b_i + 1) * r^(pos_i) mod P`
//! for two independent lanes, with `P = 2^31 - 1`, `r` the per-boot secret
//! [`StreamKey`] and `pos_i` the byte's sequence number minus the record
//! base (see [`FlowState`]). Two properties make it fit:
//! - *Additive over adjacent ranges*: the hash of a retransmission that spans
//!   several judged segments is the sum of their recorded hashes, so one pass
//!   over the bytes checks them all.
//! - *Hard to collide without the key*: for two different byte strings at the
//!   same positions, the difference is `r^start` times a non-zero polynomial
//!   of degree below their length `n`, which has at most `n` roots; with `r`
//!   uniform and secret, a chosen pair collides with probability at most
//!   `n / (P - 1)` per lane, below 2^-40 for both lanes and any segment of a
//!   2 KiB frame. The attacker never sees a hash, and each miss is a reported
//!   denial with a reset.

use crate::{
    frame::Frame,
    types::{FRAME_MAX, FlowState, StreamKey},
};

pub const P: u64 = (1 << 31) - 1;

#[inline(always)]
fn mul(a: u64, b: u64) -> u64 {
    // a, b < 2^31: the product fits in 62 bits.
    (a * b) % P
}

/// `r^e mod P` by square and multiply (32 bounded steps).
#[inline(always)]
pub fn pow(r: u64, e: u32) -> u64 {
    let mut result = 1u64;
    let mut base = r % P;
    let mut i = 0;
    while i < 32 {
        if (e >> i) & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        i += 1;
    }
    result
}

/// Running state of a hash over consecutive bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lanes {
    /// `r^pos` of the next byte, per lane.
    pub power: [u64; 2],
    pub sum: [u64; 2],
}

impl Lanes {
    /// Starts at stream offset `pos` (sequence number minus the flow's base).
    #[inline(always)]
    pub fn at(key: &StreamKey, pos: u32) -> Self {
        Self {
            power: [pow(key.r[0], pos), pow(key.r[1], pos)],
            sum: [0, 0],
        }
    }

    #[inline(always)]
    pub fn push(&mut self, key: &StreamKey, byte: u8) {
        let v = byte as u64 + 1;
        self.sum[0] = (self.sum[0] + mul(v, self.power[0])) % P;
        self.sum[1] = (self.sum[1] + mul(v, self.power[1])) % P;
        self.power[0] = mul(self.power[0], key.r[0] % P);
        self.power[1] = mul(self.power[1], key.r[1] % P);
    }

    /// Both lanes in one word, as records store them.
    #[inline(always)]
    pub const fn value(&self) -> u64 {
        self.sum[0] << 32 | self.sum[1]
    }
}

/// Sum of two stored hashes (lane by lane, mod P).
#[inline(always)]
pub const fn add(a: u64, b: u64) -> u64 {
    let hi = ((a >> 32) + (b >> 32)) % P;
    let lo = ((a & 0xffff_ffff) + (b & 0xffff_ffff)) % P;
    hi << 32 | lo
}

/// True when the key was set (a zero key makes every hash equal).
#[inline(always)]
pub const fn key_is_set(key: &StreamKey) -> bool {
    key.r[0] % P > 1 && key.r[1] % P > 1
}

/// The position a sequence number has in the hash: its offset from the
/// connection's first data byte. (A record that spans the 2^32 wrap of that
/// offset, after 4 GiB on one connection, hashes differently when checked and
/// its retransmission is denied: a reset, never a bypass.)
#[inline(always)]
pub const fn position(flow: &FlowState, seq: u32) -> u32 {
    seq.wrapping_sub(flow.base)
}

/// A hash over frame bytes in progress: one step per byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashRun {
    pub lanes: Lanes,
    pub key: StreamKey,
    /// Frame offset of the next byte, and bytes left.
    pub off: usize,
    pub left: usize,
}

impl HashRun {
    /// The hash of `len` bytes from frame offset `off`, the first of them at
    /// stream position `pos`.
    #[inline(always)]
    pub fn new(key: &StreamKey, off: usize, len: usize, pos: u32) -> Self {
        Self {
            lanes: Lanes::at(key, pos),
            key: *key,
            off,
            left: len,
        }
    }

    /// Adds the next byte; false when there is none (or the frame ends).
    #[inline(always)]
    pub fn step(&mut self, f: &Frame) -> bool {
        if self.left == 0 {
            return false;
        }
        let Some(b) = f.u8_in_loop(self.off) else {
            self.left = 0;
            return false;
        };
        let key = self.key;
        self.lanes.push(&key, b);
        self.off += 1;
        self.left -= 1;
        true
    }
}

/// The hash of `len` bytes from frame offset `off` (see [`HashRun`]), as
/// a plain bounded loop; the kernel runs the same steps under `bpf_loop`.
#[inline(always)]
pub fn hash_range(f: &Frame, off: usize, len: usize, key: &StreamKey, pos: u32) -> u64 {
    let mut run = HashRun::new(key, off, len, pos);
    let mut i = 0;
    while i < FRAME_MAX && run.step(f) {
        i += 1;
    }
    run.lanes.value()
}
