//! bpffs pins, so that enforcement outlives the daemon (issue 5: fail closed
//! across crashes and upgrades).
//!
//! Layout under the pin root (default `/sys/fs/bpf/bessai`):
//! `maps/<MAP>` every map of the object, `programs/bessai_xdp` the program,
//! `links/<iface>` one XDP link per interface. A link holds its program and
//! the program its maps, so `kill -9` of the daemon changes nothing on the
//! wire. A new daemon reuses the pinned maps whose layout still matches its
//! object (policy, flows, counters, unread events survive) and replaces the
//! program of each pinned link with `bpf_link_update`: the interface is
//! never without a program.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};

use super::{DataplaneError, PROGRAM, XDP_OBJECT};

/// Where the pins live.
#[derive(Clone, Debug)]
pub struct PinPaths {
    pub root: PathBuf,
}

impl PinPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    fn program(&self) -> PathBuf {
        self.root.join("programs").join(PROGRAM)
    }

    fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, iface: &str) -> PathBuf {
        self.links().join(iface)
    }
}

/// What a start found pinned.
#[derive(Clone, Debug, Default)]
pub struct Adopted {
    /// Maps reused as they were.
    pub maps_reused: Vec<String>,
    /// Pinned maps whose layout changed (an upgrade); started afresh.
    pub maps_replaced: Vec<String>,
}

fn pin_err(path: &Path, reason: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Pin {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Maps of our own (upper-case names); not the compiler's `.rodata`/`.bss`.
fn is_policy_map(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

fn ensure_dir(dir: &Path) -> Result<(), DataplaneError> {
    fs::create_dir_all(dir).map_err(|e| pin_err(dir, e))
}

/// `statfs` magic of the BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Pins only outlive the process on a bpffs; anywhere else they would fail
/// later, or (on a private instance) vanish with the process.
fn check_bpffs(root: &Path) -> Result<(), DataplaneError> {
    let mut dir = root;
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    let c =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| pin_err(root, e))?;
    // SAFETY: statfs with a NUL-terminated path and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(pin_err(root, std::io::Error::last_os_error()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(pin_err(
            root,
            format!(
                "{} is not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Loads the object with its maps pinned under `pins`: reused where the
/// pinned map has the object's layout, else replaced.
pub(super) fn load(pins: &PinPaths) -> Result<(Ebpf, Adopted), DataplaneError> {
    check_bpffs(&pins.root)?;
    ensure_dir(&pins.maps())?;
    let object = aya_obj::Object::parse(XDP_OBJECT)
        .map_err(|e| pin_err(&pins.root, format!("parsing the XDP object: {e}")))?;
    let mut adopted = Adopted::default();
    let names: Vec<String> = object
        .maps
        .keys()
        .filter(|n| is_policy_map(n))
        .cloned()
        .collect();
    for name in &names {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let def = &object.maps[name];
        let same = MapInfo::from_pin(&path).is_ok_and(|info| {
            info.key_size() == def.key_size()
                && info.value_size() == def.value_size()
                && info.max_entries() == def.max_entries()
                && info.map_flags() == def.map_flags()
        });
        if same {
            adopted.maps_reused.push(name.clone());
        } else {
            // The old program keeps its own reference until its link is
            // switched to the new program.
            fs::remove_file(&path).map_err(|e| pin_err(&path, e))?;
            adopted.maps_replaced.push(name.clone());
        }
    }
    let paths: Vec<(String, PathBuf)> = names.iter().map(|n| (n.clone(), pins.map(n))).collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &paths {
        loader.map_pin_path(name.as_str(), path.as_path());
    }
    let ebpf = loader.load(XDP_OBJECT)?;
    Ok((ebpf, adopted))
}

pub(super) fn pin_program(pins: &PinPaths, prog: &mut Xdp) -> Result<(), DataplaneError> {
    let path = pins.program();
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    // The previous run's program: its links hold it until they switch.
    if path.exists() {
        fs::remove_file(&path).map_err(|e| pin_err(&path, e))?;
    }
    prog.pin(&path).map_err(|e| pin_err(&path, e))
}

/// Switches the link pinned for `iface`, if any, to `prog`.
pub(super) fn adopt_link(
    pins: &PinPaths,
    iface: &str,
    prog: &mut Xdp,
) -> Result<Option<FdLink>, DataplaneError> {
    let path = pins.link(iface);
    if !path.exists() {
        return Ok(None);
    }
    let pinned = PinnedLink::from_pin(&path).map_err(|e| pin_err(&path, e))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_err(&path, e))?;
    let id = prog.attach_to_link(link)?;
    let link = prog.take_link(id)?;
    Ok(Some(FdLink::try_from(link).map_err(|e| pin_err(&path, e))?))
}

/// Pins the new link `id` of `prog` on `iface`.
pub(super) fn pin_link(
    pins: &PinPaths,
    iface: &str,
    prog: &mut Xdp,
    id: XdpLinkId,
) -> Result<FdLink, DataplaneError> {
    let path = pins.link(iface);
    ensure_dir(&pins.links())?;
    let link = prog.take_link(id)?;
    let fd = FdLink::try_from(link).map_err(|e| pin_err(&path, e))?;
    let pinned = fd.pin(&path).map_err(|e| pin_err(&path, e))?;
    Ok(FdLink::from(pinned))
}

pub(super) fn unpin_link(pins: &PinPaths, iface: &str) -> Result<(), DataplaneError> {
    let path = pins.link(iface);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(pin_err(&path, e)),
    }
}

/// Removes the whole pin tree.
pub(super) fn remove_all(pins: &PinPaths) -> Result<(), DataplaneError> {
    match fs::remove_dir_all(&pins.root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(pin_err(&pins.root, e)),
    }
}
