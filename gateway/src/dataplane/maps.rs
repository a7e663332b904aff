//! Writing a compiled policy into the maps as a second generation beside the
//! running one, flipping to it in one step, then retiring the old one.
//!
//! The program reads `ACTIVE[0]` for every lookup key, so a packet sees
//! either every entry of the old policy or every entry of the new one, never
//! a half-written table (issue 5: atomic reload).

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key},
    util::nr_cpus,
};
use bessai_common::{
    Addr, CONDUIT_KEY_DATA, Conduit, ConduitCounters, ConduitKey, FlowKey, FlowState, HalfOpen,
    MAX_POLICY_CONDUITS, Rule, RuleKey, Settings, StreamKey, iface_zones_key,
};
use bessai_policy::Compiled;

use super::{DataplaneError, batch};

/// How long a packet that read the old generation may still be looking up
/// its entries. An XDP invocation lasts microseconds; this is generous.
const RETIRE_GRACE: Duration = Duration::from_millis(20);

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, DataplaneError> {
    ebpf.map_mut(name).ok_or(DataplaneError::NoMap(name))
}

fn lpm_key(k: &ConduitKey) -> Key<[u8; CONDUIT_KEY_DATA]> {
    Key::new(k.prefix_len, k.data())
}

/// The id a policy's conduit `id` has in the kernel in generation `g`.
pub(super) const fn kernel_conduit_id(g: u8, id: u16) -> u16 {
    id + g as u16 * MAX_POLICY_CONDUITS as u16
}

/// Splits a kernel conduit id into (generation, policy conduit id).
pub const fn split_conduit_id(kernel_id: u16) -> (u8, u16) {
    (
        (kernel_id / MAX_POLICY_CONDUITS as u16) as u8,
        kernel_id % MAX_POLICY_CONDUITS as u16,
    )
}

/// The generation in force.
pub(super) fn active(ebpf: &Ebpf) -> Result<u8, DataplaneError> {
    let a: Array<&MapData, u32> =
        Array::try_from(ebpf.map("ACTIVE").ok_or(DataplaneError::NoMap("ACTIVE"))?)
            .map_err(map_err("ACTIVE"))?;
    Ok((a.get(&0, 0).map_err(map_err("ACTIVE"))? & 1) as u8)
}

fn set_active(ebpf: &mut Ebpf, g: u8) -> Result<(), DataplaneError> {
    let mut a: Array<&mut MapData, u32> =
        Array::try_from(map_mut(ebpf, "ACTIVE")?).map_err(map_err("ACTIVE"))?;
    a.set(0, u32::from(g), 0).map_err(map_err("ACTIVE"))
}

/// Which policy zones each interface serves, for ingress binding: `None`
/// (development runs without zones) lets every interface serve every zone.
pub type IfaceZones = Option<Vec<(u32, String)>>;

/// The ingress masks of generation `g`: interface index -> zone bits.
fn zone_masks(c: &Compiled, ifaces: &IfaceZones) -> Vec<(u32, u64)> {
    let Some(ifaces) = ifaces else {
        return vec![(0, u64::MAX)];
    };
    let mut masks: Vec<(u32, u64)> = Vec::new();
    for (ifindex, zone) in ifaces {
        let bit = c
            .zones
            .iter()
            .position(|z| z == zone)
            .map_or(0, |i| 1u64 << (i & 63));
        match masks.iter_mut().find(|(i, _)| i == ifindex) {
            Some((_, m)) => *m |= bit,
            None => masks.push((*ifindex, bit)),
        }
    }
    masks
}

/// Writes `c` as generation `g`, which must not be in force and must have
/// been purged (its conduit counters are then zero).
pub(super) fn write_generation(
    ebpf: &mut Ebpf,
    g: u8,
    c: &Compiled,
    ifaces: &IfaceZones,
) -> Result<(), DataplaneError> {
    {
        let mut zones: HashMap<&mut MapData, u64, u64> =
            HashMap::try_from(map_mut(ebpf, "IFACE_ZONES")?).map_err(map_err("IFACE_ZONES"))?;
        for (ifindex, mask) in zone_masks(c, ifaces) {
            zones
                .insert(iface_zones_key(g, ifindex), mask, 0)
                .map_err(map_err("IFACE_ZONES"))?;
        }
    }
    {
        let mut conduits: LpmTrie<&mut MapData, [u8; CONDUIT_KEY_DATA], Conduit> =
            LpmTrie::try_from(map_mut(ebpf, "CONDUITS")?).map_err(map_err("CONDUITS"))?;
        for (k, v) in &c.conduits {
            let v = Conduit {
                id: kernel_conduit_id(g, v.id),
                ..*v
            };
            conduits
                .insert(&lpm_key(&k.in_generation(g)), v, 0)
                .map_err(map_err("CONDUITS"))?;
        }
    }
    {
        let (keys, values): (Vec<RuleKey>, Vec<Rule>) = c
            .rules
            .iter()
            .map(|(k, v)| {
                let k = RuleKey {
                    conduit: kernel_conduit_id(g, k.conduit),
                    ..*k
                };
                (k, *v)
            })
            .unzip();
        let rules = ebpf.map("RULES").ok_or(DataplaneError::NoMap("RULES"))?;
        batch::update(rules, "RULES", &keys, &values)?;
    }
    {
        let mut assets: HashMap<&mut MapData, Addr, u8> =
            HashMap::try_from(map_mut(ebpf, "ASSETS")?).map_err(map_err("ASSETS"))?;
        for a in &c.assets {
            let bits = assets.get(a, 0).unwrap_or(0);
            assets
                .insert(a, bits | 1 << g, 0)
                .map_err(map_err("ASSETS"))?;
        }
    }
    {
        let mut settings: Array<&mut MapData, Settings> =
            Array::try_from(map_mut(ebpf, "SETTINGS")?).map_err(map_err("SETTINGS"))?;
        settings
            .set(u32::from(g), c.settings, 0)
            .map_err(map_err("SETTINGS"))?;
    }
    Ok(())
}

/// Removes every entry of generation `g` (which must not be in force),
/// whatever wrote it: the previous policy, or a reload that crashed half way.
pub(super) fn purge_generation(ebpf: &mut Ebpf, g: u8) -> Result<(), DataplaneError> {
    {
        let mut zones: HashMap<&mut MapData, u64, u64> =
            HashMap::try_from(map_mut(ebpf, "IFACE_ZONES")?).map_err(map_err("IFACE_ZONES"))?;
        let stale: Vec<u64> = zones
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k >> 32 == u64::from(g))
            .collect();
        for k in stale {
            zones.remove(&k).map_err(map_err("IFACE_ZONES"))?;
        }
    }
    {
        let mut conduits: LpmTrie<&mut MapData, [u8; CONDUIT_KEY_DATA], Conduit> =
            LpmTrie::try_from(map_mut(ebpf, "CONDUITS")?).map_err(map_err("CONDUITS"))?;
        let stale: Vec<_> = conduits
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data()[0] == g)
            .collect();
        for k in stale {
            conduits.remove(&k).map_err(map_err("CONDUITS"))?;
        }
    }
    {
        let mut rules: HashMap<&mut MapData, RuleKey, Rule> =
            HashMap::try_from(map_mut(ebpf, "RULES")?).map_err(map_err("RULES"))?;
        let stale: Vec<RuleKey> = rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| split_conduit_id(k.conduit).0 == g)
            .collect();
        for k in stale {
            rules.remove(&k).map_err(map_err("RULES"))?;
        }
    }
    {
        let mut assets: HashMap<&mut MapData, Addr, u8> =
            HashMap::try_from(map_mut(ebpf, "ASSETS")?).map_err(map_err("ASSETS"))?;
        let entries: Vec<(Addr, u8)> = assets.iter().filter_map(Result::ok).collect();
        for (a, bits) in entries {
            let rest = bits & !(1 << g);
            if rest == 0 {
                assets.remove(&a).map_err(map_err("ASSETS"))?;
            } else if rest != bits {
                assets.insert(a, rest, 0).map_err(map_err("ASSETS"))?;
            }
        }
    }
    // The generation's counters start again from zero when it is next used.
    zero_counters(ebpf, g)
}

fn zero_counters(ebpf: &mut Ebpf, g: u8) -> Result<(), DataplaneError> {
    let mut counters: PerCpuArray<&mut MapData, ConduitCounters> =
        PerCpuArray::try_from(map_mut(ebpf, "CONDUIT_COUNTERS")?)
            .map_err(map_err("CONDUIT_COUNTERS"))?;
    let cpus = nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
    for id in 0..MAX_POLICY_CONDUITS as u16 {
        let zero = PerCpuValues::try_from(vec![ConduitCounters::default(); cpus])
            .map_err(|e| DataplaneError::Cpus(std::io::Error::other(e)))?;
        counters
            .set(u32::from(kernel_conduit_id(g, id)), zero, 0)
            .map_err(map_err("CONDUIT_COUNTERS"))?;
    }
    Ok(())
}

/// What a switch to a new policy did.
#[derive(Clone, Copy, Debug)]
pub struct Switch {
    pub from: u8,
    pub to: u8,
    /// From the start of writing to the flip: how long the reload took to
    /// take effect.
    pub to_enforced: Duration,
}

/// Writes `c` into the spare generation, flips to it, and retires the old one.
pub(super) fn switch(
    ebpf: &mut Ebpf,
    c: &Compiled,
    ifaces: &IfaceZones,
    spare_clean: bool,
) -> Result<Switch, DataplaneError> {
    let started = std::time::Instant::now();
    let from = active(ebpf)?;
    let to = 1 - from;
    // Normally already empty (retired after the last switch); a reload
    // interrupted by a crash, or a failed one, may have left part of a
    // policy here.
    if !spare_clean {
        purge_generation(ebpf, to)?;
    }
    let purged = started.elapsed();
    write_generation(ebpf, to, c, ifaces)?;
    set_active(ebpf, to)?;
    let to_enforced = started.elapsed();
    tracing::debug!(
        purge_ms = purged.as_secs_f64() * 1e3,
        write_ms = (to_enforced - purged).as_secs_f64() * 1e3,
        "generation switch"
    );
    std::thread::sleep(RETIRE_GRACE);
    purge_generation(ebpf, from)?;
    Ok(Switch {
        from,
        to,
        to_enforced,
    })
}

pub(super) fn last_verdict(ebpf: &Ebpf) -> Result<u32, DataplaneError> {
    let last: Array<&MapData, u32> = Array::try_from(
        ebpf.map("LAST_VERDICT")
            .ok_or(DataplaneError::NoMap("LAST_VERDICT"))?,
    )
    .map_err(map_err("LAST_VERDICT"))?;
    last.get(&0, 0).map_err(map_err("LAST_VERDICT"))
}

pub(super) fn clear_flows(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let mut flows: HashMap<&mut MapData, FlowKey, FlowState> =
        HashMap::try_from(map_mut(ebpf, "FLOWS")?).map_err(map_err("FLOWS"))?;
    let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
    for k in keys {
        // Ignore: an LRU entry may be evicted between listing and removal.
        let _ = flows.remove(&k);
    }
    let mut half: HashMap<&mut MapData, FlowKey, HalfOpen> =
        HashMap::try_from(map_mut(ebpf, "HALF_OPEN")?).map_err(map_err("HALF_OPEN"))?;
    let keys: Vec<FlowKey> = half.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = half.remove(&k);
    }
    Ok(())
}

/// Makes sure the per-boot stream key is set: a key pinned by an earlier run
/// of this boot is kept (live connections' records were hashed with it), an
/// unset one is drawn from the kernel's random source.
pub(super) fn ensure_stream_key(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let mut keys: Array<&mut MapData, StreamKey> =
        Array::try_from(map_mut(ebpf, "STREAM_KEY")?).map_err(map_err("STREAM_KEY"))?;
    let current = keys.get(&0, 0).map_err(map_err("STREAM_KEY"))?;
    if bessai_common::stream_hash::key_is_set(&current) {
        return Ok(());
    }
    let key = random_stream_key().map_err(DataplaneError::Random)?;
    keys.set(0, key, 0).map_err(map_err("STREAM_KEY"))
}

/// Two multipliers in 2..P-1 from /dev/urandom (the kernel's CSPRNG).
fn random_stream_key() -> std::io::Result<StreamKey> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let draw = |b: &[u8]| {
        let v = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        v % (bessai_common::stream_hash::P - 3) + 2
    };
    Ok(StreamKey {
        r: [draw(&bytes[..8]), draw(&bytes[8..])],
    })
}

pub(super) fn stream_key(ebpf: &Ebpf) -> Result<StreamKey, DataplaneError> {
    let keys: Array<&MapData, StreamKey> = Array::try_from(
        ebpf.map("STREAM_KEY")
            .ok_or(DataplaneError::NoMap("STREAM_KEY"))?,
    )
    .map_err(map_err("STREAM_KEY"))?;
    keys.get(&0, 0).map_err(map_err("STREAM_KEY"))
}

pub(super) fn flow(ebpf: &Ebpf, key: &FlowKey) -> Result<Option<FlowState>, DataplaneError> {
    let flows: HashMap<&MapData, FlowKey, FlowState> =
        HashMap::try_from(ebpf.map("FLOWS").ok_or(DataplaneError::NoMap("FLOWS"))?)
            .map_err(map_err("FLOWS"))?;
    match flows.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(DataplaneError::Map {
            map: "FLOWS",
            source: e,
        }),
    }
}

pub(super) fn half_open(ebpf: &Ebpf, key: &FlowKey) -> Result<Option<HalfOpen>, DataplaneError> {
    let half: HashMap<&MapData, FlowKey, HalfOpen> = HashMap::try_from(
        ebpf.map("HALF_OPEN")
            .ok_or(DataplaneError::NoMap("HALF_OPEN"))?,
    )
    .map_err(map_err("HALF_OPEN"))?;
    match half.get(key, 0) {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(DataplaneError::Map {
            map: "HALF_OPEN",
            source: e,
        }),
    }
}
