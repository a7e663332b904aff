//! Filling the policy maps from a compiled policy.

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, lpm_trie::Key},
};
use bessai_common::{
    Addr, CONDUIT_KEY_DATA, Conduit, ConduitKey, FlowKey, FlowState, Rule, RuleKey, Settings,
};
use bessai_policy::Compiled;

use super::DataplaneError;

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

fn lpm_key(k: &ConduitKey) -> Key<[u8; CONDUIT_KEY_DATA]> {
    let mut data = [0u8; CONDUIT_KEY_DATA];
    data[..16].copy_from_slice(&k.dst);
    data[16..18].copy_from_slice(&k.dst_port);
    data[18..34].copy_from_slice(&k.src);
    Key::new(k.prefix_len, data)
}

/// Clears and refills the policy maps. Not atomic: the program sees a
/// partly filled policy meanwhile, which can only deny more (entries are
/// removed first, then added; a conduit appears before its rules, and a
/// missing rule denies).
pub(super) fn install(ebpf: &mut Ebpf, c: &Compiled) -> Result<(), DataplaneError> {
    {
        let mut rules: HashMap<&mut MapData, RuleKey, Rule> = HashMap::try_from(
            ebpf.map_mut("RULES")
                .ok_or(DataplaneError::NoMap("RULES"))?,
        )
        .map_err(map_err("RULES"))?;
        let old: Vec<RuleKey> = rules.keys().filter_map(Result::ok).collect();
        for k in old {
            rules.remove(&k).map_err(map_err("RULES"))?;
        }
    }
    {
        let mut conduits: LpmTrie<&mut MapData, [u8; CONDUIT_KEY_DATA], Conduit> =
            LpmTrie::try_from(
                ebpf.map_mut("CONDUITS")
                    .ok_or(DataplaneError::NoMap("CONDUITS"))?,
            )
            .map_err(map_err("CONDUITS"))?;
        let old: Vec<_> = conduits.keys().filter_map(Result::ok).collect();
        for k in old {
            conduits.remove(&k).map_err(map_err("CONDUITS"))?;
        }
        for (k, v) in &c.conduits {
            conduits
                .insert(&lpm_key(k), v, 0)
                .map_err(map_err("CONDUITS"))?;
        }
    }
    {
        let mut rules: HashMap<&mut MapData, RuleKey, Rule> = HashMap::try_from(
            ebpf.map_mut("RULES")
                .ok_or(DataplaneError::NoMap("RULES"))?,
        )
        .map_err(map_err("RULES"))?;
        for (k, v) in &c.rules {
            rules.insert(k, v, 0).map_err(map_err("RULES"))?;
        }
    }
    {
        let mut assets: HashMap<&mut MapData, Addr, u8> = HashMap::try_from(
            ebpf.map_mut("ASSETS")
                .ok_or(DataplaneError::NoMap("ASSETS"))?,
        )
        .map_err(map_err("ASSETS"))?;
        let old: Vec<Addr> = assets.keys().filter_map(Result::ok).collect();
        for k in old {
            assets.remove(&k).map_err(map_err("ASSETS"))?;
        }
        for a in &c.assets {
            assets.insert(a, 1, 0).map_err(map_err("ASSETS"))?;
        }
    }
    let mut settings: Array<&mut MapData, Settings> = Array::try_from(
        ebpf.map_mut("SETTINGS")
            .ok_or(DataplaneError::NoMap("SETTINGS"))?,
    )
    .map_err(map_err("SETTINGS"))?;
    settings
        .set(0, c.settings, 0)
        .map_err(map_err("SETTINGS"))?;
    Ok(())
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
    let mut flows: HashMap<&mut MapData, FlowKey, FlowState> = HashMap::try_from(
        ebpf.map_mut("FLOWS")
            .ok_or(DataplaneError::NoMap("FLOWS"))?,
    )
    .map_err(map_err("FLOWS"))?;
    let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
    for k in keys {
        // Ignore: an LRU entry may be evicted between listing and removal.
        let _ = flows.remove(&k);
    }
    Ok(())
}
