//! Reading captures (pcap and pcapng) as Ethernet frames, streaming, so that
//! memory stays flat whatever the file size.
//!
//! Link types: Ethernet as is; Linux cooked (SLL, SLL2), BSD loopback and raw
//! IP get a synthetic Ethernet header carrying the right EtherType, so that
//! the decision function sees what the XDP program would.

use std::{fs::File, io::Read, path::Path};

use pcap_parser::{Linktype, PcapBlockOwned, PcapError, create_reader, pcapng::Block};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng file")]
    NotACapture { path: String },
    #[error("{path}: unreadable at byte offset {offset}: {what}")]
    Corrupt {
        path: String,
        offset: u64,
        what: String,
    },
    #[error(
        "{path}: link type {linktype} is not supported (Ethernet, Linux cooked SLL/SLL2, loopback, raw IP are)"
    )]
    Linktype { path: String, linktype: i32 },
}

/// One packet of a capture.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Microseconds since the Unix epoch.
    pub ts_us: u64,
    /// The frame as Ethernet.
    pub frame: &'a [u8],
    /// Length on the wire (may exceed the captured bytes).
    pub orig_len: u32,
}

const READ_BUFFER: usize = 1 << 20;

/// Calls `f` for every packet, in file order. Returns the packet count.
pub fn for_each_packet(path: &Path, f: impl FnMut(Packet<'_>)) -> Result<u64, CaptureError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: name.clone(),
        source,
    })?;
    for_each_packet_in(file, &name, f)
}

/// As [`for_each_packet`], from any reader; `name` names it in errors.
pub fn for_each_packet_in(
    input: impl Read + Send,
    name: &str,
    mut f: impl FnMut(Packet<'_>),
) -> Result<u64, CaptureError> {
    let name = name.to_string();
    let mut reader = match create_reader(READ_BUFFER, input) {
        Ok(r) => r,
        Err(PcapError::Eof) | Err(PcapError::HeaderNotRecognized) => {
            return Err(CaptureError::NotACapture { path: name });
        }
        Err(e) => {
            return Err(CaptureError::Corrupt {
                path: name,
                offset: 0,
                what: format!("{e:?}"),
            });
        }
    };
    let mut offset = 0u64;
    let mut count = 0u64;
    // Legacy pcap: one link type and µs or ns resolution for the file.
    let mut legacy = (Linktype::ETHERNET, false);
    // pcapng: per interface, its link type and ticks per second.
    let mut interfaces: Vec<(Linktype, u64)> = Vec::new();
    let mut ethernet = Vec::with_capacity(2048);
    loop {
        match reader.next() {
            Ok((used, block)) => {
                let packet = match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy = (h.network, h.is_nanosecond_precision());
                        None
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let frac = if legacy.1 {
                            b.ts_usec as u64 / 1000
                        } else {
                            b.ts_usec as u64
                        };
                        Some((
                            legacy.0,
                            b.ts_sec as u64 * 1_000_000 + frac,
                            b.data,
                            b.origlen,
                        ))
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push((idb.linktype, ticks_per_second(idb.if_tsresol)));
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let (lt, tps) = interfaces
                            .get(epb.if_id as usize)
                            .copied()
                            .unwrap_or((Linktype::ETHERNET, 1_000_000));
                        let ticks = (epb.ts_high as u64) << 32 | epb.ts_low as u64;
                        let ts_us = (ticks as u128 * 1_000_000 / tps.max(1) as u128) as u64;
                        let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                        Some((lt, ts_us, data, epb.origlen))
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let lt = interfaces.first().map_or(Linktype::ETHERNET, |i| i.0);
                        Some((lt, 0, spb.data, spb.origlen))
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        interfaces.clear();
                        None
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((lt, ts_us, data, orig_len)) = packet {
                    let frame = as_ethernet(lt, data, &mut ethernet).ok_or_else(|| {
                        CaptureError::Linktype {
                            path: name.clone(),
                            linktype: lt.0,
                        }
                    })?;
                    f(Packet {
                        ts_us,
                        frame,
                        orig_len,
                    });
                    count += 1;
                }
                offset += used as u64;
                reader.consume(used);
            }
            Err(PcapError::Eof) => return Ok(count),
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    return Err(CaptureError::Corrupt {
                        path: name,
                        offset,
                        what: "cannot read further".into(),
                    });
                }
            }
            Err(PcapError::UnexpectedEof) => {
                return Err(CaptureError::Corrupt {
                    path: name,
                    offset,
                    what: "truncated: the last block is incomplete".into(),
                });
            }
            Err(e) => {
                return Err(CaptureError::Corrupt {
                    path: name,
                    offset,
                    what: format!("{e:?}"),
                });
            }
        }
    }
}

fn ticks_per_second(tsresol: u8) -> u64 {
    let exp = (tsresol & 0x7f) as u32;
    if tsresol & 0x80 == 0 {
        10u64.saturating_pow(exp)
    } else {
        2u64.saturating_pow(exp)
    }
}

/// The frame as Ethernet: borrowed when it is Ethernet, else rebuilt in `buf`.
fn as_ethernet<'a>(lt: Linktype, data: &'a [u8], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    let (ethertype, l3): (u16, &[u8]) = match lt {
        Linktype::ETHERNET => return Some(data),
        Linktype::LINUX_SLL if data.len() >= 16 => {
            (u16::from_be_bytes([data[14], data[15]]), &data[16..])
        }
        Linktype::LINUX_SLL2 if data.len() >= 20 => {
            (u16::from_be_bytes([data[0], data[1]]), &data[20..])
        }
        Linktype::NULL | Linktype::LOOP if data.len() >= 4 => {
            let family = u32::from_le_bytes([data[0], data[1], data[2], data[3]])
                .max(u32::from_be_bytes([data[0], data[1], data[2], data[3]]));
            (if family == 2 { 0x0800 } else { 0x86DD }, &data[4..])
        }
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => {
            let v = data.first().map_or(0, |b| b >> 4);
            (if v == 6 { 0x86DD } else { 0x0800 }, data)
        }
        Linktype::LINUX_SLL | Linktype::LINUX_SLL2 | Linktype::NULL | Linktype::LOOP => {
            (0, &[][..])
        }
        _ => return None,
    };
    buf.clear();
    buf.extend_from_slice(&[0; 12]);
    buf.extend_from_slice(&ethertype.to_be_bytes());
    buf.extend_from_slice(l3);
    Some(buf)
}
