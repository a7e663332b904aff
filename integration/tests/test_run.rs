//! The real XDP object, loaded into the running kernel and exercised with
//! BPF_PROG_TEST_RUN: crafted frames with known verdicts, then a differential
//! run of random and mutated frames through the kernel and the host decision.

use std::net::IpAddr;

use bessai_common::{
    Reason,
    craft::{self, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TCP_URG, TcpFrame, adu, pdu},
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

#[test]
fn crafted_frames_get_their_verdicts() {
    if !have_root("crafted_frames_get_their_verdicts") {
        return;
    }
    let mut dp = loaded();
    let ems = || TcpFrame::new(ip(EMS), ip(PCS1), 41000, 502);

    let (a, r, _) = run(&mut dp, &ems().seq(999).flags(TCP_SYN).build());
    assert_eq!((a, r), (XDP_PASS, Reason::TcpControl));
    let (a, r, _) = run(
        &mut dp,
        &ems().payload(adu(1, 1, &pdu::read_holding(0, 10))).build(),
    );
    assert_eq!((a, r), (XDP_PASS, Reason::Allowed), "allowed read");

    // Forbidden write: becomes a RST toward the server.
    let write = ems()
        .seq(1012)
        .payload(adu(2, 1, &pdu::write_register(41, 9)));
    let (a, r, out) = run(&mut dp, &write.build());
    assert_eq!((a, r), (XDP_PASS, Reason::AddressDenied));
    assert_eq!(out.len(), 54, "headers only");
    assert_eq!(out[47] & TCP_RST, TCP_RST);
    assert!(craft::checksums_ok(&out));
    // The client's retransmission is answered with a RST, sent back out.
    let (a, r, out) = run(&mut dp, &write.build());
    assert_eq!((a, r), (XDP_TX, Reason::ResetRepeat));
    assert_eq!(&out[26..30], &ip4(PCS1), "from the server's address");
    assert!(craft::checksums_ok(&out));

    // Engineering workstation: read only.
    let eng = || TcpFrame::new(ip(ENG), ip(PCS1), 41001, 502);
    run(&mut dp, &eng().seq(999).flags(TCP_SYN).build());
    let (a, r, _) = run(
        &mut dp,
        &eng()
            .payload(adu(1, 1, &pdu::write_register(40, 1)))
            .build(),
    );
    assert_eq!((a, r), (XDP_PASS, Reason::FunctionDenied), "RST to server");

    // A host in no conduit.
    let stranger = TcpFrame::new(ip("10.10.1.99"), ip(PCS1), 41002, 502);
    let (a, r, _) = run(&mut dp, &stranger.flags(TCP_SYN).build());
    assert_eq!((a, r), (XDP_DROP, Reason::NoConduit));

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
    let urg = TcpFrame::new(ip(EMS), ip(PCS2), 41004, 502).flags(TCP_ACK | TCP_URG);
    run(
        &mut dp,
        &TcpFrame::new(ip(EMS), ip(PCS2), 41004, 502)
            .seq(999)
            .flags(TCP_SYN)
            .build(),
    );
    let (_, r, _) = run(
        &mut dp,
        &urg.payload(adu(1, 1, &pdu::read_holding(0, 1))).build(),
    );
    assert_eq!(r, Reason::TcpUrgent);

    let c = dp.counters().unwrap();
    assert!(c.reason(Reason::Allowed) >= 1 && c.reason(Reason::NoConduit) >= 1);
}

fn ip4(s: &str) -> [u8; 4] {
    match ip(s) {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(_) => unreachable!(),
    }
}

/// One client connection in the generator, with the sequence number it is at.
struct GenFlow {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    seq: u32,
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

#[test]
fn kernel_and_host_agree_on_100k_frames() {
    if !have_root("kernel_and_host_agree_on_100k_frames") {
        return;
    }
    const FRAMES: usize = 100_000;
    let compiled = example_compiled();
    let mut dp = Dataplane::load().unwrap();
    dp.install(&compiled).unwrap();
    let mut host = host_tables(&compiled);
    let mut rng = StdRng::seed_from_u64(0x6265_7373_6169);

    // Weighted toward hosts and assets that have conduits.
    let clients = [EMS, EMS, EMS, ENG, ENG, "10.10.1.99", "10.10.1.30"].map(ip);
    let servers = [PCS1, PCS1, PCS2, PCS2, "10.10.2.99"].map(ip);
    // A bounded set of connections so that the kernel's LRU never evicts.
    let mut flows: Vec<GenFlow> = (0..64)
        .map(|i| GenFlow {
            src: *clients.choose(&mut rng).unwrap(),
            dst: *servers.choose(&mut rng).unwrap(),
            sport: 30000 + i,
            seq: rng.random(),
        })
        .collect();

    let mut disagreements = 0;
    let mut by_reason = std::collections::BTreeMap::new();
    for n in 0..FRAMES {
        let fi = rng.random_range(0..flows.len());
        let fl = &mut flows[fi];
        let port = if rng.random_bool(0.95) {
            502
        } else {
            rng.random_range(1..1024)
        };
        let base = TcpFrame::new(fl.src, fl.dst, fl.sport, port);
        let kind = rng.random_range(0..100);
        let frame = match kind {
            0..10 => {
                fl.seq = rng.random();
                base.seq(fl.seq.wrapping_sub(1)).flags(TCP_SYN).build()
            }
            10..14 => {
                // Response from the server.
                let mut r = TcpFrame::new(fl.dst, fl.src, port, fl.sport);
                r.payload = adu(1, 1, &[3, 2, 0, 7]);
                r.build()
            }
            14..16 => base.seq(fl.seq).flags(TCP_ACK).build(),
            16..17 => base.seq(fl.seq).flags(TCP_FIN | TCP_ACK).build(),
            17..18 => base.seq(fl.seq).flags(TCP_RST).build(),
            18..22 => {
                // Retransmission, overlap or gap.
                let delta: i32 = rng.random_range(-30..30);
                base.seq(fl.seq.wrapping_add(delta as u32))
                    .payload(random_payload(&mut rng))
                    .build()
            }
            22..25 => base
                .seq(fl.seq)
                .flags(TCP_ACK | TCP_URG)
                .payload(random_payload(&mut rng))
                .build(),
            25..28 => {
                let mut f = base.seq(fl.seq).payload(random_payload(&mut rng));
                f.frag = if rng.random_bool(0.5) { 0x2000 } else { 0x0010 };
                f.build()
            }
            28..32 => base
                .seq(fl.seq)
                .vlan(rng.random_range(1..4000))
                .payload(random_payload(&mut rng))
                .build(),
            32..50 => {
                let f = base.seq(fl.seq).payload(random_payload(&mut rng)).build();
                mutate(&mut rng, f)
            }
            50..52 => {
                let len = rng.random_range(14..200);
                (0..len).map(|_| rng.random()).collect()
            }
            _ => {
                let payload = random_payload(&mut rng);
                let len = payload.len() as u32;
                let f = base.seq(fl.seq).payload(payload).build();
                fl.seq = fl.seq.wrapping_add(len);
                f
            }
        };
        let frame = if frame.len() < 14 {
            [frame, vec![0; 14]].concat()
        } else {
            frame
        };
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
                    "frame {n}: kernel ({}, {reason:?}, {action:?}) host ({}, {:?}, {:?})\n  {:02x?}",
                    got.xdp_action, want.xdp_action, want.reason, want.action, frame
                );
            }
        }
    }
    println!(
        "differential: {FRAMES} frames, {disagreements} disagreements; verdicts by reason: {by_reason:?}"
    );
    assert_eq!(disagreements, 0, "kernel and host disagree");
    assert!(
        by_reason.len() >= 15,
        "the generator covers the decision: {by_reason:?}"
    );
}
