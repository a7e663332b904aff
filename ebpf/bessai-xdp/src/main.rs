//! XDP program: copies the frame's head into a per-CPU buffer, judges it with
//! `bessai_common::decide` against the policy maps, and applies the verdict.
//!
//! Verifier notes: the stack is 512 bytes, so the frame lives in a per-CPU map
//! value of FRAME_MAX bytes; every loop in the decision is bounded by a
//! constant (ADUs, ranges, IPv6 extension headers).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod baselines;
#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Built for the host only by `cargo build --workspace`; the real object is
    // built for bpfel-unknown-none by gateway/build.rs.
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction (no indexing or unwrap can fail in the
    // decision); the verifier would reject a reachable loop anyway.
    loop {}
}
