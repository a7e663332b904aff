//! Arbitrary bytes as a sequence of frames (length-prefixed) through the
//! decision function with shared flow state.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tables = common::tables();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize * 4).min(tail.len());
        common::judge(&mut tables, &tail[..n]);
        rest = &tail[n..];
    }
});
