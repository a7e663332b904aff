//! The real XDP object, loaded into the running kernel and exercised with
//! BPF_PROG_TEST_RUN: crafted frames with known verdicts, then a differential
//! run of random and mutated frames through the kernel and the host decision.

use std::net::IpAddr;

use bessai_common::{
    Reason,
    craft::{self, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TcpFrame, adu, pdu},
};
use bessai_gateway::dataplane::Dataplane;
use bessai_integration::*;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

const EMS: &str = "10.10.1.10";
const ENG: &str = "10.10.1.20";
const PCS1: &str = "10.10.2.11";
const PCS2: &str = "10.10.2.12";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn loaded() -> Dataplane {
    let mut dp = Dataplane::load().expect("the verifier accepts the XDP object");
    dp.install(&example_compiled()).expect("policy installed");
    dp
}

fn run(dp: &mut Dataplane, frame: &[u8]) -> (u32, Reason, Vec<u8>) {
    let out = dp.test_run(frame, 1).expect("test run");
    let (reason, _) = dp.last_verdict().unwrap();
    (out.xdp_action, reason, out.frame)
}

/// The three-way handshake for `client` (its ISN `isn`, the server's 7000).
fn handshake(dp: &mut Dataplane, client: &TcpFrame, isn: u32) {
    let syn = client.clone().seq(isn).ack(0).flags(TCP_SYN);
    assert_eq!(run(dp, &syn.build()).1, Reason::TcpControl);
    let mut syn_ack = TcpFrame::new(client.dst, client.src, client.dst_port, client.src_port)
        .seq(7000)
        .ack(isn.wrapping_add(1))
        .flags(TCP_SYN | TCP_ACK);
    syn_ack.payload.clear();
    assert_eq!(run(dp, &syn_ack.build()).1, Reason::Response);
    let ack = client
        .clone()
        .seq(isn.wrapping_add(1))
        .ack(7001)
        .flags(TCP_ACK);
    assert_eq!(run(dp, &ack.build()).1, Reason::TcpControl);
}

#[test]
fn crafted_frames_get_their_verdicts() {
    if !have_root("crafted_frames_get_their_verdicts") {
        return;
    }
    let mut dp = loaded();
    let ems = || TcpFrame::new(ip(EMS), ip(PCS1), 41000, 502).ack(7001);

    // Data before the server accepted the connection is unknown.
    let (a, r, _) = run(&mut dp, &ems().seq(999).flags(TCP_SYN).build());
    assert_eq!((a, r), (XDP_PASS, Reason::TcpControl));
    let (a, r, _) = run(
        &mut dp,
        &ems()
            .seq(1000)
            .payload(adu(1, 1, &pdu::read_holding(0, 10)))
            .build(),
    );
    assert_eq!(r, Reason::UnknownFlow);
    assert_ne!(a, XDP_DROP, "reset toward the server");

    let ems = || TcpFrame::new(ip(EMS), ip(PCS1), 41010, 502).ack(7001);
    handshake(&mut dp, &ems(), 999);
    let read = ems()
        .seq(1000)
        .payload(adu(1, 1, &pdu::read_holding(0, 10)));
    let (a, r, _) = run(&mut dp, &read.build());
    assert_eq!((a, r), (XDP_PASS, Reason::Allowed), "allowed read");
    // Its retransmission passes as such; with other bytes it is an evasion.
    assert_eq!(run(&mut dp, &read.build()).1, Reason::Retransmission);

    // Forbidden write: becomes a RST toward the server, at the tracked RCV.NXT.
    let write = ems()
        .seq(1012)
        .payload(adu(2, 1, &pdu::write_register(41, 9)));
    let (a, r, out) = run(&mut dp, &write.build());
    assert_eq!((a, r), (XDP_PASS, Reason::AddressDenied));
    assert_eq!(out.len(), 54, "headers only");
    assert_eq!(out[47] & TCP_RST, TCP_RST);
    assert_eq!(
        &out[38..42],
        &1012u32.to_be_bytes(),
        "RST at the judged end"
    );
    assert!(craft::checksums_ok(&out));
    // The client's retransmission is answered with a RST, sent back out.
    let (a, r, out) = run(&mut dp, &write.build());
    assert_eq!((a, r), (XDP_TX, Reason::ResetRepeat));
    assert_eq!(&out[26..30], &ip4(PCS1), "from the server's address");
    assert!(craft::checksums_ok(&out));

    // Engineering workstation: read only.
    let eng = || TcpFrame::new(ip(ENG), ip(PCS1), 41001, 502).ack(7001);
    handshake(&mut dp, &eng(), 999);
    let (a, r, _) = run(
        &mut dp,
        &eng()
            .seq(1000)
            .payload(adu(1, 1, &pdu::write_register(40, 1)))
            .build(),
    );
    assert_eq!((a, r), (XDP_PASS, Reason::FunctionDenied), "RST to server");

    // A host in no conduit.
    let stranger = TcpFrame::new(ip("10.10.1.99"), ip(PCS1), 41002, 502);
    let (a, r, _) = run(&mut dp, &stranger.flags(TCP_SYN).build());
    assert_eq!((a, r), (XDP_DROP, Reason::NoConduit));
    // The inverter opening a connection toward a client port.
    let syn_out = TcpFrame::new(ip(PCS1), ip(EMS), 502, 41020).flags(TCP_SYN);
    assert_eq!(run(&mut dp, &syn_out.build()).1, Reason::NoFlow);

    // Traffic that is not ours passes untouched.
    let ssh = TcpFrame::new(ip(EMS), ip(PCS1), 41003, 22)
        .payload(vec![0; 32])
        .build();
    let (a, r, out) = run(&mut dp, &ssh);
    assert_eq!((a, r, out), (XDP_PASS, Reason::NotConduit, ssh));

    // Fail closed on what cannot be judged.
    let mut frag = TcpFrame::new(ip(EMS), ip(PCS1), 41000, 502).payload(vec![0; 8]);
    frag.frag = 0x2000;
    assert_eq!(run(&mut dp, &frag.build()).0, XDP_DROP);
    let pcs2 = || TcpFrame::new(ip(EMS), ip(PCS2), 41004, 502).ack(7001);
    handshake(&mut dp, &pcs2(), 999);
    let urg = pcs2().seq(1000).flags(TCP_ACK | TCP_URG);
    let (_, r, _) = run(
        &mut dp,
        &urg.payload(adu(1, 1, &pdu::read_holding(0, 1))).build(),
    );
    assert_eq!(r, Reason::TcpUrgent);

    let c = dp.counters().unwrap();
    assert_eq!(c.reason(Reason::Allowed), 1);
    assert_eq!(c.reason(Reason::NoConduit), 1);
}

fn ip4(s: &str) -> [u8; 4] {
    match ip(s) {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(_) => unreachable!(),
    }
}

fn random_pdu(rng: &mut StdRng) -> Vec<u8> {
    let a = if rng.random_bool(0.7) {
        rng.random_range(0..120)
    } else {
        rng.random()
    };
    let q = if rng.random_bool(0.8) {
        rng.random_range(1..20)
    } else {
        rng.random_range(0..300)
    };
    match rng.random_range(0..12) {
        0..=2 => pdu::read_holding(a, q),
        3 => pdu::read_input(a, q),
        4 => pdu::write_register(if rng.random_bool(0.5) { 40 } else { a }, rng.random()),
        5 => pdu::write_registers(a, &vec![7; (q as usize).clamp(1, 130)]),
        6 => pdu::write_coil(a, rng.random()),
        7 => pdu::read_write(a, q, rng.random_range(30..60), &[1, 2]),
        8 => pdu::diagnostics(rng.random_range(0..3)),
        9 => pdu::read_device_id(1, 0),
        10 => pdu::write_coils(a, q.max(1)),
        _ => {
            let n = rng.random_range(0..12);
            (0..n).map(|_| rng.random()).collect()
        }
    }
}

fn random_payload(rng: &mut StdRng) -> Vec<u8> {
    let adus = match rng.random_range(0..10) {
        0 => 0,
        1 => rng.random_range(2..20),
        _ => 1,
    };
    let mut p = Vec::new();
    for i in 0..adus {
        // Stay within one Ethernet frame (BPF_PROG_TEST_RUN takes up to a page).
        if p.len() > 1200 {
            break;
        }
        let unit = if rng.random_bool(0.9) {
            1
        } else {
            rng.random()
        };
        p.extend(adu(i as u16, unit, &random_pdu(rng)));
    }
    p
}

fn mutate(rng: &mut StdRng, mut f: Vec<u8>) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..f.len());
                f[i] = rng.random();
            }
        }
        1 => f.truncate(rng.random_range(14..=f.len())),
        2 => {
            let extra = rng.random_range(1..64);
            f.extend((0..extra).map(|_| rng.random::<u8>()));
        }
        _ => {
            // Mutate only the Modbus part.
            if f.len() > 54 {
                let i = rng.random_range(54..f.len());
                f[i] = rng.random();
            }
        }
    }
    f
}

/// A client connection in the flow generator: what it sent, so that it can
/// retransmit, overlap and acknowledge like a real stack, or an attacker.
struct Conn {
    client: TcpFrame,
    server: TcpFrame,
    isn: u32,
    next: u32,
    /// Client segments sent: (sequence number, payload).
    sent: Vec<(u32, Vec<u8>)>,
}

impl Conn {
    fn data(&self, seq: u32, payload: Vec<u8>) -> TcpFrame {
        self.client
            .clone()
            .seq(seq)
            .flags(TCP_ACK | TCP_PSH)
            .payload(payload)
    }
}

/// One packet of a generated flow, in either direction.
fn next_packet(rng: &mut StdRng, c: &mut Conn) -> Vec<u8> {
    let pick = |rng: &mut StdRng, c: &Conn| c.sent.choose(rng).cloned();
    match rng.random_range(0..100) {
        0..40 => {
            // Mostly what the conduit allows (pipelined reads), so that flows
            // live on past their first segment; sometimes anything.
            let payload = if rng.random_bool(0.7) {
                (0..rng.random_range(1..5u16))
                    .flat_map(|i| adu(i, 1, &pdu::read_holding(rng.random_range(0..50), 2)))
                    .collect()
            } else {
                random_payload(rng)
            };
            let seq = c.next;
            c.next = c.next.wrapping_add(payload.len() as u32);
            c.sent.push((seq, payload.clone()));
            c.data(seq, payload).build()
        }
        40..55 => {
            // The server acknowledges a segment boundary (or any point), with
            // or without an answer.
            let ack = match pick(rng, c) {
                Some((seq, p)) if rng.random_bool(0.8) => seq.wrapping_add(p.len() as u32),
                _ => c.isn.wrapping_add(rng.random_range(0..200)),
            };
            let mut s = c.server.clone().ack(ack).flags(TCP_ACK);
            if rng.random_bool(0.5) {
                s.payload = adu(1, 1, &[3, 2, 0, 7]);
            }
            s.build()
        }
        55..63 => match pick(rng, c) {
            Some((seq, p)) => c.data(seq, p).build(),
            None => c.data(c.next, random_payload(rng)).build(),
        },
        63..67 => match pick(rng, c) {
            // Same start, other bytes (or another length).
            Some((seq, _)) => c.data(seq, random_payload(rng)).build(),
            None => c.data(c.next, vec![]).build(),
        },
        67..71 => {
            // Linux collapsing consecutive segments on retransmission.
            let n = c.sent.len();
            if n >= 2 {
                let k = rng.random_range(0..n - 1);
                let (seq, a) = c.sent[k].clone();
                let (_, b) = c.sent[k + 1].clone();
                c.data(seq, [a, b].concat()).build()
            } else {
                c.data(c.next, random_payload(rng)).build()
            }
        }
        71..74 => match pick(rng, c) {
            Some((seq, p)) => {
                let k = rng.random_range(0..=p.len() as u32);
                c.data(seq.wrapping_add(k), random_payload(rng)).build()
            }
            None => c.data(c.next.wrapping_add(3), random_payload(rng)).build(),
        },
        74..77 => c.data(c.next.wrapping_sub(1), vec![0xAA]).build(),
        77..80 => c
            .data(
                c.next.wrapping_add(rng.random_range(1..100)),
                random_payload(rng),
            )
            .build(),
        80..83 => {
            let seq = if rng.random_bool(0.5) {
                c.next.wrapping_sub(rng.random_range(1..20))
            } else {
                rng.random()
            };
            c.client.clone().seq(seq).ack(0).flags(TCP_SYN).build()
        }
        83..85 => {
            let seq = if rng.random_bool(0.5) {
                c.next
            } else {
                rng.random()
            };
            c.client.clone().seq(seq).flags(TCP_RST).build()
        }
        85..87 => c
            .client
            .clone()
            .seq(c.next)
            .flags(TCP_FIN | TCP_ACK)
            .build(),
        87..89 => c
            .data(c.next, random_payload(rng))
            .flags(TCP_ACK | TCP_URG)
            .build(),
        89..95 => {
            let f = c.data(c.next, random_payload(rng)).build();
            mutate(rng, f)
        }
        95..97 => {
            let mut f = c.data(c.next, random_payload(rng));
            if rng.random_bool(0.5) {
                f = f.vlan(rng.random_range(1..4000));
            } else {
                f.frag = 0x2000;
            }
            f.build()
        }
        _ => {
            // The server side with any flags, or a server RST.
            let flags = if rng.random_bool(0.3) {
                TCP_RST | TCP_ACK
            } else {
                rng.random::<u8>() & 0x3f
            };
            c.server.clone().flags(flags).build()
        }
    }
}

/// The handshake of a generated flow, usually right, sometimes not.
fn opening(rng: &mut StdRng, c: &Conn) -> Vec<Vec<u8>> {
    let syn = c.client.clone().seq(c.isn).ack(0).flags(TCP_SYN).build();
    let mut syn_ack = c
        .server
        .clone()
        .seq(7000)
        .ack(c.isn.wrapping_add(1))
        .flags(TCP_SYN | TCP_ACK);
    if rng.random_bool(0.05) {
        syn_ack = syn_ack.ack(rng.random());
    }
    let mut ack = c
        .client
        .clone()
        .seq(c.isn.wrapping_add(1))
        .ack(7001)
        .flags(TCP_ACK);
    if rng.random_bool(0.05) {
        ack = ack.ack(rng.random());
    }
    match rng.random_range(0..20) {
        0 => vec![],
        1 => vec![syn],
        2 => vec![syn, syn_ack.build()],
        _ => vec![syn, syn_ack.build(), ack.build()],
    }
}

#[test]
fn kernel_and_host_agree_on_flows() {
    if !have_root("kernel_and_host_agree_on_flows") {
        return;
    }
    const FLOWS: usize = 12_000;
    let compiled = example_compiled();
    let mut dp = Dataplane::load().unwrap();
    dp.install(&compiled).unwrap();
    let mut host = host_tables(&compiled);
    host.policy.stream_key = dp.stream_key().unwrap();
    let mut rng = StdRng::seed_from_u64(0x6265_7373_6169);

    // Weighted toward hosts and assets that have conduits.
    let clients = [EMS, EMS, EMS, EMS, ENG, ENG, "10.10.1.99", "10.10.1.30"].map(ip);
    let servers = [PCS1, PCS1, PCS1, PCS2, PCS2, "10.10.2.99"].map(ip);
    let mut disagreements = 0;
    let mut state_disagreements = 0;
    let mut packets = 0;
    let mut by_reason = std::collections::BTreeMap::new();
    for n in 0..FLOWS {
        let (src, dst) = (
            *clients.choose(&mut rng).unwrap(),
            *servers.choose(&mut rng).unwrap(),
        );
        // A tuple of its own per flow: the kernel's tables never evict.
        let sport = 10_000 + n as u16;
        let port = if rng.random_bool(0.97) { 502 } else { 503 };
        let isn: u32 = rng.random();
        let mut c = Conn {
            client: TcpFrame::new(src, dst, sport, port).ack(7001),
            server: TcpFrame::new(dst, src, port, sport).seq(7001),
            isn,
            next: isn.wrapping_add(1),
            sent: Vec::new(),
        };
        let mut frames = opening(&mut rng, &c);
        let len = rng.random_range(2..=30usize);
        while frames.len() < len {
            frames.push(next_packet(&mut rng, &mut c));
        }
        for frame in frames {
            let frame = if frame.len() < 14 {
                [frame, vec![0; 14]].concat()
            } else {
                frame
            };
            packets += 1;
            let want = host_verdict(&mut host, &frame);
            let got = dp.test_run(&frame, 1).unwrap();
            let (reason, action) = dp.last_verdict().unwrap();
            *by_reason.entry(want.reason.as_str()).or_insert(0u32) += 1;
            if (got.xdp_action, reason, action, &got.frame)
                != (want.xdp_action, want.reason, want.action, &want.frame)
            {
                disagreements += 1;
                if disagreements <= 5 {
                    eprintln!(
                        "flow {n}: kernel ({}, {reason:?}, {action:?}) host ({}, {:?}, {:?})\n  {:02x?}",
                        got.xdp_action, want.xdp_action, want.reason, want.action, frame
                    );
                }
            }
        }
        let key = bessai_common::FlowKey {
            client: mapped(src),
            server: mapped(dst),
            client_port: sport,
            server_port: port,
        };
        // The kernel numbers conduits per policy generation.
        let kernel_flow = dp.flow(&key).unwrap().map(|mut f| {
            f.conduit %= bessai_common::MAX_POLICY_CONDUITS as u16;
            f
        });
        let kernel = (kernel_flow, dp.half_open(&key).unwrap());
        let host_state = (host.flow(&key).copied(), host.half_open(&key).copied());
        if kernel != host_state {
            state_disagreements += 1;
            if state_disagreements <= 5 {
                eprintln!("flow {n}: state kernel {kernel:?}\n  host {host_state:?}");
            }
        }
    }
    println!(
        "differential: {FLOWS} flows, {packets} packets, {disagreements} verdict and \
         {state_disagreements} state disagreements; verdicts by reason: {by_reason:?}"
    );
    assert_eq!(disagreements, 0, "kernel and host verdicts disagree");
    assert_eq!(
        state_disagreements, 0,
        "kernel and host flow state disagree"
    );
    for reason in [
        Reason::Allowed,
        Reason::Retransmission,
        Reason::RetransmitMismatch,
        Reason::Duplicate,
        Reason::Unverifiable,
        Reason::OutOfOrder,
        Reason::UnknownFlow,
        Reason::NoFlow,
        Reason::Response,
        Reason::ResetRepeat,
        Reason::AddressDenied,
        Reason::FunctionDenied,
        Reason::TcpUrgent,
        Reason::IpFragment,
        Reason::NoConduit,
    ] {
        assert!(
            by_reason.contains_key(reason.as_str()),
            "the generator reaches {reason:?}: {by_reason:?}"
        );
    }
}

fn mapped(a: IpAddr) -> bessai_common::Addr {
    match a {
        IpAddr::V4(v) => bessai_common::ipv4_mapped(v.octets()),
        IpAddr::V6(v) => v.octets(),
    }
}
