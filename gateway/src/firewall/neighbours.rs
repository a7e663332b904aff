//! Address resolution across a transparent bridge, limited to what the
//! conduits need.
//!
//! A bridge forwards ARP and IPv6 neighbour discovery like any other frame.
//! Passing all of it would let either zone map the other (ARP scans),
//! poison the other zone's caches (gratuitous ARP, forged advertisements)
//! and, with IPv6 router advertisements, re-route the other zone's traffic.
//! A conduit's clients only need to resolve its asset and the asset its
//! clients, so that is all that crosses: ARP and neighbour solicitations
//! and advertisements between a conduit's sources and its asset, on the
//! conduit's ports. Router solicitations and advertisements never cross
//! (the default deny drops them).

use bessai_policy::ConduitMeta;
use nftables::stmt::Statement;

use super::{Batch, Ends, FORWARD, ZoneInterfaces, counter, is_in, matches, on_ports, payload, s};

/// The ARP (IPv4) or neighbour discovery (IPv6) rules of one conduit.
pub(super) fn conduit_resolution(b: &mut Batch, zones: &[ZoneInterfaces], c: &ConduitMeta) {
    let Some(ends) = Ends::of(zones, c) else {
        return;
    };
    let asset = || vec![s(&c.address.to_string())];
    // (ingress ports, egress ports, sender, target)
    let directions = [
        (ends.from, ends.to, ends.clients(), asset()),
        (ends.to, ends.from, asset(), ends.clients()),
    ];
    let comment = format!("conduit {} address resolution", c.name);
    for (iif, oif, sender, target) in directions {
        let mut expr = on_ports(iif, oif);
        if ends.proto == "ip" {
            // ARP carries the addresses in its own header: the sender's and
            // the one asked for (requests) or answered (replies).
            expr.push(matches(payload("ether", "type"), s("arp")));
            expr.push(is_in(payload("arp", "saddr ip"), sender));
            expr.push(is_in(payload("arp", "daddr ip"), target));
        } else {
            // Solicitations go to a multicast address, so only the sender
            // is matched; the type keeps router messages out.
            expr.push(is_in(
                payload("icmpv6", "type"),
                vec![s("nd-neighbor-solicit"), s("nd-neighbor-advert")],
            ));
            expr.push(is_in(payload("ip6", "saddr"), sender));
        }
        expr.extend([counter(), Statement::Accept(None)]);
        b.rule(FORWARD, expr, Some(comment.clone()));
    }
}
