//! The host side of [`Tables`]: the same lookups as the BPF maps, in memory,
//! for tests and pcap replay. Semantics follow the kernel's maps exactly
//! (longest-prefix match over the key's leading bits; flows keyed bytewise),
//! except that the flow table here never evicts.

use std::collections::{HashMap, HashSet};

use crate::{
    decide::Tables,
    types::{Addr, Conduit, ConduitKey, FlowKey, FlowState, Rule, RuleKey, Settings},
};

#[derive(Clone, Debug, Default)]
pub struct HostTables {
    pub settings: Settings,
    /// LPM entries, longest prefix first.
    conduits: Vec<(ConduitKey, Conduit)>,
    rules: HashMap<RuleKey, Rule>,
    assets: HashSet<Addr>,
    flows: HashMap<FlowKey, FlowState>,
}

impl HostTables {
    pub fn new(
        settings: Settings,
        conduits: impl IntoIterator<Item = (ConduitKey, Conduit)>,
        rules: impl IntoIterator<Item = (RuleKey, Rule)>,
        assets: impl IntoIterator<Item = Addr>,
    ) -> Self {
        let mut conduits: Vec<_> = conduits.into_iter().collect();
        conduits.sort_by_key(|(k, _)| std::cmp::Reverse(k.prefix_len));
        Self {
            settings,
            conduits,
            rules: rules.into_iter().collect(),
            assets: assets.into_iter().collect(),
            flows: HashMap::new(),
        }
    }

    /// Forgets every tracked connection (as a fresh program would).
    pub fn clear_flows(&mut self) {
        self.flows.clear();
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }
}

fn prefix_matches(entry: &[u8; 36], key: &[u8; 36], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if entry[..full] != key[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    entry[full] & mask == key[full] & mask
}

impl Tables for HostTables {
    fn is_protected_port(&self, port: u16) -> bool {
        self.settings.is_protected_port(port)
    }

    fn is_asset(&self, addr: &Addr) -> bool {
        self.assets.contains(addr)
    }

    fn conduit(&self, key: &ConduitKey) -> Option<Conduit> {
        let wanted = key.data();
        self.conduits
            .iter()
            .find(|(k, _)| {
                k.prefix_len <= key.prefix_len && prefix_matches(&k.data(), &wanted, k.prefix_len)
            })
            .map(|(_, c)| *c)
    }

    fn rule(&self, key: &RuleKey) -> Option<&Rule> {
        self.rules.get(key)
    }

    fn flow(&self, key: &FlowKey) -> Option<FlowState> {
        self.flows.get(key).copied()
    }

    fn set_flow(&mut self, key: &FlowKey, state: &FlowState) {
        self.flows.insert(*key, *state);
    }
}
