//! A BESS site in network namespaces, for tests and benchmarks, in either
//! deployment of the gateway:
//!
//! ```text
//!  routed:  ems 10.10.1.10/24 ─┐
//!           eng 10.10.1.20/24 ─┼─ [sw] ── (10.10.1.1) [gw] (10.10.2.1) ── inverter 10.10.2.11/24
//!           out 10.10.1.99/24 ─┘          XDP on both ports                         10.10.2.50/24
//!  bridge:  the same hosts in 10.10.0.0/16; [gw] bridges its two ports (a bump
//!           in the wire, no re-addressing), its own address 10.10.0.1/16.
//! ```
//!
//! `sw` is the control-center switch, outside the gateway. The inverter runs
//! the Modbus simulator on 502 and, for non-Modbus tests, an HTTP server on
//! 80 and an SSH-like banner on 22; 10.10.2.50 is a second address there
//! that is no asset. Names carry the process id, so tests in parallel and
//! other users of the machine do not collide; everything is removed on drop.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub const EMS: &str = "10.10.1.10";
pub const ENG: &str = "10.10.1.20";
pub const OUTSIDER: &str = "10.10.1.99";
pub const PCS1: &str = "10.10.2.11";
/// An address in the inverter zone that is no asset: only nftables guards it.
pub const NON_ASSET: &str = "10.10.2.50";

/// How the gateway sits between the zones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployment {
    Routed,
    Bridge,
}

impl Deployment {
    pub const fn as_str(self) -> &'static str {
        match self {
            Deployment::Routed => "routed",
            Deployment::Bridge => "bridge",
        }
    }
}

/// Client hosts: (role, address).
const CLIENTS: [(&str, &str); 3] = [("ems", EMS), ("eng", ENG), ("out", OUTSIDER)];

pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Directory of the workspace's built binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built (cargo build --bins first)",
        p.display()
    );
    p
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub struct Testbed {
    pub tag: String,
    pub deployment: Deployment,
    pub work: PathBuf,
    namespaces: Vec<String>,
    children: Vec<Child>,
    gateway: Option<Child>,
    /// Gateway-side interfaces, where XDP goes.
    pub gw_ifaces: Vec<String>,
    /// The impairment relay between the gateway and the inverter, if any.
    relay: Option<Child>,
    /// `--xdp-mode` for the gateway (env BESSAI_XDP_MODE, default generic).
    /// Generic by default because native XDP on a veth drops XDP_TX frames
    /// (the RST back to the client) unless the peer veth runs NAPI; seen here:
    /// the client retransmitted its denied write for 1.5 s and never got the
    /// RST. Physical NICs with native XDP have no such condition.
    pub xdp_mode: String,
}

impl Testbed {
    pub fn ns(&self, role: &str) -> String {
        format!("bgw{}-{role}", self.tag)
    }

    /// A routed site with the inverter simulator running.
    pub fn new(name: &str) -> Result<Self> {
        Self::with(name, Deployment::Routed)
    }

    /// Builds the namespaces and starts the inverter simulator.
    pub fn with(name: &str, deployment: Deployment) -> Result<Self> {
        Self::create(name, deployment, None)
    }

    /// A routed site whose link between the gateway and the inverter runs
    /// through a relay namespace of its own, where `impair-relay` (see its
    /// documentation) loses, reorders and duplicates TCP frames as
    /// `relay_args` say (`--seed N --loss P ...`):
    ///
    /// ```text
    ///  [gw] (10.10.2.1) ── [rly: impair-relay] ── inverter 10.10.2.11
    /// ```
    ///
    /// The relay's own summary comes from [`Testbed::stop_relay`].
    pub fn impaired(name: &str, relay_args: &[&str]) -> Result<Self> {
        Self::create(
            name,
            Deployment::Routed,
            Some(relay_args.iter().map(|a| (*a).to_owned()).collect()),
        )
    }

    fn create(name: &str, deployment: Deployment, relay: Option<Vec<String>>) -> Result<Self> {
        // Unique among the testbeds of this process (tests run in parallel)
        // and short: interface names are at most 15 bytes.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let tag = format!(
            "{}{}{}",
            std::process::id() % 100_000,
            name.chars().next().unwrap_or('x'),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100
        );
        let work = std::env::temp_dir().join(format!("bessai-{name}-{tag}"));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        let xdp_mode = std::env::var("BESSAI_XDP_MODE").unwrap_or_else(|_| "generic".into());
        let mut tb = Self {
            tag,
            deployment,
            work,
            namespaces: Vec::new(),
            children: Vec::new(),
            gateway: None,
            gw_ifaces: Vec::new(),
            xdp_mode,
            relay: None,
        };
        tb.build(relay.is_some())
            .context("building the namespaces")?;
        if let Some(args) = relay {
            tb.start_relay(&args)?;
        }
        tb.mount_bpffs().context("mounting a bpffs for the pins")?;
        tb.start_server()?;
        Ok(tb)
    }

    fn add_ns(&mut self, role: &str) -> Result<String> {
        let ns = self.ns(role);
        let _ = sh(&["ip", "netns", "del", &ns]);
        sh(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair `a_if` in `a_ns` — `b_if` in `b_ns`, both up.
    fn veth(a_ns: &str, a_if: &str, b_ns: &str, b_if: &str) -> Result<()> {
        sh(&[
            "ip", "link", "add", a_if, "netns", a_ns, "type", "veth", "peer", "name", b_if,
            "netns", b_ns,
        ])?;
        sh(&["ip", "-n", a_ns, "link", "set", a_if, "up"])?;
        sh(&["ip", "-n", b_ns, "link", "set", b_if, "up"])?;
        Ok(())
    }

    fn bridge(ns: &str, name: &str) -> Result<()> {
        sh(&["ip", "-n", ns, "link", "add", name, "type", "bridge"])?;
        sh(&["ip", "-n", ns, "link", "set", name, "up"])?;
        Ok(())
    }

    fn addr(ns: &str, iface: &str, addr: &str) -> Result<()> {
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", iface]).map(drop)
    }

    fn build(&mut self, relayed: bool) -> Result<()> {
        let routed = self.deployment == Deployment::Routed;
        // Routed: one subnet per zone; bridged: one segment for both.
        let prefix = if routed { "24" } else { "16" };
        let t = self.tag.clone();
        let gw = self.add_ns("gw")?;
        let sw = self.add_ns("sw")?;
        let switch = format!("s{t}");
        Self::bridge(&sw, &switch)?;
        for (i, (role, addr)) in CLIENTS.iter().enumerate() {
            let ns = self.add_ns(role)?;
            let (host_if, port) = (format!("h{t}c{i}"), format!("s{t}c{i}"));
            Self::veth(&ns, &host_if, &sw, &port)?;
            sh(&["ip", "-n", &sw, "link", "set", &port, "master", &switch])?;
            Self::addr(&ns, &host_if, &format!("{addr}/{prefix}"))?;
            if routed {
                sh(&[
                    "ip",
                    "-n",
                    &ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    "10.10.1.1",
                ])?;
            }
        }
        let inv = self.add_ns("inv")?;
        let (up_sw, gw_c) = (format!("s{t}up"), format!("g{t}c"));
        Self::veth(&sw, &up_sw, &gw, &gw_c)?;
        sh(&["ip", "-n", &sw, "link", "set", &up_sw, "master", &switch])?;
        let (inv_if, gw_i) = (format!("h{t}i"), format!("g{t}i"));
        if relayed {
            let rly = self.add_ns("rly")?;
            Self::veth(&rly, &format!("r{t}g"), &gw, &gw_i)?;
            Self::veth(&rly, &format!("r{t}i"), &inv, &inv_if)?;
        } else {
            Self::veth(&inv, &inv_if, &gw, &gw_i)?;
        }
        Self::addr(&inv, &inv_if, &format!("{PCS1}/{prefix}"))?;
        Self::addr(&inv, &inv_if, &format!("{NON_ASSET}/{prefix}"))?;
        if routed {
            sh(&[
                "ip",
                "netns",
                "exec",
                &gw,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
            Self::addr(&gw, &gw_c, "10.10.1.1/24")?;
            Self::addr(&gw, &gw_i, "10.10.2.1/24")?;
            sh(&[
                "ip",
                "-n",
                &inv,
                "route",
                "add",
                "default",
                "via",
                "10.10.2.1",
            ])?;
        } else {
            let br = self.bridge_name();
            Self::bridge(&gw, &br)?;
            for port in [&gw_c, &gw_i] {
                sh(&["ip", "-n", &gw, "link", "set", port, "master", &br])?;
            }
            Self::addr(&gw, &br, "10.10.0.1/16")?;
        }
        self.gw_ifaces = vec![gw_c, gw_i];
        Ok(())
    }

    /// Starts `impair-relay` between the relay namespace's two ports and
    /// waits until it forwards.
    fn start_relay(&mut self, args: &[String]) -> Result<()> {
        let t = &self.tag;
        let log = self.work.join("relay.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("rly")])
            .arg(bin("impair-relay"))
            .args(["--a", &format!("r{t}g"), "--b", &format!("r{t}i")])
            .args(args)
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::create(self.work.join("relay.err"))?)
            .spawn()?;
        self.relay = Some(child);
        wait_for_line(&log, "ready", Duration::from_secs(10))
    }

    /// Stops the relay and returns its summary: per direction (`a`: from the
    /// gateway, `b`: from the inverter) the frames, TCP frames, and how many
    /// it lost, delayed and duplicated.
    pub fn stop_relay(&mut self) -> Result<serde_json::Value> {
        let Some(mut child) = self.relay.take() else {
            bail!("no relay in this testbed");
        };
        // SAFETY: kill(2) on our own child; SIGTERM makes it print and exit.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait()?;
        let log = fs::read_to_string(self.work.join("relay.log"))?;
        if !status.success() {
            bail!(
                "impair-relay exited with {status}: {log}{}",
                fs::read_to_string(self.work.join("relay.err")).unwrap_or_default()
            );
        }
        let last = log.lines().last().unwrap_or_default();
        serde_json::from_str(last).with_context(|| format!("relay summary {last}"))
    }

    /// The gateway's bridge in bridge deployment.
    pub fn bridge_name(&self) -> String {
        format!("b{}", self.tag)
    }

    /// The gateway's own address as the control center sees it.
    pub fn gateway_addr(&self) -> &'static str {
        match self.deployment {
            Deployment::Routed => "10.10.1.1",
            Deployment::Bridge => "10.10.0.1",
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.work.join("inverter-state.json")
    }

    fn start_server(&mut self) -> Result<()> {
        let log = fs::File::create(self.work.join("inverter.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("inv")])
            .arg(bin("modbus-sim"))
            .args(["server", "--listen", "0.0.0.0:502", "--state-file"])
            .arg(self.state_file())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        wait_for_line(
            &self.work.join("inverter.log"),
            "listening",
            Duration::from_secs(10),
        )
    }

    /// Starts `bessai-gw run` with `policy` on every gateway port and waits
    /// until it says it is enforcing.
    pub fn start_gateway(&mut self, policy: &Path) -> Result<()> {
        self.stop_gateway();
        let log_path = self.gateway_log();
        let log = fs::File::create(&log_path)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("gw")])
            .arg(bin("bessai-gw"));
        cmd.args([
            "--log-format",
            "json",
            "run",
            "--stats-interval",
            "0",
            "--xdp-mode",
            &self.xdp_mode,
        ]);
        cmd.arg("--policy").arg(policy);
        for i in &self.gw_ifaces {
            cmd.args(["--iface", i]);
        }
        let child = cmd.stdout(log).stderr(Stdio::inherit()).spawn()?;
        self.gateway = Some(child);
        wait_for_line(&log_path, "enforcing", Duration::from_secs(20))
    }

    pub fn gateway_log(&self) -> PathBuf {
        self.work.join("gateway.log")
    }

    /// SIGTERM, then wait: the gateway detaches cleanly (or, with pins,
    /// leaves enforcement in force).
    pub fn stop_gateway(&mut self) -> Option<std::process::ExitStatus> {
        self.signal_gateway(libc::SIGTERM);
        self.gateway.take()?.wait().ok()
    }

    /// `kill -9`: the daemon gets no chance to clean up.
    pub fn kill_gateway(&mut self) -> Option<std::process::ExitStatus> {
        self.signal_gateway(libc::SIGKILL);
        self.gateway.take()?.wait().ok()
    }

    /// The daemon's process id (`ip netns exec` execs it in place).
    pub fn gateway_pid(&self) -> Option<u32> {
        self.gateway.as_ref().map(Child::id)
    }

    pub fn signal_gateway(&self, sig: i32) {
        if let Some(g) = &self.gateway {
            // SAFETY: plain kill(2) on our child's pid.
            unsafe { libc::kill(g.id() as i32, sig) };
        }
    }

    /// Where this testbed's gateway pins: a bpffs of its own, mounted in
    /// the root mount namespace (`ip netns exec` remounts /sys, so
    /// /sys/fs/bpf there would be a fresh, private instance that dies with
    /// the process, and the pins with it).
    pub fn pin_path(&self) -> PathBuf {
        self.work.join("bpffs").join("bessai")
    }

    fn mount_bpffs(&self) -> Result<()> {
        let dir = self.work.join("bpffs");
        fs::create_dir_all(&dir)?;
        sh(&[
            "mount",
            "-t",
            "bpf",
            "-o",
            "mode=0755",
            "bpf",
            &dir.display().to_string(),
        ])
        .map(drop)
    }

    /// Writes an appliance configuration for this site: both gateway ports
    /// with their zones, pins of its own, management SSH only from the
    /// engineering workstation.
    pub fn write_config(&self, policy: &Path) -> Result<PathBuf> {
        self.write_config_with(policy, "")
    }

    /// As [`Testbed::write_config`], with `extra` TOML appended (a `[siem]`
    /// section, say).
    pub fn write_config_with(&self, policy: &Path, extra: &str) -> Result<PathBuf> {
        let bridge = match self.deployment {
            Deployment::Routed => String::new(),
            Deployment::Bridge => format!("[bridge]\nname = \"{}\"\n", self.bridge_name()),
        };
        let text = format!(
            r#"[gateway]
policy = "{policy}"
mode = "{mode}"
device_id = "bgw-test-{tag}"
pin_path = "{pins}"
xdp_mode = "{xdp}"
stats_interval = 0

[[interface]]
name = "{c}"
zone = "control-center"

[[interface]]
name = "{i}"
zone = "inverters"

{bridge}
[nftables]
table = "bessai"

[management]
networks = ["{eng}/32"]
tcp_ports = [22]
{extra}
"#,
            policy = policy.display(),
            mode = self.deployment.as_str(),
            tag = self.tag,
            pins = self.pin_path().display(),
            xdp = self.xdp_mode,
            c = self.gw_ifaces[0],
            i = self.gw_ifaces[1],
            eng = ENG,
            extra = extra,
        );
        let path = self.work.join("gateway.toml");
        fs::write(&path, text)?;
        Ok(path)
    }

    /// Starts `bessai-gw run --config FILE` and waits until it is enforcing.
    /// The log is appended to, so that a restarted daemon's lines follow.
    pub fn start_gateway_config(&mut self, config: &Path) -> Result<()> {
        self.start_gateway_with(config, &[], &[])
    }

    /// As [`Testbed::start_gateway_config`], with `env` set and the daemon
    /// started through `wrapper` (e.g. setpriv), inside the namespace.
    pub fn start_gateway_with(
        &mut self,
        config: &Path,
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Result<()> {
        let log_path = self.gateway_log();
        let before = fs::read_to_string(&log_path).map_or(0, |s| s.matches("enforcing").count());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("gw")])
            .args(wrapper)
            .arg(bin("bessai-gw"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()?;
        self.gateway = Some(child);
        // Generous: nft has stalled for tens of seconds while other tests
        // tear down their namespaces, and a start runs it twice.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(90) {
            let now = fs::read_to_string(&log_path).map_or(0, |s| s.matches("enforcing").count());
            if now > before {
                return Ok(());
            }
            if let Some(g) = &mut self.gateway
                && let Ok(Some(status)) = g.try_wait()
            {
                bail!(
                    "gateway exited with {status}: {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("gateway not enforcing after 90 s")
    }

    /// Runs `bessai-gw run --config FILE` in the gateway namespace until it
    /// exits by itself (a start that fails), at most `limit`; its status,
    /// or None when it was still running (then it is killed). The log is
    /// appended to the gateway log.
    pub fn run_gateway_to_exit(
        &mut self,
        config: &Path,
        limit: Duration,
    ) -> Result<Option<std::process::ExitStatus>> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.gateway_log())?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns("gw")])
            .arg(bin("bessai-gw"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()?;
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Ok(None)
    }

    /// `bessai-gw boundary <command> --config FILE` in the gateway
    /// namespace, as the systemd units run it; its exit status.
    pub fn boundary(&self, command: &str, config: &Path) -> Result<std::process::ExitStatus> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.ns("gw")])
            .arg(bin("bessai-gw"))
            .args(["boundary", command, "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .status()?)
    }

    /// Plain TCP services beside the Modbus server, on the asset and on the
    /// non-asset address of the inverter host, and on the gateway itself
    /// (its management SSH).
    pub fn start_services(&mut self) -> Result<()> {
        let banner = "import socket,sys\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)\n\
while True:\n  c,_=s.accept(); c.sendall(b'SSH-2.0-bessai-test\\r\\n'); c.close()\n";
        for (role, args) in [
            (
                "inv",
                vec!["python3", "-m", "http.server", "80", "--bind", "0.0.0.0"],
            ),
            ("inv", vec!["python3", "-c", banner, "22"]),
            ("gw", vec!["python3", "-c", banner, "22"]),
        ] {
            let child = Command::new("ip")
                .args(["netns", "exec", &self.ns(role)])
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            self.children.push(child);
        }
        // Until every service accepts (seen from inside its namespace).
        let start = Instant::now();
        for (role, addr) in [
            ("inv", "127.0.0.1:80"),
            ("inv", "127.0.0.1:22"),
            ("gw", "127.0.0.1:22"),
        ] {
            while !self.tcp_ok(role, addr, Duration::from_millis(300)) {
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("{addr} in {role} not listening");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// TCP listeners on `ports` (every address) in the namespace of `role`,
    /// each sending a banner to every connection; returns once all accept.
    pub fn listen(&mut self, role: &str, ports: &[u16]) -> Result<()> {
        let script = r#"
import socket, sys, threading

def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(b"hello from %d\r\n" % port)
        c.close()

for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),)).start()
"#;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "python3", "-c", script])
            .args(ports.iter().map(u16::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        let start = Instant::now();
        for port in ports {
            let addr = format!("127.0.0.1:{port}");
            while !self.tcp_ok(role, &addr, Duration::from_millis(300)) {
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("{addr} in {role} not listening");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Does a TCP connection from `role` to `addr` get through (and the
    /// first bytes come back) within `timeout`?
    pub fn tcp_ok(&self, role: &str, addr: &str, timeout: Duration) -> bool {
        let script = "import socket,sys\n\
h,p=sys.argv[1].rsplit(':',1)\n\
s=socket.create_connection((h,int(p)), timeout=float(sys.argv[2]))\n\
s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
s.settimeout(float(sys.argv[2]))\n\
sys.exit(0 if s.recv(16) else 1)\n";
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(role),
                "python3",
                "-c",
                script,
                addr,
            ])
            .arg(format!("{}", timeout.as_secs_f64()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// One ICMP echo from `role` to `addr`, answered within a second?
    pub fn ping_ok(&self, role: &str, addr: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "ping", "-c1", "-W1", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs a client (`modbus-sim client` or the pymodbus script) in the
    /// namespace of `role` and returns its JSON lines.
    pub fn client(&self, role: &str, python: bool, ops: &[&str]) -> Result<Vec<serde_json::Value>> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(role)]);
        if python {
            cmd.arg("python3")
                .arg(repo_root().join("integration/clients/pymodbus_client.py"));
        } else {
            cmd.arg(bin("modbus-sim")).arg("client");
        }
        cmd.args([
            "--connect",
            &format!("{PCS1}:502"),
            "--unit",
            "1",
            "--timeout-ms",
            "1500",
        ]);
        cmd.args(ops);
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("client failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).with_context(|| format!("client line {l}")))
            .collect()
    }

    /// Holding registers that differ from their initial value, per the server.
    pub fn changed_registers(&self) -> Result<serde_json::Value> {
        Ok(self.server_state()?["holding"].clone())
    }

    /// The simulator's own account of what was written to it: `writes` (how
    /// many write requests it executed), `holding` and `coils` (what differs
    /// from the initial tables). The server writes the file when it starts
    /// and after every write, so a missing or unreadable file is an error,
    /// never "nothing changed": a test must not pass because it looked at
    /// the wrong file.
    pub fn server_state(&self) -> Result<serde_json::Value> {
        let path = self.state_file();
        let text = fs::read_to_string(&path)
            .with_context(|| format!("the simulator's state file {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON: {text}", path.display()))?;
        for field in ["writes", "holding", "coils"] {
            if v.get(field).is_none() {
                bail!("{} has no {field}: {text}", path.display());
            }
        }
        Ok(v)
    }

    /// Runs `integration/clients/tcp_inject.py` (the raw-socket attacker) in
    /// the namespace of `role` with `args`; its JSON lines. Fails when the
    /// injector could not carry out its steps.
    pub fn inject(&self, role: &str, args: &[&str]) -> Result<Vec<serde_json::Value>> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "python3"])
            .arg(repo_root().join("integration/clients/tcp_inject.py"))
            .args(args)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "tcp_inject.py {args:?} failed ({}): {}{stdout}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("injector line {l}")))
            .collect()
    }

    /// Runs a command in a namespace and returns its output.
    pub fn exec(&self, role: &str, args: &[&str]) -> Result<String> {
        let ns = self.ns(role);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        sh(&full)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop_gateway();
        // Pinned links would outlive the test otherwise.
        let _ = fs::remove_dir_all(self.pin_path());
        let _ = sh(&["umount", &self.work.join("bpffs").display().to_string()]);
        // Kept when a test failed, for its logs.
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.work);
        }
        for c in self.children.iter_mut().chain(self.relay.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

pub fn wait_for_line(path: &Path, needle: &str, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(f) = fs::File::open(path)
            && BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains(needle))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "no '{needle}' in {} after {timeout:?}: {}",
        path.display(),
        fs::read_to_string(path).unwrap_or_default()
    )
}

/// JSON lines of a log file.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Calls `probe` every 20 ms until it returns something, and returns that;
/// panics naming `what` (and the last state `probe` saw) after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> std::result::Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => {
                panic!("{what}: not within {timeout:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The per-reason packet counters of the gateway's last "packet counters"
/// line (the daemon logs one when it stops): reason name -> packets.
pub fn packet_counters(log: &[serde_json::Value]) -> std::collections::BTreeMap<String, u64> {
    log.iter()
        .rev()
        .find(|l| l["message"] == "packet counters")
        .and_then(|l| l["reasons"].as_str())
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}
