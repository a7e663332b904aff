//! Builds Ethernet/IP/TCP/Modbus frames for tests, the differential fuzzer
//! and benchmarks, with valid checksums.

use std::net::IpAddr;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

#[derive(Clone, Debug)]
pub struct TcpFrame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub vlan: Option<u16>,
    pub payload: Vec<u8>,
    /// IPv4 "more fragments" / offset field (flags bits included), 0 normally.
    pub frag: u16,
}

impl TcpFrame {
    pub fn new(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> Self {
        Self {
            src,
            dst,
            src_port,
            dst_port,
            seq: 1000,
            ack: 5000,
            flags: TCP_ACK | TCP_PSH,
            vlan: None,
            payload: Vec::new(),
            frag: 0,
        }
    }

    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    pub fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }

    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    pub fn payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = payload;
        self
    }

    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlan = Some(vid);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(80 + self.payload.len());
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        if let Some(vid) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        let tcp = self.tcp_segment();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let total = (20 + tcp.len()) as u16;
                let mut ip = vec![0x45, 0];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]);
                ip.extend_from_slice(&self.frag.to_be_bytes());
                ip.extend_from_slice(&[64, 6, 0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                let c = !fold(sum(&ip));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
                let mut tcp = tcp;
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 6]);
                pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                let c = !fold(sum(&pseudo) + sum(&tcp));
                tcp[16..18].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&tcp);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&0x86DDu16.to_be_bytes());
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                f.extend_from_slice(&[6, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                let mut tcp = tcp;
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 6]);
                let c = !fold(sum(&pseudo) + sum(&tcp));
                tcp[16..18].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&tcp);
            }
            _ => panic!("mixed address families"),
        }
        f
    }

    fn tcp_segment(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(20 + self.payload.len());
        t.extend_from_slice(&self.src_port.to_be_bytes());
        t.extend_from_slice(&self.dst_port.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.extend_from_slice(&[5 << 4, self.flags]);
        t.extend_from_slice(&8192u16.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(&self.payload);
        t
    }
}

/// One's-complement sum over big-endian 16-bit words (odd length padded).
pub fn sum(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum()
}

pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// True when the IPv4/IPv6 and TCP checksums of an Ethernet frame verify.
pub fn checksums_ok(frame: &[u8]) -> bool {
    let mut l3 = 14;
    let mut et = u16::from_be_bytes([frame[12], frame[13]]);
    if et == 0x8100 {
        et = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    if et == 0x0800 {
        let ihl = (frame[l3] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
        if fold(sum(&frame[l3..l3 + ihl])) != 0xffff {
            return false;
        }
        let tcp = &frame[l3 + ihl..l3 + total];
        let mut pseudo = frame[l3 + 12..l3 + 20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        fold(sum(&pseudo) + sum(tcp)) == 0xffff
    } else {
        let plen = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize;
        let tcp = &frame[l3 + 40..l3 + 40 + plen];
        let mut pseudo = frame[l3 + 8..l3 + 40].to_vec();
        pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        fold(sum(&pseudo) + sum(tcp)) == 0xffff
    }
}

/// A Modbus/TCP ADU: MBAP header + unit + PDU.
pub fn adu(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(7 + pdu.len());
    v.extend_from_slice(&transaction.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    v.push(unit);
    v.extend_from_slice(pdu);
    v
}

pub mod pdu {
    fn addr_qty(fc: u8, a: u16, q: u16) -> Vec<u8> {
        let mut v = vec![fc];
        v.extend_from_slice(&a.to_be_bytes());
        v.extend_from_slice(&q.to_be_bytes());
        v
    }
    pub fn read_coils(a: u16, q: u16) -> Vec<u8> {
        addr_qty(1, a, q)
    }
    pub fn read_holding(a: u16, q: u16) -> Vec<u8> {
        addr_qty(3, a, q)
    }
    pub fn read_input(a: u16, q: u16) -> Vec<u8> {
        addr_qty(4, a, q)
    }
    pub fn write_coil(a: u16, on: bool) -> Vec<u8> {
        addr_qty(5, a, if on { 0xFF00 } else { 0 })
    }
    pub fn write_register(a: u16, v: u16) -> Vec<u8> {
        addr_qty(6, a, v)
    }
    pub fn write_registers(a: u16, values: &[u16]) -> Vec<u8> {
        let mut v = addr_qty(16, a, values.len() as u16);
        v.push((values.len() * 2) as u8);
        for x in values {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v
    }
    pub fn write_coils(a: u16, n: u16) -> Vec<u8> {
        let mut v = addr_qty(15, a, n);
        let bytes = n.div_ceil(8) as usize;
        v.push(bytes as u8);
        v.extend(std::iter::repeat_n(0xAA, bytes));
        v
    }
    pub fn read_write(ra: u16, rq: u16, wa: u16, values: &[u16]) -> Vec<u8> {
        let mut v = addr_qty(23, ra, rq);
        v.extend_from_slice(&wa.to_be_bytes());
        v.extend_from_slice(&(values.len() as u16).to_be_bytes());
        v.push((values.len() * 2) as u8);
        for x in values {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v
    }
    pub fn diagnostics(sub: u16) -> Vec<u8> {
        let mut v = vec![8];
        v.extend_from_slice(&sub.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v
    }
    pub fn read_device_id(code: u8, object: u8) -> Vec<u8> {
        vec![43, 14, code, object]
    }
}
