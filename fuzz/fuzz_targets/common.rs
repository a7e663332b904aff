//! The example policy as host tables, and one frame through the decision and
//! the RST builders, as the XDP program would run it.

use bessai_common::{Action, FRAME_MAX, Layout, NoObserver, decide, frame::Frame, host::HostTables, rst};

/// Fresh tables (no flows) for each input; the policy is parsed once.
pub fn tables() -> HostTables {
    static TABLES: std::sync::OnceLock<HostTables> = std::sync::OnceLock::new();
    TABLES
        .get_or_init(|| {
            let c = bessai_policy::parse(bessai_policy::EXAMPLE_POLICY, "example").expect("valid").compile();
            HostTables::new(c.settings, c.conduits, c.rules, c.assets)
        })
        .clone()
}

pub fn judge(tables: &mut HostTables, frame: &[u8]) {
    let mut buf = [0u8; FRAME_MAX];
    let n = frame.len().min(FRAME_MAX);
    buf[..n].copy_from_slice(&frame[..n]);
    let mut lay = Layout::default();
    let d = decide(&Frame::new(&buf, n, frame.len()), tables, &mut NoObserver, &mut lay);
    // A segment passes unrewritten only when it is not ours, a response, TCP
    // control, allowed, or monitored.
    if d.action == Action::Pass && d.reason.is_denial() {
        assert!(d.monitor || d.reason == bessai_common::Reason::ResetRepeat, "{d:?}");
    }
    match d.action {
        Action::ResetServer => assert!(rst::rst_to_server(&mut buf, &lay, d.rst_seq) <= rst::RST_MAX),
        Action::ResetClient => assert!(rst::rst_to_client(&mut buf, &lay) <= rst::RST_MAX),
        Action::Pass | Action::Drop => {}
    }
}
