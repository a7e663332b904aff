//! One connection's state is changed from both directions: client segments
//! arrive on one port and the server's ACKs on the other, and on a machine
//! with more than one CPU the XDP program runs for both at the same time.
//! This drives the real XDP object from two threads on two CPUs through
//! BPF_PROG_TEST_RUN, sharing its maps through pins (as two ports of one
//! gateway share them): a client sending allowed reads and retransmitting
//! each one, a server acknowledging them. Nothing here is ever out of order
//! or different, so every client frame must pass; a frame that does not
//! shows that concurrent updates corrupted the flow's record of judged bytes
//! (seen in the impairment test at 10 % loss as a retransmission dropped as
//! "unverifiable" forever, the connection stalled until the client timed out).

use std::{
    net::IpAddr,
    path::Path,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::{Duration, Instant},
};

use bessai_common::craft::{TCP_ACK, TCP_PSH, TCP_SYN, TcpFrame, adu, pdu};
use bessai_gateway::dataplane::{Dataplane, PinPaths};
use bessai_integration::{
    XDP_PASS, example_compiled, have_root,
    netns::{ENG, PCS1, sh},
};

const ISN: u32 = 0x1000_0000;
const SERVER_ISN: u32 = 0x7000_0000;
/// Requests the client sends (each 12 bytes, then retransmitted once).
const REQUESTS: u32 = 100_000;
/// Unacknowledged requests the client lets itself have: below the flow's
/// record limit, so that the window never fills.
const AHEAD: u32 = 4;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn client(seq: u32, flags: u8, payload: Vec<u8>) -> Vec<u8> {
    TcpFrame::new(ip(ENG), ip(PCS1), 41000, 502)
        .seq(ISN.wrapping_add(seq))
        .ack(SERVER_ISN.wrapping_add(1))
        .flags(flags)
        .payload(payload)
        .build()
}

fn server_ack(ack: u32) -> Vec<u8> {
    TcpFrame::new(ip(PCS1), ip(ENG), 502, 41000)
        .seq(SERVER_ISN.wrapping_add(1))
        .ack(ISN.wrapping_add(ack))
        .flags(TCP_ACK)
        .build()
}

/// Runs the calling thread on `cpu` only.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity({cpu})"
        );
    }
}

/// A bpffs of the test's own for the pins; unmounted on drop.
struct Bpffs(tempfile::TempDir);

impl Bpffs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        sh(&[
            "mount",
            "-t",
            "bpf",
            "bpf",
            &dir.path().display().to_string(),
        ])
        .unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = sh(&["umount", &self.0.path().display().to_string()]);
    }
}

/// Sets a flag when dropped: the server thread stops however the client
/// thread ends (a panic included).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The client's port on CPU 0, the server's on `server_cpu`; returns the
/// client frames that did not pass unchanged (the first few), and the
/// program's per-reason packet counters.
fn run_two_ports(server_cpu: usize) -> (Vec<String>, String) {
    let fs = Bpffs::mount();
    let pins = PinPaths::new(fs.path().join("bessai"));
    let (mut client_port, _) = Dataplane::load_pinned(pins.clone()).unwrap();
    client_port.install(&example_compiled()).unwrap();
    // The same program and maps, adopted from the pins: the server's port.
    let (mut server_port, _) = Dataplane::load_pinned(pins).unwrap();

    // Handshake: the engineering workstation's read-only conduit.
    let pass = |dp: &mut Dataplane, frame: &[u8], what: &str| {
        let out = dp.test_run(frame, 1).unwrap();
        assert_eq!(out.xdp_action, XDP_PASS, "{what}: {:?}", dp.last_verdict());
    };
    pass(&mut client_port, &client(0, TCP_SYN, vec![]), "SYN");
    let syn_ack = TcpFrame::new(ip(PCS1), ip(ENG), 502, 41000)
        .seq(SERVER_ISN)
        .ack(ISN.wrapping_add(1))
        .flags(TCP_SYN | TCP_ACK)
        .build();
    pass(&mut server_port, &syn_ack, "SYN-ACK");
    pass(&mut client_port, &client(1, TCP_ACK, vec![]), "ACK");

    // Requests sent (client thread) and acknowledged (server thread).
    let sent = AtomicU32::new(0);
    let acked = AtomicU32::new(0);
    let done = AtomicBool::new(false);
    let failures = std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_cpu(server_cpu);
            while !done.load(Ordering::Acquire) {
                let n = sent.load(Ordering::Acquire);
                if n == acked.load(Ordering::Relaxed) {
                    std::thread::yield_now();
                    continue;
                }
                let out = server_port.test_run(&server_ack(1 + 12 * n), 1).unwrap();
                assert_eq!(out.xdp_action, XDP_PASS, "the server's ACK of {n}");
                acked.store(n, Ordering::Release);
            }
        });
        let _stop = SetOnDrop(&done);
        pin_to_cpu(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut failures = Vec::new();
        for i in 0..REQUESTS {
            while i >= acked.load(Ordering::Acquire) + AHEAD {
                assert!(Instant::now() < deadline, "no ACK of request {i} in 60 s");
                std::thread::yield_now();
            }
            let frame = client(
                1 + 12 * i,
                TCP_ACK | TCP_PSH,
                adu(i as u16, 1, &pdu::read_holding(0, 2)),
            );
            // New, allowed; then the same bytes again, as a client's TCP
            // retransmits when an ACK is late: judged or acknowledged
            // already, it passes either way, unchanged (a denial on a reset
            // conduit passes too, rewritten into a RST).
            for what in ["new", "retransmitted"] {
                let out = client_port.test_run(&frame, 1).unwrap();
                if (out.xdp_action != XDP_PASS || out.frame != frame) && failures.len() < 6 {
                    failures.push(format!(
                        "request {i} ({what}): XDP action {}{}, acknowledged up to {}",
                        out.xdp_action,
                        if out.frame == frame {
                            ""
                        } else {
                            ", rewritten"
                        },
                        acked.load(Ordering::Relaxed)
                    ));
                }
            }
            sent.store(i + 1, Ordering::Release);
        }
        failures
    });
    let counters = client_port.counters().unwrap();
    let reasons = counters
        .by_reason
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}={n}", r.as_str()))
        .collect::<Vec<_>>()
        .join(" ");
    (failures, reasons)
}

#[test]
fn acks_and_data_of_one_flow_on_two_cpus_keep_its_state() {
    if !have_root("acks_and_data_of_one_flow_on_two_cpus_keep_its_state") {
        return;
    }
    assert!(
        std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
        "needs two CPUs to run the two directions at once"
    );
    let (failures, reasons) = run_two_ports(1);
    assert!(
        failures.is_empty(),
        "client frames of one flow judged wrongly while its ACKs were judged on \
         another CPU (the same run on one CPU passes): {failures:#?}; packets by reason: {reasons}"
    );
}

/// The control: the same two threads on one CPU, so that the program runs
/// for one packet at a time (but in any order of client frames and ACKs).
#[test]
fn acks_and_data_of_one_flow_on_one_cpu_keep_its_state() {
    if !have_root("acks_and_data_of_one_flow_on_one_cpu_keep_its_state") {
        return;
    }
    let (failures, reasons) = run_two_ports(0);
    assert!(failures.is_empty(), "{failures:#?}; {reasons}");
}
