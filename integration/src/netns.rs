//! A BESS site in network namespaces, for tests and benchmarks:
//!
//! ```text
//!  ems 10.10.1.10 ─┐                                   
//!  eng 10.10.1.20 ─┼─ br (10.10.1.1) [gw] 10.10.2.1 ── inverter 10.10.2.11 (modbus-sim)
//!  out 10.10.1.99 ─┘      XDP on every gateway port
//! ```
//!
//! Names carry the process id, so tests in parallel and other users of the
//! machine do not collide; everything is removed on drop.

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
    pub work: PathBuf,
    namespaces: Vec<String>,
    children: Vec<Child>,
    gateway: Option<Child>,
    /// Gateway-side interfaces, where XDP goes.
    pub gw_ifaces: Vec<String>,
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

    /// Builds the namespaces and starts the inverter simulator.
    pub fn new(name: &str) -> Result<Self> {
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            name.chars().next().unwrap_or('x')
        );
        let work = std::env::temp_dir().join(format!("bessai-{name}-{tag}"));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        let xdp_mode = std::env::var("BESSAI_XDP_MODE").unwrap_or_else(|_| "generic".into());
        let mut tb = Self {
            tag,
            work,
            namespaces: Vec::new(),
            children: Vec::new(),
            gateway: None,
            gw_ifaces: Vec::new(),
            xdp_mode,
        };
        tb.build().context("building the namespaces")?;
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

    /// A veth pair with one end in each namespace; returns the gateway-side name.
    fn link(&mut self, host_ns: &str, gw_ns: &str, short: &str, host_addr: &str) -> Result<String> {
        let host_if = format!("h{}{short}", self.tag);
        let gw_if = format!("g{}{short}", self.tag);
        sh(&[
            "ip", "link", "add", &host_if, "netns", host_ns, "type", "veth", "peer", "name",
            &gw_if, "netns", gw_ns,
        ])?;
        sh(&[
            "ip", "-n", host_ns, "addr", "add", host_addr, "dev", &host_if,
        ])?;
        sh(&["ip", "-n", host_ns, "link", "set", &host_if, "up"])?;
        sh(&["ip", "-n", gw_ns, "link", "set", &gw_if, "up"])?;
        Ok(gw_if)
    }

    fn build(&mut self) -> Result<()> {
        let gw = self.add_ns("gw")?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &gw,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        let br = format!("br{}", self.tag);
        sh(&["ip", "-n", &gw, "link", "add", &br, "type", "bridge"])?;
        sh(&["ip", "-n", &gw, "addr", "add", "10.10.1.1/24", "dev", &br])?;
        sh(&["ip", "-n", &gw, "link", "set", &br, "up"])?;
        for (i, (role, addr)) in CLIENTS.iter().enumerate() {
            let ns = self.add_ns(role)?;
            let gw_if = self.link(&ns, &gw, &format!("c{i}"), &format!("{addr}/24"))?;
            sh(&["ip", "-n", &gw, "link", "set", &gw_if, "master", &br])?;
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
            self.gw_ifaces.push(gw_if);
        }
        let inv = self.add_ns("inv")?;
        let gw_if = self.link(&inv, &gw, "i", &format!("{PCS1}/24"))?;
        sh(&[
            "ip",
            "-n",
            &gw,
            "addr",
            "add",
            "10.10.2.1/24",
            "dev",
            &gw_if,
        ])?;
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
        self.gw_ifaces.push(gw_if);
        Ok(())
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

    /// SIGTERM, then wait: the gateway detaches cleanly.
    pub fn stop_gateway(&mut self) -> Option<std::process::ExitStatus> {
        let mut g = self.gateway.take()?;
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(g.id() as i32, libc::SIGTERM) };
        g.wait().ok()
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
        match fs::read_to_string(self.state_file()) {
            Ok(s) => Ok(serde_json::from_str::<serde_json::Value>(&s)?["holding"].clone()),
            Err(_) => Ok(serde_json::json!({})),
        }
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
        for c in &mut self.children {
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
