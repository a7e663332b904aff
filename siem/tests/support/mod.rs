//! Real syslog receivers for transport tests: one `rsyslogd` per test, in
//! its own temporary directory, on 127.0.0.1 and a free port, writing every
//! received message as `%rawmsg%` plus LF so tests can compare bytes.
//! Certificates are generated per test with rcgen.
//!
//! rsyslog runs as a child (`rsyslogd -n -f <conf> -i <pidfile>`), needs no
//! root (unprivileged ports, private work directory, no imuxsock/imklog) and
//! is killed when the [`Rsyslog`] handle is dropped. Without rsyslog
//! installed the tests are skipped with a message, unless `CI` is set, in
//! which case they fail: CI must exercise the real receivers.

// Each test binary uses a different part of this harness.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bessai_siem::transport::{Scheme, Target, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use time::OffsetDateTime;

/// How long rsyslog may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts with a fresh port when another process took ours meanwhile.
const START_ATTEMPTS: usize = 3;

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The subject as x509-parser prints it, e.g. `CN=rsyslog test receiver`.
    pub subject: String,
}

/// What a receiver presents (`identity`) and trusts for client certificates (`ca`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub identity: Identity,
}

/// A test PKI: a CA with a receiver and a client certificate, an expired
/// receiver certificate from the same CA, and an impostor from another CA.
pub struct Pki {
    _dir: TempDir,
    pub ca: PathBuf,
    pub receiver: Identity,
    pub client: Identity,
    pub expired_receiver: Identity,
    pub rogue_ca: PathBuf,
    pub impostor: Identity,
}

pub const RECEIVER_CN: &str = "rsyslog test receiver";
pub const CLIENT_CN: &str = "bessai-gw test client";
pub const EXPIRED_CN: &str = "expired receiver";
pub const IMPOSTOR_CN: &str = "impostor receiver";

struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Pki {
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("bessai-pki-")
            .tempdir()
            .expect("temp dir for certificates");
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let valid = (now - day, now + 30 * day);
        let receiver_names = ["127.0.0.1", "localhost"];

        let ca = authority("BESSAI test CA", valid);
        let ca_path = write(dir.path(), "ca.pem", &ca.pem);
        let receiver = leaf(
            dir.path(),
            "receiver",
            &ca,
            RECEIVER_CN,
            &receiver_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            valid,
        );
        let client = leaf(
            dir.path(),
            "client",
            &ca,
            CLIENT_CN,
            &["bessai-gw.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
            valid,
        );
        let expired_receiver = leaf(
            dir.path(),
            "expired",
            &ca,
            EXPIRED_CN,
            &receiver_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            (now - 30 * day, now - day),
        );
        let rogue = authority("Rogue CA", valid);
        let rogue_ca = write(dir.path(), "rogue-ca.pem", &rogue.pem);
        let impostor = leaf(
            dir.path(),
            "impostor",
            &rogue,
            IMPOSTOR_CN,
            &receiver_names,
            ExtendedKeyUsagePurpose::ServerAuth,
            valid,
        );
        Pki {
            _dir: dir,
            ca: ca_path,
            receiver,
            client,
            expired_receiver,
            rogue_ca,
            impostor,
        }
    }

    /// The genuine receiver, trusting our CA for client certificates.
    pub fn receiver_tls(&self) -> ServerTls {
        ServerTls {
            ca: self.ca.clone(),
            identity: self.receiver.clone(),
        }
    }

    /// A receiver presenting `identity` (e.g. the impostor or the expired one).
    pub fn server_tls_with(&self, identity: &Identity) -> ServerTls {
        ServerTls {
            ca: self.ca.clone(),
            identity: identity.clone(),
        }
    }

    /// Client options: our CA, no client certificate.
    pub fn client_options(&self) -> TlsOptions {
        TlsOptions {
            ca: Some(self.ca.clone()),
            ..TlsOptions::default()
        }
    }

    /// Client options: our CA and our client certificate (mutual TLS).
    pub fn mutual_client_options(&self) -> TlsOptions {
        TlsOptions {
            cert: Some(self.client.cert.clone()),
            key: Some(self.client.key.clone()),
            ..self.client_options()
        }
    }
}

fn authority(name: &str, (not_before, not_after): (OffsetDateTime, OffsetDateTime)) -> Authority {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let certificate = params.self_signed(&key).expect("self-signed CA");
    Authority {
        issuer: Issuer::new(params, key),
        pem: certificate.pem(),
    }
}

fn leaf(
    dir: &Path,
    file_stem: &str,
    authority: &Authority,
    common_name: &str,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
) -> Identity {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.remove(DnType::CommonName);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.not_before = not_before;
    params.not_after = not_after;
    let certificate = params
        .signed_by(&key, &authority.issuer)
        .expect("signed leaf");
    Identity {
        cert: write(dir, &format!("{file_stem}.pem"), &certificate.pem()),
        key: write(dir, &format!("{file_stem}-key.pem"), &key.serialize_pem()),
        subject: format!("CN={common_name}"),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write PEM file");
    path
}

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

/// Which rsyslog TLS library serves the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// `gtls` (GnuTLS), rsyslog's default.
    GnuTls,
    /// `ossl` (OpenSSL).
    OpenSsl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// What the receiver listens for.
#[derive(Debug, Clone)]
pub enum Listener {
    /// imudp.
    Udp,
    /// imtcp, plain (octet counting is detected per frame).
    Tcp,
    /// imtcp with a TLS stream driver.
    Tls {
        driver: Driver,
        /// Restrict the server to one version (`None`: whatever the library offers).
        only: Option<TlsVersion>,
        /// `x509/certvalid`: a client certificate signed by the CA is required.
        require_client_cert: bool,
        server: ServerTls,
    },
    /// imrelp with `tls="on"` (GnuTLS inside librelp).
    RelpTls {
        /// `tls.authmode="certvalid"`: a client certificate signed by the CA is required.
        require_client_cert: bool,
        server: ServerTls,
    },
}

impl Listener {
    pub fn scheme(&self) -> Scheme {
        match self {
            Listener::Udp => Scheme::Udp,
            Listener::Tcp => Scheme::Tcp,
            Listener::Tls { .. } => Scheme::Tls,
            Listener::RelpTls { .. } => Scheme::RelpTls,
        }
    }
}

/// The rsyslog configuration for `listener` on `port`, writing to `output`.
pub fn render_config(listener: &Listener, port: u16, work_dir: &Path, output: &Path) -> String {
    let mut conf = String::new();
    let mut global = format!(
        "global(workDirectory=\"{}\" maxMessageSize=\"256k\"",
        work_dir.display()
    );
    if let Listener::Tls { server, .. } = listener {
        write!(
            global,
            "\n  defaultNetstreamDriverCAFile=\"{}\"\n  defaultNetstreamDriverCertFile=\"{}\"\n  defaultNetstreamDriverKeyFile=\"{}\"",
            server.ca.display(),
            server.identity.cert.display(),
            server.identity.key.display()
        )
        .expect("write to String");
    }
    conf.push_str(&global);
    conf.push_str(")\n");
    // The template keeps the message exactly as received (minus framing).
    conf.push_str("template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n");
    writeln!(
        conf,
        "ruleset(name=\"received\") {{ action(type=\"omfile\" file=\"{}\" template=\"raw\") }}",
        output.display()
    )
    .expect("write to String");
    let input = match listener {
        Listener::Udp => format!(
            "module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"received\")\n"
        ),
        Listener::Tcp => format!(
            "module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"received\")\n"
        ),
        Listener::Tls {
            driver,
            only,
            require_client_cert,
            ..
        } => {
            let (name, priority) = match (driver, only) {
                (Driver::GnuTls, Some(TlsVersion::Tls12)) => {
                    ("gtls", Some("NORMAL:-VERS-ALL:+VERS-TLS1.2"))
                }
                (Driver::GnuTls, Some(TlsVersion::Tls13)) => {
                    ("gtls", Some("NORMAL:-VERS-ALL:+VERS-TLS1.3"))
                }
                (Driver::GnuTls, None) => ("gtls", None),
                // For the OpenSSL driver the same option carries OpenSSL configuration commands.
                (Driver::OpenSsl, Some(TlsVersion::Tls12)) => {
                    ("ossl", Some("Protocol=-ALL,TLSv1.2"))
                }
                (Driver::OpenSsl, Some(TlsVersion::Tls13)) => {
                    ("ossl", Some("Protocol=-ALL,TLSv1.3"))
                }
                (Driver::OpenSsl, None) => ("ossl", None),
            };
            let auth = if *require_client_cert {
                "x509/certvalid"
            } else {
                "anon"
            };
            let priority = priority
                .map(|value| format!(" gnutlsPriorityString=\"{value}\""))
                .unwrap_or_default();
            format!(
                "module(load=\"imtcp\" streamDriver.name=\"{name}\" streamDriver.mode=\"1\" streamDriver.authMode=\"{auth}\"{priority})\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"received\")\n"
            )
        }
        Listener::RelpTls {
            require_client_cert,
            server,
        } => {
            let auth = if *require_client_cert {
                " tls.authmode=\"certvalid\""
            } else {
                ""
            };
            format!(
                "module(load=\"imrelp\")\n\
                 input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"received\" maxDataSize=\"256k\"\n  \
                 tls=\"on\" tls.cacert=\"{}\" tls.mycert=\"{}\" tls.myprivkey=\"{}\"{auth})\n",
                server.ca.display(),
                server.identity.cert.display(),
                server.identity.key.display()
            )
        }
    };
    conf.push_str(&input);
    conf
}

// ---------------------------------------------------------------------------
// The rsyslogd process
// ---------------------------------------------------------------------------

/// A running rsyslogd; killed on drop.
pub struct Rsyslog {
    binary: PathBuf,
    listener: Listener,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// Network namespace (`ip netns`) it runs in; None: this one.
    netns: Option<String>,
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
                // SAFETY: setns on this thread only, with a namespace fd.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread")
    })
}

impl Rsyslog {
    /// Starts a receiver and waits until it listens. `None` (after printing
    /// why) when rsyslog is not installed and `CI` is not set.
    pub fn start(listener: Listener) -> Option<Rsyslog> {
        Self::start_in(listener, None)
    }

    /// As [`Rsyslog::start`], inside network namespace `netns` (listening
    /// on its loopback).
    pub fn start_in(listener: Listener, netns: Option<&str>) -> Option<Rsyslog> {
        let Some(binary) = find_rsyslogd() else {
            return unavailable(
                "rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls rsyslog-openssl rsyslog-relp)",
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("bessai-rsyslog-")
            .tempdir()
            .expect("temp dir for rsyslog");
        let mut receiver = Rsyslog {
            binary,
            listener,
            dir,
            port: 0,
            child: None,
            netns: netns.map(str::to_string),
        };
        for attempt in 1..=START_ATTEMPTS {
            receiver.port = free_port(receiver.listener.scheme());
            receiver.write_config();
            if let Err(missing) = receiver.check_config() {
                return unavailable(&missing);
            }
            receiver.spawn();
            if receiver.wait_until_listening() {
                return Some(receiver);
            }
            // Most likely another process took the port between our probe and
            // rsyslog's bind; try another one.
            receiver.kill();
            eprintln!(
                "rsyslog did not listen on port {} (attempt {attempt}): {}",
                receiver.port,
                receiver.log()
            );
        }
        panic!(
            "rsyslog never started listening; its log:\n{}",
            receiver.log()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of this receiver, by IP address.
    pub fn target(&self) -> Target {
        self.target_via("127.0.0.1")
    }

    /// The URL of this receiver under another host name (e.g. `localhost`).
    pub fn target_via(&self, host: &str) -> Target {
        Target {
            scheme: self.listener.scheme(),
            host: host.to_owned(),
            port: self.port,
        }
    }

    /// The rsyslog configuration in use (for reports and failure messages).
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap_or_default()
    }

    /// What rsyslogd printed (its own errors and warnings).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The messages written so far, one per line, without the LF.
    pub fn lines(&self) -> Vec<String> {
        let bytes = match std::fs::read(self.output_path()) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(error) => panic!("cannot read rsyslog's output: {error}"),
        };
        let text = String::from_utf8(bytes).unwrap_or_else(|error| {
            panic!(
                "rsyslog wrote invalid UTF-8: {:?}",
                String::from_utf8_lossy(error.as_bytes())
            )
        });
        text.lines().map(str::to_owned).collect()
    }

    /// Waits until at least `count` lines were written, then returns all of them.
    pub fn wait_for_lines(&self, count: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.lines();
            if lines.len() >= count {
                return lines;
            }
            if Instant::now() >= deadline {
                let tail: Vec<&String> = lines.iter().rev().take(3).collect();
                panic!(
                    "rsyslog wrote {} of {count} lines within {within:?} (last: {tail:?})\nrsyslog log:\n{}",
                    lines.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits `quiet` and returns the lines then: for asserting that nothing arrived.
    pub fn lines_after(&self, quiet: Duration) -> Vec<String> {
        std::thread::sleep(quiet);
        self.lines()
    }

    /// Stops rsyslog gracefully (SIGTERM: it flushes and closes connections).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills rsyslog abruptly (SIGKILL), as in a crash or power loss.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped rsyslog again (same configuration and port) and
    /// waits until it listens.
    pub fn resume(&mut self) {
        self.spawn();
        assert!(
            self.wait_until_listening(),
            "rsyslog did not listen again on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// Starts rsyslog again, same configuration and port, and waits until it
    /// listens. Messages already in the output file stay there.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        assert!(
            self.wait_until_listening(),
            "rsyslog did not listen again on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("rsyslog.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("rsyslogd.log")
    }

    /// The file rsyslog writes what it receives to.
    pub fn output_file(&self) -> PathBuf {
        self.output_path()
    }

    fn output_path(&self) -> PathBuf {
        self.dir.path().join("received.log")
    }

    fn write_config(&self) {
        let conf = render_config(
            &self.listener,
            self.port,
            self.dir.path(),
            &self.output_path(),
        );
        std::fs::write(self.config_path(), conf).expect("write rsyslog.conf");
    }

    /// Validates the configuration (`rsyslogd -N1`). A module that cannot be
    /// loaded means a missing package; any other complaint is a harness bug.
    fn check_config(&self) -> Result<(), String> {
        let output = Command::new(&self.binary)
            .arg("-N1")
            .arg("-f")
            .arg(self.config_path())
            .output()
            .expect("run rsyslogd -N1");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if text.contains("could not load module") {
            return Err(format!("an rsyslog module is missing: {}", text.trim()));
        }
        assert!(
            output.status.success() && !text.contains("error"),
            "rsyslog rejects the test configuration:\n{text}\n{}",
            self.config()
        );
        Ok(())
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("rsyslog log file");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let child = cmd
            .arg("-n")
            .arg("-f")
            .arg(self.config_path())
            .arg("-i")
            .arg(self.dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("spawn rsyslogd");
        self.child = Some(child);
    }

    /// Stream listeners: a TCP connect succeeds. UDP: the kernel lists the
    /// bound socket (a probe datagram would end up in the output).
    fn wait_until_listening(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if !self.is_running() {
                return false;
            }
            let probe = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            let listening = match (&self.listener, &self.netns) {
                (Listener::Udp, None) => udp_port_bound(self.port),
                (Listener::Udp, Some(ns)) => {
                    let port = self.port;
                    in_netns(ns, move || udp_port_bound(port))
                }
                (_, None) => probe(),
                (_, Some(ns)) => in_netns(ns, probe),
            };
            if listening {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unavailable(reason: &str) -> Option<Rsyslog> {
    if std::env::var_os("CI").is_some() {
        panic!("{reason}; CI must run the rsyslog tests (cargo xtask setup installs it)");
    }
    eprintln!("SKIPPED: {reason}");
    None
}

fn find_rsyslogd() -> Option<PathBuf> {
    // sbin directories are often missing from an unprivileged user's PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("rsyslogd"))
        .find(|candidate| candidate.is_file())
}

/// A port nobody listens on right now (the OS picks it).
pub fn free_port(scheme: Scheme) -> u16 {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    match scheme {
        Scheme::Udp => UdpSocket::bind(local).and_then(|socket| socket.local_addr()),
        _ => TcpListener::bind(local).and_then(|listener| listener.local_addr()),
    }
    .expect("free port")
    .port()
}

fn udp_port_bound(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    // thread-self: in a thread moved into another network namespace, the
    // table of that namespace.
    std::fs::read_to_string("/proc/thread-self/net/udp").is_ok_and(|table| {
        table
            .lines()
            .skip(1)
            .any(|line| line.split_whitespace().nth(1) == Some(wanted.as_str()))
    })
}
