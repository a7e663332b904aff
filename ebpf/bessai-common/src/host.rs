//! The host side of [`Tables`]: the same lookups as the BPF maps, in memory,
//! for tests and pcap replay. Semantics follow the kernel's maps exactly
//! (longest-prefix match over the key's leading bits; flows keyed bytewise),
//! except that the flow tables here never evict.

use std::collections::{HashMap, HashSet};

use crate::{
    decide::{Flows, Policy, Tables},
    types::{
        Addr, Conduit, ConduitKey, FlowKey, FlowState, HalfOpen, NUM_STATS, Rule, RuleKey,
        Settings, StreamKey,
    },
};

/// A compiled policy in memory.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    pub settings: Settings,
    /// LPM entries, longest prefix first.
    conduits: Vec<(ConduitKey, Conduit)>,
    rules: HashMap<RuleKey, Rule>,
    assets: HashSet<Addr>,
    /// Zones of the interface frames arrive on; every zone by default (a
    /// capture does not say which port a frame came in on).
    pub ingress_zones: u64,
    pub stream_key: StreamKey,
}

/// Connection state in memory.
#[derive(Clone, Debug, Default)]
pub struct HostFlows {
    flows: HashMap<FlowKey, FlowState>,
    half_open: HashMap<FlowKey, HalfOpen>,
    /// The kernel's `STAT_*` counters.
    pub stats: [u64; NUM_STATS as usize],
}

#[derive(Clone, Debug, Default)]
pub struct HostTables {
    pub policy: HostPolicy,
    pub flows: HostFlows,
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
            policy: HostPolicy {
                settings,
                conduits,
                rules: rules.into_iter().collect(),
                assets: assets.into_iter().collect(),
                ingress_zones: u64::MAX,
                stream_key: random_stream_key(),
            },
            flows: HostFlows::default(),
        }
    }

    /// Forgets every tracked connection (as a fresh program would).
    pub fn clear_flows(&mut self) {
        self.flows.flows.clear();
        self.flows.half_open.clear();
    }

    pub fn flow_count(&self) -> usize {
        self.flows.flows.len()
    }

    pub fn flow(&self, key: &FlowKey) -> Option<&FlowState> {
        self.flows.flows.get(key)
    }

    pub fn half_open(&self, key: &FlowKey) -> Option<&HalfOpen> {
        self.flows.half_open.get(key)
    }
}

/// A stream key from the OS's random source, as the daemon writes into the kernel.
pub fn random_stream_key() -> StreamKey {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is seeded from the OS's random source; two draws of 31 bits.
    let draw = |i: u64| {
        let v = RandomState::new().hash_one(i) % (crate::stream_hash::P - 2);
        v + 2
    };
    StreamKey {
        r: [draw(1), draw(2)],
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

impl Policy for HostPolicy {
    fn is_protected_port(&self, port: u16) -> bool {
        self.settings.is_protected_port(port)
    }

    fn is_asset(&self, addr: &Addr) -> bool {
        self.assets.contains(addr)
    }

    fn conduit(&self, key: &ConduitKey) -> Option<&Conduit> {
        let wanted = key.data();
        self.conduits
            .iter()
            .find(|(k, _)| {
                k.prefix_len <= key.prefix_len && prefix_matches(&k.data(), &wanted, k.prefix_len)
            })
            .map(|(_, c)| c)
    }

    fn rule(&self, key: &RuleKey) -> Option<&Rule> {
        self.rules.get(key)
    }

    fn ingress_zones(&self) -> u64 {
        self.ingress_zones
    }

    fn stream_key(&self) -> StreamKey {
        self.stream_key
    }
}

impl Flows for HostFlows {
    fn flow_mut(&mut self, key: &FlowKey) -> Option<&mut FlowState> {
        self.flows.get_mut(key)
    }

    fn establish(&mut self, key: &FlowKey, next: u32, conduit: u16, server_zone: u8) -> bool {
        self.flows
            .insert(*key, FlowState::established(next, conduit, server_zone));
        true
    }

    fn remove_flow(&mut self, key: &FlowKey) {
        self.flows.remove(key);
    }

    fn half_open(&self, key: &FlowKey) -> Option<HalfOpen> {
        self.half_open.get(key).copied()
    }

    fn set_half_open(&mut self, key: &FlowKey, h: &HalfOpen) {
        self.half_open.insert(*key, *h);
    }

    fn remove_half_open(&mut self, key: &FlowKey) {
        self.half_open.remove(key);
    }

    fn count(&mut self, stat: u32) {
        if let Some(c) = self.stats.get_mut(stat as usize) {
            *c += 1;
        }
    }
}

impl Tables for HostTables {
    type Policy = HostPolicy;
    type Flows = HostFlows;

    fn split(&mut self) -> (&HostPolicy, &mut HostFlows) {
        (&self.policy, &mut self.flows)
    }
}
