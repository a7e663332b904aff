//! The nftables base ruleset: L3/L4 default deny around the XDP Modbus
//! inspection (IEC 62443-3-3 SR 5.1/5.2: default deny, explicit allow per
//! conduit).
//!
//! One table of our own (`bessai` by default), replaced as a whole and
//! atomically: the batch adds the table (so that it exists), deletes it,
//! and adds it again with every chain and rule; `nft -f` applies a batch
//! as one transaction, so a rejected ruleset leaves the previous one whole.
//! Routed gateways filter in family `inet`; a transparent bridge filters the
//! forwarded frames in family `bridge` and its own input in `inet`.
//!
//! The bridge family has no connection tracking unless the kernel has
//! `CONFIG_NF_CONNTRACK_BRIDGE` (this machine's does not), so the bridge
//! rules are stateless pairs: a conduit's requests one way, its replies
//! (from the asset's port to the conduit's sources) the other. TCP state of
//! conduit traffic is tracked by the XDP program, which denies segments of
//! connections it did not see open.

mod neighbours;
mod run;

use std::{borrow::Cow, net::IpAddr};

use bessai_policy::{ConduitMeta, IpNet};
use nftables::{
    expr::{
        CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem,
    },
    schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table},
    stmt::{Counter, Match, Operator, Statement},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};

pub use crate::config::{Deployment, Management};

/// The gateway ports of one zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneInterfaces {
    pub zone: String,
    pub ifaces: Vec<String>,
}

pub struct RulesetSpec<'a> {
    pub table: String,
    pub deployment: Deployment,
    pub zones: Vec<ZoneInterfaces>,
    pub conduits: &'a [ConduitMeta],
    pub management: Option<Management>,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("{program} not found: the gateway needs nftables (Debian: apt install nftables)")]
    NotFound { program: &'static str },
    #[error("cannot run nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("encoding the ruleset: {0}")]
    Encode(String),
    #[error("nft rejected the ruleset: {0}")]
    Rejected(String),
    #[error("nft did not finish within {0:?}")]
    Timeout(std::time::Duration),
}

pub use run::{NFT_TIMEOUT, Nft};

/// Comment of the rule that accepts a conduit's connections.
pub fn conduit_comment(name: &str) -> String {
    format!("conduit {name}")
}

const FORWARD: &str = "forward";
const INPUT: &str = "input";

fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Owned(protocol.to_string()),
            field: Cow::Owned(field.to_string()),
        },
    )))
}

fn matches(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// `left` equals the single item, or is one of several; callers never pass
/// an empty list (nft rejects an empty anonymous set).
fn is_in(left: Expression<'static>, mut items: Vec<Expression<'static>>) -> Statement<'static> {
    let right = if items.len() == 1 {
        items.remove(0)
    } else {
        Expression::Named(NamedExpression::Set(
            items.into_iter().map(SetItem::Element).collect(),
        ))
    };
    // Against an anonymous set, nft reads `==` as membership.
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn ct_state(states: &[&str]) -> Statement<'static> {
    let left = Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed("state"),
        family: None,
        dir: None,
    }));
    let right = if states.len() == 1 {
        s(states[0])
    } else {
        Expression::List(states.iter().map(|x| s(x)).collect())
    };
    Statement::Match(Match {
        left,
        right,
        op: Operator::IN,
    })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

fn net_expr(n: &IpNet) -> Expression<'static> {
    let full = if n.addr.is_ipv4() { 32 } else { 128 };
    if u32::from(n.prefix) == full {
        s(&n.addr.to_string())
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(s(&n.addr.to_string())),
            len: u32::from(n.prefix),
        }))
    }
}

fn family_proto(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() { "ip" } else { "ip6" }
}

struct Batch {
    family: NfFamily,
    table: String,
    objects: Vec<NfObject<'static>>,
}

impl Batch {
    fn chain(&mut self, name: &str, hook: NfHook, policy: NfChainPolicy) {
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(
                Chain {
                    family: self.family,
                    table: Cow::Owned(self.table.clone()),
                    name: Cow::Owned(name.to_string()),
                    _type: Some(NfChainType::Filter),
                    hook: Some(hook),
                    prio: Some(0),
                    policy: Some(policy),
                    ..Chain::default()
                },
            ))));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>, comment: Option<String>) {
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
                family: self.family,
                table: Cow::Owned(self.table.clone()),
                chain: Cow::Owned(chain.to_string()),
                expr: Cow::Owned(expr),
                comment: comment.map(Cow::Owned),
                ..Rule::default()
            }))));
    }

    /// Add, delete, add: replaces the table whether or not it existed.
    fn replace_table(&mut self) {
        let table = || {
            NfListObject::Table(Table {
                family: self.family,
                name: Cow::Owned(self.table.clone()),
                handle: None,
            })
        };
        let (add, delete, add_again) = (table(), table(), table());
        self.objects.push(NfObject::CmdObject(NfCmd::Add(add)));
        self.objects
            .push(NfObject::CmdObject(NfCmd::Delete(delete)));
        self.objects
            .push(NfObject::CmdObject(NfCmd::Add(add_again)));
    }

    /// Connection tracking first: replies and related ICMP of allowed
    /// connections pass, invalid packets never do.
    fn stateful_head(&mut self, chain: &str) {
        self.rule(
            chain,
            vec![
                ct_state(&["established", "related"]),
                counter(),
                Statement::Accept(None),
            ],
            None,
        );
        self.rule(
            chain,
            vec![ct_state(&["invalid"]), counter(), Statement::Drop(None)],
            Some("invalid".into()),
        );
    }

    /// IPv6 neighbour discovery, without which no IPv6 host resolves another.
    fn neighbour_discovery(&mut self, chain: &str) {
        self.rule(
            chain,
            vec![
                is_in(
                    payload("icmpv6", "type"),
                    [
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert",
                        "nd-router-solicit",
                        "nd-router-advert",
                    ]
                    .iter()
                    .map(|t| s(t))
                    .collect(),
                ),
                Statement::Accept(None),
            ],
            Some("ipv6 neighbour discovery".into()),
        );
    }

    fn default_deny(&mut self, chain: &str) {
        self.rule(
            chain,
            vec![counter(), Statement::Drop(None)],
            Some("default deny".into()),
        );
    }
}

fn ifaces_of<'a>(zones: &'a [ZoneInterfaces], zone: &str) -> &'a [String] {
    zones
        .iter()
        .find(|z| z.zone == zone)
        .map_or(&[], |z| z.ifaces.as_slice())
}

/// What every rule of a conduit matches besides the protocol: the ports
/// of both its zones and its clients of its asset's address family.
struct Ends<'a> {
    from: &'a [String],
    to: &'a [String],
    /// `ip` or `ip6`.
    proto: &'static str,
    sources: Vec<&'a IpNet>,
}

impl<'a> Ends<'a> {
    /// None when the conduit can never match: without ports on both sides
    /// an accept would match on any port, including ones without XDP, and
    /// without clients of the asset's family nothing can connect.
    fn of(zones: &'a [ZoneInterfaces], c: &'a ConduitMeta) -> Option<Self> {
        let proto = family_proto(&c.address);
        let sources: Vec<&IpNet> = c
            .sources
            .iter()
            .filter(|n| family_proto(&n.addr) == proto)
            .collect();
        let (from, to) = (ifaces_of(zones, &c.from), ifaces_of(zones, &c.to));
        (!sources.is_empty() && !from.is_empty() && !to.is_empty()).then_some(Self {
            from,
            to,
            proto,
            sources,
        })
    }

    fn clients(&self) -> Vec<Expression<'static>> {
        self.sources.iter().map(|n| net_expr(n)).collect()
    }
}

/// In on `iif`, out on `oif`.
fn on_ports(iif: &[String], oif: &[String]) -> Vec<Statement<'static>> {
    vec![
        is_in(meta(MetaKey::Iifname), iif.iter().map(|i| s(i)).collect()),
        is_in(meta(MetaKey::Oifname), oif.iter().map(|i| s(i)).collect()),
    ]
}

/// The accept rules of one conduit, for the address family of its asset;
/// stateless (requests and replies) in the bridge family.
fn conduit_rules(b: &mut Batch, zones: &[ZoneInterfaces], c: &ConduitMeta, stateful: bool) {
    let Some(ends) = Ends::of(zones, c) else {
        return;
    };
    let proto = ends.proto;
    let asset = || s(&c.address.to_string());
    let port = || Expression::Number(u32::from(c.port));

    let mut request = on_ports(ends.from, ends.to);
    request.push(is_in(payload(proto, "saddr"), ends.clients()));
    request.push(matches(payload(proto, "daddr"), asset()));
    request.push(matches(payload("tcp", "dport"), port()));
    if stateful {
        request.push(ct_state(&["new"]));
    }
    request.extend([counter(), Statement::Accept(None)]);
    b.rule(FORWARD, request, Some(conduit_comment(&c.name)));
    if !stateful {
        let mut reply = on_ports(ends.to, ends.from);
        reply.push(matches(payload(proto, "saddr"), asset()));
        reply.push(matches(payload("tcp", "sport"), port()));
        reply.push(is_in(payload(proto, "daddr"), ends.clients()));
        reply.extend([counter(), Statement::Accept(None)]);
        b.rule(
            FORWARD,
            reply,
            Some(format!("{} replies", conduit_comment(&c.name))),
        );
    }
}

fn input_chain(b: &mut Batch, management: Option<&Management>) {
    b.chain(INPUT, NfHook::Input, NfChainPolicy::Drop);
    b.rule(
        INPUT,
        vec![
            matches(meta(MetaKey::Iifname), s("lo")),
            Statement::Accept(None),
        ],
        None,
    );
    b.stateful_head(INPUT);
    b.neighbour_discovery(INPUT);
    if let Some(m) = management
        && !m.tcp_ports.is_empty()
    {
        for proto in ["ip", "ip6"] {
            let nets: Vec<Expression<'static>> = m
                .networks
                .iter()
                .filter(|n| family_proto(&n.addr) == proto)
                .map(net_expr)
                .collect();
            if nets.is_empty() {
                continue;
            }
            b.rule(
                INPUT,
                vec![
                    is_in(payload(proto, "saddr"), nets),
                    is_in(
                        payload("tcp", "dport"),
                        m.tcp_ports
                            .iter()
                            .map(|p| Expression::Number(u32::from(*p)))
                            .collect(),
                    ),
                    ct_state(&["new"]),
                    counter(),
                    Statement::Accept(None),
                ],
                Some("management".into()),
            );
        }
    }
    b.default_deny(INPUT);
}

/// The complete ruleset, as one batch.
pub fn build(spec: &RulesetSpec) -> Nftables<'static> {
    let mut objects = Vec::new();
    let forward_family = match spec.deployment {
        Deployment::Routed => NfFamily::INet,
        Deployment::Bridge => NfFamily::Bridge,
    };
    let mut fwd = Batch {
        family: forward_family,
        table: spec.table.clone(),
        objects: Vec::new(),
    };
    fwd.replace_table();
    fwd.chain(FORWARD, NfHook::Forward, NfChainPolicy::Drop);
    let stateful = spec.deployment == Deployment::Routed;
    if stateful {
        fwd.stateful_head(FORWARD);
    }
    for c in spec.conduits {
        if !stateful {
            neighbours::conduit_resolution(&mut fwd, &spec.zones, c);
        }
        conduit_rules(&mut fwd, &spec.zones, c, stateful);
    }
    fwd.default_deny(FORWARD);
    match spec.deployment {
        Deployment::Routed => input_chain(&mut fwd, spec.management.as_ref()),
        Deployment::Bridge => {
            // The box's own address lives on the bridge: family inet.
            let mut own = Batch {
                family: NfFamily::INet,
                table: spec.table.clone(),
                objects: Vec::new(),
            };
            own.replace_table();
            input_chain(&mut own, spec.management.as_ref());
            objects.append(&mut own.objects);
        }
    }
    let mut all = fwd.objects;
    all.append(&mut objects);
    Nftables {
        objects: Cow::Owned(all),
    }
}

/// The ruleset as nft reads it, for review (`bessai-gw nft --dry-run`).
pub fn to_json(ruleset: &Nftables) -> String {
    serde_json::to_string_pretty(ruleset).unwrap_or_default()
}

#[cfg(test)]
mod tests;
