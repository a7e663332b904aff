//! Arbitrary bytes as a capture file: the reader must return packets or an
//! error, never panic, and every packet goes through the decision function.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tables = common::tables();
    let _ = bessai_policy::capture::for_each_packet_in(data, "fuzz", |p| common::judge(&mut tables, p.frame));
});
