//! Addresses and CIDR networks as written in policy files.

use std::{fmt, net::IpAddr, str::FromStr};

use bessai_common::{Addr, ipv4_mapped};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Bits of the IPv4-mapped 128-bit address this network fixes.
    pub fn mapped_prefix(&self) -> u32 {
        if self.addr.is_ipv4() {
            96 + self.prefix as u32
        } else {
            self.prefix as u32
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let (a, b) = (mapped(self.addr), mapped(ip));
        prefix_eq(&a, &b, self.mapped_prefix())
    }

    /// True when `other` lies wholly inside this network.
    pub fn covers(&self, other: &IpNet) -> bool {
        other.mapped_prefix() >= self.mapped_prefix() && self.contains(other.addr)
    }

    /// The network with its host bits cleared.
    pub fn normalized(&self) -> IpNet {
        let bits = self.mapped_prefix();
        let mut a = mapped(self.addr);
        for (i, byte) in a.iter_mut().enumerate() {
            let start = i as u32 * 8;
            if start >= bits {
                *byte = 0;
            } else if start + 8 > bits {
                *byte &= 0xffu8 << (8 - (bits - start));
            }
        }
        let addr = if self.addr.is_ipv4() {
            IpAddr::from([a[12], a[13], a[14], a[15]])
        } else {
            IpAddr::from(a)
        };
        IpNet {
            addr,
            prefix: self.prefix,
        }
    }
}

pub fn mapped(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v) => ipv4_mapped(v.octets()),
        IpAddr::V6(v) => v.octets(),
    }
}

fn prefix_eq(a: &Addr, b: &Addr, bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) & (0xffu8 << (8 - rest)) == 0
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}
