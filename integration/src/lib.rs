//! Shared pieces of the root-only tests and the data-plane benchmark: root
//! gating, the example policy, and the host-side twin of a kernel verdict.

pub mod appliance;
pub mod netns;

use bessai_common::{
    Action, Decision, FRAME_MAX, Layout, NoObserver, Reason, decide, frame::Frame,
    host::HostTables, rst,
};
use bessai_policy::Compiled;

/// XDP action codes (uapi `enum xdp_action`).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// True when the test may use the kernel. Not root: prints why the test is
/// skipped, or panics under CI, where root-only tests must run.
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root (BPF, XDP, network namespaces), and CI must run it");
    }
    eprintln!("SKIP {test}: needs root for BPF_PROG_TEST_RUN / XDP / network namespaces");
    false
}

pub fn example_compiled() -> Compiled {
    bessai_policy::parse(bessai_policy::EXAMPLE_POLICY, "examples/bess-site.toml")
        .expect("the example policy is valid")
        .compile()
}

pub fn host_tables(c: &Compiled) -> HostTables {
    HostTables::new(
        c.settings,
        c.conduits.clone(),
        c.rules.clone(),
        c.assets.clone(),
    )
}

/// What the kernel should do with `frame`, computed on the host: the XDP
/// action, the reason, and the frame as it leaves the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVerdict {
    pub xdp_action: u32,
    pub reason: Reason,
    pub action: Action,
    pub frame: Vec<u8>,
    pub decision: Decision,
}

pub fn host_verdict(tables: &mut HostTables, frame: &[u8]) -> HostVerdict {
    let mut buf = [0u8; FRAME_MAX];
    let n = frame.len().min(FRAME_MAX);
    buf[..n].copy_from_slice(&frame[..n]);
    let mut lay = Layout::default();
    let d = decide(
        &Frame::new(&buf, n, frame.len()),
        tables,
        &mut NoObserver,
        &mut lay,
    );
    let (xdp_action, out) = match d.action {
        Action::Pass => (XDP_PASS, frame.to_vec()),
        Action::Drop => (XDP_DROP, frame.to_vec()),
        Action::ResetServer => {
            let len = rst::rst_to_server(&mut buf, &lay, d.rst_seq);
            (XDP_PASS, buf[..len].to_vec())
        }
        Action::ResetClient => {
            let len = rst::rst_to_client(&mut buf, &lay);
            (XDP_TX, buf[..len].to_vec())
        }
    };
    HostVerdict {
        xdp_action,
        reason: d.reason,
        action: d.action,
        frame: out,
        decision: d,
    }
}
