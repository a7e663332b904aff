//! sd_notify: readiness, reload and stop notices, watchdog pings. Without
//! systemd (NOTIFY_SOCKET unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A status line for `systemctl status` while not (or not yet) ready.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

pub fn reloading() {
    notify(&[NotifyState::Reloading, monotonic_now()]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// Half the watchdog timeout systemd set (WatchdogSec=), if any: pinging
/// twice per period survives one late tick.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// `MONOTONIC_USEC=`, which systemd wants with `RELOADING=1`.
fn monotonic_now() -> NotifyState<'static> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    NotifyState::MonotonicUsec(i128::from(ts.tv_sec) * 1_000_000 + i128::from(ts.tv_nsec) / 1000)
}
