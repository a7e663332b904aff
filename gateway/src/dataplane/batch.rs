//! `BPF_MAP_UPDATE_BATCH`: many hash-map entries in one system call. aya
//! writes one entry per call; a 10,000-rule policy then costs 10,000 calls
//! on the reload's critical path (about 9 ms here, against about 1 ms
//! batched).

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapData};

use super::DataplaneError;

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// `union bpf_attr`, the `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn map_data<'a>(map: &'a Map, name: &'static str) -> Result<&'a MapData, DataplaneError> {
    match map {
        Map::HashMap(m) | Map::LruHashMap(m) | Map::Array(m) => Ok(m),
        _ => Err(DataplaneError::NoMap(name)),
    }
}

/// Writes `keys[i] → values[i]` for all `i` into the map `name`. `K` and `V`
/// must be the map's key and value types (plain `#[repr(C)]` data).
pub(super) fn update<K: aya::Pod, V: aya::Pod>(
    map: &Map,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), DataplaneError> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let data = map_data(map, name)?;
    let fd = data.fd().as_fd().as_raw_fd();
    let mut done = 0usize;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: u32::try_from(keys.len() - done).unwrap_or(u32::MAX),
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the bpf(2) system call with a correctly sized attribute;
        // `keys` and `values` point to `count` elements of the map's key
        // and value size, alive for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(DataplaneError::Batch {
                map: name,
                source: std::io::Error::last_os_error(),
            });
        }
        // The kernel reports how many it wrote; an interrupted batch resumes.
        if attr.count == 0 {
            break;
        }
        done += attr.count as usize;
    }
    Ok(())
}
