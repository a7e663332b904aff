//! Behaviour of the decision function on crafted frames, against hand-built
//! tables (policy compilation is tested in the policy crate).

use std::net::IpAddr;

use proptest::prelude::*;

use crate::{
    craft::{self, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TcpFrame, adu, pdu},
    frame::Frame,
    host::HostTables,
    rst::{rst_to_client, rst_to_server},
    *,
};

const EMS: &str = "10.10.1.10";
const MONITORED: &str = "10.10.1.30";
const DROPPER: &str = "10.10.1.40";
const OUTSIDER: &str = "10.10.9.9";
const PCS: &str = "10.10.2.11";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mapped(s: &str) -> Addr {
    match ip(s) {
        IpAddr::V4(v) => ipv4_mapped(v.octets()),
        IpAddr::V6(v) => v.octets(),
    }
}

fn rule(ranges: &[(u16, u16)]) -> Rule {
    let mut r = Rule::EMPTY;
    for (i, (s, e)) in ranges.iter().enumerate() {
        r.ranges[i] = AddrRange { start: *s, end: *e };
    }
    r.count = ranges.len() as u8;
    r
}

fn conduit(id: u16, mode: u8, on_deny: u8) -> Conduit {
    let mut units = [0u64; 4];
    units[0] = 1 << 1; // unit 1
    Conduit {
        id,
        port: 502,
        mode,
        on_deny,
        client_zone: 0,
        server_zone: 1,
        units,
    }
}

fn tables() -> HostTables {
    let mut settings = Settings::default();
    settings.ports[0] = 502;
    let mut conduits = Vec::new();
    let mut rules = Vec::new();
    for (id, (src, mode, on_deny)) in [
        (EMS, MODE_ENFORCE, ON_DENY_RESET),
        (MONITORED, MODE_MONITOR, ON_DENY_RESET),
        (DROPPER, MODE_ENFORCE, ON_DENY_DROP),
    ]
    .into_iter()
    .enumerate()
    {
        let id = id as u16;
        conduits.push((
            ConduitKey::with_prefix(0, mapped(PCS), 502, mapped(src), 128),
            conduit(id, mode, on_deny),
        ));
        let key = |function, part| RuleKey {
            conduit: id,
            function,
            part,
        };
        rules.push((key(3, PART_MAIN), rule(&[(0, 99)])));
        rules.push((key(6, PART_MAIN), rule(&[(40, 40), (50, 50)])));
        rules.push((key(16, PART_MAIN), rule(&[(40, 41)])));
        rules.push((key(23, PART_MAIN), rule(&[(0, 99)])));
        rules.push((key(23, PART_WRITE), rule(&[(40, 41)])));
        rules.push((key(8, PART_MAIN), rule(&[(0, 0)])));
        rules.push((key(43, PART_MAIN), rule(&[(14, 14)])));
        rules.push((key(17, PART_MAIN), Rule::EMPTY));
    }
    let mut t = HostTables::new(settings, conduits, rules, [mapped(PCS)]);
    // Frames "arrive" on an interface of both zones unless a test says otherwise.
    t.policy.ingress_zones = 0b11;
    t
}

fn judge(t: &mut HostTables, frame: &[u8]) -> (Decision, Layout) {
    let mut buf = [0u8; FRAME_MAX];
    let n = frame.len().min(FRAME_MAX);
    buf[..n].copy_from_slice(&frame[..n]);
    let mut lay = Layout::default();
    let d = decide(
        &Frame::new(&buf, n, frame.len()),
        t,
        &mut NoObserver,
        &mut lay,
    );
    (d, lay)
}

fn client(src: &str) -> TcpFrame {
    TcpFrame::new(ip(src), ip(PCS), 40000, 502)
}

fn server(dst: &str) -> TcpFrame {
    TcpFrame::new(ip(PCS), ip(dst), 502, 40000)
}

/// The three-way handshake: client ISN 999, server ISN 4999.
fn handshake(t: &mut HostTables, src: &str) {
    let (d, _) = judge(t, &client(src).seq(999).ack(0).flags(TCP_SYN).build());
    assert_eq!((d.action, d.reason), (Action::Pass, Reason::TcpControl));
    let syn_ack = server(src).seq(4999).ack(1000).flags(TCP_SYN | TCP_ACK);
    let (d, _) = judge(t, &syn_ack.build());
    assert_eq!((d.action, d.reason), (Action::Pass, Reason::Response));
    let (d, _) = judge(t, &client(src).seq(1000).ack(5000).flags(TCP_ACK).build());
    assert_eq!((d.action, d.reason), (Action::Pass, Reason::TcpControl));
}

/// The handshake, then the given ADUs as one segment; returns the data
/// segment's decision.
fn handshake_then(t: &mut HostTables, src: &str, payload: Vec<u8>) -> Decision {
    handshake(t, src);
    judge(t, &client(src).seq(1000).payload(payload).build()).0
}

#[test]
fn allowed_read_passes_after_handshake() {
    let mut t = tables();
    let d = handshake_then(&mut t, EMS, adu(1, 1, &pdu::read_holding(0, 10)));
    assert_eq!(
        (d.action, d.reason, d.conduit, d.event),
        (Action::Pass, Reason::Allowed, 0, false)
    );
    assert_eq!(d.allowed_adus, 1);
}

#[test]
fn forbidden_write_resets_server_then_client() {
    let mut t = tables();
    let d = handshake_then(&mut t, EMS, adu(2, 1, &pdu::write_register(41, 7)));
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::ResetServer, Reason::AddressDenied, true)
    );
    assert_eq!((d.adu.function, d.adu.address, d.adu.quantity), (6, 41, 1));
    // The client's retransmission is answered with a RST, without a new event.
    let (d, _) = judge(
        &mut t,
        &client(EMS)
            .seq(1000)
            .payload(adu(2, 1, &pdu::write_register(41, 7)))
            .build(),
    );
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::ResetClient, Reason::ResetRepeat, false)
    );
}

#[test]
fn each_policy_check_has_its_reason() {
    let cases: Vec<(Vec<u8>, Reason)> = vec![
        (adu(1, 2, &pdu::read_holding(0, 1)), Reason::UnitDenied),
        (adu(1, 1, &pdu::read_input(0, 1)), Reason::FunctionDenied),
        (adu(1, 1, &pdu::read_holding(90, 11)), Reason::AddressDenied),
        (
            adu(1, 1, &pdu::read_holding(0, 126)),
            Reason::QuantityInvalid,
        ),
        (adu(1, 1, &pdu::read_holding(0, 0)), Reason::QuantityInvalid),
        (
            adu(1, 1, &pdu::write_registers(40, &[1, 2])),
            Reason::Allowed,
        ),
        (
            adu(1, 1, &pdu::write_registers(41, &[1, 2])),
            Reason::AddressDenied,
        ),
        (adu(1, 1, &pdu::read_write(0, 2, 40, &[1])), Reason::Allowed),
        (
            adu(1, 1, &pdu::read_write(0, 2, 42, &[1])),
            Reason::AddressDenied,
        ),
        (
            adu(1, 1, &pdu::read_write(100, 2, 40, &[1])),
            Reason::AddressDenied,
        ),
        (adu(1, 1, &pdu::diagnostics(0)), Reason::Allowed),
        (adu(1, 1, &pdu::diagnostics(1)), Reason::SubfunctionDenied),
        (adu(1, 1, &pdu::read_device_id(1, 0)), Reason::Allowed),
        (adu(1, 1, &[43, 13, 0]), Reason::SubfunctionDenied),
        (adu(1, 1, &[17]), Reason::Allowed),
        (adu(1, 1, &[0x83, 2]), Reason::FunctionDenied),
        (adu(1, 1, &[3, 0, 0, 0]), Reason::PduMalformed),
        (adu(1, 1, &[5, 0, 40, 0x12, 0x34]), Reason::PduMalformed),
    ];
    for (payload, want) in cases {
        let mut t = tables();
        let d = handshake_then(&mut t, EMS, payload.clone());
        assert_eq!(d.reason, want, "payload {payload:02x?}");
    }
}

#[test]
fn fc23_with_inconsistent_byte_count_is_malformed() {
    let mut p = pdu::read_write(0, 2, 40, &[1, 2]);
    p[9] = 2; // byte count 2 for a write quantity of 2
    p.truncate(12);
    let mut t = tables();
    assert_eq!(
        handshake_then(&mut t, EMS, adu(1, 1, &p)).reason,
        Reason::PduMalformed
    );
}

#[test]
fn mbap_framing_errors() {
    let mut bad_proto = adu(1, 1, &pdu::read_holding(0, 1));
    bad_proto[3] = 16;
    let mut long = adu(1, 1, &pdu::read_holding(0, 1));
    long[4..6].copy_from_slice(&34820u16.to_be_bytes());
    let mut short_len = adu(1, 1, &pdu::read_holding(0, 1));
    short_len[4..6].copy_from_slice(&1u16.to_be_bytes());
    let mut split = adu(1, 1, &pdu::read_holding(0, 1));
    split.truncate(9);
    for (payload, want) in [
        (bad_proto, Reason::MbapProtocol),
        (long, Reason::MbapLength),
        (short_len, Reason::MbapLength),
        (split, Reason::AduSplit),
        (vec![0, 1, 0], Reason::AduSplit),
    ] {
        let mut t = tables();
        assert_eq!(handshake_then(&mut t, EMS, payload).reason, want);
    }
}

#[test]
fn pipelined_adus_are_each_judged() {
    let eight: Vec<u8> = (0..8)
        .flat_map(|i| adu(i, 1, &pdu::read_holding(i * 10, 5)))
        .collect();
    let mut t = tables();
    let d = handshake_then(&mut t, EMS, eight);
    assert_eq!((d.reason, d.allowed_adus), (Reason::Allowed, 8));

    let mut with_write: Vec<u8> = (0..3)
        .flat_map(|i| adu(i, 1, &pdu::read_holding(0, 1)))
        .collect();
    with_write.extend(adu(9, 1, &pdu::write_register(99, 1)));
    let mut t = tables();
    let d = handshake_then(&mut t, EMS, with_write);
    assert_eq!((d.reason, d.adu.transaction), (Reason::AddressDenied, 9));

    // 64 reads in one segment are judged one by one.
    let many: Vec<u8> = (0..64)
        .flat_map(|i| adu(i, 1, &pdu::read_holding(0, 1)))
        .collect();
    let mut t = tables();
    let d = handshake_then(&mut t, EMS, many);
    assert_eq!((d.reason, d.allowed_adus), (Reason::Allowed, 64));
    // One more than MAX_ADUS of the smallest ADU (8 bytes) still fits a frame.
    let too_many: Vec<u8> = (0..=MAX_ADUS as u16)
        .flat_map(|i| adu(i, 1, &[17]))
        .collect();
    let mut t = tables();
    let d = handshake_then(&mut t, EMS, too_many);
    assert_eq!((d.reason, d.allowed_adus), (Reason::TooManyAdus, 0));
}

#[test]
fn retransmissions_are_compared_by_content() {
    let read = adu(1, 1, &pdu::read_holding(0, 1)); // 12 bytes
    let mut t = tables();
    assert_eq!(
        handshake_then(&mut t, EMS, read.clone()).reason,
        Reason::Allowed
    );
    // The same bytes again: a retransmission, passed without judging again.
    let d = judge(&mut t, &client(EMS).seq(1000).payload(read.clone()).build()).0;
    assert_eq!((d.action, d.reason), (Action::Pass, Reason::Retransmission));
    // Starting inside a judged segment: cannot be compared, dropped silently.
    let d = judge(&mut t, &client(EMS).seq(1006).payload(read.clone()).build()).0;
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::Drop, Reason::Unverifiable, false)
    );
    // The same start, other bytes (each of them an allowed read): an evasion.
    let other = adu(7, 1, &pdu::read_holding(5, 1));
    let d = judge(&mut t, &client(EMS).seq(1000).payload(other).build()).0;
    assert_eq!(
        (d.action, d.reason, d.event, d.rst_seq),
        (Action::ResetServer, Reason::RetransmitMismatch, true, 1000)
    );
}

#[test]
fn retransmission_with_new_requests_appended_judges_only_the_new_ones() {
    let read = adu(1, 1, &pdu::read_holding(0, 1));
    let mut t = tables();
    handshake_then(&mut t, EMS, read.clone());
    let mut longer = read.clone();
    longer.extend(adu(2, 1, &pdu::read_holding(1, 1)));
    let d = judge(
        &mut t,
        &client(EMS).seq(1000).payload(longer.clone()).build(),
    )
    .0;
    assert_eq!((d.reason, d.allowed_adus), (Reason::Allowed, 1));
    // And the new part is judged: a write appended to a retransmission is denied.
    let mut t = tables();
    handshake_then(&mut t, EMS, read.clone());
    let mut with_write = read;
    with_write.extend(adu(2, 1, &pdu::write_register(99, 1)));
    let d = judge(&mut t, &client(EMS).seq(1000).payload(with_write).build()).0;
    assert_eq!(
        (d.action, d.reason, d.rst_seq),
        (Action::ResetServer, Reason::AddressDenied, 1012)
    );
}

#[test]
fn acknowledged_bytes_pass_unjudged() {
    let read = adu(1, 1, &pdu::read_holding(0, 1));
    let mut t = tables();
    handshake_then(&mut t, EMS, read.clone());
    let ack = server(EMS).seq(5000).ack(1012).flags(TCP_ACK);
    judge(&mut t, &ack.build());
    // A keep-alive: one old byte, garbage.
    let d = judge(&mut t, &client(EMS).seq(1011).payload(vec![0xAA]).build()).0;
    assert_eq!((d.action, d.reason), (Action::Pass, Reason::Duplicate));
    assert_eq!(t.flows.stats[STAT_DUPLICATE as usize], 1);
}

#[test]
fn a_second_syn_never_moves_the_stream() {
    let read = adu(1, 1, &pdu::read_holding(0, 1));
    let mut t = tables();
    handshake_then(&mut t, EMS, read.clone());
    // The attack of issue 10: a SYN a few bytes behind, then reads that the
    // server would parse from another offset.
    let d = judge(&mut t, &client(EMS).seq(1005).flags(TCP_SYN).build()).0;
    assert_eq!((d.action, d.reason), (Action::Pass, Reason::TcpControl));
    let d = judge(&mut t, &client(EMS).seq(1006).payload(read.clone()).build()).0;
    assert_ne!(d.action, Action::Pass);
    // The stream continues where it was.
    let d = judge(&mut t, &client(EMS).seq(1012).payload(read).build()).0;
    assert_eq!(d.reason, Reason::Allowed);
}

#[test]
fn stream_desynchronisation_fails_closed() {
    let read = adu(1, 1, &pdu::read_holding(0, 1)); // 12 bytes
    let mut t = tables();
    handshake_then(&mut t, EMS, read.clone());
    let d = judge(&mut t, &client(EMS).seq(1100).payload(read.clone()).build()).0;
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::Drop, Reason::OutOfOrder, false)
    );
    let d = judge(
        &mut t,
        &client(EMS)
            .seq(1012)
            .flags(TCP_ACK | TCP_URG)
            .payload(read.clone())
            .build(),
    )
    .0;
    assert_eq!(d.reason, Reason::TcpUrgent);

    // Data without a handshake the gateway saw.
    let mut t = tables();
    let d = judge(&mut t, &client(EMS).payload(read.clone()).build()).0;
    assert_eq!(
        (d.action, d.reason),
        (Action::ResetServer, Reason::UnknownFlow)
    );
    // A handshake the server never completed: data is still unknown.
    let mut t = tables();
    judge(&mut t, &client(EMS).seq(999).flags(TCP_SYN).build());
    let d = judge(&mut t, &client(EMS).seq(1000).payload(read.clone()).build()).0;
    assert_eq!(d.reason, Reason::UnknownFlow);
    // SYN carrying data (TCP Fast Open).
    let mut t = tables();
    let d = judge(&mut t, &client(EMS).flags(TCP_SYN).payload(read).build()).0;
    assert_eq!(d.reason, Reason::SynData);
    assert_ne!(d.action, Action::Pass);
}

#[test]
fn ingress_binding_drops_spoofed_sources() {
    let mut t = tables();
    t.policy.ingress_zones = 0b10; // the asset's zone only
    let d = judge(&mut t, &client(EMS).seq(999).flags(TCP_SYN).build()).0;
    assert_eq!((d.action, d.reason), (Action::Drop, Reason::Spoofed));
    assert!(t.half_open(&flow_key(EMS)).is_none());
}

fn flow_key(src: &str) -> FlowKey {
    FlowKey {
        client: mapped(src),
        server: mapped(PCS),
        client_port: 40000,
        server_port: 502,
    }
}

#[test]
fn hosts_outside_conduits_get_nothing_through() {
    let mut t = tables();
    let d = judge(&mut t, &client(OUTSIDER).flags(TCP_SYN).build()).0;
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::Drop, Reason::NoConduit, true)
    );
    // Answers pass only on tracked connections.
    let resp = server(OUTSIDER).payload(adu(1, 1, &[3, 2, 0, 1]));
    assert_eq!(judge(&mut t, &resp.build()).0.reason, Reason::NoFlow);
    let resp = server(EMS).payload(adu(1, 1, &[3, 2, 0, 1]));
    assert_eq!(judge(&mut t, &resp.build()).0.reason, Reason::NoFlow);
    // A server that opens a connection to a client's port (bridge mode
    // without conntrack) gets nothing through either.
    let syn = server(EMS).flags(TCP_SYN);
    assert_eq!(judge(&mut t, &syn.build()).0.action, Action::Drop);
    handshake(&mut t, EMS);
    let d = judge(&mut t, &resp.build()).0;
    assert_eq!((d.action, d.reason), (Action::Pass, Reason::Response));
}

#[test]
fn other_traffic_is_left_to_nftables() {
    let mut t = tables();
    let ssh = TcpFrame::new(ip(EMS), ip(PCS), 40000, 22).payload(vec![1, 2, 3]);
    assert_eq!(judge(&mut t, &ssh.build()).0.reason, Reason::NotConduit);
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(judge(&mut t, &arp).0.action, Action::Pass);
}

#[test]
fn vlan_ipv6_and_fragments() {
    let mut t = tables();
    judge(&mut t, &client(EMS).seq(999).flags(TCP_SYN).vlan(7).build());
    judge(
        &mut t,
        &server(EMS)
            .seq(4999)
            .ack(1000)
            .flags(TCP_SYN | TCP_ACK)
            .vlan(7)
            .build(),
    );
    judge(
        &mut t,
        &client(EMS).seq(1000).flags(TCP_ACK).vlan(7).build(),
    );
    let d = judge(
        &mut t,
        &client(EMS)
            .vlan(7)
            .payload(adu(1, 1, &pdu::read_holding(0, 1)))
            .build(),
    )
    .0;
    assert_eq!(d.reason, Reason::Allowed);

    let mut qinq = client(EMS).vlan(7).build();
    qinq.splice(16..16, [0x81, 0x00, 0x00, 0x08]);
    assert_eq!(judge(&mut t, &qinq).0.reason, Reason::Encapsulation);

    let mut frag = client(EMS).payload(adu(1, 1, &pdu::read_holding(0, 1)));
    frag.frag = 0x2000; // more fragments
    assert_eq!(judge(&mut t, &frag.build()).0.reason, Reason::IpFragment);

    let v6 = TcpFrame::new(ip("fd00::10"), ip("fd00::11"), 40000, 502);
    assert_eq!(
        judge(&mut t, &v6.flags(TCP_SYN).build()).0.reason,
        Reason::NoConduit
    );
}

#[test]
fn monitor_mode_passes_and_reports() {
    let mut t = tables();
    let d = handshake_then(&mut t, MONITORED, adu(1, 1, &pdu::write_register(41, 1)));
    assert_eq!(
        (d.action, d.reason, d.event, d.monitor),
        (Action::Pass, Reason::AddressDenied, true, true)
    );
    // The stream moved on: the next request is judged normally.
    let next = client(MONITORED)
        .seq(1012)
        .payload(adu(2, 1, &pdu::read_holding(0, 1)));
    assert_eq!(judge(&mut t, &next.build()).0.reason, Reason::Allowed);
}

#[test]
fn drop_mode_counts_retransmissions_once() {
    let mut t = tables();
    let write = adu(1, 1, &pdu::write_register(41, 1));
    let d = handshake_then(&mut t, DROPPER, write.clone());
    assert_eq!((d.action, d.event), (Action::Drop, true));
    let d = judge(&mut t, &client(DROPPER).seq(1000).payload(write).build()).0;
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::Drop, Reason::DeniedRepeat, false)
    );
    // Nothing after the denied bytes can be judged in order: the stream stays stalled.
    let read = client(DROPPER)
        .seq(1000)
        .payload(adu(2, 1, &pdu::read_holding(0, 1)));
    assert_eq!(judge(&mut t, &read.build()).0.reason, Reason::DeniedRepeat);
}

#[test]
fn rsts_are_well_formed() {
    for (src, dst) in [(EMS, PCS), ("fd00::10", "fd00::11")] {
        let f = TcpFrame::new(ip(src), ip(dst), 40000, 502)
            .seq(1000)
            .flags(TCP_ACK | TCP_PSH)
            .payload(adu(1, 1, &pdu::write_register(41, 1)))
            .vlan(5)
            .build();
        let mut buf = [0u8; FRAME_MAX];
        buf[..f.len()].copy_from_slice(&f);
        let mut lay = Layout::default();
        let mut t = HostTables::default();
        t.policy.settings.ports[0] = 502;
        decide(
            &Frame::new(&buf, f.len(), f.len()),
            &mut t,
            &mut NoObserver,
            &mut lay,
        );
        assert!(lay.rst_ok);

        let mut to_server = buf;
        let n = rst_to_server(&mut to_server, &lay, 1000);
        let out = &to_server[..n];
        assert!(craft::checksums_ok(out), "{src}: server RST checksum");
        assert_eq!(out[n - 7], 0x14, "RST|ACK");
        assert_eq!(
            &out[n - 16..n - 12],
            &1000u32.to_be_bytes(),
            "seq = the one asked for"
        );
        assert_eq!(&out[..12], &f[..12], "same MACs");

        let mut to_client = buf;
        let n = rst_to_client(&mut to_client, &lay);
        let out = &to_client[..n];
        assert!(craft::checksums_ok(out), "{src}: client RST checksum");
        assert_eq!(&out[..6], &f[6..12], "back to the sender's MAC");
        assert_eq!(&out[n - 20..n - 18], &502u16.to_be_bytes());
        assert_eq!(
            &out[n - 16..n - 12],
            &5000u32.to_be_bytes(),
            "seq = the client's ack"
        );
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut t = tables();
        judge(&mut t, &bytes);
    }

    #[test]
    fn mutated_requests_never_pass_unjudged(
        pos in 0usize..12, val in any::<u8>(), fc in 1u8..30, a in any::<u16>(), q in 0u16..300
    ) {
        let mut payload = adu(1, 1, &[fc, (a >> 8) as u8, a as u8, (q >> 8) as u8, q as u8]);
        payload[pos] = val;
        let mut t = tables();
        let d = handshake_then(&mut t, EMS, payload);
        // Whatever the bytes, a segment passes only when every ADU was allowed.
        prop_assert!(d.action != Action::Pass || d.reason == Reason::Allowed);
    }
}

#[test]
fn new_bytes_behind_acknowledged_ones_are_judged() {
    // The SYN-resync payload without the SYN: a segment that starts 6 bytes
    // behind the server's RCV.NXT. Its old bytes are discarded by the
    // server; its new ones are judged from the ADU boundary where the judged
    // stream ended, and a write there is denied and reported.
    let read = adu(1, 1, &pdu::read_holding(0, 1));
    let mut t = tables();
    handshake_then(&mut t, EMS, read.clone());
    judge(
        &mut t,
        &server(EMS).seq(5000).ack(1012).flags(TCP_ACK).build(),
    );
    let mut tail = read[6..].to_vec();
    tail.extend(adu(2, 1, &pdu::write_register(0, 1)));
    let d = judge(&mut t, &client(EMS).seq(1006).payload(tail).build()).0;
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::ResetServer, Reason::AddressDenied, true)
    );
    // An allowed request sent that way (the client never saw the ACK) passes.
    let mut t = tables();
    handshake_then(&mut t, EMS, read.clone());
    judge(
        &mut t,
        &server(EMS).seq(5000).ack(1012).flags(TCP_ACK).build(),
    );
    let mut again = read.clone();
    again.extend(adu(2, 1, &pdu::read_holding(5, 1)));
    let d = judge(&mut t, &client(EMS).seq(1000).payload(again).build()).0;
    assert_eq!((d.reason, d.allowed_adus), (Reason::Allowed, 1));
}

#[test]
fn server_packets_after_a_close_are_dropped_quietly() {
    let mut t = tables();
    handshake(&mut t, EMS);
    let rst = server(EMS).seq(5000).flags(TCP_RST | TCP_ACK);
    assert_eq!(judge(&mut t, &rst.build()).0.reason, Reason::Response);
    // The flow is gone: a duplicate of the RST is dropped without an event.
    let d = judge(&mut t, &rst.build()).0;
    assert_eq!(
        (d.action, d.reason, d.event),
        (Action::Drop, Reason::NoFlow, false)
    );
}

#[test]
fn mersenne_reduction_equals_the_remainder() {
    use crate::stream_hash::{P, reduce};
    for x in [
        0,
        1,
        P - 1,
        P,
        P + 1,
        2 * P,
        u64::MAX,
        (P - 1) * (P - 1),
        1 << 62,
    ] {
        assert_eq!(reduce(x), x % P, "{x}");
    }
}
