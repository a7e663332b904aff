//! From a validated policy to the entries of the data-plane maps.

use std::net::IpAddr;

use bessai_common::{
    AddrRange, Conduit as ConduitValue, ConduitKey, MODE_ENFORCE, MODE_MONITOR, ON_DENY_DROP,
    ON_DENY_RESET, PART_MAIN, PART_WRITE, Rule as RuleValue, RuleKey, Settings,
};

use crate::{Addr, IpNet, Mode, OnDeny, Policy, net::mapped};

/// What the data plane needs, for the BPF maps and the host tables alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub settings: Settings,
    /// One LPM entry per (conduit, source network).
    pub conduits: Vec<(ConduitKey, ConduitValue)>,
    pub rules: Vec<(RuleKey, RuleValue)>,
    pub assets: Vec<Addr>,
    /// Index = conduit id.
    pub conduits_meta: Vec<ConduitMeta>,
    /// Zone names; a zone's index is its bit in the kernel's ingress masks.
    pub zones: Vec<String>,
}

/// A conduit as events and reports name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConduitMeta {
    pub name: String,
    /// Zone of the clients.
    pub from: String,
    /// Source networks of the clients.
    pub sources: Vec<IpNet>,
    pub asset: String,
    /// Zone of the asset.
    pub to: String,
    pub address: IpAddr,
    pub port: u16,
    pub mode: Mode,
    pub on_deny: OnDeny,
}

fn rule_value(ranges: &[(u16, u16)]) -> RuleValue {
    let mut r = RuleValue::EMPTY;
    for (slot, (s, e)) in r.ranges.iter_mut().zip(ranges) {
        *slot = AddrRange { start: *s, end: *e };
    }
    r.count = ranges.len().min(r.ranges.len()) as u8;
    r
}

/// A zone's bit in the kernel's ingress masks: its position in the policy
/// (validation keeps zones below `MAX_ZONES` and names them all).
pub fn zone_index(p: &Policy, zone: &str) -> u8 {
    p.zones
        .iter()
        .position(|z| z.name == zone)
        .map_or(u8::MAX, |i| i as u8)
}

pub fn compile(p: &Policy) -> Compiled {
    let mut settings = Settings::default();
    let mut ports: Vec<u16> = p.assets.iter().map(|a| a.port).collect();
    ports.sort_unstable();
    ports.dedup();
    for (slot, port) in settings.ports.iter_mut().zip(ports) {
        *slot = port;
    }
    let mut conduits = Vec::new();
    let mut rules = Vec::new();
    let mut meta = Vec::new();
    for (id, c) in p.conduits.iter().enumerate() {
        let id = id as u16;
        let asset = &p.assets[c.asset];
        let mut units = [0u64; 4];
        for u in &c.unit_ids {
            units[(*u >> 6) as usize] |= 1 << (u & 63);
        }
        let value = ConduitValue {
            id,
            port: asset.port,
            mode: match c.mode {
                Mode::Enforce => MODE_ENFORCE,
                Mode::Monitor => MODE_MONITOR,
            },
            on_deny: match c.on_deny {
                OnDeny::Reset => ON_DENY_RESET,
                OnDeny::Drop => ON_DENY_DROP,
            },
            client_zone: zone_index(p, &c.from),
            server_zone: zone_index(p, &asset.zone),
            units,
        };
        for src in &c.sources {
            let key = ConduitKey::with_prefix(
                0,
                mapped(asset.address),
                asset.port,
                mapped(src.addr),
                src.mapped_prefix(),
            );
            conduits.push((key, value));
        }
        for r in &c.rules {
            rules.push((
                RuleKey {
                    conduit: id,
                    function: r.function,
                    part: PART_MAIN,
                },
                rule_value(&r.ranges),
            ));
            if !r.write_ranges.is_empty() {
                rules.push((
                    RuleKey {
                        conduit: id,
                        function: r.function,
                        part: PART_WRITE,
                    },
                    rule_value(&r.write_ranges),
                ));
            }
        }
        meta.push(ConduitMeta {
            name: c.name.clone(),
            from: c.from.clone(),
            sources: c.sources.clone(),
            asset: asset.name.clone(),
            to: asset.zone.clone(),
            address: asset.address,
            port: asset.port,
            mode: c.mode,
            on_deny: c.on_deny,
        });
    }
    rules.sort_by_key(|(k, _)| *k);
    let mut assets: Vec<Addr> = p.assets.iter().map(|a| mapped(a.address)).collect();
    assets.sort_unstable();
    assets.dedup();
    Compiled {
        settings,
        conduits,
        rules,
        assets,
        conduits_meta: meta,
        zones: p.zones.iter().map(|z| z.name.clone()).collect(),
    }
}
