//! TLS client side for `tls://` (RFC 5425) and `relp+tls://`.
//!
//! Policy: TLS 1.2 and 1.3 only, the SIEM's certificate is always verified
//! against the configured CA (there is no "trust anything" switch), and the
//! name checked is `server_name` or else the host of the URL (an IP address is
//! checked against the certificate's IP SANs).
//!
//! When verification fails, rustls alone would say *why* but not *which*
//! certificate; an installer facing a load balancer or a wrong port needs
//! both. [`RecordingVerifier`] delegates every decision to rustls' WebPKI
//! verifier and only remembers the certificate it refused.
//!
//! A caveat that shapes the whole transport design: with TLS 1.3 the client
//! finishes its handshake before the server has judged the client
//! certificate. A SIEM that rejects our certificate therefore closes the
//! connection *after* our first writes have "succeeded". TLS alone never
//! proves delivery; only RELP's per-message acknowledgement does.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, ProtocolVersion,
    RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::{TlsConfigError, TransportError};
use super::net::within;

/// TLS settings of one destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) that may sign the SIEM's
    /// certificate. Required for TLS: the SIEM is never trusted blindly.
    pub ca: Option<PathBuf>,
    /// PEM file with our client certificate (and its intermediates), for SIEMs
    /// that require mutual TLS. Needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Name expected in the SIEM's certificate when it differs from the host
    /// in the URL (e.g. connecting by IP address to a certificate with a DNS name).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Loads the files and checks them, without touching the network; meant
    /// for configuration checks at start-up.
    pub fn validate(&self, host: &str) -> Result<(), TlsConfigError> {
        TlsClient::new(self, host).map(drop)
    }
}

/// What the TLS handshake settled on, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSessionInfo {
    /// "TLS 1.2" or "TLS 1.3".
    pub version: String,
    /// IANA-style cipher suite name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// Subject of the SIEM's end-entity certificate, e.g. `CN=siem.example.org`.
    pub server_subject: String,
    /// Issuer of that certificate.
    pub server_issuer: String,
    /// End of that certificate's validity (RFC 3339).
    pub server_not_after: String,
}

/// A certificate the verifier refused, and why.
#[derive(Debug, Clone)]
struct Rejection {
    subject: String,
    reason: String,
}

/// Delegates to [`WebPkiServerVerifier`]; remembers what it refused.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    rejection: Mutex<Option<Rejection>>,
}

impl RecordingVerifier {
    fn take_rejection(&self) -> Option<Rejection> {
        self.rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(error) = &verdict {
            let rejection = Rejection {
                subject: CertSummary::of(end_entity).subject,
                reason: describe_verify_error(error),
            };
            *self
                .rejection
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(rejection);
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client configuration for one connection attempt (the verifier records
/// the rejection of this attempt only).
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
    verifier: Arc<RecordingVerifier>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    pub(crate) fn new(options: &TlsOptions, host: &str) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_path = options.ca.as_deref().ok_or(TlsConfigError::MissingCa)?;
        let roots = load_roots(ca_path)?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|error| TlsConfigError::BadCa {
                path: ca_path.to_owned(),
                reason: error.to_string(),
            })?;
        let verifier = Arc::new(RecordingVerifier {
            inner: webpki,
            rejection: Mutex::new(None),
        });
        let builder = versions_builder(provider)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let config = match (&options.cert, &options.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(TlsConfigError::CertWithoutKey),
            (None, Some(_)) => return Err(TlsConfigError::KeyWithoutCert),
            (Some(cert), Some(key)) => {
                let chain = load_certificates("client certificate", cert)?;
                let private_key = load_private_key(key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|error| TlsConfigError::ClientIdentity {
                        cert: cert.clone(),
                        key: key.clone(),
                        reason: error.to_string(),
                    })?
            }
        };
        let name = options.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
            TlsConfigError::InvalidServerName {
                name: name.to_owned(),
            }
        })?;
        Ok(TlsClient {
            config: Arc::new(config),
            verifier,
            server_name,
        })
    }

    /// Runs the TLS handshake over an established TCP connection.
    pub(crate) async fn handshake(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<(TlsStream<TcpStream>, TlsSessionInfo), TransportError> {
        let connector = TlsConnector::from(self.config);
        let attempt = connector.connect(self.server_name, tcp);
        match within("TLS handshake", timeout, attempt).await? {
            Ok(stream) => {
                let info = session_info(&stream);
                Ok((stream, info))
            }
            Err(error) => Err(match self.verifier.take_rejection() {
                Some(Rejection { subject, reason }) => {
                    TransportError::TlsVerify { subject, reason }
                }
                None => tls_io_error("TLS handshake", peer, error),
            }),
        }
    }
}

fn versions_builder(
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsConfigError> {
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsConfigError::Setup {
            reason: error.to_string(),
        })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates("CA file", path)? {
        roots
            .add(certificate)
            .map_err(|error| TlsConfigError::BadCa {
                path: path.to_owned(),
                reason: error.to_string(),
            })?;
    }
    Ok(roots)
}

fn load_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| pem_error(what, path, error))?;
    if certificates.is_empty() {
        return Err(TlsConfigError::Empty {
            what,
            path: path.to_owned(),
            expected: "PEM certificate",
        });
    }
    Ok(certificates)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsConfigError::Empty {
            what: "client key",
            path: path.to_owned(),
            expected: "PEM private key",
        },
        other => pem_error("client key", path, other),
    })
}

fn pem_error(what: &'static str, path: &Path, error: pem::Error) -> TlsConfigError {
    match error {
        pem::Error::Io(source) => TlsConfigError::Read {
            what,
            path: path.to_owned(),
            source,
        },
        other => TlsConfigError::Pem {
            what,
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn session_info(stream: &TlsStream<TcpStream>) -> TlsSessionInfo {
    let (_, connection) = stream.get_ref();
    let version = match connection.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let cipher_suite = connection.negotiated_cipher_suite().map_or_else(
        || "unknown".to_owned(),
        |suite| format!("{:?}", suite.suite()),
    );
    let certificate = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|end_entity| CertSummary::of(end_entity))
        .unwrap_or_else(CertSummary::unknown);
    TlsSessionInfo {
        version,
        cipher_suite,
        server_subject: certificate.subject,
        server_issuer: certificate.issuer,
        server_not_after: certificate.not_after,
    }
}

/// The parts of a certificate an installer recognises.
struct CertSummary {
    subject: String,
    issuer: String,
    not_after: String,
}

impl CertSummary {
    fn of(der: &CertificateDer<'_>) -> CertSummary {
        match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, certificate)) => CertSummary {
                subject: certificate.subject().to_string(),
                issuer: certificate.issuer().to_string(),
                not_after: certificate
                    .validity()
                    .not_after
                    .to_datetime()
                    .format(&Rfc3339)
                    .unwrap_or_else(|_| certificate.validity().not_after.to_string()),
            },
            Err(_) => CertSummary {
                subject: "<unparsable certificate>".to_owned(),
                ..CertSummary::unknown()
            },
        }
    }

    fn unknown() -> CertSummary {
        CertSummary {
            subject: "unknown".to_owned(),
            issuer: "unknown".to_owned(),
            not_after: "unknown".to_owned(),
        }
    }
}

fn format_unix_time(time: UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .and_then(|moment| moment.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{} s after 1970", time.as_secs()))
}

/// Why the SIEM's certificate was refused, in the installer's terms.
fn describe_verify_error(error: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(certificate_error) = error else {
        return error.to_string();
    };
    match certificate_error {
        CertificateError::UnknownIssuer => {
            "it is not signed by the configured CA (unknown issuer): check the ca option".to_owned()
        }
        CertificateError::BadSignature => {
            "its signature does not verify against the configured CA".to_owned()
        }
        CertificateError::Expired => "it has expired".to_owned(),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "it expired on {} (now is {})",
            format_unix_time(*not_after),
            format_unix_time(*time)
        ),
        CertificateError::NotValidYet => "it is not valid yet (check both clocks)".to_owned(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "it is not valid before {} (now is {}; check both clocks)",
            format_unix_time(*not_before),
            format_unix_time(*time)
        ),
        CertificateError::NotValidForName => {
            "it is not valid for the name we connected to (set server_name if the SIEM is known under another name)".to_owned()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "it is not valid for {:?}, it names {}; set server_name if the SIEM is known under another name",
            expected.to_str(),
            if presented.is_empty() {
                "nothing".to_owned()
            } else {
                presented.join(", ")
            }
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not meant for a TLS server (extended key usage)".to_owned()
        }
        CertificateError::Revoked => "it has been revoked".to_owned(),
        other => format!("{other}"),
    }
}

/// Maps an I/O error of a TLS stream: rustls reports alerts and protocol
/// errors inside `io::Error`.
pub(crate) fn tls_io_error(
    stage: &'static str,
    peer: SocketAddr,
    error: io::Error,
) -> TransportError {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::AlertReceived(alert)) => TransportError::Tls {
            peer,
            reason: describe_alert(*alert),
        },
        Some(rustls::Error::PeerIncompatible(incompatibility)) => TransportError::Tls {
            peer,
            reason: format!(
                "no common ground with the SIEM ({incompatibility:?}); we speak TLS 1.2 and 1.3 only"
            ),
        },
        Some(other) => TransportError::Tls {
            peer,
            reason: other.to_string(),
        },
        None if stage == "TLS handshake"
            && matches!(
                error.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
        {
            TransportError::Tls {
                peer,
                reason: "the SIEM closed the connection during the handshake (is this its TLS port? does it want a client certificate?)".to_owned(),
            }
        }
        // A hang-up without close_notify (common with syslog receivers).
        None if error.kind() == io::ErrorKind::UnexpectedEof => TransportError::ClosedByPeer { peer },
        None => TransportError::Io {
            stage,
            peer,
            source: error,
        },
    }
}

fn describe_alert(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::CertificateRequired => {
            "the SIEM requires a client certificate (set cert and key)".to_owned()
        }
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateUnknown
        | AlertDescription::UnknownCA
        | AlertDescription::AccessDenied => {
            format!("the SIEM rejected our client certificate (TLS alert {alert:?})")
        }
        AlertDescription::ProtocolVersion => {
            "no common TLS version: we speak TLS 1.2 and 1.3 only".to_owned()
        }
        AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity => {
            format!(
                "the SIEM refused the handshake (TLS alert {alert:?}): no common cipher suite, or it wants a client certificate"
            )
        }
        other => format!("the SIEM sent the TLS alert {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_without_ca_is_refused() {
        let error = TlsOptions::default()
            .validate("siem")
            .expect_err("no CA configured");
        assert!(matches!(error, TlsConfigError::MissingCa));
        assert!(error.to_string().contains("never trusted blindly"));
    }

    #[test]
    fn missing_ca_file_names_the_path() {
        let options = TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let error = options.validate("siem").expect_err("file is missing");
        assert!(
            matches!(&error, TlsConfigError::Read { path, .. } if path == Path::new("/nonexistent/ca.pem")),
            "{error:?}"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let options = TlsOptions {
            ca: Some(path),
            ..TlsOptions::default()
        };
        let error = options.validate("siem").expect_err("no certificate");
        assert!(matches!(error, TlsConfigError::Empty { .. }), "{error:?}");
    }

    #[test]
    fn alerts_are_explained() {
        assert!(describe_alert(AlertDescription::CertificateRequired).contains("set cert and key"));
        assert!(
            describe_alert(AlertDescription::UnknownCA).contains("rejected our client certificate")
        );
    }

    #[test]
    fn verification_reasons_are_explained() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(describe_verify_error(&unknown).contains("not signed by the configured CA"));
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_600_000_000)),
        });
        assert_eq!(
            describe_verify_error(&expired),
            "it expired on 2020-09-13T12:26:40Z (now is 2023-11-14T22:13:20Z)"
        );
    }
}
