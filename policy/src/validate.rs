//! From the file as written to a [`Policy`]: every check, every error
//! collected with its position, nothing touches the kernel.

use std::{collections::HashMap, net::IpAddr, ops::Range as Span};

use bessai_common::{
    MAX_POLICY_CONDUITS, MAX_PORTS, MAX_RANGES, MAX_ZONES,
    modbus::{RuleShape, rule_shape},
};
use toml::Spanned;

use crate::{
    Asset, Conduit, Mode, OnDeny, Policy, Rule, Zone,
    error::{ErrorKind, PolicyError, PolicyErrors, Positions},
    functions,
    net::IpNet,
    ranges::{self, Range},
    raw::{AddrSpec, FunctionSpec, RawConduit, RawPolicy, RawRule},
};

struct Checker<'a> {
    file: &'a str,
    pos: Positions<'a>,
    errors: Vec<PolicyError>,
}

impl Checker<'_> {
    fn err(&mut self, span: Span<usize>, kind: ErrorKind) {
        let (line, column) = self.pos.line_col(span.start);
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line,
            column,
            kind,
        });
    }

    fn line(&self, span: &Span<usize>) -> usize {
        self.pos.line_col(span.start).0
    }

    /// Records a name, or an error when it was seen before.
    fn unique(
        &mut self,
        seen: &mut HashMap<String, usize>,
        what: &'static str,
        name: &Spanned<String>,
    ) {
        let line = self.line(&name.span());
        if let Some(first_line) = seen.get(name.get_ref()) {
            let kind = ErrorKind::DuplicateName {
                what,
                name: name.get_ref().clone(),
                first_line: *first_line,
            };
            self.err(name.span(), kind);
        } else {
            seen.insert(name.get_ref().clone(), line);
        }
    }

    /// The position of `name` among `names`, or an error listing the known ones.
    fn find<'n>(
        &mut self,
        names: impl Iterator<Item = &'n str> + Clone,
        what: &'static str,
        name: &Spanned<String>,
    ) -> Option<usize> {
        let found = names.clone().position(|n| n == name.get_ref());
        if found.is_none() {
            let known = names.collect::<Vec<_>>().join(", ");
            let kind = ErrorKind::UnknownName {
                what,
                name: name.get_ref().clone(),
                known: Some(known),
            };
            self.err(name.span(), kind);
        }
        found
    }

    fn units(&mut self, list: &Spanned<Vec<Spanned<i64>>>) -> Vec<u8> {
        if list.get_ref().is_empty() {
            self.err(list.span(), ErrorKind::Empty("unit_ids"));
        }
        let mut out = Vec::new();
        for u in list.get_ref() {
            match u8::try_from(*u.get_ref()) {
                Ok(v) => out.push(v),
                Err(_) => self.err(
                    u.span(),
                    ErrorKind::OutOfRange {
                        what: "unit id",
                        value: *u.get_ref(),
                        min: 0,
                        max: 255,
                    },
                ),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn net(&mut self, text: &Spanned<String>) -> Option<IpNet> {
        match text.get_ref().parse::<IpNet>() {
            Ok(n) if n.normalized() != n => {
                let kind = ErrorKind::HostBits {
                    net: n.to_string(),
                    fixed: n.normalized().to_string(),
                };
                self.err(text.span(), kind);
                None
            }
            Ok(n) => Some(n),
            Err(msg) => {
                self.err(text.span(), ErrorKind::BadAddress(msg));
                None
            }
        }
    }

    fn word<T: Copy>(
        &mut self,
        v: &Option<Spanned<String>>,
        what: &'static str,
        allowed: &'static str,
        table: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(v) = v else { return default };
        match table.iter().find(|(w, _)| *w == v.get_ref()) {
            Some((_, t)) => *t,
            None => {
                self.err(
                    v.span(),
                    ErrorKind::BadWord {
                        what,
                        value: v.get_ref().clone(),
                        allowed,
                    },
                );
                default
            }
        }
    }

    /// An address list: each entry parsed, no overlaps, merged, bounded.
    fn range_list(&mut self, list: &Spanned<Vec<Spanned<AddrSpec>>>, max: u32) -> Vec<Range> {
        let mut parsed = Vec::new();
        let mut spans = Vec::new();
        for item in list.get_ref() {
            match ranges::parse(item.get_ref(), max) {
                Ok(r) => {
                    parsed.push(r);
                    spans.push(item.span());
                }
                Err(kind) => self.err(item.span(), kind),
            }
        }
        if list.get_ref().is_empty() {
            self.err(list.span(), ErrorKind::Empty("an address list"));
        }
        if let Some((i, j)) = ranges::overlap(&parsed) {
            let kind = ErrorKind::OverlappingRanges {
                a: ranges::show(parsed[i]),
                b: ranges::show(parsed[j]),
            };
            self.err(spans[j].clone(), kind);
        }
        let merged = ranges::merge(parsed);
        if merged.len() > MAX_RANGES {
            self.err(
                list.span(),
                ErrorKind::TooManyRanges {
                    count: merged.len(),
                    max: MAX_RANGES,
                },
            );
        }
        merged
    }

    fn function(&mut self, f: &Spanned<FunctionSpec>) -> Option<u8> {
        match f.get_ref() {
            FunctionSpec::Code(c) if (1..=127).contains(c) => Some(*c as u8),
            FunctionSpec::Code(c) => {
                self.err(f.span(), ErrorKind::BadFunctionCode(*c));
                None
            }
            FunctionSpec::Name(n) => {
                let code = functions::code(n).or_else(|| {
                    n.parse::<i64>()
                        .ok()
                        .filter(|c| (1..=127).contains(c))
                        .map(|c| c as u8)
                });
                if code.is_none() {
                    self.err(
                        f.span(),
                        ErrorKind::UnknownFunctionName {
                            name: n.clone(),
                            suggestion: functions::suggest(n),
                        },
                    );
                }
                code
            }
        }
    }

    fn rule(&mut self, raw: &Spanned<RawRule>) -> Option<Rule> {
        let r = raw.get_ref();
        let function = self.function(&r.function)?;
        let name = functions::name(function);
        let shape = rule_shape(function);
        let wanted = match shape {
            RuleShape::Addresses => "`addresses` (and no other list)",
            RuleShape::ReadWrite => "`read` and `write` address lists (and no other list)",
            RuleShape::SubFunctions => "`subfunctions` (and no other list)",
            RuleShape::MeiTypes => "`mei_types` (and no other list)",
            RuleShape::Whole => "no address list",
        };
        let present = [
            r.addresses.is_some(),
            r.read.is_some(),
            r.write.is_some(),
            r.subfunctions.is_some(),
            r.mei_types.is_some(),
        ];
        let expected = match shape {
            RuleShape::Addresses => [true, false, false, false, false],
            RuleShape::ReadWrite => [false, true, true, false, false],
            RuleShape::SubFunctions => [false, false, false, true, false],
            RuleShape::MeiTypes => [false, false, false, false, true],
            RuleShape::Whole => [false; 5],
        };
        if present != expected {
            self.err(
                r.function.span(),
                ErrorKind::RuleShape {
                    function,
                    name,
                    wanted,
                },
            );
            return None;
        }
        let (ranges, write) = match shape {
            RuleShape::Addresses => (self.range_list(r.addresses.as_ref()?, 0xffff), Vec::new()),
            RuleShape::ReadWrite => (
                self.range_list(r.read.as_ref()?, 0xffff),
                self.range_list(r.write.as_ref()?, 0xffff),
            ),
            RuleShape::SubFunctions => (
                self.range_list(r.subfunctions.as_ref()?, 0xffff),
                Vec::new(),
            ),
            RuleShape::MeiTypes => (self.range_list(r.mei_types.as_ref()?, 0xff), Vec::new()),
            RuleShape::Whole => (Vec::new(), Vec::new()),
        };
        let narrow = |v: Vec<Range>| v.into_iter().map(|(s, e)| (s as u16, e as u16)).collect();
        Some(Rule {
            function,
            ranges: narrow(ranges),
            write_ranges: narrow(write),
            line: self.line(&raw.span()),
        })
    }

    fn conduit(
        &mut self,
        raw: &Spanned<RawConduit>,
        zones: &[Zone],
        assets: &[Asset],
    ) -> Option<Conduit> {
        let c = raw.get_ref();
        let zone = self.find(zones.iter().map(|z| z.name.as_str()), "zone", &c.from);
        let asset = self.find(assets.iter().map(|a| a.name.as_str()), "asset", &c.to);
        if c.sources.get_ref().is_empty() {
            self.err(c.sources.span(), ErrorKind::Empty("sources"));
        }
        let mut sources = Vec::new();
        for s in c.sources.get_ref() {
            let Some(net) = self.net(s) else { continue };
            if let Some(z) = zone.map(|z| &zones[z])
                && !z.networks.iter().any(|n| n.covers(&net))
            {
                let networks = z
                    .networks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                self.err(
                    s.span(),
                    ErrorKind::OutsideZone {
                        what: "source",
                        addr: net.to_string(),
                        zone: z.name.clone(),
                        networks,
                    },
                );
            }
            sources.push(net);
        }
        let mode = self.word(
            &c.mode,
            "mode",
            "\"enforce\" or \"monitor\"",
            &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)],
            Mode::Enforce,
        );
        let on_deny = self.word(
            &c.on_deny,
            "on_deny",
            "\"reset\" or \"drop\"",
            &[("reset", OnDeny::Reset), ("drop", OnDeny::Drop)],
            OnDeny::Reset,
        );
        let asset_units = asset
            .map(|a| assets[a].unit_ids.clone())
            .unwrap_or_default();
        let unit_ids = match &c.unit_ids {
            Some(list) => {
                let units = self.units(list);
                for u in list.get_ref() {
                    if asset.is_some()
                        && u8::try_from(*u.get_ref()).is_ok_and(|v| !asset_units.contains(&v))
                    {
                        let kind = ErrorKind::UnitNotOnAsset {
                            unit: *u.get_ref(),
                            asset: c.to.get_ref().clone(),
                        };
                        self.err(u.span(), kind);
                    }
                }
                units
            }
            None => asset_units,
        };
        if c.rules.is_empty() {
            self.err(
                c.name.span(),
                ErrorKind::Empty("a conduit's rules ([[conduit.rule]])"),
            );
        }
        let mut rules: Vec<Rule> = Vec::new();
        for raw_rule in &c.rules {
            let Some(rule) = self.rule(raw_rule) else {
                continue;
            };
            if let Some(first) = rules.iter().find(|r| r.function == rule.function) {
                let kind = ErrorKind::DuplicateFunction {
                    function: rule.function,
                    first_line: first.line,
                };
                self.err(raw_rule.get_ref().function.span(), kind);
                continue;
            }
            rules.push(rule);
        }
        Some(Conduit {
            name: c.name.get_ref().clone(),
            from: c.from.get_ref().clone(),
            sources,
            asset: asset?,
            mode,
            on_deny,
            unit_ids,
            rules,
            line: self.line(&raw.span()),
        })
    }
}

pub fn validate(source: &str, file: &str) -> Result<Policy, PolicyErrors> {
    let mut ck = Checker {
        file,
        pos: Positions::new(source),
        errors: Vec::new(),
    };
    let raw: RawPolicy = match toml::from_str(source) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            ck.err(span, ErrorKind::Syntax(e.message().to_string()));
            return Err(PolicyErrors(ck.errors));
        }
    };
    if *raw.version.get_ref() != 1 {
        ck.err(
            raw.version.span(),
            ErrorKind::Version(*raw.version.get_ref()),
        );
    }

    let mut names = HashMap::new();
    let mut zones = Vec::new();
    for (i, z) in raw.zones.iter().enumerate() {
        let z = z.get_ref();
        ck.unique(&mut names, "zone", &z.name);
        if i == MAX_ZONES {
            // Interfaces carry their zones as a 64-bit mask in the kernel.
            ck.err(
                z.name.span(),
                ErrorKind::TooMany {
                    what: "zones",
                    max: MAX_ZONES,
                },
            );
        }
        if z.networks.get_ref().is_empty() {
            ck.err(z.networks.span(), ErrorKind::Empty("networks"));
        }
        let networks = z
            .networks
            .get_ref()
            .iter()
            .filter_map(|n| ck.net(n))
            .collect();
        zones.push(Zone {
            name: z.name.get_ref().clone(),
            networks,
        });
    }

    let mut names = HashMap::new();
    let mut assets = Vec::new();
    let mut ports: Vec<u16> = Vec::new();
    for a in &raw.assets {
        let a = a.get_ref();
        ck.unique(&mut names, "asset", &a.name);
        let address: Option<IpAddr> = match a.address.get_ref().parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                ck.err(
                    a.address.span(),
                    ErrorKind::BadAddress(format!(
                        "{:?} is not an IP address",
                        a.address.get_ref()
                    )),
                );
                None
            }
        };
        let zone = ck
            .find(zones.iter().map(|z| z.name.as_str()), "zone", &a.zone)
            .map(|z| &zones[z]);
        match (zone, address) {
            (Some(z), Some(ip)) if !z.networks.iter().any(|n| n.contains(ip)) => {
                let networks = z
                    .networks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                ck.err(
                    a.address.span(),
                    ErrorKind::OutsideZone {
                        what: "asset address",
                        addr: ip.to_string(),
                        zone: z.name.clone(),
                        networks,
                    },
                );
            }
            _ => {}
        }
        let port = match &a.port {
            None => 502,
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(v) if v > 0 => v,
                _ => {
                    ck.err(
                        p.span(),
                        ErrorKind::OutOfRange {
                            what: "port",
                            value: *p.get_ref(),
                            min: 1,
                            max: 65535,
                        },
                    );
                    502
                }
            },
        };
        if !ports.contains(&port) {
            ports.push(port);
            if ports.len() > MAX_PORTS {
                ck.err(
                    a.name.span(),
                    ErrorKind::TooMany {
                        what: "distinct asset ports",
                        max: MAX_PORTS,
                    },
                );
            }
        }
        let unit_ids = ck.units(&a.unit_ids);
        if let Some(address) = address {
            assets.push(Asset {
                name: a.name.get_ref().clone(),
                zone: a.zone.get_ref().clone(),
                address,
                unit_ids,
                port,
            });
        }
    }

    let mut names = HashMap::new();
    let mut conduits: Vec<Conduit> = Vec::new();
    for raw_c in &raw.conduits {
        ck.unique(&mut names, "conduit", &raw_c.get_ref().name);
        let Some(c) = ck.conduit(raw_c, &zones, &assets) else {
            continue;
        };
        for (si, s) in c.sources.iter().enumerate() {
            if let Some(other) = conduits
                .iter()
                .find(|o| o.asset == c.asset && o.sources.contains(s))
            {
                let kind = ErrorKind::AmbiguousConduit {
                    source_net: s.to_string(),
                    asset: assets[c.asset].name.clone(),
                    other: other.name.clone(),
                };
                let span = raw_c
                    .get_ref()
                    .sources
                    .get_ref()
                    .get(si)
                    .map_or(raw_c.span(), Spanned::span);
                ck.err(span, kind);
            }
        }
        conduits.push(c);
    }
    if conduits.len() > MAX_POLICY_CONDUITS as usize {
        ck.err(
            0..0,
            ErrorKind::TooMany {
                what: "conduits",
                max: MAX_POLICY_CONDUITS as usize,
            },
        );
    }
    if !ck.errors.is_empty() {
        ck.errors.sort_by_key(|e| (e.line, e.column));
        return Err(PolicyErrors(ck.errors));
    }
    let site = raw.site.map(|s| s.into_inner()).unwrap_or_default();
    Ok(Policy {
        file: file.to_string(),
        site,
        zones,
        assets,
        conduits,
    })
}
