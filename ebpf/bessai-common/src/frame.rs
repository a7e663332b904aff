//! Bounds-checked reads from the inspection buffer.
//!
//! Every read checks the offset against the constant buffer size first (so the
//! verifier sees a bounded offset into a fixed-size map value) and then against
//! the number of valid bytes. No read can panic: there is no panic path in the
//! eBPF object for the verifier to reject.

use crate::types::{Addr, FRAME_MAX};

pub struct Frame<'a> {
    buf: &'a [u8; FRAME_MAX],
    /// Valid bytes in `buf` (at most `FRAME_MAX`).
    len: usize,
    /// Length of the frame on the wire (may exceed `len`).
    wire_len: usize,
}

impl<'a> Frame<'a> {
    #[inline(always)]
    pub fn new(buf: &'a [u8; FRAME_MAX], len: usize, wire_len: usize) -> Self {
        let len = if len > FRAME_MAX { FRAME_MAX } else { len };
        Self { buf, len, wire_len }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn wire_len(&self) -> usize {
        self.wire_len
    }

    #[inline(always)]
    pub fn u8(&self, off: usize) -> Option<u8> {
        if off >= FRAME_MAX || off >= self.len {
            return None;
        }
        Some(self.buf[off])
    }

    /// Like [`Frame::u8`] for a loop over consecutive offsets: the index is
    /// masked to the buffer at the access, so that the compiler cannot turn
    /// it into a running pointer whose bounds the verifier loses.
    #[inline(always)]
    pub fn u8_in_loop(&self, off: usize) -> Option<u8> {
        if off >= self.len {
            return None;
        }
        Some(self.buf[off & (FRAME_MAX - 1)])
    }

    #[inline(always)]
    pub fn be16(&self, off: usize) -> Option<u16> {
        if off >= FRAME_MAX - 1 || off + 2 > self.len {
            return None;
        }
        Some(u16::from_be_bytes([self.buf[off], self.buf[off + 1]]))
    }

    /// Like [`Frame::be16`], but a separate load the compiler may not merge
    /// with an earlier read of the same bytes. The verifier narrows a value
    /// on every branch that tests it; deriving two uses from two loads keeps
    /// one of them free of that narrowing (see `modbus::judge_adu`).
    #[inline(always)]
    pub fn be16_reread(&self, off: usize) -> Option<u16> {
        if off >= FRAME_MAX - 1 || off + 2 > self.len {
            return None;
        }
        // SAFETY: both indices are in bounds (checked above); the references
        // are valid for reads.
        let (hi, lo) = unsafe {
            (
                core::ptr::read_volatile(&self.buf[off]),
                core::ptr::read_volatile(&self.buf[off + 1]),
            )
        };
        Some(u16::from_be_bytes([hi, lo]))
    }

    #[inline(always)]
    pub fn be32(&self, off: usize) -> Option<u32> {
        if off >= FRAME_MAX - 3 || off + 4 > self.len {
            return None;
        }
        Some(u32::from_be_bytes([
            self.buf[off],
            self.buf[off + 1],
            self.buf[off + 2],
            self.buf[off + 3],
        ]))
    }

    #[inline(always)]
    pub fn bytes4(&self, off: usize) -> Option<[u8; 4]> {
        if off >= FRAME_MAX - 3 || off + 4 > self.len {
            return None;
        }
        Some([
            self.buf[off],
            self.buf[off + 1],
            self.buf[off + 2],
            self.buf[off + 3],
        ])
    }

    /// Writes the address at `off` into `out` in place (16 bytes, or 4
    /// bytes as `::ffff:a.b.c.d`); false when the frame is cut short. In
    /// place, because every copy of an address costs the kernel 16 bytes of
    /// its 512-byte stack.
    #[inline(always)]
    pub fn addr_into(&self, off: usize, ipv6: bool, out: &mut Addr) -> bool {
        let n = if ipv6 { 16 } else { 4 };
        if off >= FRAME_MAX - 15 || off + n > self.len {
            return false;
        }
        if ipv6 {
            let mut i = 0;
            while i < 16 {
                out[i] = self.buf[off + i];
                i += 1;
            }
        } else {
            let mut i = 0;
            while i < 10 {
                out[i] = 0;
                i += 1;
            }
            out[10] = 0xff;
            out[11] = 0xff;
            out[12] = self.buf[off];
            out[13] = self.buf[off + 1];
            out[14] = self.buf[off + 2];
            out[15] = self.buf[off + 3];
        }
        true
    }

    #[inline(always)]
    pub fn addr16(&self, off: usize) -> Option<Addr> {
        if off >= FRAME_MAX - 15 || off + 16 > self.len {
            return None;
        }
        let mut a = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            a[i] = self.buf[off + i];
            i += 1;
        }
        Some(a)
    }
}
