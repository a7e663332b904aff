//! Flood control: a scan or a DoS must not drown the SOC. Identical traffic
//! events (same class, conduit, source and destination address, destination
//! port, unit, function and reason; the Modbus address and quantity are not
//! part of the key, so a scan across registers aggregates) within a window
//! are reported as: the first at once, then one aggregated event when the
//! window closes, with the number suppressed and the first and last time
//! seen (CEF `cnt`, `start`, `end`). Audit events are never aggregated.
//! At most `max_keys` keys are tracked; beyond that the oldest is flushed
//! early, so memory stays bounded.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use crate::record::{Event, EventClass};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    class: EventClass,
    conduit: Option<String>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    dst_port: Option<u16>,
    unit_id: Option<u8>,
    function: Option<u8>,
    reason: Option<String>,
}

impl Key {
    fn of(e: &Event) -> Self {
        Self {
            class: e.class,
            conduit: e.conduit.clone(),
            src: e.src,
            dst: e.dst,
            dst_port: e.dst_port,
            unit_id: e.unit_id,
            function: e.function,
            reason: e.reason.clone(),
        }
    }
}

struct Window {
    /// The latest suppressed event (its fields describe the aggregate).
    last: Option<Event>,
    suppressed: u32,
    first_suppressed_ms: i64,
}

pub struct Aggregator {
    window_ms: i64,
    max_keys: usize,
    windows: HashMap<Key, Window>,
    /// Keys in the order their windows opened: windows close in that order,
    /// so closing and evicting take from the front (a flood of distinct
    /// keys costs O(1) per event, not a scan of every key).
    order: VecDeque<(i64, Key)>,
}

impl Aggregator {
    /// `window_ms` 0 turns aggregation off.
    pub fn new(window_ms: i64, max_keys: usize) -> Self {
        Self {
            window_ms,
            max_keys: max_keys.max(1),
            windows: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }

    /// Takes one event; returns what is to be sent now (the event itself,
    /// or nothing when it is suppressed, plus aggregates of windows that
    /// closed).
    pub fn push(&mut self, e: Event, now_ms: i64) -> Vec<Event> {
        let mut out = self.flush(now_ms);
        if e.is_audit() || self.window_ms == 0 {
            out.push(e);
            return out;
        }
        let key = Key::of(&e);
        if let Some(w) = self.windows.get_mut(&key) {
            if w.suppressed == 0 {
                w.first_suppressed_ms = e.time_ms;
            }
            w.suppressed = w.suppressed.saturating_add(1);
            w.last = Some(e);
            return out;
        }
        if self.windows.len() >= self.max_keys
            && let Some((_, oldest)) = self.order.pop_front()
            && let Some(w) = self.windows.remove(&oldest)
        {
            out.extend(aggregate(w));
        }
        self.order.push_back((now_ms, key.clone()));
        self.windows.insert(
            key,
            Window {
                last: None,
                suppressed: 0,
                first_suppressed_ms: 0,
            },
        );
        out.push(e);
        out
    }

    /// Aggregates of the windows that have closed by `now_ms`.
    pub fn flush(&mut self, now_ms: i64) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some((opened, _)) = self.order.front() {
            if now_ms.saturating_sub(*opened) < self.window_ms {
                break;
            }
            if let Some((_, k)) = self.order.pop_front()
                && let Some(w) = self.windows.remove(&k)
            {
                out.extend(aggregate(w));
            }
        }
        out.sort_by_key(|e| e.time_ms);
        out
    }

    /// Everything still open (at shutdown).
    pub fn flush_all(&mut self) -> Vec<Event> {
        self.flush(i64::MAX)
    }
}

fn aggregate(w: Window) -> Option<Event> {
    let mut e = w.last?;
    e.count = w.suppressed;
    e.first_ms = w.first_suppressed_ms;
    e.last_ms = e.time_ms;
    e.message = format!(
        "{} identical events suppressed between {} and {} (ms since epoch); this is their summary",
        w.suppressed, e.first_ms, e.last_ms
    );
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventId;

    fn denial(n: u32, src: &str, t: i64) -> Event {
        let mut e = Event::new(
            EventId::new(1, n),
            EventClass::DeniedTransaction,
            t,
            "site",
            "gw",
            "denied",
        );
        e.src = Some(src.parse().unwrap());
        e.conduit = Some("c".into());
        e.function = Some(6);
        e.address = Some((n % 1000) as u16);
        e.reason = Some("address-denied".into());
        e
    }

    #[test]
    fn a_flood_becomes_the_first_event_and_one_summary() {
        let mut a = Aggregator::new(10_000, 100);
        let mut out = Vec::new();
        for n in 0..1000 {
            out.extend(a.push(denial(n, "10.0.0.1", i64::from(n)), i64::from(n)));
        }
        out.extend(a.flush(20_000));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].count, 1);
        assert_eq!(out[1].count, 999);
        assert_eq!(out.iter().map(|e| e.count).sum::<u32>(), 1000);
        assert_eq!((out[1].first_ms, out[1].last_ms), (1, 999));
        assert!(out[1].message.contains("999 identical events"));
    }

    #[test]
    fn different_sources_and_audit_events_are_not_merged() {
        let mut a = Aggregator::new(10_000, 100);
        assert_eq!(a.push(denial(1, "10.0.0.1", 0), 0).len(), 1);
        assert_eq!(a.push(denial(2, "10.0.0.2", 0), 0).len(), 1);
        let audit = Event::new(
            EventId::new(1, 3),
            EventClass::ReloadFailed,
            0,
            "s",
            "g",
            "x",
        );
        for _ in 0..3 {
            assert_eq!(a.push(audit.clone(), 0), vec![audit.clone()]);
        }
    }

    #[test]
    fn a_window_with_nothing_suppressed_emits_nothing_more() {
        let mut a = Aggregator::new(1000, 100);
        a.push(denial(1, "10.0.0.1", 0), 0);
        assert!(a.flush(5000).is_empty());
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn a_scan_of_distinct_sources_costs_constant_time_per_event() {
        // The same scan with 10 and with 10,000 tracked keys: a cost per
        // event that grows with the keys tracked (a scan over them, which
        // took seconds here once) makes the second a thousand times slower.
        // Compared with each other, not with a wall-clock limit, so that a
        // loaded machine slows both alike.
        let scan = |tracked: usize| {
            let mut a = Aggregator::new(10_000, tracked);
            let start = std::time::Instant::now();
            let mut out = 0;
            for n in 0..100_000u32 {
                let src = format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256);
                out += a.push(denial(n, &src, i64::from(n)), i64::from(n)).len();
            }
            assert_eq!(out, 100_000);
            start.elapsed()
        };
        let few = scan(10);
        let many = scan(10_000);
        assert!(
            many < few * 10 + std::time::Duration::from_millis(50),
            "10 keys {few:?}, 10,000 keys {many:?}"
        );
    }

    #[test]
    fn tracked_keys_stay_bounded() {
        let mut a = Aggregator::new(60_000, 50);
        let mut total = 0;
        for n in 0..10_000u32 {
            let src = format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256);
            // Each source twice: one passes, one is suppressed.
            for _ in 0..2 {
                total += a
                    .push(denial(n, &src, i64::from(n)), i64::from(n))
                    .iter()
                    .map(|e| e.count)
                    .sum::<u32>();
                assert!(a.tracked() <= 50);
            }
        }
        total += a.flush_all().iter().map(|e| e.count).sum::<u32>();
        assert_eq!(total, 20_000, "every event is counted exactly once");
    }
}
