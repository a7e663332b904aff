//! Destination URLs: `udp://host:514`, `tcp://host:601`, `tls://host:6514`,
//! `relp+tls://host:2514`.
//!
//! The URL is what an installer types into the configuration, so parse errors
//! name the offending part instead of saying "invalid URL".

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How messages travel to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// RFC 5426 syslog over UDP: one datagram per message, no delivery feedback.
    Udp,
    /// RFC 6587 octet-counted syslog over plain TCP.
    Tcp,
    /// RFC 5425 syslog over TLS (octet counting inside TLS).
    Tls,
    /// RELP (the librelp protocol) inside TLS: every message is acknowledged.
    RelpTls,
}

impl Scheme {
    /// The URL spelling of the scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Udp => "udp",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::RelpTls => "relp+tls",
        }
    }

    /// The port used when the URL names none: the IANA syslog ports, and
    /// 2514 for RELP (no IANA port; 2514 is the customary rsyslog choice).
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Udp => 514,
            Scheme::Tcp => 601,
            Scheme::Tls => 6514,
            Scheme::RelpTls => 2514,
        }
    }

    /// Whether the scheme runs inside TLS (and so needs [`super::TlsOptions`]).
    pub fn uses_tls(self) -> bool {
        matches!(self, Scheme::Tls | Scheme::RelpTls)
    }

    /// Whether the receiver acknowledges each message (proof of delivery).
    pub fn acknowledges(self) -> bool {
        matches!(self, Scheme::RelpTls)
    }

    fn parse(name: &str) -> Option<Scheme> {
        [Scheme::Udp, Scheme::Tcp, Scheme::Tls, Scheme::RelpTls]
            .into_iter()
            .find(|scheme| scheme.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A syslog receiver: scheme, host name or IP address, port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub scheme: Scheme,
    /// Host name or IP address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

/// Why a destination URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{input:?} is not a destination URL: expected scheme://host[:port], e.g. tls://siem.example.org:6514"
    )]
    MissingScheme { input: String },
    #[error("unknown scheme {scheme:?}: use udp, tcp, tls or relp+tls")]
    UnknownScheme { scheme: String },
    #[error("the destination URL {input:?} names no host")]
    MissingHost { input: String },
    #[error("{host:?} is not a valid host name or IP address")]
    InvalidHost { host: String },
    #[error("{port:?} is not a valid port (1-65535)")]
    InvalidPort { port: String },
    #[error(
        "unexpected {rest:?} after host and port: a syslog destination has no path, user or query"
    )]
    TrailingPart { rest: String },
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let input = input.trim();
        let (scheme_name, rest) =
            input
                .split_once("://")
                .ok_or_else(|| TargetError::MissingScheme {
                    input: input.to_owned(),
                })?;
        let scheme = Scheme::parse(scheme_name).ok_or_else(|| TargetError::UnknownScheme {
            scheme: scheme_name.to_owned(),
        })?;
        // A single trailing slash is what people paste from browsers; accept it.
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(position) = authority.find(['/', '?', '#', '@']) {
            return Err(TargetError::TrailingPart {
                rest: authority[position..].to_owned(),
            });
        }
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err(TargetError::MissingHost {
                input: input.to_owned(),
            });
        }
        let port = match port {
            None => scheme.default_port(),
            Some(text) => parse_port(text)?,
        };
        Ok(Target {
            scheme,
            host: host.to_owned(),
            port,
        })
    }
}

/// Splits `host[:port]` and `[v6]` / `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), TargetError> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (address, after) =
            bracketed
                .split_once(']')
                .ok_or_else(|| TargetError::InvalidHost {
                    host: authority.to_owned(),
                })?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(TargetError::InvalidHost {
                host: address.to_owned(),
            });
        }
        return match after {
            "" => Ok((address, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((address, Some(port))),
                None => Err(TargetError::TrailingPart {
                    rest: after.to_owned(),
                }),
            },
        };
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    // An unbracketed IPv6 address ("::1:514") is ambiguous: insist on brackets.
    if host.contains(':') || !host.chars().all(is_host_char) {
        return Err(TargetError::InvalidHost {
            host: host.to_owned(),
        });
    }
    Ok((host, port))
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn parse_port(text: &str) -> Result<u16, TargetError> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(TargetError::InvalidPort {
            port: text.to_owned(),
        }),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// Configuration files spell the target as its URL.
impl Serialize for Target {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(scheme: Scheme, host: &str, port: u16) -> Target {
        Target {
            scheme,
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn parses_every_scheme_with_explicit_port() {
        let cases = [
            ("udp://10.0.0.5:5514", target(Scheme::Udp, "10.0.0.5", 5514)),
            ("tcp://siem:1601", target(Scheme::Tcp, "siem", 1601)),
            (
                "tls://siem.example.org:16514",
                target(Scheme::Tls, "siem.example.org", 16514),
            ),
            (
                "relp+tls://siem.example.org:20514",
                target(Scheme::RelpTls, "siem.example.org", 20514),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(url.parse::<Target>(), Ok(expected), "{url}");
        }
    }

    #[test]
    fn omitted_port_means_the_scheme_default() {
        let ports: Vec<u16> = ["udp://h", "tcp://h", "tls://h", "relp+tls://h/"]
            .iter()
            .map(|url| url.parse::<Target>().map(|t| t.port))
            .collect::<Result<_, _>>()
            .expect("valid URLs");
        assert_eq!(ports, [514, 601, 6514, 2514]);
    }

    #[test]
    fn ipv6_needs_brackets_and_round_trips() {
        let parsed: Target = "tls://[fd00::5]:6514".parse().expect("valid");
        assert_eq!(parsed, target(Scheme::Tls, "fd00::5", 6514));
        assert_eq!(parsed.to_string(), "tls://[fd00::5]:6514");
        assert_eq!("tls://[::1]".parse::<Target>().map(|t| t.port), Ok(6514));
        assert!(matches!(
            "tls://fd00::5:6514".parse::<Target>(),
            Err(TargetError::InvalidHost { .. })
        ));
    }

    #[test]
    fn scheme_is_case_insensitive_and_display_is_canonical() {
        let parsed: Target = " RELP+TLS://Siem:2514 ".parse().expect("valid");
        assert_eq!(parsed.to_string(), "relp+tls://Siem:2514");
    }

    #[test]
    fn bad_urls_name_the_problem() {
        assert_eq!(
            "siem:514".parse::<Target>(),
            Err(TargetError::MissingScheme {
                input: "siem:514".into()
            })
        );
        assert_eq!(
            "https://siem".parse::<Target>(),
            Err(TargetError::UnknownScheme {
                scheme: "https".into()
            })
        );
        assert!(matches!(
            "tls://:6514".parse::<Target>(),
            Err(TargetError::MissingHost { .. })
        ));
        for port in ["0", "65536", "+5", "x", ""] {
            assert_eq!(
                format!("tcp://h:{port}").parse::<Target>(),
                Err(TargetError::InvalidPort { port: port.into() }),
                "port {port:?}"
            );
        }
        assert_eq!(
            "tcp://user@h:601".parse::<Target>(),
            Err(TargetError::TrailingPart {
                rest: "@h:601".into()
            })
        );
        assert_eq!(
            "tcp://h:601/path".parse::<Target>(),
            Err(TargetError::TrailingPart {
                rest: "/path".into()
            })
        );
        assert!(matches!(
            "tcp://bad host".parse::<Target>(),
            Err(TargetError::InvalidHost { .. })
        ));
    }

    #[test]
    fn error_messages_show_an_example() {
        let message = "siem".parse::<Target>().expect_err("no scheme").to_string();
        assert!(message.contains("tls://siem.example.org:6514"), "{message}");
    }

    #[test]
    fn serde_uses_the_url() {
        let parsed: Target = serde_json::from_str("\"relp+tls://siem\"").expect("valid");
        assert_eq!(parsed, target(Scheme::RelpTls, "siem", 2514));
        assert_eq!(
            serde_json::to_string(&parsed).expect("serializes"),
            "\"relp+tls://siem:2514\""
        );
        assert!(serde_json::from_str::<Target>("\"ftp://siem\"").is_err());
    }
}
