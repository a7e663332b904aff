//! Denied-transaction events from the ring buffer, as structured logs.

use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use bessai_common::{
    Action, EVENT_HAS_ADU, EVENT_MONITOR, Event, NO_CONDUIT, Reason, is_ipv4_mapped,
};
use tokio::io::unix::AsyncFd;

use super::DataplaneError;

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventStream {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let map = ebpf
            .take_map("EVENTS")
            .ok_or(DataplaneError::NoMap("EVENTS"))?;
        let ring = RingBuf::try_from(map).map_err(|source| DataplaneError::Map {
            map: "EVENTS",
            source,
        })?;
        // SAFETY: the ring buffer owns its fd, and the AsyncFd owns the ring
        // buffer, so the fd stays open for as long as it is registered.
        // Must be called inside a Tokio runtime.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| DataplaneError::Map {
                map: "EVENTS",
                source: aya::maps::MapError::IoError(std::io::Error::other(e.to_string())),
            })?;
        Ok(Self { ring })
    }

    /// Waits for events and hands each to `f`.
    pub async fn next_batch(&mut self, f: impl FnMut(&Event)) -> std::io::Result<usize> {
        let mut guard = self.ring.readable_mut().await?;
        let n = drain_ring(guard.get_inner_mut(), f);
        guard.clear_ready();
        Ok(n)
    }

    /// Drains what is there now without waiting.
    pub fn drain(&mut self, f: impl FnMut(&Event)) -> usize {
        drain_ring(self.ring.get_mut(), f)
    }
}

fn drain_ring(ring: &mut RingBuf<MapData>, mut f: impl FnMut(&Event)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        if item.len() >= size_of::<Event>() {
            // SAFETY: the kernel wrote a whole Event (#[repr(C)], POD) and
            // read_unaligned makes no alignment assumption.
            let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
            f(&e);
            n += 1;
        }
    }
    n
}

pub fn addr(a: &[u8; 16]) -> IpAddr {
    if is_ipv4_mapped(a) {
        IpAddr::from([a[12], a[13], a[14], a[15]])
    } else {
        IpAddr::from(*a)
    }
}

/// Logs one event; `conduit_name` maps conduit ids to policy names.
pub fn render_event(e: &Event, conduit_name: impl Fn(u16) -> Option<String>) {
    let conduit = if e.conduit == NO_CONDUIT {
        "-".to_string()
    } else {
        conduit_name(e.conduit).unwrap_or_else(|| format!("#{}", e.conduit))
    };
    let reason = Reason::from_u8(e.reason).map_or("unknown", Reason::as_str);
    let action = Action::from_u8(e.action).map_or("unknown", Action::as_str);
    let src = format!("{}:{}", addr(&e.src), e.src_port);
    let dst = format!("{}:{}", addr(&e.dst), e.dst_port);
    let monitor = e.flags & EVENT_MONITOR != 0;
    // Denials the kernel folded into this one (floods from one source).
    let suppressed = e.suppressed;
    if e.flags & EVENT_HAS_ADU != 0 {
        tracing::warn!(
            target: "bessai::conduit",
            conduit, src, dst, unit = e.unit, function = e.function, address = e.address,
            quantity = e.quantity, transaction = e.transaction, reason, action, monitor,
            "{}", if monitor { "would deny (monitor mode)" } else { "denied" }
        );
    } else {
        tracing::warn!(
            target: "bessai::conduit",
            conduit, src, dst, reason, action, monitor, suppressed,
            "{}", if monitor { "would deny (monitor mode)" } else { "denied" }
        );
    }
}
