//! `policy learn`: a draft policy that allows exactly what the captures show.
//!
//! Every well-formed request ADU to the Modbus port is grouped by client,
//! server and function; addresses become ranges (overlapping and adjacent
//! spans joined); each rule carries a comment with how many transactions it
//! covers and when they were first and last seen. Write functions are marked
//! for review. Malformed requests are not learned: a draft must not allow
//! what the data plane denies whatever the policy says.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
};

use bessai_common::{
    Conduit, FRAME_MAX, Layout, MAX_RANGES, NoObserver, Reason, Settings, decide,
    frame::Frame,
    host::HostTables,
    modbus::{RuleShape, is_write, judge_adu, rule_shape},
};
use bessai_policy::functions;

use bessai_policy::capture::{self, CaptureError};

#[derive(Default)]
struct Seen {
    count: u64,
    first_us: u64,
    last_us: u64,
    /// Inclusive spans (addresses, sub-functions or MEI types).
    spans: Vec<(u32, u32)>,
    /// FC 23: write spans.
    write_spans: Vec<(u32, u32)>,
}

#[derive(Default)]
struct Pair {
    units: BTreeSet<u8>,
    functions: BTreeMap<u8, Seen>,
}

/// What was learned, before it is written out.
#[derive(Default)]
pub struct Learned {
    /// (client, server, port) -> what the client did.
    pairs: BTreeMap<(IpAddr, IpAddr, u16), Pair>,
    pub malformed: u64,
    pub packets: u64,
}

pub fn learn(pcaps: &[PathBuf], port: u16) -> Result<Learned, CaptureError> {
    let mut learned = Learned::default();
    let mut settings = Settings::default();
    settings.ports[0] = port;
    // Only the framing is wanted from `decide`: with no conduits every
    // request is denied before its ADUs, and the layout tells where they are.
    let mut tables = HostTables::new(settings, [], [], []);
    let allow_nothing = Conduit {
        id: 0,
        port,
        mode: 0,
        on_deny: 0,
        client_zone: 0,
        server_zone: 0,
        units: [0; 4],
    };
    let mut buf = Box::new([0u8; FRAME_MAX]);
    for path in pcaps {
        capture::for_each_packet(path, |p| {
            learned.packets += 1;
            let n = p.frame.len().min(FRAME_MAX);
            buf[..n].copy_from_slice(&p.frame[..n]);
            let frame = Frame::new(&buf, n, p.frame.len());
            let mut lay = Layout::default();
            let d = decide(&frame, &mut tables, &mut NoObserver, &mut lay);
            if d.reason != Reason::NoConduit || lay.dst_port != port || lay.payload_len == 0 {
                return;
            }
            let (src, dst) = lay.addrs(&frame);
            let key = (
                crate::dataplane::addr(&src),
                crate::dataplane::addr(&dst),
                port,
            );
            let mut consumed = 0;
            while consumed < lay.payload_len {
                let v = judge_adu(
                    &frame,
                    lay.payload + consumed,
                    lay.payload_len - consumed,
                    &allow_nothing,
                    &tables.policy,
                );
                if v.len == 0 {
                    learned.malformed += 1;
                    break;
                }
                consumed += v.len;
                // With no unit allowed, a well-formed request stops at the unit check.
                if v.reason != Reason::UnitDenied {
                    learned.malformed += 1;
                    continue;
                }
                let i = v.info;
                let pair = learned.pairs.entry(key).or_default();
                pair.units.insert(i.unit);
                let seen = pair.functions.entry(i.function).or_default();
                if seen.count == 0 {
                    seen.first_us = p.ts_us;
                }
                seen.count += 1;
                seen.last_us = p.ts_us;
                let span = |a: u16, q: u16| (a as u32, a as u32 + q.max(1) as u32 - 1);
                match rule_shape(i.function) {
                    RuleShape::Addresses => seen.spans.push(span(i.address, i.quantity)),
                    RuleShape::ReadWrite => {
                        seen.spans.push(span(i.address, i.quantity));
                        seen.write_spans
                            .push(span(i.write_address, i.write_quantity));
                    }
                    RuleShape::SubFunctions | RuleShape::MeiTypes => {
                        seen.spans.push(span(i.address, 1))
                    }
                    RuleShape::Whole => {}
                }
            }
        })?;
    }
    Ok(learned)
}

/// Joins overlapping and adjacent spans; while more than the data plane's
/// limit remain, closes the smallest gap (the comment says so).
fn merge(spans: &[(u32, u32)]) -> (Vec<(u32, u32)>, bool) {
    let mut v = bessai_policy::ranges::merge(spans.to_vec());
    let mut widened = false;
    while v.len() > MAX_RANGES {
        let i = (0..v.len() - 1)
            .min_by_key(|&i| v[i + 1].0 - v[i].1)
            .unwrap_or(0);
        v[i].1 = v[i + 1].1;
        v.remove(i + 1);
        widened = true;
    }
    (v, widened)
}

fn list(v: &[(u32, u32)]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|r| format!("\"{}\"", bessai_policy::ranges::show(*r)))
        .collect();
    format!("[{}]", items.join(", "))
}

fn slug(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn host_net(ip: &IpAddr) -> String {
    format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })
}

/// UTC "YYYY-MM-DDTHH:MM:SSZ" from microseconds since the epoch.
fn utc(us: u64) -> String {
    let secs = us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Learned {
    /// The draft policy as TOML, valid for `policy check`.
    pub fn to_toml(&self, sources: &[PathBuf]) -> String {
        let mut out = String::new();
        let names: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(
            out,
            "# Draft policy learned by `bessai-gw policy learn` from: {}",
            names.join(", ")
        );
        let _ = writeln!(
            out,
            "# It allows exactly what the captures show. Review every rule before use:"
        );
        let _ = writeln!(
            out,
            "# rules marked REVIEW allow writes. {} malformed requests were not learned.",
            self.malformed
        );
        let _ = writeln!(out, "version = 1\nsite = \"learned\"\n");
        let clients: BTreeSet<IpAddr> = self.pairs.keys().map(|k| k.0).collect();
        let servers: BTreeMap<IpAddr, (u16, BTreeSet<u8>)> =
            self.pairs
                .iter()
                .fold(BTreeMap::new(), |mut m, ((_, s, port), pair)| {
                    let e = m.entry(*s).or_insert((*port, BTreeSet::new()));
                    e.1.extend(pair.units.iter().copied());
                    m
                });
        let nets = |ips: &mut dyn Iterator<Item = &IpAddr>| {
            ips.map(|ip| format!("\"{}\"", host_net(ip)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "[[zone]]\nname = \"clients\"\nnetworks = [{}]\n",
            nets(&mut clients.iter())
        );
        let _ = writeln!(
            out,
            "[[zone]]\nname = \"servers\"\nnetworks = [{}]\n",
            nets(&mut servers.keys())
        );
        for (ip, (port, units)) in &servers {
            let units: Vec<String> = units.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "[[asset]]\nname = \"asset-{}\"\nzone = \"servers\"\naddress = \"{ip}\"\nunit_ids = [{}]\nport = {port}\n",
                slug(ip),
                units.join(", ")
            );
        }
        for ((client, server, _), pair) in &self.pairs {
            let units: Vec<String> = pair.units.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "[[conduit]]\nname = \"{}-to-{}\"\nfrom = \"clients\"\nsources = [\"{}\"]\nto = \"asset-{}\"\nmode = \"enforce\"\nunit_ids = [{}]\n",
                slug(client),
                slug(server),
                host_net(client),
                slug(server),
                units.join(", ")
            );
            for (fc, seen) in &pair.functions {
                let review = if is_write(*fc) {
                    "  # REVIEW: a write function\n"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  [[conduit.rule]]\n{review}  # {} transactions, first seen {}, last seen {}",
                    seen.count,
                    utc(seen.first_us),
                    utc(seen.last_us)
                );
                let name = functions::name(*fc);
                let function = if name == "user-defined" {
                    fc.to_string()
                } else {
                    format!("\"{name}\"")
                };
                let _ = writeln!(out, "  function = {function}");
                let (main, widened) = merge(&seen.spans);
                let widen_note = |w: bool| {
                    if w {
                        "  # widened: more distinct ranges were seen than a rule holds\n"
                    } else {
                        ""
                    }
                };
                match rule_shape(*fc) {
                    RuleShape::Addresses => {
                        let _ = write!(
                            out,
                            "{}  addresses = {}\n\n",
                            widen_note(widened),
                            list(&main)
                        );
                    }
                    RuleShape::ReadWrite => {
                        let (write, w2) = merge(&seen.write_spans);
                        let _ = write!(
                            out,
                            "{}  read = {}\n  write = {}\n\n",
                            widen_note(widened || w2),
                            list(&main),
                            list(&write)
                        );
                    }
                    RuleShape::SubFunctions => {
                        let _ = write!(out, "  subfunctions = {}\n\n", list(&main));
                    }
                    RuleShape::MeiTypes => {
                        let _ = write!(out, "  mei_types = {}\n\n", list(&main));
                    }
                    RuleShape::Whole => out.push('\n'),
                }
            }
        }
        out
    }
}
