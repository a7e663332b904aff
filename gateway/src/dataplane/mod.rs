//! The kernel side of the gateway: the embedded XDP object and its maps.

/// The XDP object built by build.rs, aligned for the ELF parser.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bessai-xdp"));
