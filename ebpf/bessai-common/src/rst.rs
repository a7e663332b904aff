//! In-place TCP RSTs, so that a denied segment ends its connection cleanly on
//! both sides instead of stalling it (a silently dropped segment is
//! retransmitted for seconds and blocks every later request on the connection).
//!
//! The denied client segment becomes a RST toward the server (same addresses,
//! with the sequence number the normalizer tracks as the server's next
//! expected byte, the only one RFC 5961 lets reset a connection); any later
//! client packet on that connection becomes a RST back to the client, with the
//! sequence number the client acknowledged (its own `rcv_nxt`). Both are built
//! here so that the host tests the bytes the kernel sends.

use crate::{decide::Layout, types::FRAME_MAX};

/// A RST is the original L2/L3 headers plus 20 bytes of TCP, within this many
/// bytes of the frame's start.
pub const RST_MAX: usize = 128;

const TCP_RST_ACK: u8 = 0x14;

/// Rewrites the frame into a RST toward the server with sequence number
/// `seq` (the server's expected next byte, `Decision::rst_seq`). Returns the
/// new length. Not inlined: a kernel subprogram with its own stack frame.
#[inline(never)]
pub fn rst_to_server(buf: &mut [u8; FRAME_MAX], lay: &Layout, seq: u32) -> usize {
    finish(buf, lay, seq, lay.ack)
}

/// Rewrites the frame into a RST back to the client (addresses and ports
/// swapped). Returns the new length. Not inlined, like [`rst_to_server`].
#[inline(never)]
pub fn rst_to_client(buf: &mut [u8; FRAME_MAX], lay: &Layout) -> usize {
    let (l3, tcp) = offsets(lay);
    swap(buf, 0, 6, 6);
    if lay.ipv6 {
        swap(buf, l3 + 8, l3 + 24, 16);
        put8(buf, l3 + 7, 64);
    } else {
        swap(buf, l3 + 12, l3 + 16, 4);
        put16(buf, l3 + 4, 0);
        put16(buf, l3 + 6, 0x4000);
        put8(buf, l3 + 8, 64);
    }
    swap(buf, tcp, tcp + 2, 2);
    finish(
        buf,
        lay,
        lay.ack,
        lay.seq.wrapping_add(lay.payload_len as u32),
    )
}

/// IP and TCP header offsets, masked to their possible ranges so that the
/// verifier sees bounded offsets (the layout may come back from map memory).
/// `decide` allows a RST only for frames where these masks change nothing.
#[inline(always)]
fn offsets(lay: &Layout) -> (usize, usize) {
    (lay.l3 & 31, lay.l4 & (RST_MAX - 1))
}

#[inline(always)]
fn finish(buf: &mut [u8; FRAME_MAX], lay: &Layout, seq: u32, ack: u32) -> usize {
    let (l3, tcp) = offsets(lay);
    let new_len = tcp + 20;
    put32(buf, tcp + 4, seq);
    put32(buf, tcp + 8, ack);
    put8(buf, tcp + 12, 5 << 4);
    put8(buf, tcp + 13, TCP_RST_ACK);
    put16(buf, tcp + 14, 0); // window
    put16(buf, tcp + 16, 0); // checksum, computed below
    put16(buf, tcp + 18, 0); // urgent pointer
    let mut sum;
    if lay.ipv6 {
        put16(buf, l3 + 4, 20);
        sum = sum_words(buf, l3 + 8, 32);
        sum += 20 + 6;
    } else {
        put16(buf, l3 + 2, (tcp + 20 - l3) as u16);
        put16(buf, l3 + 10, 0);
        let ip_sum = fold(sum_words(buf, l3, 20));
        put16(buf, l3 + 10, !ip_sum);
        sum = sum_words(buf, l3 + 12, 8);
        sum += 20 + 6;
    }
    sum += sum_words(buf, tcp, 20);
    put16(buf, tcp + 16, !fold(sum));
    new_len
}

/// One's-complement sum of `len` bytes (even) from `off`.
#[inline(always)]
pub fn sum_words(buf: &[u8; FRAME_MAX], off: usize, len: usize) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 32 {
        if 2 * i >= len {
            break;
        }
        let o = off + 2 * i;
        if o >= FRAME_MAX - 1 {
            break;
        }
        sum += u16::from_be_bytes([buf[o], buf[o + 1]]) as u32;
        i += 1;
    }
    sum
}

#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[inline(always)]
fn put8(buf: &mut [u8; FRAME_MAX], off: usize, v: u8) {
    if off < FRAME_MAX {
        buf[off] = v;
    }
}

#[inline(always)]
fn put16(buf: &mut [u8; FRAME_MAX], off: usize, v: u16) {
    if off < FRAME_MAX - 1 {
        let b = v.to_be_bytes();
        buf[off] = b[0];
        buf[off + 1] = b[1];
    }
}

#[inline(always)]
fn put32(buf: &mut [u8; FRAME_MAX], off: usize, v: u32) {
    if off < FRAME_MAX - 3 {
        let b = v.to_be_bytes();
        buf[off] = b[0];
        buf[off + 1] = b[1];
        buf[off + 2] = b[2];
        buf[off + 3] = b[3];
    }
}

#[inline(always)]
fn swap(buf: &mut [u8; FRAME_MAX], a: usize, b: usize, n: usize) {
    let mut i = 0;
    while i < 16 {
        if i >= n {
            break;
        }
        let (x, y) = (a + i, b + i);
        if x >= FRAME_MAX || y >= FRAME_MAX {
            break;
        }
        buf.swap(x, y);
        i += 1;
    }
}
