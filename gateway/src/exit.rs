//! Exit codes (sysexits.h), so that scripts and systemd can tell failures apart.

pub const OK: u8 = 0;
/// Command line usage error.
pub const USAGE: u8 = 64;
/// Bad input data: an invalid policy file.
pub const DATAERR: u8 = 65;
/// The kernel refused something (verifier, attach).
pub const OSERR: u8 = 71;
/// Not permitted (XDP needs CAP_BPF and CAP_NET_ADMIN).
pub const NOPERM: u8 = 77;
/// An output file could not be written.
pub const CANTCREAT: u8 = 73;
/// A temporary failure (a port not there yet): the service manager retries.
pub const TEMPFAIL: u8 = 75;
/// Invalid configuration file: it can never work; the boundary stays closed.
pub const CONFIG: u8 = 78;
/// A service (the SIEM) is unavailable.
pub const UNAVAILABLE: u8 = 69;
