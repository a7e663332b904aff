//! Glue between the daemon and the SIEM pipeline (crate bessai-siem).

/// Checks a destination URL the way the transport will read it.
pub fn check_url(url: &str) -> Result<(), String> {
    const SCHEMES: [&str; 4] = ["udp://", "tcp://", "tls://", "relp+tls://"];
    if SCHEMES.iter().any(|s| url.starts_with(s)) {
        Ok(())
    } else {
        Err(format!(
            "destination {url:?}: the scheme must be one of udp://, tcp://, tls://, relp+tls://"
        ))
    }
}
