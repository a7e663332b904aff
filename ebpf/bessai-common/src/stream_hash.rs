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

/// `x mod P` for any `x`, without a division (P is a Mersenne prime: 2^31 = 1
/// mod P, so the high bits fold onto the low ones). BPF has no multiply-high
/// for the compiler to turn `%` into, and a division costs tens of cycles.
#[inline(always)]
pub const fn reduce(x: u64) -> u64 {
    let x = (x & P) + (x >> 31); // < 2^31 + 2^33
    let x = (x & P) + (x >> 31); // < 2^31 + 2^3
    if x >= P { x - P } else { x }
}

#[inline(always)]
const fn mul(a: u64, b: u64) -> u64 {
    // a, b < 2^31: the product fits in 62 bits.
    reduce(a * b)
}

/// `r^e mod P` by square and multiply (32 bounded steps).
#[inline(always)]
pub fn pow(r: u64, e: u32) -> u64 {
    let mut result = 1u64;
    let mut base = reduce(r);
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

/// Both lanes' `r^pos` in one word (as [`FlowState::next_power`] keeps it).
#[inline(always)]
pub const fn pack(a: u64, b: u64) -> u64 {
    a << 32 | b
}

/// Running state of a hash over consecutive bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lanes {
    /// `r^pos` of the next byte, per lane (below P).
    pub power: [u64; 2],
    /// Not reduced until [`Lanes::value`]: each byte adds below 2^40, so a
    /// 2 KiB frame stays far from overflowing.
    pub sum: [u64; 2],
}

impl Lanes {
    /// Starts at stream offset `pos` (sequence number minus the flow's base).
    #[inline(always)]
    pub fn at(key: &StreamKey, pos: u32) -> Self {
        Self::with_power(pack(pow(key.r[0], pos), pow(key.r[1], pos)))
    }

    /// Starts where the powers are already known (packed by [`pack`]).
    #[inline(always)]
    pub const fn with_power(packed: u64) -> Self {
        Self {
            power: [packed >> 32, packed & 0xffff_ffff],
            sum: [0, 0],
        }
    }

    /// `r` must be below P (see [`HashRun::new`]).
    #[inline(always)]
    fn push(&mut self, r: &[u64; 2], byte: u8) {
        let v = byte as u64 + 1;
        self.sum[0] += v * self.power[0];
        self.sum[1] += v * self.power[1];
        self.power[0] = mul(self.power[0], r[0]);
        self.power[1] = mul(self.power[1], r[1]);
    }

    /// Both lanes in one word, as records store them.
    #[inline(always)]
    pub const fn value(&self) -> u64 {
        pack(reduce(self.sum[0]), reduce(self.sum[1]))
    }

    /// The powers of the next position, packed.
    #[inline(always)]
    pub const fn next_power(&self) -> u64 {
        pack(self.power[0], self.power[1])
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

/// Bytes one step of a [`HashRun`] adds (the kernel's `bpf_loop` calls one
/// step per iteration: fewer, larger steps cost fewer calls).
pub const HASH_CHUNK: usize = 16;

/// A hash over frame bytes in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashRun {
    pub lanes: Lanes,
    /// The key's multipliers, reduced below P.
    pub r: [u64; 2],
    /// Frame offset of the next byte, and bytes left.
    pub off: usize,
    pub left: usize,
}

impl HashRun {
    /// The hash of `len` bytes from frame offset `off`, the first of them at
    /// the position whose powers are `power` ([`pack`]ed).
    #[inline(always)]
    pub fn new(key: &StreamKey, off: usize, len: usize, power: u64) -> Self {
        Self {
            lanes: Lanes::with_power(power),
            r: [reduce(key.r[0]), reduce(key.r[1])],
            off,
            left: len,
        }
    }

    /// Adds up to [`HASH_CHUNK`] bytes; false when none are left (or the
    /// frame ends).
    #[inline(always)]
    pub fn step(&mut self, f: &Frame) -> bool {
        let mut i = 0;
        while i < HASH_CHUNK {
            if self.left == 0 {
                return false;
            }
            let Some(b) = f.u8_in_loop(self.off) else {
                self.left = 0;
                return false;
            };
            let r = self.r;
            self.lanes.push(&r, b);
            self.off += 1;
            self.left -= 1;
            i += 1;
        }
        self.left > 0
    }
}

/// The hash of `len` bytes from frame offset `off` (see [`HashRun`]), as
/// a plain bounded loop; the kernel runs the same steps under `bpf_loop`.
/// Returns the hash and the packed powers of the position after the bytes.
#[inline(always)]
pub fn hash_range(f: &Frame, off: usize, len: usize, key: &StreamKey, power: u64) -> (u64, u64) {
    let mut run = HashRun::new(key, off, len, power);
    let mut i = 0;
    while i < FRAME_MAX / HASH_CHUNK + 1 && run.step(f) {
        i += 1;
    }
    (run.lanes.value(), run.lanes.next_power())
}
