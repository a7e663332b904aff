//! `cargo xtask bench`: data-plane figures, each beside its baseline, in one run.
//!
//! 1. BPF_PROG_TEST_RUN ns/packet for four frame kinds (median of batches).
//! 2. Modbus transactions/s and latency through the gateway namespace with the
//!    XDP filter attached versus plain forwarding, interleaved rounds.
//!
//! Writes target/bench/dataplane.json.

use std::{net::IpAddr, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use bessai_common::craft::{TCP_ACK, TCP_SYN, TcpFrame, adu, pdu};
use bessai_gateway::dataplane::{Baseline, Dataplane};
use bessai_integration::{
    example_compiled,
    netns::{EMS, PCS1, Testbed, bin, repo_root},
};
use serde_json::{Value, json};

const BATCHES: usize = 31;
/// Single runs per stateful row.
const SAMPLES: usize = 2001;
const REPEAT: u32 = 2000;
const ROUNDS: usize = 5;
const ROUND_MS: u64 = 4000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Turns `kernel.bpf_stats_enabled` off while timing (it adds the kernel's
/// own accounting to every run) and restores it afterwards.
struct StatsOff(String);

impl StatsOff {
    fn new() -> Result<Self> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let was = std::fs::read_to_string(path).unwrap_or_else(|_| "0".into());
        std::fs::write(path, "0").context("turning kernel.bpf_stats_enabled off")?;
        Ok(Self(was.trim().to_string()))
    }
}

impl Drop for StatsOff {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// What is measured: our program, or one of its baselines.
#[derive(Clone, Copy)]
enum Prog {
    Ours,
    Base(Baseline),
}

/// Median ns per run of `frame` over `samples` runs of `repeat` each;
/// `prepare` restores the state the measured path needs before each sample.
fn ns_per_run(
    dp: &mut Dataplane,
    prog: Prog,
    frame: &[u8],
    samples: usize,
    repeat: u32,
    mut prepare: impl FnMut(&mut Dataplane, usize),
) -> Result<f64> {
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples {
        prepare(dp, i);
        let d = match prog {
            Prog::Ours => dp.test_run(frame, repeat)?.per_run,
            Prog::Base(b) => dp.test_run_baseline(b, frame, repeat)?,
        };
        v.push(d.as_nanos() as f64);
    }
    Ok(median(v))
}

/// The handshake of a fresh connection from the EMS (client ISN 999, server 7000).
fn open(dp: &mut Dataplane, sport: u16) {
    let c = TcpFrame::new(ip(EMS), ip(PCS1), sport, 502);
    let s = TcpFrame::new(ip(PCS1), ip(EMS), 502, sport);
    for f in [
        c.clone().seq(999).ack(0).flags(TCP_SYN).build(),
        s.seq(7000).ack(1000).flags(TCP_SYN | TCP_ACK).build(),
        c.seq(1000).ack(7001).flags(TCP_ACK).build(),
    ] {
        dp.test_run(&f, 1).expect("handshake");
    }
}

/// A data segment of `adus` FC 3 reads on connection `sport`, at the first byte.
fn reads(sport: u16, adus: u16) -> Vec<u8> {
    let payload: Vec<u8> = (0..adus)
        .flat_map(|i| adu(i, 1, &pdu::read_holding(i % 90, 2)))
        .collect();
    TcpFrame::new(ip(EMS), ip(PCS1), sport, 502)
        .seq(1000)
        .ack(7001)
        .payload(payload)
        .build()
}

fn test_run_figures() -> Result<Value> {
    let _off = StatsOff::new()?;
    let mut dp = Dataplane::load().context("loading the XDP object (root?)")?;
    dp.install(&example_compiled())?;
    let verified = dp.verified_instructions()?;
    println!(
        "verifier: {} instructions processed of 1,000,000",
        verified.map_or("unknown".into(), |n| n.to_string())
    );
    // Each stateful sample judges new data on a connection of its own,
    // opened just before (one run: BPF_PROG_TEST_RUN repeats the same frame,
    // which would be a retransmission from the second run on).
    let mut next_port = 1024u16;
    let mut fresh = move |dp: &mut Dataplane, _| {
        next_port = if next_port >= 65000 {
            1024
        } else {
            next_port + 1
        };
        open(dp, next_port);
        next_port
    };
    let mut row = |dp: &mut Dataplane, adus: u16| -> Result<(f64, f64, f64)> {
        let port = std::cell::Cell::new(0u16);
        let mut ours = Vec::new();
        for _ in 0..SAMPLES {
            let p = fresh(dp, 0);
            port.set(p);
            ours.push(dp.test_run(&reads(p, adus), 1)?.per_run.as_nanos() as f64);
            let (reason, _) = dp.last_verdict()?;
            if reason != bessai_common::Reason::Allowed {
                bail!("{adus} reads: {reason:?}, not allowed");
            }
        }
        let frame = reads(port.get(), adus);
        let empty = ns_per_run(
            dp,
            Prog::Base(Baseline::Pass),
            &frame,
            SAMPLES,
            1,
            |_, _| {},
        )?;
        let reference = ns_per_run(
            dp,
            Prog::Base(Baseline::ReferenceFilter),
            &frame,
            SAMPLES,
            1,
            |_, _| {},
        )?;
        Ok((median(ours), empty, reference))
    };
    let read1 = row(&mut dp, 1)?;
    let read8 = row(&mut dp, 8)?;
    let read64 = row(&mut dp, 64)?;

    // A flood of forbidden writes on connections the gateway never saw: no
    // state changes, so the same frame can be repeated.
    let flood = TcpFrame::new(ip(EMS), ip(PCS1), 33333, 502)
        .seq(5)
        .payload(adu(2, 1, &pdu::write_register(41, 1)))
        .build();
    let flood_ours = ns_per_run(&mut dp, Prog::Ours, &flood, BATCHES, REPEAT, |_, _| {})?;
    let flood_drop = ns_per_run(
        &mut dp,
        Prog::Base(Baseline::Drop),
        &flood,
        BATCHES,
        REPEAT,
        |_, _| {},
    )?;
    let other = TcpFrame::new(ip(EMS), ip(PCS1), 40005, 443)
        .payload(vec![0; 64])
        .build();
    let other_ours = ns_per_run(&mut dp, Prog::Ours, &other, BATCHES, REPEAT, |_, _| {})?;
    let other_empty = ns_per_run(
        &mut dp,
        Prog::Base(Baseline::Pass),
        &other,
        BATCHES,
        REPEAT,
        |_, _| {},
    )?;

    println!(
        "BPF_PROG_TEST_RUN, ns per packet (medians; kernel.bpf_stats_enabled off; stateful rows: {SAMPLES} single runs on fresh connections)"
    );
    println!(
        "  {:<44} {:>8} {:>8} {:>10} {:>12}",
        "frame", "ours", "empty", "reference", "ours-empty"
    );
    for (name, (o, e, r), target) in [
        ("allowed FC3 read (1 ADU)", read1, "<= 60"),
        ("8 pipelined FC3 reads in one segment", read8, "<= 150"),
        ("64 FC3 reads in one segment", read64, "judged"),
    ] {
        println!(
            "  {name:<44} {o:>8.0} {e:>8.0} {r:>10.0} {:>12.0}  (target {target})",
            o - e
        );
    }
    println!(
        "  {:<44} {flood_ours:>8.0} {:>8} {:>10} {:>12.0}  (drop-all {flood_drop:.0}; target <= 60 above it)",
        "forbidden write, no handshake (flood)",
        "",
        "",
        flood_ours - flood_drop
    );
    println!(
        "  {:<44} {other_ours:>8.0} {other_empty:>8.0} {:>10} {:>12.0}",
        "non-Modbus TCP (port 443)",
        "",
        other_ours - other_empty
    );
    let entry = |(o, e, r): (f64, f64, f64)| json!({"ours": o, "empty": e, "reference_filter": r, "above_empty": o - e});
    Ok(json!({
        "allowed_read": entry(read1),
        "pipelined_8_reads": entry(read8),
        "segment_64_reads": entry(read64),
        "flood_no_handshake": {"ours": flood_ours, "drop_all": flood_drop, "above_drop_all": flood_ours - flood_drop},
        "non_modbus": {"ours": other_ours, "empty": other_empty},
        "samples": SAMPLES, "batches": BATCHES, "repeat": REPEAT,
        "verifier_instructions_processed": verified,
        "bpf_stats_enabled": false,
    }))
}

/// Busy CPU time of the whole machine so far (all CPUs, from /proc/stat).
fn busy_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(busy * 1_000_000 / hz)
}

/// CPU time a process used so far (user + system, from /proc/PID/stat).
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime is the
    // 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / hz)
}

fn load_round(tb: &Testbed) -> Result<Value> {
    let cpu0 = busy_cpu();
    let out = Command::new("ip")
        .args(["netns", "exec", &tb.ns("ems")])
        .arg(bin("modbus-sim"))
        .args(["load", "--connect", &format!("{PCS1}:502"), "--unit", "1"])
        .args([
            "--duration-ms",
            &ROUND_MS.to_string(),
            "--concurrency",
            "16",
            "--op",
            "read-holding:0:10",
        ])
        .output()?;
    let cpu = busy_cpu() - cpu0;
    let line = String::from_utf8_lossy(&out.stdout);
    let mut v: Value =
        serde_json::from_str(line.lines().last().unwrap_or("")).context("load output")?;
    if v["errors"].as_u64().unwrap_or(1) > 0 {
        bail!("transactions failed during the benchmark: {v}");
    }
    let tx = v["transactions"]
        .as_f64()
        .or_else(|| v["tps"].as_f64().map(|t| t * ROUND_MS as f64 / 1000.0))
        .unwrap_or(1.0);
    v["cpu_us_per_tx"] = json!(cpu.as_secs_f64() * 1e6 / tx.max(1.0));
    Ok(v)
}

/// Sends `count` forbidden writes to pcs-1 on connections that never had a
/// handshake, from a raw socket (run inside the EMS namespace by `--flood`).
fn flood_sender(count: u64) -> Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed at exit.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    let dst = match ip(PCS1) {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(_) => unreachable!(),
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst),
        },
        sin_zero: [0; 8],
    };
    for i in 0..count {
        let frame = TcpFrame::new(ip(EMS), ip(PCS1), 1024 + (i % 60_000) as u16, 502)
            .seq(i as u32)
            .payload(adu(2, 1, &pdu::write_register(41, 1)))
            .build();
        let packet = &frame[14..];
        // SAFETY: valid buffer and address of the right size.
        let n = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // The socket's buffer is full: let the queue drain.
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                std::thread::yield_now();
                continue;
            }
            bail!("sendto: {e}");
        }
    }
    Ok(())
}

/// A flood of forbidden frames without handshakes through the running
/// gateway: machine CPU per frame, and the daemon's CPU (it reads and
/// reports the events the kernel did not fold).
fn flood_figures(tb: &mut Testbed) -> Result<Value> {
    const FRAMES: u64 = 200_000;
    let policy = repo_root().join("examples/bess-site.toml");
    tb.start_gateway(&policy)?;
    let pid = tb.gateway_pid().context("gateway pid")?;
    let (daemon0, cpu0, t0) = (process_cpu(pid), busy_cpu(), std::time::Instant::now());
    let me = std::env::current_exe()?;
    let status = Command::new("ip")
        .args(["netns", "exec", &tb.ns("ems")])
        .arg(me)
        .args(["--flood", &FRAMES.to_string()])
        .status()?;
    if !status.success() {
        bail!("flood sender: {status}");
    }
    // The daemon drains what the kernel reported; give it a moment to finish.
    std::thread::sleep(Duration::from_millis(500));
    let (daemon, cpu, secs) = (
        process_cpu(pid) - daemon0,
        busy_cpu() - cpu0,
        t0.elapsed().as_secs_f64(),
    );
    let events = std::fs::read_to_string(tb.gateway_log())
        .unwrap_or_default()
        .matches("\"unknown-flow\"")
        .count();
    tb.stop_gateway();
    println!(
        "\nflood: {FRAMES} forbidden writes without handshake in {secs:.2} s: machine CPU {:.0} ns/frame, daemon CPU {:.0} ms ({:.1} % of the flood's duration), {events} events logged",
        cpu.as_secs_f64() * 1e9 / FRAMES as f64,
        daemon.as_secs_f64() * 1e3,
        daemon.as_secs_f64() * 100.0 / secs
    );
    Ok(json!({
        "frames": FRAMES, "seconds": secs,
        "machine_cpu_ns_per_frame": cpu.as_secs_f64() * 1e9 / FRAMES as f64,
        "daemon_cpu_ms": daemon.as_secs_f64() * 1e3,
        "events_logged": events,
    }))
}

fn netns_figures() -> Result<Value> {
    let mut tb = Testbed::new("bench")?;
    // Generic XDP, as in the tests: on veth, native mode is slower still
    // (measured here: 0.906 of plain forwarding), because the veth driver
    // builds a new skb for every XDP_PASS.
    tb.xdp_mode = "generic".into();
    let policy = repo_root().join("examples/bess-site.toml");
    let (mut filtered, mut plain) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which side goes first so that drift hits both alike.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for with_filter in order {
            if with_filter {
                tb.start_gateway(&policy)?;
                std::thread::sleep(Duration::from_millis(200));
                filtered.push(load_round(&tb)?);
                tb.stop_gateway();
            } else {
                plain.push(load_round(&tb)?);
            }
        }
    }
    let stat =
        |v: &[Value], k: &str| median(v.iter().map(|x| x[k].as_f64().unwrap_or(0.0)).collect());
    let side = |v: &[Value]| json!({"tps": stat(v, "tps"), "p50_us": stat(v, "p50_us"), "p99_us": stat(v, "p99_us")});
    let (f, p) = (side(&filtered), side(&plain));
    let ratio = f["tps"].as_f64().unwrap() / p["tps"].as_f64().unwrap();
    println!(
        "\nModbus/TCP through the gateway namespace (generic XDP on both ports, 16 connections, FC3 x10, {ROUNDS} interleaved rounds of {ROUND_MS} ms, medians)"
    );
    println!(
        "  {:<22} {:>10} {:>9} {:>9}",
        "", "tx/s", "p50 us", "p99 us"
    );
    for (name, s) in [("XDP filter attached", &f), ("plain forwarding", &p)] {
        println!(
            "  {name:<22} {:>10.0} {:>9.1} {:>9.1}",
            s["tps"].as_f64().unwrap(),
            s["p50_us"].as_f64().unwrap(),
            s["p99_us"].as_f64().unwrap()
        );
    }
    println!("  ratio filtered/plain: {ratio:.3} (target >= 0.98)");
    let cpu = |v: &[Value]| stat(v, "cpu_us_per_tx");
    println!(
        "  machine CPU per transaction: {:.1} us filtered, {:.1} us plain",
        cpu(&filtered),
        cpu(&plain)
    );
    let flood = flood_figures(&mut tb)?;
    Ok(json!({
        "cpu_us_per_tx": {"filtered": cpu(&filtered), "plain": cpu(&plain)},
        "flood": flood,
        "tps_filtered": f["tps"], "tps_plain": p["tps"], "ratio": ratio,
        "filtered": f, "plain": p,
        "p50_us": {"filtered": f["p50_us"], "plain": p["p50_us"]},
        "p99_us": {"filtered": f["p99_us"], "plain": p["p99_us"]},
        "rounds": ROUNDS, "round_ms": ROUND_MS,
    }))
}

/// Writes a pcap of `connections` Modbus/TCP connections from the EMS to
/// pcs-1: handshake, then `requests` reads (each answered), one forbidden
/// write in 50. Returns the packet count.
fn synth_capture(path: &std::path::Path, connections: u32, requests: u32) -> Result<u64> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    // pcap global header: µs resolution, Ethernet.
    w.write_all(&[
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ])?;
    let mut packets = 0u64;
    let mut ts = 1_700_000_000_000_000u64;
    let mut record = |w: &mut std::io::BufWriter<std::fs::File>, frame: &[u8]| -> Result<()> {
        ts += 50;
        let len = frame.len() as u32;
        w.write_all(&((ts / 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&((ts % 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(frame)?;
        packets += 1;
        Ok(())
    };
    for c in 0..connections {
        let sport = 20000 + (c % 40000) as u16;
        let cl = || TcpFrame::new(ip(EMS), ip(PCS1), sport, 502);
        let sv = || TcpFrame::new(ip(PCS1), ip(EMS), 502, sport);
        let (mut cseq, mut sseq) = (1000u32, 9000u32);
        record(&mut w, &cl().seq(cseq - 1).flags(TCP_SYN).build())?;
        record(&mut w, &sv().seq(sseq - 1).flags(TCP_SYN | TCP_ACK).build())?;
        for r in 0..requests {
            let req = if r % 50 == 49 {
                adu(r as u16, 1, &pdu::write_register(41, 1))
            } else {
                adu(r as u16, 1, &pdu::read_holding((r % 90) as u16, 10))
            };
            let mut f = cl().seq(cseq).payload(req.clone());
            f.ack = sseq;
            record(&mut w, &f.build())?;
            cseq += req.len() as u32;
            let resp = adu(
                r as u16,
                1,
                &[
                    3, 20, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9,
                ],
            );
            let mut f = sv().seq(sseq).payload(resp.clone());
            f.ack = cseq;
            record(&mut w, &f.build())?;
            sseq += resp.len() as u32;
        }
    }
    w.flush()?;
    Ok(packets)
}

/// Runs `policy test` on a capture; returns (seconds, peak RSS in KiB).
fn time_replay(pcap: &std::path::Path) -> Result<(f64, u64)> {
    let policy = repo_root().join("examples/bess-site.toml");
    let start = std::time::Instant::now();
    let status = Command::new(bin("bessai-gw"))
        .args(["policy", "test"])
        .arg(&policy)
        .arg("--pcap")
        .arg(pcap)
        .stdout(std::process::Stdio::null())
        .status()?;
    let secs = start.elapsed().as_secs_f64();
    if status.code() != Some(1) {
        bail!("policy test exited {status} (expected 1: the capture has denied writes)");
    }
    // SAFETY: getrusage fills the struct; RUSAGE_CHILDREN covers the waited child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    Ok((secs, ru.ru_maxrss as u64))
}

fn replay_figures() -> Result<Value> {
    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let small = dir.join("replay-10mb.pcap");
    let large = dir.join("replay-100mb.pcap");
    let small_packets = synth_capture(&small, 500, 100)?;
    let large_packets = synth_capture(&large, 5500, 100)?;
    let (small_secs, small_rss) = time_replay(&small)?;
    // Peak RSS of children is a high-water mark: measure the small one first.
    let (large_secs, large_rss) = time_replay(&large)?;
    let size = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0)
    };
    let pps = large_packets as f64 / large_secs;
    println!("\npolicy test (replay through the decision function, one core, text report)");
    println!(
        "  {:<28} {:>9} {:>10} {:>12} {:>12}",
        "capture", "MB", "packets", "packets/s", "peak RSS MiB"
    );
    for (name, p, n, s, rss) in [
        (
            "10 MB synthetic",
            &small,
            small_packets,
            small_secs,
            small_rss,
        ),
        (
            "100 MB synthetic",
            &large,
            large_packets,
            large_secs,
            large_rss,
        ),
    ] {
        println!(
            "  {name:<28} {:>9.1} {n:>10} {:>12.0} {:>12.1}",
            size(p),
            n as f64 / s,
            rss as f64 / 1024.0
        );
    }
    println!("  target: at least 1,000,000 packets/s with flat memory");
    Ok(json!({
        "packets_per_s": pps, "packets": large_packets, "mb": size(&large), "seconds": large_secs,
        "peak_rss_kib": large_rss, "small": {"packets_per_s": small_packets as f64 / small_secs, "peak_rss_kib": small_rss, "mb": size(&small)},
    }))
}

fn main() -> Result<()> {
    if let Some(count) = std::env::args().skip_while(|a| a != "--flood").nth(1) {
        return flood_sender(count.parse().context("--flood COUNT")?);
    }
    // `--only test-run|netns|replay` for one part while working on it; the
    // JSON is written only by a full run.
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    match only.as_deref() {
        Some("test-run") => return test_run_figures().map(drop),
        Some("netns") => return netns_figures().map(drop),
        Some("replay") => return replay_figures().map(drop),
        Some(other) => bail!("--only {other}: test-run, netns or replay"),
        None => {}
    }
    let replay = replay_figures()?;
    let test_run = test_run_figures()?;
    let netns = netns_figures()?;
    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("dataplane.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(
            &json!({"test_run_ns": test_run, "netns": netns, "replay": replay}),
        )?,
    )?;
    println!("\nwrote {}", path.display());
    Ok(())
}
