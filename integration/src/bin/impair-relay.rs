//! `impair-relay`: a bump in the wire that loses, delays and duplicates TCP
//! frames, for tests that need an imperfect link where the kernel has no
//! `sch_netem`.
//!
//! ```text
//! impair-relay --a IFACE --b IFACE --seed N [--loss P] [--reorder P]
//!              [--delay-us US] [--duplicate P]
//! ```
//!
//! Every frame that arrives on one interface leaves on the other (ARP and
//! everything else untouched). Each IPv4 TCP frame, independently, with a
//! seeded RNG: lost with probability `loss`; otherwise held back `delay-us`
//! with probability `reorder` (so that the frames behind it overtake it);
//! and sent twice with probability `duplicate`. Prints `ready` once both
//! sockets are bound, and on SIGTERM or SIGINT one JSON line with what it
//! did, per direction.
//!
//! The frames travel with their virtio-net header (PACKET_VNET_HDR), so a
//! frame whose checksum the sending stack left to the device, or a GSO
//! frame, leaves exactly as it would have crossed a plain veth pair: the
//! relay changes what arrives and when, never the bytes.

use std::{
    collections::VecDeque,
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// struct virtio_net_hdr, in front of every frame with PACKET_VNET_HDR.
const VNET_HDR: usize = 10;
const ETH_HDR: usize = 14;
const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
/// A GSO frame can be this large.
const FRAME_MAX: usize = 65_536 + VNET_HDR + ETH_HDR;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Clone, Copy, Debug)]
struct Impairment {
    loss: f64,
    reorder: f64,
    delay: Duration,
    duplicate: f64,
}

#[derive(Default, Debug)]
struct Counts {
    /// Frames the kernel dropped before the relay read them.
    kernel_drops: u64,
    frames: u64,
    tcp: u64,
    lost: u64,
    delayed: u64,
    duplicated: u64,
}

impl Counts {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "kernel_drops": self.kernel_drops,
            "frames": self.frames,
            "tcp": self.tcp,
            "lost": self.lost,
            "delayed": self.delayed,
            "duplicated": self.duplicated,
        })
    }
}

/// A frame held back: when it goes, on which socket.
struct Held {
    due: Instant,
    out: usize,
    frame: Vec<u8>,
}

/// An AF_PACKET socket bound to one interface, promiscuous, that does not
/// see its own transmissions.
fn packet_socket(iface: &str) -> Result<OwnedFd> {
    let name = CString::new(iface)?;
    // SAFETY: plain libc calls; every result is checked, the fd is owned.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            bail!("no interface {iface}");
        }
        let fd = libc::socket(
            libc::AF_PACKET,
            // Blocking, so that a send waits rather than fails when the
            // device is busy; receives do not wait (MSG_DONTWAIT).
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        let fd = OwnedFd::from_raw_fd(fd);
        // A frame this socket sends stays charged to it until the receiver
        // frees it, and a receiving TCP keeps out-of-order frames until the
        // gap is filled, by a retransmission that has to come through this
        // same socket: with the default send buffer, heavy loss deadlocked
        // the relay (seen at 10 % loss: every connection stalled for 40 s).
        // Far above what the receivers' TCP windows can hold, so sending
        // never waits on them; the receive buffer likewise, so the kernel
        // does not drop frames the relay was too slow to read (counted in
        // `kernel_drops` if it does).
        let big: libc::c_int = 64 << 20;
        let one: libc::c_int = 1;
        for (level, opt, value, what) in [
            (
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                one,
                "PACKET_VNET_HDR",
            ),
            (
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                one,
                "PACKET_IGNORE_OUTGOING",
            ),
            (
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                big,
                "SO_SNDBUFFORCE",
            ),
            (
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                big,
                "SO_RCVBUFFORCE",
            ),
        ] {
            if libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error()).context(what);
            }
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = index as i32;
        if libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind {iface}"));
        }
        let mut mreq: libc::packet_mreq = std::mem::zeroed();
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&raw const mreq).cast(),
            size_of::<libc::packet_mreq>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error()).context("promiscuous");
        }
        Ok(fd)
    }
}

/// Frames the kernel dropped because this socket's receive buffer was full.
fn kernel_drops(fd: &OwnedFd) -> u64 {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `stats`.
    let ok = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    } == 0;
    if ok { u64::from(stats.tp_drops) } else { 0 }
}

fn send(fd: &OwnedFd, frame: &[u8]) -> io::Result<()> {
    // SAFETY: the buffer is valid for its length; the socket is bound.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The next frame on `fd`, into `buf`; None when there is none now.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

fn is_ipv4_tcp(frame: &[u8]) -> bool {
    let eth = &frame[VNET_HDR.min(frame.len())..];
    eth.len() > ETH_HDR + 9
        && u16::from_be_bytes([eth[12], eth[13]]) == ETH_P_IP
        && eth[ETH_HDR + 9] == IPPROTO_TCP
}

/// Waits until a socket is readable or `due` (if any) has come.
fn wait(fds: &[OwnedFd; 2], due: Option<Instant>) {
    let mut pfds = fds.each_ref().map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let timeout = due.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(left.subsec_nanos() as i32),
        }
    });
    let ts = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: two valid pollfds; ts is null or points at a live timespec.
    // A signal interrupts it (EINTR), which the caller checks for.
    unsafe { libc::ppoll(pfds.as_mut_ptr(), 2, ts, std::ptr::null()) };
}

fn run(ifaces: [&str; 2], seed: u64, imp: Impairment) -> Result<[Counts; 2]> {
    let fds = [packet_socket(ifaces[0])?, packet_socket(ifaces[1])?];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = [Counts::default(), Counts::default()];
    let mut held: VecDeque<Held> = VecDeque::new();
    let mut buf = vec![0u8; FRAME_MAX];
    println!("ready");
    while !STOP.load(Ordering::Relaxed) {
        wait(&fds, held.front().map(|h| h.due));
        let now = Instant::now();
        // The delay is constant, so the queue is in order of due time.
        while held.front().is_some_and(|h| h.due <= now) {
            if let Some(h) = held.pop_front() {
                send(&fds[h.out], &h.frame)
                    .with_context(|| format!("send on {}", ifaces[h.out]))?;
            }
        }
        for from in 0..2 {
            let out = 1 - from;
            while let Some(n) = recv(&fds[from], &mut buf)? {
                let frame = &buf[..n];
                let c = &mut counts[from];
                c.frames += 1;
                if !is_ipv4_tcp(frame) {
                    send(&fds[out], frame)?;
                    continue;
                }
                c.tcp += 1;
                // Three draws for every TCP frame, whatever the first
                // decides, so a seed gives the same pattern on every run.
                let (lose, delay, dup) = (
                    rng.random_bool(imp.loss),
                    rng.random_bool(imp.reorder),
                    rng.random_bool(imp.duplicate),
                );
                if lose {
                    c.lost += 1;
                    continue;
                }
                let copies = if dup { 2 } else { 1 };
                c.duplicated += u64::from(dup);
                if delay {
                    c.delayed += 1;
                    for _ in 0..copies {
                        held.push_back(Held {
                            due: now + imp.delay,
                            out,
                            frame: frame.to_vec(),
                        });
                    }
                } else {
                    for _ in 0..copies {
                        send(&fds[out], frame)
                            .with_context(|| format!("send on {}", ifaces[out]))?;
                    }
                }
            }
        }
    }
    for (c, fd) in counts.iter_mut().zip(&fds) {
        c.kernel_drops = kernel_drops(fd);
    }
    Ok(counts)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut a, mut b, mut seed) = (None, None, None);
    let mut imp = Impairment {
        loss: 0.0,
        reorder: 0.0,
        delay: Duration::from_millis(1),
        duplicate: 0.0,
    };
    let prob = |v: Option<String>, what: &str| -> Result<f64> {
        let p: f64 = v
            .context(what.to_owned())?
            .parse()
            .context(what.to_owned())?;
        if !(0.0..=1.0).contains(&p) {
            bail!("{what} {p} is not a probability");
        }
        Ok(p)
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--a" => a = args.next(),
            "--b" => b = args.next(),
            "--seed" => seed = Some(args.next().context("--seed")?.parse::<u64>()?),
            "--loss" => imp.loss = prob(args.next(), "--loss")?,
            "--reorder" => imp.reorder = prob(args.next(), "--reorder")?,
            "--duplicate" => imp.duplicate = prob(args.next(), "--duplicate")?,
            "--delay-us" => {
                imp.delay = Duration::from_micros(args.next().context("--delay-us")?.parse()?);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let (Some(a), Some(b), Some(seed)) = (a, b, seed) else {
        bail!(
            "usage: impair-relay --a IFACE --b IFACE --seed N [--loss P] [--reorder P] [--delay-us US] [--duplicate P]"
        );
    };
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        for sig in [libc::SIGTERM, libc::SIGINT] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let started = Instant::now();
    let counts = run([&a, &b], seed, imp)?;
    println!(
        "{}",
        serde_json::json!({
            "seed": seed,
            "loss": imp.loss,
            "reorder": imp.reorder,
            "delay_us": imp.delay.as_micros() as u64,
            "duplicate": imp.duplicate,
            "seconds": started.elapsed().as_secs_f64(),
            "a": counts[0].json(),
            "b": counts[1].json(),
        })
    );
    Ok(())
}
